use std::process::ExitCode;
use std::time::Duration;

use clap::ValueEnum;
use serde_json::json;

use crate::probe::{self, NUDGE, Outcome, ProbeError, ProbeOptions, ProbeReport};

/// Connects to HOST:PORT and waits, without sending anything, for the server's banner.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
If no banner arrives within --send-after, the probe sends \"QUIT\\r\\n\" (a harmless command
in SMTP, FTP, POP3 and NNTP that ends the session cleanly) and reports whether the banner
appears then: if it does, something on the path waits for the client to speak first.

Exit status: 0 the banner came first; 1 no banner without speaking first (stall, silence
or close); 2 no connection (refused, unreachable, unresolvable or timed out).")]
pub struct ProbeArgs {
    /// The server to probe, e.g. smtp.mail.svc.cluster.local:25 or 10.0.0.7:21.
    #[arg(value_name = "HOST:PORT")]
    target: String,

    /// Limit for connecting, and for an answer once the probe has spoken.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,

    /// How long to wait silently for the banner before sending QUIT.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    send_after: Duration,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

const STALL: &str = "server-first stall: something on the path waits for the client to speak (mesh protocol sniffing?)";

pub async fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let options = ProbeOptions {
        timeout: args.timeout,
        send_after: args.send_after,
    };
    let result = probe::probe(&args.target, &options).await;
    let (code, text) = match &result {
        Ok(report) => (exit_code(report.outcome), report_text(&args.target, report)),
        Err(error) => (
            2,
            format!("probe {}\nno connection: {error}\n", args.target),
        ),
    };
    match args.output {
        Output::Text => print!("{text}"),
        Output::Json => println!("{}", report_json(&args.target, &result)),
    }
    Ok(ExitCode::from(code))
}

fn exit_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Banner => 0,
        Outcome::Stall | Outcome::Silent | Outcome::Closed => 1,
    }
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

fn fix(port: u16) -> String {
    format!(
        "fix: annotate the server pod with traffic.sidecar.istio.io/excludeInboundPorts: \"{port}\" \
         (the container's port: if {port} is a Service port, its targetPort), or install \
         serverfirst, which does that for every server-first port"
    )
}

fn report_text(target: &str, report: &ProbeReport) -> String {
    let mut lines = vec![
        format!("probe {target} ({})", report.peer),
        format!("connected in {:.1} ms", ms(report.connect)),
    ];
    if let Some(sent) = report.sent {
        lines.push(format!(
            "no banner within {:.0} ms; sent {:?} at {:.1} ms",
            ms(sent),
            String::from_utf8_lossy(NUDGE),
            ms(sent)
        ));
    }
    let banner = report.banner.as_deref().unwrap_or_default();
    match report.outcome {
        Outcome::Banner => {
            let first_byte = report.first_byte.map(ms).unwrap_or_default();
            lines.push(format!("banner after {first_byte:.1} ms: {banner}"));
            lines.push("ok: the server spoke first".to_string());
        }
        Outcome::Stall => {
            let after = report.first_byte_after_send().map(ms).unwrap_or_default();
            lines.push(format!("banner {after:.1} ms after sending: {banner}"));
            lines.push(STALL.to_string());
            lines.push(fix(report.peer.port()));
        }
        Outcome::Silent => {
            lines.push("no answer after sending either".to_string());
            lines.push(
                "stall: nothing arrived, even after the client spoke; the port may not serve a \
                 server-first protocol, or the server is hung. If it should greet first and a \
                 mesh sidecar is on the path:"
                    .to_string(),
            );
            lines.push(fix(report.peer.port()));
        }
        Outcome::Closed => {
            let reason = report.error.as_deref().unwrap_or("closed by the peer");
            lines.push(format!("connection ended before any banner: {reason}"));
        }
    }
    lines.push(String::new());
    lines.join("\n")
}

fn report_json(target: &str, result: &Result<ProbeReport, ProbeError>) -> serde_json::Value {
    match result {
        Ok(report) => json!({
            "target": target,
            "address": report.peer.to_string(),
            "outcome": report.outcome.as_str(),
            "connect_ms": ms(report.connect),
            "first_byte_ms": report.first_byte.map(ms),
            "sent_ms": report.sent.map(ms),
            "first_byte_after_send_ms": report.first_byte_after_send().map(ms),
            "banner": report.banner,
            "error": report.error,
        }),
        Err(error) => json!({
            "target": target,
            "outcome": "no_connection",
            "error": error.to_string(),
        }),
    }
}
