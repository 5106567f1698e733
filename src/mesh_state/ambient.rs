//! Which pods Istio's ambient mode captures: ztunnel, which never waits for a client's first
//! bytes, instead of a sidecar.
//!
//! istio-cni decides with its enablement selectors (istio/istio `cni/pkg/util/
//! enablement_selector.go`, `CompiledEnablementSelectors.Matches`), by default those of the
//! istio-cni chart's `ambient.enablementSelectors`: a pod labelled `istio.io/dataplane-mode=ambient`,
//! or a pod not labelled `istio.io/dataplane-mode=none` in a namespace labelled
//! `istio.io/dataplane-mode=ambient`; never a host-network pod, and never a pod with a sidecar
//! (`podHasSidecar`: the `sidecar.istio.io/status` annotation).
//!
//! serverfirst sees a pod before Istio's injector does (its webhook sorts first), so the
//! sidecar is also foreseen from the injector's own selectors (istio-discovery chart,
//! `mutatingwebhook.yaml`): the namespace labelled `istio-injection=enabled`, or with an
//! `istio.io/rev` and no `istio-injection`, or the pod labelled `sidecar.istio.io/inject=true` or
//! with an `istio.io/rev`, unless the pod says `sidecar.istio.io/inject=false`.

use super::{LabelLookup, Selector};

pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
const AMBIENT: &str = "ambient";
const NONE: &str = "none";
const SIDECAR_STATUS: &str = "sidecar.istio.io/status";
const INJECT: &str = "sidecar.istio.io/inject";
pub const INJECTION: &str = "istio-injection";
pub const REVISION: &str = "istio.io/rev";

/// What the rule reads of a pod.
pub struct PodFacts<'p> {
    pub labels: &'p dyn LabelLookup,
    pub host_network: bool,
    /// Istio's injector has run on it (`sidecar.istio.io/status`), or its `istio-proxy` is there.
    pub injected: bool,
    /// The pod is being created: the injector has yet to see it. A running pod that was not
    /// injected has no sidecar, whatever the labels say now.
    pub before_injection: bool,
}

/// The pod runs with a sidecar, now or once Istio's injector has seen it.
fn sidecar(pod: &PodFacts<'_>, namespace: &dyn LabelLookup) -> bool {
    if pod.injected || !pod.before_injection {
        return pod.injected;
    }
    if pod.labels.label(INJECT) == Some("false") {
        return false;
    }
    let by_namespace = match namespace.label(INJECTION) {
        Some(value) => value == "enabled",
        None => namespace.label(REVISION).is_some(),
    };
    let by_pod = namespace.label(INJECTION).is_none()
        && namespace.label(REVISION).is_none()
        && (pod.labels.label(INJECT) == Some("true") || pod.labels.label(REVISION).is_some());
    by_namespace || by_pod
}

/// istio-cni captures the pod for ztunnel. `namespace` holds its namespace's labels (empty when
/// they are unknown).
pub fn is_ambient(pod: &PodFacts<'_>, namespace: &dyn LabelLookup) -> bool {
    if pod.host_network || sidecar(pod, namespace) {
        return false;
    }
    let mode = pod.labels.label(DATAPLANE_MODE);
    mode == Some(AMBIENT)
        || (namespace.label(DATAPLANE_MODE) == Some(AMBIENT) && mode != Some(NONE))
}

/// The labels of a namespace nobody knows: none.
pub fn no_labels() -> &'static Selector {
    static EMPTY: Selector = Selector::new();
    &EMPTY
}

/// The facts of a pod (or template) under review, as its view gives them.
pub fn facts<'p>(pod: &'p crate::pod::PodView<'_>) -> PodFacts<'p> {
    PodFacts {
        labels: pod,
        host_network: pod.host_network(),
        injected: pod.annotation(SIDECAR_STATUS).is_some() || pod.has_container(&["istio-proxy"]),
        before_injection: true,
    }
}

/// The annotation that says Istio's injector has run on a pod.
pub const SIDECAR_STATUS_KEY: &str = SIDECAR_STATUS;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh_state::labels;

    /// The cases of istio/istio `cni/pkg/util/podutil_test.go` `TestEnablementSelectorMatches`
    /// with the chart's default selectors, and the injection serverfirst foresees.
    #[test]
    fn ambient_table() {
        let ambient = [(DATAPLANE_MODE, AMBIENT)];
        let none = [(DATAPLANE_MODE, NONE)];
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a [(&'a str, &'a str)],
            bool,
            bool,
            bool,
        );
        // (what, namespace labels, pod labels, host network, injected, ambient)
        let cases: [Case; 14] = [
            (
                "ambient mode enabled for namespace",
                &ambient,
                &[],
                false,
                false,
                true,
            ),
            (
                "ambient mode enabled for pod",
                &[],
                &ambient,
                false,
                false,
                true,
            ),
            ("enabled for both", &ambient, &ambient, false, false, true),
            ("enabled for neither", &[], &[], false, false, false),
            (
                "pod has sidecar and namespace has ambient enabled",
                &ambient,
                &[],
                false,
                true,
                false,
            ),
            (
                "pod has label to disable ambient redirection",
                &ambient,
                &none,
                false,
                false,
                false,
            ),
            (
                "pod has sidecar, pod has ambient mode label",
                &[],
                &ambient,
                false,
                true,
                false,
            ),
            (
                "hostNetwork pod in ambient-enabled namespace",
                &ambient,
                &[],
                true,
                false,
                false,
            ),
            (
                "hostNetwork pod with ambient label",
                &[],
                &ambient,
                true,
                false,
                false,
            ),
            // Foreseen injection, before Istio's injector has run.
            (
                "ambient namespace that also injects sidecars",
                &[(DATAPLANE_MODE, AMBIENT), (INJECTION, "enabled")],
                &[],
                false,
                false,
                false,
            ),
            (
                "ambient namespace, pod asks for a sidecar",
                &ambient,
                &[(INJECT, "true")],
                false,
                false,
                false,
            ),
            (
                "revision-labelled ambient namespace, pod refuses the sidecar",
                &[(DATAPLANE_MODE, AMBIENT), (REVISION, "canary")],
                &[(INJECT, "false")],
                false,
                false,
                true,
            ),
            (
                "injection disabled on the namespace, pod ambient",
                &[(INJECTION, "disabled")],
                &[(DATAPLANE_MODE, AMBIENT), (INJECT, "true")],
                false,
                false,
                true,
            ),
            (
                "other dataplane-mode values",
                &[(DATAPLANE_MODE, "sidecar")],
                &[],
                false,
                false,
                false,
            ),
        ];
        for (what, namespace, pod, host_network, injected, expected) in cases {
            let pod_labels = labels(pod);
            let facts = PodFacts {
                labels: &pod_labels,
                host_network,
                injected,
                before_injection: true,
            };
            assert_eq!(is_ambient(&facts, &labels(namespace)), expected, "{what}");
        }
    }

    /// A running pod has the sidecar it was given: the namespace's injection label counts only
    /// for pods not injected yet.
    #[test]
    fn a_running_pod_without_a_sidecar_in_an_injecting_namespace_is_ambient() {
        let namespace = labels(&[(DATAPLANE_MODE, AMBIENT), (INJECTION, "enabled")]);
        let pod = labels(&[]);
        let running = |injected| PodFacts {
            labels: &pod,
            host_network: false,
            injected,
            before_injection: false,
        };
        assert!(is_ambient(&running(false), &namespace));
        assert!(!is_ambient(&running(true), &namespace));
    }
}
