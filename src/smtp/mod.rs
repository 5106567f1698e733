//! Reference SMTP server (RFC 5321): `run(listeners, config, shutdown)` plus a per-connection session.
//!
//! The server greets every client at once (`220 <hostname> ESMTP serverfirst`), which is what a
//! server-first protocol does and what a sniffing sidecar breaks. It supports EHLO/HELO, MAIL,
//! RCPT, DATA, RSET, NOOP, VRFY, HELP, QUIT and STARTTLS, and advertises PIPELINING, 8BITMIME,
//! SIZE, ENHANCEDSTATUSCODES (and STARTTLS when it has a certificate).
//!
//! # Layout
//! - [`command`]: command line parser (pure).
//! - [`session`]: the SMTP state machine (pure).
//! - [`data`]: message data decoding: dot-stuffing, terminator, size limit (pure).
//! - [`reply`]: every reply the server sends.
//! - `connection`: buffered I/O over a plain or TLS stream, with the idle timeout.
//! - `handler`: one session driven over one connection.
//! - `server`: listeners, connection cap, shutdown; [`run`].
//! - [`delivery`], [`maildir`]: where accepted messages go.
//! - [`config`], [`tls`], [`error`]: configuration and its errors.

pub mod command;
pub mod config;
mod connection;
pub mod data;
pub mod delivery;
pub mod error;
mod handler;
pub mod maildir;
pub mod reply;
mod server;
pub mod session;
pub mod tls;

pub use config::{Limits, SmtpConfig};
pub use delivery::Delivery;
pub use error::SmtpError;
pub use server::{Listener, run};
pub use tls::{load_tls_config, tls_config_from_pem};
