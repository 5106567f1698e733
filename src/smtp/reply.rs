//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463, RFC 2034).
//!
//! Every reply the server sends is built here, so codes and wording stay consistent.

use std::fmt;

/// A reply: a three-digit code and one or more lines of text.
///
/// The enhanced status code, where there is one, is part of each line's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    /// A one-line reply.
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply; `lines` must not be empty.
    pub fn multiline(code: u16, lines: Vec<String>) -> Self {
        debug_assert!(!lines.is_empty(), "a reply has at least one line");
        Self { code, lines }
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Appends the wire form (`250-first`, ..., `250 last`, each ending in CRLF) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (index, line) in self.lines.iter().enumerate() {
            let separator = if index == last { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{separator}{line}\r\n", self.code).as_bytes());
        }
    }

    /// `220 <hostname> ESMTP serverfirst`, sent as soon as a connection is accepted.
    pub fn greeting(hostname: &str) -> Self {
        Self::new(220, format!("{hostname} ESMTP serverfirst"))
    }

    pub fn ok() -> Self {
        Self::new(250, "2.0.0 OK")
    }

    pub fn sender_ok() -> Self {
        Self::new(250, "2.1.0 Sender OK")
    }

    pub fn recipient_ok() -> Self {
        Self::new(250, "2.1.5 Recipient OK")
    }

    pub fn start_data() -> Self {
        Self::new(354, "End data with <CR><LF>.<CR><LF>")
    }

    pub fn queued(id: &str) -> Self {
        Self::new(250, format!("2.0.0 OK: queued as {id}"))
    }

    pub fn closing(hostname: &str) -> Self {
        Self::new(221, format!("2.0.0 {hostname} closing connection"))
    }

    pub fn cannot_verify() -> Self {
        Self::new(
            252,
            "2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
        )
    }

    pub fn help() -> Self {
        Self::new(
            214,
            "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP VRFY QUIT STARTTLS HELP",
        )
    }

    pub fn ready_for_tls() -> Self {
        Self::new(220, "2.0.0 Ready to start TLS")
    }

    pub fn bad_sequence(detail: &str) -> Self {
        Self::new(503, format!("5.5.1 Bad sequence of commands: {detail}"))
    }

    pub fn unrecognized() -> Self {
        Self::new(500, "5.5.1 Command unrecognized")
    }

    pub fn not_implemented() -> Self {
        Self::new(502, "5.5.1 Command not implemented")
    }

    pub fn line_too_long() -> Self {
        Self::new(500, "5.5.2 Line too long")
    }

    pub fn syntax(detail: &str) -> Self {
        Self::new(501, format!("5.5.4 Syntax error: {detail}"))
    }

    pub fn bad_sender(detail: &str) -> Self {
        Self::new(501, format!("5.1.7 Bad sender address syntax: {detail}"))
    }

    pub fn bad_recipient(detail: &str) -> Self {
        Self::new(501, format!("5.1.3 Bad recipient address syntax: {detail}"))
    }

    pub fn unknown_parameter(parameter: &str) -> Self {
        Self::new(555, format!("5.5.4 Unsupported parameter: {parameter}"))
    }

    pub fn too_many_recipients() -> Self {
        Self::new(452, "4.5.3 Too many recipients")
    }

    pub fn message_too_big(limit: usize) -> Self {
        Self::new(
            552,
            format!("5.3.4 Message size exceeds fixed maximum message size ({limit} bytes)"),
        )
    }

    pub fn delivery_failed() -> Self {
        Self::new(451, "4.3.0 Local delivery failed, try again later")
    }

    pub fn idle_timeout(hostname: &str) -> Self {
        Self::new(
            421,
            format!("4.4.2 {hostname} Idle timeout, closing connection"),
        )
    }

    pub fn shutting_down(hostname: &str) -> Self {
        Self::new(
            421,
            format!("4.3.2 {hostname} Service shutting down, closing connection"),
        )
    }

    pub fn too_many_connections(hostname: &str) -> Self {
        Self::new(
            421,
            format!("4.3.2 {hostname} Too many connections, try again later"),
        )
    }
}

impl fmt::Display for Reply {
    /// The wire form without the final CRLF, lines joined by CRLF.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut wire = Vec::new();
        self.encode(&mut wire);
        f.write_str(String::from_utf8_lossy(&wire).trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_wire_form() {
        let mut out = Vec::new();
        Reply::ok().encode(&mut out);
        assert_eq!(out, b"250 2.0.0 OK\r\n");
    }

    #[test]
    fn multiline_uses_dash_on_all_but_last() {
        let mut out = Vec::new();
        Reply::multiline(250, vec!["a".into(), "b".into(), "c".into()]).encode(&mut out);
        assert_eq!(out, b"250-a\r\n250-b\r\n250 c\r\n");
    }

    #[test]
    fn greeting_names_the_host() {
        assert_eq!(
            Reply::greeting("mx.test").to_string(),
            "220 mx.test ESMTP serverfirst"
        );
    }
}
