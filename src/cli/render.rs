use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::manifests::{self, Row, Status};

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Manifest file, directory (searched for .yaml/.yml/.json) or `-` for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    file: PathBuf,
    /// Rewrite the files in place instead of writing to standard output.
    #[arg(long)]
    in_place: bool,
    /// Also write the DestinationRules meshed clients need (Istio auto-mTLS), after the documents.
    #[arg(long)]
    companions: bool,
    /// YAML configuration file (catalog overrides, mesh defaults).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Writes the documents with the exclusions added; the report goes to stderr.
/// Exit codes: 0 success (also when something was changed), 2 errors.
pub fn run(args: RenderArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_deref())?;
    let sources = manifests::read_sources(&args.file);
    if args.in_place && sources.iter().any(|s| s.name == "-") {
        anyhow::bail!("--in-place needs files, not standard input");
    }
    let mesh = manifests::mesh_state(&sources, &config);
    let several = sources.len() > 1;
    let mut rows = Vec::new();
    for source in &sources {
        let text = match &source.text {
            Ok(text) => text,
            Err(message) => {
                rows.push(Row::unreadable(&source.name, message.clone()));
                continue;
            }
        };
        let (rendered, file_rows) = manifests::render_text(&source.name, text, &config, &mesh);
        let changed = rendered != *text;
        rows.extend(file_rows);
        if args.in_place {
            if changed {
                std::fs::write(&source.name, &rendered)
                    .with_context(|| format!("cannot write {}", source.name))?;
            }
        } else {
            if several {
                println!("---\n# Source: {}", source.name);
            }
            print!("{rendered}");
            if !rendered.is_empty() && !rendered.ends_with('\n') {
                println!();
            }
        }
    }
    if args.companions {
        for rule in manifests::attach_companions(&mut rows, &sources, &config, &mesh) {
            print!(
                "---\n# Companion for meshed clients (Istio auto-mTLS)\n{}",
                serde_saphyr::to_string(&rule)?
            );
        }
    }
    for row in rows.iter().filter(|r| r.status == Status::Error) {
        eprintln!(
            "error: {}:{} (document {}): {}",
            row.file, row.line, row.document, row.message
        );
    }
    for row in &rows {
        for warning in &row.warnings {
            eprintln!(
                "warning: {}:{} (document {}): {warning}",
                row.file, row.line, row.document
            );
        }
    }
    eprintln!(
        "{}",
        super::check::summary(&rows).replace("would-patch", "patched")
    );
    let failed = rows.iter().any(|r| r.status == Status::Error);
    Ok(ExitCode::from(if failed { 2 } else { 0 }))
}
