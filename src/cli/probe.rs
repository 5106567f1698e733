use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {}

pub async fn run(_args: ProbeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
