//! The few metrics that matter, in Prometheus text format (prometheus-client): the webhook's
//! [`Metrics`] and the companions controller's [`CompanionMetrics`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::admission::{Kind, Outcome};
use crate::config::Mode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    endpoint: &'static str,
    kind: &'static str,
    mode: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Why a request got no AdmissionReview answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// HTTP 400: not an AdmissionReview v1.
    InvalidRequest,
    /// HTTP 413.
    BodyTooLarge,
    /// HTTP 500: the response could not be produced (never expected).
    Internal,
}

impl Rejection {
    fn as_str(self) -> &'static str {
        match self {
            Rejection::InvalidRequest => "invalid_request",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::Internal => "internal",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    rejections: Family<RejectLabels, Counter>,
    tls_reloads: Family<ResultLabels, Counter>,
    certificate_expiry: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("serverfirst");
        let reviews = Family::<ReviewLabels, Counter>::default();
        let rejections = Family::<RejectLabels, Counter>::default();
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "admission_reviews",
            "AdmissionReviews answered, by endpoint, kind of object, effective mode and outcome",
            reviews.clone(),
        );
        registry.register(
            "rejected_requests",
            "Requests answered with an HTTP error, by reason",
            rejections.clone(),
        );
        registry.register(
            "tls_reloads",
            "Serving certificate reloads, by result",
            tls_reloads.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the serving certificate expires (Unix time)",
            certificate_expiry.clone(),
        );
        let metrics = Metrics {
            registry,
            reviews,
            rejections,
            tls_reloads,
            certificate_expiry,
        };
        metrics.initialise_series();
        metrics
    }

    /// Creates every series at zero so dashboards and alerts see them before the first event.
    fn initialise_series(&self) {
        for endpoint in ["mutate", "audit"] {
            for kind in Kind::ALL {
                for mode in [Mode::Enforce, Mode::Audit] {
                    for outcome in Outcome::ALL {
                        let labels = ReviewLabels {
                            endpoint,
                            kind: kind.as_str(),
                            mode: mode.as_str(),
                            outcome: outcome.as_str(),
                        };
                        let _ = self.reviews.get_or_create(&labels);
                    }
                }
            }
        }
        for reason in [
            Rejection::InvalidRequest,
            Rejection::BodyTooLarge,
            Rejection::Internal,
        ] {
            let _ = self.rejections.get_or_create(&RejectLabels {
                reason: reason.as_str(),
            });
        }
        for result in ["success", "failure"] {
            let _ = self.tls_reloads.get_or_create(&ResultLabels { result });
        }
    }

    pub fn review(&self, endpoint: &'static str, kind: Kind, mode: Mode, outcome: Outcome) {
        let labels = ReviewLabels {
            endpoint,
            kind: kind.as_str(),
            mode: mode.as_str(),
            outcome: outcome.as_str(),
        };
        self.reviews.get_or_create(&labels).inc();
    }

    pub fn rejected(&self, rejection: Rejection) {
        self.rejections
            .get_or_create(&RejectLabels {
                reason: rejection.as_str(),
            })
            .inc();
    }

    pub fn tls_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.tls_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn set_certificate_expiry(&self, unix_seconds: i64) {
        self.certificate_expiry.set(unix_seconds);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

/// What `/metrics` serves.
pub trait Exposition: Send + Sync + 'static {
    /// The Prometheus text exposition.
    fn exposition(&self) -> String;
}

impl Exposition for Metrics {
    fn exposition(&self) -> String {
        self.encode()
    }
}

fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

/// How one reconcile of a Service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileResult {
    Success,
    Error,
}

/// What the controller did to a DestinationRule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    Applied,
    Deleted,
}

/// The companions controller's metrics.
pub struct CompanionMetrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    rules: Family<ActionLabels, Counter>,
    conflicts: Gauge,
}

impl std::fmt::Debug for CompanionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompanionMetrics").finish_non_exhaustive()
    }
}

impl Default for CompanionMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CompanionMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("serverfirst_companions");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let rules = Family::<ActionLabels, Counter>::default();
        let conflicts = Gauge::default();
        registry.register(
            "reconciles",
            "Service reconciles, by result",
            reconciles.clone(),
        );
        registry.register(
            "destinationrules",
            "Companion DestinationRules written, by action",
            rules.clone(),
        );
        registry.register(
            "conflicts",
            "Services whose host has someone else's DestinationRule lacking tls.mode DISABLE on an excluded port",
            conflicts.clone(),
        );
        for result in ["success", "error"] {
            let _ = reconciles.get_or_create(&ResultLabels { result });
        }
        for action in ["applied", "deleted"] {
            let _ = rules.get_or_create(&ActionLabels { action });
        }
        CompanionMetrics {
            registry,
            reconciles,
            rules,
            conflicts,
        }
    }

    pub fn reconciled(&self, result: ReconcileResult) {
        let result = match result {
            ReconcileResult::Success => "success",
            ReconcileResult::Error => "error",
        };
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn rule(&self, action: RuleAction) {
        let action = match action {
            RuleAction::Applied => "applied",
            RuleAction::Deleted => "deleted",
        };
        self.rules.get_or_create(&ActionLabels { action }).inc();
    }

    pub fn set_conflicts(&self, services: usize) {
        self.conflicts
            .set(i64::try_from(services).unwrap_or(i64::MAX));
    }
}

impl Exposition for CompanionMetrics {
    fn exposition(&self) -> String {
        encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reviews_and_exposes_zero_series() {
        let metrics = Metrics::new();
        metrics.review("mutate", Kind::Pod, Mode::Enforce, Outcome::Patched);
        metrics.review("mutate", Kind::Pod, Mode::Enforce, Outcome::Patched);
        metrics.review("mutate", Kind::Service, Mode::Enforce, Outcome::Patched);
        metrics.rejected(Rejection::BodyTooLarge);
        let text = metrics.encode();
        assert!(text.contains(r#"serverfirst_admission_reviews_total{endpoint="mutate",kind="pod",mode="enforce",outcome="patched"} 2"#), "{text}");
        assert!(text.contains(r#"serverfirst_admission_reviews_total{endpoint="mutate",kind="service",mode="enforce",outcome="patched"} 1"#), "{text}");
        assert!(text.contains(r#"serverfirst_admission_reviews_total{endpoint="audit",kind="service",mode="audit",outcome="would_patch"} 0"#));
        // Alerts on bugs need the series before the first one.
        assert!(text.contains(r#"serverfirst_admission_reviews_total{endpoint="mutate",kind="pod",mode="enforce",outcome="internal_error"} 0"#));
        assert!(text.contains(r#"serverfirst_rejected_requests_total{reason="body_too_large"} 1"#));
        assert!(text.contains(r#"serverfirst_tls_reloads_total{result="failure"} 0"#));
    }

    #[test]
    fn companion_metrics_have_the_documented_names() {
        let metrics = CompanionMetrics::new();
        metrics.reconciled(ReconcileResult::Success);
        metrics.rule(RuleAction::Applied);
        metrics.rule(RuleAction::Applied);
        metrics.set_conflicts(3);
        let text = metrics.exposition();
        assert!(
            text.contains(r#"serverfirst_companions_reconciles_total{result="success"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"serverfirst_companions_reconciles_total{result="error"} 0"#));
        assert!(
            text.contains(r#"serverfirst_companions_destinationrules_total{action="applied"} 2"#)
        );
        assert!(
            text.contains(r#"serverfirst_companions_destinationrules_total{action="deleted"} 0"#)
        );
        assert!(text.contains("serverfirst_companions_conflicts 3"));
    }
}
