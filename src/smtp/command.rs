//! SMTP command line parser (RFC 5321 §4.1), pure: bytes in, [`Command`] or [`CommandError`] out.

use super::reply::Reply;

/// Maximum length of a reverse-path or forward-path, angle brackets included (RFC 5321 §4.5.3.1.3).
pub const MAX_PATH: usize = 256;
const MAX_LOCAL_PART: usize = 64;
const MAX_DOMAIN: usize = 255;
const MAX_LABEL: usize = 63;

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    /// `MAIL FROM:<path>`; an empty `from` is the null reverse-path `<>`.
    Mail {
        from: String,
        params: MailParams,
    },
    /// `RCPT TO:<path>`.
    Rcpt {
        to: String,
    },
    Data,
    Rset,
    Noop,
    Vrfy,
    Help,
    Quit,
    StartTls,
}

/// The ESMTP parameters of `MAIL FROM` this server knows (SIZE, BODY).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// Declared message size in bytes (RFC 1870).
    pub size: Option<u64>,
    /// Declared body type (RFC 6152).
    pub body: Option<Body>,
}

impl MailParams {
    pub fn is_empty(&self) -> bool {
        self.size.is_none() && self.body.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

/// Why a command line was refused; each maps to one reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command unrecognized")]
    Unrecognized,
    #[error("command not implemented")]
    NotImplemented,
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    #[error("bad sender address: {0}")]
    BadSender(&'static str),
    #[error("bad recipient address: {0}")]
    BadRecipient(&'static str),
    #[error("unsupported parameter: {0}")]
    UnknownParameter(String),
}

impl CommandError {
    pub fn reply(&self) -> Reply {
        match self {
            Self::Unrecognized => Reply::unrecognized(),
            Self::NotImplemented => Reply::not_implemented(),
            Self::Syntax(detail) => Reply::syntax(detail),
            Self::BadSender(detail) => Reply::bad_sender(detail),
            Self::BadRecipient(detail) => Reply::bad_recipient(detail),
            Self::UnknownParameter(parameter) => Reply::unknown_parameter(parameter),
        }
    }
}

/// Parses one command line, without its line ending.
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::Syntax("8-bit characters"))?;
    if line.chars().any(|c| c.is_ascii_control() || !c.is_ascii()) {
        return Err(CommandError::Syntax("control or 8-bit characters"));
    }
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let verb = verb.to_ascii_uppercase();
    match verb.as_str() {
        "EHLO" => domain_argument(rest, "EHLO hostname").map(Command::Ehlo),
        "HELO" => domain_argument(rest, "HELO hostname").map(Command::Helo),
        "MAIL" => parse_mail(rest),
        "RCPT" => parse_rcpt(rest),
        "DATA" => no_argument(rest, Command::Data),
        "RSET" => no_argument(rest, Command::Rset),
        "QUIT" => no_argument(rest, Command::Quit),
        "STARTTLS" => no_argument(rest, Command::StartTls),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" if rest.trim().is_empty() => Err(CommandError::Syntax("VRFY string")),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" | "TURN" | "ETRN" | "AUTH" | "BDAT" | "SEND" | "SOML" | "SAML" | "ATRN" => {
            Err(CommandError::NotImplemented)
        }
        _ => Err(CommandError::Unrecognized),
    }
}

fn no_argument(rest: &str, command: Command) -> Result<Command, CommandError> {
    if rest.trim().is_empty() {
        Ok(command)
    } else {
        Err(CommandError::Syntax("no parameters allowed"))
    }
}

/// The client's name after EHLO/HELO: the first word, which must be present.
fn domain_argument(rest: &str, usage: &'static str) -> Result<String, CommandError> {
    rest.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or(CommandError::Syntax(usage))
}

fn parse_mail(rest: &str) -> Result<Command, CommandError> {
    let path = strip_prefix_ignore_case(rest, "FROM:")
        .ok_or(CommandError::Syntax("MAIL FROM:<address>"))?;
    let (path, params) = split_path(path).map_err(CommandError::BadSender)?;
    let from = if path.is_empty() {
        String::new()
    } else {
        mailbox(path).map_err(CommandError::BadSender)?.to_string()
    };
    let params = parse_mail_params(params)?;
    Ok(Command::Mail { from, params })
}

fn parse_rcpt(rest: &str) -> Result<Command, CommandError> {
    let path =
        strip_prefix_ignore_case(rest, "TO:").ok_or(CommandError::Syntax("RCPT TO:<address>"))?;
    let (path, params) = split_path(path).map_err(CommandError::BadRecipient)?;
    if let Some(parameter) = params.split_whitespace().next() {
        return Err(CommandError::UnknownParameter(parameter.to_string()));
    }
    if path.eq_ignore_ascii_case("postmaster") {
        return Ok(Command::Rcpt {
            to: path.to_string(),
        });
    }
    if path.is_empty() {
        return Err(CommandError::BadRecipient("empty address"));
    }
    let to = mailbox(path).map_err(CommandError::BadRecipient)?;
    Ok(Command::Rcpt { to: to.to_string() })
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    // Many clients put a space after the colon; RFC 5321 does not, but accepting it is harmless.
    head.eq_ignore_ascii_case(prefix)
        .then(|| text[prefix.len()..].trim_start_matches(' '))
}

/// Splits `<path> params` into the text between the angle brackets and the parameters.
fn split_path(text: &str) -> Result<(&str, &str), &'static str> {
    let inner = text
        .strip_prefix('<')
        .ok_or("address must be in angle brackets")?;
    let mut quoted = false;
    let mut escaped = false;
    for (index, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                if index + 2 > MAX_PATH {
                    return Err("path too long");
                }
                let params = &inner[index + 1..];
                if !params.is_empty() && !params.starts_with(' ') {
                    return Err("text after the closing angle bracket");
                }
                return Ok((&inner[..index], params));
            }
            _ => {}
        }
    }
    Err("missing closing angle bracket")
}

/// Validates a path's content and returns the mailbox, without any source route.
fn mailbox(path: &str) -> Result<&str, &'static str> {
    // A source route (`@relay1,@relay2:user@domain`) must be accepted and ignored (RFC 5321 §4.1.2).
    let mailbox = if path.starts_with('@') {
        path.split_once(':').ok_or("malformed source route")?.1
    } else {
        path
    };
    let (local, domain) = mailbox.rsplit_once('@').ok_or("missing @domain")?;
    if local.is_empty() || local.len() > MAX_LOCAL_PART {
        return Err("bad local part length");
    }
    if !(is_dot_string(local) || is_quoted_string(local)) {
        return Err("bad local part");
    }
    if !is_domain(domain) {
        return Err("bad domain");
    }
    Ok(mailbox)
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

fn is_dot_string(text: &str) -> bool {
    text.split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

fn is_quoted_string(text: &str) -> bool {
    let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
        return false;
    };
    let mut escaped = false;
    for c in inner.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return false,
            _ => {}
        }
    }
    !escaped
}

fn is_domain(domain: &str) -> bool {
    if domain.is_empty() || domain.len() > MAX_DOMAIN {
        return false;
    }
    if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        return !literal.is_empty() && !literal.contains(['[', ']', '\\', ' ']);
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= MAX_LABEL
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

fn parse_mail_params(text: &str) -> Result<MailParams, CommandError> {
    let mut params = MailParams::default();
    for parameter in text.split_whitespace() {
        let (keyword, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        match keyword.to_ascii_uppercase().as_str() {
            "SIZE" if params.size.is_none() => {
                let size = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| value.parse::<u64>().ok())
                    .flatten()
                    .ok_or(CommandError::Syntax("SIZE=<number of bytes>"))?;
                params.size = Some(size);
            }
            "BODY" if params.body.is_none() => {
                params.body = Some(match value.to_ascii_uppercase().as_str() {
                    "7BIT" => Body::SevenBit,
                    "8BITMIME" => Body::EightBitMime,
                    _ => return Err(CommandError::Syntax("BODY=7BIT or BODY=8BITMIME")),
                });
            }
            "SIZE" | "BODY" => return Err(CommandError::Syntax("repeated parameter")),
            _ => return Err(CommandError::UnknownParameter(parameter.to_string())),
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(from: &str) -> Command {
        Command::Mail {
            from: from.into(),
            params: MailParams::default(),
        }
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(
            parse(b"ehlo client.test"),
            Ok(Command::Ehlo("client.test".into()))
        );
        assert_eq!(
            parse(b"HeLo client.test"),
            Ok(Command::Helo("client.test".into()))
        );
        assert_eq!(parse(b"quit"), Ok(Command::Quit));
        assert_eq!(parse(b"StartTLS"), Ok(Command::StartTls));
    }

    #[test]
    fn ehlo_needs_a_name() {
        assert!(matches!(parse(b"EHLO"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse(b"EHLO   "), Err(CommandError::Syntax(_))));
        assert_eq!(
            parse(b"EHLO [127.0.0.1]"),
            Ok(Command::Ehlo("[127.0.0.1]".into()))
        );
    }

    #[test]
    fn mail_from_forms() {
        assert_eq!(parse(b"MAIL FROM:<a@b.test>"), Ok(mail("a@b.test")));
        assert_eq!(parse(b"mail from:<a@b.test>"), Ok(mail("a@b.test")));
        assert_eq!(parse(b"MAIL FROM: <a@b.test>"), Ok(mail("a@b.test")));
        assert_eq!(parse(b"MAIL FROM:<>"), Ok(mail("")));
        assert_eq!(
            parse(b"MAIL FROM:<@relay.test,@r2.test:a@b.test>"),
            Ok(mail("a@b.test"))
        );
        assert_eq!(
            parse(b"MAIL FROM:<\"a b\"@b.test>"),
            Ok(mail("\"a b\"@b.test"))
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@[192.0.2.1]>"),
            Ok(mail("a@[192.0.2.1]"))
        );
    }

    #[test]
    fn mail_from_rejects_bad_addresses() {
        for line in [
            &b"MAIL FROM:a@b.test"[..],
            b"MAIL FROM:<a@b.test",
            b"MAIL FROM:<a.b.test>",
            b"MAIL FROM:<a@>",
            b"MAIL FROM:<@b.test>",
            b"MAIL FROM:<a..b@b.test>",
            b"MAIL FROM:<a@-b.test>",
            b"MAIL FROM:<a b@b.test>",
            b"MAIL FROM:<a@b.test>x",
        ] {
            assert!(
                matches!(parse(line), Err(CommandError::BadSender(_))),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert!(matches!(
            parse(b"MAIL <a@b.test>"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            parse(b"MAIL TO:<a@b.test>"),
            Err(CommandError::Syntax(_))
        ));
    }

    #[test]
    fn path_length_is_limited() {
        let domain = format!("{}test", format!("{}.", "b".repeat(60)).repeat(4));
        let long = format!("MAIL FROM:<{}@{domain}>", "a".repeat(64));
        assert!(matches!(
            parse(long.as_bytes()),
            Err(CommandError::BadSender("path too long"))
        ));
        let local = format!("RCPT TO:<{}@b.test>", "a".repeat(65));
        assert!(matches!(
            parse(local.as_bytes()),
            Err(CommandError::BadRecipient(_))
        ));
    }

    #[test]
    fn mail_parameters() {
        assert_eq!(
            parse(b"MAIL FROM:<a@b.test> SIZE=1000 BODY=8BITMIME"),
            Ok(Command::Mail {
                from: "a@b.test".into(),
                params: MailParams {
                    size: Some(1000),
                    body: Some(Body::EightBitMime)
                },
            })
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@b.test> body=7bit"),
            Ok(Command::Mail {
                from: "a@b.test".into(),
                params: MailParams {
                    size: None,
                    body: Some(Body::SevenBit)
                },
            })
        );
        assert!(matches!(
            parse(b"MAIL FROM:<a@b.test> SIZE=x"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            parse(b"MAIL FROM:<a@b.test> SIZE=99999999999999999999999"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            parse(b"MAIL FROM:<a@b.test> SIZE=1 SIZE=2"),
            Err(CommandError::Syntax(_))
        ));
        assert_eq!(
            parse(b"MAIL FROM:<a@b.test> SMTPUTF8"),
            Err(CommandError::UnknownParameter("SMTPUTF8".into()))
        );
    }

    #[test]
    fn rcpt_forms() {
        assert_eq!(
            parse(b"RCPT TO:<c@d.test>"),
            Ok(Command::Rcpt {
                to: "c@d.test".into()
            })
        );
        assert_eq!(
            parse(b"RCPT TO:<Postmaster>"),
            Ok(Command::Rcpt {
                to: "Postmaster".into()
            })
        );
        assert!(matches!(
            parse(b"RCPT TO:<>"),
            Err(CommandError::BadRecipient(_))
        ));
        assert!(matches!(
            parse(b"RCPT TO:<c@d.test> NOTIFY=NEVER"),
            Err(CommandError::UnknownParameter(_))
        ));
    }

    #[test]
    fn arguments_where_none_are_allowed() {
        assert!(matches!(parse(b"DATA now"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse(b"STARTTLS x"), Err(CommandError::Syntax(_))));
        assert_eq!(parse(b"NOOP anything"), Ok(Command::Noop));
        assert_eq!(parse(b"VRFY someone"), Ok(Command::Vrfy));
        assert!(matches!(parse(b"VRFY"), Err(CommandError::Syntax(_))));
    }

    #[test]
    fn unknown_and_unimplemented() {
        assert_eq!(parse(b"HELLO"), Err(CommandError::Unrecognized));
        assert_eq!(parse(b""), Err(CommandError::Unrecognized));
        assert_eq!(parse(b"EXPN list"), Err(CommandError::NotImplemented));
        assert_eq!(parse(b"GET / HTTP/1.1"), Err(CommandError::Unrecognized));
    }

    #[test]
    fn binary_garbage_is_a_syntax_error() {
        assert!(matches!(
            parse(b"EHLO \xff\xfe"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(parse(b"EHLO a\rb"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse(b"\0\0\0"), Err(CommandError::Syntax(_))));
    }
}
