//! Reference SMTP server (RFC 5321): `run(listener, shutdown)` plus a per-connection session.
