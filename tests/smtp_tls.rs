//! STARTTLS (RFC 3207) and implicit TLS (RFC 8314) on the reference SMTP server.

#[path = "support/smtp_harness.rs"]
mod harness;

use harness::{Client, HOSTNAME, TestServer, config, test_tls, tls_handshake};
use serverfirst::certs::CertBundle;
use serverfirst::smtp::{self, Listener, SmtpConfig, SmtpError};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A server with a certificate for mx.test; `implicit_tls` adds an implicit-TLS listener.
async fn tls_server(implicit_tls: bool) -> (CertBundle, TestServer) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (bundle, tls) = test_tls();
    let config = SmtpConfig {
        tls: Some(tls),
        ..config()
    };
    (bundle, TestServer::start_with(config, implicit_tls).await)
}

async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

#[tokio::test]
async fn starttls_upgrade_then_ehlo_again() {
    let (bundle, mut server) = tls_server(false).await;
    let mut client = Client::connect_greeted(server.addr).await;
    let ehlo = client.command("EHLO client.test", 250).await;
    assert_eq!(
        ehlo.lines.last().map(String::as_str),
        Some("STARTTLS"),
        "{ehlo:?}"
    );
    client.command("STARTTLS", 220).await;

    // The handshake verifies the certificate against the test CA for mx.test.
    let mut client = client.start_tls(&bundle.ca_pem).await;
    // The session starts over: no greeting is resent, the client must say EHLO again.
    client.command("MAIL FROM:<a@b.test>", 503).await;
    let ehlo = client.command("EHLO client.test", 250).await;
    assert_eq!(ehlo.lines[0], format!("{HOSTNAME} Hello client.test"));
    assert!(!ehlo.lines.contains(&"STARTTLS".to_string()), "{ehlo:?}");
    client.command("STARTTLS", 503).await;
    let reply = client
        .transaction("a@b.test", &["c@d.test"], b"Subject: tls\r\n\r\nsecret\r\n")
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.command("QUIT", 221).await;
    client.expect_closed().await;

    let delivery = server.next_delivery().await;
    assert!(delivery.tls);
    assert_eq!(delivery.listener, server.addr);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn plaintext_pipelined_after_starttls_is_discarded() {
    let (bundle, server) = tls_server(false).await;
    let mut client = Client::connect_greeted(server.addr).await;
    client.command("EHLO client.test", 250).await;
    // An attacker on the path appends a command to the client's STARTTLS (CVE-2011-0411).
    client
        .send("STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
        .await;
    client.expect(220).await;
    let mut client = client.start_tls(&bundle.ca_pem).await;
    // Had the injected MAIL run, this EHLO would be preceded by its reply.
    let ehlo = client.command("EHLO client.test", 250).await;
    assert_eq!(ehlo.lines[0], format!("{HOSTNAME} Hello client.test"));
    client.command("MAIL FROM:<a@b.test>", 250).await;
    client.command("RSET", 250).await;
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn implicit_tls_listener() {
    let (bundle, mut server) = tls_server(true).await;
    let tls_addr = server.tls_addr.expect("implicit-TLS listener");
    // The banner arrives, inside TLS, right after the handshake.
    let mut client = Client::new(tls_handshake(connect(tls_addr).await, &bundle.ca_pem).await);
    client.expect_greeting().await;
    let ehlo = client.command("EHLO client.test", 250).await;
    assert!(!ehlo.lines.contains(&"STARTTLS".to_string()), "{ehlo:?}");
    let reply = client
        .transaction("a@b.test", &["c@d.test"], b"Subject: 465\r\n\r\nhi\r\n")
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.command("QUIT", 221).await;

    let delivery = server.next_delivery().await;
    assert!(delivery.tls);
    assert_eq!(delivery.listener, tls_addr);

    // The plain listener of the same server still offers STARTTLS.
    let mut plain = Client::connect_greeted(server.addr).await;
    let ehlo = plain.command("EHLO client.test", 250).await;
    assert!(ehlo.lines.contains(&"STARTTLS".to_string()), "{ehlo:?}");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn failed_handshake_does_not_disturb_the_server() {
    let (_, server) = tls_server(true).await;
    let (other_ca, _) = test_tls();
    let tls_addr = server.tls_addr.expect("implicit-TLS listener");
    // A client trusting another CA refuses the certificate.
    let tcp = connect(tls_addr).await;
    let connector = tokio_rustls::TlsConnector::from(harness::client_tls_config(&other_ca.ca_pem));
    let name = rustls_pki_types::ServerName::try_from(HOSTNAME).expect("name");
    assert!(connector.connect(name, tcp).await.is_err());
    // Plain text on the TLS port is not a handshake either.
    let mut garbage = Client::connect(tls_addr).await;
    garbage.send("EHLO client.test\r\n").await;
    let answer = garbage.read_to_end().await;
    assert!(!answer.starts_with(b"220"), "{answer:?}");

    let mut client = Client::connect_greeted(server.addr).await;
    client.command("NOOP", 250).await;
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn implicit_tls_needs_a_certificate() {
    let listener = harness::bind().await;
    let result = smtp::run(
        vec![Listener::implicit_tls(listener)],
        config(),
        CancellationToken::new(),
    )
    .await;
    assert!(
        matches!(result, Err(SmtpError::ImplicitTlsWithoutCertificate)),
        "{result:?}"
    );
}
