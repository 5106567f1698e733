//! An independent model of the outbound half of the Envoy configuration istiod gives a meshed
//! *client*, for the end-to-end tests: built from one Kubernetes Service, its endpoints and the
//! DestinationRule for its host, following istio/istio's own code.
//!
//! Modelled (`pilot/pkg/networking/core/listener.go`, `listener_builder.go`, `cluster_tls.go`):
//! `virtualOutbound` on 15001 with `use_original_dst`, which hands each connection to the
//! listener of its original destination; one `<VIP>_<port>` listener per Service port, not bound
//! (`bind_to_port: false`), whose filter chains follow the port's protocol as Istio derives it
//! (`ConvertProtocol`): TCP proxies at once, an auto-detected port sniffs with the HTTP
//! inspector; one `outbound|<port>||<host>` cluster per port, with Istio mTLS to endpoints that
//! have a sidecar (auto mTLS) unless the DestinationRule's settings for the port say otherwise.
//! Not modelled: xDS and EDS (endpoints are static), SDS (certificates are files), Istio's own
//! filters (metadata exchange, stats), routes beyond one catch-all, and the destination-CIDR
//! matches of the filter chains (the listener is already the VIP's).
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{Value, json};

use crate::istio_sidecar::{ListenerProtocol, ServicePort, TlsFiles, socket_address};

/// `meshConfig.proxyListenPort`, where istio-iptables sends outbound connections (`-p`).
pub const VIRTUAL_OUTBOUND_PORT: u16 = 15001;
const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
const BLACK_HOLE_CLUSTER: &str = "BlackHoleCluster";
/// meshConfig's default `connectTimeout`.
const CONNECT_TIMEOUT: &str = "10s";
/// `listener.go` `plaintextHTTPALPNs` (`features.HTTP10` off): what the HTTP inspector sets.
const PLAINTEXT_HTTP_ALPNS: &[&str] = &["http/1.1", "h2c"];
/// `pilot/pkg/networking/util/util.go` `ALPNInMeshWithMxc`: what an in-mesh TCP cluster offers.
pub const ALPN_IN_MESH_WITH_MXC: &[&str] = &["istio-peer-exchange", "istio"];
/// `pilot/pkg/networking/util/util.go` `EnvoyTransportSocketMetadataKey`.
const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// The pod label Istio's injector sets on a pod with a sidecar (`model.IstioMutualTLSModeLabel`).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// An endpoint of the Service: the pod's address and its `security.istio.io/tlsMode` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: String,
    pub tls_mode: Option<String>,
}

/// The client's view of one Service, as istiod pushes it to the client's sidecar.
#[derive(Debug, Clone)]
pub struct OutboundSidecar {
    name: String,
    namespace: String,
    ports: Vec<ServicePort>,
    vip: String,
    endpoints: Vec<Endpoint>,
    destination_rule: Option<Value>,
    identity: Option<TlsFiles>,
    /// The SPIFFE names the server may present (auto mTLS: the Service's service accounts).
    server_identities: Vec<String>,
    protocol_detection_timeout: Duration,
}

impl OutboundSidecar {
    /// The outbound configuration for `service` (a Kubernetes Service object) at `vip`.
    pub fn for_service(service: &Value, vip: &str) -> Result<OutboundSidecar, String> {
        let text = |pointer: &str| service.pointer(pointer).and_then(Value::as_str);
        Ok(OutboundSidecar {
            name: text("/metadata/name")
                .ok_or("Service without a name")?
                .to_string(),
            namespace: text("/metadata/namespace").unwrap_or("default").to_string(),
            ports: ServicePort::of_service(service)?,
            vip: vip.to_string(),
            endpoints: Vec::new(),
            destination_rule: None,
            identity: None,
            server_identities: Vec::new(),
            protocol_detection_timeout: Duration::ZERO,
        })
    }

    pub fn endpoint(mut self, endpoint: Endpoint) -> OutboundSidecar {
        self.endpoints.push(endpoint);
        self
    }

    /// The DestinationRule istiod selects for the Service's host, if any.
    pub fn destination_rule(mut self, rule: Option<Value>) -> OutboundSidecar {
        self.destination_rule = rule;
        self
    }

    /// The client's own mesh certificate, and the identities it accepts from the server.
    pub fn mtls(mut self, identity: TlsFiles, server_identities: &[&str]) -> OutboundSidecar {
        self.identity = Some(identity);
        self.server_identities = server_identities.iter().map(|s| s.to_string()).collect();
        self
    }

    /// `model.Service.Hostname` of a Kubernetes Service.
    pub fn hostname(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }

    /// `model.BuildSubsetKey(TrafficDirectionOutbound, "", hostname, port)`.
    pub fn cluster_name(&self, port: u16) -> String {
        format!("outbound|{port}||{}", self.hostname())
    }

    /// `model.BuildDNSSrvSubsetKey`, the SNI of Istio mTLS to the port
    /// (`cluster_builder.go` `istioMtlsSni`).
    pub fn mtls_sni(&self, port: u16) -> String {
        format!("outbound_.{port}_._.{}", self.hostname())
    }

    /// `getListenerName`: `<bind>_<port>`; Envoy names the listener's stats after it.
    pub fn listener_name(&self, port: u16) -> String {
        format!("{}_{port}", self.vip)
    }

    /// `virtualOutbound` and one listener per Service port Istio builds a listener for (UDP
    /// ports get none).
    pub fn listeners(&self) -> Vec<Value> {
        let mut listeners = vec![self.virtual_outbound()];
        listeners.extend(
            self.ports
                .iter()
                .filter_map(|port| self.port_listener(port)),
        );
        listeners
    }

    /// `listener_builder.go` `buildVirtualOutboundListener`: 15001, `use_original_dst`, and
    /// `buildOutboundCatchAllNetworkFilterChains` (the blackhole chain for 15001 itself, then
    /// the passthrough of `outboundTrafficPolicy: ALLOW_ANY`).
    fn virtual_outbound(&self) -> Value {
        json!({
            "name": "virtualOutbound",
            "address": socket_address("0.0.0.0", VIRTUAL_OUTBOUND_PORT),
            "use_original_dst": true,
            "traffic_direction": "OUTBOUND",
            "filter_chains": [
                {
                    "name": "virtualOutbound-blackhole",
                    "filter_chain_match": { "destination_port": VIRTUAL_OUTBOUND_PORT },
                    "filters": [tcp_proxy(BLACK_HOLE_CLUSTER)],
                },
                { "name": "virtualOutbound-catchall-tcp", "filters": [tcp_proxy(PASSTHROUGH_CLUSTER)] },
            ],
        })
    }

    /// `listener.go` `buildSidecarOutboundListener` and `buildListenerFromEntry` for one port.
    fn port_listener(&self, port: &ServicePort) -> Option<Value> {
        let cluster = self.cluster_name(port.port);
        let stat_prefix = format!("outbound_{}", self.listener_name(port.port));
        let tcp_chain = json!({ "filters": [tcp_proxy(&cluster)] });
        // The HTTP chain of an auto-detected port matches what the HTTP inspector found.
        let http_chain = json!({
            "filter_chain_match": {
                "transport_protocol": "raw_buffer",
                "application_protocols": PLAINTEXT_HTTP_ALPNS,
            },
            "filters": [http_connection_manager(&stat_prefix, &cluster)],
        });
        let chains = match port.istio_protocol().listener_protocol() {
            ListenerProtocol::Tcp => vec![tcp_chain],
            // ListenerProtocolAuto: `opts = append(tcpOpts, httpOpts...)`.
            ListenerProtocol::Auto => vec![tcp_chain, http_chain],
            ListenerProtocol::Http => vec![json!({
                "filters": [http_connection_manager(&stat_prefix, &cluster)],
            })],
            // "UDP or other protocols": no listener.
            ListenerProtocol::Unknown => return None,
        };
        // buildListenerFromEntry: the HTTP inspector when a chain matches application
        // protocols, with the mesh's protocolDetectionTimeout; else no filters and no timeout.
        let sniffs = chains.iter().any(|c| {
            c.pointer("/filter_chain_match/application_protocols")
                .is_some()
        });
        let (filters, timeout) = if sniffs {
            (
                vec![json!({
                    "name": "envoy.filters.listener.http_inspector",
                    "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector" }
                })],
                self.protocol_detection_timeout,
            )
        } else {
            (Vec::new(), Duration::ZERO)
        };
        let mut listener = json!({
            "name": self.listener_name(port.port),
            "address": socket_address(&self.vip, port.port),
            "bind_to_port": false,
            "traffic_direction": "OUTBOUND",
            "continue_on_listener_filters_timeout": true,
            "listener_filters": filters,
            "listener_filters_timeout": format!("{}s", timeout.as_secs_f64()),
        });
        // buildListenerFromEntry: a match-all chain beside others becomes the default chain
        // (istio/istio#26079: a connection that matches a chain's first criteria but not its
        // later ones is dropped otherwise); without one, the passthrough is the default.
        let (matching, match_all): (Vec<Value>, Vec<Value>) = chains
            .into_iter()
            .partition(|c| c.get("filter_chain_match").is_some());
        if matching.is_empty() {
            listener["filter_chains"] = json!(match_all);
        } else {
            listener["filter_chains"] = json!(matching);
            listener["default_filter_chain"] = match_all.into_iter().next().unwrap_or_else(|| {
                json!({ "name": "PassthroughFilterChain", "filters": [tcp_proxy(PASSTHROUGH_CLUSTER)] })
            });
        }
        Some(listener)
    }

    /// The TLS mode the DestinationRule sets for `port`: `cluster_traffic_policy.go`
    /// `selectTrafficPolicyComponents` takes the `portLevelSettings` entry of the port's number
    /// over the rule's top-level `tls`. A rule for another host does not apply.
    pub fn tls_mode(&self, port: u16) -> Option<String> {
        let rule = self.destination_rule.as_ref()?;
        let host = rule.pointer("/spec/host").and_then(Value::as_str)?;
        let fqdn = self.hostname();
        let names = [
            self.name.clone(),
            format!("{}.{}", self.name, self.namespace),
            format!("{}.{}.svc", self.name, self.namespace),
            fqdn,
        ];
        if !names.iter().any(|n| n == host) {
            return None;
        }
        let policy = rule.pointer("/spec/trafficPolicy")?;
        let port_level = policy["portLevelSettings"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s.pointer("/port/number").and_then(Value::as_u64) == Some(u64::from(port)));
        port_level
            .and_then(|s| s.pointer("/tls/mode"))
            .or_else(|| policy.pointer("/tls/mode"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// `PassthroughCluster`, `BlackHoleCluster` and one `outbound|<port>||<host>` per port.
    pub fn clusters(&self) -> Result<Vec<Value>, String> {
        let mut clusters = vec![
            // cluster_builder.go buildDefaultPassthroughCluster.
            json!({
                "name": PASSTHROUGH_CLUSTER,
                "type": "ORIGINAL_DST",
                "connect_timeout": CONNECT_TIMEOUT,
                "lb_policy": "CLUSTER_PROVIDED",
            }),
            // buildBlackHoleCluster: STATIC without endpoints.
            json!({ "name": BLACK_HOLE_CLUSTER, "type": "STATIC", "connect_timeout": CONNECT_TIMEOUT }),
        ];
        for port in &self.ports {
            clusters.push(self.cluster(port)?);
        }
        Ok(clusters)
    }

    fn cluster(&self, port: &ServicePort) -> Result<Value, String> {
        let name = self.cluster_name(port.port);
        // util.go AppendLbEndpointMetadata: the tlsMode label as transport socket match data.
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .map(|endpoint| {
                let mut lb_endpoint = json!({
                    "endpoint": { "address": socket_address(&endpoint.address, port.target_port) },
                });
                if let Some(mode) = endpoint.tls_mode.as_deref().filter(|m| *m != "disabled") {
                    lb_endpoint["metadata"] =
                        json!({ "filter_metadata": { TRANSPORT_SOCKET_MATCH: { "tlsMode": mode } } });
                }
                lb_endpoint
            })
            .collect();
        let mut cluster = json!({
            "name": name,
            "type": "STATIC",
            "connect_timeout": CONNECT_TIMEOUT,
            "lb_policy": "LEAST_REQUEST",
            "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": endpoints }] },
        });
        // cluster_tls.go applyUpstreamTLSSettings and buildUpstreamClusterTLSContext.
        match self.tls_mode(port.port).as_deref() {
            Some("DISABLE") => {}
            Some("ISTIO_MUTUAL") => cluster["transport_socket"] = self.istio_mutual(port.port)?,
            // No TLS settings: buildUpstreamTLSSettings turns on auto mTLS, which
            // applyUpstreamTLSSettings turns into transport socket matches on the endpoints'
            // tlsMode: mTLS to pods with a sidecar, plaintext (defaultTransportSocketMatch) to
            // the others.
            None => {
                cluster["transport_socket_matches"] = json!([
                    {
                        "name": "tlsMode-istio",
                        "match": { "tlsMode": "istio" },
                        "transport_socket": self.istio_mutual(port.port)?,
                    },
                    {
                        "name": "tlsMode-disabled",
                        "match": {},
                        "transport_socket": {
                            "name": "envoy.transport_sockets.raw_buffer",
                            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" }
                        },
                    },
                ]);
            }
            Some(other) => return Err(format!("tls.mode {other} is not modelled")),
        }
        Ok(cluster)
    }

    /// `ClientTLSSettings_ISTIO_MUTUAL`: SNI [`Self::mtls_sni`], ALPN `ALPNInMeshWithMxc` (a
    /// cluster that is not HTTP/2), the server's names as `MatchSubjectAltNames`.
    fn istio_mutual(&self, port: u16) -> Result<Value, String> {
        let identity = self
            .identity
            .as_ref()
            .ok_or("Istio mTLS needs the client's mesh certificate")?;
        let mut common = identity.common_tls_context(ALPN_IN_MESH_WITH_MXC);
        common["validation_context"]["match_typed_subject_alt_names"] = self
            .server_identities
            .iter()
            .map(|name| json!({ "san_type": "URI", "matcher": { "exact": name } }))
            .collect();
        Ok(json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": self.mtls_sni(port),
                "common_tls_context": common,
            }
        }))
    }
}

/// `buildSidecarOutboundTCPFilterChainOpts`: `tcp_proxy` named after its cluster (a waypoint's
/// too: `listener_waypoint.go` `buildWaypointNetworkFilters`).
pub fn tcp_proxy(cluster: &str) -> Value {
    json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": cluster,
            "cluster": cluster,
        }
    })
}

/// `buildSidecarOutboundHTTPListenerOpts`, with one catch-all route instead of RDS.
pub fn http_connection_manager(stat_prefix: &str, cluster: &str) -> Value {
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "route_config": {
                "name": cluster,
                "virtual_hosts": [{
                    "name": cluster,
                    "domains": ["*"],
                    "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": cluster, "timeout": "0s" } }],
                }],
            },
            "http_filters": [{
                "name": "envoy.filters.http.router",
                "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
            }],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(app_protocol: Option<&str>) -> Value {
        let mut port =
            json!({ "name": "submission", "port": 587, "targetPort": 587, "protocol": "TCP" });
        if let Some(app_protocol) = app_protocol {
            port["appProtocol"] = json!(app_protocol);
        }
        json!({ "kind": "Service", "metadata": { "name": "mox", "namespace": "mail" }, "spec": { "ports": [port] } })
    }

    fn identity() -> TlsFiles {
        TlsFiles {
            cert_chain: "/c".into(),
            private_key: "/k".into(),
            trusted_ca: "/r".into(),
        }
    }

    fn sidecar(app_protocol: Option<&str>) -> OutboundSidecar {
        OutboundSidecar::for_service(&service(app_protocol), "10.96.0.10")
            .unwrap()
            .endpoint(Endpoint {
                address: "10.201.0.2".into(),
                tls_mode: Some("istio".into()),
            })
            .mtls(identity(), &["spiffe://cluster.local/ns/mail/sa/mox"])
    }

    #[test]
    fn an_auto_detected_port_sniffs_and_falls_back_to_tcp() {
        let listeners = sidecar(None).listeners();
        let port = &listeners[1];
        assert_eq!(port["name"], "10.96.0.10_587");
        assert_eq!(port["bind_to_port"], false);
        assert_eq!(
            port["listener_filters"][0]["name"],
            "envoy.filters.listener.http_inspector"
        );
        assert_eq!(port["listener_filters_timeout"], "0s");
        let chains = port["filter_chains"].as_array().unwrap();
        assert_eq!(chains.len(), 1);
        assert_eq!(
            chains[0]["filter_chain_match"],
            json!({ "transport_protocol": "raw_buffer", "application_protocols": ["http/1.1", "h2c"] })
        );
        assert_eq!(
            port["default_filter_chain"]["filters"][0]["typed_config"]["cluster"],
            "outbound|587||mox.mail.svc.cluster.local"
        );
        assert_eq!(listeners[0]["use_original_dst"], true);
    }

    #[test]
    fn a_tcp_port_proxies_at_once() {
        let listeners = sidecar(Some("tcp")).listeners();
        let port = &listeners[1];
        assert_eq!(port["listener_filters"], json!([]));
        assert_eq!(port["filter_chains"].as_array().unwrap().len(), 1);
        assert!(port.get("default_filter_chain").is_none());
    }

    #[test]
    fn the_port_level_tls_mode_of_the_rule_for_the_host_applies() {
        let rule = |host: &str, top: Option<&str>| {
            let mut rule = json!({ "spec": { "host": host, "trafficPolicy": {
                "portLevelSettings": [{ "port": { "number": 587 }, "tls": { "mode": "DISABLE" } }] } } });
            if let Some(mode) = top {
                rule["spec"]["trafficPolicy"]["tls"] = json!({ "mode": mode });
            }
            rule
        };
        let mode =
            |rule: Value, port: u16| sidecar(None).destination_rule(Some(rule)).tls_mode(port);
        assert_eq!(mode(rule("mox", None), 587).as_deref(), Some("DISABLE"));
        assert_eq!(
            mode(
                rule("mox.mail.svc.cluster.local", Some("ISTIO_MUTUAL")),
                587
            )
            .as_deref(),
            Some("DISABLE")
        );
        assert_eq!(
            mode(rule("mox", Some("ISTIO_MUTUAL")), 25).as_deref(),
            Some("ISTIO_MUTUAL")
        );
        assert_eq!(mode(rule("other", None), 587), None);
    }

    #[test]
    fn auto_mtls_matches_endpoints_with_a_sidecar() {
        let clusters = sidecar(None).clusters().unwrap();
        let matches = clusters[2]["transport_socket_matches"].as_array().unwrap();
        assert_eq!(matches[0]["match"], json!({ "tlsMode": "istio" }));
        let tls = &matches[0]["transport_socket"]["typed_config"];
        assert_eq!(tls["sni"], "outbound_.587_._.mox.mail.svc.cluster.local");
        assert_eq!(
            tls["common_tls_context"]["alpn_protocols"],
            json!(["istio-peer-exchange", "istio"])
        );
        assert_eq!(matches[1]["match"], json!({}));
        let endpoint = &clusters[2]["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
        assert_eq!(
            endpoint["metadata"]["filter_metadata"]["envoy.transport_socket_match"],
            json!({ "tlsMode": "istio" })
        );
        let rule = json!({ "spec": { "host": "mox", "trafficPolicy": {
            "portLevelSettings": [{ "port": { "number": 587 }, "tls": { "mode": "DISABLE" } }] } } });
        let plain = sidecar(None)
            .destination_rule(Some(rule))
            .clusters()
            .unwrap();
        assert!(plain[2].get("transport_socket_matches").is_none());
        assert!(plain[2].get("transport_socket").is_none());
    }
}
