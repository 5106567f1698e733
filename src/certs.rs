//! A private CA and a serving certificate for the webhook's Service DNS names (rcgen).
//!
//! Used by `serverfirst certs` (files for the cluster) and `serve --self-signed` (in memory).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// PEM-encoded CA certificate, serving certificate and its private key.
#[derive(Clone)]
pub struct CertBundle {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertBundle {
    /// The CA certificate as a webhook configuration's `clientConfig.caBundle`: base64 of the PEM.
    pub fn ca_bundle(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }
}

impl std::fmt::Debug for CertBundle {
    // Never print the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertBundle").finish_non_exhaustive()
    }
}

/// The DNS names a Service `name` in `namespace` is reached by from inside the cluster.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Generates a fresh CA and a serving certificate for `names` (DNS names or IP addresses),
/// both valid for `days` days (from one hour ago, to tolerate clock skew).
pub fn generate(names: &[String], days: u32) -> Result<CertBundle, rcgen::Error> {
    let not_before = OffsetDateTime::now_utc() - Duration::hours(1);
    let not_after = not_before + Duration::days(i64::from(days));

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "serverfirst webhook CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut leaf_params = CertificateParams::new(names.to_vec())?;
    let common_name = names.first().map_or("serverfirst", String::as_str);
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.not_before = not_before;
    leaf_params.not_after = not_after;
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca)?;

    Ok(CertBundle {
        ca_pem: ca.pem(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_cover_every_in_cluster_form() {
        assert_eq!(
            service_dns_names("serverfirst", "serverfirst-system"),
            [
                "serverfirst",
                "serverfirst.serverfirst-system",
                "serverfirst.serverfirst-system.svc",
                "serverfirst.serverfirst-system.svc.cluster.local",
            ]
        );
    }

    #[test]
    fn generates_distinct_pem_objects() {
        let bundle = generate(&["localhost".into(), "127.0.0.1".into()], 1).unwrap();
        assert!(bundle.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(bundle.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(bundle.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(bundle.ca_pem, bundle.cert_pem);
    }

    #[test]
    fn ca_bundle_is_base64_of_the_ca_pem() {
        use base64::Engine as _;
        let bundle = generate(&["localhost".into()], 1).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(bundle.ca_bundle())
            .unwrap();
        assert_eq!(decoded, bundle.ca_pem.as_bytes());
    }
}
