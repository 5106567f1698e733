//! Each limit of the webhook listener, against a live server: a misbehaving client is cut off
//! on time while the server keeps answering everyone else.

mod webhook_support;

use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use serverfirst::config::Config;
use serverfirst::server::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use webhook_support::{TestServer, connect_tls};

const REVIEW: &str = include_str!("fixtures/review-mail-deployment.json");
const SHORT: Duration = Duration::from_millis(300);

/// Reads until the peer closes; returns what arrived and how long it took.
async fn wait_closed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    patience: Duration,
) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let result = tokio::time::timeout(patience, stream.read_to_end(&mut received)).await;
    assert!(result.is_ok(), "connection still open after {patience:?}");
    (received, started.elapsed())
}

async fn assert_still_serving(server: &TestServer) {
    let (status, _) = server.post("/mutate", REVIEW).await;
    assert_eq!(status, 200, "the server stopped answering other clients");
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_others_are_served() {
    let server = TestServer::start(
        Config::default(),
        Limits {
            header_read_timeout: SHORT,
            ..Limits::default()
        },
    )
    .await;
    let mut slow = connect_tls(server.addr, &server.bundle.ca_pem, &[b"http/1.1"])
        .await
        .unwrap();
    slow.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    assert_still_serving(&server).await;
    let (_, elapsed) = wait_closed(&mut slow, Duration::from_secs(3)).await;
    assert!(elapsed >= SHORT / 2, "closed too early: {elapsed:?}");
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn a_client_that_never_starts_the_handshake_is_disconnected() {
    let server = TestServer::start(
        Config::default(),
        Limits {
            handshake_timeout: SHORT,
            ..Limits::default()
        },
    )
    .await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert_still_serving(&server).await;
    let (received, elapsed) = wait_closed(&mut silent, Duration::from_secs(3)).await;
    assert!(received.is_empty());
    assert!(elapsed >= SHORT / 2, "closed too early: {elapsed:?}");
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408() {
    let server = TestServer::start(
        Config::default(),
        Limits {
            request_timeout: SHORT,
            ..Limits::default()
        },
    )
    .await;
    let mut slow = connect_tls(server.addr, &server.bundle.ca_pem, &[b"http/1.1"])
        .await
        .unwrap();
    slow.write_all(
        b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n{\"apiVersion\":",
    )
    .await
    .unwrap();
    assert_still_serving(&server).await;
    let (received, _) = wait_closed(&mut slow, Duration::from_secs(3)).await;
    let response = String::from_utf8_lossy(&received);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        response.contains("request not completed in time"),
        "{response}"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let server = TestServer::start(
        Config::default(),
        Limits {
            max_connections: 2,
            ..Limits::default()
        },
    )
    .await;
    let first = connect_tls(server.addr, &server.bundle.ca_pem, &[])
        .await
        .unwrap();
    let _second = connect_tls(server.addr, &server.bundle.ca_pem, &[])
        .await
        .unwrap();
    let ca = server.bundle.ca_pem.clone();
    let addr = server.addr;
    let mut third = tokio::spawn(async move { connect_tls(addr, &ca, &[]).await });
    assert!(
        tokio::time::timeout(SHORT, &mut third).await.is_err(),
        "third connection served beyond the cap"
    );
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(3), third)
        .await
        .expect("served once a slot frees")
        .unwrap();
    assert!(third.is_ok());
}

#[tokio::test]
async fn http2_advertises_the_stream_limit() {
    let server = TestServer::start(
        Config::default(),
        Limits {
            http2_max_concurrent_streams: 7,
            ..Limits::default()
        },
    )
    .await;
    let tls = connect_tls(server.addr, &server.bundle.ca_pem, &[b"h2"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (_client, mut connection) = h2::client::handshake(tls).await.unwrap();
    // Drive the connection long enough to receive the server's SETTINGS.
    let _ = tokio::time::timeout(Duration::from_millis(200), &mut connection).await;
    assert_eq!(connection.max_concurrent_send_streams(), 7);
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_a_clean_close() {
    let server = TestServer::start(Config::default(), Limits::default()).await;
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let (_, elapsed) = wait_closed(&mut plain, Duration::from_secs(2)).await;
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    assert_still_serving(&server).await;
}

/// A CA and a client certificate it signed (clientAuth).
fn client_pki() -> (
    rustls::RootCertStore,
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(vec!["kube-apiserver".to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
    (roots, vec![cert.der().clone()], key)
}

async fn post_with_identity(
    server: &TestServer,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> std::io::Result<String> {
    let mut server_roots = rustls::RootCertStore::empty();
    server_roots
        .add(CertificateDer::from_pem_slice(server.bundle.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(serverfirst::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(server_roots);
    let config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(server.addr).await?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let request = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{REVIEW}",
        REVIEW.len()
    );
    tls.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

#[tokio::test]
async fn client_ca_admits_good_client_certificates_only() {
    let (roots, chain, key) = client_pki();
    let server =
        TestServer::start_with_client_ca(Config::default(), Limits::default(), Some(roots)).await;
    let response = post_with_identity(&server, Some((chain, key)))
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let anonymous = post_with_identity(&server, None).await;
    assert!(
        anonymous.is_err() || anonymous.as_ref().unwrap().is_empty(),
        "{anonymous:?}"
    );

    let (_, other_chain, other_key) = client_pki();
    let stranger = post_with_identity(&server, Some((other_chain, other_key))).await;
    assert!(
        stranger.is_err() || stranger.as_ref().unwrap().is_empty(),
        "{stranger:?}"
    );
}
