//! The command line: one binary, one subcommand per job. Clap types stay in this module.

mod catalog;
mod certs;
mod probe;
mod serve;
mod smtp;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Keeps server-first protocols (SMTP, FTP, IMAP, ...) working inside a service mesh.
#[derive(Debug, Parser)]
#[command(name = "serverfirst", version, about)]
pub struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SERVERFIRST_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhook over HTTPS (POST /mutate, POST /audit).
    Serve(serve::ServeArgs),
    /// Print the effective catalog of server-first protocols.
    Catalog(catalog::CatalogArgs),
    /// Generate a CA and a serving certificate for the webhook Service.
    Certs(certs::CertsArgs),
    /// Diagnose a server-first stall: connect, wait for the banner, report.
    Probe(probe::ProbeArgs),
    /// Run the reference SMTP server.
    Smtp(smtp::SmtpArgs),
}

impl Cli {
    /// Runs the selected subcommand; the returned code is the process exit code.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Catalog(args) => catalog::run(args),
            Command::Certs(args) => certs::run(args),
            Command::Probe(args) => probe::run(args).await,
            Command::Smtp(args) => smtp::run(args).await,
        }
    }
}
