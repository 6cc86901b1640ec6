//! Ground-truth counters: what each workload itself sent and received, kept
//! in one shared handle per pod process and written out as a JSON snapshot.
//!
//! Every counter is a plain total since the process started. Each group
//! documents the identities that hold between its counters, so a test can
//! check that nothing was lost between them before comparing with skymap.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::WorkloadError;

/// The shared, cheap-to-clone handle the workloads count into. A mutex is
/// enough: lab workloads do at most thousands of updates a second.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    inner: Arc<Mutex<CounterSnapshot>>,
}

impl Counters {
    pub fn new() -> Self {
        Self::default()
    }

    /// A consistent copy of every counter, with the client totals filled in.
    pub fn snapshot(&self) -> CounterSnapshot {
        let mut snapshot = self.lock().clone();
        let mut total = TargetCounters::default();
        for target in snapshot.client.by_target.values() {
            total.merge(target);
        }
        snapshot.client.total = total;
        snapshot
    }

    fn lock(&self) -> MutexGuard<'_, CounterSnapshot> {
        // A panic elsewhere while holding the lock leaves the counters usable:
        // every update is a handful of additions, never half a structure.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn dns_server(&self, update: impl FnOnce(&mut DnsServerCounters)) {
        update(&mut self.lock().dns_server);
    }

    pub(crate) fn http_server(&self, update: impl FnOnce(&mut HttpServerCounters)) {
        update(&mut self.lock().http_server);
    }

    /// Updates the counters of one client target (the service name as the
    /// call wrote it). Totals are summed at snapshot time, not here.
    pub(crate) fn client(&self, target: &str, update: impl FnOnce(&mut TargetCounters)) {
        let mut guard = self.lock();
        let by_target = &mut guard.client.by_target;
        if !by_target.contains_key(target) {
            by_target.insert(target.to_owned(), TargetCounters::default());
        }
        if let Some(counters) = by_target.get_mut(target) {
            update(counters);
        }
    }
}

/// Everything one pod process counted, as written to its counters file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CounterSnapshot {
    /// True only in the snapshot a pod writes after a clean stop, once every
    /// workload has drained; periodic snapshots (and a pod whose workload
    /// failed) say false.
    pub complete: bool,
    pub dns_server: DnsServerCounters,
    pub http_server: HttpServerCounters,
    pub client: ClientCounters,
}

impl CounterSnapshot {
    /// Adds `other` into `self` (replicas of one workload add up). The sum is
    /// complete only if both parts are.
    pub fn merge(&mut self, other: &CounterSnapshot) {
        self.complete = self.complete && other.complete;
        self.dns_server.merge(&other.dns_server);
        self.http_server.merge(&other.http_server);
        self.client.merge(&other.client);
    }

    /// The sum of any number of snapshots; complete if every one is (and for
    /// none at all, so that summing nothing stays the neutral element).
    pub fn sum<'a>(snapshots: impl IntoIterator<Item = &'a CounterSnapshot>) -> CounterSnapshot {
        let mut total = CounterSnapshot {
            complete: true,
            ..CounterSnapshot::default()
        };
        for snapshot in snapshots {
            total.merge(snapshot);
        }
        total
    }
}

/// Counters of the DNS server (the kube-dns workload).
///
/// `queries_received = Σ responses_by_rcode + datagrams_dropped + send_errors`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsServerCounters {
    /// Datagrams read from the socket, well-formed or not.
    pub queries_received: u64,
    /// Datagrams not answered: shorter than a message ID, or responses
    /// (QR bit set), which must never be answered lest two servers loop.
    pub datagrams_dropped: u64,
    /// Responses handed to the kernel, by rcode name ("NOERROR", "NXDOMAIN",
    /// "REFUSED", "FORMERR", "NOTIMP").
    pub responses_by_rcode: BTreeMap<String, u64>,
    /// Responses built but refused by `send_to`.
    pub send_errors: u64,
    /// Errors reading the socket (not datagrams; the loop goes on).
    pub recv_errors: u64,
    /// Parsed queries by lowercased name without the final dot, then by the
    /// rcode of the answer. At most [`MAX_DNS_NAMES`] names are kept; the
    /// rest add up under [`OTHER_NAMES`].
    pub queries_by_name: BTreeMap<String, BTreeMap<String, u64>>,
    /// Times the zone file changed and was loaded again.
    pub zone_reloads: u64,
    /// Times the zone file changed but could not be loaded (the old zone stays).
    pub zone_reload_errors: u64,
}

/// The most distinct names [`DnsServerCounters::queries_by_name`] keeps, so
/// junk queries cannot grow a snapshot without bound.
pub const MAX_DNS_NAMES: usize = 1024;
/// The key under which queries beyond [`MAX_DNS_NAMES`] names are counted.
pub const OTHER_NAMES: &str = "(other)";

impl DnsServerCounters {
    pub(crate) fn count_query(&mut self, name: &str, rcode: &str) {
        let key = if self.queries_by_name.len() < MAX_DNS_NAMES
            || self.queries_by_name.contains_key(name)
        {
            name
        } else {
            OTHER_NAMES
        };
        let by_rcode = self.queries_by_name.entry(key.to_owned()).or_default();
        *by_rcode.entry(rcode.to_owned()).or_default() += 1;
    }

    fn merge(&mut self, o: &Self) {
        self.queries_received += o.queries_received;
        self.datagrams_dropped += o.datagrams_dropped;
        add_map(&mut self.responses_by_rcode, &o.responses_by_rcode);
        self.send_errors += o.send_errors;
        self.recv_errors += o.recv_errors;
        for (name, by_rcode) in &o.queries_by_name {
            add_map(
                self.queries_by_name.entry(name.clone()).or_default(),
                by_rcode,
            );
        }
        self.zone_reloads += o.zone_reloads;
        self.zone_reload_errors += o.zone_reload_errors;
    }
}

/// Counters of the HTTP server. Each accepted connection ends in exactly one
/// way, and every answer that was due is written, failed or aborted:
///
/// `connections_accepted = connections_empty + read_errors + read_timeouts
///  + malformed_requests + requests_received + connections_aborted`
///
/// `read_timeouts + malformed_requests + requests_received
///  = Σ responses_by_status + response_write_errors + responses_aborted`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpServerCounters {
    /// Connections returned by `accept`.
    pub connections_accepted: u64,
    /// Errors from `accept` itself (no connection; the loop goes on).
    pub accept_errors: u64,
    /// Connections the peer closed before sending a single byte.
    pub connections_empty: u64,
    /// Connections whose read failed (e.g. reset) before a request was complete.
    pub read_errors: u64,
    /// Connections with no complete request within the read timeout (answered 408).
    pub read_timeouts: u64,
    /// Bytes that are not a request this server accepts (answered 400).
    pub malformed_requests: u64,
    /// Complete, well-formed requests (answered 200 or 500 after the latency).
    pub requests_received: u64,
    /// Connections cancelled at stop before any of the outcomes above.
    pub connections_aborted: u64,
    /// Responses fully written, by status code (200, 500, 400, 408).
    pub responses_by_status: BTreeMap<u16, u64>,
    /// Responses whose write failed (the peer had gone).
    pub response_write_errors: u64,
    /// Responses that were due but cancelled at stop before being written.
    pub responses_aborted: u64,
}

impl HttpServerCounters {
    fn merge(&mut self, o: &Self) {
        self.connections_accepted += o.connections_accepted;
        self.accept_errors += o.accept_errors;
        self.connections_empty += o.connections_empty;
        self.read_errors += o.read_errors;
        self.read_timeouts += o.read_timeouts;
        self.malformed_requests += o.malformed_requests;
        self.requests_received += o.requests_received;
        self.connections_aborted += o.connections_aborted;
        add_map(&mut self.responses_by_status, &o.responses_by_status);
        self.response_write_errors += o.response_write_errors;
        self.responses_aborted += o.responses_aborted;
    }
}

/// Counters of the client, per target and in total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientCounters {
    /// The sum over every target.
    pub total: TargetCounters,
    /// Keyed by the service name exactly as the call wrote it ("cart.shop").
    pub by_target: BTreeMap<String, TargetCounters>,
}

impl ClientCounters {
    fn merge(&mut self, o: &Self) {
        self.total.merge(&o.total);
        for (target, counters) in &o.by_target {
            self.by_target
                .entry(target.clone())
                .or_default()
                .merge(counters);
        }
    }
}

/// What a client did towards one target. A call is one tick's work: resolve,
/// connect, one request, one response. The identities that hold:
///
/// `calls_started = Σ responses_by_status + calls_failed + calls_aborted`
///
/// `dns_queries_sent = Σ dns_responses_by_rcode + dns_queries_unanswered
///  + dns_query_errors + dns_queries_aborted`
///
/// `connections_attempted = connections_established + connections_refused
///  + connections_timed_out + connections_failed + connections_aborted`
///
/// `requests_sent = Σ responses_by_status + responses_timed_out
///  + responses_failed + requests_aborted`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TargetCounters {
    /// Ticks that started no call: the ticker woke late (those ticks are
    /// skipped, not made up) or the in-flight cap was reached.
    pub ticks_skipped: u64,
    /// Calls begun, one per tick used.
    pub calls_started: u64,
    /// Calls that ended without an HTTP response: no address, no connection,
    /// write failed, or no complete response.
    pub calls_failed: u64,
    /// Calls cancelled at stop after the drain timeout.
    pub calls_aborted: u64,
    /// UDP queries handed to the kernel (one per search-list candidate tried).
    pub dns_queries_sent: u64,
    /// Queries the kernel refused to send (not counted as sent).
    pub dns_send_errors: u64,
    /// Responses (matching ID) by rcode name; NOERROR includes empty answers.
    pub dns_responses_by_rcode: BTreeMap<String, u64>,
    /// Queries with no matching response within the DNS timeout.
    pub dns_queries_unanswered: u64,
    /// Queries that ended in a socket error instead (e.g. ICMP port unreachable).
    pub dns_query_errors: u64,
    /// Queries in flight when the call was cancelled at stop.
    pub dns_queries_aborted: u64,
    /// TCP connects begun.
    pub connections_attempted: u64,
    /// Connects that completed the handshake.
    pub connections_established: u64,
    /// Connects answered with a reset (nothing listening).
    pub connections_refused: u64,
    /// Connects with no answer within the HTTP timeout (e.g. SYN dropped).
    pub connections_timed_out: u64,
    /// Connects that failed otherwise (unreachable, ...).
    pub connections_failed: u64,
    /// Connects in progress when the call was cancelled at stop.
    pub connections_aborted: u64,
    /// Requests fully written.
    pub requests_sent: u64,
    /// Requests whose write failed or timed out (not counted as sent).
    pub request_write_errors: u64,
    /// Complete responses, by status code.
    pub responses_by_status: BTreeMap<u16, u64>,
    /// Sent requests with no complete response within the HTTP timeout.
    pub responses_timed_out: u64,
    /// Sent requests whose response was cut short, reset or unreadable.
    pub responses_failed: u64,
    /// Sent requests whose call was cancelled at stop before the response.
    pub requests_aborted: u64,
    /// Time from starting to write the request to having the whole response,
    /// for every response counted in `responses_by_status`.
    pub latency: LatencyStats,
}

impl TargetCounters {
    pub(crate) fn count_rcode(&mut self, rcode: &str) {
        *self
            .dns_responses_by_rcode
            .entry(rcode.to_owned())
            .or_default() += 1;
    }

    fn merge(&mut self, o: &Self) {
        self.ticks_skipped += o.ticks_skipped;
        self.calls_started += o.calls_started;
        self.calls_failed += o.calls_failed;
        self.calls_aborted += o.calls_aborted;
        self.dns_queries_sent += o.dns_queries_sent;
        self.dns_send_errors += o.dns_send_errors;
        add_map(&mut self.dns_responses_by_rcode, &o.dns_responses_by_rcode);
        self.dns_queries_unanswered += o.dns_queries_unanswered;
        self.dns_query_errors += o.dns_query_errors;
        self.dns_queries_aborted += o.dns_queries_aborted;
        self.connections_attempted += o.connections_attempted;
        self.connections_established += o.connections_established;
        self.connections_refused += o.connections_refused;
        self.connections_timed_out += o.connections_timed_out;
        self.connections_failed += o.connections_failed;
        self.connections_aborted += o.connections_aborted;
        self.requests_sent += o.requests_sent;
        self.request_write_errors += o.request_write_errors;
        add_map(&mut self.responses_by_status, &o.responses_by_status);
        self.responses_timed_out += o.responses_timed_out;
        self.responses_failed += o.responses_failed;
        self.requests_aborted += o.requests_aborted;
        self.latency.merge(&o.latency);
    }
}

/// Upper bounds (inclusive, milliseconds) of the latency buckets; one more
/// bucket after the last holds everything slower.
pub const LATENCY_BUCKET_BOUNDS_MS: [u64; 13] =
    [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000];

/// A latency summary that adds up across replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencyStats {
    pub count: u64,
    pub sum_us: u64,
    /// Smallest and largest sample; both 0 while `count` is 0.
    pub min_us: u64,
    pub max_us: u64,
    /// `buckets[i]` counts samples ≤ `LATENCY_BUCKET_BOUNDS_MS[i]` and above
    /// the bound before; the last entry counts samples above every bound.
    pub buckets: [u64; 14],
}

impl LatencyStats {
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if self.count == 0 {
            self.min_us = us;
            self.max_us = us;
        } else {
            self.min_us = self.min_us.min(us);
            self.max_us = self.max_us.max(us);
        }
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        let bucket = LATENCY_BUCKET_BOUNDS_MS
            .iter()
            .position(|&bound_ms| us <= bound_ms * 1000)
            .unwrap_or(LATENCY_BUCKET_BOUNDS_MS.len());
        self.buckets[bucket] += 1;
    }

    /// The mean sample, if there is one.
    pub fn mean(&self) -> Option<Duration> {
        self.sum_us
            .checked_div(self.count)
            .map(Duration::from_micros)
    }

    fn merge(&mut self, o: &Self) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            self.min_us = o.min_us;
            self.max_us = o.max_us;
        } else {
            self.min_us = self.min_us.min(o.min_us);
            self.max_us = self.max_us.max(o.max_us);
        }
        self.count += o.count;
        self.sum_us = self.sum_us.saturating_add(o.sum_us);
        for (mine, theirs) in self.buckets.iter_mut().zip(o.buckets.iter()) {
            *mine += theirs;
        }
    }
}

fn add_map<K: Ord + Clone>(into: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
    for (key, n) in from {
        *into.entry(key.clone()).or_default() += n;
    }
}

/// Writes `snapshot` as JSON to `path` so that a reader sees either the old
/// file or the new one, never half of one: write a temporary file beside it,
/// then rename over. No fsync: readers need atomicity, not durability across
/// a power cut, and many pods write every second on a shared disk.
pub fn write_snapshot_atomically(
    path: &Path,
    snapshot: &CounterSnapshot,
) -> Result<(), WorkloadError> {
    let json = serde_json::to_vec_pretty(snapshot).map_err(WorkloadError::Encode)?;
    let file_name = path.file_name().ok_or_else(|| WorkloadError::Invalid {
        field: "counters path".into(),
        reason: format!("{} names no file", path.display()),
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".tmp.{}", std::process::id()));
    let temp: PathBuf = path.with_file_name(temp_name);
    std::fs::write(&temp, &json).map_err(|source| WorkloadError::Io {
        context: format!("writing {}", temp.display()),
        source,
    })?;
    std::fs::rename(&temp, path).map_err(|source| {
        // Best effort: a failed rename should not leave litter behind.
        let _ = std::fs::remove_file(&temp);
        WorkloadError::Io {
            context: format!("renaming {} to {}", temp.display(), path.display()),
            source,
        }
    })
}

/// Reads a snapshot written by [`write_snapshot_atomically`].
pub fn read_snapshot(path: &Path) -> Result<CounterSnapshot, WorkloadError> {
    let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Io {
        context: format!("reading {}", path.display()),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| WorkloadError::parse(path, &e))
}
