//! The lab's network for real (root; CI runs it): two nodes, three pods,
//! one service. Pods reach each other across nodes and on one node, a
//! service address reaches its backends through DNAT, the host's namespace
//! is not reachable, and teardown leaves no namespace behind.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use skymap_lab::net::{self, Names, NetPlan, NodeNet, PodNet, Protocol, ServiceNat};

/// Runs `work` inside the namespace at /run/netns/`ns`.
fn inside<T: Send>(ns: &str, work: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(Names::path(ns)).expect("namespace exists");
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            work()
        })
        .join()
        .expect("no panic inside")
    })
}

/// A server in `ns` answering each connection with `reply`.
fn serve(ns: &str, ip: Ipv4Addr, port: u16, reply: &'static str) -> std::thread::JoinHandle<()> {
    let listener = inside(ns, || TcpListener::bind((ip, port)).expect("bind"));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.write_all(reply.as_bytes());
        }
    })
}

fn fetch(ns: &str, to: SocketAddr) -> std::io::Result<String> {
    inside(ns, || {
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })
}

struct Lab(Names);

impl Drop for Lab {
    fn drop(&mut self) {
        net::teardown(&self.0);
    }
}

#[test]
fn pods_talk_across_nodes_and_through_services_and_nothing_is_left() {
    let id = format!("t{}", std::process::id() % 100_000);
    let names = Names::new(&id).expect("id");
    let lab = Lab(names.clone());
    let node = |index: u8| NodeNet {
        name: format!("node-{index}"),
        index,
    };
    let (a, b, c) = (
        Ipv4Addr::new(10, 244, 1, 2),
        Ipv4Addr::new(10, 244, 1, 3),
        Ipv4Addr::new(10, 244, 2, 2),
    );
    let service = Ipv4Addr::new(10, 96, 0, 20);
    let plan = NetPlan {
        nodes: vec![node(1), node(2)],
        pods: vec![
            PodNet {
                key: "shop/a".into(),
                node: 0,
                ip: a,
            },
            PodNet {
                key: "shop/b".into(),
                node: 0,
                ip: b,
            },
            PodNet {
                key: "shop/c".into(),
                node: 1,
                ip: c,
            },
        ],
        services: vec![ServiceNat {
            ip: service,
            port: 80,
            protocol: Protocol::Tcp,
            endpoints: vec![(c, 8080)],
        }],
    };
    let mut steps = Vec::new();
    net::build(&names, &plan, &mut |s| steps.push(s.to_string())).expect("the lab's network");
    assert!(steps.len() >= 4, "progress is reported: {steps:?}");
    assert_eq!(net::existing(&names).len(), 1 + 2 + 3);
    assert_eq!(
        names.pods_glob(&plan.nodes[0]),
        format!("/run/netns/skymap-{id}-n1-p*")
    );
    assert_eq!(
        names.pods_glob(&plan.nodes[0]),
        format!("/run/netns/skymap-{id}-n1-p*")
    );

    let pod = |index: usize| names.pod(&plan.nodes[plan.pods[index].node], index);
    let server_c = serve(&pod(2), c, 8080, "from c");
    let server_b = serve(&pod(1), b, 8080, "from b");
    // Across nodes, on one node, and through the service's address.
    assert_eq!(fetch(&pod(0), (c, 8080).into()).expect("a to c"), "from c");
    assert_eq!(fetch(&pod(0), (b, 8080).into()).expect("a to b"), "from b");
    assert_eq!(
        fetch(&pod(1), (service, 80).into()).expect("b to the service"),
        "from c"
    );
    // No route leads out of the lab: an outside address is unreachable at
    // once (the node has no default route), not merely slow.
    let outside = fetch(&pod(0), (Ipv4Addr::new(192, 0, 2, 1), 80).into());
    let err = outside.expect_err("nothing routes out");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable
        ),
        "{err:?}"
    );

    let left = net::teardown(&names);
    assert_eq!(left, Vec::<String>::new());
    drop(lab);
    drop((server_b, server_c));
}

#[test]
fn a_failed_build_removes_what_it_made() {
    let names = Names::new(&format!("f{}", std::process::id() % 100_000)).expect("id");
    let plan = NetPlan {
        nodes: vec![NodeNet {
            name: "node-1".into(),
            index: 1,
        }],
        // Two pods with one address: the second route fails.
        pods: vec![
            PodNet {
                key: "x/a".into(),
                node: 0,
                ip: Ipv4Addr::new(10, 244, 1, 2),
            },
            PodNet {
                key: "x/b".into(),
                node: 0,
                ip: Ipv4Addr::new(10, 244, 1, 2),
            },
        ],
        services: Vec::new(),
    };
    let err = net::build(&names, &plan, &mut |_| {}).expect_err("duplicate route");
    assert!(err.to_string().contains("node-1"), "{err}");
    assert_eq!(net::existing(&names), Vec::<String>::new());
}

#[test]
fn bad_ids_and_the_nat_script() {
    assert!(Names::new("UPPER").is_err());
    assert!(Names::new("toolong123").is_err());
    assert!(Names::new("").is_err());
    let script = net::service_nat_script(&[
        ServiceNat {
            ip: Ipv4Addr::new(10, 96, 0, 10),
            port: 53,
            protocol: Protocol::Udp,
            endpoints: vec![
                (Ipv4Addr::new(10, 244, 1, 5), 53),
                (Ipv4Addr::new(10, 244, 2, 5), 5353),
            ],
        },
        ServiceNat {
            ip: Ipv4Addr::new(10, 96, 0, 11),
            port: 80,
            protocol: Protocol::Tcp,
            endpoints: Vec::new(),
        },
    ]);
    assert!(script.contains(
        "ip daddr 10.96.0.10 udp dport 53 dnat ip to numgen random mod 2 map { 0 : 10.244.1.5 . 53, 1 : 10.244.2.5 . 5353 }"
    ), "{script}");
    assert!(
        !script.contains("10.96.0.11"),
        "no backends, no rule: {script}"
    );
}
