//! serverfirst: a Kubernetes mutating admission webhook that keeps server-first protocols
//! (SMTP, FTP, POP3, IMAP, ...) working inside a service mesh.
//!
//! A sidecar that sniffs the client's first bytes never sees any on a server-first port, so the
//! server's banner never reaches the client. serverfirst finds those ports in each Pod as it is
//! created and excludes them from sidecar capture, merged with what the Pod already says; and it
//! declares them TCP on each Service as it is created or updated, so that meshed clients' sidecars
//! do not sniff them either.
//!
//! # Layout
//! - [`audit`]: live-cluster audit of running pods and Services through the Kubernetes API, as
//!   rows, PolicyReports or reports applied to the cluster.
//! - [`catalog`]: the built-in list of server-first protocols, their ports and port names.
//! - [`config`]: validated configuration (catalog overrides, mode, mesh defaults).
//! - [`pod`]: the small view of a Pod that every decision is made from.
//! - [`detect`]: Pod view → server-first ports found (pure).
//! - [`mesh_state`]: the mesh facts a decision needs besides the object (namespaces' labels,
//!   PeerAuthentications, AuthorizationPolicies), built from objects by one function (pure).
//! - [`ftp_passive`]: the FTP passive data port rule that pods and Services share (pure).
//! - [`service`]: the small view of a Service, as [`pod`] is for pods.
//! - [`service_ports`]: Service view → the ports that serve a server-first protocol (pure).
//! - [`mesh`]: per-mesh planning of the annotation and argument changes, and of Services'
//!   protocol declarations (pure).
//! - [`patch`]: plan → RFC 6902 JSON Patch, verified by applying it (pure).
//! - [`admission`]: AdmissionReview v1 in (pods and Services), AdmissionReview v1 out; no HTTP
//!   types.
//! - [`server`]: the HTTPS webhook and the plain-HTTP health/metrics listener.
//! - [`mesh_watch`]: keeps the webhook's mesh state current from the cluster (reflectors).
//! - [`discovery`]: whether the cluster serves an optional API (Istio's CRDs), asked again
//!   while it does not.
//! - [`tls`]: serving certificate loading and hot reload.
//! - [`metrics`]: the Prometheus metrics.
//! - [`manifests`]: offline manifests → pod templates and Services → decisions and rendered YAML.
//! - [`companions`]: companion DestinationRules for meshed clients (pure), and their controller.
//! - [`watch`]: the error policy of every watch stream, for any kind: relist at once after a
//!   `410 Gone`, back off with kube-runtime's backoff only on failures.
//! - [`certs`]: a private CA and serving certificate for the webhook Service.
//! - [`report`]: terminal tables for the reporting commands.
//! - [`smtp`]: the reference SMTP server used by end-to-end tests and smoke tests.
//! - [`probe`]: time-to-banner diagnosis of a `host:port`.
//! - [`cli`]: the command line; the binary only dispatches to it.

pub mod admission;
pub mod audit;
pub mod catalog;
pub mod certs;
pub mod cli;
pub mod companions;
pub mod config;
pub mod detect;
pub mod discovery;
pub mod ftp_passive;
pub mod manifests;
pub mod mesh;
pub mod mesh_state;
pub mod mesh_watch;
pub mod metrics;
pub mod patch;
pub mod pod;
pub mod ports;
pub mod probe;
pub mod report;
pub mod server;
pub mod service;
pub mod service_ports;
pub mod smtp;
pub mod tls;
pub mod watch;
