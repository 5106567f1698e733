//! Reference SMTP server (RFC 5321): `run(listeners, config, shutdown)` plus a per-connection session.
//!
//! # Layout
//! - [`command`]: command line parser (pure).
//! - [`session`]: the SMTP state machine (pure).
//! - [`data`]: message data decoding: dot-stuffing, terminator, size limit (pure).
//! - [`reply`]: every reply the server sends.

pub mod command;
pub mod data;
pub mod reply;
pub mod session;
