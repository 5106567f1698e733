//! An independent model of the Envoy configuration istiod gives a sidecar, for the end-to-end
//! tests: built from the inputs Istio's control plane uses and following istio/istio's own code,
//! so that each test says which Istio situation it runs.
//!
//! Inputs: the Service ports that select the pod (with the protocol Istio derives for them,
//! `pkg/config/kube/conversion.go` `ConvertProtocol`), the PeerAuthentication mode (PERMISSIVE
//! by default) and `meshConfig.protocolDetectionTimeout` (0s, "forever", by default since 1.8).
//!
//! Modelled: the inbound side, `virtualInbound` on 15006 as
//! `pilot/pkg/networking/core/listener_inbound.go` builds it: listener filters, the filter chain
//! matches per Service port and for the passthrough, the clusters they end in; with
//! [`InboundSidecar::mtls`], the mesh certificates on the chains Istio terminates mTLS on; with
//! [`InboundSidecar::rbac`], the AuthorizationPolicies' RBAC filters where
//! `networkfilter.go` `buildCompleteNetworkFilters` puts them (before `tcp_proxy`) and before an
//! HTTP chain's router. Not modelled: Istio's own filters (`istio.metadata_exchange`,
//! `istio.stats`), xDS (the configuration is static) and SDS (certificates are files; without
//! them, chains that Istio gives a TLS transport socket forward the bytes as they are). Every
//! chain ends in Envoy's own `tcp_proxy` or `http_connection_manager`, as Istio's do.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

/// `ProxyInboundListenPort`, the port istio-iptables redirects inbound connections to.
pub const VIRTUAL_INBOUND_PORT: u16 = 15006;
/// Envoy's admin interface in Istio's bootstrap, on the pod's loopback only.
pub const ADMIN_PORT: u16 = 15000;
/// `listener_address.go` `InboundPassthroughBindIpv4`: the source of the proxy's connections to
/// the application, which istio-iptables' `ISTIO_OUTPUT` lets through.
pub const INBOUND_PASSTHROUGH_BIND: &str = "127.0.0.6";
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
pub const BLACK_HOLE_CLUSTER: &str = "BlackHoleCluster";
/// meshConfig's default `connectTimeout`.
const CONNECT_TIMEOUT: &str = "10s";

/// `pkg/config/protocol/instance.go` `Instance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    GrpcWeb,
    Http,
    HttpProxy,
    Http2,
    Https,
    Tcp,
    Tls,
    Udp,
    Mongo,
    Redis,
    MySql,
    Unsupported,
}

impl Protocol {
    /// `pkg/config/protocol/instance.go` `Parse`.
    fn parse(name: &str) -> Protocol {
        match name.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http" => Protocol::Http,
            "http_proxy" => Protocol::HttpProxy,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::MySql,
            _ => Protocol::Unsupported,
        }
    }

    /// `pilot/pkg/networking/networking.go` `ModelProtocolToListenerProtocol`.
    pub fn listener_protocol(self) -> ListenerProtocol {
        match self {
            Protocol::Http
            | Protocol::Http2
            | Protocol::HttpProxy
            | Protocol::Grpc
            | Protocol::GrpcWeb => ListenerProtocol::Http,
            Protocol::Tcp
            | Protocol::Https
            | Protocol::Tls
            | Protocol::Mongo
            | Protocol::Redis
            | Protocol::MySql => ListenerProtocol::Tcp,
            Protocol::Udp => ListenerProtocol::Unknown,
            Protocol::Unsupported => ListenerProtocol::Auto,
        }
    }
}

/// `pkg/config/kube/conversion.go` `wellKnownPorts`: TCP when the name says nothing.
const WELL_KNOWN_TCP_PORTS: [u16; 4] = [25, 53, 3306, 27017];

/// `pkg/config/kube/conversion.go` `ConvertProtocol`: Istio's protocol for a Kubernetes Service
/// port, from its number, name, `protocol` and `appProtocol`.
pub fn convert_protocol(
    port: u16,
    port_name: &str,
    kube_protocol: &str,
    app_protocol: Option<&str>,
) -> Protocol {
    if kube_protocol == "UDP" {
        return Protocol::Udp;
    }
    let mut name = port_name;
    if let Some(app_protocol) = app_protocol {
        match app_protocol {
            "kubernetes.io/h2c" => return Protocol::Http2,
            "kubernetes.io/ws" => return Protocol::Http,
            "kubernetes.io/wss" => return Protocol::Https,
            _ => name = app_protocol,
        }
    }
    if name
        .get(..8)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("grpc-web"))
    {
        return Protocol::GrpcWeb;
    }
    let prefix = name.split('-').next().unwrap_or(name);
    match Protocol::parse(prefix) {
        Protocol::Unsupported if WELL_KNOWN_TCP_PORTS.contains(&port) => Protocol::Tcp,
        protocol => protocol,
    }
}

/// `pilot/pkg/networking/networking.go` `ListenerProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProtocol {
    Unknown,
    Http,
    Tcp,
    Auto,
}

/// A port of a Kubernetes Service that selects the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub target_port: u16,
    /// `TCP` or `UDP`.
    pub protocol: String,
    pub app_protocol: Option<String>,
}

impl ServicePort {
    /// A Service exposing every container port of `pod` under the container port's own number
    /// and name (the usual shape of a chart's Service).
    pub fn for_container_ports(pod: &Value) -> Vec<ServicePort> {
        let containers = pod["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        containers
            .iter()
            .filter_map(|c| c["ports"].as_array())
            .flatten()
            .filter_map(|p| {
                let number = u16::try_from(p["containerPort"].as_u64()?).ok()?;
                Some(ServicePort {
                    name: p["name"].as_str().unwrap_or_default().to_string(),
                    port: number,
                    target_port: number,
                    protocol: p["protocol"].as_str().unwrap_or("TCP").to_string(),
                    app_protocol: None,
                })
            })
            .collect()
    }

    /// The ports of a Kubernetes Service object; a named `targetPort` is not modelled.
    pub fn of_service(service: &Value) -> Result<Vec<ServicePort>, String> {
        let ports = service
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .ok_or("Service without spec.ports")?;
        ports
            .iter()
            .map(|p| {
                let number = |v: &Value| v.as_u64().and_then(|n| u16::try_from(n).ok());
                let port = number(&p["port"]).ok_or_else(|| format!("bad port in {p}"))?;
                let target_port = match &p["targetPort"] {
                    Value::Null => port,
                    target => number(target)
                        .ok_or_else(|| format!("targetPort {target} is not modelled"))?,
                };
                Ok(ServicePort {
                    name: p["name"].as_str().unwrap_or_default().to_string(),
                    port,
                    target_port,
                    protocol: p["protocol"].as_str().unwrap_or("TCP").to_string(),
                    app_protocol: p["appProtocol"].as_str().map(str::to_string),
                })
            })
            .collect()
    }

    pub fn istio_protocol(&self) -> Protocol {
        convert_protocol(
            self.port,
            &self.name,
            &self.protocol,
            self.app_protocol.as_deref(),
        )
    }
}

/// The PeerAuthentication mode for the pod's ports (`pilot/pkg/model` `MutualTLSMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAuthentication {
    Permissive,
    Strict,
    Disable,
}

/// `filterchain_options.go` `FilterChainMatchOptions`, and where the chain sends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterChain {
    pub name: String,
    /// `None` for the passthrough chains, which match any port.
    pub destination_port: Option<u16>,
    /// `tls` or `raw_buffer`.
    pub transport_protocol: &'static str,
    pub application_protocols: &'static [&'static str],
    /// An `http_connection_manager` chain rather than a `tcp_proxy` one.
    pub http: bool,
    /// `FilterChainMatchOptions.TLS`: Istio terminates mTLS on this chain.
    pub mtls: bool,
    pub cluster: String,
}

// `listener.go`: the ALPNs of the filter chain matches (`features.HTTP10` off).
const PLAINTEXT_HTTP_ALPNS: &[&str] = &["http/1.1", "h2c"];
const MTLS_HTTP_ALPNS: &[&str] = &["istio-http/1.0", "istio-http/1.1", "istio-h2"];
const ALL_ISTIO_MTLS_ALPNS: &[&str] = &[
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];
const MTLS_TCP_WITH_MXC_ALPNS: &[&str] = &["istio-peer-exchange", "istio"];
const TLS: &str = "tls";
const RAW_BUFFER: &str = "raw_buffer";

/// One `FilterChainMatchOptions`: (application protocols, transport protocol, HTTP chain, TLS).
type MatchOption = (&'static [&'static str], &'static str, bool, bool);

/// `filterchain_options.go` `getFilterChainMatchOptions`, option tables in the same order.
fn match_options(mode: PeerAuthentication, protocol: ListenerProtocol) -> &'static [MatchOption] {
    use PeerAuthentication::{Disable, Permissive, Strict};
    match (protocol, mode) {
        // inboundStrictHTTPFilterChainMatchOptions
        (ListenerProtocol::Http, Strict) => &[(&[], TLS, true, true)],
        // inboundPermissiveHTTPFilterChainMatchWithMxcOptions
        (ListenerProtocol::Http, Permissive) => &[
            (ALL_ISTIO_MTLS_ALPNS, TLS, true, true),
            (&[], RAW_BUFFER, true, false),
        ],
        // inboundPlainTextHTTPFilterChainMatchOptions
        (ListenerProtocol::Http, Disable) => &[(&[], RAW_BUFFER, true, false)],
        // inboundStrictFilterChainMatchOptions
        (ListenerProtocol::Auto, Strict) => {
            &[(MTLS_HTTP_ALPNS, TLS, true, true), (&[], TLS, false, true)]
        }
        // inboundPermissiveFilterChainMatchWithMxcOptions
        (ListenerProtocol::Auto, Permissive) => &[
            (MTLS_HTTP_ALPNS, TLS, true, true),
            (PLAINTEXT_HTTP_ALPNS, RAW_BUFFER, true, false),
            (MTLS_TCP_WITH_MXC_ALPNS, TLS, false, true),
            (&[], RAW_BUFFER, false, false),
            (&[], TLS, false, false),
        ],
        // inboundPlainTextFilterChainMatchOptions
        (ListenerProtocol::Auto, Disable) => &[
            (PLAINTEXT_HTTP_ALPNS, RAW_BUFFER, true, false),
            (&[], RAW_BUFFER, false, false),
        ],
        // inboundStrictTCPFilterChainMatchOptions
        (_, Strict) => &[(&[], TLS, false, true)],
        // inboundPermissiveTCPFilterChainMatchWithMxcOptions
        (_, Permissive) => &[
            (ALL_ISTIO_MTLS_ALPNS, TLS, false, true),
            (&[], TLS, false, false),
            (&[], RAW_BUFFER, false, false),
        ],
        // inboundPlainTextTCPFilterChainMatchOptions
        (_, Disable) => &[(&[], RAW_BUFFER, false, false)],
    }
}

/// The inbound side of a sidecar: what istiod derives from the pod's Services, its
/// PeerAuthentication and the mesh config.
#[derive(Debug, Clone)]
pub struct InboundSidecar {
    service_ports: Vec<ServicePort>,
    peer_authentication: PeerAuthentication,
    protocol_detection_timeout: Duration,
    mtls: Option<TlsFiles>,
    rbac: RbacFilters,
}

/// The RBAC filters of the AuthorizationPolicies that select the workload, as
/// `pilot/pkg/security/authz/builder` builds them: network filters for TCP chains, HTTP filters
/// for HTTP chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RbacFilters {
    pub network: Vec<Value>,
    pub http: Vec<Value>,
}

/// A workload's mesh certificate, its key and the mesh's root, as files Envoy reads (Istio
/// hands them over by SDS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_chain: String,
    pub private_key: String,
    pub trusted_ca: String,
}

impl TlsFiles {
    /// `common_tls_context` with this identity: `tls_params` as `authn/utils/utils.go`
    /// `BuildInboundTLS` and `cluster_tls.go` `defaultUpstreamCommonTLSContext` set them (TLS 1.2
    /// to 1.3), the certificate, and the root that peers' certificates must chain to.
    pub fn common_tls_context(&self, alpn: &[&str]) -> Value {
        json!({
            "tls_params": { "tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3" },
            "alpn_protocols": alpn,
            "tls_certificates": [{
                "certificate_chain": { "filename": self.cert_chain },
                "private_key": { "filename": self.private_key },
            }],
            "validation_context": { "trusted_ca": { "filename": self.trusted_ca } },
        })
    }
}

/// `pilot/pkg/networking/util/util.go`: what the server side of mTLS offers, for TCP with
/// metadata exchange (`ALPNDownstreamWithMxc`) and for HTTP (`ALPNHttp`).
const ALPN_DOWNSTREAM_WITH_MXC: &[&str] = &["istio-peer-exchange", "h2", "http/1.1"];
const ALPN_HTTP: &[&str] = &["h2", "http/1.1"];

impl Default for InboundSidecar {
    fn default() -> Self {
        InboundSidecar::new()
    }
}

impl InboundSidecar {
    /// No Service, PERMISSIVE, `protocolDetectionTimeout: 0s` (Istio's defaults since 1.8).
    pub fn new() -> InboundSidecar {
        InboundSidecar {
            service_ports: Vec::new(),
            peer_authentication: PeerAuthentication::Permissive,
            protocol_detection_timeout: Duration::ZERO,
            mtls: None,
            rbac: RbacFilters::default(),
        }
    }

    pub fn service_ports(mut self, ports: Vec<ServicePort>) -> InboundSidecar {
        self.service_ports.extend(ports);
        self
    }

    pub fn peer_authentication(mut self, mode: PeerAuthentication) -> InboundSidecar {
        self.peer_authentication = mode;
        self
    }

    /// `meshConfig.protocolDetectionTimeout`; Istio 1.3 to 1.7 defaulted to 100ms.
    pub fn protocol_detection_timeout(mut self, timeout: Duration) -> InboundSidecar {
        self.protocol_detection_timeout = timeout;
        self
    }

    /// Terminates Istio mTLS with `identity` on the chains Istio gives a TLS transport socket.
    pub fn mtls(mut self, identity: TlsFiles) -> InboundSidecar {
        self.mtls = Some(identity);
        self
    }

    /// Enforces the AuthorizationPolicies `rbac` was built from on every chain but the
    /// blackhole (`buildInboundBlackhole` has no authorization filters).
    pub fn rbac(mut self, rbac: RbacFilters) -> InboundSidecar {
        self.rbac = rbac;
        self
    }

    /// `listener_inbound.go` `getFilterChainsByServicePort` and `buildInboundChainConfigs`: one
    /// chain config per target port (the first Service port wins a conflict), in target-port
    /// order.
    fn chain_configs(&self) -> Vec<&ServicePort> {
        let mut by_target: BTreeMap<u16, &ServicePort> = BTreeMap::new();
        for port in &self.service_ports {
            by_target.entry(port.target_port).or_insert(port);
        }
        by_target.into_values().collect()
    }

    /// The filter chains of `virtualInbound`, in Istio's order: `inboundVirtualListener` puts
    /// the blackhole chain and the passthrough chains (`buildInboundPassthroughChains`) first,
    /// then the per-port chains (`buildInboundListeners`, `inboundChainForOpts`).
    pub fn filter_chains(&self) -> Vec<FilterChain> {
        // buildInboundBlackhole: a connection to 15006 itself would loop.
        let mut chains = vec![FilterChain {
            name: "virtualInbound-blackhole".to_string(),
            destination_port: Some(VIRTUAL_INBOUND_PORT),
            transport_protocol: "",
            application_protocols: &[],
            http: false,
            mtls: false,
            cluster: BLACK_HOLE_CLUSTER.to_string(),
        }];
        // inboundChainConfig.Name: fixed names for the passthrough, bind_port for the others.
        let passthrough = match_options(self.peer_authentication, ListenerProtocol::Auto);
        chains.extend(passthrough.iter().map(|&(alpns, transport, http, mtls)| {
            FilterChain {
                name: if http {
                    "virtualInbound-catchall-http"
                } else {
                    "virtualInbound"
                }
                .to_string(),
                destination_port: None,
                transport_protocol: transport,
                application_protocols: alpns,
                http,
                mtls,
                cluster: INBOUND_PASSTHROUGH_CLUSTER.to_string(),
            }
        }));
        for port in self.chain_configs() {
            let protocol = port.istio_protocol().listener_protocol();
            let options = match_options(self.peer_authentication, protocol);
            chains.extend(
                options
                    .iter()
                    .map(|&(alpns, transport, http, mtls)| FilterChain {
                        name: format!("0.0.0.0_{}", port.target_port),
                        destination_port: Some(port.target_port),
                        transport_protocol: transport,
                        application_protocols: alpns,
                        http,
                        mtls,
                        // model.BuildInboundSubsetKey
                        cluster: format!("inbound|{}||", port.target_port),
                    }),
            );
        }
        chains
    }

    /// `listener_inbound.go` `populateListenerFilters`: `original_dst`, then the TLS inspector
    /// on the ports with a `tls` chain, then the HTTP inspector on the ports with an HTTP ALPN
    /// chain ("the HTTP inspector should be after TLS inspector"). Port 0 stands for the
    /// passthrough chains.
    fn listener_filters(chains: &[FilterChain]) -> Vec<Value> {
        let mut inspectors: BTreeMap<u16, (bool, bool)> = BTreeMap::new();
        for chain in chains {
            let needs_tls = chain.transport_protocol == TLS;
            let needs_http = chain
                .application_protocols
                .iter()
                .any(|alpn| *alpn == "http/1.1" || *alpn == "h2c");
            let entry = inspectors
                .entry(chain.destination_port.unwrap_or(0))
                .or_default();
            entry.0 |= needs_tls;
            entry.1 |= needs_http;
        }
        let mut filters = vec![json!({
            "name": "envoy.filters.listener.original_dst",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
            }
        })];
        if inspectors.values().any(|i| i.0) {
            // buildTLSInspector: opt ports out when the passthrough needs it, else opt them in.
            let default_enabled = inspectors.get(&0).is_some_and(|i| i.0);
            let ports: Vec<u16> = inspectors
                .iter()
                .filter(|&(&port, i)| port != 0 && i.0 != default_enabled)
                .map(|(&port, _)| port)
                .collect();
            let mut filter = json!({
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
                    // xds/filters TLSInspector: "Default is 64KB."
                    "initial_read_buffer_size": 512
                }
            });
            if !ports.is_empty() {
                let excluded = ports_predicate(&ports);
                filter["filter_disabled"] = if default_enabled {
                    excluded
                } else {
                    json!({ "not_match": excluded })
                };
            }
            filters.push(filter);
        }
        if inspectors.values().any(|i| i.1) {
            // buildHTTPInspector: disabled on every port (0 included) that has no HTTP chain.
            let ports: Vec<u16> = inspectors
                .iter()
                .filter(|(_, i)| !i.1)
                .map(|(&port, _)| port)
                .collect();
            let mut filter = json!({
                "name": "envoy.filters.listener.http_inspector",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
                }
            });
            if !ports.is_empty() {
                filter["filter_disabled"] = ports_predicate(&ports);
            }
            filters.push(filter);
        }
        filters
    }

    /// The `virtualInbound` listener (`buildInboundListener`).
    pub fn listener(&self) -> Value {
        let chains = self.filter_chains();
        json!({
            "name": "virtualInbound",
            "address": socket_address("0.0.0.0", VIRTUAL_INBOUND_PORT),
            "traffic_direction": "INBOUND",
            "continue_on_listener_filters_timeout": true,
            "listener_filters": InboundSidecar::listener_filters(&chains),
            // lb.push.Mesh.GetProtocolDetectionTimeout(), always written: without the field
            // Envoy applies its own 15 s default instead of "no timeout".
            "listener_filters_timeout": envoy_duration(self.protocol_detection_timeout),
            "filter_chains": chains
                .iter()
                .map(|chain| chain_config(chain, self.mtls.as_ref(), &self.rbac))
                .collect::<Vec<_>>(),
        })
    }

    /// The clusters the chains end in: `InboundPassthroughCluster`, `BlackHoleCluster` and one
    /// `inbound|PORT||` per chain config.
    pub fn clusters(&self) -> Vec<Value> {
        // cluster_builder.go buildInboundPassthroughCluster (from buildDefaultPassthroughCluster).
        let mut clusters = vec![
            original_dst_cluster(INBOUND_PASSTHROUGH_CLUSTER),
            // buildBlackHoleCluster: STATIC without endpoints.
            json!({
                "name": BLACK_HOLE_CLUSTER,
                "type": "STATIC",
                "connect_timeout": CONNECT_TIMEOUT,
                "lb_policy": "ROUND_ROBIN",
            }),
        ];
        for port in self.chain_configs() {
            // buildInboundCluster: no endpoint address, so ORIGINAL_DST, bound to 127.0.0.6.
            let mut cluster = original_dst_cluster(&format!("inbound|{}||", port.target_port));
            // cluster_builder.go maxSecondsValue: "disable cleanup for inbound clusters".
            cluster["cleanup_interval"] = json!("9223372035s");
            clusters.push(cluster);
        }
        clusters
    }
}

fn original_dst_cluster(name: &str) -> Value {
    json!({
        "name": name,
        "type": "ORIGINAL_DST",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "CLUSTER_PROVIDED",
        "upstream_bind_config": { "source_address": { "address": INBOUND_PASSTHROUGH_BIND, "port_value": 0 } },
    })
}

fn chain_config(chain: &FilterChain, identity: Option<&TlsFiles>, rbac: &RbacFilters) -> Value {
    // buildInboundBlackhole: no authorization filters.
    let no_rbac = RbacFilters::default();
    let rbac = if chain.cluster == BLACK_HOLE_CLUSTER {
        &no_rbac
    } else {
        rbac
    };
    let mut chain_match = json!({});
    if let Some(port) = chain.destination_port {
        chain_match["destination_port"] = json!(port);
    }
    if !chain.transport_protocol.is_empty() {
        chain_match["transport_protocol"] = json!(chain.transport_protocol);
    }
    if !chain.application_protocols.is_empty() {
        chain_match["application_protocols"] = json!(chain.application_protocols);
    }
    let filter = if chain.http {
        json!({
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": format!("inbound_{}", chain.name),
                "route_config": {
                    "name": chain.cluster,
                    "virtual_hosts": [{
                        "name": "inbound|http",
                        "domains": ["*"],
                        "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": chain.cluster, "timeout": "0s" } }],
                    }],
                },
                "http_filters": rbac.http.iter().cloned().chain([json!({
                    "name": "envoy.filters.http.router",
                    "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
                })]).collect::<Vec<_>>(),
            }
        })
    } else {
        json!({
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": chain.cluster,
                "cluster": chain.cluster,
            }
        })
    };
    // buildCompleteNetworkFilters: authorization, then the terminal filter; an HTTP chain's
    // authorization is among its HTTP filters (listener_builder.go buildHTTPConnectionManager).
    let network_rbac = if chain.http {
        &[][..]
    } else {
        &rbac.network[..]
    };
    let filters: Vec<Value> = network_rbac.iter().cloned().chain([filter]).collect();
    let mut config =
        json!({ "name": chain.name, "filter_chain_match": chain_match, "filters": filters });
    if let Some(identity) = identity.filter(|_| chain.mtls) {
        // filterchain_options.go ToTransportSocket: mtls.HTTP on HTTP chains, mtls.TCP on the
        // others, both from authn/utils/utils.go BuildInboundTLS.
        let alpn = if chain.http {
            ALPN_HTTP
        } else {
            ALPN_DOWNSTREAM_WITH_MXC
        };
        config["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": true,
                "common_tls_context": identity.common_tls_context(alpn),
            }
        });
    }
    config
}

/// `listenerPredicateExcludePorts`: `[port, port + 1)` ranges, or-ed when more than one.
pub fn ports_predicate(ports: &[u16]) -> Value {
    let ranges: Vec<Value> = ports
        .iter()
        .map(|&port| json!({ "destination_port_range": { "start": port, "end": u32::from(port) + 1 } }))
        .collect();
    match ranges.as_slice() {
        [one] => one.clone(),
        _ => json!({ "or_match": { "rules": ranges } }),
    }
}

pub fn socket_address(address: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": address, "port_value": port } })
}

/// A protobuf Duration in JSON: `0s`, `0.1s`.
fn envoy_duration(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

/// A static Envoy bootstrap with `listeners` and `clusters` and the admin interface on the pod's
/// 127.0.0.1:15000, as Istio's bootstrap has it.
pub fn bootstrap(node_id: &str, listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({
        "node": { "id": node_id, "cluster": "serverfirst-e2e" },
        "admin": { "address": socket_address("127.0.0.1", ADMIN_PORT) },
        "static_resources": { "listeners": listeners, "clusters": clusters },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convert_protocol_follows_istio() {
        assert_eq!(convert_protocol(25, "smtp", "TCP", None), Protocol::Tcp);
        assert_eq!(
            convert_protocol(587, "submission", "TCP", None),
            Protocol::Unsupported
        );
        assert_eq!(
            convert_protocol(80, "http-web", "TCP", None),
            Protocol::Http
        );
        assert_eq!(
            convert_protocol(8080, "grpc-web-x", "TCP", None),
            Protocol::GrpcWeb
        );
        assert_eq!(
            convert_protocol(110, "pop3", "TCP", Some("tcp")),
            Protocol::Tcp
        );
        assert_eq!(convert_protocol(53, "dns", "UDP", None), Protocol::Udp);
    }

    /// A pod behind a Service with one HTTP port 80, PERMISSIVE: the listener filters and
    /// chain matches of the `virtualInbound` in Istio's `istioctl/pkg/authz/testdata/configdump.yaml`.
    /// That dump is older than the source modelled: it has no `initial_read_buffer_size`, and its
    /// passthrough chains also match `prefix_ranges: 0.0.0.0/0`, which `listener_inbound.go` no
    /// longer writes for a sidecar.
    #[test]
    fn virtual_inbound_matches_a_real_config_dump() {
        let http = ServicePort {
            name: "http".to_string(),
            port: 80,
            target_port: 80,
            protocol: "TCP".to_string(),
            app_protocol: None,
        };
        let listener = InboundSidecar::new().service_ports(vec![http]).listener();
        let filters = &listener["listener_filters"];
        let names: Vec<&str> = filters
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "envoy.filters.listener.original_dst",
                "envoy.filters.listener.tls_inspector",
                "envoy.filters.listener.http_inspector",
            ]
        );
        assert_eq!(
            filters[1]["filter_disabled"],
            json!({"destination_port_range": {"start": 15006, "end": 15007}})
        );
        assert_eq!(
            filters[2]["filter_disabled"],
            json!({"or_match": {"rules": [
                {"destination_port_range": {"start": 80, "end": 81}},
                {"destination_port_range": {"start": 15006, "end": 15007}},
            ]}})
        );
        assert_eq!(listener["listener_filters_timeout"], "0s");
        assert_eq!(listener["continue_on_listener_filters_timeout"], true);
        let matches: Vec<(String, Value)> = listener["filter_chains"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["filter_chain_match"].clone(),
                )
            })
            .collect();
        let expected = [
            (
                "virtualInbound-blackhole",
                json!({"destination_port": 15006}),
            ),
            (
                "virtualInbound-catchall-http",
                json!({"transport_protocol": "tls", "application_protocols": ["istio-http/1.0", "istio-http/1.1", "istio-h2"]}),
            ),
            (
                "virtualInbound-catchall-http",
                json!({"transport_protocol": "raw_buffer", "application_protocols": ["http/1.1", "h2c"]}),
            ),
            (
                "virtualInbound",
                json!({"transport_protocol": "tls", "application_protocols": ["istio-peer-exchange", "istio"]}),
            ),
            (
                "virtualInbound",
                json!({"transport_protocol": "raw_buffer"}),
            ),
            ("virtualInbound", json!({"transport_protocol": "tls"})),
            (
                "0.0.0.0_80",
                json!({"destination_port": 80, "transport_protocol": "tls", "application_protocols": ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"]}),
            ),
            (
                "0.0.0.0_80",
                json!({"destination_port": 80, "transport_protocol": "raw_buffer"}),
            ),
        ];
        let expected: Vec<(String, Value)> = expected
            .into_iter()
            .map(|(n, m)| (n.to_string(), m))
            .collect();
        assert_eq!(matches, expected);
    }

    /// PERMISSIVE, a TCP Service port: mTLS is terminated on the Istio-ALPN `tls` chain only;
    /// the plain `tls` chain and the plaintext one forward the bytes as they come.
    #[test]
    fn mtls_is_terminated_where_istio_sets_tls() {
        let submission = ServicePort {
            name: "submission".to_string(),
            port: 587,
            target_port: 587,
            protocol: "TCP".to_string(),
            app_protocol: Some("tcp".to_string()),
        };
        let identity = TlsFiles {
            cert_chain: "/c".into(),
            private_key: "/k".into(),
            trusted_ca: "/r".into(),
        };
        let listener = InboundSidecar::new()
            .service_ports(vec![submission])
            .mtls(identity)
            .listener();
        let chains: Vec<&Value> = listener["filter_chains"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"] == "0.0.0.0_587")
            .collect();
        assert_eq!(chains.len(), 3);
        let tls = &chains[0]["transport_socket"]["typed_config"];
        assert_eq!(tls["require_client_certificate"], true);
        assert_eq!(
            tls["common_tls_context"]["alpn_protocols"],
            json!(["istio-peer-exchange", "h2", "http/1.1"])
        );
        assert!(chains[1].get("transport_socket").is_none());
        assert!(chains[2].get("transport_socket").is_none());
    }

    /// STRICT, a TCP Service port (`inboundStrictTCPFilterChainMatchOptions`): one chain, `tls`
    /// with any ALPN, terminating mTLS, its RBAC filter before `tcp_proxy`; the blackhole has none.
    #[test]
    fn strict_tcp_is_one_mtls_chain_with_its_rbac_filter_first() {
        let submission = ServicePort {
            name: "submission".to_string(),
            port: 587,
            target_port: 587,
            protocol: "TCP".to_string(),
            app_protocol: Some("tcp".to_string()),
        };
        let identity = TlsFiles {
            cert_chain: "/c".into(),
            private_key: "/k".into(),
            trusted_ca: "/r".into(),
        };
        let rbac_filter = json!({ "name": "envoy.filters.network.rbac" });
        let listener = InboundSidecar::new()
            .service_ports(vec![submission])
            .peer_authentication(PeerAuthentication::Strict)
            .mtls(identity)
            .rbac(RbacFilters {
                network: vec![rbac_filter.clone()],
                http: vec![json!({ "name": "envoy.filters.http.rbac" })],
            })
            .listener();
        let chains = listener["filter_chains"].as_array().unwrap();
        let submission: Vec<&Value> = chains
            .iter()
            .filter(|c| c["name"] == "0.0.0.0_587")
            .collect();
        assert_eq!(submission.len(), 1);
        assert_eq!(
            submission[0]["filter_chain_match"],
            json!({ "destination_port": 587, "transport_protocol": "tls" })
        );
        assert_eq!(
            submission[0]["transport_socket"]["typed_config"]["require_client_certificate"],
            true
        );
        let names = |chain: &Value| -> Vec<String> {
            chain["filters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            names(submission[0]),
            [
                "envoy.filters.network.rbac",
                "envoy.filters.network.tcp_proxy"
            ]
        );
        assert_eq!(names(&chains[0]), ["envoy.filters.network.tcp_proxy"]);
        // inboundStrictFilterChainMatchOptions for the passthrough: HTTP over mTLS, then TCP.
        let http = &chains[1]["filters"][0]["typed_config"]["http_filters"];
        assert_eq!(http[0]["name"], "envoy.filters.http.rbac");
        assert_eq!(names(&chains[2])[0], "envoy.filters.network.rbac");
        assert!(
            chains
                .iter()
                .all(|c| c["filter_chain_match"]["transport_protocol"] != "raw_buffer"),
            "STRICT has no plaintext chain: {listener}"
        );
    }
}
