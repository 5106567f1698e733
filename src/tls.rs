//! The serving certificate: loaded from PEM, swapped atomically on reload, never left empty.
//!
//! Reload polls the files by path: reading by path follows the kubelet's atomic `..data`
//! symlink swap of a mounted Secret, which inotify watches on the old inode would miss. A bad
//! new pair (unreadable, unparsable, key not matching) keeps the last good one serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Closer than this to expiry, the certificate is logged as a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("no certificate found in the PEM data")]
    NoCertificate,
    #[error("invalid certificate PEM: {0}")]
    CertificatePem(rustls_pki_types::pem::Error),
    #[error("invalid private key PEM: {0}")]
    KeyPem(rustls_pki_types::pem::Error),
    #[error("certificate and key do not form a usable pair: {0}")]
    Pair(#[from] rustls::Error),
    #[error("invalid client CA: {0}")]
    ClientCa(String),
}

/// The crypto provider every TLS user of this crate is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain and private key into a checked pair.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::CertificatePem)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(TlsError::KeyPem)?;
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Hands out the current certificate to every handshake.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(key: CertifiedKey) -> Self {
        CertResolver {
            current: ArcSwap::from_pointee(key),
        }
    }

    pub fn set(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS 1.2 and 1.3 with the provider's default suites (AEAD only, forward secrecy only);
/// HTTP/2 and HTTP/1.1 by ALPN. With `client_ca`, clients must present a certificate it signed.
pub fn server_config(
    resolver: Arc<CertResolver>,
    client_ca: Option<RootCertStore>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The CA certificates (PEM) that client certificates must chain to.
pub fn client_ca_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = read(path)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.map_err(TlsError::CertificatePem)?)
            .map_err(|e| TlsError::ClientCa(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::ClientCa(format!(
            "no CA certificate in {}",
            path.display()
        )));
    }
    Ok(roots)
}

/// When the serving certificate (the first of the chain) expires, in seconds since the epoch.
pub fn not_after(key: &CertifiedKey) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(key.cert.first()?.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Exposes the serving certificate's expiry and warns when it is close.
pub fn report_expiry(key: &CertifiedKey, metrics: &Metrics) {
    let Some(not_after) = not_after(key) else {
        return;
    };
    metrics.set_certificate_expiry(not_after);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let days_left = (not_after - now) / 86_400;
    if not_after - now < EXPIRY_WARNING.as_secs() as i64 {
        tracing::warn!(
            days_left,
            not_after,
            "serving certificate expires in less than 7 days: rotate it"
        );
    }
}

/// A certificate and key on disk, reloaded when their contents change.
#[derive(Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    last: (Vec<u8>, Vec<u8>),
}

impl CertFiles {
    /// Loads the pair for the first time; failure here is fatal for the caller.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<(CertFiles, CertifiedKey), TlsError> {
        let (cert_pem, key_pem) = (read(&cert)?, read(&key)?);
        let certified = certified_key(&cert_pem, &key_pem)?;
        Ok((
            CertFiles {
                cert,
                key,
                last: (cert_pem, key_pem),
            },
            certified,
        ))
    }

    /// Reloads when the files' bytes changed: `Ok(None)` when unchanged.
    pub fn reload(&mut self) -> Result<Option<CertifiedKey>, TlsError> {
        let current = (read(&self.cert)?, read(&self.key)?);
        if current == self.last {
            return Ok(None);
        }
        let certified = certified_key(&current.0, &current.1);
        // Remember a bad pair too, so it is reported once, not on every poll.
        self.last = current;
        certified.map(Some)
    }
}

/// Polls `files` every `interval` until `shutdown`, swapping good new pairs into `resolver`.
pub async fn watch(
    mut files: CertFiles,
    resolver: Arc<CertResolver>,
    interval: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_expiry_report = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if last_expiry_report.elapsed() >= Duration::from_secs(3600) {
            report_expiry(&resolver.current(), &metrics);
            last_expiry_report = tokio::time::Instant::now();
        }
        match files.reload() {
            Ok(None) => {}
            Ok(Some(key)) => {
                report_expiry(&key, &metrics);
                resolver.set(key);
                metrics.tls_reload(true);
                tracing::info!(cert = %files.cert.display(), "serving certificate reloaded");
            }
            Err(error) => {
                metrics.tls_reload(false);
                tracing::error!(%error, cert = %files.cert.display(), "certificate reload failed; still serving the previous one");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;

    #[test]
    fn accepts_a_matching_pair_and_rejects_others() {
        let a = certs::generate(&["localhost".into()], 1).unwrap();
        let b = certs::generate(&["localhost".into()], 1).unwrap();
        assert!(certified_key(a.cert_pem.as_bytes(), a.key_pem.as_bytes()).is_ok());
        let mismatch = certified_key(a.cert_pem.as_bytes(), b.key_pem.as_bytes()).unwrap_err();
        assert!(matches!(mismatch, TlsError::Pair(_)), "{mismatch}");
        assert!(matches!(
            certified_key(b"", a.key_pem.as_bytes()),
            Err(TlsError::NoCertificate)
        ));
        assert!(certified_key(a.cert_pem.as_bytes(), b"garbage").is_err());
    }

    #[test]
    fn reads_the_expiry_of_the_serving_certificate() {
        let bundle = certs::generate(&["localhost".into()], 3).unwrap();
        let key = certified_key(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes()).unwrap();
        let left = not_after(&key).unwrap() - time::OffsetDateTime::now_utc().unix_timestamp();
        // Valid from one hour ago for three days.
        assert!(
            (3 * 86_400 - 3_700..=3 * 86_400 - 3_500).contains(&left),
            "{left}"
        );
        let metrics = Metrics::new();
        report_expiry(&key, &metrics);
        assert!(metrics.encode().contains(&format!(
            "serverfirst_tls_certificate_expiry_timestamp_seconds {}",
            not_after(&key).unwrap()
        )));
    }

    #[test]
    fn client_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.crt");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            client_ca_roots(&empty),
            Err(TlsError::ClientCa(_))
        ));
        let bundle = certs::generate(&["localhost".into()], 1).unwrap();
        std::fs::write(&empty, bundle.ca_pem).unwrap();
        assert_eq!(client_ca_roots(&empty).unwrap().len(), 1);
    }

    #[test]
    fn reload_reports_changes_once_and_keeps_bad_pairs_out() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let first = certs::generate(&["localhost".into()], 1).unwrap();
        std::fs::write(&cert, &first.cert_pem).unwrap();
        std::fs::write(&key, &first.key_pem).unwrap();
        let (mut files, _) = CertFiles::load(cert.clone(), key.clone()).unwrap();
        assert!(files.reload().unwrap().is_none());

        let second = certs::generate(&["localhost".into()], 1).unwrap();
        std::fs::write(&cert, &second.cert_pem).unwrap();
        // The key does not match yet (half-written rotation): an error, not a swap.
        assert!(files.reload().is_err());
        std::fs::write(&key, &second.key_pem).unwrap();
        let reloaded = files.reload().unwrap().expect("new pair loaded");
        assert_eq!(
            reloaded.cert[0].as_ref(),
            CertificateDer::from_pem_slice(second.cert_pem.as_bytes())
                .unwrap()
                .as_ref()
        );
    }
}
