//! CPU sampling against the real kernel (root; CI runs it): a busy process in
//! a network namespace, a busy process in a pod cgroup with a CPU limit, and
//! the whole path from the `skymap-probe` binary to the relay's graph, where
//! the busy pod's CPU must sit on its workload.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skymap_node_probe::clock::{boot_to_unix_ns, monotonic_ns};
use skymap_node_probe::cpu::{CgroupLayout, CpuSampler};
use skymap_proto::v1::observer_client::ObserverClient;
use skymap_proto::v1::{GetGraphRequest, Zoom};
use skymap_relay::server::{self, RelayConfig};

mod common;
use common::{CLIENT_IP, SERVER_IP, Topology};

const POD_UID: &str = "5d0c9a3e-7b21-4f3a-8e6d-2a1b3c4d5e6f";

/// A shell spinning on the CPU, killed on drop.
struct Busy(Child);

impl Busy {
    /// In the network namespace `netns`, or here.
    fn start(netns: Option<&str>) -> Self {
        let spin = ["sh", "-c", "while :; do :; done"];
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).args(spin);
                c
            }
            None => {
                let mut c = Command::new(spin[0]);
                c.args(&spin[1..]);
                c
            }
        };
        Busy(command.stdin(Stdio::null()).spawn().expect("sh runs"))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now() -> (u64, i64) {
    let mono = monotonic_ns().expect("clock");
    (mono, mono as i64 + boot_to_unix_ns().expect("clock"))
}

#[test]
fn a_busy_namespace_reports_its_processes_cpu_and_addresses() {
    let topology = Topology::new("cn");
    let client = Topology::path(&topology.client);
    let _busy = Busy::start(Some(&topology.client));
    let mut sampler = CpuSampler::new(None, PathBuf::new());
    let namespaces = [client, Topology::path(&topology.server)];
    let (mono, unix) = now();
    assert!(sampler.sample(&namespaces, mono, unix).is_empty());
    std::thread::sleep(Duration::from_secs(1));
    let (mono, unix) = now();
    let samples = sampler.sample(&namespaces, mono, unix);
    // The server's namespace has no processes: no sample, rather than a zero.
    assert_eq!(samples.len(), 1, "{samples:?}");
    let sample = &samples[0];
    assert_eq!(sample.ips, [CLIENT_IP.octets().to_vec()]);
    assert!(sample.pod_uid.is_empty());
    // One spinning shell on a 2-CPU machine shared with other tests.
    assert!((0.3..=1.2).contains(&sample.cores), "{sample:?}");
    assert_eq!(sample.limit_cores, 0.0);
    assert!(sample.interval_ns >= 900_000_000, "{sample:?}");
}

/// A pod cgroup made by the test, in whichever hierarchy this machine uses;
/// removed on drop (after its processes are gone).
struct PodCgroup {
    dirs: Vec<PathBuf>,
}

impl PodCgroup {
    /// `base/kubepods/pod<UID>` with a CPU limit of `quota_us` per 100 ms.
    fn new(layout: &CgroupLayout, base: &Path, quota_us: u32) -> Self {
        let pod = base.join("kubepods").join(format!("pod{POD_UID}"));
        let roots: Vec<PathBuf> = match layout {
            CgroupLayout::V1 { cpuacct, cpu } => {
                let mut roots = vec![cpuacct.clone()];
                roots.extend(cpu.iter().filter(|c| *c != cpuacct).cloned());
                roots
            }
            CgroupLayout::V2 { root } => vec![root.clone()],
        };
        let mut dirs = Vec::new();
        for root in &roots {
            // Deepest last, so drop removes them in reverse.
            for dir in [base.to_path_buf(), base.join("kubepods"), pod.clone()] {
                let path = root.join(dir);
                fs::create_dir_all(&path).expect("cgroup dir");
                if let CgroupLayout::V2 { .. } = layout
                    && path != root.join(&pod)
                {
                    // Children get the cpu controller (where v2 has it).
                    let _ = fs::write(path.join("cgroup.subtree_control"), "+cpu");
                }
                dirs.push(path);
            }
        }
        let cgroup = PodCgroup { dirs };
        match layout {
            CgroupLayout::V1 { cpu: Some(cpu), .. } => {
                fs::write(cpu.join(&pod).join("cpu.cfs_period_us"), "100000").expect("period");
                fs::write(
                    cpu.join(&pod).join("cpu.cfs_quota_us"),
                    quota_us.to_string(),
                )
                .expect("quota");
            }
            CgroupLayout::V2 { root } => {
                let _ = fs::write(
                    root.join(&pod).join("cpu.max"),
                    format!("{quota_us} 100000"),
                );
            }
            CgroupLayout::V1 { cpu: None, .. } => {}
        }
        cgroup
    }

    fn adopt(&self, pid: u32) {
        for dir in self
            .dirs
            .iter()
            .filter(|d| d.ends_with(format!("pod{POD_UID}")))
        {
            fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("move the process");
        }
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

#[test]
fn a_pod_cgroup_reports_usage_limit_and_throttling() {
    let layout = CgroupLayout::detect().expect("a cgroup hierarchy with CPU figures");
    let base = PathBuf::from(format!("skymap-test-{}", std::process::id()));
    let limited = matches!(layout, CgroupLayout::V1 { cpu: Some(_), .. })
        || matches!(&layout, CgroupLayout::V2 { root } if fs::read_to_string(root.join("cgroup.controllers")).is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu")));
    let cgroup = PodCgroup::new(&layout, &base, 30_000);
    let busy = Busy::start(None);
    cgroup.adopt(busy.0.id());
    let mut sampler = CpuSampler::new(Some(layout), base);
    let (mono, unix) = now();
    assert!(sampler.sample(&[], mono, unix).is_empty());
    std::thread::sleep(Duration::from_millis(1500));
    let (mono, unix) = now();
    let samples = sampler.sample(&[], mono, unix);
    drop(busy);
    assert_eq!(samples.len(), 1, "{samples:?}");
    let sample = &samples[0];
    assert_eq!(sample.pod_uid, POD_UID);
    if limited {
        // 30 ms per 100 ms period: 0.3 cores, throttled in most periods.
        assert!((sample.limit_cores - 0.3).abs() < 1e-9, "{sample:?}");
        assert!((0.15..=0.36).contains(&sample.cores), "{sample:?}");
        assert!(sample.throttled > 0.5, "{sample:?}");
    } else {
        assert!((0.3..=1.2).contains(&sample.cores), "{sample:?}");
    }
}

fn metadata_json() -> String {
    let pod = |name: &str, app: &str, uid: &str, ip: std::net::Ipv4Addr| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod",
                "metadata":{{"name":"{name}","namespace":"shop","uid":"{uid}","labels":{{"app":"{app}"}}}},
                "spec":{{"nodeName":"cpu-node","containers":[]}},
                "status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}]}}}}"#
        )
    };
    format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{},{}]}}"#,
        pod(
            "web-x2x4z",
            "web",
            "11111111-2222-3333-4444-555555555555",
            CLIENT_IP
        ),
        pod(
            "api-b5b6c",
            "api",
            "66666666-7777-8888-9999-000000000000",
            SERVER_IP
        ),
    )
}

/// The probe binary, stopped on drop.
struct ProbeProcess(Child);

impl Drop for ProbeProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_puts_a_busy_pods_cpu_on_its_workload_in_the_relay() {
    let topology = Topology::new("ce");
    let metadata = std::env::temp_dir().join(format!("skymap-cpu-md-{}.json", std::process::id()));
    fs::write(&metadata, metadata_json()).expect("metadata file");
    let relay = server::start(
        "127.0.0.1:0",
        RelayConfig {
            metadata_file: Some(metadata.clone()),
            ..RelayConfig::default()
        },
    )
    .await
    .expect("relay");
    let url = format!("http://{}", relay.addr);

    let _busy = Busy::start(Some(&topology.client));
    let probe = Command::new(env!("CARGO_BIN_EXE_skymap-probe"))
        .args([
            "--relay",
            &url,
            "--node",
            "cpu-node",
            "--iface",
            &topology.server_if,
        ])
        .arg("--netns")
        .arg(Topology::path(&topology.server))
        .arg("--pod-netns")
        .arg(Topology::path(&topology.client))
        .spawn()
        .expect("skymap-probe runs");
    let mut probe = ProbeProcess(probe);

    // A connection from web to api, so both are on the map.
    let server_ns = Topology::path(&topology.server);
    let listener = skymap_node_probe::netns::run_in(&server_ns, || {
        std::net::TcpListener::bind((SERVER_IP, 8080)).expect("bind")
    })
    .expect("in the server namespace");
    let client_ns = Topology::path(&topology.client);

    let mut client = ObserverClient::connect(url.clone())
        .await
        .expect("observer");
    let deadline = Instant::now() + Duration::from_secs(20);
    let web = loop {
        // Until the probe has attached, a connect is not seen: repeat it.
        skymap_node_probe::netns::run_in(&client_ns, || {
            let _ = std::net::TcpStream::connect_timeout(
                &(SERVER_IP, 8080).into(),
                Duration::from_secs(1),
            );
        })
        .expect("in the client namespace");
        let _ = listener.set_nonblocking(true);
        while listener.accept().is_ok() {}
        let graph = client
            .get_graph(GetGraphRequest {
                zoom: Zoom::Workload as i32,
                ..GetGraphRequest::default()
            })
            .await
            .expect("graph")
            .into_inner();
        let ids: Vec<String> = graph
            .nodes
            .iter()
            .map(|n| format!("{} {:?}", n.id, n.cpu))
            .collect();
        let web = graph
            .nodes
            .into_iter()
            .find(|n| n.id == "workload:shop/web");
        if let Some(web) = web.filter(|n| n.cpu.is_some()) {
            break web;
        }
        if let Ok(Some(status)) = probe.0.try_wait() {
            panic!("skymap-probe exited ({status}); its error is above");
        }
        if Instant::now() > deadline {
            drop(probe);
            panic!("no CPU on workload:shop/web within 20 s; the graph: {ids:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let cpu = web.cpu.expect("cpu");
    assert_eq!(cpu.pods, 1, "{cpu:?}");
    assert!((0.3..=1.2).contains(&cpu.cores), "{cpu:?}");
    drop(probe);
    relay.shutdown().await.expect("shutdown");
    let _ = fs::remove_file(metadata);
}
