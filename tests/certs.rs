//! `serverfirst certs`: what it writes and prints, and that its certificate is what the webhook
//! needs: `serverfirst serve` accepts it, and a client that trusts only the printed caBundle
//! verifies it under every DNS name of the Service.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serverfirst::certs::service_dns_names;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::BIN;

fn certs(args: &[&str]) -> Output {
    Command::new(BIN).arg("certs").args(args).output().unwrap()
}

fn succeeded(output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "serverfirst certs failed: {stderr}"
    );
    String::from_utf8(output.stdout).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn private_key_is_0600_even_with_an_open_umask() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // umask 000 would leave a file created 0666 world-readable: the key must not depend on it.
    let output = Command::new("sh")
        .args([
            "-c",
            "umask 000; exec \"$0\" certs --out \"$1\"",
            BIN,
            arg(&out),
        ])
        .output()
        .unwrap();
    succeeded(output);
    assert_eq!(mode(&out.join("tls.key")), 0o600);
    assert_eq!(mode(&out.join("tls.crt")), 0o644);
    assert_eq!(mode(&out.join("ca.crt")), 0o644);
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !["ca.crt", "tls.crt", "tls.key"].contains(&name.as_str()))
        .collect();
    assert!(leftovers.is_empty(), "unexpected files: {leftovers:?}");
}

#[test]
fn stdout_is_only_the_ca_bundle_of_ca_crt() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = succeeded(certs(&["--out", arg(dir.path())]));
    assert_eq!(stdout.lines().count(), 1, "stdout: {stdout:?}");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(stdout.trim_end())
        .expect("stdout is base64");
    assert_eq!(decoded, std::fs::read(dir.path().join("ca.crt")).unwrap());
    let ca = String::from_utf8(decoded).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
}

#[test]
fn rerunning_replaces_a_readable_key_with_a_private_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("tls.key");
    std::fs::write(&key, "old").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    succeeded(certs(&["--out", arg(dir.path())]));
    assert_eq!(mode(&key), 0o600);
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
}

#[test]
fn kustomize_component_holds_the_same_certificates_and_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let (out, component) = (dir.path().join("out"), dir.path().join("component"));
    let stdout = succeeded(certs(&["--out", arg(&out), "--kustomize", arg(&component)]));
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        let (a, b) = (out.join(file), component.join(file));
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{file}"
        );
    }
    assert_eq!(mode(&component.join("tls.key")), 0o600);

    let read = |name: &str| -> serde_json::Value {
        serde_saphyr::from_str(&std::fs::read_to_string(component.join(name)).unwrap()).unwrap()
    };
    let kustomization = read("kustomization.yaml");
    assert_eq!(kustomization["kind"], "Component");
    assert_eq!(
        kustomization["resources"],
        serde_json::json!(["cabundle.yaml"])
    );
    let cabundle = read("cabundle.yaml");
    assert_eq!(cabundle["data"]["caBundle"], stdout.trim_end());
    assert_eq!(
        cabundle["metadata"]["annotations"]["config.kubernetes.io/local-config"],
        "true"
    );
}

#[test]
fn unwritable_output_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // A directory below a regular file cannot be created, even by root.
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let output = certs(&["--out", arg(&file.join("out"))]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot create directory"), "{stderr}");
    assert!(stderr.contains(arg(&file)), "names the path: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.stdout.is_empty(), "no caBundle without certificates");
}

#[test]
fn rejects_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let out = arg(dir.path());
    for args in [
        &[][..],
        &["--out", out, "--days", "0"],
        &["--out", out, "--namespace", "Not_A_Label"],
        &["--out", out, "--service", "a.b"],
    ] {
        let output = certs(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// TLS: a client trusting only the printed CA, connecting to 127.0.0.1 under each DNS name

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Connects to `addr` presenting `name` as SNI and verifying the server against `ca_bundle`
/// only; returns the handshake's result.
async fn handshake(addr: SocketAddr, name: &str, ca_bundle: &str) -> Result<(), String> {
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(ca_bundle.trim_end())
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let mut tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tls.shutdown().await;
    Ok(())
}

/// Every name verifies; a name outside the certificate does not (so the check is real).
async fn check_names(addr: SocketAddr, names: &[String], ca_bundle: &str) {
    for name in names {
        if let Err(error) = handshake(addr, name, ca_bundle).await {
            panic!("TLS to {addr} as {name}: {error}");
        }
    }
    let error = handshake(addr, "not-the-service.example", ca_bundle).await;
    assert!(
        error.is_err(),
        "a name outside the certificate must not verify"
    );
}

#[tokio::test]
async fn certificate_verifies_for_every_service_dns_name() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--service",
        "hook",
        "--namespace",
        "policy",
        "--out",
        arg(dir.path()),
    ];
    let ca_bundle = succeeded(certs(&args));

    let chain: Vec<_> = CertificateDer::pem_file_iter(dir.path().join("tls.crt"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.path().join("tls.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("tls.crt and tls.key belong together");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.read(&mut [0; 1]).await;
                }
            });
        }
    });

    let names = service_dns_names("hook", "policy");
    assert_eq!(names[3], "hook.policy.svc.cluster.local");
    check_names(addr, &names, &ca_bundle).await;
    server.abort();
}

// ---------------------------------------------------------------------------------------------
// The real server

/// Kills the child (by its PID) when dropped, so a failing test leaves no server behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /readyz` over plain HTTP; true on a 200.
async fn ready(metrics: SocketAddr) -> bool {
    let Ok(mut tcp) = TcpStream::connect(metrics).await else {
        return false;
    };
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n");
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut response)).await;
    response.starts_with(b"HTTP/1.1 200") || response.starts_with(b"HTTP/1.0 200")
}

#[tokio::test]
async fn serve_accepts_the_certificate_for_every_service_dns_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca_bundle = succeeded(certs(&["--out", arg(dir.path())]));
    let webhook: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log_path: PathBuf = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();

    let mut server = KillOnDrop(
        Command::new(BIN)
            .arg("serve")
            .args(["--tls-cert", arg(&dir.path().join("tls.crt"))])
            .args(["--tls-key", arg(&dir.path().join("tls.key"))])
            .args(["--listen", &webhook.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!(
                "serverfirst serve exited ({status}) before it was ready:\n{}",
                log()
            );
        }
        if ready(metrics).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "GET http://{metrics}/readyz never answered 200 within 30 s:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    check_names(
        webhook,
        &service_dns_names("serverfirst", "serverfirst-system"),
        &ca_bundle,
    )
    .await;
}
