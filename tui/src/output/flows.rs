//! Flows as `skymap observe` prints them: compact lines (like
//! `hubble observe`), JSON lines (the recording format) or a table.
//!
//! Every string that came from a flow goes through
//! [`sanitize`](skymap_proto::names::sanitize) first, so a hostile pod name
//! or DNS query cannot drive the terminal. Times are UTC.

use std::fmt::Write as _;
use std::io::{self, Write};

use skymap_proto::jsonl;
use skymap_proto::names::{
    ip_from_bytes, observation_point_name, protocol_name, qtype_name, rcode_name, sanitize,
    tcp_flag_names, verdict_name,
};
use skymap_proto::v1::layer7::Record;
use skymap_proto::v1::{Endpoint, Flow, L7Type, Protocol};

use super::{compact_time, duration, truncate};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowFormat {
    Compact,
    Json,
    Table,
}

const HEADER: [&str; 7] = [
    "TIMESTAMP",
    "NODE",
    "SOURCE",
    "DESTINATION",
    "TYPE",
    "VERDICT",
    "SUMMARY",
];

/// Column widths while following, when rows cannot be measured first. The
/// last column (summary) is never cut.
const FOLLOW_WIDTHS: [usize; 6] = [19, 12, 40, 40, 13, 10];

const GAP: &str = "  ";

#[derive(Debug)]
enum Row {
    Flow([String; 7]),
    Lost(u64),
}

/// Prints flows one by one in the chosen format.
#[derive(Debug)]
pub struct FlowPrinter<W: Write> {
    out: W,
    format: FlowFormat,
    follow: bool,
    /// Table rows held back until [`FlowPrinter::finish`] to size the columns.
    rows: Vec<Row>,
    header_written: bool,
}

impl<W: Write> FlowPrinter<W> {
    /// `follow`: flows keep coming, so each line is flushed as it is printed
    /// and the table uses fixed column widths instead of waiting for the end.
    pub fn new(out: W, format: FlowFormat, follow: bool) -> Self {
        Self {
            out,
            format,
            follow,
            rows: Vec::new(),
            header_written: false,
        }
    }

    pub fn print(&mut self, flow: &Flow) -> io::Result<()> {
        match self.format {
            FlowFormat::Json => jsonl::write_flow(&mut self.out, flow)?,
            FlowFormat::Compact => writeln!(self.out, "{}", compact_line(flow))?,
            FlowFormat::Table if self.follow => {
                self.write_header_once()?;
                let row = table_row(flow);
                let mut line = String::new();
                for (cell, width) in row.iter().zip(FOLLOW_WIDTHS) {
                    let _ = write!(line, "{:<width$}{GAP}", truncate(cell, width));
                }
                line.push_str(&row[6]);
                writeln!(self.out, "{line}")?;
            }
            FlowFormat::Table => self.rows.push(Row::Flow(table_row(flow))),
        }
        self.flush_if_following()
    }

    /// Says that `count` flows were lost on the way (this client read too
    /// slowly).
    pub fn lost(&mut self, count: u64) -> io::Result<()> {
        match self.format {
            FlowFormat::Json => writeln!(
                self.out,
                r#"{{"lost_events":{{"num_events_lost":{count}}}}}"#
            )?,
            FlowFormat::Table if !self.follow => self.rows.push(Row::Lost(count)),
            FlowFormat::Table => {
                self.write_header_once()?;
                writeln!(self.out, "{}", lost_line(count))?;
            }
            FlowFormat::Compact => writeln!(self.out, "{}", lost_line(count))?,
        }
        self.flush_if_following()
    }

    /// Writes what was held back (the table) and flushes.
    pub fn finish(mut self) -> io::Result<()> {
        if self.format == FlowFormat::Table {
            self.write_table()?;
        }
        self.out.flush()
    }

    fn flush_if_following(&mut self) -> io::Result<()> {
        if self.follow {
            self.out.flush()
        } else {
            Ok(())
        }
    }

    fn write_header_once(&mut self) -> io::Result<()> {
        if self.header_written {
            return Ok(());
        }
        self.header_written = true;
        let mut line = String::new();
        for (title, width) in HEADER.iter().zip(FOLLOW_WIDTHS) {
            let _ = write!(line, "{title:<width$}{GAP}");
        }
        line.push_str(HEADER[6]);
        writeln!(self.out, "{line}")
    }

    fn write_table(&mut self) -> io::Result<()> {
        if self.follow {
            return self.write_header_once();
        }
        let mut widths = HEADER.map(|title| title.chars().count());
        for row in &self.rows {
            if let Row::Flow(cells) = row {
                for (width, cell) in widths.iter_mut().zip(cells) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }
        let line = |cells: [&str; 7]| {
            let mut line = String::new();
            for (cell, width) in cells.iter().zip(widths).take(6) {
                let _ = write!(line, "{cell:<width$}{GAP}");
            }
            line.push_str(cells[6]);
            line
        };
        writeln!(self.out, "{}", line(HEADER))?;
        for row in std::mem::take(&mut self.rows) {
            match row {
                Row::Flow(cells) => {
                    writeln!(self.out, "{}", line(cells.each_ref().map(String::as_str)))?
                }
                Row::Lost(count) => writeln!(self.out, "{}", lost_line(count))?,
            }
        }
        Ok(())
    }
}

fn lost_line(count: u64) -> String {
    format!("EVENTS LOST: {count} flows (this client did not keep up)")
}

/// `Nov 26 06:18:18.123 [node-1]: SRC -> DST TYPE VERDICT (REASON) SUMMARY`.
/// Replies are printed server first with `<-`, as Hubble does, so a
/// conversation reads client-left.
pub fn compact_line(flow: &Flow) -> String {
    let mut line = compact_time(flow.time_ns);
    if !flow.node_name.is_empty() {
        let _ = write!(line, " [{}]", sanitize(&flow.node_name));
    }
    let source = endpoint_text(flow.source.as_ref(), true);
    let destination = endpoint_text(flow.destination.as_ref(), true);
    if flow.is_reply {
        let _ = write!(line, ": {destination} <- {source}");
    } else {
        let _ = write!(line, ": {source} -> {destination}");
    }
    if let Some(kind) = event_type(flow) {
        let _ = write!(line, " {kind}");
    }
    let _ = write!(line, " {}", verdict_name(flow.verdict));
    let tail = verdict_tail(flow);
    if !tail.is_empty() {
        line.push(' ');
        line.push_str(&tail);
    }
    line
}

/// `[time, node, source, destination, type, verdict, reason and summary]`,
/// sanitized.
pub fn table_row(flow: &Flow) -> [String; 7] {
    [
        compact_time(flow.time_ns),
        sanitize(&flow.node_name).into_owned(),
        endpoint_text(flow.source.as_ref(), false),
        endpoint_text(flow.destination.as_ref(), false),
        event_type(flow).unwrap_or_else(|| "-".to_string()),
        verdict_name(flow.verdict).to_string(),
        verdict_tail(flow),
    ]
}

/// `ns/pod:port`, or `IP:port` without a pod. `annotate` adds what the
/// endpoint is in parentheses: its reserved identity (`world`, `host`), else
/// its service, else its workload. The table shows only the identity.
fn endpoint_text(endpoint: Option<&Endpoint>, annotate: bool) -> String {
    let Some(ep) = endpoint else {
        return "?".to_string();
    };
    let ip = ip_from_bytes(&ep.ip);
    let mut text = if !ep.pod_name.is_empty() {
        match ep.namespace.is_empty() {
            true => sanitize(&ep.pod_name).into_owned(),
            false => format!("{}/{}", sanitize(&ep.namespace), sanitize(&ep.pod_name)),
        }
    } else {
        match ip {
            Some(std::net::IpAddr::V6(v6)) if ep.port != 0 => format!("[{v6}]"),
            Some(ip) => ip.to_string(),
            None => "?".to_string(),
        }
    };
    if ep.port != 0 {
        let _ = write!(text, ":{}", ep.port);
    }
    let workload = ep.workload.as_ref().map_or("", |w| w.name.as_str());
    let note = if !ep.reserved.is_empty() {
        ep.reserved.as_str()
    } else if !annotate {
        ""
    } else if !ep.service.is_empty() {
        ep.service.as_str()
    } else {
        workload
    };
    if !note.is_empty() {
        let _ = write!(text, " ({})", sanitize(note));
    }
    text
}

/// Where the record was taken, Hubble-style (`to-endpoint`, `kernel-drop`).
fn event_type(flow: &Flow) -> Option<String> {
    let name = observation_point_name(flow.observation_point);
    (flow.observation_point != 0 && !name.ends_with("UNKNOWN"))
        .then(|| name.to_ascii_lowercase().replace('_', "-"))
}

/// What follows the verdict: the drop reason in parentheses, then the summary.
fn verdict_tail(flow: &Flow) -> String {
    let mut tail = String::new();
    match (flow.drop_reason.is_empty(), flow.policy_reason.is_empty()) {
        (true, true) => {}
        (false, true) => {
            let _ = write!(tail, "({})", sanitize(&flow.drop_reason));
        }
        (true, false) => {
            let _ = write!(tail, "(policy {})", sanitize(&flow.policy_reason));
        }
        (false, false) => {
            let _ = write!(
                tail,
                "({} policy {})",
                sanitize(&flow.drop_reason),
                sanitize(&flow.policy_reason)
            );
        }
    }
    let summary = summary(flow);
    if !tail.is_empty() && !summary.is_empty() {
        tail.push(' ');
    }
    tail.push_str(&summary);
    tail
}

/// Protocol, then DNS query/answer, HTTP request/response, TCP flags or
/// ICMP type.
fn summary(flow: &Flow) -> String {
    let l4 = flow.l4.unwrap_or_default();
    let mut parts: Vec<String> = Vec::new();
    if l4.protocol != Protocol::Unknown as i32 {
        parts.push(protocol_name(l4.protocol).to_string());
    }
    let l7 = flow.l7.as_ref();
    let l7_type = l7.map_or(0, |l7| l7.r#type);
    let latency = l7
        .map(|l7| l7.latency_ns)
        .filter(|ns| *ns > 0)
        .map(duration);
    match l7.and_then(|l7| l7.record.as_ref()) {
        Some(Record::Dns(dns)) => {
            let answer = l7_type == L7Type::Response as i32
                || (l7_type != L7Type::Request as i32 && (dns.rcode != 0 || !dns.ips.is_empty()));
            parts.push(if answer { "DNS Answer" } else { "DNS Query" }.to_string());
            parts.push(sanitize(&dns.query).into_owned());
            if dns.qtype != 0 {
                parts.push(qtype_name(dns.qtype));
            }
            if answer {
                parts.push(rcode_name(dns.rcode).to_string());
                if !dns.ips.is_empty() {
                    let ips: Vec<_> = dns.ips.iter().map(|ip| sanitize(ip)).collect();
                    parts.push(ips.join(","));
                }
                parts.extend(latency);
            }
        }
        Some(Record::Http(http)) => {
            let response = l7_type == L7Type::Response as i32 || http.code != 0;
            parts.push("HTTP".to_string());
            if response && http.code != 0 {
                parts.push(http.code.to_string());
            }
            for text in [&http.method, &http.url] {
                if !text.is_empty() {
                    parts.push(sanitize(text).into_owned());
                }
            }
            if response {
                parts.extend(latency);
            }
        }
        None if l4.protocol == Protocol::Tcp as i32 => {
            let flags = tcp_flag_names(l4.tcp_flags);
            if !flags.is_empty() {
                parts.push(format!("Flags: {}", flags.join(", ")));
            }
            if l4.handshake_ns > 0 {
                parts.push(format!("handshake {}", duration(l4.handshake_ns)));
            }
        }
        None if l4.protocol == Protocol::Icmpv4 as i32
            || l4.protocol == Protocol::Icmpv6 as i32 =>
        {
            parts.push(format!("type {} code {}", l4.icmp_type, l4.icmp_code));
        }
        None => {}
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use skymap_proto::names::ip_to_bytes;
    use skymap_proto::v1::{
        Dns, Http, Layer4, Layer7, ObservationPoint, TcpFlag, Verdict, Workload,
    };

    // 2026-11-26T06:18:18.123Z
    const T: i64 = 1_795_673_898_123_000_000;

    fn endpoint(ns: &str, pod: &str, ip: &str, port: u32) -> Endpoint {
        Endpoint {
            ip: ip_to_bytes(ip.parse().expect("test ip")),
            port,
            namespace: ns.into(),
            pod_name: pod.into(),
            ..Default::default()
        }
    }

    fn dns_drop() -> Flow {
        let mut src = endpoint("default", "frontend-7d9f-abcde", "10.244.1.7", 43210);
        src.workload = Some(Workload {
            name: "frontend".into(),
            kind: "Deployment".into(),
        });
        let mut dst = endpoint("kube-system", "coredns-5d-x2v", "10.96.0.10", 53);
        dst.service = "kube-dns".into();
        Flow {
            time_ns: T,
            node_name: "node-1".into(),
            verdict: Verdict::Dropped as i32,
            drop_reason: "NETFILTER_DROP".into(),
            source: Some(src),
            destination: Some(dst),
            l4: Some(Layer4 {
                protocol: Protocol::Udp as i32,
                ..Default::default()
            }),
            l7: Some(Layer7 {
                r#type: L7Type::Request as i32,
                record: Some(Record::Dns(Dns {
                    query: "kube-dns.kube-system.svc.cluster.local.".into(),
                    qtype: 1,
                    ..Default::default()
                })),
                ..Default::default()
            }),
            observation_point: ObservationPoint::FromEndpoint as i32,
            ..Default::default()
        }
    }

    fn http_response() -> Flow {
        Flow {
            time_ns: T + 2_000_000,
            node_name: "node-2".into(),
            verdict: Verdict::Forwarded as i32,
            source: Some(endpoint("default", "backend-1", "10.244.2.3", 8080)),
            destination: Some(endpoint(
                "default",
                "frontend-7d9f-abcde",
                "10.244.1.7",
                43211,
            )),
            is_reply: true,
            l4: Some(Layer4 {
                protocol: Protocol::Tcp as i32,
                ..Default::default()
            }),
            l7: Some(Layer7 {
                r#type: L7Type::Response as i32,
                latency_ns: 12_400_000,
                record: Some(Record::Http(Http {
                    method: "GET".into(),
                    url: "/api/v1/users".into(),
                    code: 503,
                    ..Default::default()
                })),
            }),
            observation_point: ObservationPoint::ToEndpoint as i32,
            ..Default::default()
        }
    }

    fn syn_to_world() -> Flow {
        let mut dst = endpoint("", "", "2001:db8::7", 443);
        dst.reserved = "world".into();
        Flow {
            time_ns: T + 5_000_000_000,
            verdict: Verdict::Forwarded as i32,
            source: Some(endpoint("default", "backend-1", "10.244.2.3", 51000)),
            destination: Some(dst),
            l4: Some(Layer4 {
                protocol: Protocol::Tcp as i32,
                tcp_flags: TcpFlag::Syn as u32 | TcpFlag::Ack as u32,
                handshake_ns: 1_500_000,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn print_all(format: FlowFormat, follow: bool, flows: &[Flow], lost: Option<u64>) -> String {
        let mut out = Vec::new();
        let mut printer = FlowPrinter::new(&mut out, format, follow);
        for (index, flow) in flows.iter().enumerate() {
            printer.print(flow).expect("print");
            if index == 0
                && let Some(count) = lost
            {
                printer.lost(count).expect("lost");
            }
        }
        printer.finish().expect("finish");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn compact_reads_like_hubble() {
        let text = print_all(
            FlowFormat::Compact,
            false,
            &[dns_drop(), http_response(), syn_to_world()],
            Some(7),
        );
        insta::assert_snapshot!(text, @r"
        Nov 26 06:18:18.123 [node-1]: default/frontend-7d9f-abcde:43210 (frontend) -> kube-system/coredns-5d-x2v:53 (kube-dns) from-endpoint DROPPED (NETFILTER_DROP) UDP DNS Query kube-dns.kube-system.svc.cluster.local. A
        EVENTS LOST: 7 flows (this client did not keep up)
        Nov 26 06:18:18.125 [node-2]: default/frontend-7d9f-abcde:43211 <- default/backend-1:8080 to-endpoint FORWARDED TCP HTTP 503 GET /api/v1/users 12ms
        Nov 26 06:18:23.123: default/backend-1:51000 -> [2001:db8::7]:443 (world) FORWARDED TCP Flags: SYN, ACK handshake 1.5ms
        ");
    }

    #[test]
    fn dns_answer_and_policy_drop() {
        let mut answer = dns_drop();
        answer.verdict = Verdict::Forwarded as i32;
        answer.drop_reason.clear();
        answer.l7 = Some(Layer7 {
            r#type: L7Type::Response as i32,
            latency_ns: 2_140_000,
            record: Some(Record::Dns(Dns {
                query: "api.example.".into(),
                qtype: 28,
                rcode: 3,
                ips: vec!["2001:db8::1".into(), "2001:db8::2".into()],
                ..Default::default()
            })),
        });
        assert!(
            compact_line(&answer).ends_with(
                "FORWARDED UDP DNS Answer api.example. AAAA NXDOMAIN 2001:db8::1,2001:db8::2 2.1ms"
            ),
            "{}",
            compact_line(&answer)
        );
        let mut denied = syn_to_world();
        denied.verdict = Verdict::Dropped as i32;
        denied.drop_reason = "POLICY_DENIED".into();
        denied.policy_reason = "default/deny-egress".into();
        denied.l4 = Some(Layer4 {
            protocol: Protocol::Icmpv4 as i32,
            icmp_type: 8,
            ..Default::default()
        });
        assert!(
            compact_line(&denied).ends_with(
                "DROPPED (POLICY_DENIED policy default/deny-egress) ICMPv4 type 8 code 0"
            ),
            "{}",
            compact_line(&denied)
        );
    }

    #[test]
    fn table_aligns_columns_at_the_end() {
        let text = print_all(
            FlowFormat::Table,
            false,
            &[dns_drop(), http_response(), syn_to_world()],
            Some(2),
        );
        insta::assert_snapshot!(text, @r#"
        TIMESTAMP            NODE    SOURCE                             DESTINATION                        TYPE           VERDICT    SUMMARY
        Nov 26 06:18:18.123  node-1  default/frontend-7d9f-abcde:43210  kube-system/coredns-5d-x2v:53      from-endpoint  DROPPED    (NETFILTER_DROP) UDP DNS Query kube-dns.kube-system.svc.cluster.local. A
        EVENTS LOST: 2 flows (this client did not keep up)
        Nov 26 06:18:18.125  node-2  default/backend-1:8080             default/frontend-7d9f-abcde:43211  to-endpoint    FORWARDED  TCP HTTP 503 GET /api/v1/users 12ms
        Nov 26 06:18:23.123          default/backend-1:51000            [2001:db8::7]:443 (world)          -              FORWARDED  TCP Flags: SYN, ACK handshake 1.5ms
        "#);
    }

    #[test]
    fn table_while_following_uses_fixed_widths() {
        let mut long = dns_drop();
        if let Some(src) = long.source.as_mut() {
            src.pod_name = "a-very-long-pod-name-that-does-not-fit-the-column".into();
        }
        let text = print_all(FlowFormat::Table, true, &[long], None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("TIMESTAMP            NODE          SOURCE  "));
        let source: String = lines[1].chars().skip(19 + 2 + 12 + 2).take(42).collect();
        assert_eq!(source, "default/a-very-long-pod-name-that-does-…  ");
        assert!(
            lines[1].ends_with(
                "(NETFILTER_DROP) UDP DNS Query kube-dns.kube-system.svc.cluster.local. A"
            )
        );
        // Header only once, and printed even with no flows.
        assert_eq!(
            print_all(FlowFormat::Table, true, &[], None)
                .lines()
                .count(),
            1
        );
        assert_eq!(
            print_all(FlowFormat::Table, false, &[], None)
                .lines()
                .count(),
            1
        );
    }

    #[test]
    fn json_is_the_recording_format() {
        let flow = dns_drop();
        let text = print_all(
            FlowFormat::Json,
            false,
            std::slice::from_ref(&flow),
            Some(3),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], jsonl::to_json(&flow));
        assert_eq!(lines[1], r#"{"lost_events":{"num_events_lost":3}}"#);
        let value: serde_json::Value = serde_json::from_str(lines[1]).expect("json");
        assert_eq!(value["lost_events"]["num_events_lost"], 3);
    }

    #[test]
    fn hostile_strings_are_sanitized() {
        let mut flow = dns_drop();
        if let Some(src) = flow.source.as_mut() {
            src.pod_name = "evil\x1b]0;pwned\x07\x1b[2J".into();
            src.namespace = "ns\x1b[31m".into();
        }
        flow.node_name = "node\x1b[1A".into();
        flow.drop_reason = "X\x1bc".into();
        if let Some(Layer7 {
            record: Some(Record::Dns(dns)),
            ..
        }) = flow.l7.as_mut()
        {
            dns.query = "a\x1b[6n.example.".into();
        }
        for format in [FlowFormat::Compact, FlowFormat::Table] {
            for follow in [false, true] {
                let text = print_all(format, follow, &[flow.clone()], None);
                assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
                assert!(
                    text.contains("pwned") && text.contains("example."),
                    "{text:?}"
                );
            }
        }
    }
}
