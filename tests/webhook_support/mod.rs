//! An in-process webhook on 127.0.0.1:0 and an HTTPS client that verifies it.
#![allow(dead_code)]

use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serverfirst::certs::{self, CertBundle};
use serverfirst::config::Config;
use serverfirst::mesh_state::{MeshState, SharedMeshState};
use serverfirst::metrics::Metrics;
use serverfirst::server::{self, Limits};
use serverfirst::tls::{self, CertResolver};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

pub struct TestServer {
    pub addr: SocketAddr,
    pub bundle: CertBundle,
    pub resolver: Arc<CertResolver>,
    pub metrics: Arc<Metrics>,
    /// The mesh state reviews read; a test stores another to change it.
    pub mesh: SharedMeshState,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(config: Config, limits: Limits) -> TestServer {
        Self::start_with_client_ca(config, limits, None).await
    }

    /// With `client_ca`, clients must present a certificate it signed.
    pub async fn start_with_client_ca(
        config: Config,
        limits: Limits,
        client_ca: Option<rustls::RootCertStore>,
    ) -> TestServer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bundle = certs::generate(&["localhost".into()], 1).unwrap();
        let key =
            tls::certified_key(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes()).unwrap();
        let resolver = Arc::new(CertResolver::new(key));
        let tls_config = Arc::new(tls::server_config(resolver.clone(), client_ca).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let mesh: SharedMeshState = Arc::new(ArcSwap::from_pointee(MeshState::default()));
        let router =
            server::webhook_router(Arc::new(config), mesh.clone(), metrics.clone(), &limits);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::serve_https(
            listener,
            tls_config,
            router,
            limits,
            shutdown.clone(),
        ));
        TestServer {
            addr,
            bundle,
            resolver,
            metrics,
            mesh,
            shutdown,
            task,
        }
    }

    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> (u16, Vec<u8>) {
        post(self.addr, &self.bundle.ca_pem, path, body.into(), false).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub async fn connect_tls(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = TlsConnector::from(client_config(ca_pem, alpn));
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// One POST over a fresh verified TLS connection, HTTP/1.1 or HTTP/2.
pub async fn post(
    addr: SocketAddr,
    ca_pem: &str,
    path: &str,
    body: Bytes,
    http2: bool,
) -> (u16, Vec<u8>) {
    let alpn: &[&[u8]] = if http2 { &[b"h2"] } else { &[b"http/1.1"] };
    let tls = connect_tls(addr, ca_pem, alpn)
        .await
        .expect("TLS connection");
    let io = TokioIo::new(tls);
    let request = hyper::Request::post(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let response = if http2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    };
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

/// The DER of the certificate the server presents on a new handshake.
pub async fn served_certificate(addr: SocketAddr, ca_pem: &str) -> std::io::Result<Vec<u8>> {
    let tls = connect_tls(addr, ca_pem, &[]).await?;
    let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
    Ok(certs
        .first()
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default())
}

/// `serverfirst serve --self-signed` as a child process on free loopback ports; killed by PID
/// when dropped, also when the test fails.
pub struct SpawnedServe {
    pub child: std::process::Child,
    pub webhook: SocketAddr,
    pub metrics_port: u16,
    pub ca_pem: String,
}

impl Drop for SpawnedServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SpawnedServe {
    /// Waits until `/readyz` answers 200, polling every 20 ms for at most `within`.
    pub fn wait_ready(&self, within: std::time::Duration) {
        use std::io::{Read, Write};
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)) {
                let _ = stream
                    .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut response = String::new();
                let _ = stream.read_to_string(&mut response);
                if response.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "serve not ready within {within:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl SpawnedServe {
    /// Starts the binary with `extra_args`, logging to `stderr`; returns once the CA is printed
    /// (the listeners are bound by then).
    pub fn start(extra_args: &[&str], stderr: std::process::Stdio) -> SpawnedServe {
        Self::start_with_env(extra_args, &[("RUST_LOG", "warn")], stderr)
    }

    /// As [`SpawnedServe::start`], with `env` set. No cluster is configured for it (no
    /// `$KUBECONFIG`, not in a pod, a `$HOME` without `.kube/config`) unless `env` says so.
    pub fn start_with_env(
        extra_args: &[&str],
        env: &[(&str, &str)],
        stderr: std::process::Stdio,
    ) -> SpawnedServe {
        Self::start_binary(env!("CARGO_BIN_EXE_serverfirst"), extra_args, env, stderr)
    }

    /// As [`SpawnedServe::start_with_env`], running `binary` (another build of serverfirst).
    pub fn start_binary(
        binary: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
        stderr: std::process::Stdio,
    ) -> SpawnedServe {
        use std::io::BufRead;
        let (webhook, metrics_port) = (free_port(), free_port());
        let mut child = std::process::Command::new(binary)
            .args([
                "serve",
                "--self-signed",
                "--listen",
                &format!("127.0.0.1:{webhook}"),
            ])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(extra_args)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("POD_NAMESPACE")
            .env("HOME", env!("CARGO_TARGET_TMPDIR"))
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut ca_pem = String::new();
        while !ca_pem.contains("-----END CERTIFICATE-----") {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "stdout closed before the CA was printed"
            );
            ca_pem.push_str(&line);
        }
        SpawnedServe {
            child,
            webhook: ([127, 0, 0, 1], webhook).into(),
            metrics_port,
            ca_pem,
        }
    }
}
