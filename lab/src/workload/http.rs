//! The HTTP server workload: HTTP/1.1, one request per connection, answered
//! after a configured latency with 200 or, for a configured share, 500.
//!
//! Which requests fail is deterministic: the k-th well-formed request
//! (k = 1, 2, ...) gets 500 exactly when ⌊k·r⌋ > ⌊(k−1)·r⌋, with the ratio r
//! taken in millionths. After n requests exactly ⌊n·r⌋ have failed, spread
//! evenly (r = 0.25 fails requests 4, 8, 12, ...). Latency draws come from a
//! seeded generator, so a seed gives the same sequence of delays.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};

use super::rng::SplitMix64;
use super::{Counters, WorkloadError, drain, ms};

/// The standard normal quantile at 0.99: p99 = p50 · e^(σ·Z99).
const Z99: f64 = 2.326_347_874_040_841;
/// No configured or drawn delay exceeds this, so a wild tail stays bounded.
pub const MAX_LATENCY: Duration = Duration::from_secs(3600);
/// The longest request head (request line and headers) accepted.
const MAX_HEAD: usize = 16 * 1024;
/// The longest request body accepted (it is read and thrown away).
const MAX_BODY: usize = 1024 * 1024;
/// How long, after answering, to read and discard what the client still
/// sends: closing with unread data makes the kernel send a reset, which can
/// destroy the response before the client reads it.
const LINGER: Duration = Duration::from_secs(1);

/// How long the server waits before answering a request.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "LatencyRepr", into = "LatencyRepr")]
pub enum Latency {
    /// Answer at once.
    #[default]
    None,
    /// Always this long.
    Fixed(Duration),
    /// Log-normal, fitted so that its median is `p50` and its 99th
    /// percentile is `p99` (`p99 ≥ p50 > 0`).
    LogNormal { p50: Duration, p99: Duration },
}

/// The JSON form: `{}` (none), `{"fixed_ms": 40}` or
/// `{"p50_ms": 20, "p99_ms": 200}`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fixed_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p50_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p99_ms: Option<f64>,
}

impl TryFrom<LatencyRepr> for Latency {
    type Error = String;

    fn try_from(repr: LatencyRepr) -> Result<Self, String> {
        let duration = |field: &str, value: f64| {
            ms::from_ms(value).map_err(|reason| format!("latency {field}: {reason}"))
        };
        let latency = match (repr.fixed_ms, repr.p50_ms, repr.p99_ms) {
            (None, None, None) => Latency::None,
            (Some(fixed), None, None) => Latency::Fixed(duration("fixed_ms", fixed)?),
            (None, Some(p50), Some(p99)) => Latency::LogNormal {
                p50: duration("p50_ms", p50)?,
                p99: duration("p99_ms", p99)?,
            },
            _ => {
                return Err(
                    "latency: give either fixed_ms, or both p50_ms and p99_ms, or nothing".into(),
                );
            }
        };
        latency.validate()?;
        Ok(latency)
    }
}

impl From<Latency> for LatencyRepr {
    fn from(latency: Latency) -> Self {
        let ms = |d: Duration| Some(d.as_secs_f64() * 1000.0);
        match latency {
            Latency::None => LatencyRepr::default(),
            Latency::Fixed(d) => LatencyRepr {
                fixed_ms: ms(d),
                ..LatencyRepr::default()
            },
            Latency::LogNormal { p50, p99 } => LatencyRepr {
                p50_ms: ms(p50),
                p99_ms: ms(p99),
                ..LatencyRepr::default()
            },
        }
    }
}

impl Latency {
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Latency::None => Ok(()),
            Latency::Fixed(d) if d <= MAX_LATENCY => Ok(()),
            Latency::Fixed(_) => Err("latency fixed_ms: more than an hour".into()),
            Latency::LogNormal { p50, p99 } => {
                if p50.is_zero() {
                    Err("latency p50_ms: must be above 0".into())
                } else if p99 < p50 {
                    Err("latency p99_ms: must be at least p50_ms".into())
                } else if p99 > MAX_LATENCY {
                    Err("latency p99_ms: more than an hour".into())
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Draws delays from a [`Latency`] with a seeded generator.
#[derive(Debug, Clone)]
pub struct LatencySampler {
    latency: Latency,
    rng: SplitMix64,
}

impl LatencySampler {
    pub fn new(latency: Latency, seed: u64) -> Self {
        Self {
            latency,
            rng: SplitMix64::new(seed),
        }
    }

    pub fn sample(&mut self) -> Duration {
        match self.latency {
            Latency::None => Duration::ZERO,
            Latency::Fixed(d) => d,
            Latency::LogNormal { p50, p99 } => {
                let median = p50.as_secs_f64();
                let sigma = (p99.as_secs_f64() / median).ln() / Z99;
                let secs = median * (sigma * self.rng.next_standard_normal()).exp();
                Duration::try_from_secs_f64(secs)
                    .unwrap_or(MAX_LATENCY)
                    .min(MAX_LATENCY)
            }
        }
    }
}

/// How the server behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpBehaviour {
    #[serde(default)]
    pub latency: Latency,
    /// The share of requests answered 500, in [0, 1] (see the module doc for
    /// which ones).
    #[serde(default, deserialize_with = "ratio")]
    pub error_ratio: f64,
    /// Seeds the latency draws.
    #[serde(default)]
    pub seed: u64,
    /// A connection must deliver a complete request within this time of
    /// being accepted, or it is answered 408 and closed.
    #[serde(
        rename = "read_timeout_ms",
        with = "ms",
        default = "default_read_timeout"
    )]
    pub read_timeout: Duration,
    /// After stop, how long requests in progress may still finish; the rest
    /// are cancelled and counted as aborted.
    #[serde(
        rename = "drain_timeout_ms",
        with = "ms",
        default = "default_drain_timeout"
    )]
    pub drain_timeout: Duration,
}

fn default_read_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(5)
}

fn ratio<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let value = f64::deserialize(deserializer)?;
    check_ratio(value).map_err(serde::de::Error::custom)?;
    Ok(value)
}

fn check_ratio(value: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(format!("error_ratio {value} is not between 0 and 1"))
    }
}

impl Default for HttpBehaviour {
    fn default() -> Self {
        Self {
            latency: Latency::None,
            error_ratio: 0.0,
            seed: 0,
            read_timeout: default_read_timeout(),
            drain_timeout: default_drain_timeout(),
        }
    }
}

impl HttpBehaviour {
    pub fn validate(&self) -> Result<(), WorkloadError> {
        let invalid = |field: &str, reason: String| WorkloadError::Invalid {
            field: format!("http behaviour {field}"),
            reason,
        };
        self.latency.validate().map_err(|r| invalid("latency", r))?;
        check_ratio(self.error_ratio).map_err(|r| invalid("error_ratio", r))?;
        if self.read_timeout.is_zero() {
            return Err(invalid("read_timeout", "must be above 0".into()));
        }
        Ok(())
    }
}

/// Whether the `k`-th well-formed request (from 1) is answered 500.
pub fn is_error_request(k: u64, error_ratio: f64) -> bool {
    let ppm = u128::from(ratio_ppm(error_ratio));
    let k = u128::from(k);
    k > 0 && (k * ppm) / 1_000_000 > ((k - 1) * ppm) / 1_000_000
}

fn ratio_ppm(error_ratio: f64) -> u64 {
    // Saturating float-to-int casts keep out-of-range ratios harmless.
    (error_ratio.clamp(0.0, 1.0) * 1_000_000.0).round() as u64
}

struct Server {
    behaviour: HttpBehaviour,
    sampler: Mutex<LatencySampler>,
    requests: AtomicU64,
}

/// Serves HTTP on `listener` until `stop` completes, then stops accepting,
/// lets requests in progress finish for up to the drain timeout and cancels
/// the rest. Counts into [`super::HttpServerCounters`].
pub async fn serve_http(
    listener: TcpListener,
    behaviour: HttpBehaviour,
    counters: Counters,
    stop: impl Future<Output = ()>,
) -> Result<(), WorkloadError> {
    behaviour.validate()?;
    let drain_timeout = behaviour.drain_timeout;
    let server = Arc::new(Server {
        sampler: Mutex::new(LatencySampler::new(behaviour.latency, behaviour.seed)),
        behaviour,
        requests: AtomicU64::new(0),
    });
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    counters.http_server(|c| c.connections_accepted += 1);
                    let guard = ConnectionGuard {
                        counters: counters.clone(),
                        stage: Stage::Reading,
                    };
                    connections.spawn(handle_connection(stream, Arc::clone(&server), guard));
                }
                Err(_) => {
                    counters.http_server(|c| c.accept_errors += 1);
                    // Out of descriptors, say: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    drain(&mut connections, drain_timeout).await;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Reading,
    Answering,
    Done,
}

/// Counts a connection cancelled at stop according to how far it got. It
/// is created before the task is spawned, so even a task that never ran is
/// counted.
struct ConnectionGuard {
    counters: Counters,
    stage: Stage,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        match self.stage {
            Stage::Reading => self.counters.http_server(|c| c.connections_aborted += 1),
            Stage::Answering => self.counters.http_server(|c| c.responses_aborted += 1),
            Stage::Done => {}
        }
    }
}

async fn handle_connection(mut stream: TcpStream, server: Arc<Server>, mut guard: ConnectionGuard) {
    let counters = guard.counters.clone();
    let deadline = Instant::now() + server.behaviour.read_timeout;
    let status = match read_request(&mut stream, deadline).await {
        RequestRead::Empty => {
            counters.http_server(|c| c.connections_empty += 1);
            guard.stage = Stage::Done;
            return;
        }
        RequestRead::Failed => {
            counters.http_server(|c| c.read_errors += 1);
            guard.stage = Stage::Done;
            return;
        }
        RequestRead::TimedOut => {
            counters.http_server(|c| c.read_timeouts += 1);
            guard.stage = Stage::Answering;
            408
        }
        RequestRead::Malformed => {
            counters.http_server(|c| c.malformed_requests += 1);
            guard.stage = Stage::Answering;
            400
        }
        RequestRead::Complete => {
            counters.http_server(|c| c.requests_received += 1);
            guard.stage = Stage::Answering;
            let k = server.requests.fetch_add(1, Ordering::Relaxed) + 1;
            let delay = server
                .sampler
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sample();
            tokio::time::sleep(delay).await;
            if is_error_request(k, server.behaviour.error_ratio) {
                500
            } else {
                200
            }
        }
    };
    let write_deadline = Instant::now() + server.behaviour.read_timeout;
    let written = timeout_at(write_deadline, write_response(&mut stream, status)).await;
    counters.http_server(|c| match written {
        Ok(Ok(())) => *c.responses_by_status.entry(status).or_default() += 1,
        _ => c.response_write_errors += 1,
    });
    guard.stage = Stage::Done;
    let linger_until = Instant::now() + LINGER.min(server.behaviour.read_timeout);
    let mut sink = [0u8; 4096];
    while let Ok(Ok(n)) = timeout_at(linger_until, stream.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
}

async fn write_response(stream: &mut TcpStream, status: u16) -> std::io::Result<()> {
    let (reason, body) = match status {
        200 => ("OK", "ok"),
        400 => ("Bad Request", "bad request"),
        408 => ("Request Timeout", "request timeout"),
        _ => ("Internal Server Error", "error"),
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

enum RequestRead {
    /// The peer closed without sending anything.
    Empty,
    /// Reading failed (reset).
    Failed,
    /// No complete request before the deadline.
    TimedOut,
    /// Not a request this server accepts.
    Malformed,
    /// A whole, well-formed request (head and body) has been read.
    Complete,
}

async fn read_request(stream: &mut TcpStream, deadline: Instant) -> RequestRead {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    // Once the head is parsed: the total length of head and body.
    let mut expected: Option<usize> = None;
    loop {
        if expected.is_none()
            && let Some(head_end) = find_head_end(&buf)
        {
            let Ok(body_len) = parse_request_head(buf.get(..head_end).unwrap_or_default()) else {
                return RequestRead::Malformed;
            };
            expected = Some(head_end + 4 + body_len);
        }
        match expected {
            Some(total) if buf.len() >= total => return RequestRead::Complete,
            None if buf.len() > MAX_HEAD => return RequestRead::Malformed,
            _ => {}
        }
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return RequestRead::TimedOut,
            Ok(Err(_)) => return RequestRead::Failed,
            Ok(Ok(0)) if buf.is_empty() => return RequestRead::Empty,
            Ok(Ok(0)) => return RequestRead::Malformed,
            Ok(Ok(n)) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
}

/// Where the blank line ending the head starts, if it has arrived.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks a request head (without the final blank line) and returns the
/// body length it announces. Chunked bodies are not supported (400).
fn parse_request_head(head: &[u8]) -> Result<usize, ()> {
    let head = std::str::from_utf8(head).map_err(|_| ())?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().ok_or(())?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(());
    };
    let target_ok = !target.is_empty() && target.bytes().all(|b| b.is_ascii_graphic());
    if !is_token(method) || !target_ok || !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(());
    }
    let mut body_len: Option<usize> = None;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(())?;
        if !is_token(name) || value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(());
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(());
        }
        if name.eq_ignore_ascii_case("content-length") {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            let len: usize = value.parse().map_err(|_| ())?;
            if len > MAX_BODY || body_len.is_some_and(|seen| seen != len) {
                return Err(());
            }
            body_len = Some(len);
        }
    }
    Ok(body_len.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_requests_are_evenly_spread_and_exact() {
        let failing: Vec<u64> = (1..=20).filter(|&k| is_error_request(k, 0.25)).collect();
        assert_eq!(failing, vec![4, 8, 12, 16, 20]);
        let n = 1000;
        for (ratio, expected) in [(0.0, 0), (0.1, 100), (0.333, 333), (1.0, 1000)] {
            let errors = (1..=n).filter(|&k| is_error_request(k, ratio)).count();
            assert_eq!(errors, expected, "ratio {ratio}");
        }
    }

    #[test]
    fn request_heads() {
        assert_eq!(parse_request_head(b"GET / HTTP/1.1\r\nHost: a"), Ok(0));
        assert_eq!(
            parse_request_head(b"POST /x HTTP/1.0\r\nContent-Length: 12"),
            Ok(12)
        );
        for bad in [
            &b"GET / HTTP/2"[..],
            b"GET  / HTTP/1.1",
            b"GET / HTTP/1.1\r\nno colon",
            b"GET / HTTP/1.1\r\n folded: x",
            b"GET / HTTP/1.1\r\nContent-Length: -1",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked",
            b"\xff / HTTP/1.1",
            b"",
        ] {
            assert_eq!(
                parse_request_head(bad),
                Err(()),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn latency_json_forms() {
        let parse = |s: &str| serde_json::from_str::<Latency>(s);
        assert_eq!(parse("{}").expect("parse"), Latency::None);
        assert_eq!(
            parse(r#"{"fixed_ms": 40}"#).expect("parse"),
            Latency::Fixed(Duration::from_millis(40))
        );
        assert_eq!(
            parse(r#"{"p50_ms": 20, "p99_ms": 200}"#).expect("parse"),
            Latency::LogNormal {
                p50: Duration::from_millis(20),
                p99: Duration::from_millis(200)
            }
        );
        assert!(parse(r#"{"p50_ms": 20}"#).is_err());
        assert!(parse(r#"{"p50_ms": 200, "p99_ms": 20}"#).is_err());
        assert!(parse(r#"{"fixed_ms": -1}"#).is_err());
        let back =
            serde_json::to_string(&Latency::Fixed(Duration::from_millis(40))).expect("to string");
        assert_eq!(back, r#"{"fixed_ms":40.0}"#);
    }
}
