use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct CatalogArgs {}

pub fn run(_args: CatalogArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
