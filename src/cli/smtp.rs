use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SmtpArgs {}

pub async fn run(_args: SmtpArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
