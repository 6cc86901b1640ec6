//! Flows as JSON lines: one object per line in the layout `hubble observe -o json`
//! prints, so that people's jq scripts keep working, plus a `skymap` object for
//! what Hubble's flow lacks (exact nanosecond time, packet and byte counts,
//! handshake time, policy reason, interface, DNS id, endpoints' nodes).
//!
//! The `skymap` object holds `time_ns` (string), `packets`, `bytes`,
//! `handshake_ns` (string), `policy_reason`, `interface`, `dns_id`,
//! `source_node_name` and `destination_node_name`.
//!
//! Reading accepts skymap's lines and Hubble's own (which have no `skymap`
//! object). Hubble's JSON writes 64-bit integers as strings and enums as names,
//! so numeric fields accept either; unknown fields are ignored. Writing omits
//! empty fields, except `is_reply` (a wrapper type in Hubble, so always
//! present) and `skymap.packets`/`skymap.bytes` (a missing count means "one
//! Hubble packet").
//!
//! Lossy corners, by design: endpoint ports only travel in `l4` (TCP, UDP,
//! SCTP), an endpoint with nothing set reads back as absent, and `Http.url` read
//! from Hubble (`http://host:port/path`) keeps only its path.

use std::fmt;
use std::io::{self, BufRead, Write};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::{Deserialize, Serialize};

use crate::names::{
    ip_from_bytes, ip_to_bytes, l7_type_name, observation_point_name, parse_qtype, parse_verdict,
    qtype_name, rcode_name, sanitize, tcp_flag_names, traffic_direction_name, verdict_name,
};
use crate::v1::{
    Dns, Endpoint, Flow, Http, L7Type, Layer4, Layer7, ObservationPoint, Protocol, TcpFlag,
    TrafficDirection, Verdict, Workload, layer7,
};

/// Lines longer than this are rejected before JSON parsing.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// How many error messages a [`ReadReport`] keeps; the rest are only counted.
pub const MAX_KEPT_ERRORS: usize = 20;

/// Why one line is not a flow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("invalid JSON at column {column}: {message}")]
    Syntax { column: usize, message: String },
    #[error("incomplete JSON at column {column} (truncated line?)")]
    Eof { column: usize },
    #[error("wrong value at column {column}: {message}")]
    Data { column: usize, message: String },
    #[error("{field}: invalid address {value}")]
    InvalidAddress { field: &'static str, value: String },
    #[error("{field}: unknown value {value}")]
    UnknownValue { field: &'static str, value: String },
    #[error(
        "{field}: invalid time {value} (expected RFC 3339, e.g. 2026-11-26T06:18:18.123456789Z)"
    )]
    InvalidTime { field: &'static str, value: String },
    #[error("not a flow: no \"flow\" object and no known Hubble event")]
    NotAFlow,
    #[error("line is {len} bytes, over the {MAX_LINE_BYTES}-byte limit")]
    TooLong { len: usize },
    #[error("line is not valid UTF-8")]
    NotUtf8,
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
// A record is consumed right after parsing; boxing the common case would add
// an allocation per line for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Record {
    Flow(Flow),
    /// A Hubble event that is not a flow: `"lost_events"`, `"node_status"`,
    /// `"debug_event"` or `"agent_event"`.
    Other(&'static str),
}

/// Parses one line (without its newline).
pub fn parse_line(line: &str) -> Result<Record, LineError> {
    let parsed: RLine = serde_json::from_str(line).map_err(json_error)?;
    let Some(flow) = parsed.flow else {
        return [
            ("lost_events", parsed.lost_events.is_some()),
            ("node_status", parsed.node_status.is_some()),
            ("debug_event", parsed.debug_event.is_some()),
            ("agent_event", parsed.agent_event.is_some()),
        ]
        .into_iter()
        .find(|(_, present)| *present)
        .map(|(name, _)| Record::Other(name))
        .ok_or(LineError::NotAFlow);
    };
    convert_flow(flow, parsed.node_name, parsed.time).map(Record::Flow)
}

/// The flow as one JSON line, without a newline.
pub fn to_json(flow: &Flow) -> String {
    // Serializing plain structs of strings, numbers and bools cannot fail.
    serde_json::to_string(&WLine::new(flow)).unwrap_or_default()
}

/// Writes the flow as one JSON line, with its newline. Makes many small
/// writes: give it a `BufWriter`.
pub fn write_flow(out: &mut impl Write, flow: &Flow) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &WLine::new(flow))?;
    out.write_all(b"\n")
}

/// What a [`FlowReader`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// Lines read, blank ones included.
    pub lines: u64,
    pub flows: u64,
    /// Hubble events that are not flows (lost events, node status, ...).
    pub skipped_other: u64,
    /// Lines that failed to parse.
    pub rejected: u64,
    /// The first [`MAX_KEPT_ERRORS`] problems, as "FILE:LINE: message".
    pub errors: Vec<String>,
}

/// Reads flows from a stream of JSON lines, skipping (and recording) bad lines.
/// A read error ends the stream and is recorded too.
pub struct FlowReader<R: BufRead> {
    input: R,
    name: String,
    buf: Vec<u8>,
    report: ReadReport,
    done: bool,
}

impl<R: BufRead> fmt::Debug for FlowReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowReader")
            .field("name", &self.name)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl<R: BufRead> FlowReader<R> {
    /// `name` (usually the file name) prefixes every error message.
    pub fn new(input: R, name: impl Into<String>) -> Self {
        Self {
            input,
            name: name.into(),
            buf: Vec::new(),
            report: ReadReport::default(),
            done: false,
        }
    }

    pub fn report(&self) -> &ReadReport {
        &self.report
    }

    /// The name given to [`FlowReader::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn into_report(self) -> ReadReport {
        self.report
    }

    fn record_error(&mut self, message: impl fmt::Display) {
        if self.report.errors.len() < MAX_KEPT_ERRORS {
            let line = self.report.lines;
            self.report
                .errors
                .push(format!("{}:{line}: {message}", self.name));
        }
    }

    fn reject(&mut self, error: LineError, last_without_newline: bool) {
        self.report.rejected += 1;
        if last_without_newline {
            self.record_error(format_args!(
                "truncated last line (no newline at end): {error}"
            ));
        } else {
            self.record_error(error);
        }
    }
}

impl<R: BufRead> Iterator for FlowReader<R> {
    type Item = Flow;

    fn next(&mut self) -> Option<Flow> {
        while !self.done {
            let read = match read_bounded_line(&mut self.input, &mut self.buf, MAX_LINE_BYTES) {
                Ok(read) => read,
                Err(error) => {
                    self.done = true;
                    self.report.lines += 1;
                    self.record_error(format_args!("read error: {error}"));
                    return None;
                }
            };
            let newline = match read {
                LineRead::Eof => {
                    self.done = true;
                    return None;
                }
                LineRead::TooLong { len, newline } => {
                    self.report.lines += 1;
                    self.reject(LineError::TooLong { len }, !newline);
                    continue;
                }
                LineRead::Line { newline } => newline,
            };
            self.report.lines += 1;
            let Ok(text) = std::str::from_utf8(&self.buf) else {
                self.reject(LineError::NotUtf8, false);
                continue;
            };
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            match parse_line(text) {
                Ok(Record::Flow(flow)) => {
                    self.report.flows += 1;
                    return Some(flow);
                }
                Ok(Record::Other(_)) => self.report.skipped_other += 1,
                Err(error) => self.reject(error, !newline),
            }
        }
        None
    }
}

enum LineRead {
    Eof,
    Line {
        newline: bool,
    },
    /// The line was skipped without being kept; `len` excludes the newline.
    TooLong {
        len: usize,
        newline: bool,
    },
}

/// Reads one line into `buf` (newline removed), keeping at most `limit` bytes
/// in memory: a longer line is consumed and dropped.
fn read_bounded_line(
    input: &mut impl BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<LineRead> {
    buf.clear();
    let mut len = 0usize;
    let mut any = false;
    loop {
        let chunk = match input.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(match (any, len > limit) {
                (false, _) => LineRead::Eof,
                (true, true) => LineRead::TooLong {
                    len,
                    newline: false,
                },
                (true, false) => LineRead::Line { newline: false },
            });
        }
        any = true;
        let (part, used, newline) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        len += part.len();
        if len <= limit {
            buf.extend_from_slice(part);
        } else {
            buf.clear();
        }
        input.consume(used);
        if newline {
            return Ok(if len > limit {
                LineRead::TooLong { len, newline: true }
            } else {
                LineRead::Line { newline: true }
            });
        }
    }
}

fn json_error(error: serde_json::Error) -> LineError {
    let column = error.column();
    // serde_json appends " at line L column C"; the column is reported on its own.
    let text = error.to_string();
    let message = match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    };
    match error.classify() {
        serde_json::error::Category::Eof => LineError::Eof { column },
        serde_json::error::Category::Data => LineError::Data { column, message },
        serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
            LineError::Syntax { column, message }
        }
    }
}

/// A value from the input, quoted and cut short, safe to print.
fn shown(value: &str) -> String {
    let cut: String = value.chars().take(80).collect();
    format!("{:?}", sanitize(&cut))
}

// ---------------------------------------------------------------------------
// Reading: Hubble's layout, every field optional.

#[derive(Deserialize)]
struct RLine {
    #[serde(default)]
    flow: Option<RFlow>,
    #[serde(default)]
    lost_events: Option<IgnoredAny>,
    #[serde(default)]
    node_status: Option<IgnoredAny>,
    #[serde(default)]
    debug_event: Option<IgnoredAny>,
    #[serde(default)]
    agent_event: Option<IgnoredAny>,
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    time: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RFlow {
    time: Option<String>,
    verdict: Option<EnumValue>,
    drop_reason_desc: Option<EnumValue>,
    #[serde(rename = "IP")]
    ip: Option<RIp>,
    l4: Option<RL4>,
    source: Option<REndpoint>,
    destination: Option<REndpoint>,
    source_service: Option<RService>,
    destination_service: Option<RService>,
    node_name: Option<String>,
    l7: Option<RL7>,
    traffic_direction: Option<EnumValue>,
    trace_observation_point: Option<EnumValue>,
    is_reply: Option<bool>,
    interface: Option<RInterface>,
    skymap: Option<RSkymap>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RIp {
    source: Option<String>,
    destination: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RL4 {
    #[serde(rename = "TCP")]
    tcp: Option<RPorts>,
    #[serde(rename = "UDP")]
    udp: Option<RPorts>,
    #[serde(rename = "SCTP")]
    sctp: Option<RPorts>,
    #[serde(rename = "ICMPv4")]
    icmpv4: Option<RIcmp>,
    #[serde(rename = "ICMPv6")]
    icmpv6: Option<RIcmp>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RPorts {
    #[serde(deserialize_with = "de_u32")]
    source_port: u32,
    #[serde(deserialize_with = "de_u32")]
    destination_port: u32,
    flags: Option<RTcpFlags>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RTcpFlags {
    #[serde(rename = "FIN")]
    fin: bool,
    #[serde(rename = "SYN")]
    syn: bool,
    #[serde(rename = "RST")]
    rst: bool,
    #[serde(rename = "PSH")]
    psh: bool,
    #[serde(rename = "ACK")]
    ack: bool,
    #[serde(rename = "URG")]
    urg: bool,
    #[serde(rename = "ECE")]
    ece: bool,
    #[serde(rename = "CWR")]
    cwr: bool,
}

impl RTcpFlags {
    fn bits(&self) -> u32 {
        [
            (self.fin, TcpFlag::Fin),
            (self.syn, TcpFlag::Syn),
            (self.rst, TcpFlag::Rst),
            (self.psh, TcpFlag::Psh),
            (self.ack, TcpFlag::Ack),
            (self.urg, TcpFlag::Urg),
            (self.ece, TcpFlag::Ece),
            (self.cwr, TcpFlag::Cwr),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .fold(0, |bits, (_, flag)| bits | *flag as u32)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RIcmp {
    #[serde(rename = "type", deserialize_with = "de_u32")]
    kind: u32,
    #[serde(deserialize_with = "de_u32")]
    code: u32,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct REndpoint {
    namespace: String,
    labels: Vec<String>,
    pod_name: String,
    workloads: Vec<RWorkload>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RWorkload {
    name: String,
    kind: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RService {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RInterface {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RL7 {
    #[serde(rename = "type")]
    kind: Option<EnumValue>,
    #[serde(deserialize_with = "de_u64")]
    latency_ns: u64,
    dns: Option<RDns>,
    http: Option<RHttp>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RDns {
    query: String,
    ips: Vec<String>,
    #[serde(deserialize_with = "de_u32")]
    ttl: u32,
    #[serde(deserialize_with = "de_u32")]
    rcode: u32,
    qtypes: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RHttp {
    #[serde(deserialize_with = "de_u32")]
    code: u32,
    method: String,
    url: String,
    protocol: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RSkymap {
    #[serde(deserialize_with = "de_opt_i64")]
    time_ns: Option<i64>,
    #[serde(deserialize_with = "de_opt_u64")]
    packets: Option<u64>,
    #[serde(deserialize_with = "de_u64")]
    bytes: u64,
    #[serde(deserialize_with = "de_u64")]
    handshake_ns: u64,
    policy_reason: String,
    interface: String,
    #[serde(deserialize_with = "de_u32")]
    dns_id: u32,
    source_node_name: String,
    destination_node_name: String,
}

/// An enum as protojson writes it: a name, or a number for values it doesn't know.
enum EnumValue {
    Name(String),
    Number(i64),
}

impl<'de> Deserialize<'de> for EnumValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EnumValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an enum name or number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnumValue, E> {
                Ok(EnumValue::Name(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<EnumValue, E> {
                Ok(EnumValue::Name(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EnumValue, E> {
                Ok(EnumValue::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EnumValue, E> {
                i64::try_from(v)
                    .map(EnumValue::Number)
                    .map_err(|_| E::custom(format!("enum number {v} out of range")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl EnumValue {
    /// The enum's number: `by_name` for names, `by_number` checks numbers.
    /// `numbers_ok` is false where Hubble's numbering differs from ours.
    fn resolve(
        &self,
        field: &'static str,
        by_name: impl Fn(&str) -> Option<i32>,
        by_number: impl Fn(i32) -> bool,
    ) -> Result<i32, LineError> {
        match self {
            EnumValue::Name(name) => by_name(name).ok_or_else(|| LineError::UnknownValue {
                field,
                value: shown(name),
            }),
            EnumValue::Number(n) => {
                i32::try_from(*n)
                    .ok()
                    .filter(|n| by_number(*n))
                    .ok_or(LineError::UnknownValue {
                        field,
                        value: n.to_string(),
                    })
            }
        }
    }
}

/// Integers as JSON numbers or as strings (protojson's 64-bit form).
struct IntVisitor;

impl Visitor<'_> for IntVisitor {
    type Value = i128;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer or a string holding one")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
        Ok(v.into())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
        Ok(v.into())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i128, E> {
        // Some tools write integers as 30.0; anything else is a mistake.
        if v.fract() == 0.0 && v.abs() < 9.0e18 {
            Ok(v as i128)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<i128, E> {
        v.trim()
            .parse()
            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

fn de_int<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
    let v = d.deserialize_any(IntVisitor)?;
    T::try_from(v).map_err(|_| de::Error::custom(format!("integer {v} out of range")))
}

fn de_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    de_int(d)
}

fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    de_int(d)
}

fn de_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_int(d).map(Some)
}

fn de_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    de_int(d).map(Some)
}

fn convert_flow(
    f: RFlow,
    line_node: Option<String>,
    line_time: Option<String>,
) -> Result<Flow, LineError> {
    let sky = f.skymap.unwrap_or_default();

    let time_ns = match (sky.time_ns, f.time.as_deref().or(line_time.as_deref())) {
        (Some(ns), _) => ns,
        (None, Some(text)) => parse_time(text)?,
        (None, None) => 0,
    };

    let verdict = match &f.verdict {
        None => 0,
        Some(v) => v.resolve(
            "verdict",
            |name| match name {
                "VERDICT_UNKNOWN" => Some(0),
                _ => parse_verdict(name).map(|v| v as i32),
            },
            |n| Verdict::try_from(n).is_ok(),
        )?,
    };
    let drop_reason = match f.drop_reason_desc {
        None => String::new(),
        Some(EnumValue::Name(name)) if name == "DROP_REASON_UNKNOWN" => String::new(),
        Some(EnumValue::Name(name)) => name,
        Some(EnumValue::Number(n)) => n.to_string(),
    };
    let traffic_direction = match &f.traffic_direction {
        None => 0,
        Some(v) => v.resolve(
            "traffic_direction",
            |name| TrafficDirection::from_str_name(name).map(|d| d as i32),
            |n| TrafficDirection::try_from(n).is_ok(),
        )?,
    };
    let observation_point = match &f.trace_observation_point {
        None => 0,
        // Hubble numbers its points differently, so only names are understood.
        Some(v) => v.resolve(
            "trace_observation_point",
            observation_point_from_name,
            |_| false,
        )?,
    };

    let (l4, source_port, destination_port) = match f.l4 {
        Some(l4) => convert_l4(l4, sky.handshake_ns),
        None => (None, 0, 0),
    };

    let (source_ip, destination_ip) = match f.ip {
        Some(ip) => (
            parse_ip("IP.source", ip.source.as_deref())?,
            parse_ip("IP.destination", ip.destination.as_deref())?,
        ),
        None => (prost::bytes::Bytes::new(), prost::bytes::Bytes::new()),
    };

    let source = endpoint(
        source_ip,
        source_port,
        f.source,
        f.source_service,
        sky.source_node_name,
    );
    let destination = endpoint(
        destination_ip,
        destination_port,
        f.destination,
        f.destination_service,
        sky.destination_node_name,
    );

    let l7 = match f.l7 {
        Some(l7) => Some(convert_l7(l7, sky.dns_id)?),
        None => None,
    };

    let interface = if sky.interface.is_empty() {
        f.interface.map(|i| i.name).unwrap_or_default()
    } else {
        sky.interface
    };

    Ok(Flow {
        time_ns,
        node_name: f.node_name.or(line_node).unwrap_or_default(),
        verdict,
        drop_reason,
        policy_reason: sky.policy_reason,
        source,
        destination,
        l4,
        l7,
        observation_point,
        traffic_direction,
        is_reply: f.is_reply.unwrap_or(false),
        // Each Hubble flow is one packet; Hubble does not count bytes.
        packets: sky.packets.unwrap_or(1),
        bytes: sky.bytes,
        interface,
    })
}

fn parse_time(text: &str) -> Result<i64, LineError> {
    let invalid = || LineError::InvalidTime {
        field: "time",
        value: shown(text),
    };
    let at = humantime::parse_rfc3339_weak(text).map_err(|_| invalid())?;
    let ns = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| invalid())?
        .as_nanos();
    i64::try_from(ns).map_err(|_| invalid())
}

fn parse_ip(field: &'static str, text: Option<&str>) -> Result<prost::bytes::Bytes, LineError> {
    match text {
        None | Some("") => Ok(prost::bytes::Bytes::new()),
        Some(text) => {
            text.parse::<IpAddr>()
                .map(ip_to_bytes)
                .map_err(|_| LineError::InvalidAddress {
                    field,
                    value: shown(text),
                })
        }
    }
}

fn observation_point_from_name(name: &str) -> Option<i32> {
    if let Some(point) = ObservationPoint::from_str_name(name) {
        return Some(point as i32);
    }
    // Hubble's points that skymap has no word for fold into the nearest one.
    let point = match name {
        "UNKNOWN_POINT" | "TO_PROXY" | "FROM_PROXY" | "TO_CRYPTO" | "FROM_CRYPTO" => {
            ObservationPoint::Unknown
        }
        "TO_STACK" => ObservationPoint::ToHost,
        "FROM_STACK" => ObservationPoint::FromHost,
        "TO_OVERLAY" => ObservationPoint::ToNetwork,
        "FROM_OVERLAY" => ObservationPoint::FromNetwork,
        _ => return None,
    };
    Some(point as i32)
}

/// The layer 4 record and the source and destination ports.
fn convert_l4(l4: RL4, handshake_ns: u64) -> (Option<Layer4>, u32, u32) {
    let base = Layer4 {
        handshake_ns,
        ..Layer4::default()
    };
    let with_ports = |protocol: Protocol, ports: RPorts| {
        let tcp_flags = ports.flags.as_ref().map_or(0, RTcpFlags::bits);
        let layer = Layer4 {
            protocol: protocol as i32,
            tcp_flags,
            ..base
        };
        (Some(layer), ports.source_port, ports.destination_port)
    };
    let icmp = |protocol: Protocol, icmp: RIcmp| {
        let layer = Layer4 {
            protocol: protocol as i32,
            icmp_type: icmp.kind,
            icmp_code: icmp.code,
            ..base
        };
        (Some(layer), 0, 0)
    };
    if let Some(ports) = l4.tcp {
        with_ports(Protocol::Tcp, ports)
    } else if let Some(ports) = l4.udp {
        with_ports(Protocol::Udp, ports)
    } else if let Some(ports) = l4.sctp {
        with_ports(Protocol::Sctp, ports)
    } else if let Some(i) = l4.icmpv4 {
        icmp(Protocol::Icmpv4, i)
    } else if let Some(i) = l4.icmpv6 {
        icmp(Protocol::Icmpv6, i)
    } else {
        (None, 0, 0)
    }
}

fn endpoint(
    ip: prost::bytes::Bytes,
    port: u32,
    ep: Option<REndpoint>,
    service: Option<RService>,
    node_name: String,
) -> Option<Endpoint> {
    let ep = ep.unwrap_or_default();
    let mut reserved = String::new();
    let mut labels = Vec::with_capacity(ep.labels.len());
    for label in ep.labels {
        if let Some(name) = label.strip_prefix("reserved:") {
            // An endpoint may carry several reserved labels (host and
            // kube-apiserver, say); world and host are the ones that matter.
            let name = match name {
                "world-ipv4" | "world-ipv6" => "world",
                other => other,
            };
            if reserved.is_empty() || matches!(name, "world" | "host") {
                reserved = name.to_string();
            }
        } else if let Some(plain) = label.strip_prefix("k8s:") {
            labels.push(plain.to_string());
        } else {
            labels.push(label);
        }
    }
    if !labels.is_sorted() {
        labels.sort();
    }
    let workload = ep.workloads.into_iter().next().map(|w| Workload {
        name: w.name,
        kind: w.kind,
    });
    let endpoint = Endpoint {
        ip,
        port,
        namespace: ep.namespace,
        pod_name: ep.pod_name,
        labels,
        workload,
        service: service.map(|s| s.name).unwrap_or_default(),
        node_name,
        reserved,
    };
    (endpoint != Endpoint::default()).then_some(endpoint)
}

fn convert_l7(l7: RL7, dns_id: u32) -> Result<Layer7, LineError> {
    let kind = match &l7.kind {
        None => 0,
        Some(v) => v.resolve(
            "l7.type",
            |name| match name {
                "UNKNOWN_L7_TYPE" => Some(0),
                _ => L7Type::from_str_name(name).map(|t| t as i32),
            },
            |n| L7Type::try_from(n).is_ok(),
        )?,
    };
    let record = if let Some(dns) = l7.dns {
        let qtype = match dns.qtypes.first() {
            None => 0,
            Some(name) => parse_qtype(name).ok_or_else(|| LineError::UnknownValue {
                field: "l7.dns.qtypes",
                value: shown(name),
            })?,
        };
        Some(layer7::Record::Dns(Dns {
            query: dns.query,
            qtype,
            rcode: dns.rcode,
            ips: dns.ips,
            id: dns_id,
            ttl: dns.ttl,
        }))
    } else {
        l7.http.map(|http| {
            layer7::Record::Http(Http {
                method: http.method,
                url: url_path(http.url),
                code: http.code,
                protocol: http.protocol,
            })
        })
    };
    Ok(Layer7 {
        r#type: kind,
        latency_ns: l7.latency_ns,
        record,
    })
}

/// Hubble writes full URLs (`http://backend:8080/api?x=1`); skymap keeps the
/// path and query, as on the request line.
fn url_path(url: String) -> String {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) => match rest.find('/') {
            Some(slash) => rest[slash..].to_string(),
            None => "/".to_string(),
        },
        None => url,
    }
}

// ---------------------------------------------------------------------------
// Writing: borrowed views of a flow in Hubble's layout.

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

#[derive(Serialize)]
struct WLine<'a> {
    flow: WFlow<'a>,
    #[serde(skip_serializing_if = "str::is_empty")]
    node_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<String>,
}

#[derive(Serialize)]
struct WFlow<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verdict: Option<&'static str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    drop_reason_desc: &'a str,
    #[serde(rename = "IP", skip_serializing_if = "Option::is_none")]
    ip: Option<WIp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    l4: Option<WL4>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<WEndpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<WEndpoint<'a>>,
    #[serde(rename = "Type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    node_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    l7: Option<WL7<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_service: Option<WService<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination_service: Option<WService<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traffic_direction: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_observation_point: Option<&'static str>,
    is_reply: bool,
    #[serde(rename = "Summary", skip_serializing_if = "String::is_empty")]
    summary: String,
    skymap: WSkymap<'a>,
}

#[derive(Serialize)]
struct WIp {
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<String>,
    #[serde(rename = "ipVersion")]
    ip_version: &'static str,
}

#[derive(Serialize)]
enum WL4 {
    #[serde(rename = "TCP")]
    Tcp(WPorts),
    #[serde(rename = "UDP")]
    Udp(WPorts),
    #[serde(rename = "SCTP")]
    Sctp(WPorts),
    #[serde(rename = "ICMPv4")]
    Icmpv4(WIcmp),
    #[serde(rename = "ICMPv6")]
    Icmpv6(WIcmp),
}

#[derive(Serialize)]
struct WPorts {
    #[serde(skip_serializing_if = "is_zero_u32")]
    source_port: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    destination_port: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    flags: Option<WTcpFlags>,
}

#[derive(Serialize)]
#[allow(clippy::upper_case_acronyms)]
struct WTcpFlags {
    #[serde(rename = "FIN", skip_serializing_if = "is_false")]
    fin: bool,
    #[serde(rename = "SYN", skip_serializing_if = "is_false")]
    syn: bool,
    #[serde(rename = "RST", skip_serializing_if = "is_false")]
    rst: bool,
    #[serde(rename = "PSH", skip_serializing_if = "is_false")]
    psh: bool,
    #[serde(rename = "ACK", skip_serializing_if = "is_false")]
    ack: bool,
    #[serde(rename = "URG", skip_serializing_if = "is_false")]
    urg: bool,
    #[serde(rename = "ECE", skip_serializing_if = "is_false")]
    ece: bool,
    #[serde(rename = "CWR", skip_serializing_if = "is_false")]
    cwr: bool,
}

impl WTcpFlags {
    fn from_bits(bits: u32) -> Option<Self> {
        let has = |flag: TcpFlag| bits & flag as u32 != 0;
        (bits & 0xff != 0).then(|| Self {
            fin: has(TcpFlag::Fin),
            syn: has(TcpFlag::Syn),
            rst: has(TcpFlag::Rst),
            psh: has(TcpFlag::Psh),
            ack: has(TcpFlag::Ack),
            urg: has(TcpFlag::Urg),
            ece: has(TcpFlag::Ece),
            cwr: has(TcpFlag::Cwr),
        })
    }
}

#[derive(Serialize)]
struct WIcmp {
    #[serde(rename = "type", skip_serializing_if = "is_zero_u32")]
    kind: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    code: u32,
}

#[derive(Serialize)]
struct WEndpoint<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    labels: Vec<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pod_name: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    workloads: Vec<WWorkload<'a>>,
}

#[derive(Serialize)]
struct WWorkload<'a> {
    name: &'a str,
    kind: &'a str,
}

#[derive(Serialize)]
struct WService<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
}

#[derive(Serialize)]
struct WL7<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<WDns<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<WHttp<'a>>,
}

#[derive(Serialize)]
struct WDns<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    query: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    ips: &'a [String],
    #[serde(skip_serializing_if = "is_zero_u32")]
    ttl: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    rcode: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    qtypes: Vec<String>,
}

#[derive(Serialize)]
struct WHttp<'a> {
    #[serde(skip_serializing_if = "is_zero_u32")]
    code: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    method: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    url: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    protocol: &'a str,
}

#[derive(Serialize)]
struct WSkymap<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    time_ns: Option<String>,
    packets: u64,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    handshake_ns: Option<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    policy_reason: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    interface: &'a str,
    #[serde(skip_serializing_if = "is_zero_u32")]
    dns_id: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    source_node_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    destination_node_name: &'a str,
}

impl<'a> WLine<'a> {
    fn new(flow: &'a Flow) -> Self {
        let time = format_time(flow.time_ns);
        let src = flow.source.as_ref();
        let dst = flow.destination.as_ref();
        let l4 = flow.l4.as_ref();
        let flow_view = WFlow {
            time: time.clone(),
            verdict: (flow.verdict != 0).then(|| verdict_name(flow.verdict)),
            drop_reason_desc: &flow.drop_reason,
            ip: write_ip(src, dst),
            l4: l4.and_then(|l4| write_l4(l4, src, dst)),
            source: src.and_then(write_endpoint),
            destination: dst.and_then(write_endpoint),
            kind: if flow.l7.is_some() { "L7" } else { "L3_L4" },
            node_name: &flow.node_name,
            l7: flow.l7.as_ref().map(write_l7),
            source_service: src.and_then(write_service),
            destination_service: dst.and_then(write_service),
            traffic_direction: (flow.traffic_direction != 0)
                .then(|| traffic_direction_name(flow.traffic_direction)),
            trace_observation_point: (flow.observation_point != 0)
                .then(|| observation_point_name(flow.observation_point)),
            is_reply: flow.is_reply,
            summary: summary(flow),
            skymap: WSkymap {
                time_ns: (flow.time_ns != 0).then(|| flow.time_ns.to_string()),
                packets: flow.packets,
                bytes: flow.bytes,
                handshake_ns: l4
                    .filter(|l4| l4.handshake_ns != 0)
                    .map(|l4| l4.handshake_ns.to_string()),
                policy_reason: &flow.policy_reason,
                interface: &flow.interface,
                dns_id: match flow.l7.as_ref().and_then(|l7| l7.record.as_ref()) {
                    Some(layer7::Record::Dns(dns)) => dns.id,
                    _ => 0,
                },
                source_node_name: src.map_or("", |e| e.node_name.as_str()),
                destination_node_name: dst.map_or("", |e| e.node_name.as_str()),
            },
        };
        WLine {
            flow: flow_view,
            node_name: &flow.node_name,
            time,
        }
    }
}

/// RFC 3339 with nanoseconds; none for times humantime cannot show (before
/// 1970), which only a broken clock produces.
fn format_time(time_ns: i64) -> Option<String> {
    let ns = u64::try_from(time_ns).ok().filter(|ns| *ns > 0)?;
    let at: SystemTime = UNIX_EPOCH.checked_add(Duration::from_nanos(ns))?;
    let mut text = String::new();
    fmt::write(
        &mut text,
        format_args!("{}", humantime::format_rfc3339_nanos(at)),
    )
    .ok()?;
    Some(text)
}

fn write_ip(src: Option<&Endpoint>, dst: Option<&Endpoint>) -> Option<WIp> {
    let source = src.and_then(|e| ip_from_bytes(&e.ip));
    let destination = dst.and_then(|e| ip_from_bytes(&e.ip));
    let version = match source.or(destination)? {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    };
    Some(WIp {
        source: source.map(|ip| ip.to_string()),
        destination: destination.map(|ip| ip.to_string()),
        ip_version: version,
    })
}

fn write_l4(l4: &Layer4, src: Option<&Endpoint>, dst: Option<&Endpoint>) -> Option<WL4> {
    let ports = |flags: Option<WTcpFlags>| WPorts {
        source_port: src.map_or(0, |e| e.port),
        destination_port: dst.map_or(0, |e| e.port),
        flags,
    };
    let icmp = || WIcmp {
        kind: l4.icmp_type,
        code: l4.icmp_code,
    };
    match Protocol::try_from(l4.protocol).ok()? {
        Protocol::Tcp => Some(WL4::Tcp(ports(WTcpFlags::from_bits(l4.tcp_flags)))),
        Protocol::Udp => Some(WL4::Udp(ports(None))),
        Protocol::Sctp => Some(WL4::Sctp(ports(None))),
        Protocol::Icmpv4 => Some(WL4::Icmpv4(icmp())),
        Protocol::Icmpv6 => Some(WL4::Icmpv6(icmp())),
        Protocol::Unknown => None,
    }
}

fn write_endpoint(e: &Endpoint) -> Option<WEndpoint<'_>> {
    let mut labels = Vec::with_capacity(e.labels.len() + 1);
    if !e.reserved.is_empty() {
        labels.push(format!("reserved:{}", e.reserved));
    }
    for label in &e.labels {
        // Kubernetes label keys cannot hold ':', so a key with one already
        // carries a source prefix (cidr:, fqdn:, ...) from Hubble.
        let key = label.split('=').next().unwrap_or_default();
        if key.contains(':') {
            labels.push(label.clone());
        } else {
            labels.push(format!("k8s:{label}"));
        }
    }
    let workloads = e
        .workload
        .as_ref()
        .map(|w| {
            vec![WWorkload {
                name: &w.name,
                kind: &w.kind,
            }]
        })
        .unwrap_or_default();
    let view = WEndpoint {
        namespace: &e.namespace,
        labels,
        pod_name: &e.pod_name,
        workloads,
    };
    let empty = view.namespace.is_empty()
        && view.labels.is_empty()
        && view.pod_name.is_empty()
        && view.workloads.is_empty();
    (!empty).then_some(view)
}

fn write_service(e: &Endpoint) -> Option<WService<'_>> {
    (!e.service.is_empty()).then_some(WService {
        name: &e.service,
        namespace: &e.namespace,
    })
}

fn write_l7(l7: &Layer7) -> WL7<'_> {
    let (dns, http) = match &l7.record {
        Some(layer7::Record::Dns(dns)) => (
            Some(WDns {
                query: &dns.query,
                ips: &dns.ips,
                ttl: dns.ttl,
                rcode: dns.rcode,
                qtypes: if dns.qtype == 0 {
                    Vec::new()
                } else {
                    vec![qtype_name(dns.qtype)]
                },
            }),
            None,
        ),
        Some(layer7::Record::Http(http)) => (
            None,
            Some(WHttp {
                code: http.code,
                method: &http.method,
                url: &http.url,
                protocol: &http.protocol,
            }),
        ),
        None => (None, None),
    };
    WL7 {
        kind: (l7.r#type != 0).then(|| l7_type_name(l7.r#type)),
        latency_ns: (l7.latency_ns != 0).then(|| l7.latency_ns.to_string()),
        dns,
        http,
    }
}

/// A short human line, in the spirit of Hubble's `Summary`.
fn summary(flow: &Flow) -> String {
    if let Some(l7) = &flow.l7 {
        return l7_summary(l7);
    }
    let Some(l4) = &flow.l4 else {
        return String::new();
    };
    match Protocol::try_from(l4.protocol) {
        Ok(Protocol::Tcp) if l4.tcp_flags != 0 => {
            format!("TCP Flags: {}", tcp_flag_names(l4.tcp_flags).join(", "))
        }
        Ok(Protocol::Tcp) => "TCP".to_string(),
        Ok(Protocol::Udp) => "UDP".to_string(),
        Ok(Protocol::Sctp) => "SCTP".to_string(),
        Ok(Protocol::Icmpv4) => icmp_summary(
            "ICMPv4",
            icmpv4_type_name(l4.icmp_type),
            l4.icmp_type,
            l4.icmp_code,
        ),
        Ok(Protocol::Icmpv6) => icmp_summary(
            "ICMPv6",
            icmpv6_type_name(l4.icmp_type),
            l4.icmp_type,
            l4.icmp_code,
        ),
        Ok(Protocol::Unknown) | Err(_) => String::new(),
    }
}

fn l7_summary(l7: &Layer7) -> String {
    let response = l7.r#type == L7Type::Response as i32;
    match &l7.record {
        Some(layer7::Record::Dns(dns)) => {
            let query = sanitize(&dns.query);
            let qtype = qtype_name(dns.qtype);
            if !response {
                format!("DNS Query {query} {qtype}")
            } else if dns.rcode != 0 {
                format!(
                    "DNS Answer RCode: {} {query} {qtype}",
                    rcode_name(dns.rcode)
                )
            } else {
                let ips = sanitize(&dns.ips.join(",")).into_owned();
                format!("DNS Answer \"{ips}\" TTL: {} ({query} {qtype})", dns.ttl)
            }
        }
        Some(layer7::Record::Http(http)) => {
            let method = sanitize(&http.method);
            let url = sanitize(&http.url);
            let protocol = sanitize(&http.protocol);
            if response {
                let ms = (l7.latency_ns + 500_000) / 1_000_000;
                format!("{protocol} {} {ms}ms {method} {url}", http.code)
            } else {
                format!("{protocol} {method} {url}")
            }
        }
        None => format!("L7 {}", l7_type_name(l7.r#type)),
    }
}

fn icmp_summary(family: &str, name: Option<&str>, kind: u32, code: u32) -> String {
    match name {
        Some(name) if code == 0 => format!("{family} {name}"),
        Some(name) => format!("{family} {name} code {code}"),
        None => format!("{family} type {kind} code {code}"),
    }
}

fn icmpv4_type_name(kind: u32) -> Option<&'static str> {
    Some(match kind {
        0 => "EchoReply",
        3 => "DestinationUnreachable",
        5 => "Redirect",
        8 => "EchoRequest",
        11 => "TimeExceeded",
        _ => return None,
    })
}

fn icmpv6_type_name(kind: u32) -> Option<&'static str> {
    Some(match kind {
        1 => "DestinationUnreachable",
        2 => "PacketTooBig",
        3 => "TimeExceeded",
        128 => "EchoRequest",
        129 => "EchoReply",
        133 => "RouterSolicitation",
        134 => "RouterAdvertisement",
        135 => "NeighborSolicitation",
        136 => "NeighborAdvertisement",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/hubble.jsonl"
    );

    fn ip(text: &str) -> prost::bytes::Bytes {
        ip_to_bytes(text.parse().expect("test address"))
    }

    fn pod(
        addr: &str,
        port: u32,
        ns: &str,
        name: &str,
        app: &str,
        workload: (&str, &str),
    ) -> Endpoint {
        Endpoint {
            ip: ip(addr),
            port,
            namespace: ns.into(),
            pod_name: name.into(),
            labels: vec![format!("app={app}"), "tier=web".into()],
            workload: Some(Workload {
                name: workload.0.into(),
                kind: workload.1.into(),
            }),
            service: String::new(),
            node_name: "node-1".into(),
            reserved: String::new(),
        }
    }

    fn base(source: Endpoint, destination: Endpoint, protocol: Protocol) -> Flow {
        Flow {
            time_ns: 1_795_673_898_123_456_789,
            node_name: "node-1".into(),
            verdict: Verdict::Forwarded as i32,
            source: Some(source),
            destination: Some(destination),
            l4: Some(Layer4 {
                protocol: protocol as i32,
                ..Layer4::default()
            }),
            observation_point: ObservationPoint::FromEndpoint as i32,
            traffic_direction: TrafficDirection::Egress as i32,
            packets: 3,
            bytes: 222,
            interface: "veth1a2b".into(),
            ..Flow::default()
        }
    }

    fn client() -> Endpoint {
        pod(
            "10.244.1.5",
            40000,
            "default",
            "frontend-7d9f-abcde",
            "frontend",
            ("frontend", "Deployment"),
        )
    }

    fn dns_server() -> Endpoint {
        Endpoint {
            service: "kube-dns".into(),
            node_name: "node-2".into(),
            ..pod(
                "10.96.0.10",
                53,
                "kube-system",
                "coredns-5d78-x1",
                "kube-dns",
                ("coredns", "Deployment"),
            )
        }
    }

    fn sample_flows() -> Vec<Flow> {
        let backend = pod(
            "10.244.2.9",
            8080,
            "shop",
            "backend-0",
            "backend",
            ("backend", "StatefulSet"),
        );

        let mut tcp = base(client(), backend.clone(), Protocol::Tcp);
        tcp.is_reply = true;
        tcp.traffic_direction = TrafficDirection::Ingress as i32;
        tcp.observation_point = ObservationPoint::ToEndpoint as i32;
        tcp.l4 = Some(Layer4 {
            protocol: Protocol::Tcp as i32,
            tcp_flags: TcpFlag::Syn as u32 | TcpFlag::Ack as u32,
            handshake_ns: 734_512,
            ..Layer4::default()
        });

        let mut dns_request = base(client(), dns_server(), Protocol::Udp);
        dns_request.l7 = Some(Layer7 {
            r#type: L7Type::Request as i32,
            latency_ns: 0,
            record: Some(layer7::Record::Dns(Dns {
                query: "kube-dns.kube-system.svc.cluster.local.".into(),
                qtype: 1,
                id: 4242,
                ..Dns::default()
            })),
        });

        let mut nxdomain = base(dns_server(), client(), Protocol::Udp);
        nxdomain.is_reply = true;
        nxdomain.l7 = Some(Layer7 {
            r#type: L7Type::Response as i32,
            latency_ns: 1_234_567,
            record: Some(layer7::Record::Dns(Dns {
                query: "nope.default.svc.cluster.local.".into(),
                qtype: 28,
                rcode: 3,
                id: 4243,
                ips: vec![],
                ttl: 30,
            })),
        });

        let mut dns_answer = nxdomain.clone();
        dns_answer.l7 = Some(Layer7 {
            r#type: L7Type::Response as i32,
            latency_ns: 800_000,
            record: Some(layer7::Record::Dns(Dns {
                query: "backend.shop.svc.cluster.local.".into(),
                qtype: 1,
                rcode: 0,
                id: 7,
                ips: vec!["10.96.4.4".into(), "10.96.4.5".into()],
                ttl: 30,
            })),
        });

        let http = |kind: L7Type, code: u32, latency_ns: u64| Layer7 {
            r#type: kind as i32,
            latency_ns,
            record: Some(layer7::Record::Http(Http {
                method: "GET".into(),
                url: "/api/cart?id=7".into(),
                code,
                protocol: "HTTP/1.1".into(),
            })),
        };
        let mut http_request = base(client(), backend.clone(), Protocol::Tcp);
        http_request.l7 = Some(http(L7Type::Request, 0, 0));
        let mut http_response = base(backend.clone(), client(), Protocol::Tcp);
        http_response.is_reply = true;
        http_response.l7 = Some(http(L7Type::Response, 200, 12_300_000));

        let world = Endpoint {
            ip: ip("93.184.216.34"),
            reserved: "world".into(),
            ..Endpoint::default()
        };
        let mut icmp = base(client(), world, Protocol::Icmpv4);
        icmp.source.as_mut().expect("source").port = 0;
        icmp.l4 = Some(Layer4 {
            protocol: Protocol::Icmpv4 as i32,
            icmp_type: 3,
            icmp_code: 1,
            ..Layer4::default()
        });

        let host = Endpoint {
            ip: ip("fd00::1"),
            reserved: "host".into(),
            node_name: "node-1".into(),
            ..Endpoint::default()
        };
        let v6_pod = Endpoint {
            ip: ip("fd00:10:244::5"),
            port: 9090,
            ..pod(
                "10.0.0.1",
                0,
                "monitoring",
                "prom-0",
                "prometheus",
                ("prom", "StatefulSet"),
            )
        };
        let mut ipv6 = base(host.clone(), v6_pod, Protocol::Tcp);
        ipv6.source.as_mut().expect("source").port = 33000;
        ipv6.observation_point = ObservationPoint::FromHost as i32;
        ipv6.l4 = Some(Layer4 {
            protocol: Protocol::Tcp as i32,
            tcp_flags: TcpFlag::Fin as u32 | TcpFlag::Ack as u32 | TcpFlag::Psh as u32,
            ..Layer4::default()
        });

        let mut icmpv6 = base(
            host,
            Endpoint {
                ip: ip("fd00::2"),
                ..Endpoint::default()
            },
            Protocol::Icmpv6,
        );
        icmpv6.l4 = Some(Layer4 {
            protocol: Protocol::Icmpv6 as i32,
            icmp_type: 128,
            ..Layer4::default()
        });

        let mut drop = base(client(), backend, Protocol::Tcp);
        drop.verdict = Verdict::Dropped as i32;
        drop.drop_reason = "NETFILTER_DROP".into();
        drop.policy_reason = "shop/deny-default".into();
        drop.observation_point = ObservationPoint::KernelDrop as i32;
        drop.packets = 1;
        drop.bytes = 74;
        drop.l4 = Some(Layer4 {
            protocol: Protocol::Tcp as i32,
            tcp_flags: TcpFlag::Syn as u32,
            ..Layer4::default()
        });

        vec![
            tcp,
            dns_request,
            nxdomain,
            dns_answer,
            http_request,
            http_response,
            icmp,
            ipv6,
            icmpv6,
            drop,
        ]
    }

    fn parse_flow(line: &str) -> Flow {
        match parse_line(line) {
            Ok(Record::Flow(flow)) => flow,
            other => panic!("expected a flow from {line}, got {other:?}"),
        }
    }

    fn value(flow: &Flow) -> serde_json::Value {
        serde_json::from_str(&to_json(flow)).expect("our own output is JSON")
    }

    #[test]
    fn every_kind_of_flow_round_trips() {
        let flows = sample_flows();
        assert_eq!(flows.len(), 10);
        for flow in flows {
            let line = to_json(&flow);
            assert!(!line.contains('\n'), "{line}");
            assert_eq!(parse_flow(&line), flow, "line: {line}");
        }
    }

    #[test]
    fn write_flow_ends_lines_and_the_reader_reads_them_back() {
        let flows = sample_flows();
        let mut out = Vec::new();
        for flow in &flows {
            write_flow(&mut out, flow).expect("write to a Vec");
        }
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), flows.len());
        let mut reader = FlowReader::new(out.as_slice(), "mem");
        let read: Vec<Flow> = reader.by_ref().collect();
        assert_eq!(read, flows);
        assert_eq!(
            reader.report(),
            &ReadReport {
                lines: 10,
                flows: 10,
                ..ReadReport::default()
            }
        );
    }

    #[test]
    fn written_json_has_hubble_paths_for_jq() {
        let flows = sample_flows();
        let tcp = value(&flows[0]);
        assert_eq!(tcp["flow"]["verdict"], "FORWARDED");
        assert_eq!(tcp["flow"]["IP"]["source"], "10.244.1.5");
        assert_eq!(tcp["flow"]["IP"]["ipVersion"], "IPv4");
        assert_eq!(tcp["flow"]["l4"]["TCP"]["destination_port"], 8080);
        assert_eq!(tcp["flow"]["l4"]["TCP"]["flags"]["SYN"], true);
        assert_eq!(tcp["flow"]["l4"]["TCP"]["flags"]["ACK"], true);
        assert!(tcp["flow"]["l4"]["TCP"]["flags"].get("FIN").is_none());
        assert_eq!(tcp["flow"]["source"]["namespace"], "default");
        assert_eq!(tcp["flow"]["source"]["pod_name"], "frontend-7d9f-abcde");
        assert_eq!(
            tcp["flow"]["source"]["labels"],
            serde_json::json!(["k8s:app=frontend", "k8s:tier=web"])
        );
        assert_eq!(tcp["flow"]["source"]["workloads"][0]["kind"], "Deployment");
        assert_eq!(tcp["flow"]["traffic_direction"], "INGRESS");
        assert_eq!(tcp["flow"]["trace_observation_point"], "TO_ENDPOINT");
        assert_eq!(tcp["flow"]["is_reply"], true);
        assert_eq!(tcp["flow"]["node_name"], "node-1");
        assert_eq!(tcp["flow"]["Type"], "L3_L4");
        assert_eq!(tcp["flow"]["Summary"], "TCP Flags: SYN, ACK");
        assert_eq!(tcp["flow"]["time"], "2026-11-26T06:18:18.123456789Z");
        assert_eq!(tcp["node_name"], "node-1");
        assert_eq!(tcp["time"], "2026-11-26T06:18:18.123456789Z");
        assert_eq!(tcp["flow"]["skymap"]["time_ns"], "1795673898123456789");
        assert_eq!(tcp["flow"]["skymap"]["handshake_ns"], "734512");
        assert_eq!(tcp["flow"]["skymap"]["packets"], 3);
        assert_eq!(tcp["flow"]["skymap"]["bytes"], 222);
        // Empty fields are left out.
        assert!(tcp["flow"].get("drop_reason_desc").is_none());
        assert!(tcp["flow"].get("l7").is_none());

        let drop = value(&flows[9]);
        assert_eq!(drop["flow"]["verdict"], "DROPPED");
        assert_eq!(drop["flow"]["drop_reason_desc"], "NETFILTER_DROP");
        assert_eq!(drop["flow"]["is_reply"], false);
        assert_eq!(drop["flow"]["skymap"]["policy_reason"], "shop/deny-default");

        let dns = value(&flows[1]);
        assert_eq!(dns["flow"]["Type"], "L7");
        assert_eq!(dns["flow"]["destination_service"]["name"], "kube-dns");
        assert_eq!(
            dns["flow"]["destination_service"]["namespace"],
            "kube-system"
        );
        assert_eq!(dns["flow"]["l7"]["dns"]["qtypes"], serde_json::json!(["A"]));
        assert_eq!(dns["flow"]["l4"]["UDP"]["destination_port"], 53);

        let world = value(&flows[6]);
        assert_eq!(
            world["flow"]["destination"]["labels"],
            serde_json::json!(["reserved:world"])
        );
        assert_eq!(world["flow"]["l4"]["ICMPv4"]["type"], 3);
        let v6 = value(&flows[7]);
        assert_eq!(v6["flow"]["IP"]["ipVersion"], "IPv6");
        assert_eq!(v6["flow"]["IP"]["source"], "fd00::1");
        assert_eq!(
            v6["flow"]["source"]["labels"],
            serde_json::json!(["reserved:host"])
        );
    }

    #[test]
    fn summaries_read_like_hubble() {
        let flows = sample_flows();
        let summaries: Vec<String> = flows
            .iter()
            .map(|f| {
                value(f)["flow"]["Summary"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert_eq!(
            summaries,
            [
                "TCP Flags: SYN, ACK",
                "DNS Query kube-dns.kube-system.svc.cluster.local. A",
                "DNS Answer RCode: NXDOMAIN nope.default.svc.cluster.local. AAAA",
                "DNS Answer \"10.96.4.4,10.96.4.5\" TTL: 30 (backend.shop.svc.cluster.local. A)",
                "HTTP/1.1 GET /api/cart?id=7",
                "HTTP/1.1 200 12ms GET /api/cart?id=7",
                "ICMPv4 DestinationUnreachable code 1",
                "TCP Flags: FIN, PSH, ACK",
                "ICMPv6 EchoRequest",
                "TCP Flags: SYN",
            ]
        );
    }

    #[test]
    fn hubble_fixture_parses_into_expected_fields() {
        let file = std::fs::File::open(FIXTURE).expect("fixture");
        let mut reader = FlowReader::new(io::BufReader::new(file), "hubble.jsonl");
        let flows: Vec<Flow> = reader.by_ref().collect();
        assert_eq!(
            reader.report(),
            &ReadReport {
                lines: 8,
                flows: 6,
                skipped_other: 2,
                rejected: 0,
                errors: vec![],
            }
        );

        // L3/L4 TCP SYN, forwarded to the endpoint.
        let syn = &flows[0];
        assert_eq!(syn.time_ns, 1_795_673_898_123_456_789);
        assert_eq!(syn.verdict, Verdict::Forwarded as i32);
        assert_eq!(syn.node_name, "kind-worker2");
        assert_eq!(syn.observation_point, ObservationPoint::ToEndpoint as i32);
        assert_eq!(syn.traffic_direction, TrafficDirection::Ingress as i32);
        assert_eq!(syn.interface, "lxc8a1b2c3d4e5f");
        assert_eq!((syn.packets, syn.bytes), (1, 0));
        let l4 = syn.l4.expect("l4");
        assert_eq!(l4.protocol, Protocol::Tcp as i32);
        assert_eq!(l4.tcp_flags, TcpFlag::Syn as u32);
        let src = syn.source.as_ref().expect("source");
        assert_eq!(src.ip, ip("10.244.1.5"));
        assert_eq!(src.port, 51234);
        assert_eq!(src.namespace, "shop");
        assert_eq!(src.pod_name, "frontend-7d9f8c6b5-abcde");
        assert_eq!(
            src.labels,
            [
                "app=frontend",
                "io.cilium.k8s.policy.cluster=default",
                "io.kubernetes.pod.namespace=shop"
            ]
        );
        assert_eq!(
            src.workload,
            Some(Workload {
                name: "frontend".into(),
                kind: "Deployment".into()
            })
        );
        let dst = syn.destination.as_ref().expect("destination");
        assert_eq!((dst.port, dst.pod_name.as_str()), (8080, "backend-0"));

        // Dropped by policy.
        let dropped = &flows[1];
        assert_eq!(dropped.verdict, Verdict::Dropped as i32);
        assert_eq!(dropped.drop_reason, "POLICY_DENIED");
        assert_eq!(dropped.traffic_direction, TrafficDirection::Egress as i32);
        assert_eq!(dropped.observation_point, 0);
        assert_eq!(dropped.source.as_ref().expect("source").workload, None);

        // DNS request and NXDOMAIN response.
        let query = &flows[2];
        let l7 = query.l7.as_ref().expect("l7");
        assert_eq!(l7.r#type, L7Type::Request as i32);
        let Some(layer7::Record::Dns(dns)) = &l7.record else {
            panic!("dns expected")
        };
        assert_eq!(
            (dns.query.as_str(), dns.qtype, dns.rcode),
            ("backend.shop.svc.cluster.local.", 1, 0)
        );
        let dst = query.destination.as_ref().expect("destination");
        assert_eq!((dst.service.as_str(), dst.port), ("kube-dns", 53));

        let answer = &flows[3];
        let l7 = answer.l7.as_ref().expect("l7");
        assert_eq!(
            (l7.r#type, l7.latency_ns),
            (L7Type::Response as i32, 1_843_211)
        );
        let Some(layer7::Record::Dns(dns)) = &l7.record else {
            panic!("dns expected")
        };
        assert_eq!((dns.rcode, dns.qtype), (3, 28));
        assert!(answer.is_reply);

        // HTTP response: latency as a string, URL reduced to its path.
        let http = &flows[4];
        let l7 = http.l7.as_ref().expect("l7");
        assert_eq!(l7.latency_ns, 12_400_000);
        let Some(layer7::Record::Http(h)) = &l7.record else {
            panic!("http expected")
        };
        assert_eq!(
            (
                h.code,
                h.method.as_str(),
                h.url.as_str(),
                h.protocol.as_str()
            ),
            (503, "GET", "/api/cart?id=7", "HTTP/1.1")
        );

        // ICMP to the world, observed at a point Hubble has and skymap folds.
        let ping = &flows[5];
        let l4 = ping.l4.expect("l4");
        assert_eq!(
            (l4.protocol, l4.icmp_type, l4.icmp_code),
            (Protocol::Icmpv4 as i32, 8, 0)
        );
        let world = ping.destination.as_ref().expect("destination");
        assert_eq!((world.reserved.as_str(), world.labels.len()), ("world", 0));
        assert_eq!(ping.observation_point, ObservationPoint::ToHost as i32);
    }

    #[test]
    fn non_flow_events_are_recognised() {
        assert_eq!(
            parse_line(r#"{"lost_events":{"num_events_lost":"3"}}"#),
            Ok(Record::Other("lost_events"))
        );
        assert_eq!(
            parse_line(r#"{"node_status":{},"time":"2026-01-01T00:00:00Z"}"#),
            Ok(Record::Other("node_status"))
        );
        assert_eq!(
            parse_line(r#"{"agent_event":{"type":"AGENT_STARTED"}}"#),
            Ok(Record::Other("agent_event"))
        );
        assert_eq!(parse_line(r#"{"something":1}"#), Err(LineError::NotAFlow));
    }

    #[test]
    fn numbers_are_accepted_as_strings_and_enums_as_numbers() {
        let flow = parse_flow(
            r#"{"flow":{"verdict":2,"l4":{"UDP":{"source_port":"5353","destination_port":53.0}},"IP":{"source":"10.0.0.1"},"l7":{"type":2,"latency_ns":1500,"dns":{"query":"a.","ttl":"60","rcode":"2","qtypes":["TYPE99"]}},"skymap":{"time_ns":1000,"packets":"4","bytes":"512"}}}"#,
        );
        assert_eq!(flow.verdict, Verdict::Dropped as i32);
        assert_eq!(flow.source.as_ref().expect("source").port, 5353);
        assert_eq!(flow.time_ns, 1000);
        assert_eq!((flow.packets, flow.bytes), (4, 512));
        let l7 = flow.l7.expect("l7");
        assert_eq!((l7.r#type, l7.latency_ns), (L7Type::Response as i32, 1500));
        let Some(layer7::Record::Dns(dns)) = l7.record else {
            panic!("dns expected")
        };
        assert_eq!((dns.ttl, dns.rcode, dns.qtype), (60, 2, 99));
    }

    #[test]
    fn malformed_lines_get_useful_errors() {
        let cases: [(&str, &str); 10] = [
            (
                "this is not json",
                "invalid JSON at column 2: expected ident",
            ),
            (
                r#"{"flow":{"verdict":"FORWARDED","IP":{"sour"#,
                "incomplete JSON at column 42 (truncated line?)",
            ),
            (
                r#"{"flow":{"l4":{"TCP":{"destination_port":"http"}}}}"#,
                "wrong value at column 47: invalid value: string \"http\", expected an integer or a string holding one",
            ),
            (
                r#"{"flow":{"l4":{"UDP":{"destination_port":70000000000}}}}"#,
                "wrong value at column 53: integer 70000000000 out of range",
            ),
            (
                r#"{"flow":{"is_reply":"yes"}}"#,
                "wrong value at column 25: invalid type: string \"yes\", expected a boolean",
            ),
            (
                r#"{"flow":{"IP":{"source":"10.0.0"}}}"#,
                "IP.source: invalid address \"10.0.0\"",
            ),
            (
                r#"{"flow":{"verdict":"MAYBE"}}"#,
                "verdict: unknown value \"MAYBE\"",
            ),
            (r#"{"flow":{"verdict":42}}"#, "verdict: unknown value 42"),
            (
                r#"{"flow":{"traffic_direction":"SIDEWAYS"}}"#,
                "traffic_direction: unknown value \"SIDEWAYS\"",
            ),
            (
                r#"{"flow":{"time":"yesterday"}}"#,
                "time: invalid time \"yesterday\" (expected RFC 3339, e.g. 2026-11-26T06:18:18.123456789Z)",
            ),
        ];
        for (line, message) in cases {
            match parse_line(line) {
                Err(error) => assert_eq!(error.to_string(), message, "line: {line}"),
                Ok(record) => panic!("{line} parsed as {record:?}"),
            }
        }
        // Control characters in a bad value do not reach the terminal.
        let error = parse_line("{\"flow\":{\"verdict\":\"\\u001b[2J\"}}").expect_err("bad verdict");
        assert!(!error.to_string().contains('\x1b'), "{error}");
    }

    #[test]
    fn reader_skips_bad_lines_and_reports_them() {
        let good = to_json(&sample_flows()[0]);
        let huge = format!(
            "{{\"flow\":{{\"node_name\":\"{}\"}}}}",
            "x".repeat(MAX_LINE_BYTES)
        );
        let input = format!(
            "{good}\n\nnot json\n{huge}\n{{\"lost_events\":{{}}}}\n{{\"flow\":{{\"IP\":{{\"destination\":\"::g\"}}}}}}\n{good}\n{{\"flow\":{{\"verdict\":\"DROP"
        );
        let mut reader = FlowReader::new(
            io::BufReader::with_capacity(4096, input.as_bytes()),
            "rec.jsonl",
        );
        let flows: Vec<Flow> = reader.by_ref().collect();
        assert_eq!(flows.len(), 2);
        let report = reader.into_report();
        assert_eq!(
            (
                report.lines,
                report.flows,
                report.skipped_other,
                report.rejected
            ),
            (8, 2, 1, 4)
        );
        assert_eq!(
            report.errors,
            [
                "rec.jsonl:3: invalid JSON at column 2: expected ident".to_string(),
                format!("rec.jsonl:4: line is {} bytes, over the 1048576-byte limit", huge.len()),
                "rec.jsonl:6: IP.destination: invalid address \"::g\"".to_string(),
                "rec.jsonl:8: truncated last line (no newline at end): incomplete JSON at column 24 (truncated line?)".to_string(),
            ]
        );
    }

    #[test]
    fn reader_keeps_only_the_first_errors() {
        let input = "nope\n".repeat(MAX_KEPT_ERRORS + 5);
        let mut reader = FlowReader::new(input.as_bytes(), "bad");
        assert_eq!(reader.next(), None);
        assert_eq!(reader.report().rejected, (MAX_KEPT_ERRORS + 5) as u64);
        assert_eq!(reader.report().errors.len(), MAX_KEPT_ERRORS);
        assert_eq!(
            reader.report().errors[MAX_KEPT_ERRORS - 1],
            "bad:20: invalid JSON at column 2: expected ident"
        );
    }

    #[test]
    fn hubble_labels_and_counts_are_normalised() {
        let flow = parse_flow(
            r#"{"flow":{"source":{"labels":["reserved:host","reserved:kube-apiserver","k8s:b=2","k8s:a=1","cidr:10.0.0.0/8"]},"destination":{"labels":["reserved:world-ipv4"]}},"node_name":"n1","time":"2026-01-01T00:00:00.5Z"}"#,
        );
        let src = flow.source.expect("source");
        assert_eq!(src.reserved, "host");
        assert_eq!(src.labels, ["a=1", "b=2", "cidr:10.0.0.0/8"]);
        assert_eq!(flow.destination.expect("destination").reserved, "world");
        assert_eq!(flow.node_name, "n1");
        assert_eq!(flow.time_ns, 1_767_225_600_500_000_000);
        assert_eq!((flow.packets, flow.bytes), (1, 0));
    }
}
