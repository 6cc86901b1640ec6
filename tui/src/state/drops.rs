//! The "why is this failing" screen's data: dropped flows grouped by path
//! and reason.

use std::collections::HashMap;

use skymap_proto::names::{protocol_name, sanitize};
use skymap_proto::v1::{Flow, Verdict};

use super::endpoint_label;

/// Dropped flows that share a path and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropRow {
    /// `ns/workload`, `ns/pod`, an IP, `world`/`host`, or `unknown`.
    pub source: String,
    pub destination: String,
    /// The destination port; 0 for protocols without ports.
    pub port: u32,
    /// `TCP`, `UDP`, ...
    pub protocol: String,
    /// The drop reason, `UNKNOWN` when the record had none.
    pub reason: String,
    /// The responsible policy, when known.
    pub policy: String,
    /// Dropped flow records in the group.
    pub count: u64,
    /// The newest record's time (Unix nanoseconds).
    pub newest_ns: i64,
}

/// Groups of dropped flows, newest first.
#[derive(Debug, Clone, Default)]
pub struct DropSummary {
    rows: Vec<DropRow>,
}

type Key = (String, String, u32, String, String, String);

impl DropSummary {
    /// Groups the DROPPED flows among `flows`; the others are skipped.
    pub fn from_flows<'a>(flows: impl IntoIterator<Item = &'a Flow>) -> Self {
        let mut groups: HashMap<Key, (u64, i64)> = HashMap::new();
        for flow in flows {
            if flow.verdict != Verdict::Dropped as i32 {
                continue;
            }
            let reason = if flow.drop_reason.is_empty() {
                "UNKNOWN".to_string()
            } else {
                sanitize(&flow.drop_reason).into_owned()
            };
            let key = (
                endpoint_label(flow.source.as_ref()),
                endpoint_label(flow.destination.as_ref()),
                flow.destination.as_ref().map_or(0, |d| d.port),
                protocol_name(flow.l4.as_ref().map_or(0, |l4| l4.protocol)).to_string(),
                reason,
                sanitize(&flow.policy_reason).into_owned(),
            );
            let entry = groups.entry(key).or_insert((0, i64::MIN));
            entry.0 += 1;
            entry.1 = entry.1.max(flow.time_ns);
        }
        let mut rows: Vec<DropRow> = groups
            .into_iter()
            .map(
                |((source, destination, port, protocol, reason, policy), (count, newest_ns))| {
                    DropRow {
                        source,
                        destination,
                        port,
                        protocol,
                        reason,
                        policy,
                        count,
                        newest_ns,
                    }
                },
            )
            .collect();
        // Ties broken by count then path, so the order never flickers.
        rows.sort_by(|a, b| {
            b.newest_ns
                .cmp(&a.newest_ns)
                .then(b.count.cmp(&a.count))
                .then_with(|| sort_key(a).cmp(&sort_key(b)))
        });
        Self { rows }
    }

    pub fn rows(&self) -> &[DropRow] {
        &self.rows
    }

    /// Dropped flow records across all groups.
    pub fn total(&self) -> u64 {
        self.rows.iter().map(|r| r.count).sum()
    }
}

fn sort_key(row: &DropRow) -> (&str, &str, u32, &str, &str, &str) {
    (
        &row.source,
        &row.destination,
        row.port,
        &row.protocol,
        &row.reason,
        &row.policy,
    )
}
