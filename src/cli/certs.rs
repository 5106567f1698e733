use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct CertsArgs {}

pub fn run(_args: CertsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
