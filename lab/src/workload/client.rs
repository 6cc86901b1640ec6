//! The client workload: calls services by name at a steady rate, resolving
//! each name afresh through the cluster DNS the way glibc does, then making
//! one HTTP request over one new TCP connection.
//!
//! Resolution follows a pod's resolv.conf (`search NS.svc.cluster.local
//! svc.cluster.local cluster.local`, `options ndots:5`): a name with fewer
//! than five dots is tried with each search suffix in order and then as
//! written; a name with five or more is tried as written first; a name
//! ending in '.' only as written. Like glibc, the next candidate is tried
//! after NXDOMAIN, an empty NOERROR (no A record) or SERVFAIL; any other
//! rcode, a timeout or a socket error ends the lookup. One UDP query per
//! candidate, no retries, no cache, no TCP fallback on a truncated answer.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};

use super::dns::{self, NOERROR, NXDOMAIN, SERVFAIL, TYPE_A};
use super::rng::SplitMix64;
use super::{Counters, TargetCounters, WorkloadError, drain, ms};

/// glibc's `ndots` as Kubernetes sets it for pods.
pub const NDOTS: usize = 5;
/// The longest response read; anything longer is counted as failed.
const MAX_RESPONSE: usize = 1024 * 1024;
const MIN_RATE: f64 = 0.001;
const MAX_RATE: f64 = 100_000.0;

/// One service called at a steady rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// The service name as an application would write it: "cart",
    /// "cart.shop", "cart.shop.svc.cluster.local.". Also the counters key.
    pub name: String,
    pub port: u16,
    #[serde(default = "root_path")]
    pub path: String,
    /// Calls per second, from 0.001 to 100000.
    #[serde(deserialize_with = "rate")]
    pub rate_per_s: f64,
}

fn root_path() -> String {
    "/".into()
}

fn rate<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let value = f64::deserialize(deserializer)?;
    check_rate(value).map_err(serde::de::Error::custom)?;
    Ok(value)
}

fn check_rate(value: f64) -> Result<(), String> {
    if (MIN_RATE..=MAX_RATE).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "rate_per_s {value} is not between {MIN_RATE} and {MAX_RATE}"
        ))
    }
}

/// Everything a pod's client does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientPlan {
    pub calls: Vec<Call>,
    /// The pod's namespace: the first search suffix.
    pub namespace: String,
    /// The cluster DNS address (kube-dns ClusterIP:53).
    pub resolver: SocketAddr,
    /// How long each DNS query waits for its answer.
    #[serde(rename = "dns_timeout_ms", with = "ms", default = "default_timeout")]
    pub dns_timeout: Duration,
    /// Bounds the TCP connect, and separately the request and response.
    #[serde(rename = "http_timeout_ms", with = "ms", default = "default_timeout")]
    pub http_timeout: Duration,
    /// After stop, how long calls in progress may still finish; the rest are
    /// cancelled and counted as aborted.
    #[serde(rename = "drain_timeout_ms", with = "ms", default = "default_timeout")]
    pub drain_timeout: Duration,
    /// At most this many calls of one [`Call`] in progress at once; a tick
    /// that finds the cap reached is skipped.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_max_in_flight() -> usize {
    256
}

impl ClientPlan {
    /// A plan with the default timeouts and cap.
    pub fn new(namespace: &str, resolver: SocketAddr, calls: Vec<Call>) -> Self {
        Self {
            calls,
            namespace: namespace.to_owned(),
            resolver,
            dns_timeout: default_timeout(),
            http_timeout: default_timeout(),
            drain_timeout: default_timeout(),
            max_in_flight: default_max_in_flight(),
        }
    }

    pub fn validate(&self) -> Result<(), WorkloadError> {
        let invalid = |field: String, reason: String| WorkloadError::Invalid { field, reason };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !label_ok(&self.namespace) {
            return Err(invalid(
                "client namespace".into(),
                format!("{:?} is not a DNS label", self.namespace),
            ));
        }
        for (field, value) in [
            ("dns_timeout", self.dns_timeout),
            ("http_timeout", self.http_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(format!("client {field}"), "must be above 0".into()));
            }
        }
        if self.max_in_flight == 0 {
            return Err(invalid(
                "client max_in_flight".into(),
                "must be at least 1".into(),
            ));
        }
        for (i, call) in self.calls.iter().enumerate() {
            let field = |name: &str| format!("client calls[{i}].{name}");
            for candidate in search_candidates(&call.name, &self.namespace) {
                if dns::encode_query(0, &candidate, TYPE_A).is_err() {
                    return Err(invalid(
                        field("name"),
                        format!("{:?} gives the unusable DNS name {candidate:?}", call.name),
                    ));
                }
            }
            if call.port == 0 {
                return Err(invalid(field("port"), "must not be 0".into()));
            }
            if !call.path.starts_with('/') || !call.path.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(
                    field("path"),
                    format!("{:?} must start with '/' and hold no spaces", call.path),
                ));
            }
            check_rate(call.rate_per_s).map_err(|r| invalid(field("rate_per_s"), r))?;
        }
        Ok(())
    }
}

/// The names a lookup of `name` from `namespace` queries, in order, each
/// fully qualified with the final dot.
pub fn search_candidates(name: &str, namespace: &str) -> Vec<String> {
    if name.ends_with('.') {
        return vec![name.to_owned()];
    }
    let search = [
        format!("{namespace}.svc.{}", dns::CLUSTER_DOMAIN),
        format!("svc.{}", dns::CLUSTER_DOMAIN),
        dns::CLUSTER_DOMAIN.to_owned(),
    ];
    let as_written = format!("{name}.");
    let dots = name.matches('.').count();
    let mut candidates = Vec::with_capacity(search.len() + 1);
    if dots >= NDOTS {
        candidates.push(as_written.clone());
    }
    candidates.extend(search.iter().map(|suffix| format!("{name}.{suffix}.")));
    if dots < NDOTS {
        candidates.push(as_written);
    }
    candidates
}

/// What every call of a plan shares.
#[derive(Debug)]
struct Settings {
    namespace: String,
    resolver: SocketAddr,
    dns_timeout: Duration,
    http_timeout: Duration,
    drain_timeout: Duration,
    max_in_flight: usize,
}

/// Runs the plan until `stop` completes, then lets calls in progress finish
/// for up to the drain timeout and cancels the rest. Counts into
/// [`super::ClientCounters`], per call name.
pub async fn run_client(
    plan: ClientPlan,
    counters: Counters,
    stop: impl Future<Output = ()>,
) -> Result<(), WorkloadError> {
    plan.validate()?;
    let settings = Arc::new(Settings {
        namespace: plan.namespace,
        resolver: plan.resolver,
        dns_timeout: plan.dns_timeout,
        http_timeout: plan.http_timeout,
        drain_timeout: plan.drain_timeout,
        max_in_flight: plan.max_in_flight,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tickers = JoinSet::new();
    for call in plan.calls {
        // Every target shows in the snapshot from the start, even at zero.
        counters.client(&call.name, |_| {});
        tickers.spawn(run_ticker(
            Arc::new(call),
            Arc::clone(&settings),
            counters.clone(),
            stop_rx.clone(),
        ));
    }
    stop.await;
    stop_tx.send_replace(true);
    while tickers.join_next().await.is_some() {}
    Ok(())
}

/// Starts one call per tick. Ticks fall at fixed times from the start; when
/// the ticker wakes late, the ticks already past are skipped (and counted),
/// never made up in a burst.
async fn run_ticker(
    call: Arc<Call>,
    settings: Arc<Settings>,
    counters: Counters,
    mut stop: watch::Receiver<bool>,
) {
    let period = Duration::try_from_secs_f64(1.0 / call.rate_per_s)
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_micros(1));
    let mut rng = SplitMix64::from_clock();
    let mut calls = JoinSet::new();
    let mut next = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            () = sleep_until(next) => {}
        }
        let late = Instant::now().saturating_duration_since(next);
        let missed = u64::try_from(late.as_nanos() / period.as_nanos()).unwrap_or(u64::MAX);
        let steps = u32::try_from(missed.saturating_add(1)).unwrap_or(u32::MAX);
        next += period.saturating_mul(steps);
        while calls.try_join_next().is_some() {}
        let full = calls.len() >= settings.max_in_flight;
        counters.client(&call.name, |t| {
            t.ticks_skipped += missed + u64::from(full);
            if !full {
                t.calls_started += 1;
            }
        });
        if full {
            continue;
        }
        let guard = CallGuard {
            counters: counters.clone(),
            target: Arc::clone(&call),
            stage: CallStage::Idle,
        };
        calls.spawn(call_task(
            guard,
            Arc::clone(&settings),
            SplitMix64::new(rng.next_u64()),
        ));
    }
    drain(&mut calls, settings.drain_timeout).await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallStage {
    /// Nothing on the wire.
    Idle,
    DnsInFlight,
    Connecting,
    /// Connected; the request is not (fully) sent yet.
    Connected,
    /// The request is sent; waiting for the response.
    AwaitingResponse,
    Done,
}

/// One call's bookkeeping. It moves into the task before the task runs, so
/// a call cancelled at stop is counted as aborted at whatever stage it was,
/// even one that never started.
struct CallGuard {
    counters: Counters,
    target: Arc<Call>,
    stage: CallStage,
}

impl CallGuard {
    fn count(&self, update: impl FnOnce(&mut TargetCounters)) {
        self.counters.client(&self.target.name, update);
    }

    fn finish(&mut self, succeeded: bool) {
        if !succeeded {
            self.count(|t| t.calls_failed += 1);
        }
        self.stage = CallStage::Done;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let stage = self.stage;
        if stage == CallStage::Done {
            return;
        }
        self.count(|t| {
            t.calls_aborted += 1;
            match stage {
                CallStage::DnsInFlight => t.dns_queries_aborted += 1,
                CallStage::Connecting => t.connections_aborted += 1,
                CallStage::AwaitingResponse => t.requests_aborted += 1,
                CallStage::Idle | CallStage::Connected | CallStage::Done => {}
            }
        });
    }
}

async fn call_task(mut guard: CallGuard, settings: Arc<Settings>, mut rng: SplitMix64) {
    let succeeded = call_once(&mut guard, &settings, &mut rng).await;
    guard.finish(succeeded);
}

/// Resolve, connect, request, read. True if a response (any status) came.
async fn call_once(guard: &mut CallGuard, settings: &Settings, rng: &mut SplitMix64) -> bool {
    let Some(addr) = resolve(guard, settings, rng).await else {
        return false;
    };
    let Some(mut stream) = connect(guard, settings, addr).await else {
        return false;
    };
    exchange(guard, settings, &mut stream).await
}

async fn resolve(
    guard: &mut CallGuard,
    settings: &Settings,
    rng: &mut SplitMix64,
) -> Option<Ipv4Addr> {
    for candidate in search_candidates(&guard.target.name, &settings.namespace) {
        let response = query(guard, settings, &candidate, rng).await?;
        match response.rcode {
            NOERROR if !response.addrs.is_empty() => return response.addrs.first().copied(),
            NOERROR | NXDOMAIN | SERVFAIL => continue,
            _ => return None,
        }
    }
    None
}

/// Sends one query and waits for the response with its ID. `None` when
/// the lookup must end: not sent, unanswered, or a socket error.
async fn query(
    guard: &mut CallGuard,
    settings: &Settings,
    name: &str,
    rng: &mut SplitMix64,
) -> Option<dns::Response> {
    let id = (rng.next_u64() & 0xFFFF) as u16;
    let local: SocketAddr = match settings.resolver.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    // A fresh socket per query, as glibc does: a new source port each time,
    // and connect() so that only the resolver's datagrams (and its ICMP
    // errors) reach us.
    let socket = match UdpSocket::bind(local).await {
        Ok(socket) => socket,
        Err(_) => {
            guard.count(|t| t.dns_send_errors += 1);
            return None;
        }
    };
    let sent = match (
        socket.connect(settings.resolver).await,
        dns::encode_query(id, name, TYPE_A),
    ) {
        (Ok(()), Ok(packet)) => socket.send(&packet).await.is_ok(),
        _ => false,
    };
    if !sent {
        guard.count(|t| t.dns_send_errors += 1);
        return None;
    }
    guard.count(|t| t.dns_queries_sent += 1);
    guard.stage = CallStage::DnsInFlight;
    let deadline = Instant::now() + settings.dns_timeout;
    let mut buf = vec![0u8; 65_536];
    let outcome = loop {
        match timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => break Err(true),
            Ok(Err(_)) => break Err(false),
            Ok(Ok(n)) => match dns::parse_response(buf.get(..n).unwrap_or_default()) {
                Ok(response) if response.id == id => break Ok(response),
                // Stray or garbled datagrams are not this query's answer.
                _ => continue,
            },
        }
    };
    guard.stage = CallStage::Idle;
    match outcome {
        Ok(response) => {
            guard.count(|t| t.count_rcode(&dns::rcode_name(response.rcode)));
            Some(response)
        }
        Err(timed_out) => {
            guard.count(|t| {
                if timed_out {
                    t.dns_queries_unanswered += 1;
                } else {
                    t.dns_query_errors += 1;
                }
            });
            None
        }
    }
}

async fn connect(guard: &mut CallGuard, settings: &Settings, addr: Ipv4Addr) -> Option<TcpStream> {
    guard.count(|t| t.connections_attempted += 1);
    guard.stage = CallStage::Connecting;
    let result = timeout(
        settings.http_timeout,
        TcpStream::connect((addr, guard.target.port)),
    )
    .await;
    let stream = match result {
        Ok(Ok(stream)) => {
            guard.count(|t| t.connections_established += 1);
            Some(stream)
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            guard.count(|t| t.connections_refused += 1);
            None
        }
        Ok(Err(_)) => {
            guard.count(|t| t.connections_failed += 1);
            None
        }
        Err(_) => {
            guard.count(|t| t.connections_timed_out += 1);
            None
        }
    };
    guard.stage = if stream.is_some() {
        CallStage::Connected
    } else {
        CallStage::Idle
    };
    stream
}

async fn exchange(guard: &mut CallGuard, settings: &Settings, stream: &mut TcpStream) -> bool {
    let call = Arc::clone(&guard.target);
    let host = call.name.strip_suffix('.').unwrap_or(&call.name);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: skymap-lab\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        call.path, call.port
    );
    let started = Instant::now();
    let deadline = started + settings.http_timeout;
    if !matches!(
        timeout_at(deadline, stream.write_all(request.as_bytes())).await,
        Ok(Ok(()))
    ) {
        guard.count(|t| t.request_write_errors += 1);
        return false;
    }
    guard.count(|t| t.requests_sent += 1);
    guard.stage = CallStage::AwaitingResponse;
    let outcome = read_response(stream, deadline).await;
    let latency = started.elapsed();
    if matches!(outcome, ResponseRead::Status(_)) {
        // The server closes (Connection: close): read up to its FIN, as an
        // HTTP client does, so closing finds nothing unread for the kernel
        // to throw away (which it would report as a QUEUE_PURGE drop).
        let mut rest = [0u8; 512];
        while let Ok(Ok(n)) = timeout_at(deadline, stream.read(&mut rest)).await {
            if n == 0 {
                break;
            }
        }
    }
    guard.stage = CallStage::Idle;
    guard.count(|t| match outcome {
        ResponseRead::Status(status) => {
            *t.responses_by_status.entry(status).or_default() += 1;
            t.latency.record(latency);
        }
        ResponseRead::TimedOut => t.responses_timed_out += 1,
        ResponseRead::Failed => t.responses_failed += 1,
    });
    matches!(outcome, ResponseRead::Status(_))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseRead {
    Status(u16),
    TimedOut,
    Failed,
}

/// Reads a whole response: the head, then the body by Content-Length, or
/// up to the close when there is none.
async fn read_response(stream: &mut TcpStream, deadline: Instant) -> ResponseRead {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    let mut head: Option<(u16, Option<usize>)> = None;
    loop {
        if head.is_none()
            && let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let Some((status, body_len)) = parse_response_head(buf.get(..end).unwrap_or_default())
            else {
                return ResponseRead::Failed;
            };
            head = Some((status, body_len.map(|len| end + 4 + len)));
        }
        if let Some((status, Some(total))) = head
            && buf.len() >= total
        {
            return ResponseRead::Status(status);
        }
        if buf.len() > MAX_RESPONSE {
            return ResponseRead::Failed;
        }
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return ResponseRead::TimedOut,
            Ok(Err(_)) => return ResponseRead::Failed,
            Ok(Ok(0)) => {
                return match head {
                    Some((status, None)) => ResponseRead::Status(status),
                    _ => ResponseRead::Failed,
                };
            }
            Ok(Ok(n)) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
}

/// The status and announced body length of a response head.
fn parse_response_head(head: &[u8]) -> Option<(u16, Option<usize>)> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?;
    let code = parts.next()?;
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return None;
    }
    let status: u16 = code.parse().ok()?;
    let mut body_len = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            body_len = Some(value.trim().parse().ok()?);
        }
    }
    Some((status, body_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_list_follows_ndots() {
        assert_eq!(
            search_candidates("cart", "web"),
            vec![
                "cart.web.svc.cluster.local.",
                "cart.svc.cluster.local.",
                "cart.cluster.local.",
                "cart.",
            ]
        );
        assert_eq!(
            search_candidates("a.b.c.d.e.f", "web"),
            vec![
                "a.b.c.d.e.f.",
                "a.b.c.d.e.f.web.svc.cluster.local.",
                "a.b.c.d.e.f.svc.cluster.local.",
                "a.b.c.d.e.f.cluster.local.",
            ]
        );
        assert_eq!(
            search_candidates("cart.shop.svc.cluster.local.", "web"),
            vec!["cart.shop.svc.cluster.local."]
        );
    }

    #[test]
    fn response_heads() {
        assert_eq!(
            parse_response_head(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5"),
            Some((500, Some(5)))
        );
        assert_eq!(parse_response_head(b"HTTP/1.0 204"), Some((204, None)));
        assert_eq!(parse_response_head(b"SSH-2.0-OpenSSH"), None);
    }
}
