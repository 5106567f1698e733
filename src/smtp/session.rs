//! The per-connection SMTP state machine (RFC 5321 §4.1.4), without any I/O.
//!
//! The connection handler feeds it command lines and carries out the returned [`Action`]:
//! send a reply, read message data, start TLS, or close.

use super::command::{self, Command, CommandError};
use super::reply::Reply;

/// What the session needs to know about the server.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Name used in the greeting and replies.
    pub hostname: String,
    /// Largest accepted message, in bytes (advertised as `SIZE`).
    pub max_message_size: usize,
    /// Most recipients accepted in one transaction.
    pub max_recipients: usize,
    /// Whether STARTTLS can be offered on this connection.
    pub starttls: bool,
}

/// What the connection handler must do after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the reply and read the next command.
    Reply(Reply),
    /// Send the reply (354), then read message data up to `<CRLF>.<CRLF>`.
    ReceiveData(Reply),
    /// Send the reply (220), then run the TLS handshake and call [`Session::tls_started`].
    StartTls(Reply),
    /// Send the reply, then close the connection.
    Close(Reply),
}

/// The sender and recipients of one mail transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Reverse-path; empty for the null sender `<>`.
    pub from: String,
    /// Forward-paths, in the order they were accepted.
    pub rcpts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Greeting {
    Ehlo(String),
    Helo(String),
}

/// The state of one SMTP session.
#[derive(Debug, Clone)]
pub struct Session {
    settings: SessionSettings,
    greeting: Option<Greeting>,
    transaction: Option<Envelope>,
    tls_active: bool,
}

impl Session {
    pub fn new(settings: SessionSettings) -> Self {
        Self {
            settings,
            greeting: None,
            transaction: None,
            tls_active: false,
        }
    }

    /// A session on a connection that is already encrypted (implicit TLS): no STARTTLS.
    pub fn new_tls(settings: SessionSettings) -> Self {
        Self {
            tls_active: true,
            ..Self::new(settings)
        }
    }

    /// The 220 banner to send before anything else.
    pub fn greeting(&self) -> Reply {
        Reply::greeting(&self.settings.hostname)
    }

    /// The name the client gave in EHLO/HELO, if any.
    pub fn client_name(&self) -> Option<&str> {
        match &self.greeting {
            Some(Greeting::Ehlo(name) | Greeting::Helo(name)) => Some(name),
            None => None,
        }
    }

    /// Whether a mail transaction (MAIL accepted, message not yet received) is in progress.
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// Handles one command line (without its line ending).
    pub fn handle_line(&mut self, line: &[u8]) -> Action {
        match command::parse(line) {
            Ok(command) => self.handle(command),
            Err(error) => Action::Reply(error.reply()),
        }
    }

    /// Handles one parsed command.
    pub fn handle(&mut self, command: Command) -> Action {
        let reply = match command {
            Command::Ehlo(name) => {
                self.transaction = None;
                self.greeting = Some(Greeting::Ehlo(name));
                self.ehlo_reply()
            }
            Command::Helo(name) => {
                self.transaction = None;
                self.greeting = Some(Greeting::Helo(name));
                Reply::new(250, self.settings.hostname.clone())
            }
            Command::Mail { from, params } => self.mail(from, &params),
            Command::Rcpt { to } => self.rcpt(to),
            Command::Data => match &self.transaction {
                None => Reply::bad_sequence("need MAIL command"),
                Some(envelope) if envelope.rcpts.is_empty() => {
                    Reply::bad_sequence("need RCPT command")
                }
                Some(_) => return Action::ReceiveData(Reply::start_data()),
            },
            Command::Rset => {
                self.transaction = None;
                Reply::ok()
            }
            Command::Noop => Reply::ok(),
            Command::Vrfy => Reply::cannot_verify(),
            Command::Help => Reply::help(),
            Command::Quit => return Action::Close(Reply::closing(&self.settings.hostname)),
            Command::StartTls => return self.starttls(),
        };
        Action::Reply(reply)
    }

    /// Ends the transaction once its message data has been read, returning its envelope.
    pub fn take_envelope(&mut self) -> Option<Envelope> {
        self.transaction.take()
    }

    /// Resets the session after a successful TLS handshake: the client must greet again
    /// and nothing learnt before the handshake is kept (RFC 3207 §4.2).
    pub fn tls_started(&mut self) {
        self.greeting = None;
        self.transaction = None;
        self.tls_active = true;
    }

    fn ehlo_reply(&self) -> Reply {
        let name = self.client_name().unwrap_or_default();
        let mut lines = vec![
            format!("{} Hello {name}", self.settings.hostname),
            "PIPELINING".to_string(),
            "8BITMIME".to_string(),
            format!("SIZE {}", self.settings.max_message_size),
            "ENHANCEDSTATUSCODES".to_string(),
        ];
        if self.starttls_offered() {
            lines.push("STARTTLS".to_string());
        }
        Reply::multiline(250, lines)
    }

    fn starttls_offered(&self) -> bool {
        self.settings.starttls && !self.tls_active
    }

    fn mail(&mut self, from: String, params: &command::MailParams) -> Reply {
        match self.greeting {
            None => return Reply::bad_sequence("send EHLO/HELO first"),
            Some(Greeting::Helo(_)) if !params.is_empty() => {
                // Service extensions exist only for clients that said EHLO.
                return CommandError::Syntax("parameters need EHLO").reply();
            }
            Some(_) => {}
        }
        if self.transaction.is_some() {
            return Reply::bad_sequence("nested MAIL command");
        }
        let limit = self.settings.max_message_size;
        if params.size.is_some_and(|size| size > limit as u64) {
            return Reply::message_too_big(limit);
        }
        self.transaction = Some(Envelope {
            from,
            rcpts: Vec::new(),
        });
        Reply::sender_ok()
    }

    fn rcpt(&mut self, to: String) -> Reply {
        let max = self.settings.max_recipients;
        match &mut self.transaction {
            None => Reply::bad_sequence("need MAIL command"),
            Some(envelope) if envelope.rcpts.len() >= max => Reply::too_many_recipients(),
            Some(envelope) => {
                envelope.rcpts.push(to);
                Reply::recipient_ok()
            }
        }
    }

    fn starttls(&mut self) -> Action {
        let reply = if self.tls_active {
            Reply::bad_sequence("TLS already active")
        } else if !self.settings.starttls {
            Reply::not_implemented()
        } else if self.greeting.is_none() {
            Reply::bad_sequence("send EHLO first")
        } else if self.transaction.is_some() {
            Reply::bad_sequence("mail transaction in progress")
        } else {
            return Action::StartTls(Reply::ready_for_tls());
        };
        Action::Reply(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(starttls: bool) -> SessionSettings {
        SessionSettings {
            hostname: "mx.test".into(),
            max_message_size: 1000,
            max_recipients: 2,
            starttls,
        }
    }

    fn reply(action: &Action) -> &Reply {
        match action {
            Action::Reply(reply)
            | Action::ReceiveData(reply)
            | Action::StartTls(reply)
            | Action::Close(reply) => reply,
        }
    }

    /// Feeds each line and checks the code of its reply.
    fn script(session: &mut Session, steps: &[(&str, u16)]) {
        for &(line, expected) in steps {
            let action = session.handle_line(line.as_bytes());
            assert_eq!(reply(&action).code(), expected, "{line:?} -> {action:?}");
        }
    }

    /// The lines of the reply to EHLO.
    fn ehlo(session: &mut Session) -> Vec<String> {
        match session.handle_line(b"EHLO c.test") {
            Action::Reply(reply) if reply.code() == 250 => reply.lines().to_vec(),
            other => panic!("unexpected answer to EHLO: {other:?}"),
        }
    }

    #[test]
    fn full_transaction() {
        let mut session = Session::new(settings(false));
        assert_eq!(session.greeting().code(), 220);
        script(
            &mut session,
            &[("EHLO c.test", 250), ("MAIL FROM:<a@b.test>", 250)],
        );
        script(&mut session, &[("RCPT TO:<c@d.test>", 250)]);
        assert!(matches!(
            session.handle_line(b"DATA"),
            Action::ReceiveData(_)
        ));
        let envelope = Envelope {
            from: "a@b.test".into(),
            rcpts: vec!["c@d.test".into()],
        };
        assert_eq!(session.take_envelope(), Some(envelope));
        assert!(!session.in_transaction());
        // A second transaction on the same session, with the null sender.
        script(
            &mut session,
            &[("MAIL FROM:<>", 250), ("RCPT TO:<e@d.test>", 250)],
        );
        assert!(matches!(
            session.handle_line(b"DATA"),
            Action::ReceiveData(_)
        ));
        assert_eq!(session.take_envelope().map(|e| e.from), Some(String::new()));
        assert!(matches!(session.handle_line(b"QUIT"), Action::Close(ref r) if r.code() == 221));
    }

    #[test]
    fn ordering_errors_are_503() {
        let mut session = Session::new(settings(false));
        script(
            &mut session,
            &[
                ("MAIL FROM:<a@b.test>", 503),
                ("HELO c.test", 250),
                ("RCPT TO:<c@d.test>", 503),
                ("DATA", 503),
                ("MAIL FROM:<a@b.test>", 250),
                ("DATA", 503),
                ("MAIL FROM:<a@b.test>", 503),
                ("RSET", 250),
                ("RCPT TO:<c@d.test>", 503),
            ],
        );
    }

    #[test]
    fn commands_allowed_before_greeting() {
        let mut session = Session::new(settings(false));
        script(
            &mut session,
            &[("NOOP", 250), ("RSET", 250), ("VRFY x", 252), ("HELP", 214)],
        );
    }

    #[test]
    fn ehlo_resets_the_transaction() {
        let mut session = Session::new(settings(false));
        script(
            &mut session,
            &[
                ("EHLO c.test", 250),
                ("MAIL FROM:<a@b.test>", 250),
                ("RCPT TO:<c@d.test>", 250),
            ],
        );
        assert!(session.in_transaction());
        script(&mut session, &[("EHLO c.test", 250), ("DATA", 503)]);
    }

    #[test]
    fn ehlo_advertises_extensions() {
        let mut session = Session::new(settings(true));
        assert_eq!(
            ehlo(&mut session),
            [
                "mx.test Hello c.test",
                "PIPELINING",
                "8BITMIME",
                "SIZE 1000",
                "ENHANCEDSTATUSCODES",
                "STARTTLS"
            ]
        );
        assert!(!ehlo(&mut Session::new(settings(false))).contains(&"STARTTLS".to_string()));
    }

    #[test]
    fn declared_size_over_the_limit_is_552() {
        let mut session = Session::new(settings(false));
        script(
            &mut session,
            &[
                ("EHLO c.test", 250),
                ("MAIL FROM:<a@b.test> SIZE=1001", 552),
                ("RCPT TO:<c@d.test>", 503),
                ("MAIL FROM:<a@b.test> SIZE=1000", 250),
            ],
        );
    }

    #[test]
    fn parameters_need_ehlo() {
        let mut session = Session::new(settings(false));
        script(
            &mut session,
            &[("HELO c.test", 250), ("MAIL FROM:<a@b.test> SIZE=10", 501)],
        );
    }

    #[test]
    fn recipient_limit_is_452() {
        let mut session = Session::new(settings(false));
        script(
            &mut session,
            &[
                ("EHLO c.test", 250),
                ("MAIL FROM:<a@b.test>", 250),
                ("RCPT TO:<1@d.test>", 250),
                ("RCPT TO:<2@d.test>", 250),
                ("RCPT TO:<3@d.test>", 452),
                ("DATA", 354),
            ],
        );
        assert_eq!(session.take_envelope().map(|e| e.rcpts.len()), Some(2));
    }

    #[test]
    fn starttls_flow() {
        let mut session = Session::new(settings(true));
        script(
            &mut session,
            &[
                ("STARTTLS", 503),
                ("EHLO c.test", 250),
                ("MAIL FROM:<a@b.test>", 250),
                ("STARTTLS", 503),
                ("RSET", 250),
            ],
        );
        assert!(
            matches!(session.handle_line(b"STARTTLS"), Action::StartTls(ref r) if r.code() == 220)
        );
        session.tls_started();
        assert!(session.tls_active());
        assert_eq!(session.client_name(), None);
        // The client must greet again; STARTTLS is then neither offered nor accepted.
        script(&mut session, &[("MAIL FROM:<a@b.test>", 503)]);
        assert!(!ehlo(&mut session).contains(&"STARTTLS".to_string()));
        script(&mut session, &[("STARTTLS", 503)]);
    }

    #[test]
    fn starttls_without_certificate_is_502() {
        let mut session = Session::new(settings(false));
        script(&mut session, &[("EHLO c.test", 250), ("STARTTLS", 502)]);
    }

    #[test]
    fn implicit_tls_session_never_offers_starttls() {
        let mut session = Session::new_tls(settings(true));
        assert!(session.tls_active());
        assert!(!ehlo(&mut session).contains(&"STARTTLS".to_string()));
        script(&mut session, &[("STARTTLS", 503)]);
    }

    #[test]
    fn syntax_errors_keep_the_state() {
        let mut session = Session::new(settings(false));
        script(
            &mut session,
            &[
                ("EHLO c.test", 250),
                ("MAIL FROM:<a@b.test>", 250),
                ("RCPT TO:<bad>", 501),
                ("FOO", 500),
                ("EXPN x", 502),
                ("RCPT TO:<c@d.test> X=Y", 555),
                ("RCPT TO:<c@d.test>", 250),
                ("DATA", 354),
            ],
        );
    }
}
