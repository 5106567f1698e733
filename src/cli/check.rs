use std::path::PathBuf;
use std::process::ExitCode;

use super::TextOrJson;

use crate::config::Config;
use crate::manifests::{self, Row, Status};
use crate::mesh_state::MeshState;
use crate::ports::format_port_list;
use crate::report;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Manifest file, directory (searched for .yaml/.yml/.json) or `-` for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    file: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
    output: TextOrJson,
    /// Also list the objects without a pod template (ConfigMaps, Secrets, RBAC, ...), which are
    /// otherwise only counted.
    #[arg(long)]
    show_all: bool,
    /// YAML configuration file (catalog overrides, mesh defaults).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Exit codes: 0 nothing to change, 1 something would be patched, 2 errors.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_deref())?;
    let sources = manifests::read_sources(&args.file);
    let mesh = manifests::mesh_state(&sources, &config);
    let mut rows = check_sources(&sources, &config, &mesh);
    manifests::attach_companions(&mut rows, &sources, &config, &mesh);
    manifests::attach_exposure_warnings(&mut rows, &sources, &config, &mesh);
    let listed: Vec<&Row> = rows
        .iter()
        .filter(|row| args.show_all || !row.without_template)
        .collect();
    match args.output {
        TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&listed)?),
        TextOrJson::Text => print!("{}", text(&listed)),
    }
    eprintln!("{}", summary(&rows));
    Ok(ExitCode::from(manifests::exit_code(&rows)))
}

fn check_sources(sources: &[manifests::Source], config: &Config, mesh: &MeshState) -> Vec<Row> {
    sources
        .iter()
        .flat_map(|source| match &source.text {
            Ok(text) => manifests::check_text(&source.name, text, config, mesh),
            Err(message) => vec![Row::unreadable(&source.name, message.clone())],
        })
        .collect()
}

fn text(rows: &[&Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let detail = match row.changes.is_empty() {
                true => row.message.clone(),
                false => row
                    .changes
                    .iter()
                    .map(|c| format!("{}={:?}", c.annotation, c.value))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            vec![
                format!("{}:{}", row.file, row.line),
                row.document.to_string(),
                row.kind.clone(),
                row.namespace.clone(),
                row.name.clone(),
                row.status.as_str().to_string(),
                format_port_list(row.ports.iter().copied()),
                detail,
            ]
        })
        .collect();
    let mut out = report::table(
        &[
            "FILE:LINE",
            "DOC",
            "KIND",
            "NAMESPACE",
            "NAME",
            "STATUS",
            "PORTS",
            "CHANGE / NOTE",
        ],
        &cells,
    );
    for row in rows {
        for companion in &row.companions {
            out.push_str(&format!(
                "companion: {}:{} (document {}): {companion}\n",
                row.file, row.line, row.document
            ));
        }
        for warning in &row.warnings {
            out.push_str(&format!(
                "warning: {}:{} (document {}): {warning}\n",
                row.file, row.line, row.document
            ));
        }
        for note in &row.notes {
            out.push_str(&format!(
                "note: {}:{} (document {}): {note}\n",
                row.file, row.line, row.document
            ));
        }
    }
    out
}

pub(super) fn summary(rows: &[Row]) -> String {
    let count = |status| rows.iter().filter(|r| r.status == status).count();
    // Exposed and at-risk objects are named only where there are any: most manifests have none.
    let rare: String = [(Status::Exposed, "exposed"), (Status::AtRisk, "at-risk")]
        .into_iter()
        .filter_map(|(status, name)| match count(status) {
            0 => None,
            n => Some(format!("{n} {name}, ")),
        })
        .collect();
    let mut summary = format!(
        "{} objects: {rare}{} would-patch, {} protected, {} not-applicable, {} errors",
        rows.len(),
        count(Status::WouldPatch),
        count(Status::Protected),
        count(Status::NotApplicable),
        count(Status::Error)
    );
    let without_template = rows.iter().filter(|r| r.without_template).count();
    if without_template > 0 {
        summary.push_str(&format!(
            " ({without_template} of them without a pod template)"
        ));
    }
    summary
}
