//! The command line: one binary, one subcommand per job. Clap types stay in this module.

mod audit;
mod catalog;
mod certs;
mod check;
mod companions;
mod probe;
mod render;
mod serve;
mod smtp;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};

/// Keeps server-first protocols (SMTP, FTP, IMAP, ...) working inside a service mesh.
#[derive(Debug, Parser)]
#[command(name = "serverfirst", version, about)]
pub struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SERVERFIRST_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// `-o text|json` of the reporting commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TextOrJson {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhook over HTTPS (POST /mutate, POST /audit).
    Serve(serve::ServeArgs),
    /// Report which running pods are at risk, protected, or would be patched (live cluster).
    Audit(audit::AuditArgs),
    /// Print the effective catalog of server-first protocols.
    Catalog(catalog::CatalogArgs),
    /// Report what serverfirst would change in manifests (offline, no cluster).
    Check(check::CheckArgs),
    /// Write manifests with the exclusions added to each pod template.
    Render(render::RenderArgs),
    /// Generate a CA and a serving certificate for the webhook Service.
    Certs(certs::CertsArgs),
    /// Diagnose a server-first stall: connect, wait for the banner, report.
    Probe(probe::ProbeArgs),
    /// Run the reference SMTP server.
    Smtp(smtp::SmtpArgs),
    /// Keep companion DestinationRules (tls.mode DISABLE on excluded ports) in the cluster.
    Companions(companions::CompanionsArgs),
}

/// The file name under which kubectl finds the binary as a plugin (`kubectl serverfirst`).
pub const PLUGIN_FILE_NAME: &str = "kubectl-serverfirst";

impl Cli {
    /// Parses the process arguments. Invoked as `kubectl-serverfirst`, help and usage name the
    /// program `kubectl serverfirst`, as kubectl plugins do.
    pub fn parse_args() -> Self {
        Self::parse_args_from(std::env::args_os())
    }

    pub fn parse_args_from(args: impl IntoIterator<Item = OsString>) -> Self {
        let args: Vec<OsString> = args.into_iter().collect();
        let mut command = Cli::command();
        if args.first().is_some_and(is_plugin_name) {
            command = command.bin_name("kubectl serverfirst");
        }
        let matches = command.get_matches_from(args);
        Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }

    /// Runs the selected subcommand; the returned code is the process exit code.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Audit(args) => audit::run(args).await,
            Command::Catalog(args) => catalog::run(args),
            Command::Certs(args) => certs::run(args),
            Command::Check(args) => check::run(args),
            Command::Render(args) => render::run(args),
            Command::Probe(args) => probe::run(args).await,
            Command::Smtp(args) => smtp::run(args).await,
            Command::Companions(args) => companions::run(args).await,
        }
    }
}

fn is_plugin_name(program: &OsString) -> bool {
    Path::new(program)
        .file_stem()
        .is_some_and(|stem| stem == PLUGIN_FILE_NAME)
}

/// Where the commands that talk to a cluster find it: kubectl's own flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context to use (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Namespace (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

impl ClusterArgs {
    /// A client for the selected cluster, or one line saying why not.
    async fn client(&self) -> Result<kube::Client, String> {
        kube_client(self.kubeconfig.as_deref(), self.context.as_deref()).await
    }
}

/// The configuration at `path`, or the defaults.
fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<crate::config::Config> {
    Ok(match path {
        Some(path) => crate::config::Config::load(path)?,
        None => crate::config::Config::default(),
    })
}

/// Something says where a cluster is, as kubectl and kube's `Config::infer` look: `$KUBECONFIG`,
/// `~/.kube/config`, or the environment of a pod (`KUBERNETES_SERVICE_HOST`).
fn cluster_configured() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
    let default_kubeconfig = std::env::var_os("HOME")
        .map(|home| std::path::Path::new(&home).join(".kube").join("config"))
        .is_some_and(|path| path.exists());
    set("KUBECONFIG") || set("KUBERNETES_SERVICE_HOST") || default_kubeconfig
}

/// A client from `kubeconfig` (default: the usual places, or the in-cluster config) and its
/// `context`; the error is one line.
async fn kube_client(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<kube::Client, String> {
    use crate::audit::root_cause;
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {}", path.display(), root_cause(&e)))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| format!("kubeconfig {}: {}", path.display(), root_cause(&e)))?
        }
        (None, Some(context)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| format!("kubeconfig context {context:?}: {}", root_cause(&e)))?,
        (None, None) => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration: {}", root_cause(&e)))?,
    };
    kube::Client::try_from(config)
        .map_err(|e| format!("cannot build a Kubernetes client: {}", root_cause(&e)))
}
