use std::path::PathBuf;
use std::process::ExitCode;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::ports::format_port_list;

#[derive(Debug, clap::Args)]
pub struct CatalogArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// YAML configuration file whose catalog overrides to apply.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

pub fn run(args: CatalogArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let text = match args.output {
        Output::Json => serde_json::to_string_pretty(&config.catalog)? + "\n",
        Output::Text => table(&config.catalog),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn table(catalog: &Catalog) -> String {
    let rows: Vec<[String; 5]> = catalog
        .protocols
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                format_port_list(p.ports.iter().copied()),
                p.port_names.join(","),
                p.wire.as_str().to_string(),
                if p.enabled { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    let header = ["PROTOCOL", "PORTS", "PORT NAMES", "WIRE", "ENABLED"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
