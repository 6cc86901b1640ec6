//! CPU sampling against cgroup trees built in a scratch directory (no root):
//! mount detection, the kubelet's pod directory names, the v1 and v2 files,
//! rates between readings, pods that come and go, and hostile process names.

use std::fs;
use std::path::{Path, PathBuf};

use skymap_node_probe::cpu::{
    CgroupLayout, CpuSampler, Reading, find_pods, pod_uid, process_times, rate,
};

const UID_A: &str = "0f6e4a52-3c1b-4d8e-9a7f-1b2c3d4e5f60";
const UID_B: &str = "aa6e4a52-3c1b-4d8e-9a7f-1b2c3d4e5f61";
const SECOND: u64 = 1_000_000_000;

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("skymap-cpu-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.0.join(relative);
        fs::create_dir_all(path.parent().expect("a parent")).expect("dirs");
        fs::write(path, text).expect("write");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn mountinfo_picks_the_hierarchy_with_cpu_figures() {
    // This machine: a hybrid layout with cpu and cpuacct mounted apart.
    let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
    assert_eq!(
        CgroupLayout::from_mountinfo(hybrid),
        Some(CgroupLayout::V1 {
            cpuacct: "/sys/fs/cgroup/cpuacct".into(),
            cpu: Some("/sys/fs/cgroup/cpu".into()),
        })
    );
    let comounted =
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct";
    assert_eq!(
        CgroupLayout::from_mountinfo(comounted),
        Some(CgroupLayout::V1 {
            cpuacct: "/sys/fs/cgroup/cpu,cpuacct".into(),
            cpu: Some("/sys/fs/cgroup/cpu,cpuacct".into()),
        })
    );
    let unified =
        "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw,nsdelegate";
    assert_eq!(
        CgroupLayout::from_mountinfo(unified),
        Some(CgroupLayout::V2 {
            root: "/sys/fs/cgroup".into()
        })
    );
    let escaped = r"30 23 0:26 / /mnt/my\040cgroups rw - cgroup2 cgroup2 rw";
    assert_eq!(
        CgroupLayout::from_mountinfo(escaped),
        Some(CgroupLayout::V2 {
            root: "/mnt/my cgroups".into()
        })
    );
    assert_eq!(CgroupLayout::from_mountinfo("garbage\n\n - \n1 2 3"), None);
}

#[test]
fn pod_directories_are_recognised_by_both_cgroup_drivers() {
    let systemd = format!("kubepods-burstable-pod{}.slice", UID_A.replace('-', "_"));
    assert_eq!(pod_uid(&systemd).as_deref(), Some(UID_A));
    assert_eq!(pod_uid(&format!("pod{UID_A}")).as_deref(), Some(UID_A));
    for not_a_pod in [
        "kubepods.slice",
        "kubepods-burstable.slice",
        "burstable",
        "pod",
        "podnot-a-uid",
        "pod0f6e4a52-3c1b-4d8e-9a7f-1b2c3d4e5f6", // one digit short
        "pod0f6e4a52-3c1b-4d8e-9a7f-1b2c3d4e5fzz", // not hex
        "cri-containerd-0f6e4a52.scope",
    ] {
        assert_eq!(pod_uid(not_a_pod), None, "{not_a_pod}");
    }
}

#[test]
fn pods_are_found_under_kubepods_only() {
    let root = Scratch::new("find");
    root.write(&format!("kubepods/burstable/pod{UID_A}/cpu.stat"), "");
    // A container inside the pod is not a pod of its own.
    root.write(&format!("kubepods/burstable/pod{UID_A}/c1/cpu.stat"), "");
    root.write(&format!("kubepods/pod{UID_B}/cpu.stat"), "");
    // Outside kubepods: never looked at.
    root.write(&format!("system.slice/pod{UID_B}/cpu.stat"), "");
    let mut found = find_pods(&root.0);
    found.sort();
    assert_eq!(
        found,
        [
            (
                UID_A.to_string(),
                PathBuf::from(format!("kubepods/burstable/pod{UID_A}"))
            ),
            (
                UID_B.to_string(),
                PathBuf::from(format!("kubepods/pod{UID_B}"))
            ),
        ]
    );
    assert!(find_pods(Path::new("/nonexistent/skymap")).is_empty());
}

fn v2_stat(usage_usec: u64, periods: u64, throttled: u64) -> String {
    format!(
        "usage_usec {usage_usec}\nuser_usec 1\nsystem_usec 2\nnr_periods {periods}\nnr_throttled {throttled}\nthrottled_usec 7\n"
    )
}

#[test]
fn cgroup_v2_rates_limits_and_throttling_between_two_readings() {
    let root = Scratch::new("v2");
    let pod_a = format!(
        "kubepods.slice/kubepods-pod{}.slice",
        UID_A.replace('-', "_")
    );
    let pod_b = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
        UID_B.replace('-', "_")
    );
    root.write(&format!("{pod_a}/cpu.stat"), &v2_stat(1_000_000, 10, 0));
    root.write(&format!("{pod_a}/cpu.max"), "50000 100000\n");
    root.write(&format!("{pod_b}/cpu.stat"), &v2_stat(0, 0, 0));
    root.write(&format!("{pod_b}/cpu.max"), "max 100000\n");
    let layout = CgroupLayout::V2 {
        root: root.0.clone(),
    };
    let mut sampler = CpuSampler::new(Some(layout), PathBuf::new());

    // One reading is not a rate yet.
    assert!(sampler.sample(&[], 10 * SECOND, 100).is_empty());

    // Two seconds later: A used 0.8 s (0.4 cores), throttled in 5 of 20 periods.
    root.write(&format!("{pod_a}/cpu.stat"), &v2_stat(1_800_000, 30, 5));
    root.write(&format!("{pod_b}/cpu.stat"), &v2_stat(3_000_000, 0, 0));
    let mut samples = sampler.sample(&[], 12 * SECOND, 200);
    samples.sort_by(|a, b| a.pod_uid.cmp(&b.pod_uid));
    assert_eq!(samples.len(), 2, "{samples:?}");
    let (a, b) = (&samples[0], &samples[1]);
    assert_eq!(a.pod_uid, UID_A);
    assert!((a.cores - 0.4).abs() < 1e-9, "{a:?}");
    assert_eq!(
        (a.limit_cores, a.throttled, a.time_ns, a.interval_ns),
        (0.5, 0.25, 200, 2 * SECOND)
    );
    assert!(a.ips.is_empty());
    assert_eq!(b.pod_uid, UID_B);
    assert!((b.cores - 1.5).abs() < 1e-9, "{b:?}");
    assert_eq!((b.limit_cores, b.throttled), (0.0, 0.0));

    // B goes away; A's cgroup is recreated (its counter starts over): no
    // figure for either until a second reading.
    fs::remove_dir_all(root.0.join(&pod_b)).expect("rm");
    root.write(&format!("{pod_a}/cpu.stat"), &v2_stat(100, 0, 0));
    assert!(sampler.sample(&[], 13 * SECOND, 300).is_empty());
    root.write(&format!("{pod_a}/cpu.stat"), &v2_stat(100_100, 0, 0));
    let samples = sampler.sample(&[], 14 * SECOND, 400);
    assert_eq!(samples.len(), 1);
    assert!((samples[0].cores - 0.1).abs() < 1e-9);

    // A garbled file is counted, not fatal.
    root.write(&format!("{pod_a}/cpu.stat"), "usage_usec lots\n");
    assert!(sampler.sample(&[], 15 * SECOND, 500).is_empty());
    assert_eq!(sampler.read_errors, 1);
}

#[test]
fn cgroup_v1_reads_cpuacct_and_the_cpu_controller_at_the_same_path() {
    let root = Scratch::new("v1");
    let pod = format!("kubepods/burstable/pod{UID_A}");
    root.write(&format!("cpuacct/{pod}/cpuacct.usage"), "5000000000\n");
    root.write(
        &format!("cpu/{pod}/cpu.stat"),
        "nr_periods 100\nnr_throttled 10\nthrottled_time 99\n",
    );
    root.write(&format!("cpu/{pod}/cpu.cfs_quota_us"), "200000\n");
    root.write(&format!("cpu/{pod}/cpu.cfs_period_us"), "100000\n");
    let layout = CgroupLayout::V1 {
        cpuacct: root.0.join("cpuacct"),
        cpu: Some(root.0.join("cpu")),
    };
    let mut sampler = CpuSampler::new(Some(layout), PathBuf::new());
    assert!(sampler.sample(&[], SECOND, 1).is_empty());
    root.write(&format!("cpuacct/{pod}/cpuacct.usage"), "6500000000\n");
    root.write(
        &format!("cpu/{pod}/cpu.stat"),
        "nr_periods 110\nnr_throttled 20\n",
    );
    let samples = sampler.sample(&[], 2 * SECOND, 2);
    assert_eq!(samples.len(), 1, "{samples:?}");
    let s = &samples[0];
    assert_eq!(
        (s.pod_uid.as_str(), s.cores, s.limit_cores, s.throttled),
        (UID_A, 1.5, 2.0, 1.0)
    );

    // cfs_quota_us -1 means no limit.
    root.write(&format!("cpu/{pod}/cpu.cfs_quota_us"), "-1\n");
    let samples = sampler.sample(&[], 3 * SECOND, 3);
    assert_eq!(samples[0].limit_cores, 0.0);
    assert_eq!(samples[0].cores, 0.0);
}

#[test]
fn a_base_directory_limits_where_pods_are_looked_for() {
    let root = Scratch::new("base");
    root.write(
        &format!("kind-node/kubepods/pod{UID_A}/cpu.stat"),
        &v2_stat(0, 0, 0),
    );
    root.write(&format!("kubepods/pod{UID_B}/cpu.stat"), &v2_stat(0, 0, 0));
    let layout = CgroupLayout::V2 {
        root: root.0.clone(),
    };
    let mut sampler = CpuSampler::new(Some(layout), PathBuf::from("kind-node"));
    sampler.sample(&[], SECOND, 1);
    root.write(
        &format!("kind-node/kubepods/pod{UID_A}/cpu.stat"),
        &v2_stat(10, 0, 0),
    );
    let samples = sampler.sample(&[], 2 * SECOND, 2);
    let uids: Vec<&str> = samples.iter().map(|s| s.pod_uid.as_str()).collect();
    assert_eq!(uids, [UID_A]);
}

#[test]
fn process_stat_lines_with_hostile_names() {
    // Fields after the name: state ppid pgrp session tty tpgid flags minflt
    // cminflt majflt cmajflt utime stime cutime cstime priority nice threads
    // itrealvalue starttime ...
    let tail = "S 1 1 1 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 777 1000 10";
    assert_eq!(
        process_times(&format!("42 (sleep) {tail}")),
        Some((300, 777))
    );
    assert_eq!(
        process_times(&format!("42 (a) b) (c) {tail}")),
        Some((300, 777))
    );
    assert_eq!(
        process_times(&format!("42 (x\ny) {tail}")),
        Some((300, 777))
    );
    assert_eq!(process_times("42 (truncated) S 1 1"), None);
    assert_eq!(process_times("no parenthesis at all"), None);
    assert_eq!(process_times(""), None);
}

#[test]
fn rates_refuse_counters_that_went_backwards_or_no_time() {
    let before = Reading {
        usage_ns: 1000,
        ..Reading::default()
    };
    let later = Reading {
        usage_ns: 500,
        ..Reading::default()
    };
    assert_eq!(rate(&before, &later, SECOND, 0), None);
    assert_eq!(rate(&before, &before, 0, 0), None);
    let busy = Reading {
        usage_ns: 1000 + 2 * SECOND,
        ..Reading::default()
    };
    assert_eq!(rate(&before, &busy, SECOND, 0).map(|s| s.cores), Some(2.0));
}
