//! Time-to-banner diagnosis of a `host:port`.
