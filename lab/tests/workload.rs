//! The lab workloads on loopback: servers and clients run against each other
//! and their counters must agree exactly; DNS behaves like kube-dns and the
//! client resolves like glibc; stop drains and leaves a final snapshot.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skymap_lab::workload::dns::{self, FORMERR, NOERROR, NXDOMAIN, REFUSED, TYPE_A, TYPE_AAAA};
use skymap_lab::workload::{
    Call, ClientPlan, CounterSnapshot, Counters, DnsServerSpec, HttpBehaviour, HttpServerSpec,
    Latency, LatencySampler, PodSpec, Zone, ZoneRecords, ZoneSource, read_snapshot, run_client,
    run_pod, serve_dns, serve_http, write_snapshot_atomically,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::sleep;

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A server task and the means to stop it.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("server task");
    }
}

fn stop_pair() -> (oneshot::Sender<()>, impl Future<Output = ()>) {
    let (tx, rx) = oneshot::channel();
    (tx, async move {
        let _ = rx.await;
    })
}

fn shop_zone() -> ZoneRecords {
    let mut zone = ZoneRecords::new();
    zone.insert_service("cart", "shop", vec![LOCALHOST])
        .expect("insert service");
    zone.insert_service("pay", "shop", vec![Ipv4Addr::new(10, 96, 0, 7), LOCALHOST])
        .expect("insert service");
    zone
}

async fn start_dns(zone: Zone) -> (SocketAddr, Counters, Running) {
    let socket = UdpSocket::bind((LOCALHOST, 0)).await.expect("bind");
    let addr = socket.local_addr().expect("local addr");
    let counters = Counters::new();
    let (stop, stopped) = stop_pair();
    let task = tokio::spawn(serve_dns(socket, zone, counters.clone(), stopped));
    (addr, counters, Running { stop, task })
}

async fn start_http(behaviour: HttpBehaviour) -> (u16, Counters, Running) {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let counters = Counters::new();
    let (stop, stopped) = stop_pair();
    let server = serve_http(listener, behaviour, counters.clone(), stopped);
    let task = tokio::spawn(async move { server.await.expect("serve http") });
    (port, counters, Running { stop, task })
}

fn call(name: &str, port: u16, rate_per_s: f64) -> Call {
    Call {
        name: name.into(),
        port,
        path: "/api".into(),
        rate_per_s,
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

fn sum<K>(map: &BTreeMap<K, u64>) -> u64 {
    map.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_agree_exactly_with_an_error_ratio() {
    let (resolver, dns_counters, dns) = start_dns(Zone::new(shop_zone())).await;
    let behaviour = HttpBehaviour {
        error_ratio: 0.25,
        ..HttpBehaviour::default()
    };
    let (port, server_counters, http) = start_http(behaviour).await;
    let plan = ClientPlan::new("shop", resolver, vec![call("cart", port, 50.0)]);
    let client_counters = Counters::new();
    let started = std::time::Instant::now();
    run_client(
        plan,
        client_counters.clone(),
        sleep(Duration::from_millis(800)),
    )
    .await
    .expect("run client");
    // On a loaded machine the stop itself can come late: the ticks the
    // client may count are those of the time it really ran.
    let ran_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    http.stop().await;
    dns.stop().await;

    let client = client_counters.snapshot().client;
    let server = server_counters.snapshot().http_server;
    let cart = &client.by_target["cart"];
    assert_eq!(&client.total, cart);
    let n = cart.requests_sent;
    // 50/s for 0.8 s is 40 ticks; a loaded machine may skip some (they are
    // counted), never add any: at most one per 20 ms it ran, plus the first.
    let ticks = cart.calls_started + cart.ticks_skipped;
    assert!(
        (39..=ran_ms / 20 + 1).contains(&ticks),
        "{ran_ms} ms: {cart:?}"
    );
    assert!(n >= 30, "{cart:?}");
    // Every call resolved on the first candidate and got an answer.
    assert_eq!(cart.calls_started, n);
    assert_eq!((cart.calls_failed, cart.calls_aborted), (0, 0));
    assert_eq!(cart.dns_queries_sent, n);
    assert_eq!(
        cart.dns_responses_by_rcode,
        BTreeMap::from([("NOERROR".into(), n)])
    );
    assert_eq!(cart.connections_attempted, n);
    assert_eq!(cart.connections_established, n);
    // The server saw exactly what the client sent, and answered what it got.
    assert_eq!(server.connections_accepted, n);
    assert_eq!(server.requests_received, n);
    assert_eq!(server.responses_by_status, cart.responses_by_status);
    let errors = n / 4;
    assert_eq!(
        cart.responses_by_status,
        BTreeMap::from([(200, n - errors), (500, errors)])
    );
    assert_eq!(cart.latency.count, n);
    let dns = dns_counters.snapshot().dns_server;
    assert_eq!(dns.queries_received, n);
    assert_eq!(
        dns.queries_by_name,
        BTreeMap::from([(
            "cart.shop.svc.cluster.local".into(),
            BTreeMap::from([("NOERROR".into(), n)])
        )])
    );
}

async fn http_get(port: u16) -> String {
    let mut stream = TcpStream::connect((LOCALHOST, port))
        .await
        .expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read to string");
    response
}

#[tokio::test]
async fn every_fourth_request_fails_at_ratio_one_quarter() {
    let behaviour = HttpBehaviour {
        error_ratio: 0.25,
        ..HttpBehaviour::default()
    };
    let (port, counters, http) = start_http(behaviour).await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let response = http_get(port).await;
        statuses.push(response.get(9..12).expect("status code").to_owned());
    }
    assert_eq!(
        statuses,
        [
            "200", "200", "200", "500", "200", "200", "200", "500", "200", "200", "200", "500"
        ]
    );
    let ok = http_get(port).await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("\r\nConnection: close\r\n"), "{ok}");
    assert!(ok.ends_with("\r\n\r\nok"), "{ok}");
    http.stop().await;
    let server = counters.snapshot().http_server;
    assert_eq!(
        server.responses_by_status,
        BTreeMap::from([(200, 10), (500, 3)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_latency_is_what_the_client_measures() {
    let (resolver, _, dns) = start_dns(Zone::new(shop_zone())).await;
    let behaviour = HttpBehaviour {
        latency: Latency::Fixed(Duration::from_millis(40)),
        ..HttpBehaviour::default()
    };
    let (port, _, http) = start_http(behaviour).await;
    let plan = ClientPlan::new("shop", resolver, vec![call("cart", port, 10.0)]);
    let counters = Counters::new();
    run_client(plan, counters.clone(), sleep(Duration::from_millis(450)))
        .await
        .expect("run client");
    http.stop().await;
    dns.stop().await;
    let latency = counters.snapshot().client.total.latency;
    assert!(latency.count >= 4, "{latency:?}");
    assert!(latency.min_us >= 40_000, "{latency:?}");
    assert!(latency.max_us < 200_000, "{latency:?}");
    // All in the (20 ms, 50 ms] bucket, or (50, 100] on a slow machine.
    assert_eq!(latency.buckets[5] + latency.buckets[6], latency.count);
}

#[test]
fn log_normal_draws_match_the_configured_quantiles() {
    let (p50, p99) = (Duration::from_millis(20), Duration::from_millis(200));
    let mut sampler = LatencySampler::new(Latency::LogNormal { p50, p99 }, 7);
    let mut draws: Vec<Duration> = (0..10_000).map(|_| sampler.sample()).collect();
    draws.sort();
    let within_10_percent = |got: Duration, want: Duration| {
        let ratio = got.as_secs_f64() / want.as_secs_f64();
        assert!((0.9..=1.1).contains(&ratio), "{got:?} vs {want:?}");
    };
    within_10_percent(draws[5_000], p50);
    within_10_percent(draws[9_900], p99);
    // The same seed gives the same delays.
    let mut again = LatencySampler::new(Latency::LogNormal { p50, p99 }, 7);
    let mut first = LatencySampler::new(Latency::LogNormal { p50, p99 }, 7);
    assert_eq!(again.sample(), first.sample());
}

/// Stands between the client and the DNS server and records each query's
/// name with the rcode the server answered, in order.
async fn start_recording_proxy(
    upstream: SocketAddr,
) -> (SocketAddr, Arc<Mutex<Vec<(String, u8)>>>) {
    let front = UdpSocket::bind((LOCALHOST, 0)).await.expect("bind");
    let addr = front.local_addr().expect("local addr");
    let back = UdpSocket::bind((LOCALHOST, 0)).await.expect("bind");
    back.connect(upstream).await.expect("connect");
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&log);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, client) = front.recv_from(&mut buf).await.expect("recv from");
            let query = dns::parse_query(&buf[..n]).expect("parse query");
            back.send(&buf[..n]).await.expect("send");
            let m = back.recv(&mut buf).await.expect("recv");
            let response = dns::parse_response(&buf[..m]).expect("parse response");
            seen.lock()
                .expect("lock")
                .push((query.name, response.rcode));
            front.send_to(&buf[..m], client).await.expect("send to");
        }
    });
    (addr, log)
}

/// One call of `name` from `namespace`; returns the queries the server saw.
async fn one_lookup(name: &str, namespace: &str) -> (Vec<(String, u8)>, CounterSnapshot) {
    let (server, _, dns) = start_dns(Zone::new(shop_zone())).await;
    let (port, _, http) = start_http(HttpBehaviour::default()).await;
    let (resolver, log) = start_recording_proxy(server).await;
    let plan = ClientPlan::new(namespace, resolver, vec![call(name, port, 1.0)]);
    let counters = Counters::new();
    run_client(plan, counters.clone(), sleep(Duration::from_millis(300)))
        .await
        .expect("run client");
    http.stop().await;
    dns.stop().await;
    let seen = log.lock().expect("lock").clone();
    (seen, counters.snapshot())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_resolved_through_the_search_list() {
    let q = |name: &str, rcode: u8| (name.to_owned(), rcode);

    let (seen, counters) = one_lookup("cart", "shop").await;
    assert_eq!(seen, vec![q("cart.shop.svc.cluster.local", NOERROR)]);
    assert_eq!(
        counters.client.total.responses_by_status,
        BTreeMap::from([(200, 1)])
    );

    let (seen, counters) = one_lookup("cart.shop", "web").await;
    assert_eq!(
        seen,
        vec![
            q("cart.shop.web.svc.cluster.local", NXDOMAIN),
            q("cart.shop.svc.cluster.local", NOERROR),
        ]
    );
    let total = &counters.client.total;
    assert_eq!(total.dns_queries_sent, 2);
    assert_eq!(
        total.dns_responses_by_rcode,
        BTreeMap::from([("NOERROR".into(), 1), ("NXDOMAIN".into(), 1)])
    );
    assert_eq!(total.responses_by_status, BTreeMap::from([(200, 1)]));

    // From another namespace a bare name exists nowhere: every suffix is
    // NXDOMAIN, then the name as written is outside the cluster: REFUSED.
    let (seen, counters) = one_lookup("cart", "web").await;
    assert_eq!(
        seen,
        vec![
            q("cart.web.svc.cluster.local", NXDOMAIN),
            q("cart.svc.cluster.local", NXDOMAIN),
            q("cart.cluster.local", NXDOMAIN),
            q("cart", REFUSED),
        ]
    );
    let total = &counters.client.total;
    assert_eq!((total.calls_started, total.calls_failed), (1, 1));
    assert_eq!(total.connections_attempted, 0);

    // A fully qualified name is asked once, as written.
    let (seen, _) = one_lookup("pay.shop.svc.cluster.local.", "web").await;
    assert_eq!(seen, vec![q("pay.shop.svc.cluster.local", NOERROR)]);
}

#[tokio::test]
async fn server_answers_like_kube_dns() {
    let zone = Zone::new(shop_zone());
    let (addr, counters, dns) = start_dns(zone.clone()).await;
    let socket = UdpSocket::bind((LOCALHOST, 0)).await.expect("bind");
    socket.connect(addr).await.expect("connect");
    let ask = async |name: &str, qtype: u16| {
        socket
            .send(&dns::encode_query(9, name, qtype).expect("encode query"))
            .await
            .expect("send");
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).await.expect("recv");
        let response = dns::parse_response(&buf[..n]).expect("parse response");
        assert_eq!(response.id, 9);
        (response.rcode, response.addrs)
    };
    let pay = vec![Ipv4Addr::new(10, 96, 0, 7), LOCALHOST];
    assert_eq!(
        ask("pay.shop.svc.cluster.local.", TYPE_A).await,
        (NOERROR, pay)
    );
    assert_eq!(
        ask("pay.shop.svc.cluster.local", TYPE_AAAA).await,
        (NOERROR, vec![])
    );
    assert_eq!(
        ask("nosuch.shop.svc.cluster.local", TYPE_A).await,
        (NXDOMAIN, vec![])
    );
    assert_eq!(
        ask("nosuch.shop.svc.cluster.local", TYPE_AAAA).await,
        (NXDOMAIN, vec![])
    );
    assert_eq!(ask("example.com", TYPE_A).await, (REFUSED, vec![]));

    // Services change: the zone is replaced under the running server.
    let mut changed = ZoneRecords::new();
    changed
        .insert_service("nosuch", "shop", vec![Ipv4Addr::new(10, 96, 0, 9)])
        .expect("insert service");
    zone.replace(changed);
    assert_eq!(
        ask("nosuch.shop.svc.cluster.local", TYPE_A).await,
        (NOERROR, vec![Ipv4Addr::new(10, 96, 0, 9)])
    );
    assert_eq!(
        ask("cart.shop.svc.cluster.local", TYPE_A).await,
        (NXDOMAIN, vec![])
    );
    dns.stop().await;

    let dns = counters.snapshot().dns_server;
    assert_eq!(dns.queries_received, 7);
    assert_eq!(
        dns.responses_by_rcode,
        BTreeMap::from([
            ("NOERROR".into(), 3),
            ("NXDOMAIN".into(), 3),
            ("REFUSED".into(), 1)
        ])
    );
    assert_eq!(
        dns.queries_by_name["nosuch.shop.svc.cluster.local"]["NXDOMAIN"],
        2
    );
}

#[tokio::test]
async fn a_silent_resolver_counts_unanswered_queries() {
    // Bound, so no ICMP error comes back; never read, so nothing answers.
    let silent = UdpSocket::bind((LOCALHOST, 0)).await.expect("bind");
    let mut plan = ClientPlan::new(
        "shop",
        silent.local_addr().expect("local addr"),
        vec![call("cart", 8080, 2.0)],
    );
    plan.dns_timeout = Duration::from_millis(200);
    let counters = Counters::new();
    run_client(plan, counters.clone(), sleep(Duration::from_millis(750)))
        .await
        .expect("run client");
    let total = counters.snapshot().client.total;
    // Ticks at 0 and 500 ms; each call's first query times out, and a
    // timeout ends the lookup (no next suffix, no retry).
    assert_eq!(total.calls_started, 2);
    assert_eq!(total.dns_queries_sent, 2);
    assert_eq!(total.dns_queries_unanswered, 2);
    assert_eq!(total.dns_query_errors, 0);
    assert!(total.dns_responses_by_rcode.is_empty());
    assert_eq!(total.calls_failed, 2);
    assert_eq!(total.connections_attempted, 0);
    drop(silent);
}

#[test]
fn malformed_dns_packets_get_formerr_and_never_panic() {
    let zone = shop_zone();
    let query =
        dns::encode_query(0xBEEF, "cart.shop.svc.cluster.local", TYPE_A).expect("encode query");
    // Every cut of a valid query: too short for an ID is dropped, any other
    // cut is FORMERR with the ID echoed, the whole query is answered.
    for len in 0..=query.len() {
        let reply = dns::handle_packet(&query[..len], &zone);
        match len {
            0 | 1 => assert_eq!(reply, None),
            n if n == query.len() => assert_eq!(reply.expect("a reply").rcode, NOERROR),
            _ => {
                let reply = reply.expect("a reply");
                assert_eq!(reply.rcode, FORMERR, "cut at {len}");
                assert_eq!(&reply.response[..2], &[0xBE, 0xEF]);
            }
        }
    }
    // Random bytes: never a panic; any reply echoes the ID and is a response.
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 80) as usize;
        let mut packet: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if len > 5 && next() % 2 == 0 {
            // Often a plausible header, so parsing gets past the counts.
            packet[2] &= 0x07;
            packet[4] = 0;
            packet[5] = 1;
        }
        if let Some(reply) = dns::handle_packet(&packet, &zone) {
            assert_eq!(&reply.response[..2], &packet[..2]);
            assert_eq!(reply.response[2] & 0x80, 0x80);
        }
    }
}

#[tokio::test]
async fn malformed_datagrams_are_answered_formerr_over_udp() {
    let (addr, counters, dns) = start_dns(Zone::new(shop_zone())).await;
    let socket = UdpSocket::bind((LOCALHOST, 0)).await.expect("bind");
    socket.connect(addr).await.expect("connect");
    let header = |flags: u8, qdcount: u8| vec![0x12, 0x34, flags, 0, 0, qdcount, 0, 0, 0, 0, 0, 0];
    let with = |mut head: Vec<u8>, tail: &[u8]| {
        head.extend_from_slice(tail);
        head
    };
    let formerr = [
        vec![0x12, 0x34],                                      // an ID and nothing else
        header(0x01, 1)[..11].to_vec(),                        // a header cut short
        header(0x01, 0),                                       // no question
        with(header(0x01, 2), b"\x01a\x00\x00\x01\x00\x01"),   // two questions
        with(header(0x01, 1), b"\x04cart\x07"),                // name cut short
        with(header(0x01, 1), b"\x80abc\x00\x00\x01\x00\x01"), // reserved label type
        with(header(0x01, 1), b"\xC0\x20\x00\x01\x00\x01"),    // pointer forward
        with(header(0x01, 1), b"\x01a\x00\x00"),               // question cut short
    ];
    for packet in &formerr {
        socket.send(packet).await.expect("send");
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).await.expect("recv");
        let response = dns::parse_response(&buf[..n]).expect("parse response");
        assert_eq!(
            (response.id, response.rcode),
            (0x1234, FORMERR),
            "{packet:?}"
        );
    }
    // Dropped: a single byte, and a response sent to the server.
    socket.send(&[0x12]).await.expect("send");
    socket
        .send(&with(header(0x81, 1), b"\x01a\x00\x00\x01\x00\x01"))
        .await
        .expect("send");
    // The server is still fine.
    socket
        .send(&dns::encode_query(7, "cart.shop.svc.cluster.local", TYPE_A).expect("encode query"))
        .await
        .expect("send");
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).await.expect("recv");
    let response = dns::parse_response(&buf[..n]).expect("parse response");
    assert_eq!((response.id, response.rcode), (7, NOERROR));
    dns.stop().await;
    let dns = counters.snapshot().dns_server;
    assert_eq!(dns.queries_received, 11);
    assert_eq!(dns.datagrams_dropped, 2);
    assert_eq!(
        dns.responses_by_rcode,
        BTreeMap::from([("FORMERR".into(), 8), ("NOERROR".into(), 1)])
    );
}

#[tokio::test]
async fn bad_http_requests_get_answers_and_hang_nothing() {
    let behaviour = HttpBehaviour {
        read_timeout: Duration::from_millis(300),
        ..HttpBehaviour::default()
    };
    let (port, counters, http) = start_http(behaviour).await;
    let connect = || TcpStream::connect((LOCALHOST, port));
    let read_all = async |mut stream: TcpStream| {
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read to string");
        response
    };

    let mut garbage = connect().await.expect("connect");
    garbage
        .write_all(b"hello there\r\n\r\n")
        .await
        .expect("write all");
    assert!(read_all(garbage).await.starts_with("HTTP/1.1 400 "));

    let mut cut = connect().await.expect("connect");
    cut.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write request");
    cut.shutdown().await.expect("shutdown");
    assert!(read_all(cut).await.starts_with("HTTP/1.1 400 "));

    let mut huge = connect().await.expect("connect");
    huge.write_all(&[b'x'; 20_000]).await.expect("write all");
    assert!(read_all(huge).await.starts_with("HTTP/1.1 400 "));

    let silent = connect().await.expect("connect");
    assert!(read_all(silent).await.starts_with("HTTP/1.1 408 "));

    drop(connect().await.expect("connect"));
    wait_until("the closed connection is seen", || {
        counters.snapshot().http_server.connections_empty == 1
    })
    .await;
    http.stop().await;

    let server = counters.snapshot().http_server;
    assert_eq!(server.connections_accepted, 5);
    assert_eq!(server.malformed_requests, 3);
    assert_eq!(server.read_timeouts, 1);
    assert_eq!(server.connections_empty, 1);
    assert_eq!(server.requests_received, 0);
    assert_eq!(
        server.responses_by_status,
        BTreeMap::from([(400, 3), (408, 1)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_of_20_per_second_makes_20_calls_a_second() {
    let (resolver, _, dns) = start_dns(Zone::new(shop_zone())).await;
    let (port, server_counters, http) = start_http(HttpBehaviour::default()).await;
    let plan = ClientPlan::new("shop", resolver, vec![call("cart.shop", port, 20.0)]);
    let counters = Counters::new();
    run_client(plan, counters.clone(), sleep(Duration::from_secs(1)))
        .await
        .expect("run client");
    http.stop().await;
    dns.stop().await;
    let cart = &counters.snapshot().client.by_target["cart.shop"];
    // Ticks the runtime woke too late for are skipped, not made up; on an
    // idle machine there are none and 19-21 requests go out.
    let ticks = cart.calls_started + cart.ticks_skipped;
    assert!((19..=21).contains(&ticks), "{cart:?}");
    assert!(cart.requests_sent + 3 >= ticks, "{cart:?}");
    assert_eq!(cart.calls_started, cart.requests_sent);
    assert_eq!(cart.calls_failed + cart.calls_aborted, 0);
    assert_eq!(
        server_counters.snapshot().http_server.requests_received,
        cart.requests_sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_drain_timeout_are_counted_as_aborted() {
    let (resolver, _, dns) = start_dns(Zone::new(shop_zone())).await;
    let behaviour = HttpBehaviour {
        latency: Latency::Fixed(Duration::from_secs(10)),
        drain_timeout: Duration::from_millis(100),
        ..HttpBehaviour::default()
    };
    let (port, server_counters, http) = start_http(behaviour).await;
    let mut plan = ClientPlan::new("shop", resolver, vec![call("cart", port, 10.0)]);
    plan.drain_timeout = Duration::from_millis(100);
    let counters = Counters::new();
    run_client(plan, counters.clone(), sleep(Duration::from_millis(350)))
        .await
        .expect("run client");
    let sent = counters.snapshot().client.total.requests_sent;
    wait_until("the server has every request", || {
        server_counters.snapshot().http_server.requests_received == sent
    })
    .await;
    http.stop().await;
    dns.stop().await;

    let total = counters.snapshot().client.total;
    assert!((3..=5).contains(&sent), "{total:?}");
    assert_eq!(total.calls_started, sent);
    assert_eq!(total.calls_aborted, sent);
    assert_eq!(total.requests_aborted, sent);
    assert!(total.responses_by_status.is_empty());
    let server = server_counters.snapshot().http_server;
    assert_eq!(server.responses_aborted, sent);
    assert_eq!(sum(&server.responses_by_status), 0);
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("skymap-lab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create dir all");
    dir
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind((LOCALHOST, 0)).expect("bind");
    let udp =
        std::net::UdpSocket::bind((LOCALHOST, listener.local_addr().expect("local addr").port()));
    match udp {
        Ok(_) => listener.local_addr().expect("local addr").port(),
        Err(_) => free_port(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waits_for_its_start_file() {
    let dir = temp_dir("gate");
    let (counters_path, gate) = (dir.join("counters.json"), dir.join("go"));
    let silent = std::net::UdpSocket::bind((LOCALHOST, 0)).expect("bind");
    let spec_json = format!(
        r#"{{"client": {{"namespace": "shop", "resolver": "{}", "dns_timeout_ms": 100,
                        "calls": [{{"name": "cart", "port": 8080, "rate_per_s": 20}}]}},
            "start_clients_after": "{}"}}"#,
        silent.local_addr().expect("addr"),
        gate.display()
    );
    let spec = PodSpec::from_json(&spec_json, &dir.join("spec.json")).expect("from json");
    let (stop, stopped) = stop_pair();
    let pod = tokio::spawn(run_pod(spec, counters_path.clone(), stopped));
    sleep(Duration::from_millis(1200)).await;
    let waiting = read_snapshot(&counters_path).expect("read snapshot");
    assert_eq!(
        waiting.client.total.calls_started, 0,
        "nothing before the file"
    );
    std::fs::write(&gate, b"").expect("write");
    sleep(Duration::from_millis(1200)).await;
    let started = read_snapshot(&counters_path).expect("read snapshot");
    assert!(started.client.total.dns_queries_sent > 0, "{started:?}");
    stop.send(()).expect("send");
    pod.await.expect("join").expect("the pod stops cleanly");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_until_stop_drains_and_writes_its_final_snapshot() {
    let dir = temp_dir("pod");
    let zone_path = dir.join("zone.json");
    let counters_path = dir.join("counters.json");
    std::fs::write(&zone_path, "{}").expect("write");
    let (http_port, dns_port) = (free_port(), free_port());
    let spec_json = format!(
        r#"{{
            "http": {{"bind": "127.0.0.1", "port": {http_port},
                      "behaviour": {{"latency": {{"fixed_ms": 300}}}}}},
            "dns": {{"bind": "127.0.0.1", "port": {dns_port},
                     "zone": {{"file": "{}"}}}},
            "client": {{"namespace": "shop", "resolver": "127.0.0.1:{dns_port}",
                        "calls": [{{"name": "cart", "port": {http_port}, "rate_per_s": 10}}]}}
        }}"#,
        zone_path.display()
    );
    let spec = PodSpec::from_json(&spec_json, &dir.join("spec.json")).expect("from json");
    let (stop, stopped) = stop_pair();
    let pod = tokio::spawn(run_pod(spec, counters_path.clone(), stopped));

    // At first the zone is empty: lookups fail, nothing reaches the server.
    sleep(Duration::from_millis(1300)).await;
    let early = read_snapshot(&counters_path).expect("read snapshot");
    assert!(!early.complete);
    assert!(early.client.total.dns_responses_by_rcode["NXDOMAIN"] > 0);
    assert_eq!(early.client.total.requests_sent, 0);

    // The service appears; the zone file is re-read and calls get through.
    let mut zone = ZoneRecords::new();
    zone.insert_service("cart", "shop", vec![LOCALHOST])
        .expect("insert service");
    let staged = dir.join("zone.json.new");
    std::fs::write(&staged, serde_json::to_string(&zone).expect("to string")).expect("write");
    std::fs::rename(&staged, &zone_path).expect("rename");
    sleep(Duration::from_millis(1700)).await;
    // Stop with requests in flight (300 ms each at 10/s): they finish.
    stop.send(()).expect("send");
    let last = pod.await.expect("pod task").expect("run pod");

    let written = read_snapshot(&counters_path).expect("read snapshot");
    assert_eq!(written, last);
    assert!(last.complete);
    assert_eq!(last.dns_server.zone_reloads, 1);
    let client = &last.client.total;
    assert!(client.requests_sent >= 3, "{client:?}");
    assert_eq!(client.calls_aborted, 0);
    assert_eq!(client.requests_sent, client.responses_by_status[&200]);
    assert_eq!(
        client.calls_started,
        sum(&client.responses_by_status) + client.calls_failed
    );
    assert_eq!(last.http_server.requests_received, client.requests_sent);
    assert_eq!(
        last.http_server.responses_by_status,
        client.responses_by_status
    );
    assert_eq!(last.http_server.responses_aborted, 0);
    assert_eq!(last.dns_server.queries_received, client.dns_queries_sent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_pod_specs_name_the_file_line_and_field() {
    let origin = PathBuf::from("pods/web.json");
    let err = PodSpec::from_json(
        "{\"http\": {\"bind\": \"127.0.0.1\", \"port\": 80,\n  \"behaviour\": {\"error_ratio\": 1.5}}}",
        &origin,
    )
    .expect_err("error_ratio 1.5 is rejected")
    .to_string();
    assert!(err.starts_with("pods/web.json:2:"), "{err}");
    assert!(err.contains("error_ratio 1.5"), "{err}");

    let err = ZoneRecords::from_json("{\n\"cart.example.com\": [\"10.0.0.1\"]}", &origin)
        .expect_err("a name outside the cluster is rejected")
        .to_string();
    assert!(err.starts_with("pods/web.json:2:"), "{err}");
    assert!(err.contains("not under cluster.local"), "{err}");

    let spec = PodSpec {
        client: Some(ClientPlan::new(
            "shop",
            "127.0.0.1:53".parse().expect("parse"),
            vec![call("cart", 0, 1.0)],
        )),
        ..PodSpec::default()
    };
    let err = spec.validate().expect_err("port 0 is rejected").to_string();
    assert_eq!(err, "invalid client calls[0].port: must not be 0");
}

/// Sets every number in a JSON tree to 1 and gives every empty map one
/// entry, so a snapshot built from it has no counter at zero.
fn fill(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) => *n = 1.into(),
        Value::Array(items) => items.iter_mut().for_each(fill),
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if child.as_object().is_some_and(|m| m.is_empty()) {
                    let entry = match key.as_str() {
                        "responses_by_status" => ("200", Value::from(1)),
                        "queries_by_name" => ("a.cluster.local", serde_json::json!({"NOERROR": 1})),
                        "by_target" => ("cart", Value::Null),
                        _ => ("NOERROR", Value::from(1)),
                    };
                    child
                        .as_object_mut()
                        .expect("as object mut")
                        .insert(entry.0.into(), entry.1);
                }
                fill(child);
            }
        }
        _ => {}
    }
}

fn check_doubled(once: &serde_json::Value, twice: &serde_json::Value, path: &str) {
    use serde_json::Value;
    match (once, twice) {
        (Value::Number(a), Value::Number(b)) => {
            let keeps = path.ends_with("min_us") || path.ends_with("max_us");
            let want = if keeps {
                a.as_u64().expect("as u64")
            } else {
                2 * a.as_u64().expect("as u64")
            };
            assert_eq!(b.as_u64(), Some(want), "{path}");
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (a, b)) in a.iter().zip(b).enumerate() {
                check_doubled(a, b, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            assert_eq!(a.len(), b.len(), "{path}");
            for (key, a) in a {
                check_doubled(a, &b[key], &format!("{path}.{key}"));
            }
        }
        (a, b) => assert_eq!(a, b, "{path}"),
    }
}

#[test]
fn snapshots_round_trip_and_merging_adds_every_counter() {
    let mut value = serde_json::to_value(CounterSnapshot::default()).expect("to value");
    fill(&mut value);
    // The per-target entry gets the same shape as the total.
    value["client"]["by_target"]["cart"] = value["client"]["total"].clone();
    value["complete"] = true.into();
    let snapshot: CounterSnapshot = serde_json::from_value(value.clone()).expect("from value");
    assert_eq!(serde_json::to_value(&snapshot).expect("to value"), value);

    let merged = CounterSnapshot::sum([&snapshot, &snapshot]);
    check_doubled(
        &value,
        &serde_json::to_value(&merged).expect("to value"),
        "",
    );

    let dir = temp_dir("snapshot");
    let path = dir.join("counters.json");
    write_snapshot_atomically(&path, &merged).expect("write snapshot atomically");
    assert_eq!(read_snapshot(&path).expect("read snapshot"), merged);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    assert_eq!(names, vec!["counters.json"], "no temporary file is left");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pod_specs_round_trip_through_json() {
    let spec = PodSpec {
        http: Some(HttpServerSpec {
            bind: "10.0.1.5".parse().expect("parse"),
            port: 8080,
            behaviour: HttpBehaviour {
                latency: Latency::LogNormal {
                    p50: Duration::from_millis(20),
                    p99: Duration::from_millis(250),
                },
                error_ratio: 0.1,
                seed: 3,
                ..HttpBehaviour::default()
            },
        }),
        dns: Some(DnsServerSpec {
            bind: "10.0.0.10".parse().expect("parse"),
            port: 53,
            zone: ZoneSource::Inline(shop_zone()),
        }),
        client: Some(ClientPlan::new(
            "web",
            "10.96.0.10:53".parse().expect("parse"),
            vec![call("cart.shop", 8080, 5.0)],
        )),
        start_clients_after: Some(PathBuf::from("/run/skymap/lab/x/pods/go")),
    };
    let json = serde_json::to_string_pretty(&spec).expect("to string pretty");
    assert!(json.contains("\"dns_timeout_ms\": 5000"), "{json}");
    let back = PodSpec::from_json(&json, &PathBuf::from("spec.json")).expect("from json");
    assert_eq!(back, spec);
}
