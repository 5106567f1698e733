mod output;
mod progress;

use std::io::{BufWriter, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use crate::audit::apply::ReportApplier;
use crate::audit::policyreport::{self, Report, ReportApi, ReportBuilder, Timestamp};
use crate::audit::{self, AuditRow, Auditor, Progress, Tally};
use output::RowWriter;
use progress::ProgressReport;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    cluster: super::ClusterArgs,
    /// Audit every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Report API for `-o policyreport`.
    #[arg(long, value_enum, default_value_t = ReportApiArg::Wgpolicyk8s)]
    report_api: ReportApiArg,
    /// With `-o policyreport`: write the reports to the cluster (server-side apply) and delete
    /// serverfirst's reports in namespaces with nothing left to report, instead of printing.
    #[arg(long)]
    apply: bool,
    /// With `--apply`: exit 1 when anything is at risk (otherwise 0: the reports carry it).
    #[arg(long)]
    fail_on_risk: bool,
    /// With `-o policyreport`: also a `skip` result for each not-applicable pod.
    #[arg(long)]
    show_all: bool,
    /// No progress on stderr.
    #[arg(short = 'q', long)]
    quiet: bool,
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
    Ndjson,
    Policyreport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReportApiArg {
    /// wgpolicyk8s.io/v1alpha2 PolicyReport (Kyverno, Kubewarden, Policy Reporter).
    Wgpolicyk8s,
    /// openreports.io/v1alpha1 Report.
    Openreports,
}

impl From<ReportApiArg> for ReportApi {
    fn from(api: ReportApiArg) -> Self {
        match api {
            ReportApiArg::Wgpolicyk8s => ReportApi::Wgpolicyk8s,
            ReportApiArg::Openreports => ReportApi::Openreports,
        }
    }
}

/// Where the rows go. One per run, so variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Sink {
    Rows(Box<dyn RowWriter>),
    Reports {
        builder: ReportBuilder,
        target: ReportTarget,
    },
}

#[allow(clippy::large_enum_variant)]
enum ReportTarget {
    Print(BufWriter<std::io::Stdout>),
    Apply(ReportApplier),
}

impl Sink {
    async fn row(&mut self, row: &AuditRow) -> anyhow::Result<()> {
        match self {
            Sink::Rows(writer) => Ok(writer.row(row)?),
            Sink::Reports { builder, target } => match builder.push(row)? {
                Some(report) => target.write(&report).await,
                None => Ok(()),
            },
        }
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Sink::Rows(writer) => Ok(writer.flush()?),
            Sink::Reports {
                target: ReportTarget::Print(out),
                ..
            } => Ok(out.flush()?),
            Sink::Reports { .. } => Ok(()),
        }
    }

    async fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Rows(writer) => Ok(writer.finish()?),
            Sink::Reports {
                mut builder,
                mut target,
            } => {
                if let Some(report) = builder.finish() {
                    target.write(&report).await?;
                }
                match target {
                    ReportTarget::Print(mut out) => Ok(out.flush()?),
                    ReportTarget::Apply(applier) => {
                        for namespace in applier.prune().await? {
                            eprintln!(
                                "deleted {namespace}/{}: nothing left to report",
                                policyreport::REPORT_NAME
                            );
                        }
                        Ok(())
                    }
                }
            }
        }
    }
}

impl ReportTarget {
    async fn write(&mut self, report: &Report) -> anyhow::Result<()> {
        match self {
            ReportTarget::Print(out) => {
                Ok(out.write_all(policyreport::yaml_document(report)?.as_bytes())?)
            }
            ReportTarget::Apply(applier) => Ok(applier.apply(report).await?),
        }
    }
}

/// Exit codes: 0 nothing at risk, 1 something at risk or exposed, 2 errors. With `--apply`: 0 once the
/// reports are written, 1 only with `--fail-on-risk`.
pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    if args.apply && args.output != Output::Policyreport {
        eprintln!("error: --apply writes reports: use it with -o policyreport");
        return Ok(ExitCode::from(2));
    }
    let config = super::load_config(args.config.as_deref())?;
    let client = match args.cluster.client().await {
        Ok(client) => client,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    let namespace = match (args.all_namespaces, &args.cluster.namespace) {
        (true, _) => None,
        (false, Some(namespace)) => Some(namespace.clone()),
        (false, None) => Some(client.default_namespace().to_string()),
    };
    let stdout = || BufWriter::new(std::io::stdout());
    let sink = match args.output {
        Output::Table => Sink::Rows(Box::new(output::Table::new(stdout())?)),
        Output::Json => Sink::Rows(Box::new(output::JsonArray::new(stdout()))),
        Output::Ndjson => Sink::Rows(Box::new(output::Ndjson(stdout()))),
        Output::Policyreport => Sink::Reports {
            builder: ReportBuilder::new(
                args.report_api.into(),
                args.show_all,
                Timestamp::of(SystemTime::now()),
            ),
            target: if args.apply {
                ReportTarget::Apply(ReportApplier::new(
                    client.clone(),
                    args.report_api.into(),
                    namespace.as_deref(),
                ))
            } else {
                ReportTarget::Print(stdout())
            },
        },
    };
    let mesh = match audit::mesh::read(&client, &config).await {
        Ok(mesh) => mesh,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    let auditor = Auditor::new(client, namespace.as_deref(), args.page_size, &config, mesh);
    let mut progress = ProgressReport::new(args.quiet);
    let (result, listed) = stream(auditor, sink, &mut progress).await;
    progress.finish(&listed);
    let tally = match result {
        Ok(tally) => tally,
        Err(error) => {
            eprintln!("error: {error:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let code = if args.apply && !args.fail_on_risk {
        0
    } else {
        audit::exit_code(&tally)
    };
    Ok(ExitCode::from(code))
}

/// Audits page by page into `sink`; returns the tally and how far the listing got.
async fn stream(
    mut auditor: Auditor<'_>,
    mut sink: Sink,
    progress: &mut ProgressReport,
) -> (anyhow::Result<Tally>, Progress) {
    let mut tally = Tally::default();
    let mut listed = Progress {
        listed: 0,
        pages: 0,
        remaining: None,
        complete: false,
    };
    loop {
        let page = match auditor.next_page().await {
            Ok(Some(page)) => page,
            Ok(None) => break,
            Err(error) => return (Err(error.into()), listed),
        };
        for row in &page.rows {
            tally.add(row.status);
            if let Err(error) = sink.row(row).await {
                return (Err(error), listed);
            }
        }
        if let Err(error) = sink.flush() {
            return (Err(error), listed);
        }
        listed = page.progress;
        progress.update(&listed);
    }
    (sink.finish().await.map(|()| tally), listed)
}
