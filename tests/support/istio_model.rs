//! An independent model of what Istio does with a pod's traffic, for the end-to-end tests: the
//! `istio-iptables` arguments a pod ends up with, which inbound ports they capture, and the nat
//! rules `istio-iptables` writes for them in REDIRECT mode.
//!
//! It deliberately does not call serverfirst's own planner: it reads the pod the way Istio does.
//! - Without an `istio-init` container, the arguments are what the sidecar injector renders from
//!   the pod's annotations (istio/istio `injection-template.yaml`): `-p 15001 -z 15006 -u 1337
//!   -m REDIRECT -i <includeOutboundIPRanges|*> -x <excludeOutboundIPRanges|""> -b
//!   <includeInboundPorts|*> -d 15090,15021,<excludeInboundPorts>,15020` plus `-o`/`-q` when the
//!   outbound port annotations are set.
//! - With an `istio-init` container already running `istio-iptables` (the pod was injected before
//!   serverfirst saw it), that container's own arguments are what gets applied. An
//!   `istio-validation` container (istio-cni: `--skip-rule-apply`) applies nothing; the CNI plugin
//!   reads the annotations, so the annotations decide again.
//! - The rules follow `tools/istio-iptables/pkg/capture/run.go` for IPv4 in REDIRECT mode, one
//!   `--dport` rule per port, in the order and form of its golden files.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use serde_json::Value;

pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
pub const EXCLUDE_INTERFACES: &str = "traffic.sidecar.istio.io/excludeInterfaces";
pub const KUBEVIRT_INTERFACES: &str = "traffic.sidecar.istio.io/kubevirtInterfaces";
pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
pub const STATUS_PORT: &str = "status.sidecar.istio.io/port";

/// Envoy's outbound listener (`-p`).
pub const PROXY_PORT: u16 = 15001;
/// Envoy's inbound listener, `virtualInbound` (`-z`).
pub const INBOUND_CAPTURE_PORT: u16 = 15006;
/// The HBONE tunnel port istio-iptables always lets through.
pub const INBOUND_TUNNEL_PORT: u16 = 15008;
/// The uid and gid the proxy runs as (`-u`, `-g`).
pub const PROXY_UID: u32 = 1337;
/// Source address of the proxy's own connections to the application.
pub const INBOUND_PASSTHROUGH_SOURCE: &str = "127.0.0.6";

/// Where a pod's istio-iptables arguments come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Rendered by the sidecar injector from the pod's annotations.
    Annotations,
    /// The arguments of the pod's own `istio-init` container.
    IstioInit,
}

/// The `istio-iptables` arguments this model understands, as strings the way the flags take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesArgs {
    pub source: Source,
    /// `-p`: Envoy's outbound listener port.
    pub proxy_port: String,
    /// `-z`: Envoy's inbound listener port.
    pub inbound_capture_port: String,
    /// `-u`: uids whose traffic is the proxy's own, comma-separated.
    pub proxy_uid: String,
    /// `-g`: gids likewise; istio-iptables uses the uids when it is not given.
    pub proxy_gid: String,
    /// `-m`: `REDIRECT` (modelled) or `TPROXY`.
    pub mode: String,
    /// `-i`: outbound CIDRs to capture, `*` for all, empty for none.
    pub include_ip_ranges: String,
    /// `-x`: outbound CIDRs never captured.
    pub exclude_ip_ranges: String,
    /// `-b`: inbound ports to capture, `*` for all, empty for none.
    pub include_inbound_ports: String,
    /// `-d`: inbound ports let through; only with `-b '*'`.
    pub exclude_inbound_ports: String,
    /// `-o`: outbound ports never captured; absent unless given.
    pub exclude_outbound_ports: Option<String>,
    /// `-q`: outbound ports always captured; absent unless given.
    pub include_outbound_ports: Option<String>,
}

/// What Istio does with `pod`: `Ok(None)` when nothing is captured at all (interception mode
/// `NONE`), an error when the pod carries something the injector would reject or this model does
/// not cover.
pub fn pod_capture(pod: &Value) -> Result<Option<IptablesArgs>, String> {
    if let Some(args) = istio_init_args(pod) {
        return IptablesArgs::parse(&args).map(Some);
    }
    IptablesArgs::from_annotations(pod)
}

/// The arguments of an init container that applies istio-iptables rules itself, if the pod has
/// one; istio-cni's validation container does not count.
pub fn istio_init_args(pod: &Value) -> Option<Vec<String>> {
    let init = pod["spec"]["initContainers"].as_array()?;
    init.iter().find_map(|container| {
        let words: Vec<String> = ["command", "args"]
            .iter()
            .filter_map(|field| container[*field].as_array())
            .flatten()
            .filter_map(|word| word.as_str().map(str::to_string))
            .collect();
        let start = words.iter().position(|w| w.ends_with("istio-iptables"))?;
        let args = words[start + 1..].to_vec();
        let skips = args
            .iter()
            .any(|a| a == "--skip-rule-apply" || a == "--run-validation");
        (!skips).then_some(args)
    })
}

/// Comma-separated list elements the way istio-iptables splits them: trimmed, empty ones dropped.
fn split(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Istio's annotation validation of a port list: each element a decimal port (`*` only where the
/// annotation allows it); an empty value is valid and means "none".
fn validate_ports(name: &str, value: &str, wildcard: bool) -> Result<(), String> {
    if value.trim().is_empty() || (wildcard && value.trim() == "*") {
        return Ok(());
    }
    for element in value.split(',') {
        let element = element.trim();
        match element.parse::<u16>() {
            Ok(port) if port > 0 => {}
            _ => return Err(format!("{name}: {element:?} in {value:?} is not a port")),
        }
    }
    Ok(())
}

/// The injector's `excludeInboundPort` template function: the status port appended to the
/// excluded list unless an element already equals it (untrimmed, as Istio compares).
fn exclude_inbound_port(status_port: &str, excluded: &str) -> String {
    let status_port = status_port.trim();
    if status_port.is_empty() || status_port == "0" {
        return excluded.to_string();
    }
    let mut out = Vec::new();
    for port in excluded.split(',') {
        if port == status_port {
            return excluded.to_string();
        }
        if !port.trim().is_empty() {
            out.push(port.trim());
        }
    }
    out.push(status_port);
    out.join(",")
}

fn ports_of(list: &str) -> Vec<u16> {
    split(list).iter().filter_map(|p| p.parse().ok()).collect()
}

/// IPv4 CIDRs of a range list; anything that does not parse is ignored, as istio-iptables does.
fn ipv4_cidrs(list: &str) -> Vec<&str> {
    split(list)
        .into_iter()
        .filter(|cidr| {
            cidr.split_once('/').is_some_and(|(addr, bits)| {
                addr.parse::<Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 32)
            })
        })
        .collect()
}

fn has_loopback(list: &str) -> bool {
    split(list)
        .iter()
        .any(|cidr| cidr.starts_with("127.") || cidr.starts_with("::1/"))
}

impl IptablesArgs {
    /// The arguments the injector renders into `istio-init` for `pod` (mesh-wide defaults),
    /// `None` for interception mode `NONE`.
    pub fn from_annotations(pod: &Value) -> Result<Option<IptablesArgs>, String> {
        let annotations = &pod["metadata"]["annotations"];
        let get = |name: &str| annotations[name].as_str();
        for unsupported in [EXCLUDE_INTERFACES, KUBEVIRT_INTERFACES] {
            if get(unsupported).is_some() {
                return Err(format!("{unsupported} is not modelled"));
            }
        }
        let mode = get(INTERCEPTION_MODE).unwrap_or("REDIRECT").to_string();
        if mode == "NONE" {
            return Ok(None);
        }
        let include = get(INCLUDE_INBOUND_PORTS).unwrap_or("*");
        validate_ports(INCLUDE_INBOUND_PORTS, include, true)?;
        let exclude = get(EXCLUDE_INBOUND_PORTS).unwrap_or("");
        validate_ports(EXCLUDE_INBOUND_PORTS, exclude, false)?;
        let status_port = get(STATUS_PORT).unwrap_or("15020");
        validate_ports(STATUS_PORT, status_port, false)?;
        let outbound = |name: &str| -> Result<Option<String>, String> {
            get(name)
                .map(|value| validate_ports(name, value, false).map(|()| value.to_string()))
                .transpose()
        };
        Ok(Some(IptablesArgs {
            source: Source::Annotations,
            proxy_port: PROXY_PORT.to_string(),
            inbound_capture_port: INBOUND_CAPTURE_PORT.to_string(),
            proxy_uid: PROXY_UID.to_string(),
            proxy_gid: PROXY_UID.to_string(),
            mode,
            include_ip_ranges: get(INCLUDE_OUTBOUND_IP_RANGES).unwrap_or("*").to_string(),
            exclude_ip_ranges: get(EXCLUDE_OUTBOUND_IP_RANGES).unwrap_or("").to_string(),
            include_inbound_ports: include.to_string(),
            exclude_inbound_ports: format!(
                "15090,15021,{}",
                exclude_inbound_port(status_port, exclude)
            ),
            exclude_outbound_ports: outbound(EXCLUDE_OUTBOUND_PORTS)?,
            include_outbound_ports: outbound(INCLUDE_OUTBOUND_PORTS)?,
        }))
    }

    /// Parses `istio-iptables` arguments (after the `istio-iptables` word). Flags this model does
    /// not cover are an error, not silently ignored.
    pub fn parse(args: &[String]) -> Result<IptablesArgs, String> {
        let mut parsed = IptablesArgs {
            source: Source::IstioInit,
            proxy_port: PROXY_PORT.to_string(),
            inbound_capture_port: INBOUND_CAPTURE_PORT.to_string(),
            proxy_uid: String::new(),
            proxy_gid: String::new(),
            mode: "REDIRECT".to_string(),
            include_ip_ranges: String::new(),
            exclude_ip_ranges: String::new(),
            include_inbound_ports: String::new(),
            exclude_inbound_ports: String::new(),
            exclude_outbound_ports: None,
            include_outbound_ports: None,
        };
        let mut words = args.iter();
        while let Some(flag) = words.next() {
            if flag.starts_with("--log_") {
                continue;
            }
            let mut value = || {
                words
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("istio-iptables {flag} without a value"))
            };
            match flag.as_str() {
                "-p" => parsed.proxy_port = value()?,
                "-z" => parsed.inbound_capture_port = value()?,
                "-u" => parsed.proxy_uid = value()?,
                "-g" => parsed.proxy_gid = value()?,
                "-m" => parsed.mode = value()?,
                "-i" => parsed.include_ip_ranges = value()?,
                "-x" => parsed.exclude_ip_ranges = value()?,
                "-b" => parsed.include_inbound_ports = value()?,
                "-d" => parsed.exclude_inbound_ports = value()?,
                "-o" => parsed.exclude_outbound_ports = Some(value()?),
                "-q" => parsed.include_outbound_ports = Some(value()?),
                other => return Err(format!("istio-iptables flag {other:?} is not modelled")),
            }
        }
        if parsed.proxy_gid.is_empty() {
            parsed.proxy_gid = parsed.proxy_uid.clone();
        }
        Ok(parsed)
    }

    /// The arguments as the injector writes them into `istio-init` (after `istio-iptables`).
    pub fn to_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            ("-p", &self.proxy_port),
            ("-z", &self.inbound_capture_port),
            ("-u", &self.proxy_uid),
            ("-m", &self.mode),
            ("-i", &self.include_ip_ranges),
            ("-x", &self.exclude_ip_ranges),
            ("-b", &self.include_inbound_ports),
            ("-d", &self.exclude_inbound_ports),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.clone()])
        .collect();
        if self.proxy_gid != self.proxy_uid {
            args.extend(["-g".to_string(), self.proxy_gid.clone()]);
        }
        for (flag, value) in [
            ("-o", &self.exclude_outbound_ports),
            ("-q", &self.include_outbound_ports),
        ] {
            if let Some(value) = value {
                args.extend([flag.to_string(), value.clone()]);
            }
        }
        args
    }

    /// Whether inbound TCP to `port` (the pod's own listening port) is redirected to the proxy:
    /// with `-b '*'` every port but the `-d` ones; with a list exactly the listed ones (`-d` is
    /// ignored); with an empty `-b` none. The tunnel port always passes.
    pub fn captured(&self, port: u16) -> bool {
        if port == INBOUND_TUNNEL_PORT {
            return false;
        }
        match self.include_inbound_ports.trim() {
            "" => false,
            "*" => !ports_of(&self.exclude_inbound_ports).contains(&port),
            list => ports_of(list).contains(&port),
        }
    }

    /// The nat table rules istio-iptables writes, as `iptables-restore` lines without the table
    /// header: `-N` for the chains, then `-A` rules in istio-iptables' order.
    pub fn nat_rules(&self) -> Result<Vec<String>, String> {
        if self.mode != "REDIRECT" {
            return Err(format!(
                "interception mode {:?} is not modelled (REDIRECT only)",
                self.mode
            ));
        }
        if self.exclude_ip_ranges.trim() == "*" {
            return Err("-x '*' is invalid for istio-iptables".to_string());
        }
        let tunnel = INBOUND_TUNNEL_PORT;
        let mut rules: Vec<String> = ["ISTIO_INBOUND", "ISTIO_REDIRECT"]
            .iter()
            .chain(&["ISTIO_IN_REDIRECT", "ISTIO_OUTPUT"])
            .map(|chain| format!("-N {chain}"))
            .collect();
        rules.push(format!(
            "-A ISTIO_INBOUND -p tcp --dport {tunnel} -j RETURN"
        ));
        rules.push(format!(
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            self.proxy_port
        ));
        rules.push(format!(
            "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            self.inbound_capture_port
        ));

        let include = self.include_inbound_ports.trim();
        if !include.is_empty() {
            rules.push("-A PREROUTING -p tcp -j ISTIO_INBOUND".to_string());
            if include == "*" {
                for port in split(&self.exclude_inbound_ports) {
                    rules.push(format!("-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN"));
                }
                rules.push("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT".to_string());
            } else {
                for port in split(include) {
                    rules.push(format!(
                        "-A ISTIO_INBOUND -p tcp --dport {port} -j ISTIO_IN_REDIRECT"
                    ));
                }
            }
        }

        rules.push("-A OUTPUT -j ISTIO_OUTPUT".to_string());
        for port in split(self.exclude_outbound_ports.as_deref().unwrap_or("")) {
            for protocol in ["tcp", "udp"] {
                rules.push(format!(
                    "-A ISTIO_OUTPUT -p {protocol} --dport {port} -j RETURN"
                ));
            }
        }
        rules.push(format!(
            "-A ISTIO_OUTPUT -o lo -s {INBOUND_PASSTHROUGH_SOURCE}/32 -j RETURN"
        ));
        let loopback_included = has_loopback(&self.include_ip_ranges);
        for (owner, ids) in [("uid", &self.proxy_uid), ("gid", &self.proxy_gid)] {
            for id in split(ids) {
                rules.push(format!(
                    "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport {tunnel} \
                     -m owner --{owner}-owner {id} -j ISTIO_IN_REDIRECT"
                ));
                if !loopback_included {
                    rules.push(format!(
                        "-A ISTIO_OUTPUT -o lo -m owner ! --{owner}-owner {id} -j RETURN"
                    ));
                }
                rules.push(format!(
                    "-A ISTIO_OUTPUT -m owner --{owner}-owner {id} -j RETURN"
                ));
            }
        }
        rules.push("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN".to_string());
        for cidr in ipv4_cidrs(&self.exclude_ip_ranges) {
            rules.push(format!("-A ISTIO_OUTPUT -d {cidr} -j RETURN"));
        }
        for port in split(self.include_outbound_ports.as_deref().unwrap_or("")) {
            rules.push(format!(
                "-A ISTIO_OUTPUT -p tcp --dport {port} -j ISTIO_REDIRECT"
            ));
        }
        if self.include_ip_ranges.trim() == "*" {
            rules.push("-A ISTIO_OUTPUT -j ISTIO_REDIRECT".to_string());
        } else {
            for cidr in ipv4_cidrs(&self.include_ip_ranges) {
                rules.push(format!("-A ISTIO_OUTPUT -d {cidr} -j ISTIO_REDIRECT"));
            }
        }
        Ok(rules)
    }

    /// The whole nat table as `iptables-restore` input.
    pub fn restore_input(&self) -> Result<String, String> {
        let mut text = String::from("*nat\n");
        for rule in self.nat_rules()? {
            text.push_str(&rule);
            text.push('\n');
        }
        text.push_str("COMMIT\n");
        Ok(text)
    }
}

/// `iptables-restore` input for a pod nothing is captured for: an empty nat table.
pub const NO_CAPTURE: &str = "*nat\nCOMMIT\n";
