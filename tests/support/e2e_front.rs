//! The pod's front door on 127.0.0.1: the reference SMTP server on each server-first port, with
//! a sniffing proxy (Envoy-like: upstream only after the client's first bytes) in front of the
//! ports a mesh captures.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serverfirst::probe::{ProbeOptions, ProbeReport, probe};
use serverfirst::smtp::SmtpConfig;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::e2e_pods::SMTP_PORTS;
use crate::smtp_harness::{self, TestServer};

/// How long a client waits silently for the banner before it concludes there is a stall.
pub const STALL_WAIT: Duration = Duration::from_secs(1);

/// Stand-in for Envoy's `virtualInbound` listener with protocol sniffing and no detection
/// timeout: accepts, waits for the client's first bytes, only then connects upstream and relays.
pub struct SniffingProxy {
    pub addr: SocketAddr,
    pub upstream_connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl SniffingProxy {
    pub async fn start(upstream: SocketAddr) -> SniffingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let upstream_connections = Arc::new(AtomicUsize::new(0));
        let counter = upstream_connections.clone();
        let task = tokio::spawn(async move {
            // Dropping the set (when the task is aborted) aborts every relay with it.
            let mut relays = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let counter = counter.clone();
                relays.spawn(async move {
                    let mut first = vec![0; 4096];
                    let n = match client.read(&mut first).await {
                        Ok(n) if n > 0 => n,
                        _ => return, // gave up without a byte: no upstream connection at all
                    };
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    if tokio::io::AsyncWriteExt::write_all(&mut server, &first[..n])
                        .await
                        .is_ok()
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        SniffingProxy {
            addr,
            upstream_connections,
            task,
        }
    }
}

impl Drop for SniffingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The reference SMTP server on each server-first port of the pod ("the app"), one Maildir.
pub struct MailServer {
    pub servers: BTreeMap<u16, TestServer>,
    pub maildir: tempfile::TempDir,
}

impl MailServer {
    pub async fn start() -> MailServer {
        let maildir = tempfile::tempdir().expect("Maildir");
        let mut servers = BTreeMap::new();
        for port in SMTP_PORTS {
            let config = SmtpConfig {
                maildir: Some(maildir.path().to_path_buf()),
                ..smtp_harness::config()
            };
            servers.insert(port, TestServer::start(config).await);
        }
        MailServer { servers, maildir }
    }

    pub fn app(&self, port: u16) -> SocketAddr {
        self.servers[&port].addr
    }

    pub fn nothing_delivered(&mut self) -> bool {
        self.servers
            .values_mut()
            .all(|server| server.deliveries.try_recv().is_err())
    }

    pub async fn stop(self) {
        for server in self.servers.into_values() {
            server.stop().await.expect("SMTP server ran cleanly");
        }
    }
}

/// The pod's server-first ports as a client outside the pod reaches them: through a sniffing
/// proxy where the model says the sidecar captures the port, straight to the server elsewhere.
pub struct PodFront {
    pub addrs: BTreeMap<u16, SocketAddr>,
    pub proxies: BTreeMap<u16, SniffingProxy>,
}

impl PodFront {
    /// Puts a sniffing proxy in front of the ports `captured` says the sidecar captures.
    pub async fn new(captured: impl Fn(u16) -> bool, server: &MailServer) -> PodFront {
        let mut addrs = BTreeMap::new();
        let mut proxies = BTreeMap::new();
        for port in SMTP_PORTS {
            let app = server.app(port);
            if captured(port) {
                let proxy = SniffingProxy::start(app).await;
                addrs.insert(port, proxy.addr);
                proxies.insert(port, proxy);
            } else {
                addrs.insert(port, app);
            }
        }
        PodFront { addrs, proxies }
    }

    pub fn upstream_connections(&self, port: u16) -> usize {
        self.proxies[&port]
            .upstream_connections
            .load(Ordering::SeqCst)
    }
}

pub async fn probe_port(front: &PodFront, port: u16) -> ProbeReport {
    let options = ProbeOptions {
        timeout: Duration::from_secs(3),
        send_after: STALL_WAIT,
    };
    probe(&front.addrs[&port].to_string(), &options)
        .await
        .expect("the probe connects")
}
