//! The chart under `charts/serverfirst` and the `helm` that renders it, and the certificate
//! material a `certificates.source=helm` rendering carries. Needs `mod common;`,
//! `mod manifest_tools;` and `mod stub_api;` in the including test crate.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::Value;
use serverfirst::certs::service_dns_names;
use tokio_rustls::TlsConnector;

use crate::manifest_tools::{NAMESPACE, SERVICE, Tools, locate, only, parse_yaml, run_ok};

/// The release name of the README's `helm install`: names come out as in the overlays.
pub const RELEASE: &str = "serverfirst";
/// The annotation on the chart's Secret recording the serving certificate's expiry.
pub const NOT_AFTER: &str = "serverfirst.dev/not-after";
/// The pinned helm of .ci/install-manifest-tools; its major version is what the tests need
/// (`helm template --dry-run=server`, the schema errors' wording).
const HELM_MAJOR: &str = "v4.";

pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/serverfirst")
}

/// The `--set` arguments that select a certificate source: cert-manager with its API declared,
/// secret with the Secret the overlays use and `ca_bundle`.
pub fn source_args(source: &str, ca_bundle: &str) -> Vec<String> {
    let set = |s: String| ["--set".to_string(), s];
    let mut args: Vec<String> = set(format!("certificates.source={source}")).into();
    match source {
        "cert-manager" => {
            for kind in ["Issuer", "Certificate"] {
                args.extend([
                    "--api-versions".into(),
                    format!("cert-manager.io/v1/{kind}"),
                ]);
            }
        }
        "secret" => {
            args.extend(set(format!(
                "certificates.secretName={}",
                crate::manifest_tools::SECRET
            )));
            args.extend(set(format!("certificates.caBundle={ca_bundle}")));
        }
        _ => {}
    }
    args
}

pub struct Helm {
    bin: PathBuf,
}

pub struct HelmTools;

impl HelmTools {
    /// helm and the manifest tools, or why not: a failure when they are required, else a skip.
    pub fn find(test: &str) -> Option<(Helm, Tools)> {
        let found = locate("helm", "SERVERFIRST_HELM").and_then(|bin| {
            let version =
                run_ok(Command::new(&bin).args(["version", "--template", "{{.Version}}"]))?;
            if !version.starts_with(HELM_MAJOR) {
                return Err(format!(
                    "{} is helm {version}, {HELM_MAJOR}x needed",
                    bin.display()
                ));
            }
            Ok((Helm { bin }, Tools::locate()?))
        });
        match found {
            Ok(tools) => Some(tools),
            Err(why) => {
                let why = format!("{why} (install with .ci/install-manifest-tools)");
                crate::common::tool_missing(test, &why);
                None
            }
        }
    }
}

impl Helm {
    /// stdout on success, stderr on failure.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        self.output(Command::new(&self.bin).args(args))
    }

    fn output(&self, command: &mut Command) -> Result<String, String> {
        let output = command.output().unwrap();
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// `helm template` of the chart, without a cluster: the objects, or helm's error.
    pub fn template(
        &self,
        release: &str,
        namespace: &str,
        args: &[String],
    ) -> Result<Vec<Value>, String> {
        let mut command = Command::new(&self.bin);
        command
            .args(["template", release])
            .arg(chart_dir())
            .args(["--namespace", namespace])
            .args(args);
        let context = format!("helm template {args:?}");
        self.output(&mut command)
            .map(|text| parse_yaml(&text, &context))
    }

    /// `helm template --dry-run=server` against the cluster of `kubeconfig`, as `helm upgrade`
    /// renders: `lookup` reads the cluster. Panics with helm's error.
    pub fn template_against(
        &self,
        kubeconfig: &Path,
        release: &str,
        namespace: &str,
        args: &[String],
    ) -> Vec<Value> {
        let mut command = Command::new(&self.bin);
        command
            .args(["template", release])
            .arg(chart_dir())
            .args(["--namespace", namespace])
            // The stub serves discovery and objects, not OpenAPI documents.
            .args(["--dry-run=server", "--disable-openapi-validation"])
            .args(args)
            .env("KUBECONFIG", kubeconfig);
        let text = self
            .output(&mut command)
            .unwrap_or_else(|e| panic!("helm template --dry-run=server: {e}"));
        parse_yaml(&text, "helm template --dry-run=server")
    }
}

/// RFC 3339 (UTC, seconds) of now plus `days`.
pub fn rfc3339_in_days(days: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(days * 86_400))
        .to_string()
}

/// The certificate material of a `certificates.source=helm` rendering.
pub struct HelmCertificate {
    /// The Secret's data (base64 values).
    pub secret_data: Value,
    pub not_after: String,
    /// The caBundle of the webhooks (all the same).
    pub ca_bundle: String,
}

impl HelmCertificate {
    pub fn from_objects(objects: &[Value]) -> HelmCertificate {
        let configuration = only(objects, "MutatingWebhookConfiguration", "source=helm");
        let bundles: Vec<&str> = crate::manifest_tools::ca_bundles(configuration)
            .into_iter()
            .map(|b| b.as_str().expect("caBundle"))
            .collect();
        assert!(
            bundles.windows(2).all(|w| w[0] == w[1]),
            "one caBundle for every webhook"
        );
        HelmCertificate {
            ca_bundle: bundles[0].to_string(),
            ..HelmCertificate::from_secret(only(objects, "Secret", "source=helm"))
        }
    }

    pub fn from_secret(secret: &Value) -> HelmCertificate {
        HelmCertificate {
            secret_data: secret["data"].clone(),
            not_after: secret["metadata"]["annotations"][NOT_AFTER]
                .as_str()
                .unwrap_or_else(|| panic!("the Secret records {NOT_AFTER}"))
                .to_string(),
            ca_bundle: String::new(),
        }
    }

    fn pem(&self, file: &str) -> String {
        let data = self.secret_data[file]
            .as_str()
            .unwrap_or_else(|| panic!("Secret {file}"));
        String::from_utf8(BASE64.decode(data).unwrap()).unwrap()
    }

    pub fn ca_pem(&self) -> String {
        self.pem("ca.crt")
    }

    pub fn dns_names(&self) -> Vec<String> {
        let pem = self.pem("tls.crt");
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let names = cert
            .subject_alternative_name()
            .unwrap()
            .expect("subjectAltName");
        names
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(name) => Some(name.to_string()),
                _ => None,
            })
            .collect()
    }

    /// A certificate made by this rendering: for the Service's names, valid for
    /// certificates.validityDays (365), the annotation matching the certificate, and a caBundle
    /// led by the Secret's CA.
    pub fn check_fresh(&self, context: &str) {
        let key = serverfirst::tls::certified_key(
            self.pem("tls.crt").as_bytes(),
            self.pem("tls.key").as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{context}: serverfirst cannot load the Secret: {e}"));
        let expires = serverfirst::tls::not_after(&key).expect("not-after");
        let recorded = humantime::parse_rfc3339(&self.not_after)
            .unwrap_or_else(|e| panic!("{context}: {NOT_AFTER} {:?}: {e}", self.not_after))
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (recorded - expires).abs() <= 60,
            "{context}: {NOT_AFTER} {} is the certificate's",
            self.not_after
        );
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let days = (expires - now) as f64 / 86_400.0;
        assert!(
            (364.9..=365.1).contains(&days),
            "{context}: valid {days} days"
        );
        assert_eq!(
            self.dns_names(),
            service_dns_names(SERVICE, NAMESPACE),
            "{context}: dnsNames"
        );
        let bundle = String::from_utf8(BASE64.decode(&self.ca_bundle).unwrap()).unwrap();
        assert!(
            bundle.starts_with(&self.ca_pem()),
            "{context}: caBundle trusts the Secret's CA"
        );
    }

    /// serverfirst's TLS server, serving the Secret, passes the verification the API server
    /// makes with the caBundle (for the Service's DNS name).
    pub async fn check_serves(&self) {
        self.check_served_with(&self.ca_bundle).await;
    }

    /// As [`Self::check_serves`], with another caBundle.
    pub async fn check_served_with(&self, ca_bundle: &str) {
        let server = crate::stub_api::serve_https(
            axum::Router::new(),
            &self.pem("tls.crt"),
            &self.pem("tls.key"),
        )
        .await;
        let bundle = BASE64.decode(ca_bundle).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&bundle) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(serverfirst::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let name = ServerName::try_from(format!("{SERVICE}.{NAMESPACE}.svc")).unwrap();
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap_or_else(|e| {
                panic!("the caBundle does not verify the serving certificate: {e}")
            });
    }
}
