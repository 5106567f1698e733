//! Errors that stop the SMTP server from starting.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("cannot read {path}: {source}")]
    ReadFile { path: PathBuf, source: io::Error },
    #[error("invalid PEM: {0}")]
    Pem(#[from] rustls_pki_types::pem::Error),
    #[error("no certificate found in the PEM data")]
    NoCertificate,
    #[error("invalid TLS certificate or key: {0}")]
    Tls(#[from] rustls::Error),
    #[error("an implicit-TLS listener needs a TLS certificate and key")]
    ImplicitTlsWithoutCertificate,
    #[error("cannot create Maildir {path}: {source}")]
    Maildir { path: PathBuf, source: io::Error },
    #[error("listener: {0}")]
    Listener(#[source] io::Error),
}
