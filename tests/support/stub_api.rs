//! A stub Kubernetes API server on 127.0.0.1 over HTTPS (the routes are the test's), and a
//! kubeconfig that points a real client at it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use base64::Engine as _;
use serverfirst::server::{self, Limits};
use serverfirst::tls::{self, CertResolver};
use tokio_util::sync::CancellationToken;

/// An HTTPS server in the test's runtime; stops when dropped.
pub struct HttpsServer {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves `router` on 127.0.0.1:0 with the given PEM certificate and key.
pub async fn serve_https(router: Router, cert_pem: &str, key_pem: &str) -> HttpsServer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = tls::certified_key(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    let tls_config = Arc::new(tls::server_config(Arc::new(CertResolver::new(key)), None).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(server::serve_https(
        listener,
        tls_config,
        router,
        Limits::default(),
        shutdown.clone(),
    ));
    HttpsServer { addr, shutdown }
}

/// The stub API server, with the CA that signed its certificate (for 127.0.0.1).
pub struct StubApi {
    pub server: HttpsServer,
    pub ca_pem: String,
}

impl StubApi {
    pub async fn start(router: Router) -> StubApi {
        let bundle = serverfirst::certs::generate(&["127.0.0.1".into()], 1).unwrap();
        let server = serve_https(router, &bundle.cert_pem, &bundle.key_pem).await;
        StubApi {
            server,
            ca_pem: bundle.ca_pem,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.server.addr)
    }

    /// Writes `dir/kubeconfig` for this server: one context per `(name, namespace)`, all with
    /// the same token user, `current` selected.
    pub fn kubeconfig(&self, dir: &Path, current: &str, contexts: &[(&str, &str)]) -> PathBuf {
        kubeconfig(dir, &self.url(), &self.ca_pem, current, contexts)
    }
}

/// Writes `dir/kubeconfig` for `server` (which `ca_pem` verifies), as [`StubApi::kubeconfig`].
pub fn kubeconfig(
    dir: &Path,
    server: &str,
    ca_pem: &str,
    current: &str,
    contexts: &[(&str, &str)],
) -> PathBuf {
    let path = dir.join("kubeconfig");
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let contexts: String = contexts
        .iter()
        .map(|(name, namespace)| {
            format!(
                "- name: {name}\n  context: {{cluster: stub, user: tester, namespace: {namespace}}}\n"
            )
        })
        .collect();
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {current}\nclusters:\n- name: stub\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
             users:\n- name: tester\n  user:\n    token: test-token\ncontexts:\n{contexts}"
        ),
    )
    .unwrap();
    path
}
