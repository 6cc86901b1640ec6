//! Flow filters in Hubble's vocabulary.
//!
//! - [`FlowFilterSet`]: whitelist and blacklist [`FlowFilter`]s compiled for
//!   matching (CIDRs parsed, selectors parsed, names lowercased). A flow passes
//!   when it matches any whitelist filter (or there is none) and no blacklist
//!   filter; within a filter fields AND and the values of one field OR.
//! - [`FilterBuilder`] and [`FilterFlag`]: `hubble observe`'s flags
//!   (`--namespace`, `--from-pod`, `--not --verdict FORWARDED`, ...) turned
//!   into wire filters.
//! - [`parse_expression`]: the explorer's `/` filter, the same vocabulary as
//!   `name:value` terms.
//!
//! Matching extends the wire's documented forms in one way: `*` is a wildcard
//! in namespaces, pod names, workloads and services too (Kubernetes names
//! cannot contain it). The bare words of [`parse_expression`] rely on that.

use std::net::IpAddr;

use crate::names::{ip_from_bytes, parse_tcp_flag, parse_verdict};
use crate::v1::layer7::Record;
use crate::v1::{Endpoint, Flow, FlowFilter, Protocol, TrafficDirection};

/// A filter that cannot be compiled or built. `field` names where the value
/// came from: a flag (`--port`), an expression term (`port`) or a wire field
/// (`whitelist[0].source_port`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("{field}: \"{value}\" is not a port number")]
    Port { field: String, value: String },
    #[error("{field}: invalid address or CIDR \"{value}\"")]
    Ip { field: String, value: String },
    #[error(
        "{field}: unknown verdict \"{value}\" (expected FORWARDED, DROPPED, ERROR, AUDIT, REDIRECTED, TRACED, TRANSLATED)"
    )]
    Verdict { field: String, value: String },
    #[error(
        "{field}: unknown protocol \"{value}\" (expected tcp, udp, icmp, icmpv4, icmpv6, sctp, dns, http)"
    )]
    Protocol { field: String, value: String },
    #[error(
        "{field}: \"{value}\" is not an HTTP status (expected a code like 200, 5+ for any 5xx or 40+ for 400-409)"
    )]
    HttpStatus { field: String, value: String },
    #[error("{field}: unknown traffic direction \"{value}\" (expected ingress or egress)")]
    TrafficDirection { field: String, value: String },
    #[error(
        "{field}: \"{value}\" is not a list of TCP flags (expected FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, comma-separated)"
    )]
    TcpFlags { field: String, value: String },
    #[error(
        "{field}: invalid label selector \"{value}\" (expected key=value, key!=value, key or !key, comma-separated)"
    )]
    Label { field: String, value: String },
    #[error("{field}: \"{value}\" is not true or false")]
    Reply { field: String, value: String },
    #[error("{field}: invalid value \"{value}\" (expected {expected})")]
    Invalid {
        field: String,
        value: String,
        expected: &'static str,
    },
    #[error("{field}: empty value")]
    Empty { field: String },
    #[error("unknown filter \"{0}\"")]
    UnknownFilter(String),
    #[error("filter expression: unterminated quote in {0}")]
    UnterminatedQuote(String),
    #[error("filter expression: \"{0}:\" has no value")]
    MissingValue(String),
    #[error("filter expression: \"!\" must be followed by a term")]
    DanglingNot,
    #[error("filter expression: too many words to search for (at most {MAX_WORDS})")]
    TooManyWords,
}

// ------------------------------------------------------------------ matching

/// Whitelist and blacklist filters compiled for fast matching.
#[derive(Debug, Clone, Default)]
pub struct FlowFilterSet {
    whitelist: Vec<Compiled>,
    blacklist: Vec<Compiled>,
}

impl FlowFilterSet {
    /// Compiles wire filters; a bad value is an error naming the list, the
    /// filter's index and the field (`whitelist[1].source_ip: ...`).
    pub fn new(whitelist: &[FlowFilter], blacklist: &[FlowFilter]) -> Result<Self, FilterError> {
        let compile_list = |list: &str, filters: &[FlowFilter]| {
            filters
                .iter()
                .enumerate()
                .map(|(index, filter)| Compiled::new(filter, list, index))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            whitelist: compile_list("whitelist", whitelist)?,
            blacklist: compile_list("blacklist", blacklist)?,
        })
    }

    /// Whether the flow passes: some whitelist filter (or an empty whitelist)
    /// matches and no blacklist filter does.
    pub fn matches(&self, flow: &Flow) -> bool {
        (self.whitelist.is_empty() || self.whitelist.iter().any(|f| f.matches(flow)))
            && !self.blacklist.iter().any(|f| f.matches(flow))
    }

    /// True when every flow passes.
    pub fn is_empty(&self) -> bool {
        self.whitelist.is_empty() && self.blacklist.is_empty()
    }
}

/// One [`FlowFilter`], parsed. An empty list means "any".
#[derive(Debug, Clone)]
struct Compiled {
    source: EndpointMatch,
    destination: EndpointMatch,
    verdicts: Vec<i32>,
    drop_reasons: Vec<String>,
    protocols: Vec<ProtocolMatch>,
    dns_queries: Vec<Glob>,
    http_statuses: Vec<(u32, u32)>,
    http_methods: Vec<String>,
    http_paths: Vec<String>,
    node_names: Vec<Glob>,
    traffic_directions: Vec<i32>,
    replies: Vec<bool>,
    tcp_flags: Vec<u32>,
}

#[derive(Debug, Clone)]
struct EndpointMatch {
    ips: Vec<IpNet>,
    pods: Vec<PodPattern>,
    labels: Vec<Selector>,
    workloads: Vec<NamePattern>,
    services: Vec<NamePattern>,
    ports: Vec<u32>,
}

fn parse_all<T>(
    values: &[String],
    field: &str,
    parse: fn(&str, &str) -> Result<T, FilterError>,
) -> Result<Vec<T>, FilterError> {
    values.iter().map(|value| parse(field, value)).collect()
}

fn any<T>(list: &[T], test: impl Fn(&T) -> bool) -> bool {
    list.is_empty() || list.iter().any(test)
}

impl Compiled {
    fn new(filter: &FlowFilter, list: &str, index: usize) -> Result<Self, FilterError> {
        let field = |name: &str| format!("{list}[{index}].{name}");
        let endpoint = |side: &str,
                        ips: &[String],
                        pods: &[String],
                        labels: &[String],
                        workloads: &[String],
                        services: &[String],
                        ports: &[u32]| {
            Ok::<_, FilterError>(EndpointMatch {
                ips: parse_all(ips, &field(&format!("{side}_ip")), IpNet::parse)?,
                pods: parse_all(pods, &field(&format!("{side}_pod")), PodPattern::parse)?,
                labels: parse_all(labels, &field(&format!("{side}_label")), Selector::parse)?,
                workloads: parse_all(
                    workloads,
                    &field(&format!("{side}_workload")),
                    NamePattern::parse,
                )?,
                services: parse_all(
                    services,
                    &field(&format!("{side}_service")),
                    NamePattern::parse,
                )?,
                ports: ports.to_vec(),
            })
        };
        let f = filter;
        Ok(Self {
            source: endpoint(
                "source",
                &f.source_ip,
                &f.source_pod,
                &f.source_label,
                &f.source_workload,
                &f.source_service,
                &f.source_port,
            )?,
            destination: endpoint(
                "destination",
                &f.destination_ip,
                &f.destination_pod,
                &f.destination_label,
                &f.destination_workload,
                &f.destination_service,
                &f.destination_port,
            )?,
            verdicts: f.verdict.clone(),
            drop_reasons: parse_all(&f.drop_reason, &field("drop_reason"), |field, value| {
                non_empty(field, value).map(str::to_ascii_lowercase)
            })?,
            protocols: parse_all(&f.protocol, &field("protocol"), ProtocolMatch::parse)?,
            dns_queries: parse_all(&f.dns_query, &field("dns_query"), |field, value| {
                let value = non_empty(field, value)?;
                Ok(Glob::new(value.strip_suffix('.').unwrap_or(value)))
            })?,
            http_statuses: parse_all(&f.http_status, &field("http_status"), parse_http_status)?,
            http_methods: parse_all(&f.http_method, &field("http_method"), |field, value| {
                non_empty(field, value).map(str::to_ascii_uppercase)
            })?,
            http_paths: parse_all(&f.http_path, &field("http_path"), |field, value| {
                non_empty(field, value).map(str::to_string)
            })?,
            node_names: parse_all(&f.node_name, &field("node_name"), |field, value| {
                non_empty(field, value).map(Glob::new)
            })?,
            traffic_directions: f.traffic_direction.clone(),
            replies: f.reply.clone(),
            tcp_flags: parse_all(&f.tcp_flags, &field("tcp_flags"), parse_tcp_flags)?,
        })
    }

    fn matches(&self, flow: &Flow) -> bool {
        let empty = Endpoint::default();
        let l4 = flow.l4.unwrap_or_default();
        let record = flow.l7.as_ref().and_then(|l7| l7.record.as_ref());
        self.source.matches(flow.source.as_ref().unwrap_or(&empty))
            && self
                .destination
                .matches(flow.destination.as_ref().unwrap_or(&empty))
            && any(&self.verdicts, |v| *v == flow.verdict)
            && any(&self.drop_reasons, |reason| {
                flow.drop_reason.eq_ignore_ascii_case(reason)
                    || contains_ignore_case(&flow.policy_reason, reason)
            })
            && any(&self.protocols, |p| p.matches(l4.protocol, record))
            && any(&self.dns_queries, |glob| match record {
                Some(Record::Dns(dns)) => {
                    glob.matches(dns.query.strip_suffix('.').unwrap_or(&dns.query))
                }
                _ => false,
            })
            && any(&self.http_statuses, |(low, high)| match record {
                Some(Record::Http(http)) => http.code != 0 && (*low..=*high).contains(&http.code),
                _ => false,
            })
            && any(&self.http_methods, |method| match record {
                Some(Record::Http(http)) => http.method.eq_ignore_ascii_case(method),
                _ => false,
            })
            && any(&self.http_paths, |path| match record {
                Some(Record::Http(http)) => http.url.starts_with(path.as_str()),
                _ => false,
            })
            && any(&self.node_names, |glob| glob.matches(&flow.node_name))
            && any(&self.traffic_directions, |d| *d == flow.traffic_direction)
            && any(&self.replies, |reply| *reply == flow.is_reply)
            && any(&self.tcp_flags, |mask| l4.tcp_flags & mask == *mask)
    }
}

impl EndpointMatch {
    fn matches(&self, ep: &Endpoint) -> bool {
        let ip = ip_from_bytes(&ep.ip).map(|ip| ip.to_canonical());
        let workload = ep.workload.as_ref().map_or("", |w| w.name.as_str());
        // A service may arrive qualified ("ns/name"); otherwise it lives in
        // the endpoint's namespace.
        let (service_ns, service) = ep
            .service
            .split_once('/')
            .unwrap_or((ep.namespace.as_str(), ep.service.as_str()));
        any(&self.ips, |net| ip.is_some_and(|ip| net.contains(ip)))
            && any(&self.pods, |pod| pod.matches(&ep.namespace, &ep.pod_name))
            && any(&self.labels, |selector| selector.matches(&ep.labels))
            && any(&self.workloads, |w| w.matches(&ep.namespace, workload))
            && any(&self.services, |s| s.matches(service_ns, service))
            && any(&self.ports, |port| *port == ep.port)
    }
}

fn non_empty<'a>(field: &str, value: &'a str) -> Result<&'a str, FilterError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(FilterError::Empty {
            field: field.to_string(),
        });
    }
    Ok(value)
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len().max(1))
        .any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}

/// A case-insensitive pattern where `*` matches any run of characters.
#[derive(Debug, Clone)]
struct Glob(Vec<u8>);

impl Glob {
    fn new(pattern: &str) -> Self {
        Self(pattern.to_ascii_lowercase().into_bytes())
    }

    fn matches(&self, text: &str) -> bool {
        let (pattern, text) = (self.0.as_slice(), text.as_bytes());
        let (mut p, mut t) = (0, 0);
        // Where the last `*` was and the text position it currently covers up
        // to; on a mismatch the star swallows one more character.
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            if pattern.get(p) == Some(&b'*') {
                star = Some((p, t));
                p += 1;
            } else if pattern.get(p) == Some(&text[t].to_ascii_lowercase()) {
                p += 1;
                t += 1;
            } else if let Some((star_p, star_t)) = star {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            } else {
                return false;
            }
        }
        pattern[p..].iter().all(|c| *c == b'*')
    }
}

/// `ns/prefix`, `ns/` or `prefix`.
#[derive(Debug, Clone)]
struct PodPattern {
    namespace: Option<Glob>,
    name: Option<Glob>,
}

impl PodPattern {
    fn parse(field: &str, value: &str) -> Result<Self, FilterError> {
        let value = non_empty(field, value)?;
        let (namespace, prefix) = match value.split_once('/') {
            Some((ns, prefix)) => (Some(ns), prefix),
            None => (None, value),
        };
        if namespace.is_some_and(str::is_empty) || prefix.contains('/') {
            return Err(FilterError::Invalid {
                field: field.to_string(),
                value: value.to_string(),
                expected: "namespace/pod-prefix, namespace/ or pod-prefix",
            });
        }
        Ok(Self {
            namespace: namespace.map(Glob::new),
            name: (!prefix.is_empty()).then(|| Glob::new(&format!("{prefix}*"))),
        })
    }

    fn matches(&self, namespace: &str, pod: &str) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| ns.matches(namespace))
            && self
                .name
                .as_ref()
                .is_none_or(|name| !pod.is_empty() && name.matches(pod))
    }
}

/// `ns/name` or `name`, for workloads and services.
#[derive(Debug, Clone)]
struct NamePattern {
    namespace: Option<Glob>,
    name: Glob,
}

impl NamePattern {
    fn parse(field: &str, value: &str) -> Result<Self, FilterError> {
        let value = non_empty(field, value)?;
        let (namespace, name) = match value.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, value),
        };
        if namespace.is_some_and(str::is_empty) || name.is_empty() || name.contains('/') {
            return Err(FilterError::Invalid {
                field: field.to_string(),
                value: value.to_string(),
                expected: "namespace/name or name",
            });
        }
        Ok(Self {
            namespace: namespace.map(Glob::new),
            name: Glob::new(name),
        })
    }

    fn matches(&self, namespace: &str, name: &str) -> bool {
        !name.is_empty()
            && self.name.matches(name)
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| ns.matches(namespace))
    }
}

/// An address (a /32 or /128) or a CIDR.
#[derive(Debug, Clone, Copy)]
struct IpNet {
    network: IpAddr,
    prefix: u32,
}

impl IpNet {
    fn parse(field: &str, value: &str) -> Result<Self, FilterError> {
        let error = || FilterError::Ip {
            field: field.to_string(),
            value: value.to_string(),
        };
        let text = value.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network = address
            .parse::<IpAddr>()
            .map_err(|_| error())?
            .to_canonical();
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u32>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(error)?,
        };
        Ok(Self { network, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let differing = u32::from(net) ^ u32::from(ip);
                differing.checked_shr(32 - self.prefix).unwrap_or(0) == 0
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let differing = u128::from(net) ^ u128::from(ip);
                differing.checked_shr(128 - self.prefix).unwrap_or(0) == 0
            }
            _ => false,
        }
    }
}

/// Kubernetes-style label selector; all requirements must hold.
#[derive(Debug, Clone)]
struct Selector(Vec<Requirement>);

#[derive(Debug, Clone)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

/// Hubble writes label sources in front of keys (`k8s:app=x`, `any:app`);
/// endpoints carry plain keys.
fn label_key(key: &str) -> &str {
    let key = key.trim();
    key.strip_prefix("k8s:")
        .or_else(|| key.strip_prefix("any:"))
        .unwrap_or(key)
}

fn label_value<'a>(labels: &'a [String], key: &str) -> Option<&'a str> {
    labels.iter().find_map(|label| {
        let (k, v) = label.split_once('=').unwrap_or((label, ""));
        (label_key(k) == key).then_some(v)
    })
}

impl Selector {
    fn parse(field: &str, value: &str) -> Result<Self, FilterError> {
        let error = || FilterError::Label {
            field: field.to_string(),
            value: value.to_string(),
        };
        non_empty(field, value)?;
        value
            .split(',')
            .map(|term| {
                let term = term.trim();
                let requirement = if let Some((k, v)) = term.split_once("!=") {
                    Requirement::NotEquals(label_key(k).to_string(), v.trim().to_string())
                } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('='))
                {
                    Requirement::Equals(label_key(k).to_string(), v.trim().to_string())
                } else if let Some(k) = term.strip_prefix('!') {
                    Requirement::Absent(label_key(k).to_string())
                } else {
                    Requirement::Exists(label_key(term).to_string())
                };
                let (Requirement::Equals(key, _)
                | Requirement::NotEquals(key, _)
                | Requirement::Exists(key)
                | Requirement::Absent(key)) = &requirement;
                if key.is_empty() || key.contains(['=', '!']) {
                    return Err(error());
                }
                Ok(requirement)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn matches(&self, labels: &[String]) -> bool {
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => label_value(labels, k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label_value(labels, k) != Some(v.as_str()),
            Requirement::Exists(k) => label_value(labels, k).is_some(),
            Requirement::Absent(k) => label_value(labels, k).is_none(),
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum ProtocolMatch {
    L4(Protocol),
    AnyIcmp,
    Dns,
    Http,
}

impl ProtocolMatch {
    fn parse(field: &str, value: &str) -> Result<Self, FilterError> {
        Ok(match value.trim().to_ascii_lowercase().as_str() {
            "tcp" => Self::L4(Protocol::Tcp),
            "udp" => Self::L4(Protocol::Udp),
            "icmp" => Self::AnyIcmp,
            "icmpv4" => Self::L4(Protocol::Icmpv4),
            "icmpv6" => Self::L4(Protocol::Icmpv6),
            "sctp" => Self::L4(Protocol::Sctp),
            "dns" => Self::Dns,
            "http" => Self::Http,
            _ => {
                return Err(FilterError::Protocol {
                    field: field.to_string(),
                    value: value.to_string(),
                });
            }
        })
    }

    fn matches(self, protocol: i32, record: Option<&Record>) -> bool {
        match self {
            Self::L4(p) => protocol == p as i32,
            Self::AnyIcmp => {
                protocol == Protocol::Icmpv4 as i32 || protocol == Protocol::Icmpv6 as i32
            }
            Self::Dns => matches!(record, Some(Record::Dns(_))),
            Self::Http => matches!(record, Some(Record::Http(_))),
        }
    }
}

/// `200` is one code; `5+` is 500-599 and `40+` is 400-409: the digits
/// before `+` fix the leading digits of the code.
fn parse_http_status(field: &str, value: &str) -> Result<(u32, u32), FilterError> {
    let error = || FilterError::HttpStatus {
        field: field.to_string(),
        value: value.to_string(),
    };
    let text = value.trim();
    let (digits, open) = match text.strip_suffix('+') {
        Some(digits) => (digits, true),
        None => (text, false),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return Err(error());
    }
    let code: u32 = digits.parse().map_err(|_| error())?;
    match (open, digits.len()) {
        (false, 3) if (100..=599).contains(&code) => Ok((code, code)),
        (true, len @ 1..=2) => {
            let scale = 10u32.pow(3 - len as u32);
            let low = code * scale;
            if !(100..=599).contains(&low) {
                return Err(error());
            }
            Ok((low, low + scale - 1))
        }
        _ => Err(error()),
    }
}

/// `SYN` or `SYN,ACK` into a bit mask.
fn parse_tcp_flags(field: &str, value: &str) -> Result<u32, FilterError> {
    let error = || FilterError::TcpFlags {
        field: field.to_string(),
        value: value.to_string(),
    };
    value.split(',').try_fold(0u32, |mask, name| {
        parse_tcp_flag(name.trim())
            .map(|bit| mask | bit)
            .ok_or_else(error)
    })
}

// ------------------------------------------------------------------ flags

/// A `hubble observe`-style filter flag. Either-side flags (`Namespace`,
/// `Pod`, `Label`, `Ip`, `Port`, `Service`, `Workload`) match the source or
/// the destination; `From*` only the source, `To*` only the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterFlag {
    Namespace,
    FromNamespace,
    ToNamespace,
    Pod,
    FromPod,
    ToPod,
    Label,
    FromLabel,
    ToLabel,
    Ip,
    FromIp,
    ToIp,
    Port,
    FromPort,
    ToPort,
    Service,
    FromService,
    ToService,
    Workload,
    FromWorkload,
    ToWorkload,
    Verdict,
    DropReason,
    Protocol,
    DnsQuery,
    HttpStatus,
    HttpMethod,
    HttpPath,
    NodeName,
    TrafficDirection,
    Reply,
    TcpFlags,
}

/// What a flag constrains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Namespace,
    Pod,
    Label,
    Ip,
    Port,
    Service,
    Workload,
    Verdict,
    DropReason,
    Protocol,
    DnsQuery,
    HttpStatus,
    HttpMethod,
    HttpPath,
    NodeName,
    TrafficDirection,
    Reply,
    TcpFlags,
}

/// Which endpoint a flag constrains; `Flow` for flow-wide fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Either,
    From,
    To,
    Flow,
}

impl FilterFlag {
    /// Every flag, in help order.
    pub const ALL: &[FilterFlag] = &[
        Self::Namespace,
        Self::FromNamespace,
        Self::ToNamespace,
        Self::Pod,
        Self::FromPod,
        Self::ToPod,
        Self::Label,
        Self::FromLabel,
        Self::ToLabel,
        Self::Ip,
        Self::FromIp,
        Self::ToIp,
        Self::Port,
        Self::FromPort,
        Self::ToPort,
        Self::Service,
        Self::FromService,
        Self::ToService,
        Self::Workload,
        Self::FromWorkload,
        Self::ToWorkload,
        Self::Verdict,
        Self::DropReason,
        Self::Protocol,
        Self::DnsQuery,
        Self::HttpStatus,
        Self::HttpMethod,
        Self::HttpPath,
        Self::NodeName,
        Self::TrafficDirection,
        Self::Reply,
        Self::TcpFlags,
    ];

    /// The flag's name without dashes (`from-namespace`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Namespace => "namespace",
            Self::FromNamespace => "from-namespace",
            Self::ToNamespace => "to-namespace",
            Self::Pod => "pod",
            Self::FromPod => "from-pod",
            Self::ToPod => "to-pod",
            Self::Label => "label",
            Self::FromLabel => "from-label",
            Self::ToLabel => "to-label",
            Self::Ip => "ip",
            Self::FromIp => "from-ip",
            Self::ToIp => "to-ip",
            Self::Port => "port",
            Self::FromPort => "from-port",
            Self::ToPort => "to-port",
            Self::Service => "service",
            Self::FromService => "from-service",
            Self::ToService => "to-service",
            Self::Workload => "workload",
            Self::FromWorkload => "from-workload",
            Self::ToWorkload => "to-workload",
            Self::Verdict => "verdict",
            Self::DropReason => "drop-reason",
            Self::Protocol => "protocol",
            Self::DnsQuery => "dns-query",
            Self::HttpStatus => "http-status",
            Self::HttpMethod => "http-method",
            Self::HttpPath => "http-path",
            Self::NodeName => "node-name",
            Self::TrafficDirection => "traffic-direction",
            Self::Reply => "reply",
            Self::TcpFlags => "tcp-flags",
        }
    }

    /// A flag by name or alias, case-insensitive, with or without `--`
    /// (`ns`, `from-ns`, `to-ns`, `drop-reason-desc`, `dns`, `node`,
    /// `is-reply`, `direction` are aliases).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim_start_matches("--").to_ascii_lowercase();
        let alias = match name.as_str() {
            "ns" => Some(Self::Namespace),
            "from-ns" => Some(Self::FromNamespace),
            "to-ns" => Some(Self::ToNamespace),
            "drop-reason-desc" => Some(Self::DropReason),
            "dns" => Some(Self::DnsQuery),
            "node" => Some(Self::NodeName),
            "is-reply" => Some(Self::Reply),
            "direction" => Some(Self::TrafficDirection),
            _ => None,
        };
        alias.or_else(|| Self::ALL.iter().copied().find(|flag| flag.name() == name))
    }

    fn parts(self) -> (Field, Scope) {
        use Scope::{Either, Flow, From, To};
        match self {
            Self::Namespace => (Field::Namespace, Either),
            Self::FromNamespace => (Field::Namespace, From),
            Self::ToNamespace => (Field::Namespace, To),
            Self::Pod => (Field::Pod, Either),
            Self::FromPod => (Field::Pod, From),
            Self::ToPod => (Field::Pod, To),
            Self::Label => (Field::Label, Either),
            Self::FromLabel => (Field::Label, From),
            Self::ToLabel => (Field::Label, To),
            Self::Ip => (Field::Ip, Either),
            Self::FromIp => (Field::Ip, From),
            Self::ToIp => (Field::Ip, To),
            Self::Port => (Field::Port, Either),
            Self::FromPort => (Field::Port, From),
            Self::ToPort => (Field::Port, To),
            Self::Service => (Field::Service, Either),
            Self::FromService => (Field::Service, From),
            Self::ToService => (Field::Service, To),
            Self::Workload => (Field::Workload, Either),
            Self::FromWorkload => (Field::Workload, From),
            Self::ToWorkload => (Field::Workload, To),
            Self::Verdict => (Field::Verdict, Flow),
            Self::DropReason => (Field::DropReason, Flow),
            Self::Protocol => (Field::Protocol, Flow),
            Self::DnsQuery => (Field::DnsQuery, Flow),
            Self::HttpStatus => (Field::HttpStatus, Flow),
            Self::HttpMethod => (Field::HttpMethod, Flow),
            Self::HttpPath => (Field::HttpPath, Flow),
            Self::NodeName => (Field::NodeName, Flow),
            Self::TrafficDirection => (Field::TrafficDirection, Flow),
            Self::Reply => (Field::Reply, Flow),
            Self::TcpFlags => (Field::TcpFlags, Flow),
        }
    }
}

/// A flag's value, checked and in wire form.
#[derive(Debug, Clone)]
enum Value {
    Text(String),
    Port(u32),
    Enum(i32),
    Bool(bool),
}

fn normalize(field: Field, label: &str, value: &str) -> Result<Value, FilterError> {
    let text = non_empty(label, value)?;
    let checked = |check: fn(&str, &str) -> Result<(), FilterError>| {
        check(label, text).map(|()| Value::Text(text.to_string()))
    };
    match field {
        Field::Namespace => {
            if text.contains('/') {
                return Err(FilterError::Invalid {
                    field: label.to_string(),
                    value: value.to_string(),
                    expected: "a namespace name",
                });
            }
            Ok(Value::Text(text.to_string()))
        }
        Field::Pod => checked(|l, v| PodPattern::parse(l, v).map(drop)),
        Field::Label => checked(|l, v| Selector::parse(l, v).map(drop)),
        Field::Ip => checked(|l, v| IpNet::parse(l, v).map(drop)),
        Field::Service | Field::Workload => checked(|l, v| NamePattern::parse(l, v).map(drop)),
        Field::Protocol => {
            ProtocolMatch::parse(label, text).map(|_| Value::Text(text.to_ascii_lowercase()))
        }
        Field::HttpStatus => checked(|l, v| parse_http_status(l, v).map(drop)),
        Field::TcpFlags => {
            let mask = parse_tcp_flags(label, text)?;
            Ok(Value::Text(crate::names::tcp_flag_names(mask).join(",")))
        }
        Field::HttpMethod => Ok(Value::Text(text.to_ascii_uppercase())),
        Field::DropReason | Field::DnsQuery | Field::HttpPath | Field::NodeName => {
            Ok(Value::Text(text.to_string()))
        }
        Field::Port => text
            .parse::<u16>()
            .map(|port| Value::Port(u32::from(port)))
            .map_err(|_| FilterError::Port {
                field: label.to_string(),
                value: value.to_string(),
            }),
        Field::Verdict => parse_verdict(text)
            .map(|v| Value::Enum(v as i32))
            .ok_or_else(|| FilterError::Verdict {
                field: label.to_string(),
                value: value.to_string(),
            }),
        Field::TrafficDirection => match text.to_ascii_lowercase().as_str() {
            "ingress" => Ok(Value::Enum(TrafficDirection::Ingress as i32)),
            "egress" => Ok(Value::Enum(TrafficDirection::Egress as i32)),
            _ => Err(FilterError::TrafficDirection {
                field: label.to_string(),
                value: value.to_string(),
            }),
        },
        Field::Reply => match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(FilterError::Reply {
                field: label.to_string(),
                value: value.to_string(),
            }),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, value: T) {
    if !list.contains(&value) {
        list.push(value);
    }
}

/// One of the builder's two filters while flags are still arriving.
/// Namespaces and pods are kept apart until [`Draft::finish`] so that a
/// namespace and a pod on the same side AND instead of OR.
#[derive(Debug, Clone, Default)]
struct Draft {
    filter: FlowFilter,
    namespaces: [Vec<String>; 2],
    pods: [Vec<String>; 2],
}

impl Draft {
    fn push_endpoint(&mut self, field: Field, side: Side, value: &Value) {
        let f = &mut self.filter;
        let source = side == Side::Source;
        match value {
            Value::Port(port) => {
                let ports = if source {
                    &mut f.source_port
                } else {
                    &mut f.destination_port
                };
                push_unique(ports, *port);
            }
            Value::Text(text) => {
                let list = match field {
                    Field::Namespace => &mut self.namespaces[side as usize],
                    Field::Pod => &mut self.pods[side as usize],
                    Field::Label if source => &mut f.source_label,
                    Field::Label => &mut f.destination_label,
                    Field::Ip if source => &mut f.source_ip,
                    Field::Ip => &mut f.destination_ip,
                    Field::Service if source => &mut f.source_service,
                    Field::Service => &mut f.destination_service,
                    Field::Workload if source => &mut f.source_workload,
                    Field::Workload => &mut f.destination_workload,
                    _ => return,
                };
                push_unique(list, text.clone());
            }
            Value::Enum(_) | Value::Bool(_) => {}
        }
    }

    fn push_flow(&mut self, field: Field, value: &Value) {
        let f = &mut self.filter;
        match (field, value) {
            (Field::Verdict, Value::Enum(v)) => push_unique(&mut f.verdict, *v),
            (Field::TrafficDirection, Value::Enum(v)) => push_unique(&mut f.traffic_direction, *v),
            (Field::Reply, Value::Bool(b)) => push_unique(&mut f.reply, *b),
            (field, Value::Text(text)) => {
                let list = match field {
                    Field::DropReason => &mut f.drop_reason,
                    Field::Protocol => &mut f.protocol,
                    Field::DnsQuery => &mut f.dns_query,
                    Field::HttpStatus => &mut f.http_status,
                    Field::HttpMethod => &mut f.http_method,
                    Field::HttpPath => &mut f.http_path,
                    Field::NodeName => &mut f.node_name,
                    Field::TcpFlags => &mut f.tcp_flags,
                    _ => return,
                };
                push_unique(list, text.clone());
            }
            _ => {}
        }
    }

    fn finish(mut self) -> FlowFilter {
        for side in [Side::Source, Side::Destination] {
            let namespaces = &self.namespaces[side as usize];
            let pods = &self.pods[side as usize];
            let composed: Vec<String> = if namespaces.is_empty() {
                pods.clone()
            } else if pods.is_empty() {
                namespaces.iter().map(|ns| format!("{ns}/")).collect()
            } else {
                // A pod that names its own namespace keeps it.
                pods.iter()
                    .flat_map(|pod| match pod.contains('/') {
                        true => vec![pod.clone()],
                        false => namespaces.iter().map(|ns| format!("{ns}/{pod}")).collect(),
                    })
                    .collect()
            };
            let field = match side {
                Side::Source => &mut self.filter.source_pod,
                Side::Destination => &mut self.filter.destination_pod,
            };
            for pod in composed {
                push_unique(field, pod);
            }
        }
        self.filter
    }
}

/// Builds wire filters from `hubble observe`-style flags given in
/// command-line order, with Hubble's semantics: either-side flags produce a
/// "source" and a "destination" filter (ORed), from/to flags and flow-wide
/// flags go into both, each negated flag becomes its own blacklist filter
/// (two for an either-side flag), and repeated values of a flag OR.
/// A namespace and a pod on the same side AND (`--namespace a --pod web` is
/// pods `web*` in `a`).
#[derive(Debug, Clone, Default)]
pub struct FilterBuilder {
    drafts: [Draft; 2],
    used: bool,
    blacklist: Vec<FlowFilter>,
}

impl FilterBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one flag; `negated` is `--not` in front of it. The value is
    /// checked here, so a bad port or address fails before anything is sent.
    pub fn add(&mut self, flag: FilterFlag, value: &str, negated: bool) -> Result<(), FilterError> {
        self.add_labelled(flag, value, negated, &format!("--{}", flag.name()))
    }

    fn add_labelled(
        &mut self,
        flag: FilterFlag,
        value: &str,
        negated: bool,
        label: &str,
    ) -> Result<(), FilterError> {
        let (field, scope) = flag.parts();
        let value = normalize(field, label, value)?;
        if negated {
            let mut alone = Self::new();
            alone.apply(field, scope, &value);
            let (filters, _) = alone.build();
            self.blacklist.extend(filters);
        } else {
            self.apply(field, scope, &value);
        }
        Ok(())
    }

    fn apply(&mut self, field: Field, scope: Scope, value: &Value) {
        self.used = true;
        let [left, right] = &mut self.drafts;
        match scope {
            Scope::Either => {
                left.push_endpoint(field, Side::Source, value);
                right.push_endpoint(field, Side::Destination, value);
            }
            Scope::From | Scope::To => {
                let side = if scope == Scope::From {
                    Side::Source
                } else {
                    Side::Destination
                };
                left.push_endpoint(field, side, value);
                right.push_endpoint(field, side, value);
            }
            Scope::Flow => {
                left.push_flow(field, value);
                right.push_flow(field, value);
            }
        }
    }

    /// The whitelist (empty when only negated flags were given) and the
    /// blacklist.
    pub fn build(self) -> (Vec<FlowFilter>, Vec<FlowFilter>) {
        if !self.used {
            return (Vec::new(), self.blacklist);
        }
        let [left, right] = self.drafts;
        let (left, right) = (left.finish(), right.finish());
        let whitelist = if left == right {
            vec![left]
        } else {
            vec![left, right]
        };
        (whitelist, self.blacklist)
    }
}

// ------------------------------------------------------------------ expressions

/// Most bare words one expression may hold: each multiplies the whitelist by
/// up to nine alternatives.
pub const MAX_WORDS: usize = 2;

/// Parses the explorer's `/` filter: whitespace-separated `name:value` terms
/// with [`FilterFlag`] names (`verdict:DROPPED ns:frontend`), `!` in front of
/// a term negates it, and `"..."` quotes a value with spaces (`\"` inside
/// quotes is a quote).
///
/// A bare word (no `name:`) matches flows whose source or destination pod,
/// namespace, workload or service, or whose DNS query, contains it
/// (case-insensitive). It is expressed with `*` wildcards in those fields: one
/// alternative filter per field, combined with the other terms. An
/// alternative is left out where another term already constrains the same
/// field (a filter field can only OR its values, not AND them).
pub fn parse_expression(text: &str) -> Result<(Vec<FlowFilter>, Vec<FlowFilter>), FilterError> {
    let mut builder = FilterBuilder::new();
    let mut words = Vec::new();
    for term in tokenize(text)? {
        match term.name {
            Some(name) => {
                let flag = FilterFlag::from_name(&name)
                    .ok_or_else(|| FilterError::UnknownFilter(name.clone()))?;
                if term.value.is_empty() {
                    return Err(FilterError::MissingValue(name));
                }
                builder.add_labelled(flag, &term.value, term.negated, flag.name())?;
            }
            None if term.value.is_empty() => return Err(FilterError::DanglingNot),
            None => words.push((term.value, term.negated)),
        }
    }
    let (mut whitelist, mut blacklist) = builder.build();
    if words.iter().filter(|(_, negated)| !negated).count() > MAX_WORDS {
        return Err(FilterError::TooManyWords);
    }
    for (word, negated) in words {
        let alternatives = word_alternatives(&word);
        if negated {
            blacklist.extend(alternatives.into_iter().map(|(field, pattern)| {
                let mut filter = FlowFilter::default();
                word_field(&mut filter, field).push(pattern);
                filter
            }));
            continue;
        }
        if whitelist.is_empty() {
            whitelist.push(FlowFilter::default());
        }
        whitelist = whitelist
            .into_iter()
            .flat_map(|filter| {
                let combined: Vec<FlowFilter> = alternatives
                    .iter()
                    .filter_map(|(field, pattern)| {
                        let mut filter = filter.clone();
                        let values = word_field(&mut filter, *field);
                        values.is_empty().then(|| values.push(pattern.clone()))?;
                        Some(filter)
                    })
                    .collect();
                // Every field already taken: keep the filter rather than
                // drop it, since an empty whitelist would mean "everything".
                if combined.is_empty() {
                    vec![filter]
                } else {
                    combined
                }
            })
            .collect();
    }
    Ok((whitelist, blacklist))
}

#[derive(Debug, Clone, Copy)]
enum WordField {
    SourcePod,
    DestinationPod,
    SourceWorkload,
    DestinationWorkload,
    SourceService,
    DestinationService,
    DnsQuery,
}

fn word_field(filter: &mut FlowFilter, field: WordField) -> &mut Vec<String> {
    match field {
        WordField::SourcePod => &mut filter.source_pod,
        WordField::DestinationPod => &mut filter.destination_pod,
        WordField::SourceWorkload => &mut filter.source_workload,
        WordField::DestinationWorkload => &mut filter.destination_workload,
        WordField::SourceService => &mut filter.source_service,
        WordField::DestinationService => &mut filter.destination_service,
        WordField::DnsQuery => &mut filter.dns_query,
    }
}

fn word_alternatives(word: &str) -> Vec<(WordField, String)> {
    let contains = format!("*{word}*");
    let mut alternatives = vec![
        (WordField::SourcePod, contains.clone()),
        (WordField::DestinationPod, contains.clone()),
    ];
    if !word.contains('/') {
        let namespace = format!("*{word}*/");
        alternatives.push((WordField::SourcePod, namespace.clone()));
        alternatives.push((WordField::DestinationPod, namespace));
    }
    alternatives.extend([
        (WordField::SourceWorkload, contains.clone()),
        (WordField::DestinationWorkload, contains.clone()),
        (WordField::SourceService, contains.clone()),
        (WordField::DestinationService, contains.clone()),
        (WordField::DnsQuery, contains),
    ]);
    alternatives
}

#[derive(Debug)]
struct Term {
    negated: bool,
    name: Option<String>,
    value: String,
}

fn tokenize(text: &str) -> Result<Vec<Term>, FilterError> {
    let mut terms = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(terms);
        };
        let negated = first == '!';
        if negated {
            chars.next();
        }
        let mut name = None;
        let mut value = String::new();
        let mut raw = String::from(if negated { "!" } else { "" });
        let mut quoted = false;
        while let Some(c) = chars.next() {
            raw.push(c);
            match c {
                '"' => quoted = !quoted,
                '\\' if quoted => {
                    if let Some(escaped) = chars.next() {
                        raw.push(escaped);
                        value.push(escaped);
                    }
                }
                ':' if !quoted && name.is_none() => name = Some(std::mem::take(&mut value)),
                c if c.is_whitespace() && !quoted => break,
                c => value.push(c),
            }
        }
        if quoted {
            return Err(FilterError::UnterminatedQuote(raw));
        }
        terms.push(Term {
            negated,
            name,
            value,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::ip_to_bytes;
    use crate::v1::{Dns, Http, Layer4, Layer7, TcpFlag, Verdict, Workload};

    fn endpoint(ns: &str, pod: &str, ip: &str, port: u32) -> Endpoint {
        Endpoint {
            ip: ip_to_bytes(ip.parse().expect("test ip")),
            port,
            namespace: ns.to_string(),
            pod_name: pod.to_string(),
            ..Default::default()
        }
    }

    fn flow(src: Endpoint, dst: Endpoint, protocol: Protocol) -> Flow {
        Flow {
            time_ns: 1,
            node_name: "node-1".into(),
            verdict: Verdict::Forwarded as i32,
            source: Some(src),
            destination: Some(dst),
            l4: Some(Layer4 {
                protocol: protocol as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn dns(query: &str) -> Option<Layer7> {
        Some(Layer7 {
            record: Some(Record::Dns(Dns {
                query: query.into(),
                ..Default::default()
            })),
            ..Default::default()
        })
    }

    fn http(method: &str, url: &str, code: u32) -> Option<Layer7> {
        Some(Layer7 {
            record: Some(Record::Http(Http {
                method: method.into(),
                url: url.into(),
                code,
                ..Default::default()
            })),
            ..Default::default()
        })
    }

    /// A flow between two pods, with labels and workloads.
    fn sample() -> Flow {
        let mut src = endpoint("default", "frontend-7d9f-abcde", "10.244.1.7", 43210);
        src.labels = vec!["app=frontend".into(), "tier=web".into()];
        src.workload = Some(Workload {
            name: "frontend".into(),
            kind: "Deployment".into(),
        });
        let mut dst = endpoint("backend", "api-5c-x2v", "10.244.2.9", 8080);
        dst.labels = vec!["app=api".into()];
        dst.workload = Some(Workload {
            name: "api".into(),
            kind: "Deployment".into(),
        });
        dst.service = "api".into();
        flow(src, dst, Protocol::Tcp)
    }

    fn set(whitelist: &[FlowFilter], blacklist: &[FlowFilter]) -> FlowFilterSet {
        FlowFilterSet::new(whitelist, blacklist).expect("valid filters")
    }

    fn with(edit: impl FnOnce(&mut FlowFilter)) -> FlowFilter {
        let mut filter = FlowFilter::default();
        edit(&mut filter);
        filter
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn endpoint_fields_match_their_side() {
        let flow = sample();
        let cases: Vec<(FlowFilter, bool)> = vec![
            (
                with(|f| f.source_pod = strings(&["default/frontend"])),
                true,
            ),
            (with(|f| f.source_pod = strings(&["default/"])), true),
            (with(|f| f.source_pod = strings(&["frontend-7d"])), true),
            (with(|f| f.source_pod = strings(&["other/frontend"])), false),
            (with(|f| f.source_pod = strings(&["api"])), false),
            (with(|f| f.destination_pod = strings(&["api"])), true),
            (with(|f| f.destination_pod = strings(&["BACKEND/"])), true),
            (with(|f| f.source_ip = strings(&["10.244.1.7"])), true),
            (with(|f| f.source_ip = strings(&["10.244.0.0/16"])), true),
            (with(|f| f.source_ip = strings(&["10.244.2.0/24"])), false),
            (with(|f| f.source_ip = strings(&["0.0.0.0/0"])), true),
            (with(|f| f.source_ip = strings(&["::/0"])), false),
            (
                with(|f| f.destination_ip = strings(&["10.244.2.9/32"])),
                true,
            ),
            (with(|f| f.source_port = vec![43210]), true),
            (with(|f| f.source_port = vec![8080]), false),
            (with(|f| f.destination_port = vec![53, 8080]), true),
            (with(|f| f.source_workload = strings(&["frontend"])), true),
            (
                with(|f| f.source_workload = strings(&["default/frontend"])),
                true,
            ),
            (
                with(|f| f.source_workload = strings(&["backend/frontend"])),
                false,
            ),
            (
                with(|f| f.destination_workload = strings(&["front"])),
                false,
            ),
            (
                with(|f| f.destination_service = strings(&["backend/api"])),
                true,
            ),
            (with(|f| f.destination_service = strings(&["api"])), true),
            (with(|f| f.source_service = strings(&["api"])), false),
        ];
        for (index, (filter, expected)) in cases.iter().enumerate() {
            assert_eq!(
                set(std::slice::from_ref(filter), &[]).matches(&flow),
                *expected,
                "case {index}: {filter:?}"
            );
        }
    }

    #[test]
    fn ipv6_cidrs_and_mapped_addresses() {
        let mut flow = sample();
        flow.source = Some(endpoint("", "", "fd00::1:5", 1));
        flow.destination = Some(endpoint("", "", "::ffff:192.0.2.7", 2));
        let matches = |field: &str, value: &str| {
            let filter = match field {
                "src" => with(|f| f.source_ip = strings(&[value])),
                _ => with(|f| f.destination_ip = strings(&[value])),
            };
            set(&[filter], &[]).matches(&flow)
        };
        assert!(matches("src", "fd00::/16"));
        assert!(matches("src", "fd00::1:5"));
        assert!(!matches("src", "fd01::/16"));
        assert!(!matches("src", "10.0.0.0/8"));
        assert!(matches("dst", "192.0.2.0/24"));
    }

    #[test]
    fn label_selectors() {
        let mut flow = sample();
        if let Some(src) = flow.source.as_mut() {
            src.labels.push("k8s:team=checkout".into());
        }
        let cases = [
            ("app=frontend", true),
            ("app==frontend", true),
            ("k8s:app=frontend", true),
            ("app=api", false),
            ("app!=api", true),
            ("app!=frontend", false),
            ("tier", true),
            ("!tier", false),
            ("!canary", true),
            ("canary!=yes", true),
            ("app=frontend,tier=web", true),
            ("app=frontend,tier=db", false),
            ("team=checkout", true),
        ];
        for (selector, expected) in cases {
            let filter = with(|f| f.source_label = strings(&[selector]));
            assert_eq!(set(&[filter], &[]).matches(&flow), expected, "{selector}");
        }
    }

    #[test]
    fn flow_fields() {
        let mut dropped = sample();
        dropped.verdict = Verdict::Dropped as i32;
        dropped.drop_reason = "NETFILTER_DROP".into();
        dropped.policy_reason = "default/deny-all ingress".into();
        dropped.traffic_direction = TrafficDirection::Egress as i32;
        dropped.is_reply = true;
        dropped.l4 = Some(Layer4 {
            protocol: Protocol::Tcp as i32,
            tcp_flags: TcpFlag::Syn as u32 | TcpFlag::Ack as u32,
            ..Default::default()
        });
        let cases: Vec<(FlowFilter, bool)> = vec![
            (with(|f| f.verdict = vec![Verdict::Dropped as i32]), true),
            (with(|f| f.verdict = vec![Verdict::Forwarded as i32]), false),
            (with(|f| f.drop_reason = strings(&["netfilter_drop"])), true),
            (with(|f| f.drop_reason = strings(&["NETFILTER"])), false),
            (with(|f| f.drop_reason = strings(&["DENY-ALL"])), true),
            (with(|f| f.protocol = strings(&["tcp"])), true),
            (with(|f| f.protocol = strings(&["UDP"])), false),
            (with(|f| f.protocol = strings(&["dns"])), false),
            (with(|f| f.node_name = strings(&["node-*"])), true),
            (with(|f| f.node_name = strings(&["node"])), false),
            (
                with(|f| f.traffic_direction = vec![TrafficDirection::Egress as i32]),
                true,
            ),
            (
                with(|f| f.traffic_direction = vec![TrafficDirection::Ingress as i32]),
                false,
            ),
            (with(|f| f.reply = vec![true]), true),
            (with(|f| f.reply = vec![false]), false),
            (with(|f| f.tcp_flags = strings(&["SYN"])), true),
            (with(|f| f.tcp_flags = strings(&["syn,ack"])), true),
            (with(|f| f.tcp_flags = strings(&["SYN,RST"])), false),
            (with(|f| f.tcp_flags = strings(&["RST", "ACK"])), true),
            (with(|f| f.http_status = strings(&["2+"])), false),
        ];
        for (index, (filter, expected)) in cases.iter().enumerate() {
            assert_eq!(
                set(std::slice::from_ref(filter), &[]).matches(&dropped),
                *expected,
                "case {index}: {filter:?}"
            );
        }
    }

    #[test]
    fn l7_fields() {
        let mut query = sample();
        query.l4 = Some(Layer4 {
            protocol: Protocol::Udp as i32,
            ..Default::default()
        });
        query.l7 = dns("Kube-DNS.kube-system.svc.cluster.local.");
        let dns_matches = |pattern: &str| {
            set(&[with(|f| f.dns_query = strings(&[pattern]))], &[]).matches(&query)
        };
        assert!(dns_matches("kube-dns.kube-system.svc.cluster.local"));
        assert!(dns_matches("KUBE-DNS.kube-system.svc.cluster.local."));
        assert!(dns_matches("*.cluster.local"));
        assert!(dns_matches("kube-*.svc.*"));
        assert!(!dns_matches("kube-dns"));
        assert!(!dns_matches("*.example.com"));
        assert!(set(&[with(|f| f.protocol = strings(&["dns"]))], &[]).matches(&query));

        let mut response = sample();
        response.l7 = http("GET", "/api/v1/users?id=3", 503);
        let matches = |filter: FlowFilter| set(&[filter], &[]).matches(&response);
        assert!(matches(with(|f| f.http_status = strings(&["503"]))));
        assert!(matches(with(|f| f.http_status = strings(&["5+"]))));
        assert!(matches(with(|f| f.http_status = strings(&["50+"]))));
        assert!(!matches(with(|f| f.http_status = strings(&["51+"]))));
        assert!(!matches(with(|f| f.http_status = strings(&["200", "4+"]))));
        assert!(matches(with(|f| f.http_method = strings(&["get"]))));
        assert!(!matches(with(|f| f.http_method = strings(&["POST"]))));
        assert!(matches(with(|f| f.http_path = strings(&["/api/v1"]))));
        assert!(!matches(with(|f| f.http_path = strings(&["/v1"]))));
        assert!(matches(with(|f| f.protocol = strings(&["http"]))));
        assert!(!matches(with(|f| f.dns_query = strings(&["*"]))));

        let mut ping = sample();
        ping.l4 = Some(Layer4 {
            protocol: Protocol::Icmpv6 as i32,
            ..Default::default()
        });
        let proto = |p: &str| set(&[with(|f| f.protocol = strings(&[p]))], &[]).matches(&ping);
        assert!(proto("icmp") && proto("ICMPv6") && !proto("icmpv4") && !proto("tcp"));
    }

    #[test]
    fn http_status_ranges() {
        let parse = |text| parse_http_status("s", text);
        assert_eq!(parse("200"), Ok((200, 200)));
        assert_eq!(parse("5+"), Ok((500, 599)));
        assert_eq!(parse("40+"), Ok((400, 409)));
        for bad in [
            "", "+", "2000", "99", "6+", "0+", "abc", "20x", "200+", "-5",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn whitelist_or_blacklist_and_fields_and() {
        let flow = sample();
        let src_frontend = with(|f| f.source_pod = strings(&["default/frontend"]));
        let src_other = with(|f| f.source_pod = strings(&["other/"]));
        let port_53 = with(|f| f.destination_port = vec![53]);
        // Values of one field OR.
        let either = with(|f| f.source_pod = strings(&["other/", "default/frontend"]));
        assert!(set(&[either], &[]).matches(&flow));
        // Fields AND.
        let both = with(|f| {
            f.source_pod = strings(&["default/frontend"]);
            f.destination_port = vec![53];
        });
        assert!(!set(&[both], &[]).matches(&flow));
        // Whitelist filters OR.
        assert!(set(&[src_other.clone(), src_frontend.clone()], &[]).matches(&flow));
        assert!(!set(&[src_other.clone(), port_53.clone()], &[]).matches(&flow));
        // A matching blacklist filter wins over the whitelist.
        assert!(
            !set(
                std::slice::from_ref(&src_frontend),
                &[port_53.clone(), src_frontend.clone()]
            )
            .matches(&flow)
        );
        assert!(set(&[src_frontend], std::slice::from_ref(&port_53)).matches(&flow));
        // Blacklist only.
        assert!(set(&[], &[port_53]).matches(&flow));
        assert!(!set(&[], &[src_other.clone(), FlowFilter::default()]).matches(&flow));
        let empty = set(&[], &[]);
        assert!(empty.is_empty() && empty.matches(&flow));
        assert!(!set(&[src_other], &[]).is_empty());
    }

    #[test]
    fn bad_wire_filters_name_the_field() {
        let err = FlowFilterSet::new(
            &[
                FlowFilter::default(),
                with(|f| f.destination_ip = strings(&["10.0.0.300"])),
            ],
            &[],
        )
        .expect_err("bad ip");
        assert_eq!(
            err.to_string(),
            "whitelist[1].destination_ip: invalid address or CIDR \"10.0.0.300\""
        );
        let err = FlowFilterSet::new(&[], &[with(|f| f.http_status = strings(&["9+"]))])
            .expect_err("bad status");
        assert!(
            err.to_string()
                .starts_with("blacklist[0].http_status: \"9+\" is not"),
            "{err}"
        );
        for bad in [
            with(|f| f.source_ip = strings(&["10.0.0.0/33"])),
            with(|f| f.source_pod = strings(&["/x"])),
            with(|f| f.source_label = strings(&["=x"])),
            with(|f| f.source_label = strings(&["a=b,"])),
            with(|f| f.protocol = strings(&["ftp"])),
            with(|f| f.tcp_flags = strings(&["SYN,FOO"])),
            with(|f| f.dns_query = strings(&[""])),
        ] {
            assert!(
                FlowFilterSet::new(std::slice::from_ref(&bad), &[]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn flag_names_round_trip() {
        for flag in FilterFlag::ALL {
            assert_eq!(FilterFlag::from_name(flag.name()), Some(*flag));
            assert_eq!(
                FilterFlag::from_name(&format!("--{}", flag.name())),
                Some(*flag)
            );
        }
        assert_eq!(FilterFlag::ALL.len(), 32);
        assert_eq!(FilterFlag::from_name("ns"), Some(FilterFlag::Namespace));
        assert_eq!(
            FilterFlag::from_name("drop-reason-desc"),
            Some(FilterFlag::DropReason)
        );
        assert_eq!(FilterFlag::from_name("node"), Some(FilterFlag::NodeName));
        assert_eq!(FilterFlag::from_name("colour"), None);
    }

    fn build(flags: &[(FilterFlag, &str, bool)]) -> (Vec<FlowFilter>, Vec<FlowFilter>) {
        let mut builder = FilterBuilder::new();
        for (flag, value, negated) in flags {
            builder.add(*flag, value, *negated).expect("valid flag");
        }
        builder.build()
    }

    #[test]
    fn either_side_flags_make_two_filters() {
        use crate::v1::Verdict as V;
        use FilterFlag::*;
        let (whitelist, blacklist) = build(&[
            (Namespace, "kube-system", false),
            (Verdict, "dropped", false),
        ]);
        assert!(blacklist.is_empty());
        assert_eq!(
            whitelist,
            vec![
                with(|f| {
                    f.source_pod = strings(&["kube-system/"]);
                    f.verdict = vec![V::Dropped as i32];
                }),
                with(|f| {
                    f.destination_pod = strings(&["kube-system/"]);
                    f.verdict = vec![V::Dropped as i32];
                }),
            ]
        );
        // from/to flags go to the same side of both filters.
        let (whitelist, _) = build(&[(Port, "53", false), (FromPod, "default/frontend", false)]);
        assert_eq!(
            whitelist,
            vec![
                with(|f| {
                    f.source_pod = strings(&["default/frontend"]);
                    f.source_port = vec![53];
                }),
                with(|f| {
                    f.source_pod = strings(&["default/frontend"]);
                    f.destination_port = vec![53];
                }),
            ]
        );
    }

    #[test]
    fn without_either_flags_one_filter_and_repeats_or() {
        use FilterFlag::*;
        let (whitelist, blacklist) = build(&[
            (FromNamespace, "default", false),
            (ToPort, "53", false),
            (ToPort, "5353", false),
            (Protocol, "UDP", false),
            (HttpMethod, "get", false),
            (TcpFlags, "ack,syn", false),
        ]);
        assert!(blacklist.is_empty());
        assert_eq!(
            whitelist,
            vec![with(|f| {
                f.source_pod = strings(&["default/"]);
                f.destination_port = vec![53, 5353];
                f.protocol = strings(&["udp"]);
                f.http_method = strings(&["GET"]);
                f.tcp_flags = strings(&["SYN,ACK"]);
            })]
        );
        let (whitelist, blacklist) = build(&[]);
        assert!(whitelist.is_empty() && blacklist.is_empty());
    }

    #[test]
    fn namespace_and_pod_on_one_side_and() {
        use FilterFlag::*;
        let (whitelist, _) = build(&[
            (FromNamespace, "a", false),
            (FromNamespace, "b", false),
            (FromPod, "web", false),
            (FromPod, "c/db", false),
        ]);
        assert_eq!(
            whitelist,
            vec![with(|f| f.source_pod = strings(&["a/web", "b/web", "c/db"]))]
        );
    }

    #[test]
    fn not_negates_only_the_next_flag() {
        use crate::v1::Verdict as V;
        use FilterFlag::*;
        let (whitelist, blacklist) = build(&[
            (FromPod, "default/frontend", false),
            (Verdict, "FORWARDED", true),
            (Namespace, "kube-system", true),
            (ToPort, "53", false),
        ]);
        assert_eq!(
            whitelist,
            vec![with(|f| {
                f.source_pod = strings(&["default/frontend"]);
                f.destination_port = vec![53];
            })]
        );
        assert_eq!(
            blacklist,
            vec![
                with(|f| f.verdict = vec![V::Forwarded as i32]),
                with(|f| f.source_pod = strings(&["kube-system/"])),
                with(|f| f.destination_pod = strings(&["kube-system/"])),
            ]
        );
        let (whitelist, blacklist) = build(&[(Protocol, "dns", true)]);
        assert!(whitelist.is_empty());
        assert_eq!(blacklist, vec![with(|f| f.protocol = strings(&["dns"]))]);
    }

    #[test]
    fn builder_errors_name_the_flag() {
        use FilterFlag::*;
        let error = |flag, value: &str| {
            FilterBuilder::new()
                .add(flag, value, false)
                .expect_err("invalid")
                .to_string()
        };
        assert_eq!(error(Port, "http"), "--port: \"http\" is not a port number");
        assert_eq!(
            error(ToPort, "70000"),
            "--to-port: \"70000\" is not a port number"
        );
        assert_eq!(
            error(Ip, "10.0.0.300"),
            "--ip: invalid address or CIDR \"10.0.0.300\""
        );
        assert_eq!(
            error(Verdict, "MAYBE"),
            "--verdict: unknown verdict \"MAYBE\" (expected FORWARDED, DROPPED, ERROR, AUDIT, REDIRECTED, TRACED, TRANSLATED)"
        );
        assert_eq!(
            error(Verdict, "VERDICT_UNKNOWN").split(':').next(),
            Some("--verdict")
        );
        assert!(error(HttpStatus, "5xx").starts_with("--http-status: \"5xx\""));
        assert!(error(Protocol, "ftp").starts_with("--protocol: unknown protocol \"ftp\""));
        assert!(error(TrafficDirection, "up").starts_with("--traffic-direction: unknown"));
        assert!(error(Reply, "maybe").starts_with("--reply:"));
        assert!(error(TcpFlags, "SYN,NOPE").starts_with("--tcp-flags:"));
        assert!(error(Label, "a=b,,c").starts_with("--label: invalid label selector"));
        assert!(error(Namespace, "a/b").starts_with("--namespace: invalid value"));
        assert_eq!(error(DnsQuery, " "), "--dns-query: empty value");
    }

    #[test]
    fn expressions() {
        let (whitelist, blacklist) =
            parse_expression("verdict:DROPPED ns:frontend !dns-query:*.cluster.local")
                .expect("valid");
        assert_eq!(
            whitelist,
            vec![
                with(|f| {
                    f.source_pod = strings(&["frontend/"]);
                    f.verdict = vec![Verdict::Dropped as i32];
                }),
                with(|f| {
                    f.destination_pod = strings(&["frontend/"]);
                    f.verdict = vec![Verdict::Dropped as i32];
                }),
            ]
        );
        assert_eq!(
            blacklist,
            vec![with(|f| f.dns_query = strings(&["*.cluster.local"]))]
        );

        let (whitelist, _) =
            parse_expression("  http-path:\"/a b\"  from-label:\"app=x\" to-pod:\"db\\\"1\" ")
                .expect("valid");
        assert_eq!(
            whitelist,
            vec![with(|f| {
                f.http_path = strings(&["/a b"]);
                f.source_label = strings(&["app=x"]);
                f.destination_pod = strings(&["db\"1"]);
            })]
        );
        assert_eq!(parse_expression("   ").expect("empty"), (vec![], vec![]));
        // `!` inside a value is part of it.
        // A quoted colon is literal: the whole term is a word to search for.
        let (whitelist, _) = parse_expression("\"svc:x y\"").expect("valid");
        assert_eq!(whitelist.len(), 9);
        assert_eq!(whitelist[8].dns_query, strings(&["*svc:x y*"]));
        let (whitelist, _) = parse_expression("from-label:!canary").expect("valid");
        assert_eq!(
            whitelist,
            vec![with(|f| f.source_label = strings(&["!canary"]))]
        );
    }

    #[test]
    fn expression_errors() {
        let error = |text| parse_expression(text).expect_err("invalid").to_string();
        assert_eq!(error("colour:red"), "unknown filter \"colour\"");
        assert_eq!(error("port:http"), "port: \"http\" is not a port number");
        assert_eq!(error("ns:"), "filter expression: \"ns:\" has no value");
        assert_eq!(
            error("http-path:\"/a b"),
            "filter expression: unterminated quote in http-path:\"/a b"
        );
        assert_eq!(
            error("verdict:DROPPED !"),
            "filter expression: \"!\" must be followed by a term"
        );
        assert_eq!(
            error("a b c"),
            "filter expression: too many words to search for (at most 2)"
        );
        assert_eq!(error(":x"), "unknown filter \"\"");
    }

    #[test]
    fn bare_words_search_names() {
        let (whitelist, blacklist) = parse_expression("verdict:dropped Front").expect("valid");
        assert!(blacklist.is_empty());
        assert_eq!(whitelist.len(), 9);
        assert!(
            whitelist
                .iter()
                .all(|f| f.verdict == vec![Verdict::Dropped as i32])
        );
        let filters = set(&whitelist, &blacklist);

        let mut flow = sample();
        flow.verdict = Verdict::Dropped as i32;
        assert!(filters.matches(&flow), "source pod contains front");
        let mut by_dns = flow.clone();
        by_dns.source = Some(endpoint("a", "b", "10.0.0.1", 1));
        by_dns.l7 = dns("www.frontdoor.example.");
        assert!(filters.matches(&by_dns), "dns query contains front");
        let mut by_namespace = by_dns.clone();
        by_namespace.l7 = None;
        by_namespace.destination = Some(endpoint("storefront", "", "10.0.0.2", 2));
        assert!(filters.matches(&by_namespace), "namespace contains front");
        by_namespace.destination = Some(endpoint("store", "", "10.0.0.2", 2));
        assert!(!filters.matches(&by_namespace));
        flow.verdict = Verdict::Forwarded as i32;
        assert!(!filters.matches(&flow), "other terms still apply");

        // Negated: nothing may contain the word.
        let (whitelist, blacklist) = parse_expression("!front").expect("valid");
        assert!(whitelist.is_empty());
        assert_eq!(blacklist.len(), 9);
        let filters = set(&whitelist, &blacklist);
        assert!(!filters.matches(&sample()));
        assert!(filters.matches(&by_dns.clone().tap(|f| f.l7 = None)));

        // A field already constrained by a term is not reused for the word.
        let (whitelist, _) = parse_expression("from-pod:api front").expect("valid");
        assert_eq!(whitelist.len(), 7);
        assert!(whitelist.iter().all(|f| f.source_pod == strings(&["api"])));
    }

    trait Tap: Sized {
        fn tap(self, edit: impl FnOnce(&mut Self)) -> Self;
    }
    impl Tap for Flow {
        fn tap(mut self, edit: impl FnOnce(&mut Self)) -> Self {
            edit(&mut self);
            self
        }
    }

    #[test]
    fn sample_flows_through_a_hubble_style_filter() {
        use crate::v1::{Protocol as P, Verdict as V};
        use FilterFlag::*;
        let coredns = || {
            let mut ep = endpoint("kube-system", "coredns-5d-x2v", "10.96.0.10", 53);
            ep.service = "kube-dns".into();
            ep
        };
        let frontend = || endpoint("default", "frontend-7d9f-abcde", "10.244.1.7", 43210);
        let backend = || endpoint("default", "backend-1", "10.244.1.8", 8080);
        let world = || {
            let mut ep = endpoint("", "", "203.0.113.9", 443);
            ep.reserved = "world".into();
            ep
        };
        let mut flows = vec![
            // 0: frontend -> coredns, DNS, forwarded
            flow(frontend(), coredns(), P::Udp)
                .tap(|f| f.l7 = dns("api.default.svc.cluster.local.")),
            // 1: frontend -> coredns, dropped
            flow(frontend(), coredns(), P::Udp).tap(|f| {
                f.verdict = V::Dropped as i32;
                f.drop_reason = "NETFILTER_DROP".into();
            }),
            // 2: coredns reply to frontend
            flow(coredns(), frontend(), P::Udp).tap(|f| f.is_reply = true),
            // 3: frontend -> backend HTTP 200
            flow(frontend(), backend(), P::Tcp).tap(|f| f.l7 = http("GET", "/", 200)),
            // 4: frontend -> backend HTTP 503
            flow(frontend(), backend(), P::Tcp).tap(|f| f.l7 = http("GET", "/", 503)),
            // 5: backend -> world
            flow(backend(), world(), P::Tcp),
            // 6: world -> frontend dropped
            flow(world(), frontend(), P::Tcp).tap(|f| {
                f.verdict = V::Dropped as i32;
                f.drop_reason = "POLICY_DENIED".into();
            }),
            // 7: kube-system internal
            flow(coredns(), coredns(), P::Tcp),
            // 8: on another node
            flow(frontend(), coredns(), P::Udp).tap(|f| f.node_name = "node-2".into()),
            // 9: frontend -> coredns over TCP
            flow(frontend(), coredns(), P::Tcp),
        ];
        flows[7].node_name = "node-1".into();
        let passing = |flags: &[(FilterFlag, &str, bool)]| -> Vec<usize> {
            let (whitelist, blacklist) = build(flags);
            let filters = set(&whitelist, &blacklist);
            flows
                .iter()
                .enumerate()
                .filter(|(_, f)| filters.matches(f))
                .map(|(i, _)| i)
                .collect()
        };
        // Everything touching kube-system, except replies and other nodes.
        assert_eq!(
            passing(&[
                (Namespace, "kube-system", false),
                (Reply, "true", true),
                (NodeName, "node-2", true)
            ]),
            vec![0, 1, 7, 9]
        );
        assert_eq!(passing(&[(Verdict, "dropped", false)]), vec![1, 6]);
        assert_eq!(
            passing(&[(Protocol, "udp", false), (Verdict, "dropped", true)]),
            vec![0, 2, 8]
        );
        assert_eq!(passing(&[(Port, "8080", false)]), vec![3, 4, 5]);
        assert_eq!(passing(&[(ToPort, "8080", false)]), vec![3, 4]);
        assert_eq!(passing(&[(HttpStatus, "5+", false)]), vec![4]);
        assert_eq!(
            passing(&[(Service, "kube-system/kube-dns", false)]),
            vec![0, 1, 2, 7, 8, 9]
        );
        assert_eq!(passing(&[(Ip, "203.0.113.0/24", false)]), vec![5, 6]);
        assert_eq!(
            passing(&[
                (FromPod, "default/frontend", false),
                (ToNamespace, "kube-system", false),
                (Protocol, "tcp", false)
            ]),
            vec![9]
        );
        assert_eq!(passing(&[(DropReason, "policy_denied", false)]), vec![6]);
        assert_eq!(passing(&[(DnsQuery, "*.cluster.local", false)]), vec![0]);
    }
}
