//! `serverfirst certs`: a private CA and a serving certificate for the webhook Service, written as
//! PEM files and, with `--kustomize`, as the kustomize Component the install overlays include.
//!
//! Only the base64 caBundle goes to stdout, so scripts can capture it; messages go to stderr.
//! The CA's private key is never written: nothing else can be signed with it.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::certs::{self, CertBundle};

/// The Secret the Deployment mounts (`manifests/base/deployment.yaml`).
const SECRET_NAME: &str = "serverfirst-tls";
/// The webhook configuration whose caBundle is set (`manifests/base/mutatingwebhookconfiguration.yaml`).
const WEBHOOK_CONFIGURATION: &str = "0-serverfirst";

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("output").required(true).multiple(true)))]
pub struct CertsArgs {
    /// Name of the webhook's Service.
    #[arg(long, default_value = "serverfirst", value_parser = dns_label)]
    service: String,

    /// Namespace of the webhook's Service (and of the generated Secret).
    #[arg(long, default_value = "serverfirst-system", value_parser = dns_label)]
    namespace: String,

    /// Write ca.crt, tls.crt and tls.key (mode 0600) to DIR, created if missing.
    #[arg(long, value_name = "DIR", group = "output")]
    out: Option<PathBuf>,

    /// Write a kustomize Component to DIR: the same three files, a secretGenerator for the
    /// kubernetes.io/tls Secret serverfirst-tls, and a replacement that sets every webhook's
    /// caBundle. The install overlays include it from certs/out.
    #[arg(long, value_name = "DIR", group = "output")]
    kustomize: Option<PathBuf>,

    /// Validity of the CA and of the serving certificate, in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
}

pub fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    let names = certs::service_dns_names(&args.service, &args.namespace);
    let bundle = certs::generate(&names, args.days).context("cannot generate the certificates")?;

    if let Some(dir) = &args.out {
        write_pem_files(dir, &bundle)?;
        eprintln!(
            "wrote {}: ca.crt, tls.crt, tls.key (valid {} days for {})",
            dir.display(),
            args.days,
            names.join(", ")
        );
    }
    if let Some(dir) = &args.kustomize {
        write_pem_files(dir, &bundle)?;
        write_file(
            dir,
            "cabundle.yaml",
            cabundle_yaml(&args.namespace, &bundle).as_bytes(),
            0o644,
        )?;
        write_file(
            dir,
            "kustomization.yaml",
            kustomization_yaml(&args.namespace, args.days).as_bytes(),
            0o644,
        )?;
        eprintln!(
            "wrote kustomize component {} (Secret {}/{SECRET_NAME} and the caBundle of {WEBHOOK_CONFIGURATION}, valid {} days for {})",
            dir.display(),
            args.namespace,
            args.days,
            names.join(", ")
        );
    }

    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{}", bundle.ca_bundle())
        .and_then(|()| stdout.flush())
        .context("cannot write the caBundle to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Accepts an RFC 1123 DNS label, as Kubernetes requires for Service and namespace names.
fn dns_label(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(value.to_string())
    } else {
        Err("must be a DNS label: 1 to 63 lowercase letters, digits or '-', not starting or ending with '-'".into())
    }
}

fn write_pem_files(dir: &Path, bundle: &CertBundle) -> anyhow::Result<()> {
    create_dir(dir)?;
    write_file(dir, "ca.crt", bundle.ca_pem.as_bytes(), 0o644)?;
    write_file(dir, "tls.crt", bundle.cert_pem.as_bytes(), 0o644)?;
    write_file(dir, "tls.key", bundle.key_pem.as_bytes(), 0o600)
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

/// Writes `dir/name` with exactly `mode`: the data goes to a new temporary file created with that
/// mode (so a private key is never readable by others, not even for a moment, whatever the umask
/// or the old file's mode), then replaces the target by a rename.
fn write_file(dir: &Path, name: &str, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = write_new(&temp, contents, mode).and_then(|()| fs::rename(&temp, &path));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    let mut file = options.open(path)?;
    // The umask may have cleared bits of `mode`; set it exactly.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(contents)?;
    file.sync_all()
}

/// A ConfigMap that only exists while kustomize builds (`local-config`): the replacement in
/// kustomization.yaml copies its caBundle into every webhook, then kustomize drops it.
fn cabundle_yaml(namespace: &str, bundle: &CertBundle) -> String {
    let ca_bundle = bundle.ca_bundle();
    format!(
        r#"# Generated by `serverfirst certs`. Source of the webhooks' caBundle; kustomize does not
# emit this object (local-config).
apiVersion: v1
kind: ConfigMap
metadata:
  name: serverfirst-cabundle
  namespace: {namespace}
  annotations:
    config.kubernetes.io/local-config: "true"
data:
  caBundle: {ca_bundle}
"#
    )
}

fn kustomization_yaml(namespace: &str, days: u32) -> String {
    format!(
        r#"# Generated by `serverfirst certs --kustomize`; certificates valid {days} days from the time of
# these files. Holds a private key: never commit it. Rotate by running the command again and
# re-applying the overlay (the server reloads the mounted files without a restart).
apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
resources:
  - cabundle.yaml
secretGenerator:
  - name: {SECRET_NAME}
    namespace: {namespace}
    type: kubernetes.io/tls
    # A stable name: replacing the Secret updates the mounted files in place.
    options:
      disableNameSuffixHash: true
    files:
      - tls.crt
      - tls.key
      - ca.crt
replacements:
  - source:
      kind: ConfigMap
      name: serverfirst-cabundle
      fieldPath: data.caBundle
    targets:
      - select:
          kind: MutatingWebhookConfiguration
          name: {WEBHOOK_CONFIGURATION}
        fieldPaths:
          - webhooks.*.clientConfig.caBundle
        options:
          create: true
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_follow_rfc_1123() {
        for good in [
            "serverfirst",
            "serverfirst-system",
            "a",
            "a1-b2",
            &"x".repeat(63),
        ] {
            assert_eq!(dns_label(good).as_deref(), Ok(good), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "a_b",
            "a b",
            &"x".repeat(64),
            "a\nb: c",
        ] {
            assert!(dns_label(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generated_component_names_the_namespace_secret_and_configuration() {
        let bundle = certs::generate(&["serverfirst".into()], 1).unwrap();
        let cabundle: serde_json::Value =
            serde_saphyr::from_str(&cabundle_yaml("other-ns", &bundle)).unwrap();
        assert_eq!(cabundle["metadata"]["namespace"], "other-ns");
        assert_eq!(cabundle["data"]["caBundle"], bundle.ca_bundle());

        let kustomization: serde_json::Value =
            serde_saphyr::from_str(&kustomization_yaml("other-ns", 30)).unwrap();
        let generator = &kustomization["secretGenerator"][0];
        assert_eq!(generator["name"], SECRET_NAME);
        assert_eq!(generator["namespace"], "other-ns");
        assert_eq!(generator["type"], "kubernetes.io/tls");
        let target = &kustomization["replacements"][0]["targets"][0];
        assert_eq!(target["select"]["name"], WEBHOOK_CONFIGURATION);
        assert_eq!(target["fieldPaths"][0], "webhooks.*.clientConfig.caBundle");
    }
}
