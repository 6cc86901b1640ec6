//! CPU per pod, as the probes sample it, summed per graph node.
//!
//! Every probe sends one [`CpuSample`] per pod and interval. The table keeps
//! the newest one per (probe, pod), resolved once to the graph nodes the pod
//! belongs to at each zoom, and forgets samples that stop coming (the pod or
//! its probe is gone). The engine asks it for the totals per node id after a
//! change and writes them onto its graphs.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use skymap_proto::v1::{CpuSample, CpuUsage};

/// More samples than this in one batch are refused (a node has far fewer pods).
pub const MAX_SAMPLES_PER_BATCH: usize = 10_000;
/// Beyond this, new pods are not tracked until old ones expire.
pub const MAX_TRACKED: usize = 200_000;
/// A sample older than this (by the relay's clock) no longer counts.
pub const SAMPLE_TTL_NS: i64 = 10_000_000_000;
/// Addresses a sample may list.
const MAX_IPS: usize = 16;
/// Far above any machine; beyond it a value is a bug or an attack.
const MAX_CORES: f64 = 1_000_000.0;

/// Where one pod's CPU goes: its node id at workload zoom (if it has a
/// workload) and at pod zoom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub workload: Option<Arc<str>>,
    pub pod: Arc<str>,
}

#[derive(Debug, Clone)]
struct Entry {
    target: Target,
    usage: CpuUsage,
}

/// The newest sample of every pod, by (probe, pod key).
#[derive(Debug, Default)]
pub struct CpuTable {
    entries: FxHashMap<(u32, String), Entry>,
    changed: bool,
}

/// Why a sample was refused.
pub fn validate(sample: &CpuSample) -> Result<(), String> {
    let figure = |name: &str, value: f64, max: f64| {
        if value.is_finite() && (0.0..=max).contains(&value) {
            Ok(())
        } else {
            Err(format!("{name} {value} is outside 0..={max}"))
        }
    };
    figure("cores", sample.cores, MAX_CORES)?;
    figure("limit_cores", sample.limit_cores, MAX_CORES)?;
    figure("throttled", sample.throttled, 1.0)?;
    if sample.pod_uid.len() > 128 {
        return Err(format!(
            "pod_uid is {} bytes (max 128)",
            sample.pod_uid.len()
        ));
    }
    if sample.ips.len() > MAX_IPS {
        return Err(format!("{} ips (max {MAX_IPS})", sample.ips.len()));
    }
    if let Some(bad) = sample.ips.iter().find(|ip| !matches!(ip.len(), 4 | 16)) {
        return Err(format!("an ip of {} bytes (4 or 16 expected)", bad.len()));
    }
    if sample.pod_uid.is_empty() && sample.ips.is_empty() {
        return Err("neither pod_uid nor ips: no way to tell whose CPU it is".into());
    }
    Ok(())
}

/// The key a probe's sample is kept under: the UID, else the first address.
pub fn sample_key(sample: &CpuSample) -> String {
    if !sample.pod_uid.is_empty() {
        return sample.pod_uid.clone();
    }
    let ip = sample.ips.first().map(Vec::as_slice).unwrap_or_default();
    skymap_proto::names::ip_from_bytes(ip).map_or_else(String::new, |ip| ip.to_string())
}

impl CpuTable {
    /// Keeps `sample` as the newest of `probe`'s pod `key`, counted against
    /// `target`; false when the table is full.
    pub fn record(&mut self, probe: u32, key: String, target: Target, sample: &CpuSample) -> bool {
        let entry = Entry {
            target,
            usage: CpuUsage {
                cores: sample.cores,
                limit_cores: sample.limit_cores,
                throttled: sample.throttled,
                pods: 1,
                time_ns: sample.time_ns,
            },
        };
        let full = self.entries.len() >= MAX_TRACKED;
        match self.entries.get_mut(&(probe, key.clone())) {
            Some(old) if old.usage.time_ns > sample.time_ns => return true,
            Some(old) => *old = entry,
            None if full => return false,
            None => {
                self.entries.insert((probe, key), entry);
            }
        }
        self.changed = true;
        true
    }

    /// Forgets samples taken before `before_ns`.
    pub fn expire(&mut self, before_ns: i64) {
        let len = self.entries.len();
        self.entries.retain(|_, e| e.usage.time_ns >= before_ns);
        self.changed |= self.entries.len() != len;
    }

    /// Whether anything changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The sum per node id at workload zoom and at pod zoom.
    pub fn totals(&self) -> (FxHashMap<Arc<str>, CpuUsage>, FxHashMap<Arc<str>, CpuUsage>) {
        let mut workload: FxHashMap<Arc<str>, CpuUsage> = FxHashMap::default();
        let mut pod: FxHashMap<Arc<str>, CpuUsage> = FxHashMap::default();
        for entry in self.entries.values() {
            if let Some(id) = &entry.target.workload {
                add(workload.entry(id.clone()).or_default(), &entry.usage);
            }
            add(
                pod.entry(entry.target.pod.clone()).or_default(),
                &entry.usage,
            );
        }
        (workload, pod)
    }
}

/// Adds `part` into `total`. A total starts empty (no pods); its limit is the
/// sum of limits while every part has one, and 0 (unlimited) once any part
/// has none.
pub fn add(total: &mut CpuUsage, part: &CpuUsage) {
    let unlimited = (total.pods > 0 && total.limit_cores == 0.0) || part.limit_cores == 0.0;
    total.limit_cores = if unlimited {
        0.0
    } else {
        total.limit_cores + part.limit_cores
    };
    total.cores += part.cores;
    total.throttled = total.throttled.max(part.throttled);
    total.pods += part.pods;
    total.time_ns = total.time_ns.max(part.time_ns);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(uid: &str, cores: f64, limit: f64, time_ns: i64) -> CpuSample {
        CpuSample {
            pod_uid: uid.into(),
            cores,
            limit_cores: limit,
            time_ns,
            ..CpuSample::default()
        }
    }

    fn target(workload: &str, pod: &str) -> Target {
        Target {
            workload: Some(Arc::from(workload)),
            pod: Arc::from(pod),
        }
    }

    #[test]
    fn sums_pods_per_workload_and_keeps_the_newest_sample() {
        let mut table = CpuTable::default();
        let web = "workload:shop/web";
        assert!(table.record(
            0,
            "a".into(),
            target(web, "pod:shop/web-a"),
            &sample("a", 0.5, 1.0, 10)
        ));
        assert!(table.record(
            1,
            "b".into(),
            target(web, "pod:shop/web-b"),
            &sample("b", 0.25, 2.0, 10)
        ));
        // An older sample arriving late does not replace a newer one.
        table.record(
            0,
            "a".into(),
            target(web, "pod:shop/web-a"),
            &sample("a", 9.0, 1.0, 5),
        );
        assert!(table.take_changed());
        assert!(!table.take_changed());
        let (workload, pod) = table.totals();
        let w = &workload[web];
        assert_eq!(
            (w.cores, w.limit_cores, w.pods, w.time_ns),
            (0.75, 3.0, 2, 10)
        );
        assert_eq!(pod["pod:shop/web-a"].cores, 0.5);
        assert_eq!(pod.len(), 2);
    }

    #[test]
    fn one_unlimited_pod_makes_the_workload_unlimited_and_throttling_is_the_worst() {
        let mut total = CpuUsage::default();
        for (cores, limit, throttled) in [(0.1, 1.0, 0.0), (0.2, 0.0, 0.3), (0.3, 1.0, 0.1)] {
            let part = CpuUsage {
                cores,
                limit_cores: limit,
                throttled,
                pods: 1,
                time_ns: 1,
            };
            add(&mut total, &part);
        }
        assert_eq!(total.limit_cores, 0.0);
        assert_eq!(total.throttled, 0.3);
        assert_eq!(total.pods, 3);
        assert!((total.cores - 0.6).abs() < 1e-9);
    }

    #[test]
    fn expiry_forgets_pods_that_stopped_reporting() {
        let mut table = CpuTable::default();
        table.record(
            0,
            "old".into(),
            target("w", "p1"),
            &sample("old", 1.0, 0.0, 100),
        );
        table.record(
            0,
            "new".into(),
            target("w", "p2"),
            &sample("new", 1.0, 0.0, 200),
        );
        table.take_changed();
        table.expire(150);
        assert!(table.take_changed());
        assert_eq!(table.len(), 1);
        assert_eq!(table.totals().0["w"].pods, 1);
    }

    #[test]
    fn hostile_samples_are_refused_with_a_reason() {
        let good = sample("uid", 0.5, 0.0, 1);
        assert_eq!(validate(&good), Ok(()));
        for (bad, word) in [
            (
                CpuSample {
                    cores: f64::NAN,
                    ..good.clone()
                },
                "cores",
            ),
            (
                CpuSample {
                    cores: -1.0,
                    ..good.clone()
                },
                "cores",
            ),
            (
                CpuSample {
                    limit_cores: f64::INFINITY,
                    ..good.clone()
                },
                "limit_cores",
            ),
            (
                CpuSample {
                    throttled: 1.5,
                    ..good.clone()
                },
                "throttled",
            ),
            (
                CpuSample {
                    pod_uid: "x".repeat(200),
                    ..good.clone()
                },
                "pod_uid",
            ),
            (
                CpuSample {
                    ips: vec![vec![1, 2, 3]],
                    ..good.clone()
                },
                "ip",
            ),
            (
                CpuSample {
                    ips: vec![vec![10, 0, 0, 1]; 17],
                    ..good.clone()
                },
                "ips",
            ),
            (
                CpuSample {
                    pod_uid: String::new(),
                    ..good.clone()
                },
                "whose",
            ),
        ] {
            let err = validate(&bad).expect_err("refused");
            assert!(err.contains(word), "{err} should mention {word}");
        }
    }

    #[test]
    fn a_full_table_refuses_new_pods_but_updates_known_ones() {
        let mut table = CpuTable::default();
        for i in 0..MAX_TRACKED {
            table.record(
                0,
                i.to_string(),
                target("w", "p"),
                &sample("x", 0.0, 0.0, 1),
            );
        }
        assert!(!table.record(
            1,
            "new".into(),
            target("w", "p"),
            &sample("new", 1.0, 0.0, 2)
        ));
        assert!(table.record(0, "0".into(), target("w", "p"), &sample("0", 1.0, 0.0, 2)));
        assert_eq!(table.len(), MAX_TRACKED);
    }
}
