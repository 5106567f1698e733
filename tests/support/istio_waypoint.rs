//! An independent model of the listener istiod gives an ambient-mode waypoint (an Envoy), for
//! the end-to-end tests, modelled for the one decision that matters to a server-first port:
//! does the waypoint wait for the client's first bytes on it.
//!
//! istio/istio `pilot/pkg/networking/core/listener_waypoint.go` `buildWaypointInternal` builds
//! the `main_internal` listener from the Services and the workloads that use the waypoint
//! (`waypoint.go` `findWaypointResources`). Modelled as it writes them:
//! - the listener filters: `original_dst`, the HTTP inspector, disabled
//!   (`listener_inbound.go` `listenerPredicateExcludePorts`) only on the ports that every
//!   attached Service declares TCP or HTTP, and only when no workload is attached ("If there
//!   are workloads, any port is accepted on them, so we cannot opt out"); the TLS inspector
//!   when a Service port is TLS. `listener_filters_timeout` is left out, as Istio leaves it:
//!   Envoy's own default (15 s), then the connection is closed
//!   (`continue_on_listener_filters_timeout` unset);
//! - the filter chain matcher: destination IP (the Services' VIPs, the workloads' addresses),
//!   then for a VIP the destination port, to the port's TCP chain when it is declared TCP, its
//!   HTTP chain when declared HTTP, and to both behind the application-protocol matcher
//!   (`match.go` `NewAppProtocol`: `'h2c'` and `'http/1.1'` to HTTP, anything else to TCP)
//!   when it is not declared; a workload's address goes to `direct-tcp`/`direct-http` behind
//!   the same matcher;
//! - the TCP chains end in `tcp_proxy` to the chain's cluster, the HTTP chains in the HTTP
//!   connection manager.
//!
//! Not modelled, and why that is enough: the HBONE tunnels (`connect_terminate` on 15008 that
//! hands the inner connection to `main_internal`, `connect_originate` to the server's
//! ztunnel). They carry the client's bytes unchanged in both directions, and ztunnel never
//! waits for client bytes (ztunnel `src/proxy/outbound.rs` `proxy_to_hbone`), so whether a
//! banner can arrive first is decided by `main_internal`'s listener filters alone. Here the
//! listener is bound to [`WAYPOINT_PORT`], the waypoint's network namespace redirects the
//! client's connections to it ([`capture_rules`]) and `original_dst` restores their
//! destination, as the CONNECT authority does for the internal listener. Also not modelled:
//! RBAC, telemetry, routes beyond one catch-all, `set_dst_address`/`ConnectAuthority` filter
//! state, multi-network. The Service chains' clusters (`inbound-vip|...`, EDS through
//! `connect_originate` in Istio) are static clusters of the pod; `encap`, which the direct
//! chains use, goes to the original destination as Istio's does.
#![allow(dead_code)]

use serde_json::{Value, json};
use serverfirst::mesh::istio_service::{IstioProtocol, convert_protocol};

use crate::istio_outbound::{http_connection_manager, tcp_proxy};
use crate::istio_sidecar::{ServicePort, ports_predicate, socket_address};

/// Where the waypoint's namespace sends the client's connections, for `main_internal`.
pub const WAYPOINT_PORT: u16 = 15088;
/// `waypoint.go` `MainInternalName`.
pub const MAIN_INTERNAL: &str = "main_internal";
/// `waypoint.go` `EncapClusterName`: the direct chains' cluster.
pub const ENCAP_CLUSTER: &str = "encap";
/// meshConfig's default `connectTimeout`.
const CONNECT_TIMEOUT: &str = "10s";

/// The Gateway's `istio.io/waypoint-for` label: which traffic the waypoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaypointFor {
    /// The default (`constants.ServiceTraffic`).
    Service,
    Workload,
    All,
}

impl WaypointFor {
    pub fn label(self) -> &'static str {
        match self {
            WaypointFor::Service => "service",
            WaypointFor::Workload => "workload",
            WaypointFor::All => "all",
        }
    }

    /// `pilot/pkg/serviceregistry/ambient/waypoints.go` `fetchWaypointForService`.
    fn takes_services(self) -> bool {
        matches!(self, WaypointFor::Service | WaypointFor::All)
    }

    /// `waypoints.go` `fetchWaypointForWorkload`.
    fn takes_workloads(self) -> bool {
        matches!(self, WaypointFor::Workload | WaypointFor::All)
    }
}

/// A Service port as the waypoint sees it, with its protocol as istiod derives it
/// (`ConvertProtocol` of the Service `port`, serverfirst's own port of it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct WaypointPort {
    port: u16,
    target_port: u16,
    protocol: IstioProtocol,
}

/// A Service that uses the waypoint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AttachedService {
    hostname: String,
    vip: String,
    ports: Vec<WaypointPort>,
}

/// The waypoint of a case: its `waypoint-for`, the Services and the workloads that use it.
#[derive(Debug, Clone)]
pub struct Waypoint {
    waypoint_for: WaypointFor,
    services: Vec<AttachedService>,
    /// The attached workloads' addresses.
    workloads: Vec<String>,
}

/// `protocol.Instance.IsTCP`.
fn is_tcp(protocol: IstioProtocol) -> bool {
    use IstioProtocol::{Https, Mongo, MySql, Redis, Tcp, Tls};
    matches!(protocol, Tcp | Https | Tls | Mongo | Redis | MySql)
}

/// `protocol.Instance.IsTLS`.
fn is_tls(protocol: IstioProtocol) -> bool {
    matches!(protocol, IstioProtocol::Https | IstioProtocol::Tls)
}

/// `model.BuildSubsetKey(TrafficDirectionInboundVIP, subset, hostname, port)`: the name of a
/// Service port's chain and of its cluster.
pub fn vip_chain_name(subset: &str, hostname: &str, port: u16) -> String {
    format!("inbound-vip|{port}|{subset}|{hostname}")
}

/// `model.Service.Hostname` of a Kubernetes Service object.
pub fn service_hostname(service: &Value) -> Result<String, String> {
    let text = |pointer: &str| service.pointer(pointer).and_then(Value::as_str);
    let name = text("/metadata/name").ok_or("Service without a name")?;
    let namespace = text("/metadata/namespace").unwrap_or("default");
    Ok(format!("{name}.{namespace}.svc.cluster.local"))
}

impl Waypoint {
    pub fn new(waypoint_for: WaypointFor) -> Waypoint {
        Waypoint {
            waypoint_for,
            services: Vec::new(),
            workloads: Vec::new(),
        }
    }

    /// `service` (a Kubernetes Service object, its cluster IP `vip`) labelled
    /// `istio.io/use-waypoint` for this waypoint: attached when the waypoint takes Service
    /// traffic. Services are attached oldest first (`SortServicesByCreationTime`).
    pub fn service(mut self, service: &Value, vip: &str) -> Result<Waypoint, String> {
        if !self.waypoint_for.takes_services() {
            return Ok(self);
        }
        let ports = ServicePort::of_service(service)?
            .into_iter()
            .map(|p| WaypointPort {
                port: p.port,
                target_port: p.target_port,
                protocol: convert_protocol(
                    p.port,
                    &p.name,
                    Some(&p.protocol),
                    p.app_protocol.as_deref(),
                ),
            })
            .collect();
        self.services.push(AttachedService {
            hostname: service_hostname(service)?,
            vip: vip.to_string(),
            ports,
        });
        Ok(self)
    }

    /// A pod at `address` labelled `istio.io/use-waypoint` for this waypoint: attached when
    /// the waypoint takes workload traffic.
    pub fn workload(mut self, address: &str) -> Waypoint {
        if self.waypoint_for.takes_workloads() {
            self.workloads.push(address.to_string());
        }
        self
    }

    /// `portProtocols` of `buildWaypointInternal`: per Service port number, over every
    /// attached Service, the protocol, or `Unsupported` where they disagree or say nothing.
    fn port_protocols(&self) -> Vec<(u16, IstioProtocol)> {
        let mut protocols: Vec<(u16, IstioProtocol)> = Vec::new();
        for port in self.services.iter().flat_map(|s| &s.ports) {
            if port.protocol == IstioProtocol::Udp {
                continue;
            }
            let before = protocols
                .iter()
                .position(|(p, _)| *p == port.port)
                .map(|i| protocols.remove(i).1);
            let protocol = if port.protocol.is_sniffed() {
                IstioProtocol::Unsupported
            } else if port.protocol.is_http() {
                // "TCP and HTTP on the same port, mark it as requiring sniffing"
                match before {
                    Some(b) if b != IstioProtocol::Http => IstioProtocol::Unsupported,
                    _ => IstioProtocol::Http,
                }
            } else {
                match before {
                    Some(b) if !is_tcp(b) => IstioProtocol::Unsupported,
                    _ => port.protocol,
                }
            };
            protocols.push((port.port, protocol));
        }
        protocols.sort_by_key(|(p, _)| *p);
        protocols
    }

    /// The ports on which the HTTP inspector is disabled: none when a workload is attached,
    /// else the ports every Service declares.
    pub fn uninspected_ports(&self) -> Vec<u16> {
        if !self.workloads.is_empty() {
            return Vec::new();
        }
        self.port_protocols()
            .into_iter()
            .filter(|(_, protocol)| !protocol.is_sniffed())
            .map(|(port, _)| port)
            .collect()
    }

    /// The listener filters of `main_internal`, in Istio's order.
    fn listener_filters(&self) -> Vec<Value> {
        let mut http_inspector = json!({
            "name": "envoy.filters.listener.http_inspector",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
            }
        });
        let uninspected = self.uninspected_ports();
        if !uninspected.is_empty() {
            http_inspector["filter_disabled"] = ports_predicate(&uninspected);
        }
        let mut filters = vec![
            json!({
                "name": "envoy.filters.listener.original_dst",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
                }
            }),
            http_inspector,
        ];
        // The TLS inspector when a Service port is TLS, disabled on the ports no Service
        // declares TLS.
        let all_ports = self.services.iter().flat_map(|s| &s.ports);
        let tls: Vec<u16> = all_ports
            .clone()
            .filter(|p| is_tls(p.protocol))
            .map(|p| p.port)
            .collect();
        if !tls.is_empty() {
            let mut others: Vec<u16> = all_ports
                .map(|p| p.port)
                .filter(|p| !tls.contains(p))
                .collect();
            others.sort_unstable();
            others.dedup();
            let mut tls_inspector = json!({
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
                    "initial_read_buffer_size": 512
                }
            });
            if !others.is_empty() {
                tls_inspector["filter_disabled"] = ports_predicate(&others);
            }
            filters.push(tls_inspector);
        }
        filters
    }

    /// The filter chains and the port matcher of each attached Service, and where the
    /// workloads' addresses go.
    fn chains_and_matcher(&self) -> (Vec<Value>, Value) {
        let mut chains = Vec::new();
        let mut range_matchers = Vec::new();
        for service in &self.services {
            let mut port_map = serde_json::Map::new();
            for port in service
                .ports
                .iter()
                .filter(|p| p.protocol != IstioProtocol::Udp)
            {
                let tcp = vip_chain_name("tcp", &service.hostname, port.port);
                let http = vip_chain_name("http", &service.hostname, port.port);
                let tcp_chain = json!({ "name": tcp, "filters": [tcp_proxy(&tcp)] });
                let http_chain = json!({
                    "name": http, "filters": [http_connection_manager(&http, &http)]
                });
                let on_match = if port.protocol.is_sniffed() {
                    chains.extend([tcp_chain, http_chain]);
                    on_matcher(app_protocol_matcher(&tcp, &http))
                } else if port.protocol.is_http() {
                    chains.push(http_chain);
                    to_chain(&http)
                } else {
                    chains.push(tcp_chain);
                    to_chain(&tcp)
                };
                port_map.insert(port.port.to_string(), on_match);
            }
            if !port_map.is_empty() {
                let port_matcher = json!({
                    "matcher_tree": {
                        "input": input("port", "DestinationPortInput"),
                        "exact_match_map": { "map": port_map },
                    }
                });
                range_matchers.push(json!({
                    "ranges": [{ "address_prefix": service.vip, "prefix_len": 32 }],
                    "on_match": on_matcher(port_matcher),
                }));
            }
        }
        // The direct pod access chains, always there; reached from the workloads' addresses.
        chains.push(json!({ "name": "direct-tcp", "filters": [tcp_proxy(ENCAP_CLUSTER)] }));
        chains.push(json!({
            "name": "direct-http",
            "filters": [http_connection_manager("direct-http", ENCAP_CLUSTER)],
        }));
        if !self.workloads.is_empty() {
            let ranges: Vec<Value> = self
                .workloads
                .iter()
                .map(|a| json!({ "address_prefix": a, "prefix_len": 32 }))
                .collect();
            range_matchers.push(json!({
                "ranges": ranges,
                "on_match": on_matcher(app_protocol_matcher("direct-tcp", "direct-http")),
            }));
        }
        let matcher = json!({
            "matcher_tree": {
                "input": input("ip", "DestinationIPInput"),
                "custom_match": {
                    "name": "ip",
                    "typed_config": {
                        "@type": "type.googleapis.com/xds.type.matcher.v3.IPMatcher",
                        "range_matchers": range_matchers,
                    }
                },
            }
        });
        (chains, matcher)
    }

    /// `main_internal`, bound to [`WAYPOINT_PORT`].
    pub fn listener(&self) -> Value {
        let (chains, matcher) = self.chains_and_matcher();
        json!({
            "name": MAIN_INTERNAL,
            "address": socket_address("0.0.0.0", WAYPOINT_PORT),
            "traffic_direction": "INBOUND",
            "listener_filters": self.listener_filters(),
            "filter_chains": chains,
            "filter_chain_matcher": matcher,
        })
    }

    /// The clusters the chains end in: for each Service port its TCP and HTTP clusters, static
    /// to `pod_address` on the target port; `encap` to the original destination.
    pub fn clusters(&self, pod_address: &str) -> Vec<Value> {
        let mut clusters = vec![json!({
            "name": ENCAP_CLUSTER,
            "type": "ORIGINAL_DST",
            "connect_timeout": CONNECT_TIMEOUT,
            "lb_policy": "CLUSTER_PROVIDED",
        })];
        for service in &self.services {
            for port in &service.ports {
                for subset in ["tcp", "http"] {
                    let name = vip_chain_name(subset, &service.hostname, port.port);
                    clusters.push(json!({
                        "name": name,
                        "type": "STATIC",
                        "connect_timeout": CONNECT_TIMEOUT,
                        "load_assignment": {
                            "cluster_name": name,
                            "endpoints": [{ "lb_endpoints": [{
                                "endpoint": { "address": socket_address(pod_address, port.target_port) }
                            }] }],
                        },
                    }));
                }
            }
        }
        clusters
    }
}

/// The waypoint namespace's nat table: every TCP connection from `client` to the waypoint's
/// listener, its destination kept for `original_dst`.
pub fn capture_rules(client: &str) -> String {
    format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n\
         -A PREROUTING -s {client}/32 -p tcp -j REDIRECT --to-ports {WAYPOINT_PORT}\nCOMMIT\n"
    )
}

/// `match.go` `NewAppProtocol` (`features.HTTP10` off).
fn app_protocol_matcher(tcp: &str, http: &str) -> Value {
    json!({
        "matcher_tree": {
            "input": input("application-protocol", "ApplicationProtocolInput"),
            "exact_match_map": { "map": { "'h2c'": to_chain(http), "'http/1.1'": to_chain(http) } },
        },
        "on_no_match": to_chain(tcp),
    })
}

/// `match.go` `ToChain`.
fn to_chain(name: &str) -> Value {
    json!({
        "action": {
            "name": name,
            "typed_config": { "@type": "type.googleapis.com/google.protobuf.StringValue", "value": name },
        }
    })
}

/// `match.go` `ToMatcher`.
fn on_matcher(matcher: Value) -> Value {
    json!({ "matcher": matcher })
}

/// A network matching input of `match.go` (`DestinationPort`, `DestinationIP`, ...).
fn input(name: &str, kind: &str) -> Value {
    json!({
        "name": name,
        "typed_config": {
            "@type": format!("type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.{kind}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: &str = "10.96.0.10";
    const POD: &str = "10.244.0.7";

    fn service(name: &str, app_protocol: Option<&str>) -> Value {
        let mut port =
            json!({ "name": "submission", "port": 587, "targetPort": 587, "protocol": "TCP" });
        if let Some(app_protocol) = app_protocol {
            port["appProtocol"] = json!(app_protocol);
        }
        json!({
            "metadata": { "name": name, "namespace": "mail" },
            "spec": { "ports": [port] },
        })
    }

    fn waypoint(waypoint_for: WaypointFor, app_protocol: Option<&str>) -> Waypoint {
        Waypoint::new(waypoint_for)
            .service(&service("mox", app_protocol), VIP)
            .expect("a Service")
            .workload(POD)
    }

    fn http_inspector(listener: &Value) -> Value {
        let filters = listener["listener_filters"].as_array().expect("filters");
        filters
            .iter()
            .find(|f| f["name"] == "envoy.filters.listener.http_inspector")
            .cloned()
            .expect("the HTTP inspector")
    }

    fn chain_names(listener: &Value) -> Vec<String> {
        let chains = listener["filter_chains"].as_array().expect("chains");
        chains
            .iter()
            .map(|c| c["name"].as_str().expect("a name").to_string())
            .collect()
    }

    fn vip_port_match(listener: &Value) -> Value {
        let ranges = &listener["filter_chain_matcher"]["matcher_tree"]["custom_match"]["typed_config"]
            ["range_matchers"];
        let vip = ranges
            .as_array()
            .expect("ranges")
            .iter()
            .find(|r| r["ranges"][0]["address_prefix"] == VIP)
            .expect("the VIP's range");
        vip["on_match"]["matcher"]["matcher_tree"]["exact_match_map"]["map"]["587"].clone()
    }

    #[test]
    fn a_service_waypoint_does_not_inspect_a_port_declared_tcp() {
        let listener = waypoint(WaypointFor::Service, Some("tcp")).listener();
        assert_eq!(
            http_inspector(&listener)["filter_disabled"],
            json!({ "destination_port_range": { "start": 587, "end": 588 } })
        );
        let tcp = "inbound-vip|587|tcp|mox.mail.svc.cluster.local";
        assert_eq!(vip_port_match(&listener)["action"]["name"], tcp);
        assert_eq!(chain_names(&listener), [tcp, "direct-tcp", "direct-http"]);
        // No workload range: the pod is not attached to a service waypoint.
        let ranges = &listener["filter_chain_matcher"]["matcher_tree"]["custom_match"]["typed_config"]
            ["range_matchers"];
        assert_eq!(ranges.as_array().map(Vec::len), Some(1), "{ranges}");
        assert!(listener.get("listener_filters_timeout").is_none());
        assert!(
            listener
                .get("continue_on_listener_filters_timeout")
                .is_none()
        );
    }

    #[test]
    fn a_service_waypoint_sniffs_an_undeclared_port() {
        let listener = waypoint(WaypointFor::Service, None).listener();
        assert!(http_inspector(&listener).get("filter_disabled").is_none());
        let matcher = &vip_port_match(&listener)["matcher"];
        assert_eq!(
            matcher["on_no_match"]["action"]["name"],
            "inbound-vip|587|tcp|mox.mail.svc.cluster.local"
        );
        assert_eq!(
            matcher["matcher_tree"]["exact_match_map"]["map"]["'http/1.1'"]["action"]["name"],
            "inbound-vip|587|http|mox.mail.svc.cluster.local"
        );
        assert_eq!(chain_names(&listener).len(), 4);
    }

    #[test]
    fn a_waypoint_with_workloads_inspects_every_port() {
        for waypoint_for in [WaypointFor::Workload, WaypointFor::All] {
            let waypoint = waypoint(waypoint_for, Some("tcp"));
            assert_eq!(waypoint.uninspected_ports(), Vec::<u16>::new());
            let listener = waypoint.listener();
            assert!(http_inspector(&listener).get("filter_disabled").is_none());
            let ranges = &listener["filter_chain_matcher"]["matcher_tree"]["custom_match"]["typed_config"]
                ["range_matchers"];
            let pod = ranges
                .as_array()
                .expect("ranges")
                .iter()
                .find(|r| r["ranges"][0]["address_prefix"] == POD)
                .expect("the pod's range");
            assert_eq!(
                pod["on_match"]["matcher"]["on_no_match"]["action"]["name"],
                "direct-tcp"
            );
        }
        // A workload waypoint does not take the Service: no VIP range.
        let listener = waypoint(WaypointFor::Workload, Some("tcp")).listener();
        assert!(!listener.to_string().contains(VIP), "{listener}");
    }

    #[test]
    fn a_port_is_left_uninspected_only_when_every_service_declares_it() {
        let both = Waypoint::new(WaypointFor::Service)
            .service(&service("mox", Some("tcp")), VIP)
            .and_then(|w| w.service(&service("relay", None), "10.96.0.11"))
            .expect("Services");
        assert_eq!(both.uninspected_ports(), Vec::<u16>::new());
        let declared = Waypoint::new(WaypointFor::Service)
            .service(&service("mox", Some("tcp")), VIP)
            .and_then(|w| w.service(&service("relay", Some("mysql")), "10.96.0.11"))
            .expect("Services");
        assert_eq!(declared.uninspected_ports(), [587]);
        let mixed = Waypoint::new(WaypointFor::Service)
            .service(&service("mox", Some("tcp")), VIP)
            .and_then(|w| w.service(&service("web", Some("http")), "10.96.0.11"))
            .expect("Services");
        assert_eq!(mixed.uninspected_ports(), Vec::<u16>::new());
    }

    #[test]
    fn a_tls_port_brings_the_tls_inspector_for_it_alone() {
        let mut mail = service("mox", Some("tcp"));
        mail["spec"]["ports"]
            .as_array_mut()
            .expect("ports")
            .push(json!({ "name": "submissions", "port": 465, "appProtocol": "tls" }));
        let listener = Waypoint::new(WaypointFor::Service)
            .service(&mail, VIP)
            .expect("a Service")
            .listener();
        let filters = listener["listener_filters"].as_array().expect("filters");
        assert_eq!(filters.len(), 3, "{listener}");
        assert_eq!(
            filters[2]["filter_disabled"],
            json!({ "destination_port_range": { "start": 587, "end": 588 } })
        );
        assert_eq!(
            filters[1]["filter_disabled"]["or_match"]["rules"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
    }

    /// istio/istio `istioctl/pkg/proxyconfig/testdata/config_dump.json`: the waypoint of
    /// httpbin (HTTP ports 8000 and 8100 at 10.104.171.68) with a workload attached
    /// (192.168.195.248), from an istiod that still named the VIP chains
    /// `inbound-vip|PORT||HOST-http`.
    #[test]
    fn main_internal_matches_a_real_config_dump() {
        let httpbin = json!({
            "metadata": { "name": "httpbin", "namespace": "default" },
            "spec": { "ports": [
                { "name": "http", "port": 8000, "targetPort": 8080 },
                { "name": "http-alt", "port": 8100, "targetPort": 8080 },
            ] },
        });
        let listener = Waypoint::new(WaypointFor::All)
            .service(&httpbin, "10.104.171.68")
            .expect("a Service")
            .workload("192.168.195.248")
            .listener();
        assert_eq!(
            listener["listener_filters"],
            json!([
                { "name": "envoy.filters.listener.original_dst", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst" } },
                { "name": "envoy.filters.listener.http_inspector", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector" } },
            ])
        );
        assert!(listener.get("listener_filters_timeout").is_none());
        assert_eq!(listener["traffic_direction"], "INBOUND");
        let host = "httpbin.default.svc.cluster.local";
        let vip_http = |port| vip_chain_name("http", host, port);
        assert_eq!(
            chain_names(&listener),
            [
                vip_http(8000),
                vip_http(8100),
                "direct-tcp".into(),
                "direct-http".into()
            ]
        );
        let matcher = &listener["filter_chain_matcher"];
        assert_eq!(matcher["matcher_tree"]["input"]["name"], "ip");
        let ranges = &matcher["matcher_tree"]["custom_match"]["typed_config"]["range_matchers"];
        let ports = &ranges[0]["on_match"]["matcher"]["matcher_tree"];
        assert_eq!(
            ports["input"]["typed_config"]["@type"],
            "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.DestinationPortInput"
        );
        for port in [8000, 8100] {
            assert_eq!(
                ports["exact_match_map"]["map"][port.to_string()],
                to_chain(&vip_http(port))
            );
        }
        let direct = |name: &str| {
            json!({ "action": { "name": name, "typed_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue", "value": name } } })
        };
        assert_eq!(
            ranges[1],
            json!({
                "ranges": [{ "address_prefix": "192.168.195.248", "prefix_len": 32 }],
                "on_match": { "matcher": {
                    "matcher_tree": {
                        "input": { "name": "application-protocol", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.ApplicationProtocolInput" } },
                        "exact_match_map": { "map": {
                            "'h2c'": direct("direct-http"), "'http/1.1'": direct("direct-http") } },
                    },
                    "on_no_match": direct("direct-tcp"),
                } },
            })
        );
    }

    #[test]
    fn udp_ports_get_no_chain() {
        let mut dns = service("dns", None);
        dns["spec"]["ports"] = json!([{ "name": "dns", "port": 53, "protocol": "UDP" }]);
        let waypoint = Waypoint::new(WaypointFor::Service)
            .service(&dns, VIP)
            .expect("a Service");
        assert_eq!(
            chain_names(&waypoint.listener()),
            ["direct-tcp", "direct-http"]
        );
        assert_eq!(waypoint.uninspected_ports(), Vec::<u16>::new());
    }
}
