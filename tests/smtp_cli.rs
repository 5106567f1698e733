//! `serverfirst smtp` as a process: JSON lines on stdout, logs on stderr, SIGTERM exits 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_serverfirst");

/// Kills the process if a test fails before it exits.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads JSON log lines from stderr until the server reports the address it listens on.
fn listening_address(stderr: &mut impl BufRead) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert_ne!(
            stderr.read_line(&mut line).expect("stderr"),
            0,
            "server exited early"
        );
        let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if log["message"] == "SMTP listening" {
            return log["address"].as_str().expect("address field").to_string();
        }
    }
}

fn read_reply(reader: &mut impl BufRead) -> String {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        assert_ne!(
            reader.read_line(&mut line).expect("read reply"),
            0,
            "connection closed"
        );
        reply.push_str(&line);
        if line.as_bytes().get(3) == Some(&b' ') {
            return reply;
        }
    }
}

#[test]
fn serves_prints_json_lines_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let maildir = dir.path().join("Maildir");
    let child = Command::new(BIN)
        .args([
            "--log-format",
            "json",
            "smtp",
            "--listen",
            "127.0.0.1:0",
            "--hostname",
        ])
        .args(["cli.test", "--maildir"])
        .arg(&maildir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serverfirst smtp");
    let mut server = Server(child);
    let mut stderr = BufReader::new(server.0.stderr.take().expect("stderr"));
    let address = listening_address(&mut stderr);

    let stream = TcpStream::connect(&address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    assert_eq!(
        read_reply(&mut reader),
        "220 cli.test ESMTP serverfirst\r\n"
    );
    writer
        .write_all(b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n")
        .expect("write");
    for code in ["250", "250", "250", "354"] {
        assert!(read_reply(&mut reader).starts_with(code));
    }
    writer
        .write_all(b"Subject: cli\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        .expect("write");
    assert!(read_reply(&mut reader).starts_with("250 2.0.0 OK: queued as "));
    assert!(read_reply(&mut reader).starts_with("221 "));

    let mut stdout = BufReader::new(server.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("stdout");
    let record: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
    assert_eq!(record["from"], "a@b.test");
    assert_eq!(record["rcpts"], serde_json::json!(["c@d.test"]));
    assert_eq!(record["size"], 20);
    assert_eq!(record["listener"], address.as_str());
    assert_eq!(record["tls"], false);
    let path = record["maildir_path"].as_str().expect("maildir_path");
    assert!(
        path.starts_with(maildir.join("new").to_str().expect("utf-8")),
        "{path}"
    );
    assert_eq!(
        std::fs::read(path).expect("message"),
        b"Subject: cli\r\n\r\nhi\r\n"
    );

    let pid = server.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = server.0.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("stdout");
    assert_eq!(rest, "", "only one JSON line per message on stdout");
}

#[test]
fn implicit_tls_without_certificate_is_refused() {
    let output = Command::new(BIN)
        .args(["smtp", "--listen-tls", "127.0.0.1:0"])
        .output()
        .expect("run serverfirst smtp");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--listen-tls needs --tls-cert and --tls-key"),
        "{stderr}"
    );
}

#[test]
fn a_listener_is_required() {
    let output = Command::new(BIN)
        .arg("smtp")
        .output()
        .expect("run serverfirst smtp");
    assert_eq!(output.status.code(), Some(2));
}
