//! `skymap explain`: "why was this dropped?" for the relay's recent dropped
//! flows. Drops are grouped by (source, destination, protocol, destination
//! port, drop reason); the relay explains the newest flow of each group
//! (`Observer.Explain`), and the answers are printed for people (text), for
//! `kubectl apply -f -` (the suggested policies as YAML) or for scripts (one
//! JSON object per group).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use color_eyre::eyre::{Result, eyre};
use serde::Serialize;
use skymap_proto::names::{ip_from_bytes, protocol_name, sanitize};
use skymap_proto::v1::{Endpoint, Explanation, Flow, Verdict};
use skymap_tui::actions;

use super::observe::{Item, Query, stream_from_relay};
use super::{now_ns, parse_time};
use crate::filters::FilterArgs;
use crate::{ClusterArgs, conn, kube};

/// How many dropped flows are looked at when `--last` and `--since` do not say.
const DEFAULT_LAST: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExplainOutput {
    /// Each group of drops, its explanation and the suggested fix.
    Text,
    /// Only the suggested NetworkPolicies, for `kubectl apply -f -`.
    Yaml,
    /// One JSON object per group.
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExplainArgs {
    /// Relay address: http://HOST:PORT or HOST:PORT.
    #[arg(long, env = "SKYMAP_RELAY", default_value = conn::DEFAULT_RELAY)]
    pub(crate) relay: String,
    #[command(flatten)]
    pub(crate) cluster: ClusterArgs,
    /// With --context: the namespace skymap is installed in (-n filters
    /// flows by namespace).
    #[arg(long, value_name = "NS", default_value = kube::DEFAULT_NAMESPACE, requires = "context")]
    pub(crate) relay_namespace: String,
    #[command(flatten)]
    pub(crate) filters: FilterArgs,
    /// Look at the last N dropped flows that match (default: 10000, or every
    /// one since --since).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) last: Option<u64>,
    /// Dropped flows since a time: a duration ago (30s, 5m, 1h) or RFC 3339.
    #[arg(long, value_name = "TIME")]
    pub(crate) since: Option<String>,
    /// Explain at most N groups of drops, the most recently seen first.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max: u64,
    /// Output: text, yaml (only the suggested policies: pipe it to
    /// `kubectl apply -f -`) or json (one object per group).
    #[arg(short, long, value_enum, default_value = "text")]
    pub(crate) output: ExplainOutput,
}

/// Dropped flows of one (source, destination, protocol, port, reason).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The most recent flow of the group: the one explained.
    pub newest: Flow,
    pub flows: u64,
}

/// What makes two drops the same problem.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    source: Vec<u8>,
    destination: Vec<u8>,
    protocol: i32,
    port: u32,
    reason: String,
}

impl Key {
    fn of(flow: &Flow) -> Key {
        let ip = |ep: Option<&Endpoint>| ep.map(|e| e.ip.to_vec()).unwrap_or_default();
        Key {
            source: ip(flow.source.as_ref()),
            destination: ip(flow.destination.as_ref()),
            protocol: flow.l4.as_ref().map_or(0, |l4| l4.protocol),
            port: flow.destination.as_ref().map_or(0, |d| d.port),
            reason: flow.drop_reason.clone(),
        }
    }
}

pub async fn run(args: ExplainArgs) -> Result<ExitCode> {
    let since_ns = match &args.since {
        Some(text) => parse_time("--since", text, now_ns())?,
        None => 0,
    };
    let number = match args.last {
        Some(n) => n,
        None if since_ns > 0 => 0,
        None => DEFAULT_LAST,
    };
    let query = Query {
        number,
        follow: false,
        since_ns,
        until_ns: 0,
    };
    let filters = dropped_only(&args.filters)?;
    let mut flows = Vec::new();
    let mut lost = 0;
    stream_from_relay(&args.relay, &filters, &query, |item| {
        match item {
            Item::Flow(flow) => flows.push(flow),
            Item::Lost(count) => lost += count,
        }
        Ok(())
    })
    .await?;
    if lost > 0 {
        eprintln!("skymap: {lost} flows were lost on the way: the counts may be low");
    }
    let mut groups = group(flows);
    if groups.is_empty() {
        let scope = match &args.since {
            Some(since) => format!("since {since}"),
            None => "in the relay's history".to_owned(),
        };
        eprintln!("skymap: no dropped flow matches the filters {scope}");
        return Ok(ExitCode::FAILURE);
    }
    let shown = usize::try_from(args.max).unwrap_or(usize::MAX);
    let left_out = groups.len().saturating_sub(shown);
    groups.truncate(shown);

    let mut client = conn::observer(&args.relay).await?;
    let mut explained = Vec::with_capacity(groups.len());
    for group in groups {
        let explanation = actions::explain_with(&mut client, group.newest.clone())
            .await
            .map_err(|e| eyre!("{}: {e}", args.relay))?;
        explained.push((group, explanation));
    }

    let mut out = BufWriter::new(io::stdout());
    match args.output {
        ExplainOutput::Text => write_text(&mut out, &explained, left_out)?,
        ExplainOutput::Yaml => {
            let (yaml, clashes) = suggestions_yaml(&explained);
            for name in clashes {
                eprintln!(
                    "skymap: two different suggestions are named {}; printed the one for \
                     the most recent drops",
                    sanitize(&name)
                );
            }
            if yaml.is_empty() {
                eprintln!("skymap: no NetworkPolicy to suggest: these drops are not policy drops");
            }
            out.write_all(yaml.as_bytes())?;
        }
        ExplainOutput::Json => {
            for (group, explanation) in &explained {
                serde_json::to_writer(&mut out, &JsonGroup::new(group, explanation))?;
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    if left_out > 0 && args.output != ExplainOutput::Text {
        eprintln!(
            "skymap: {} left out (--max {})",
            groups_text(left_out),
            args.max
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The filters, narrowed to dropped flows. A filter that asks only for
/// other verdicts can match no drop, so it goes.
pub fn dropped_only(filters: &FilterArgs) -> Result<FilterArgs> {
    let dropped = Verdict::Dropped as i32;
    let asks_for_drops = |verdicts: &[i32]| verdicts.is_empty() || verdicts.contains(&dropped);
    if !filters.whitelist.is_empty()
        && !filters.whitelist.iter().any(|f| asks_for_drops(&f.verdict))
    {
        return Err(eyre!(
            "--verdict: skymap explain explains DROPPED flows; the filters ask only for others"
        ));
    }
    let mut whitelist: Vec<_> = filters
        .whitelist
        .iter()
        .filter(|f| asks_for_drops(&f.verdict))
        .cloned()
        .collect();
    if whitelist.is_empty() {
        whitelist.push(Default::default());
    }
    for filter in &mut whitelist {
        filter.verdict = vec![dropped];
    }
    Ok(FilterArgs {
        whitelist,
        blacklist: filters.blacklist.clone(),
    })
}

/// Groups dropped flows, the most recently seen group first (more flows
/// first on a tie). Flows that were not dropped are ignored.
pub fn group(flows: impl IntoIterator<Item = Flow>) -> Vec<Group> {
    let mut groups: HashMap<Key, Group> = HashMap::new();
    for flow in flows {
        if flow.verdict != Verdict::Dropped as i32 {
            continue;
        }
        let group = groups.entry(Key::of(&flow)).or_insert_with(|| Group {
            newest: flow.clone(),
            flows: 0,
        });
        group.flows += 1;
        if flow.time_ns >= group.newest.time_ns {
            group.newest = flow;
        }
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by(|a, b| {
        b.newest
            .time_ns
            .cmp(&a.newest.time_ns)
            .then(b.flows.cmp(&a.flows))
    });
    groups
}

/// `namespace/pod`, else the address; sanitized.
fn endpoint_name(endpoint: Option<&Endpoint>) -> String {
    let Some(ep) = endpoint else {
        return "?".to_owned();
    };
    if !ep.pod_name.is_empty() {
        return match ep.namespace.is_empty() {
            true => sanitize(&ep.pod_name).into_owned(),
            false => format!("{}/{}", sanitize(&ep.namespace), sanitize(&ep.pod_name)),
        };
    }
    ip_from_bytes(&ep.ip).map_or_else(|| "?".to_owned(), |ip| ip.to_string())
}

/// `UDP/53`, or the protocol alone without a port.
fn port_text(flow: &Flow) -> String {
    let protocol = protocol_name(flow.l4.as_ref().map_or(0, |l4| l4.protocol));
    match flow.destination.as_ref().map_or(0, |d| d.port) {
        0 => protocol.to_owned(),
        port => format!("{protocol}/{port}"),
    }
}

fn groups_text(n: usize) -> String {
    match n {
        1 => "1 more group of drops".to_owned(),
        _ => format!("{n} more groups of drops"),
    }
}

/// The header line of a group: who, where, why, how often, when.
pub fn header(group: &Group) -> String {
    let flow = &group.newest;
    let reason = match flow.drop_reason.as_str() {
        "" => "no drop reason".to_owned(),
        reason => sanitize(reason).into_owned(),
    };
    format!(
        "{} -> {} {} {reason}: {} {}, last seen {}",
        endpoint_name(flow.source.as_ref()),
        endpoint_name(flow.destination.as_ref()),
        port_text(flow),
        group.flows,
        if group.flows == 1 { "flow" } else { "flows" },
        skymap_tui::output::compact_time(flow.time_ns),
    )
}

fn write_text(
    out: &mut impl Write,
    explained: &[(Group, Explanation)],
    left_out: usize,
) -> io::Result<()> {
    for (i, (group, explanation)) in explained.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        let repeated = explained[..i]
            .iter()
            .any(|(_, earlier)| earlier.suggested_policy_yaml == explanation.suggested_policy_yaml);
        writeln!(out, "{}", text_block(group, explanation, repeated))?;
    }
    if left_out > 0 {
        writeln!(
            out,
            "\n{} left out: show more with --max, or narrow with filters",
            groups_text(left_out)
        )?;
    }
    Ok(())
}

/// One group for people: the header, the summary, the details indented,
/// the policies to blame and the fix (named only when `repeated`: an
/// earlier group printed the same). Everything from the relay is sanitized.
pub fn text_block(group: &Group, explanation: &Explanation, repeated: bool) -> String {
    let mut text = header(group);
    let _ = write!(text, "\n  {}", sanitize(&explanation.summary));
    for detail in &explanation.details {
        let _ = write!(text, "\n    {}", sanitize(detail));
    }
    if !explanation.policies.is_empty() {
        let names: Vec<_> = explanation.policies.iter().map(|p| sanitize(p)).collect();
        let _ = write!(text, "\n  denied by: {}", names.join(", "));
    }
    let yaml = &explanation.suggested_policy_yaml;
    if repeated && !yaml.is_empty() {
        let names: Vec<_> = documents(yaml).iter().map(|d| policy_name(d)).collect();
        let _ = write!(
            text,
            "\n  To allow it, apply the same as above: {}",
            sanitize(&names.join(", "))
        );
    } else if !yaml.is_empty() {
        text.push_str("\n  To allow it, apply (kubectl apply -f -):");
        for line in explanation.suggested_policy_yaml.lines() {
            let _ = write!(text, "\n    {}", sanitize(line));
        }
    }
    text
}

/// The suggested policies of every group as one YAML stream, each policy
/// once (by namespace and name, the first group's kept), and the names
/// suggested twice with different contents.
pub fn suggestions_yaml(explained: &[(Group, Explanation)]) -> (String, Vec<String>) {
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut clashes = Vec::new();
    for (_, explanation) in explained {
        for document in documents(&explanation.suggested_policy_yaml) {
            let name = policy_name(&document);
            match seen.iter().find(|(n, _)| *n == name) {
                Some((_, kept)) if *kept != document => {
                    if !clashes.contains(&name) {
                        clashes.push(name);
                    }
                }
                Some(_) => {}
                None => seen.push((name, document)),
            }
        }
    }
    let mut yaml = String::new();
    for (i, (_, document)) in seen.iter().enumerate() {
        if i > 0 {
            yaml.push_str("---\n");
        }
        for line in document.lines() {
            yaml.push_str(&sanitize(line));
            yaml.push('\n');
        }
    }
    (yaml, clashes)
}

/// The documents of a YAML stream, split at `---` lines; empty ones dropped.
fn documents(yaml: &str) -> Vec<String> {
    let mut documents = vec![String::new()];
    for line in yaml.lines() {
        if line.trim_end() == "---" {
            documents.push(String::new());
        } else if let Some(current) = documents.last_mut() {
            current.push_str(line);
            current.push('\n');
        }
    }
    documents.retain(|d| !d.trim().is_empty());
    documents
}

/// `namespace/name` from a policy document's top-level `metadata`, read
/// line by line (the relay writes block-style YAML); the whole document
/// when it has no name, so that unnamed documents are never merged.
fn policy_name(document: &str) -> String {
    let mut in_metadata = false;
    let (mut namespace, mut name) = (None, None);
    for line in document.lines() {
        if !line.starts_with(' ') {
            in_metadata = line.trim_end() == "metadata:";
            continue;
        }
        let field = line.trim_start();
        // Only metadata's own fields, not those of labels or annotations.
        if !in_metadata || line.len() - field.len() != 2 {
            continue;
        }
        if let Some(value) = field.strip_prefix("name:") {
            name = Some(value.trim().trim_matches(['\'', '"']).to_owned());
        } else if let Some(value) = field.strip_prefix("namespace:") {
            namespace = Some(value.trim().trim_matches(['\'', '"']).to_owned());
        }
    }
    match (namespace, name) {
        (namespace, Some(name)) => format!("{}/{name}", namespace.unwrap_or_default()),
        (_, None) => document.to_owned(),
    }
}

/// One group for scripts.
#[derive(Debug, Serialize)]
struct JsonGroup<'a> {
    source: JsonEndpoint<'a>,
    destination: JsonEndpoint<'a>,
    protocol: &'static str,
    port: u32,
    drop_reason: &'a str,
    flows: u64,
    last_seen: String,
    node: &'a str,
    kind: &'a str,
    summary: &'a str,
    details: &'a [String],
    policies: &'a [String],
    suggested_policy_yaml: &'a str,
}

#[derive(Debug, Serialize)]
struct JsonEndpoint<'a> {
    ip: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pod: &'a str,
}

impl<'a> JsonEndpoint<'a> {
    fn new(endpoint: Option<&'a Endpoint>) -> Self {
        JsonEndpoint {
            ip: endpoint
                .and_then(|e| ip_from_bytes(&e.ip))
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            namespace: endpoint.map_or("", |e| e.namespace.as_str()),
            pod: endpoint.map_or("", |e| e.pod_name.as_str()),
        }
    }
}

impl<'a> JsonGroup<'a> {
    fn new(group: &'a Group, explanation: &'a Explanation) -> Self {
        let flow = &group.newest;
        JsonGroup {
            source: JsonEndpoint::new(flow.source.as_ref()),
            destination: JsonEndpoint::new(flow.destination.as_ref()),
            protocol: protocol_name(flow.l4.as_ref().map_or(0, |l4| l4.protocol)),
            port: flow.destination.as_ref().map_or(0, |d| d.port),
            drop_reason: &flow.drop_reason,
            flows: group.flows,
            last_seen: skymap_tui::output::rfc3339(flow.time_ns),
            node: &flow.node_name,
            kind: &explanation.kind,
            summary: &explanation.summary,
            details: &explanation.details,
            policies: &explanation.policies,
            suggested_policy_yaml: &explanation.suggested_policy_yaml,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use skymap_proto::names::ip_to_bytes;
    use skymap_proto::v1::{FlowFilter, Layer4, Protocol};

    use super::*;

    fn drop(src: u8, dst: u8, port: u32, reason: &str, time_ns: i64) -> Flow {
        let endpoint = |last: u8, port: u32| Endpoint {
            ip: ip_to_bytes(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))),
            port,
            ..Endpoint::default()
        };
        Flow {
            time_ns,
            verdict: Verdict::Dropped as i32,
            drop_reason: reason.to_owned(),
            source: Some(endpoint(src, 40000 + u32::from(dst))),
            destination: Some(endpoint(dst, port)),
            l4: Some(Layer4 {
                protocol: Protocol::Udp as i32,
                ..Layer4::default()
            }),
            ..Flow::default()
        }
    }

    #[test]
    fn drops_group_by_addresses_port_and_reason_newest_first() {
        let mut forwarded = drop(1, 2, 53, "", 9);
        forwarded.verdict = Verdict::Forwarded as i32;
        let groups = group([
            drop(1, 2, 53, "NETFILTER_DROP", 1),
            drop(1, 2, 53, "NETFILTER_DROP", 5),
            drop(1, 3, 53, "NETFILTER_DROP", 4),
            drop(1, 2, 53, "NO_SOCKET", 2),
            drop(1, 2, 53, "NETFILTER_DROP", 3),
            forwarded,
        ]);
        let summary: Vec<(i64, u64, &str)> = groups
            .iter()
            .map(|g| (g.newest.time_ns, g.flows, g.newest.drop_reason.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (5, 3, "NETFILTER_DROP"),
                (4, 1, "NETFILTER_DROP"),
                (2, 1, "NO_SOCKET")
            ]
        );
        assert_eq!(
            header(&groups[0]),
            "10.0.0.1 -> 10.0.0.2 UDP/53 NETFILTER_DROP: 3 flows, last seen Jan  1 00:00:00.000"
        );
    }

    #[test]
    fn filters_are_narrowed_to_drops() {
        let verdicts = |v: &[Verdict]| FlowFilter {
            verdict: v.iter().map(|v| *v as i32).collect(),
            destination_port: vec![53],
            ..FlowFilter::default()
        };
        let none = dropped_only(&FilterArgs::default()).expect("no filters");
        assert_eq!(
            none.whitelist,
            [FlowFilter {
                verdict: vec![Verdict::Dropped as i32],
                ..FlowFilter::default()
            }]
        );
        let args = FilterArgs {
            whitelist: vec![
                verdicts(&[Verdict::Forwarded]),
                verdicts(&[]),
                verdicts(&[Verdict::Dropped, Verdict::Error]),
            ],
            blacklist: vec![verdicts(&[])],
        };
        let narrowed = dropped_only(&args).expect("some ask for drops");
        assert_eq!(
            narrowed.whitelist,
            [verdicts(&[Verdict::Dropped]), verdicts(&[Verdict::Dropped])]
        );
        assert_eq!(narrowed.blacklist, [verdicts(&[])]);
        let forwarded = FilterArgs {
            whitelist: vec![verdicts(&[Verdict::Forwarded])],
            blacklist: Vec::new(),
        };
        let err = dropped_only(&forwarded).expect_err("only forwarded");
        assert!(err.to_string().starts_with("--verdict:"), "{err}");
    }

    #[test]
    fn hostile_names_are_sanitized_in_text() {
        let mut flow = drop(1, 2, 53, "NETFILTER_DROP\u{1b}[2J", 0);
        if let Some(source) = flow.source.as_mut() {
            source.namespace = "shop".to_owned();
            source.pod_name = "evil\u{1b}]0;owned\u{7}".to_owned();
        }
        let group = Group {
            newest: flow,
            flows: 1,
        };
        let explanation = Explanation {
            kind: "policy".to_owned(),
            summary: "denied \u{1b}[31m".to_owned(),
            details: vec!["detail\u{9b}".to_owned()],
            policies: vec!["shop/p\u{202e}".to_owned()],
            suggested_policy_yaml: "metadata:\n  name: x\u{1b}\n".to_owned(),
        };
        let text = text_block(&group, &explanation, false);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(!text.contains('\u{202e}'));
        assert!(
            text.starts_with("shop/evil\u{fffd}]0;owned\u{fffd} -> 10.0.0.2 UDP/53"),
            "{text}"
        );
    }

    #[test]
    fn suggestions_are_merged_by_name() {
        let policy = |name: &str, port: u16| {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  \
                 labels:\n    name: not-this\n  name: {name}\n  namespace: shop\nspec:\n  \
                 ports: {port}\n"
            )
        };
        let explained = |yaml: String| {
            (
                Group {
                    newest: Flow::default(),
                    flows: 1,
                },
                Explanation {
                    suggested_policy_yaml: yaml,
                    ..Explanation::default()
                },
            )
        };
        let (yaml, clashes) = suggestions_yaml(&[
            explained(format!("{}---\n{}", policy("a", 53), policy("b", 53))),
            explained(policy("a", 53)),
            explained(String::new()),
            explained(policy("b", 80)),
        ]);
        assert_eq!(yaml, format!("{}---\n{}", policy("a", 53), policy("b", 53)));
        assert_eq!(clashes, ["shop/b"]);
        assert_eq!(policy_name(&policy("a", 1)), "shop/a");
    }
}
