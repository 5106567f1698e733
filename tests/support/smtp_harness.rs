//! Test harness for the reference SMTP server: an in-process server on 127.0.0.1:0 and a raw
//! line-level client. Included by the SMTP and probe tests with `#[path]`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serverfirst::smtp::{self, Delivery, Listener, SmtpConfig, SmtpError};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

/// Upper bound on any single wait in a test, so a bug fails the test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(10);

/// Name the test certificates are issued for, and the server's hostname.
pub const HOSTNAME: &str = "mx.test";

/// A server running in the test's runtime.
pub struct TestServer {
    /// The plain listener.
    pub addr: SocketAddr,
    /// The implicit-TLS listener, if one was requested.
    pub tls_addr: Option<SocketAddr>,
    pub deliveries: mpsc::UnboundedReceiver<Delivery>,
    pub shutdown: CancellationToken,
    handle: JoinHandle<Result<(), SmtpError>>,
}

/// A configuration for tests: hostname [`HOSTNAME`], default limits.
pub fn config() -> SmtpConfig {
    SmtpConfig::new(HOSTNAME)
}

impl TestServer {
    /// Starts a server with one plain listener.
    pub async fn start(config: SmtpConfig) -> Self {
        Self::start_with(config, false).await
    }

    /// Starts a server with one plain listener and, if `implicit_tls`, one implicit-TLS listener.
    pub async fn start_with(mut config: SmtpConfig, implicit_tls: bool) -> Self {
        let (records, deliveries) = mpsc::unbounded_channel();
        config.deliveries = Some(records);
        let plain = bind().await;
        let addr = plain.local_addr().expect("local addr");
        let mut listeners = vec![Listener::plain(plain)];
        let mut tls_addr = None;
        if implicit_tls {
            let tls = bind().await;
            tls_addr = Some(tls.local_addr().expect("local addr"));
            listeners.push(Listener::implicit_tls(tls));
        }
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(smtp::run(listeners, config, shutdown.clone()));
        Self {
            addr,
            tls_addr,
            deliveries,
            shutdown,
            handle,
        }
    }

    /// The next delivery record.
    pub async fn next_delivery(&mut self) -> Delivery {
        tokio::time::timeout(WAIT, self.deliveries.recv())
            .await
            .expect("delivery record in time")
            .expect("server still running")
    }

    /// Cancels the shutdown token and waits for `run` to return.
    pub async fn stop(self) -> Result<(), SmtpError> {
        self.shutdown.cancel();
        self.join().await
    }

    /// Waits for `run` to return.
    pub async fn join(self) -> Result<(), SmtpError> {
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("server stops in time")
            .expect("server task did not panic")
    }
}

pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// A reply as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Text of each line, after the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// A raw SMTP client over any stream.
pub struct Client<S> {
    stream: BufReader<S>,
}

impl Client<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Self::new(stream)
    }

    /// Connects and checks the greeting.
    pub async fn connect_greeted(addr: SocketAddr) -> Self {
        let mut client = Self::connect(addr).await;
        client.expect_greeting().await;
        client
    }

    /// Runs the TLS handshake on this connection (after `220` to STARTTLS).
    pub async fn start_tls(self, ca_pem: &str) -> Client<TlsStream<TcpStream>> {
        assert!(
            self.stream.buffer().is_empty(),
            "unread bytes before the TLS handshake"
        );
        let tls = tls_handshake(self.stream.into_inner(), ca_pem).await;
        Client::new(tls)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream: BufReader::new(stream),
        }
    }

    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream
            .get_mut()
            .write_all(bytes.as_ref())
            .await
            .expect("write");
        self.stream.get_mut().flush().await.expect("flush");
    }

    /// Reads one line, CRLF included; empty at end of stream.
    pub async fn read_line(&mut self) -> String {
        let mut line = String::new();
        tokio::time::timeout(WAIT, self.stream.read_line(&mut line))
            .await
            .expect("line in time")
            .expect("read");
        line
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn read_reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await;
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let code = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .expect("reply code");
            let last = line.as_bytes().get(3) == Some(&b' ');
            assert!(
                last || line.as_bytes().get(3) == Some(&b'-'),
                "bad reply line {line:?}"
            );
            lines.push(line[4..line.len() - 2].to_string());
            if last {
                return Reply { code, lines };
            }
        }
    }

    /// Reads a reply and checks its code.
    pub async fn expect(&mut self, code: u16) -> Reply {
        let reply = self.read_reply().await;
        assert_eq!(reply.code, code, "unexpected reply {reply:?}");
        reply
    }

    pub async fn expect_greeting(&mut self) {
        let reply = self.expect(220).await;
        assert_eq!(reply.lines, [format!("{HOSTNAME} ESMTP serverfirst")]);
    }

    /// Sends one command line and checks the reply code.
    pub async fn command(&mut self, line: &str, code: u16) -> Reply {
        self.send(format!("{line}\r\n")).await;
        self.expect(code).await
    }

    /// Runs a whole transaction after the greeting and returns the reply to the data.
    pub async fn transaction(&mut self, from: &str, to: &[&str], message: &[u8]) -> Reply {
        self.command(&format!("MAIL FROM:<{from}>"), 250).await;
        for rcpt in to {
            self.command(&format!("RCPT TO:<{rcpt}>"), 250).await;
        }
        self.command("DATA", 354).await;
        self.send(smtp::data::dot_stuff(message)).await;
        self.read_reply().await
    }

    /// Reads until the server closes the connection (or resets it).
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(WAIT, self.stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the server did not close the connection");
        rest
    }

    /// Checks that the server closes the connection.
    pub async fn expect_closed(&mut self) {
        let line = self.read_line().await;
        assert_eq!(line, "", "expected the server to close the connection");
    }
}

/// A rustls client configuration trusting only `ca_pem`.
pub fn client_tls_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Runs a verifying TLS handshake for [`HOSTNAME`] over `stream`.
pub async fn tls_handshake(stream: TcpStream, ca_pem: &str) -> TlsStream<TcpStream> {
    let connector = TlsConnector::from(client_tls_config(ca_pem));
    let name = rustls_pki_types::ServerName::try_from(HOSTNAME).expect("server name");
    tokio::time::timeout(WAIT, connector.connect(name, stream))
        .await
        .expect("handshake in time")
        .expect("TLS handshake")
}

/// A certificate for [`HOSTNAME`] and the server TLS configuration built from it.
pub fn test_tls() -> (serverfirst::certs::CertBundle, Arc<rustls::ServerConfig>) {
    let bundle = serverfirst::certs::generate(&[HOSTNAME.to_string()], 1).expect("certificate");
    let config = smtp::tls_config_from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes())
        .expect("server TLS config");
    (bundle, config)
}
