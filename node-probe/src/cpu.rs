//! CPU per pod on this node, for the saturation signal next to latency.
//!
//! Two sources, read once per interval (a second):
//! - **Pod cgroups.** The kubelet names a pod's cgroup after the pod's UID
//!   (`pod<UID>` with the cgroupfs driver, `kubepods-<qos>-pod<UID_>.slice`
//!   with systemd's). Under cgroup v2 the figures come from `cpu.stat`
//!   (`usage_usec`, `nr_periods`, `nr_throttled`) and `cpu.max`; under v1
//!   from `cpuacct.usage` and the cpu controller's `cpu.stat` and
//!   `cpu.cfs_quota_us`/`cpu.cfs_period_us`, at the same path in each
//!   hierarchy.
//! - **Network namespaces without a pod cgroup** (`--pod-netns`, `--netns`):
//!   the CPU time (utime + stime in `/proc/PID/stat`) of the processes inside,
//!   with the namespace's addresses so the relay can tell whose it is.
//!
//! A rate needs two readings, so a pod's first figure comes one interval
//! after it is found. A process that exits takes its last partial interval
//! with it (the kernel keeps no per-namespace total).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use skymap_proto::v1::CpuSample;

/// How deep below the cgroup root pod cgroups are looked for
/// (`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod….slice`).
const MAX_DEPTH: usize = 4;
/// A namespace's addresses are read again after this many intervals.
const ADDRESS_REFRESH: u32 = 10;

/// Where this machine's cgroup hierarchies with CPU figures are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// The unified hierarchy.
    V2 { root: PathBuf },
    /// Legacy hierarchies: cpuacct for usage, cpu (maybe the same mount) for
    /// quota and throttling.
    V1 {
        cpuacct: PathBuf,
        cpu: Option<PathBuf>,
    },
}

impl CgroupLayout {
    /// From `/proc/self/mountinfo`; `None` when no hierarchy has CPU figures.
    pub fn detect() -> Option<Self> {
        Self::from_mountinfo(&fs::read_to_string("/proc/self/mountinfo").ok()?)
    }

    /// A v1 cpuacct hierarchy wins over v2: on hybrid machines the kubelet
    /// puts pods there and the unified tree holds no controllers.
    pub fn from_mountinfo(text: &str) -> Option<Self> {
        let mut v2 = None;
        let mut cpuacct = None;
        let mut cpu = None;
        for line in text.lines() {
            // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER"
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split(' ').nth(4) else {
                continue;
            };
            let mut right = right.split(' ');
            let fstype = right.next().unwrap_or_default();
            let options = right.nth(1).unwrap_or_default();
            let path = PathBuf::from(unescape_mount(mount_point));
            match fstype {
                "cgroup2" if v2.is_none() => v2 = Some(path),
                "cgroup" => {
                    let has = |name: &str| options.split(',').any(|o| o == name);
                    if has("cpuacct") && cpuacct.is_none() {
                        cpuacct = Some(path.clone());
                    }
                    if has("cpu") && cpu.is_none() {
                        cpu = Some(path);
                    }
                }
                _ => {}
            }
        }
        match (cpuacct, v2) {
            (Some(cpuacct), _) => Some(Self::V1 { cpuacct, cpu }),
            (None, Some(root)) => Some(Self::V2 { root }),
            (None, None) => None,
        }
    }

    /// The directory pods are looked for under, `base` being relative to
    /// the hierarchy's root.
    fn search_root(&self, base: &Path) -> PathBuf {
        match self {
            Self::V2 { root } => root.join(base),
            Self::V1 { cpuacct, .. } => cpuacct.join(base),
        }
    }

    /// One pod cgroup's figures; `relative` is its path below the root.
    fn read(&self, relative: &Path) -> io::Result<Reading> {
        match self {
            Self::V2 { root } => read_v2(&root.join(relative)),
            Self::V1 { cpuacct, cpu } => read_v1(
                &cpuacct.join(relative),
                cpu.as_ref().map(|cpu| cpu.join(relative)).as_deref(),
            ),
        }
    }
}

/// Mount points escape spaces and a few other bytes as `\ooo`.
fn unescape_mount(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pod UID a kubelet cgroup directory is named after, with dashes.
pub fn pod_uid(dir_name: &str) -> Option<String> {
    let uid = match dir_name.strip_suffix(".slice") {
        // kubepods-besteffort-pod1234_5678….slice: systemd swaps - for _.
        Some(slice) => slice.rsplit_once("-pod")?.1.replace('_', "-"),
        None => dir_name.strip_prefix("pod")?.to_string(),
    };
    let groups: Vec<&str> = uid.split('-').collect();
    let shape = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]);
    (shape && uid.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())).then_some(uid)
}

/// The cgroupfs driver's QoS directories under `kubepods`.
const QOS_CLASSES: [&str; 2] = ["burstable", "besteffort"];

/// Pod cgroups below `root`: (UID, path relative to `root`). Only
/// `kubepods*` and QoS directories are descended into, so a big systemd
/// tree costs nothing.
pub fn find_pods(root: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    walk(root, Path::new(""), 0, &mut found);
    found
}

fn walk(root: &Path, relative: &Path, depth: usize, found: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = fs::read_dir(root.join(relative)) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = relative.join(name);
        if let Some(uid) = pod_uid(name) {
            found.push((uid, path));
        } else if depth < MAX_DEPTH && (name.starts_with("kubepods") || QOS_CLASSES.contains(&name))
        {
            walk(root, &path, depth + 1, found);
        }
    }
}

/// Cumulative figures of one cgroup or namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    pub usage_ns: u64,
    pub periods: u64,
    pub throttled_periods: u64,
    /// Cores; 0 = no limit.
    pub limit_cores: f64,
}

fn stat_fields(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key, value.trim().parse().ok()?))
        })
        .collect()
}

/// cgroup v2: `cpu.stat` and `cpu.max` ("max 100000" or "50000 100000").
pub fn read_v2(dir: &Path) -> io::Result<Reading> {
    let stat = fs::read_to_string(dir.join("cpu.stat"))?;
    let fields = stat_fields(&stat);
    let usage = fields
        .get("usage_usec")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "cpu.stat has no usage_usec"))?;
    // Without the cpu controller there is no cpu.max and no throttling.
    let limit = fs::read_to_string(dir.join("cpu.max"))
        .ok()
        .map_or(0.0, |max| {
            let mut parts = max.split_whitespace();
            let quota = parts.next().and_then(|q| q.parse::<f64>().ok());
            let period = parts.next().and_then(|p| p.parse::<f64>().ok());
            match (quota, period) {
                (Some(quota), Some(period)) if period > 0.0 => quota / period,
                _ => 0.0,
            }
        });
    Ok(Reading {
        usage_ns: usage.saturating_mul(1000),
        periods: fields.get("nr_periods").copied().unwrap_or(0),
        throttled_periods: fields.get("nr_throttled").copied().unwrap_or(0),
        limit_cores: limit,
    })
}

/// cgroup v1: `cpuacct.usage` (ns); throttling and quota from the cpu
/// controller's directory, when there is one.
pub fn read_v1(cpuacct: &Path, cpu: Option<&Path>) -> io::Result<Reading> {
    let usage = fs::read_to_string(cpuacct.join("cpuacct.usage"))?;
    let usage_ns = usage
        .trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "cpuacct.usage is not a number"))?;
    let mut reading = Reading {
        usage_ns,
        ..Reading::default()
    };
    let Some(cpu) = cpu else { return Ok(reading) };
    if let Ok(stat) = fs::read_to_string(cpu.join("cpu.stat")) {
        let fields = stat_fields(&stat);
        reading.periods = fields.get("nr_periods").copied().unwrap_or(0);
        reading.throttled_periods = fields.get("nr_throttled").copied().unwrap_or(0);
    }
    let number = |file: &str| -> Option<f64> {
        fs::read_to_string(cpu.join(file)).ok()?.trim().parse().ok()
    };
    if let (Some(quota), Some(period)) = (number("cpu.cfs_quota_us"), number("cpu.cfs_period_us"))
        && quota > 0.0
        && period > 0.0
    {
        reading.limit_cores = quota / period;
    }
    Ok(reading)
}

/// A process: (pid, start time in ticks since boot), so a reused pid is a
/// new process.
type ProcessKey = (u32, u64);

/// utime + stime and start time from `/proc/PID/stat`, in clock ticks.
pub fn process_times(stat: &str) -> Option<(u64, u64)> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)? + field(15)?, field(22)?))
}

/// The inode of a `/proc/PID/ns/net` link target, "net:[4026531840]".
fn netns_inode(link: &Path) -> Option<u64> {
    let target = fs::read_link(link).ok()?;
    let text = target.to_str()?;
    text.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Busy ticks of every process, grouped by network namespace inode, for the
/// namespaces in `wanted`.
fn scan_processes(proc: &Path, wanted: &HashSet<u64>) -> HashMap<u64, HashMap<ProcessKey, u64>> {
    let mut by_netns: HashMap<u64, HashMap<ProcessKey, u64>> = HashMap::new();
    let Ok(entries) = fs::read_dir(proc) else {
        return by_netns;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let dir = entry.path();
        let Some(inode) = netns_inode(&dir.join("ns/net")).filter(|i| wanted.contains(i)) else {
            continue;
        };
        // The process may have exited since the directory was listed.
        let Some((busy, start)) = fs::read_to_string(dir.join("stat"))
            .ok()
            .as_deref()
            .and_then(process_times)
        else {
            continue;
        };
        by_netns
            .entry(inode)
            .or_default()
            .insert((pid, start), busy);
    }
    by_netns
}

/// The addresses of the namespace at `path` (not loopback or link-local).
fn netns_addresses(path: &Path) -> Vec<IpAddr> {
    crate::netns::run_in(path, || {
        let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
            return Vec::new();
        };
        let mut ips: Vec<IpAddr> = addresses
            .filter_map(|a| {
                let address = a.address?;
                let ip = match (address.as_sockaddr_in(), address.as_sockaddr_in6()) {
                    (Some(v4), _) => IpAddr::V4(v4.ip()),
                    (_, Some(v6)) => IpAddr::V6(v6.ip()),
                    _ => return None,
                };
                let local = match ip {
                    IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local(),
                    IpAddr::V6(v6) => v6.is_loopback() || v6.is_unicast_link_local(),
                };
                (!local).then_some(ip)
            })
            .collect();
        ips.sort();
        ips.dedup();
        ips
    })
    .unwrap_or_default()
}

#[derive(Debug)]
struct NamespaceState {
    ips: Vec<IpAddr>,
    /// Intervals since the addresses were read.
    age: u32,
    processes: HashMap<ProcessKey, u64>,
}

/// Reads CPU per pod every interval and turns consecutive readings into
/// [`CpuSample`]s.
#[derive(Debug)]
pub struct CpuSampler {
    layout: Option<CgroupLayout>,
    /// Below the hierarchy's root, where pods are looked for.
    base: PathBuf,
    proc: PathBuf,
    ticks_per_second: u64,
    /// Previous reading per pod cgroup, with the monotonic time it was taken.
    cgroups: HashMap<String, (Reading, u64)>,
    namespaces: HashMap<u64, NamespaceState>,
    last_ns: Option<u64>,
    /// Cgroups or files that could not be read (they vanish with their pod).
    pub read_errors: u64,
}

impl CpuSampler {
    /// `layout` from [`CgroupLayout::detect`] (`None`: namespaces only);
    /// pods are looked for below `base` in it.
    pub fn new(layout: Option<CgroupLayout>, base: PathBuf) -> Self {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|t| u64::try_from(t).ok())
            .filter(|&t| t > 0);
        Self {
            layout,
            base,
            proc: PathBuf::from("/proc"),
            // Linux has used 100 on every architecture for decades.
            ticks_per_second: ticks.unwrap_or(100),
            cgroups: HashMap::new(),
            namespaces: HashMap::new(),
            last_ns: None,
            read_errors: 0,
        }
    }

    /// One interval's samples: every pod cgroup, and every namespace in
    /// `netns` that has processes. `mono_ns` is a monotonic clock for the
    /// interval's length, `unix_ns` the time stamped on the samples.
    pub fn sample(&mut self, netns: &[PathBuf], mono_ns: u64, unix_ns: i64) -> Vec<CpuSample> {
        let mut samples = self.sample_cgroups(mono_ns, unix_ns);
        samples.extend(self.sample_namespaces(netns, mono_ns, unix_ns));
        self.last_ns = Some(mono_ns);
        samples
    }

    fn sample_cgroups(&mut self, mono_ns: u64, unix_ns: i64) -> Vec<CpuSample> {
        let Some(layout) = &self.layout else {
            return Vec::new();
        };
        let mut samples = Vec::new();
        let mut seen = HashMap::new();
        for (uid, relative) in find_pods(&layout.search_root(&self.base)) {
            let reading = match layout.read(&self.base.join(&relative)) {
                Ok(reading) => reading,
                Err(_) => {
                    self.read_errors += 1;
                    continue;
                }
            };
            if let Some((before, at)) = self.cgroups.get(&uid)
                && let Some(sample) = rate(before, &reading, mono_ns.saturating_sub(*at), unix_ns)
            {
                samples.push(CpuSample {
                    pod_uid: uid.clone(),
                    ..sample
                });
            }
            seen.insert(uid, (reading, mono_ns));
        }
        // Pods that are gone are forgotten.
        self.cgroups = seen;
        samples
    }

    fn sample_namespaces(
        &mut self,
        netns: &[PathBuf],
        mono_ns: u64,
        unix_ns: i64,
    ) -> Vec<CpuSample> {
        let mut paths: HashMap<u64, &PathBuf> = HashMap::new();
        for path in netns {
            if let Ok(meta) = fs::metadata(path) {
                paths.entry(meta.ino()).or_insert(path);
            }
        }
        let wanted: HashSet<u64> = paths.keys().copied().collect();
        let mut by_netns = scan_processes(&self.proc, &wanted);
        let interval = self.last_ns.map(|last| mono_ns.saturating_sub(last));
        let mut samples = Vec::new();
        let mut next = HashMap::new();
        for (inode, path) in paths {
            let processes = by_netns.remove(&inode).unwrap_or_default();
            let previous = self.namespaces.remove(&inode);
            let (ips, age) = match previous.as_ref() {
                Some(state) if state.age < ADDRESS_REFRESH => (state.ips.clone(), state.age + 1),
                _ => (netns_addresses(path), 0),
            };
            if let (Some(previous), Some(interval)) = (previous, interval)
                && interval > 0
                && !processes.is_empty()
            {
                // Processes new since the last scan spent all their time in the interval.
                let ticks: u64 = processes
                    .iter()
                    .map(|(key, now)| {
                        now.saturating_sub(previous.processes.get(key).copied().unwrap_or(0))
                    })
                    .sum();
                let busy_ns = ticks.saturating_mul(1_000_000_000) / self.ticks_per_second;
                samples.push(CpuSample {
                    ips: ips
                        .iter()
                        .map(|ip| skymap_proto::names::ip_to_bytes(*ip).to_vec())
                        .collect(),
                    cores: busy_ns as f64 / interval as f64,
                    time_ns: unix_ns,
                    interval_ns: interval,
                    ..CpuSample::default()
                });
            }
            next.insert(
                inode,
                NamespaceState {
                    ips,
                    age,
                    processes,
                },
            );
        }
        self.namespaces = next;
        samples
    }
}

/// The sample between two readings `interval_ns` apart; `None` when the
/// counters went backwards (a new cgroup under an old name) or no time passed.
pub fn rate(before: &Reading, now: &Reading, interval_ns: u64, unix_ns: i64) -> Option<CpuSample> {
    if interval_ns == 0 || now.usage_ns < before.usage_ns {
        return None;
    }
    let periods = now.periods.saturating_sub(before.periods);
    let throttled = now
        .throttled_periods
        .saturating_sub(before.throttled_periods);
    Some(CpuSample {
        cores: (now.usage_ns - before.usage_ns) as f64 / interval_ns as f64,
        limit_cores: now.limit_cores,
        throttled: if periods == 0 {
            0.0
        } else {
            (throttled as f64 / periods as f64).min(1.0)
        },
        time_ns: unix_ns,
        interval_ns,
        ..CpuSample::default()
    })
}
