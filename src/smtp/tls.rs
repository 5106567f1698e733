//! The rustls server configuration used for STARTTLS and implicit-TLS listeners.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::error::SmtpError;

/// Builds a server configuration from a PEM certificate chain (leaf first) and a PEM private key.
///
/// Uses the process-wide crypto provider if one is installed, ring otherwise.
pub fn tls_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, SmtpError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(SmtpError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)?;
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// [`tls_config_from_pem`] with the PEM read from files.
pub fn load_tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, SmtpError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| SmtpError::ReadFile {
            path: path.to_path_buf(),
            source,
        })
    };
    tls_config_from_pem(&read(cert)?, &read(key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_from_generated_certificate() {
        let bundle = crate::certs::generate(&["mx.test".to_string()], 1).expect("generate");
        let config = tls_config_from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes());
        assert!(config.is_ok(), "{config:?}");
    }

    #[test]
    fn rejects_missing_certificate_and_key() {
        let bundle = crate::certs::generate(&["mx.test".to_string()], 1).expect("generate");
        assert!(matches!(
            tls_config_from_pem(b"", bundle.key_pem.as_bytes()),
            Err(SmtpError::NoCertificate)
        ));
        assert!(matches!(
            tls_config_from_pem(bundle.cert_pem.as_bytes(), b"not pem"),
            Err(SmtpError::Pem(_))
        ));
    }

    #[test]
    fn missing_file_names_the_path() {
        let error = load_tls_config(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
        )
        .expect_err("missing file");
        assert!(
            error.to_string().contains("/nonexistent/cert.pem"),
            "{error}"
        );
    }
}
