use std::path::PathBuf;
use std::process::ExitCode;

use super::TextOrJson;

use crate::catalog::Catalog;
use crate::ports::format_port_list;
use crate::report;

#[derive(Debug, clap::Args)]
pub struct CatalogArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = TextOrJson::Text)]
    output: TextOrJson,
    /// YAML configuration file whose catalog overrides to apply.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(args: CatalogArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_deref())?;
    let text = match args.output {
        TextOrJson::Json => serde_json::to_string_pretty(&config.catalog)? + "\n",
        TextOrJson::Text => table(&config.catalog),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn table(catalog: &Catalog) -> String {
    let rows: Vec<Vec<String>> = catalog
        .protocols
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                format_port_list(p.ports.iter().copied()),
                p.port_names.join(","),
                p.wire.as_str().to_string(),
                if p.enabled { "yes" } else { "no" }.to_string(),
                p.implicit_tls.clone().unwrap_or_default(),
            ]
        })
        .collect();
    report::table(
        &[
            "PROTOCOL",
            "PORTS",
            "PORT NAMES",
            "WIRE",
            "ENABLED",
            "IMPLICIT TLS",
        ],
        &rows,
    )
}
