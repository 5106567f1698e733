//! RFC 5321 conformance of the reference SMTP server, speaking raw bytes over 127.0.0.1.

#[path = "support/smtp_harness.rs"]
mod harness;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use harness::{Client, HOSTNAME, TestServer, WAIT, config};
use serverfirst::smtp::{Limits, SmtpConfig};

#[tokio::test]
async fn greeting_arrives_before_the_client_speaks() {
    let server = TestServer::start(config()).await;
    let started = Instant::now();
    let mut client = Client::connect(server.addr).await;
    // Nothing has been sent: the banner must come on its own.
    let line = client.read_line().await;
    let elapsed = started.elapsed();
    assert_eq!(line, format!("220 {HOSTNAME} ESMTP serverfirst\r\n"));
    assert!(
        elapsed < Duration::from_secs(1),
        "greeting took {elapsed:?}"
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn full_transaction_is_delivered() {
    let mut server = TestServer::start(config()).await;
    let mut client = Client::connect_greeted(server.addr).await;
    let ehlo = client.command("EHLO client.test", 250).await;
    assert_eq!(
        ehlo.lines,
        [
            &format!("{HOSTNAME} Hello client.test"),
            "PIPELINING",
            "8BITMIME",
            "SIZE 10485760",
            "ENHANCEDSTATUSCODES"
        ]
    );
    let message = b"From: a@b.test\r\nTo: c@d.test\r\nSubject: hi\r\n\r\nHello.\r\n";
    let reply = client
        .transaction("a@b.test", &["c@d.test", "e@d.test"], message)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert!(
        reply.text().starts_with("2.0.0 OK: queued as "),
        "{reply:?}"
    );

    let delivery = server.next_delivery().await;
    assert_eq!(delivery.from, "a@b.test");
    assert_eq!(delivery.rcpts, ["c@d.test", "e@d.test"]);
    assert_eq!(delivery.size, message.len());
    assert_eq!(delivery.listener, server.addr);
    assert_eq!(delivery.maildir_path, None);
    assert!(!delivery.tls);
    assert!(reply.text().ends_with(&delivery.id));

    client.command("QUIT", 221).await;
    client.expect_closed().await;
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn pipelined_commands_in_one_write() {
    let mut server = TestServer::start(config()).await;
    let mut client = Client::connect_greeted(server.addr).await;
    client
        .send(
            "EHLO client.test\r\nMAIL FROM:<a@b.test> SIZE=20\r\nRCPT TO:<c@d.test>\r\n\
             RCPT TO:<bad>\r\nRCPT TO:<e@d.test>\r\nDATA\r\n",
        )
        .await;
    for code in [250, 250, 250, 501, 250, 354] {
        client.expect(code).await;
    }
    // The data, its terminator and the next commands, again in one write.
    client
        .send("Subject: x\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        .await;
    for code in [250, 250, 250, 221] {
        client.expect(code).await;
    }
    client.expect_closed().await;
    assert_eq!(server.next_delivery().await.rcpts, ["c@d.test", "e@d.test"]);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn bad_sequences_are_503() {
    let server = TestServer::start(config()).await;
    let mut client = Client::connect_greeted(server.addr).await;
    client.command("MAIL FROM:<a@b.test>", 503).await;
    client.command("EHLO client.test", 250).await;
    let reply = client.command("RCPT TO:<c@d.test>", 503).await;
    assert!(reply.text().starts_with("5.5.1 "), "{reply:?}");
    client.command("DATA", 503).await;
    client.command("MAIL FROM:<a@b.test>", 250).await;
    client.command("DATA", 503).await;
    client.command("MAIL FROM:<a@b.test>", 503).await;
    client.command("RSET", 250).await;
    client.command("RCPT TO:<c@d.test>", 503).await;
    client.command("STARTTLS", 502).await;
    client.command("QUIT", 221).await;
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn command_line_length_limit() {
    let server = TestServer::start(config()).await;
    let mut client = Client::connect_greeted(server.addr).await;
    // 1000 bytes with CRLF is the limit: accepted.
    let at_limit = format!("NOOP {}\r\n", "x".repeat(1000 - 7));
    assert_eq!(at_limit.len(), 1000);
    client.send(&at_limit).await;
    client.expect(250).await;
    // One more byte: refused, and the session goes on.
    let over = format!("NOOP {}\r\n", "x".repeat(1000 - 6));
    client.send(&over).await;
    let reply = client.expect(500).await;
    assert_eq!(reply.text(), "5.5.2 Line too long");
    // A very long line arriving in several writes is dropped whole.
    client
        .send(format!("MAIL FROM:<{}", "a".repeat(50_000)))
        .await;
    client
        .send(format!("{}>\r\nNOOP\r\n", "b".repeat(50_000)))
        .await;
    client.expect(500).await;
    client.expect(250).await;
    client.command("EHLO client.test", 250).await;
    // Over-long addresses in a line that fits: 501.
    let path = format!("RCPT TO:<{}@d.test>", "a".repeat(300));
    client.command("MAIL FROM:<a@b.test>", 250).await;
    client.command(&path, 501).await;
    client.command("RSET", 250).await;
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn message_size_limit() {
    let limits = Limits {
        max_message_size: 1024,
        ..Limits::default()
    };
    let mut server = TestServer::start(SmtpConfig { limits, ..config() }).await;
    let mut client = Client::connect_greeted(server.addr).await;
    let ehlo = client.command("EHLO client.test", 250).await;
    assert!(ehlo.lines.contains(&"SIZE 1024".to_string()), "{ehlo:?}");
    // Declared too big: refused at MAIL.
    let reply = client.command("MAIL FROM:<a@b.test> SIZE=1025", 552).await;
    assert!(reply.text().starts_with("5.3.4 "), "{reply:?}");
    // Undeclared and too big: the data is read to its end, then refused.
    let big = format!("{}\r\n", "y".repeat(998)).repeat(2);
    let reply = client
        .transaction("a@b.test", &["c@d.test"], big.as_bytes())
        .await;
    assert_eq!(reply.code, 552, "{reply:?}");
    // Exactly at the limit: accepted.
    let fits = format!("{}\r\n", "z".repeat(1022));
    let reply = client
        .transaction("a@b.test", &["c@d.test"], fits.as_bytes())
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(server.next_delivery().await.size, 1024);
    assert!(
        server.deliveries.try_recv().is_err(),
        "the refused message was delivered"
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn dot_stuffing_round_trip_into_maildir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let maildir = dir.path().join("Maildir");
    let config = SmtpConfig {
        maildir: Some(maildir.clone()),
        ..config()
    };
    let mut server = TestServer::start(config).await;
    let mut client = Client::connect_greeted(server.addr).await;
    client.command("EHLO client.test", 250).await;
    let message: &[u8] =
        b"Subject: dots\r\n\r\n.\r\n..\r\n.leading dot\r\n...\r\nmiddle . dot\r\n. \r\nend\r\n";
    let reply = client.transaction("a@b.test", &["c@d.test"], message).await;
    assert_eq!(reply.code, 250, "{reply:?}");

    let delivery = server.next_delivery().await;
    let path = delivery.maildir_path.expect("Maildir path");
    assert_eq!(path.parent(), Some(maildir.join("new").as_path()));
    assert_eq!(
        path.file_name().and_then(|n| n.to_str()),
        Some(delivery.id.as_str())
    );
    assert_eq!(std::fs::read(&path).expect("read message"), message);
    assert_eq!(
        std::fs::read_dir(maildir.join("tmp")).expect("tmp").count(),
        0
    );
    assert!(maildir.join("cur").is_dir());

    // A second message gets a file of its own.
    let reply = client
        .transaction("a@b.test", &["c@d.test"], b"again\r\n")
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_ne!(server.next_delivery().await.maildir_path, Some(path));
    assert_eq!(
        std::fs::read_dir(maildir.join("new")).expect("new").count(),
        2
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn idle_timeout_closes_with_421() {
    let timeout = Duration::from_millis(300);
    let limits = Limits {
        idle_timeout: timeout,
        ..Limits::default()
    };
    let server = TestServer::start(SmtpConfig { limits, ..config() }).await;
    let mut client = Client::connect_greeted(server.addr).await;
    let started = Instant::now();
    let reply = client.expect(421).await;
    assert!(
        started.elapsed() >= timeout,
        "closed after {:?}",
        started.elapsed()
    );
    assert!(reply.text().starts_with("4.4.2 "), "{reply:?}");
    client.expect_closed().await;

    // Also in the middle of the data.
    let mut client = Client::connect_greeted(server.addr).await;
    client.command("EHLO client.test", 250).await;
    client.command("MAIL FROM:<a@b.test>", 250).await;
    client.command("RCPT TO:<c@d.test>", 250).await;
    client.command("DATA", 354).await;
    client.send("Subject: never finished\r\n").await;
    client.expect(421).await;
    client.expect_closed().await;
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn connection_cap_refuses_with_421() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let server = TestServer::start(SmtpConfig { limits, ..config() }).await;
    let mut first = Client::connect_greeted(server.addr).await;
    let _second = Client::connect_greeted(server.addr).await;

    let mut third = Client::connect(server.addr).await;
    let reply = third.expect(421).await;
    assert!(reply.text().contains("Too many connections"), "{reply:?}");
    third.expect_closed().await;

    // Once a session ends, its slot is free again.
    first.command("QUIT", 221).await;
    first.expect_closed().await;
    let mut fourth = Client::connect_greeted(server.addr).await;
    fourth.command("NOOP", 250).await;
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_sessions() {
    const SESSIONS: usize = 200;
    let mut server = TestServer::start(config()).await;
    let addr = server.addr;
    let mut clients = tokio::task::JoinSet::new();
    for n in 0..SESSIONS {
        clients.spawn(async move {
            let mut client = Client::connect_greeted(addr).await;
            client.command(&format!("EHLO client{n}.test"), 250).await;
            let message = format!("Subject: {n}\r\n\r\nmessage {n}\r\n");
            let rcpt = format!("user{n}@d.test");
            let reply = client
                .transaction("a@b.test", &[&rcpt], message.as_bytes())
                .await;
            assert_eq!(reply.code, 250, "{reply:?}");
            client.command("QUIT", 221).await;
        });
    }
    while let Some(result) = clients.join_next().await {
        result.expect("client task");
    }
    let mut ids = HashSet::new();
    let mut rcpts = HashSet::new();
    for _ in 0..SESSIONS {
        let delivery = server.next_delivery().await;
        ids.insert(delivery.id);
        rcpts.extend(delivery.rcpts);
    }
    assert_eq!(ids.len(), SESSIONS, "queue ids must be unique");
    assert_eq!(rcpts.len(), SESSIONS);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn garbage_input_never_breaks_the_server() {
    let server = TestServer::start(config()).await;
    let mut client = Client::connect_greeted(server.addr).await;
    client.send(b"\0\xff\xfe\x01garbage\r\n").await;
    client.expect(501).await;
    client.send(b"\r\n").await;
    client.expect(500).await;
    client.send(b"GET / HTTP/1.1\r\n").await;
    client.expect(500).await;
    client.send(b"EHLO bare-lf\n").await;
    client.expect(250).await;
    client.send(b"MAIL FROM:<a@b.test> BODY=9BIT\r\n").await;
    client.expect(501).await;
    client
        .send(b"MAIL FROM:<a@b.test> SIZE=99999999999999999999999999\r\n")
        .await;
    client.expect(501).await;
    client.send(b"RCPT TO:<\"unterminated@d.test>\r\n").await;
    client.expect(501).await;
    // A client that vanishes in the middle of the data.
    client.command("MAIL FROM:<a@b.test>", 250).await;
    client.command("RCPT TO:<c@d.test>", 250).await;
    client.command("DATA", 354).await;
    client.send(b"half a message").await;
    drop(client);
    // The server is still fine.
    let mut client = Client::connect_greeted(server.addr).await;
    client.command("NOOP", 250).await;
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn shutdown_closes_idle_sessions_and_lets_transactions_finish() {
    let config = SmtpConfig {
        shutdown_grace: WAIT,
        ..config()
    };
    let mut server = TestServer::start(config).await;
    let mut idle = Client::connect_greeted(server.addr).await;
    idle.command("EHLO idle.test", 250).await;
    let mut busy = Client::connect_greeted(server.addr).await;
    busy.command("EHLO busy.test", 250).await;
    busy.command("MAIL FROM:<a@b.test>", 250).await;

    server.shutdown.cancel();
    let reply = idle.expect(421).await;
    assert!(reply.text().starts_with("4.3.2 "), "{reply:?}");
    idle.expect_closed().await;

    // The transaction in progress may still complete; then the session is closed.
    busy.command("RCPT TO:<c@d.test>", 250).await;
    busy.command("DATA", 354).await;
    busy.send("Subject: last one\r\n\r\n.\r\n").await;
    busy.expect(250).await;
    busy.expect(421).await;
    busy.expect_closed().await;
    assert_eq!(server.next_delivery().await.from, "a@b.test");

    let addr = server.addr;
    server.join().await.expect("clean stop");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener still open"
    );
}

#[tokio::test]
async fn shutdown_grace_is_bounded() {
    let config = SmtpConfig {
        shutdown_grace: Duration::from_millis(200),
        ..config()
    };
    let server = TestServer::start(config).await;
    let mut busy = Client::connect_greeted(server.addr).await;
    busy.command("EHLO busy.test", 250).await;
    busy.command("MAIL FROM:<a@b.test>", 250).await;
    server.shutdown.cancel();
    // The client stalls inside its transaction: the server gives up after the grace period.
    let reply = busy.expect(421).await;
    assert!(reply.text().starts_with("4.3.2 "), "{reply:?}");
    busy.expect_closed().await;
    server.join().await.expect("clean stop");
}
