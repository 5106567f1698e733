//! Companion DestinationRules: what meshed clients need beside an excluded port, and the
//! controller that keeps them in the cluster.
//!
//! - [`desired`]: pure; Service, EndpointSlices, pods' recorded exclusions and DestinationRules
//!   → the rule to apply or delete, conflicts and mixed endpoints. `check`/`render` use it too.
//! - [`controller`]: the edge; watches, server-side apply, Events, metrics.

pub mod controller;
pub mod desired;
