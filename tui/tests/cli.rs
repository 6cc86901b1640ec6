//! The `skymap` binary as a user runs it: recordings, a relay on loopback,
//! bad files and bad flags.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use skymap_relay::server::{self, RelayConfig};

fn skymap() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skymap"));
    cmd.env_remove("SKYMAP_RELAY");
    cmd
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn run(cmd: &mut Command) -> (Output, String, String) {
    let output = cmd.output().expect("skymap runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("skymap-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

#[test]
fn observe_a_recording_with_filters_and_formats() {
    let story = fixture("story.jsonl");
    let (out, stdout, stderr) = run(skymap().args(["observe", "--file"]).arg(&story));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout.lines().count(),
        20,
        "20 flows by default, like hubble"
    );

    let (out, stdout, stderr) = run(skymap()
        .args([
            "observe",
            "--all",
            "--verdict",
            "DROPPED",
            "-o",
            "json",
            "--file",
        ])
        .arg(&story));
    assert!(out.status.success(), "{stderr}");
    let dropped = json_lines(&stdout);
    // 2 frontend pods x 3 lookups x 60 s before the fix.
    assert_eq!(dropped.len(), 360);
    for flow in &dropped {
        assert_eq!(flow["flow"]["verdict"], "DROPPED");
        assert_eq!(flow["flow"]["drop_reason_desc"], "NETFILTER_DROP");
        assert_eq!(flow["flow"]["source"]["namespace"], "default");
        assert_eq!(flow["flow"]["l4"]["UDP"]["destination_port"], 53);
    }

    let (out, stdout, _) = run(skymap()
        .args([
            "observe",
            "--last",
            "5",
            "--to-port",
            "8080",
            "--not",
            "--from-pod",
            "default/frontend-6c9b7d8f4-k2x9p",
        ])
        .args(["-o", "json", "--file"])
        .arg(&story));
    assert!(out.status.success());
    let flows = json_lines(&stdout);
    assert_eq!(flows.len(), 5);
    for flow in &flows {
        assert_eq!(flow["flow"]["l4"]["TCP"]["destination_port"], 8080);
        assert_ne!(
            flow["flow"]["source"]["pod_name"],
            "frontend-6c9b7d8f4-k2x9p"
        );
    }

    let (out, stdout, _) = run(skymap()
        .args(["observe", "--last", "3", "-o", "table", "--file"])
        .arg(&story));
    assert!(out.status.success());
    assert!(
        stdout
            .lines()
            .next()
            .is_some_and(|h| h.contains("SOURCE") && h.contains("VERDICT"))
    );
    assert_eq!(stdout.lines().count(), 4);
}

#[test]
fn graph_of_a_recording_tells_the_dns_story() {
    let (out, stdout, stderr) = run(skymap()
        .args(["graph", "-o", "json", "--file"])
        .arg(fixture("story.jsonl")));
    assert!(out.status.success(), "{stderr}");
    let graph: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    let edges = graph["edges"].as_array().expect("edges");
    let dns = edges
        .iter()
        .find(|e| {
            e["source"] == "workload:default/frontend"
                && e["destination"] == "workload:kube-system/coredns"
                && e["port"] == 53
        })
        .expect("frontend -> kube-dns edge");
    assert_eq!(dns["verdicts"]["DROPPED"], 360);
    assert_eq!(dns["drops"][0]["reason"], "NETFILTER_DROP");
    // Every lookup is a query, answered or dropped: 2 pods x 3 lookups x
    // 120 s; the answered ones were seen at both ends and count once.
    assert_eq!(dns["dns_queries"], 720);
    assert_eq!(dns["seen_at_destination"], 720);
    assert_eq!(dns["dns_rcodes"]["NXDOMAIN"], 120);
    assert_eq!(dns["dns_rcodes"]["NOERROR"], 240);

    let backend = edges
        .iter()
        .find(|e| e["destination"] == "workload:default/backend")
        .expect("frontend -> backend edge");
    assert_eq!(backend["connections"], 120);
    assert_eq!(backend["requests"], 120);
    let ok = backend["http"]["2xx"].as_u64().expect("2xx");
    let failed = backend["http"]["5xx"].as_u64().expect("5xx");
    assert_eq!(ok + failed, 120);
    assert!(backend["latency_ms"]["p50"].as_f64().expect("p50") >= 8.0);

    let (out, dot, _) = run(skymap()
        .args(["graph", "-o", "dot", "--file"])
        .arg(fixture("story.jsonl")));
    assert!(out.status.success());
    assert!(dot.starts_with("digraph"));
    assert!(dot.contains("DROPPED"));

    let (out, text, _) = run(skymap()
        .args(["graph", "--file"])
        .arg(fixture("story.jsonl")));
    assert!(out.status.success());
    assert!(
        text.contains("DROPPED"),
        "dropped edges say so in words:\n{text}"
    );
}

#[test]
fn bad_recordings_are_reported_by_line_and_the_rest_is_read() {
    let story = std::fs::read_to_string(fixture("story.jsonl")).expect("fixture");
    let mut lines: Vec<&str> = story.lines().take(10).collect();
    lines.insert(3, "{not json");
    lines.insert(6, r#"{"flow":{"verdict":"MAYBE"}}"#);
    let bad = scratch("bad.jsonl");
    std::fs::write(&bad, lines.join("\n") + "\n").expect("write");
    let (out, stdout, stderr) = run(skymap().args(["observe", "--all", "--file"]).arg(&bad));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 10);
    assert!(stderr.contains("2 of 12 lines rejected"), "{stderr}");
    assert!(stderr.contains("bad.jsonl:4"), "{stderr}");
    assert!(stderr.contains("bad.jsonl:7"), "{stderr}");

    let (out, _, stderr) = run(skymap().args(["observe", "--file", "/nonexistent/flows.jsonl"]));
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot open /nonexistent/flows.jsonl"),
        "{stderr}"
    );

    let garbage = scratch("garbage.jsonl");
    std::fs::write(&garbage, "\u{1b}[2J garbage\n\0\0\0\n").expect("write");
    let (out, stdout, stderr) = run(skymap().args(["graph", "--file"]).arg(&garbage));
    assert!(!out.status.success());
    assert!(stdout.is_empty());
    assert!(
        !stderr.contains('\u{1b}'),
        "hostile bytes are not echoed raw: {stderr:?}"
    );
}

#[test]
fn bad_flags_get_clear_errors() {
    for (args, words) in [
        (vec!["observe", "--port", "http"], "http"),
        (vec!["observe", "--verdict", "MAYBE"], "MAYBE"),
        (vec!["observe", "--ip", "10.0.0.300"], "10.0.0.300"),
        (vec!["observe", "--not"], "--not"),
        (vec!["observe", "--since", "yesterday"], "yesterday"),
        (vec!["observe", "--relay", "relay:http"], "not a number"),
        (vec!["replay", "x.jsonl", "--speed", "-1"], "--speed"),
    ] {
        let (out, _, stderr) = run(skymap().args(&args));
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }
}

#[test]
fn unreachable_relay_is_explained() {
    let (out, _, stderr) = run(skymap().args(["observe", "--relay", "127.0.0.1:1"]));
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot reach the relay at http://127.0.0.1:1"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_into_a_relay_then_observe_and_graph_it() {
    let relay = server::start("127.0.0.1:0", RelayConfig::default())
        .await
        .expect("relay");
    let url = format!("http://{}", relay.addr);
    let story = fixture("story.jsonl");
    let total = std::fs::read_to_string(&story)
        .expect("fixture")
        .lines()
        .count();

    let replay = {
        let url = url.clone();
        let story = story.clone();
        tokio::task::spawn_blocking(move || {
            run(skymap()
                .args(["replay", "--speed", "0", "--relay", &url])
                .arg(&story))
        })
    };
    let (out, _, stderr) = replay.await.expect("replay ran");
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("replayed {total} flows")),
        "{stderr}"
    );

    // The relay aggregates asynchronously; wait until every flow is in.
    let mut seen = 0;
    for _ in 0..100 {
        let url = url.clone();
        let (_, stdout, _) = tokio::task::spawn_blocking(move || {
            run(skymap().args(["observe", "--all", "-o", "json", "--relay", &url]))
        })
        .await
        .expect("observe ran");
        seen = stdout.lines().count();
        if seen == total {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen, total, "every replayed flow is in the relay's history");

    let env_url = url.clone();
    let (out, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run(skymap()
            .env("SKYMAP_RELAY", &env_url)
            .args(["graph", "-o", "json"]))
    })
    .await
    .expect("graph ran");
    assert!(out.status.success(), "{stderr}");
    let graph: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let dns = graph["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find(|e| e["source"] == "workload:default/frontend" && e["port"] == 53)
        .expect("dns edge");
    assert_eq!(dns["verdicts"]["DROPPED"], 360);
    assert_eq!(dns["dns_queries"], 720);

    let status_url = url.clone();
    let (out, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run(skymap().args(["status", "-o", "json", "--relay", &status_url]))
    })
    .await
    .expect("status ran");
    assert!(out.status.success(), "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(status["flows_total"], total);
    let nodes = status["nodes"].as_array().expect("nodes");
    let mut names: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["node-1", "node-2"],
        "one ingest stream per recorded node"
    );
    assert!(
        nodes.iter().all(|n| n["state"] == "unavailable"),
        "replay has ended: {nodes:?}"
    );
    relay.shutdown().await.expect("shutdown");
}

#[test]
fn snapshot_prints_one_frame_of_the_explorer() {
    let (out, stdout, stderr) = run(skymap().args([
        "snapshot", "--demo", "--view", "drops", "--width", "120", "--height", "20", "--at", "45",
    ]));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 20, "one line per row:\n{stdout}");
    assert!(stdout.lines().all(|l| l.chars().count() <= 120));
    assert!(stdout.contains("NETFILTER_DROP"), "{stdout}");
    assert!(stdout.contains("shop/frontend-egress"), "{stdout}");
    assert!(!stdout.contains('\u{1b}'), "plain text, no escape codes");

    // A recording file and a selected edge, in ASCII.
    let (out, stdout, stderr) = run(skymap()
        .args([
            "snapshot",
            "--ascii",
            "--select",
            "frontend->kube-dns",
            "--file",
        ])
        .arg(fixture("demo.jsonl"))
        .args(["--at", "30"]));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.is_ascii(), "{stdout}");
    assert!(stdout.contains("frontend -> kube-dns"), "{stdout}");
    assert!(stdout.contains("DROPPED NETFILTER_DROP"), "{stdout}");
}

#[test]
fn snapshot_and_explorer_refuse_bad_input_clearly() {
    let broken_theme = scratch("broken-theme.toml");
    std::fs::write(&broken_theme, "[roles]\ndropped = { fg = \"#12345\" }\n").expect("write");
    let theme_arg = broken_theme.display().to_string();
    for (args, words) in [
        (vec!["snapshot", "--demo", "--width", "0"], "--width"),
        (
            vec!["snapshot", "--demo", "--select", "nobody"],
            "nothing called \"nobody\"",
        ),
        (
            vec!["snapshot", "--demo", "--select", "frontend->nobody"],
            "nobody",
        ),
        (vec!["snapshot", "--demo", "--at", "-3"], "--at"),
        (
            vec!["snapshot", "--demo", "--filter", "verdict:MAYBE"],
            "MAYBE",
        ),
        (
            vec!["snapshot", "--relay", "127.0.0.1:1"],
            "cannot reach the relay",
        ),
        (
            vec!["snapshot", "--file", "/nonexistent.jsonl"],
            "cannot open /nonexistent.jsonl",
        ),
        (
            vec!["demo", "--theme", theme_arg.as_str()],
            "broken-theme.toml:2",
        ),
        (vec!["demo", "--theme", "purple"], "purple"),
        (vec!["demo", "--speed", "0"], "--speed"),
        (vec!["ui", "--color", "sometimes"], "sometimes"),
    ] {
        let (out, stdout, stderr) = run(skymap().args(&args));
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
        assert!(!stdout.contains('\u{1b}'), "{args:?} wrote escape codes");
    }
}

#[test]
fn the_explorer_without_a_terminal_says_so_and_leaves_the_output_clean() {
    for command in [vec![], vec!["ui"], vec!["demo"]] {
        let (out, stdout, stderr) = run(skymap().args(&command));
        assert!(!out.status.success(), "{command:?}");
        assert!(stderr.contains("needs a terminal"), "{command:?}: {stderr}");
        assert!(stdout.is_empty(), "{command:?}: {stdout:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_feeds_a_mutual_tls_relay_with_a_client_certificate() {
    use skymap_proto::test_pki::Ca;
    use skymap_relay::tls::TlsConfig;

    let ca = Ca::new("skymap test CA").expect("CA");
    let server = ca.sign("skymap-relay", &["localhost"]).expect("cert");
    let client = ca.sign("replayer", &["replayer"]).expect("cert");
    let file = |name: &str, text: &str| {
        let path = scratch(&format!("mtls-{name}"));
        std::fs::write(&path, text).expect("write");
        path
    };
    let (ca_file, cert, key) = (
        file("ca.pem", &ca.cert),
        file("client.pem", &client.cert),
        file("client.key", &client.key),
    );
    let relay = server::start(
        "127.0.0.1:0",
        RelayConfig {
            tls: Some(TlsConfig {
                client_ca: Some(ca_file.clone()),
                ..TlsConfig::new(
                    file("server.pem", &server.cert),
                    file("server.key", &server.key),
                )
            }),
            ..RelayConfig::default()
        },
    )
    .await
    .expect("the mTLS relay starts");
    let url = format!("https://localhost:{}", relay.addr.port());
    let story = fixture("story.jsonl");
    let replay = |with_cert: bool| {
        let (url, story, ca_file, cert, key) = (
            url.clone(),
            story.clone(),
            ca_file.clone(),
            cert.clone(),
            key.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let mut cmd = skymap();
            cmd.args(["replay", "--speed", "0", "--relay", &url, "--tls-ca"])
                .arg(&ca_file);
            if with_cert {
                cmd.arg("--tls-cert").arg(&cert).arg("--tls-key").arg(&key);
            }
            run(cmd.arg(&story))
        })
    };
    let (out, _, stderr) = replay(false).await.expect("replay ran");
    assert!(
        !out.status.success(),
        "refused without a client certificate"
    );
    assert!(stderr.contains("client certificate"), "{stderr}");
    let (out, _, stderr) = replay(true).await.expect("replay ran");
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("replayed"), "{stderr}");
    // --tls-cert needs its key.
    let (out, _, stderr) = run(skymap()
        .args(["replay", "--relay", &url, "--tls-cert"])
        .arg(&cert)
        .arg(&story));
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");
    relay.shutdown().await.expect("shuts down");
}
