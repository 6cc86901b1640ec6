//! The probe in the kernel, on loopback (root; CI runs it): real programs,
//! real packets, and nothing left behind afterwards.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use skymap_node_probe::event::EventBody;
use skymap_node_probe::loader::{LoadOptions, Probe};
use skymap_node_probe::preflight::{self, Facts};
use skymap_node_probe::reasons::DropReasons;

const CONNECTS: usize = 3;

fn serve(listener: TcpListener, count: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for _ in 0..count {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut request = [0u8; 256];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    })
}

/// Loaded programs with our names, by id. Other probes on this machine (a
/// running lab, another test) have them too: compare ids, not names.
fn our_programs() -> std::collections::BTreeMap<u32, String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| Some((p.id(), p.name_as_str()?.to_string())))
        .filter(|(_, name)| name.starts_with("tc_") || name == "kfree_skb")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_connects_requests_and_a_refusal() {
    if let Err(e) = preflight::check(&Facts::gather()) {
        panic!("{e} (this test runs as root, as CI does)");
    }
    let reasons = DropReasons::from_kernel().expect("drop reasons");
    let before = our_programs();
    let mut probe = Probe::load(&LoadOptions::default()).expect("the programs load");
    let new_programs = || -> Vec<String> {
        our_programs()
            .into_iter()
            .filter(|(id, _)| !before.contains_key(id))
            .map(|(_, name)| name)
            .collect()
    };
    assert_eq!(
        new_programs().len(),
        5,
        "the probe loads five programs: {:?}",
        new_programs()
    );
    probe.attach("lo").expect("attach to lo");

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = serve(listener, CONNECTS);
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    for _ in 0..CONNECTS {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .write_all(b"GET /probe-test HTTP/1.1\r\nHost: skymap\r\n\r\n")
            .expect("send");
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        assert!(reply.starts_with(b"HTTP/1.1 200"));
    }
    assert!(
        TcpStream::connect(("127.0.0.1", closed)).is_err(),
        "nothing listens"
    );
    server.join().expect("server");

    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(300), probe.read()).await {
            Ok(Ok(batch)) => {
                assert_eq!(batch.undecodable, 0, "{:?}", batch.first_error);
                events.extend(batch.events);
            }
            Ok(Err(e)) => panic!("reading: {e}"),
            Err(_) => {}
        }
    }
    let ours = |port: u16| {
        move |e: &&skymap_node_probe::event::Event| {
            let t = e.body.tuple();
            t.dport == port || t.sport == port
        }
    };
    // On loopback every packet passes lo's egress hook and then its ingress
    // hook, and the flow table keys flows by hook, so each thing is seen twice.
    const HOOKS: usize = 2;
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for e in events.iter().filter(ours(port)) {
        *kinds.entry(kind_name(&e.body)).or_default() += 1;
    }
    // Both directions of every connection start a flow and close it.
    assert_eq!(kinds.get("new"), Some(&(2 * HOOKS * CONNECTS)), "{kinds:?}");
    assert_eq!(
        kinds.get("close"),
        Some(&(2 * HOOKS * CONNECTS)),
        "{kinds:?}"
    );
    let handshakes: Vec<u64> = events
        .iter()
        .filter(ours(port))
        .filter_map(|e| match &e.body {
            EventBody::Handshake {
                tuple,
                syn_ns,
                synack_ns,
            } => {
                assert_eq!(tuple.dport, port, "the SYN's tuple: client -> server");
                Some(synack_ns.saturating_sub(*syn_ns))
            }
            _ => None,
        })
        .collect();
    assert_eq!(handshakes.len(), HOOKS * CONNECTS, "{kinds:?}");
    assert!(handshakes.iter().all(|&ns| ns > 0), "{handshakes:?}");
    let requests = events
        .iter()
        .filter(ours(port))
        .filter(|e| {
            matches!(&e.body, EventBody::Payload { snippet, .. }
                if snippet.starts_with(b"GET /probe-test HTTP/1.1"))
        })
        .count();
    assert_eq!(requests, HOOKS * CONNECTS);
    let responses = events
        .iter()
        .filter(ours(port))
        .filter(|e| {
            matches!(&e.body, EventBody::Payload { snippet, .. }
                if snippet.starts_with(b"HTTP/1.1 200 OK"))
        })
        .count();
    assert_eq!(responses, HOOKS * CONNECTS);

    // The refused connect: the kernel drops the SYN for want of a socket.
    let drops: Vec<String> = events
        .iter()
        .filter(ours(closed))
        .filter_map(|e| match &e.body {
            EventBody::Drop { reason, .. } => Some(reasons.name(*reason)),
            _ => None,
        })
        .collect();
    assert!(drops.iter().any(|r| r == "NO_SOCKET"), "{drops:?}");

    let counters = probe.counters().expect("counters");
    let counter = |name: &str| counters.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    assert_eq!(counter("ringbuf-full"), Some(0), "{counters:?}");
    assert!(counter("packets").is_some_and(|p| p > 0), "{counters:?}");

    // Dropping the probe detaches everything; the kernel frees programs
    // after an RCU grace period, so give it a moment.
    drop(probe);
    let gone = Instant::now() + Duration::from_secs(5);
    while !new_programs().is_empty() && Instant::now() < gone {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        new_programs().is_empty(),
        "left behind: {:?}",
        new_programs()
    );
}

fn kind_name(body: &EventBody) -> &'static str {
    match body {
        EventBody::FlowNew(_) => "new",
        EventBody::FlowClose(_) => "close",
        EventBody::FlowFlush(_) => "flush",
        EventBody::Handshake { .. } => "handshake",
        EventBody::Payload { .. } => "payload",
        EventBody::Drop { .. } => "drop",
    }
}
