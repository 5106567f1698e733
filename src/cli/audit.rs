use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::audit::{self, PodAudit};
use crate::ports::format_port_list;
use crate::report;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("scope").args(["namespace", "all_namespaces"]))]
pub struct AuditArgs {
    /// Namespace to audit (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Audit every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// kubeconfig context to use (default: the current context, or in-cluster config).
    #[arg(long)]
    context: Option<String>,
    /// Pods per list request.
    #[arg(long, default_value_t = 500)]
    page_size: u32,
    /// YAML configuration file (catalog overrides, mesh defaults).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

/// Exit codes: 0 nothing at risk, 1 something at risk, 2 errors.
pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_deref())?;
    let client = match super::kube_client(None, args.context.as_deref()).await {
        Ok(client) => client,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    let namespace = match (args.all_namespaces, args.namespace) {
        (true, _) => None,
        (false, Some(namespace)) => Some(namespace),
        (false, None) => Some(client.default_namespace().to_string()),
    };
    let show_progress = std::io::stderr().is_terminal();
    let progress = |count: usize| {
        if show_progress {
            eprint!("\rlisted {count} pods");
        } else {
            eprintln!("listed {count} pods");
        }
    };
    let result = audit::audit(
        client,
        namespace.as_deref(),
        args.page_size.max(1),
        &config,
        progress,
    )
    .await;
    if show_progress {
        eprintln!();
    }
    let audits = match result {
        Ok(audits) => audits,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&audits)?),
        Output::Table => print!("{}", table(&audits)),
    }
    Ok(ExitCode::from(audit::exit_code(&audits)))
}

fn table(audits: &[PodAudit]) -> String {
    let rows: Vec<Vec<String>> = audits
        .iter()
        .map(|a| {
            vec![
                a.namespace.clone(),
                a.pod.clone(),
                a.owner
                    .as_ref()
                    .map(|o| format!("{}/{}", o.kind, o.name))
                    .unwrap_or_default(),
                a.status.as_str().to_string(),
                format_port_list(a.ports.iter().copied()),
                if a.needs_restart { "yes" } else { "" }.to_string(),
                if a.fix.is_empty() {
                    a.reason.clone()
                } else {
                    a.fix.clone()
                },
            ]
        })
        .collect();
    report::table(
        &[
            "NAMESPACE",
            "POD",
            "OWNER",
            "STATUS",
            "PORTS",
            "RESTART",
            "FIX / NOTE",
        ],
        &rows,
    )
}
