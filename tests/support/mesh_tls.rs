//! A test mesh CA and workload certificates shaped like istiod's: no subject, the workload's
//! SPIFFE identity (`spiffe://<trust domain>/ns/<namespace>/sa/<service account>`) as the only
//! SAN, usable as server and client. Written as files the proxy's uid can read, for Envoys that
//! take them from disk where Istio's take them over SDS.
#![allow(dead_code)]

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::envoy::PROXY_UID;
use crate::istio_sidecar::TlsFiles;

/// The SPIFFE identity of a workload in Istio's default trust domain.
pub fn spiffe_id(namespace: &str, service_account: &str) -> String {
    format!("spiffe://cluster.local/ns/{namespace}/sa/{service_account}")
}

/// The CA and the directory its certificates are written to; dropping it removes the files.
pub struct MeshCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl MeshCa {
    pub fn new() -> MeshCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "cluster.local");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("tempdir");
        chown_to_proxy(dir.path());
        let root = dir.path().join("root-cert.pem");
        std::fs::write(&root, issuer.pem()).expect("write the root");
        chown_to_proxy(&root);
        MeshCa { issuer, dir }
    }

    /// A certificate for `spiffe_id`, with its key and the root, as files.
    pub fn workload(&self, file_stem: &str, spiffe_id: &str) -> TlsFiles {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![SanType::URI(
            spiffe_id.try_into().expect("SPIFFE ID is IA5"),
        )];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let write = |name: String, pem: String| -> String {
            let path = self.dir.path().join(name);
            std::fs::write(&path, pem).expect("write a certificate file");
            chown_to_proxy(&path);
            path.to_string_lossy().into_owned()
        };
        TlsFiles {
            cert_chain: write(format!("{file_stem}-cert-chain.pem"), cert.pem()),
            private_key: write(format!("{file_stem}-key.pem"), key.serialize_pem()),
            trusted_ca: self
                .dir
                .path()
                .join("root-cert.pem")
                .to_string_lossy()
                .into_owned(),
        }
    }
}

fn chown_to_proxy(path: &Path) {
    std::os::unix::fs::chown(path, Some(PROXY_UID), Some(PROXY_UID)).expect("chown");
}
