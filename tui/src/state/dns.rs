//! DNS at a glance: queries per name and type with their answers and
//! latency, and the search-path expansions that made NXDOMAINs.
//!
//! Names are compared lowercased and without the trailing dot, and shown that
//! way. The cluster domain is assumed to be `cluster.local`.

use std::collections::BTreeMap;
use std::time::Duration;

use skymap_proto::names::{qtype_name, rcode_name, sanitize};
use skymap_proto::v1::layer7::Record;
use skymap_proto::v1::{Flow, L7Type};

use super::endpoint_label;

const SERVFAIL: u32 = 2;
const NXDOMAIN: u32 = 3;
const CLUSTER_DOMAIN: &str = "cluster.local";

/// What happened to one query name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRow {
    pub name: String,
    /// `A`, `AAAA`, ... (`TYPE<n>` for others).
    pub qtype: String,
    /// Query records seen.
    pub queries: u64,
    /// Responses by rcode name, by name.
    pub responses: Vec<(String, u64)>,
    pub nxdomain: u64,
    pub servfail: u64,
    /// Over the responses that carried a latency.
    pub latency_p50: Option<Duration>,
    pub latency_max: Option<Duration>,
}

/// NXDOMAINs one client got while its resolver walked the search path for
/// one short name (`backend.default` tried as
/// `backend.default.default.svc.cluster.local`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPathGroup {
    /// The client: `ns/workload`, `ns/pod` or an IP.
    pub client: String,
    /// The name the client asked for, before expansion.
    pub short_name: String,
    /// `(expanded name, NXDOMAIN responses)`, by name.
    pub expansions: Vec<(String, u64)>,
    /// Sum over the expansions.
    pub nxdomain: u64,
}

/// The DNS screen's data, built from a set of flows.
#[derive(Debug, Clone, Default)]
pub struct DnsSummary {
    rows: Vec<DnsRow>,
    search_paths: Vec<SearchPathGroup>,
}

#[derive(Default)]
struct Tally {
    queries: u64,
    rcodes: BTreeMap<u32, u64>,
    latencies: Vec<u64>,
}

impl DnsSummary {
    /// Summarizes the DNS records among `flows`; the others are skipped.
    pub fn from_flows<'a>(flows: impl IntoIterator<Item = &'a Flow>) -> Self {
        let mut tallies: BTreeMap<(String, String), Tally> = BTreeMap::new();
        let mut expansions: BTreeMap<(String, String), BTreeMap<String, u64>> = BTreeMap::new();
        for flow in flows {
            let Some(l7) = &flow.l7 else { continue };
            let Some(Record::Dns(dns)) = &l7.record else {
                continue;
            };
            let name = normalize(&dns.query);
            let tally = tallies
                .entry((name.clone(), qtype_name(dns.qtype)))
                .or_default();
            let is_response = l7.r#type == L7Type::Response as i32 || flow.is_reply;
            if !is_response {
                tally.queries += 1;
                continue;
            }
            *tally.rcodes.entry(dns.rcode).or_default() += 1;
            if l7.latency_ns > 0 {
                tally.latencies.push(l7.latency_ns);
            }
            if dns.rcode == NXDOMAIN {
                // A response travels server -> client.
                let client = flow.destination.as_ref();
                let namespace = client.map_or("", |c| c.namespace.as_str());
                if let Some(short) =
                    search_path_short_name(&name, &sanitize(namespace).to_lowercase())
                {
                    *expansions
                        .entry((endpoint_label(client), short.to_string()))
                        .or_default()
                        .entry(name.clone())
                        .or_default() += 1;
                }
            }
        }
        let rows = tallies
            .into_iter()
            .map(|((name, qtype), tally)| tally.into_row(name, qtype))
            .collect();
        let search_paths = expansions
            .into_iter()
            .map(|((client, short_name), names)| SearchPathGroup {
                client,
                short_name,
                nxdomain: names.values().sum(),
                expansions: names.into_iter().collect(),
            })
            .collect();
        Self { rows, search_paths }
    }

    /// One row per (name, type), by name then type.
    pub fn rows(&self) -> &[DnsRow] {
        &self.rows
    }

    /// By client, then short name.
    pub fn search_paths(&self) -> &[SearchPathGroup] {
        &self.search_paths
    }
}

impl Tally {
    fn into_row(mut self, name: String, qtype: String) -> DnsRow {
        self.latencies.sort_unstable();
        // Nearest-rank median: the ceil(n/2)-th smallest.
        let p50 = self
            .latencies
            .len()
            .checked_sub(1)
            .map(|last| self.latencies[last / 2]);
        DnsRow {
            name,
            qtype,
            queries: self.queries,
            nxdomain: self.rcodes.get(&NXDOMAIN).copied().unwrap_or(0),
            servfail: self.rcodes.get(&SERVFAIL).copied().unwrap_or(0),
            responses: {
                let mut by_name: Vec<(String, u64)> = self
                    .rcodes
                    .iter()
                    .map(|(code, n)| (rcode_name(*code).to_string(), *n))
                    .collect();
                // Unknown codes all read RCODE_OTHER; merge them into one row.
                by_name.sort();
                by_name.dedup_by(|b, a| {
                    let same = a.0 == b.0;
                    if same {
                        a.1 += b.1;
                    }
                    same
                });
                by_name
            },
            latency_p50: p50.map(Duration::from_nanos),
            latency_max: self.latencies.last().copied().map(Duration::from_nanos),
        }
    }
}

/// Lowercased, sanitized, without the trailing dot.
fn normalize(query: &str) -> String {
    let clean = sanitize(query).to_lowercase();
    clean.strip_suffix('.').map(str::to_string).unwrap_or(clean)
}

/// The name a resolver was expanding when it asked for `name` (normalized),
/// if `name` ends in one of the search domains of a pod in `namespace`:
/// `NS.svc.cluster.local`, `svc.cluster.local`, `cluster.local`. The longest
/// suffix wins, since the shorter ones are suffixes of it.
fn search_path_short_name<'a>(name: &'a str, namespace: &str) -> Option<&'a str> {
    let mut suffixes = vec![format!("svc.{CLUSTER_DOMAIN}"), CLUSTER_DOMAIN.to_string()];
    if !namespace.is_empty() {
        suffixes.insert(0, format!("{namespace}.svc.{CLUSTER_DOMAIN}"));
    }
    suffixes.iter().find_map(|suffix| {
        let short = name.strip_suffix(suffix.as_str())?.strip_suffix('.')?;
        (!short.is_empty()).then_some(short)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_path_suffixes() {
        assert_eq!(
            search_path_short_name("backend.default.default.svc.cluster.local", "default"),
            Some("backend.default")
        );
        assert_eq!(
            search_path_short_name("backend.default.svc.cluster.local", "shop"),
            Some("backend.default")
        );
        assert_eq!(
            search_path_short_name("backend.cluster.local", "shop"),
            Some("backend")
        );
        assert_eq!(
            search_path_short_name("svc.cluster.local", "shop"),
            Some("svc")
        );
        assert_eq!(search_path_short_name("cluster.local", "shop"), None);
        assert_eq!(search_path_short_name("example.com", "shop"), None);
        assert_eq!(search_path_short_name("xcluster.local", "shop"), None);
    }
}
