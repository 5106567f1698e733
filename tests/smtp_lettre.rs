//! A third-party SMTP client (lettre) talking to the reference SMTP server.

#[path = "support/smtp_harness.rs"]
mod harness;

use std::time::Duration;

use harness::{TestServer, config};
use lettre::message::header::ContentType;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serverfirst::smtp::SmtpConfig;

#[tokio::test]
async fn lettre_sends_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SmtpConfig {
        maildir: Some(dir.path().to_path_buf()),
        ..config()
    };
    let mut server = TestServer::start(config).await;

    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.addr.port())
        .hello_name(ClientId::Domain("client.test".into()))
        .timeout(Some(Duration::from_secs(10)))
        .build();
    // Lines starting with a dot exercise lettre's dot-stuffing against the server's.
    let body = "Hello from lettre.\r\n.leading dot\r\n.\r\n..two dots\r\n";
    let email = Message::builder()
        .from("Alice <alice@example.test>".parse().expect("from"))
        .to("bob@example.test".parse().expect("to"))
        .cc("carol@example.test".parse().expect("cc"))
        .subject("serverfirst")
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_string())
        .expect("message");
    let formatted = email.formatted();

    let response = mailer.send(email).await.expect("lettre send");
    assert!(response.is_positive(), "{response:?}");
    assert!(
        response
            .first_line()
            .is_some_and(|line| line.contains("queued as")),
        "{response:?}"
    );

    let delivery = server.next_delivery().await;
    assert_eq!(delivery.from, "alice@example.test");
    assert_eq!(delivery.rcpts, ["bob@example.test", "carol@example.test"]);
    let stored = std::fs::read(delivery.maildir_path.expect("Maildir path")).expect("read");
    // What lettre formatted is what was stored, plus the empty line lettre adds: it always
    // ends the data with <CRLF>.<CRLF>, whose first CRLF ends a line of its own.
    let mut expected = formatted;
    expected.extend_from_slice(b"\r\n");
    assert_eq!(
        String::from_utf8_lossy(&stored),
        String::from_utf8_lossy(&expected)
    );
    assert!(String::from_utf8_lossy(&stored).contains("\r\n.leading dot\r\n.\r\n..two dots\r\n"));
    server.stop().await.expect("clean stop");
}
