//! The figures of one edge: counts, verdicts, drops by reason, HTTP status
//! classes, DNS rcodes, latency histograms and rates.
//!
//! Everything here adds up: [`EdgeStats::merge`] combines two edges' figures.
//! The namespace zoom is built with it, and several relays sharing a cluster
//! could combine their graphs the same way.

use std::sync::Arc;

use rustc_hash::FxHashSet;
use skymap_proto::names::rcode_name;
use skymap_proto::v1::{
    DropCount, GraphEdge, HttpStatusCounts, LatencySummary, Rates, RcodeCount, Verdict,
    VerdictCount,
};

/// Width of one rate bucket.
pub const BUCKET_NS: i64 = 5_000_000_000;
/// Buckets kept per edge: 60 × 5 s = the 5-minute window.
pub const RATE_BUCKETS: usize = 60;
/// Buckets in the 1-minute window.
pub const RATE_1M_BUCKETS: usize = 12;
/// Distinct 5-tuples remembered per (edge, drop reason). Beyond it the set
/// stops growing and the reported count stays at the cap (a lower bound), so a
/// flood of random ports cannot grow memory without limit.
pub const DISTINCT_FLOWS_CAP: usize = 65_536;

const LATENCY_MIN_US: u64 = 1;
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// What one flow record contributes to an edge, worked out once per flow and
/// applied to the edge of every zoom level.
#[derive(Debug, Clone)]
pub struct FlowFacts {
    pub time_ns: i64,
    pub verdict: Verdict,
    pub packets: u64,
    pub bytes: u64,
    /// A forwarded, non-reply TCP SYN without ACK: a connection attempt.
    pub connection: bool,
    /// A reply with RST: the server refused.
    pub refused: bool,
    pub l7: L7Fact,
    /// TCP SYN → SYN/ACK time, 0 when absent.
    pub handshake_ns: u64,
    /// Set for DROPPED records.
    pub drop: Option<DropFact>,
    /// The service the destination was reached through. Interned: edges
    /// compare the pointer first, so the usual repeat costs no string compare.
    pub service: Option<Arc<str>>,
}

/// The application-level part of a record, as far as counting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L7Fact {
    None,
    HttpRequest,
    HttpResponse { code: u32, latency_ns: u64 },
    DnsQuery,
    DnsResponse { rcode: u32, latency_ns: u64 },
}

/// A drop: its reason and a hash of the 5-tuple in request direction, so both
/// directions of one connection count as one distinct flow.
#[derive(Debug, Clone)]
pub struct DropFact {
    pub reason: Arc<str>,
    pub tuple_hash: u64,
}

/// The figures of one edge.
///
/// `repr(C)` keeps the fields every record updates together at the front, so
/// counting a record touches a few adjacent cache lines of a large graph.
#[derive(Debug, Clone, Default)]
#[repr(C)]
pub struct EdgeStats {
    pub flows: u64,
    /// Meaningful only when `flows > 0`.
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
    pub packets: u64,
    pub bytes: u64,
    pub errors: u64,
    pub seen_at_source: u64,
    pub seen_at_destination: u64,
    /// Indexed by the `Verdict` number (validated to be 0..=7 before counting).
    pub verdicts: [u64; 8],
    pub rates: RateRing,
    pub services: ServiceSet,
    /// Created on the first value, so edges without latency data pay nothing.
    pub latency: Option<Box<Latency>>,
    pub connect_latency: Option<Box<Latency>>,
    pub connections: u64,
    pub requests: u64,
    pub dns_queries: u64,
    pub refused: u64,
    /// 1xx, 2xx, 3xx, 4xx, 5xx.
    pub http: [u64; 5],
    pub dns_rcodes: RcodeCounts,
    pub drops: Vec<DropStats>,
}

/// DNS response codes of an edge. NOERROR, by far the most common, is a
/// plain counter; the rest are few per edge and live in a short list.
#[derive(Debug, Clone, Default)]
pub struct RcodeCounts {
    pub noerror: u64,
    /// (rcode, count) for rcode != 0, in order of first appearance.
    pub others: Vec<(u32, u64)>,
}

impl RcodeCounts {
    fn add(&mut self, rcode: u32, count: u64) {
        if rcode == 0 {
            self.noerror += count;
            return;
        }
        match self.others.iter_mut().find(|(r, _)| *r == rcode) {
            Some((_, total)) => *total += count,
            None => self.others.push((rcode, count)),
        }
    }

    /// (rcode, count) for every rcode seen, NOERROR first.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        let noerror = (self.noerror > 0).then_some((0, self.noerror));
        noerror.into_iter().chain(self.others.iter().copied())
    }
}

/// The distinct services of an edge. Nearly every edge has one, kept inline
/// so that checking a repeat does not leave the edge's own memory.
#[derive(Debug, Clone, Default)]
#[repr(C)]
pub struct ServiceSet {
    first: Option<Arc<str>>,
    rest: Vec<Arc<str>>,
}

impl ServiceSet {
    pub fn insert(&mut self, service: &Arc<str>) {
        let same = |s: &Arc<str>| Arc::ptr_eq(s, service) || **s == **service;
        match &self.first {
            None => self.first = Some(service.clone()),
            Some(first) if same(first) => {}
            Some(_) => {
                if !self.rest.iter().any(same) {
                    self.rest.push(service.clone());
                }
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        self.first.iter().chain(self.rest.iter())
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

/// Drops of one reason on one edge.
#[derive(Debug, Clone)]
pub struct DropStats {
    pub reason: Arc<str>,
    pub packets: u64,
    tuples: FxHashSet<u64>,
}

impl DropStats {
    fn new(reason: Arc<str>) -> Self {
        Self {
            reason,
            packets: 0,
            tuples: FxHashSet::default(),
        }
    }

    fn insert(&mut self, tuple_hash: u64) {
        if self.tuples.len() < DISTINCT_FLOWS_CAP {
            self.tuples.insert(tuple_hash);
        }
    }

    /// Distinct 5-tuples seen (at most [`DISTINCT_FLOWS_CAP`]).
    pub fn flows(&self) -> u64 {
        self.tuples.len() as u64
    }
}

impl EdgeStats {
    /// Counts one record. `now_ns` is the engine's clock, which places the
    /// record in a rate bucket (or in the totals only, when older than 5 min).
    pub fn add(&mut self, facts: &FlowFacts, now_ns: i64) {
        if self.flows == 0 {
            self.first_seen_ns = facts.time_ns;
            self.last_seen_ns = facts.time_ns;
        } else {
            self.first_seen_ns = self.first_seen_ns.min(facts.time_ns);
            self.last_seen_ns = self.last_seen_ns.max(facts.time_ns);
        }
        self.flows += 1;
        self.verdicts[facts.verdict as usize] += 1;
        self.packets = self.packets.saturating_add(facts.packets);
        self.bytes = self.bytes.saturating_add(facts.bytes);

        let mut errors = 0u32;
        let mut requests = 0u32;
        if facts.connection {
            self.connections += 1;
        }
        if facts.refused {
            self.refused += 1;
            errors += 1;
        }
        if facts.verdict == Verdict::Error {
            errors += 1;
        }
        match facts.l7 {
            L7Fact::None => {}
            L7Fact::HttpRequest => {
                self.requests += 1;
                requests += 1;
            }
            L7Fact::HttpResponse { code, latency_ns } => {
                if let Some(class) = (code / 100).checked_sub(1).filter(|c| *c < 5) {
                    self.http[class as usize] += 1;
                }
                if code / 100 == 5 {
                    errors += 1;
                }
                record_latency(&mut self.latency, latency_ns);
            }
            L7Fact::DnsQuery => {
                self.dns_queries += 1;
                requests += 1;
            }
            L7Fact::DnsResponse { rcode, latency_ns } => {
                self.dns_rcodes.add(rcode, 1);
                if rcode != 0 {
                    errors += 1;
                }
                record_latency(&mut self.latency, latency_ns);
            }
        }
        record_latency(&mut self.connect_latency, facts.handshake_ns);
        self.errors += u64::from(errors);

        let mut dropped = 0;
        if let Some(drop) = &facts.drop {
            dropped = 1;
            let stats = self.drop_stats(&drop.reason);
            stats.packets = stats.packets.saturating_add(facts.packets.max(1));
            stats.insert(drop.tuple_hash);
        }
        if let Some(service) = &facts.service {
            self.services.insert(service);
        }

        let bucket = RateBucket {
            flows: 1,
            requests,
            drops: dropped,
            errors,
            bytes: facts.bytes,
        };
        self.rates.add(facts.time_ns, now_ns, &bucket);
    }

    /// Reads the memory [`EdgeStats::add`] will write for `facts`, and
    /// returns something computed from it so that the reads stay; see
    /// `Engine::apply_pending` for why.
    pub fn warm(&self, facts: &FlowFacts) -> u64 {
        let mut sum = self.flows
            ^ self.verdicts[facts.verdict as usize]
            ^ u64::from(self.rates.current.flows)
            ^ u64::from(self.services.first.is_some());
        let latency_ns = match facts.l7 {
            L7Fact::HttpResponse { latency_ns, .. } | L7Fact::DnsResponse { latency_ns, .. } => {
                latency_ns
            }
            _ => 0,
        };
        for (latency, ns) in [
            (&self.latency, latency_ns),
            (&self.connect_latency, facts.handshake_ns),
        ] {
            if let Some(latency) = latency
                && ns > 0
            {
                sum = sum.wrapping_add(latency.peek(ns));
            }
        }
        if facts.drop.is_some() {
            sum = sum.wrapping_add(self.drops.first().map_or(0, |d| d.packets));
        }
        sum
    }

    fn drop_stats(&mut self, reason: &Arc<str>) -> &mut DropStats {
        // Reasons are interned, so the pointer usually matches; the string
        // comparison covers merged edges and cache resets.
        let found = self
            .drops
            .iter()
            .position(|d| Arc::ptr_eq(&d.reason, reason) || *d.reason == **reason);
        let index = match found {
            Some(index) => index,
            None => {
                self.drops.push(DropStats::new(reason.clone()));
                self.drops.len() - 1
            }
        };
        &mut self.drops[index]
    }

    /// Adds another edge's figures to these.
    pub fn merge(&mut self, other: &EdgeStats) {
        if other.flows > 0 {
            if self.flows == 0 {
                self.first_seen_ns = other.first_seen_ns;
                self.last_seen_ns = other.last_seen_ns;
            } else {
                self.first_seen_ns = self.first_seen_ns.min(other.first_seen_ns);
                self.last_seen_ns = self.last_seen_ns.max(other.last_seen_ns);
            }
        }
        self.flows += other.flows;
        self.connections += other.connections;
        self.requests += other.requests;
        self.dns_queries += other.dns_queries;
        self.packets = self.packets.saturating_add(other.packets);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.errors += other.errors;
        self.refused += other.refused;
        self.seen_at_source += other.seen_at_source;
        self.seen_at_destination += other.seen_at_destination;
        for (mine, theirs) in self.verdicts.iter_mut().zip(other.verdicts) {
            *mine += theirs;
        }
        for (mine, theirs) in self.http.iter_mut().zip(other.http) {
            *mine += theirs;
        }
        for (rcode, count) in other.dns_rcodes.iter() {
            self.dns_rcodes.add(rcode, count);
        }
        for drop in &other.drops {
            let mine = self.drop_stats(&drop.reason);
            mine.packets = mine.packets.saturating_add(drop.packets);
            for hash in &drop.tuples {
                mine.insert(*hash);
            }
        }
        merge_latency(&mut self.latency, other.latency.as_deref());
        merge_latency(&mut self.connect_latency, other.connect_latency.as_deref());
        self.rates.merge(&other.rates);
        for service in other.services.iter() {
            self.services.insert(service);
        }
    }

    /// The counting fields of a proto edge (identity fields are left empty for
    /// the graph to fill). Rates are read at `now_ns`.
    pub fn to_proto(&self, now_ns: i64) -> GraphEdge {
        let verdicts = self
            .verdicts
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(verdict, count)| VerdictCount {
                verdict: verdict as i32,
                count: *count,
            })
            .collect();
        let mut drops: Vec<DropCount> = self
            .drops
            .iter()
            .map(|d| DropCount {
                reason: d.reason.to_string(),
                packets: d.packets,
                flows: d.flows(),
            })
            .collect();
        drops.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.reason.cmp(&b.reason)));
        let mut dns_rcodes: Vec<RcodeCount> = self
            .dns_rcodes
            .iter()
            .map(|(rcode, count)| RcodeCount {
                rcode,
                name: rcode_name(rcode).to_string(),
                count,
            })
            .collect();
        dns_rcodes.sort_by_key(|r| r.rcode);
        let http = (self.http.iter().any(|c| *c > 0)).then(|| HttpStatusCounts {
            info: self.http[0],
            success: self.http[1],
            redirect: self.http[2],
            client_error: self.http[3],
            server_error: self.http[4],
        });
        let mut services: Vec<String> = self.services.iter().map(|s| s.to_string()).collect();
        services.sort();
        GraphEdge {
            flows: self.flows,
            connections: self.connections,
            requests: self.requests,
            dns_queries: self.dns_queries,
            packets: self.packets,
            bytes: self.bytes,
            verdicts,
            drops,
            http,
            dns_rcodes,
            latency: self.latency.as_ref().map(|l| l.summary()),
            connect_latency: self.connect_latency.as_ref().map(|l| l.summary()),
            rate_1m: Some(self.rates.rates(now_ns, RATE_1M_BUCKETS)),
            rate_5m: Some(self.rates.rates(now_ns, RATE_BUCKETS)),
            first_seen_ns: self.first_seen_ns,
            last_seen_ns: self.last_seen_ns,
            errors: self.errors,
            refused: self.refused,
            seen_at_source: self.seen_at_source,
            seen_at_destination: self.seen_at_destination,
            services,
            ..GraphEdge::default()
        }
    }
}

fn record_latency(slot: &mut Option<Box<Latency>>, ns: u64) {
    if ns == 0 {
        return;
    }
    slot.get_or_insert_with(Box::default).record(ns);
}

fn merge_latency(slot: &mut Option<Box<Latency>>, other: Option<&Latency>) {
    let Some(other) = other else { return };
    match slot {
        Some(mine) => mine.merge(other),
        None => *slot = Some(Box::new(other.clone())),
    }
}

/// Log-linear buckets: values below 64 µs exactly, then 64 buckets per power
/// of two, so a bucket is at most 1/64 (1.6 %) wide and its midpoint within
/// 0.8 % of any value in it. 1 µs ..= 3600 s needs 1,728 buckets.
const SUB_BUCKET_BITS: u32 = 6;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;

fn bucket_of(us: u64) -> u16 {
    let us = us.clamp(LATENCY_MIN_US, LATENCY_MAX_US);
    if us < SUB_BUCKETS {
        return us as u16;
    }
    let exp = 63 - us.leading_zeros();
    let shift = exp - SUB_BUCKET_BITS;
    let mantissa = (us >> shift) & (SUB_BUCKETS - 1);
    (SUB_BUCKETS * u64::from(shift + 1) + mantissa) as u16
}

/// The middle of a bucket, in nanoseconds.
fn bucket_mid_ns(bucket: u16) -> u64 {
    let bucket = u64::from(bucket);
    if bucket < SUB_BUCKETS {
        return bucket * 1000;
    }
    let shift = bucket / SUB_BUCKETS - 1;
    let low = (SUB_BUCKETS + bucket % SUB_BUCKETS) << shift;
    let width = 1u64 << shift;
    (low * 1000).saturating_add(width * 500)
}

/// A latency distribution: a sparse log-linear histogram in microseconds
/// (only the buckets that were hit take memory, 8 bytes each; a typical edge
/// uses a few hundred bytes) plus exact min, max and sum in nanoseconds.
/// Mergeable: counts of equal buckets add.
#[derive(Debug, Clone)]
pub struct Latency {
    /// (bucket, count), sorted by bucket.
    buckets: Vec<(u16, u32)>,
    count: u64,
    min_ns: u64,
    max_ns: u64,
    sum_ns: u128,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            buckets: Vec::new(),
            count: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            sum_ns: 0,
        }
    }
}

impl Latency {
    /// Values below 1 µs count as 1 µs, above 3600 s as 3600 s.
    pub fn record(&mut self, ns: u64) {
        let ns = ns.clamp(LATENCY_MIN_US * 1000, LATENCY_MAX_US * 1000);
        self.add_to_bucket(bucket_of(ns / 1000), 1);
        self.count += 1;
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        self.sum_ns += u128::from(ns);
    }

    fn add_to_bucket(&mut self, bucket: u16, count: u32) {
        match self.buckets.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(at) => self.buckets[at].1 = self.buckets[at].1.saturating_add(count),
            Err(at) => self.buckets.insert(at, (bucket, count)),
        }
    }

    /// The count in the bucket `ns` goes to (a read, to warm the cache).
    fn peek(&self, ns: u64) -> u64 {
        let bucket = bucket_of(ns / 1000);
        self.buckets
            .binary_search_by_key(&bucket, |(b, _)| *b)
            .map_or(0, |at| u64::from(self.buckets[at].1))
    }

    pub fn merge(&mut self, other: &Latency) {
        for &(bucket, count) in &other.buckets {
            self.add_to_bucket(bucket, count);
        }
        self.count += other.count;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        self.sum_ns += other.sum_ns;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Exact sum of the values, in nanoseconds.
    pub fn sum_ns(&self) -> u128 {
        self.sum_ns
    }

    /// How many values are at most each of `bounds_ns` (ascending), for a
    /// Prometheus histogram. A value counts as its bucket's middle kept
    /// within min..=max, as for percentiles, so a count can be off only for
    /// values within a bucket's width (1.6 %) of a bound.
    pub fn cumulative_counts(&self, bounds_ns: &[u64]) -> Vec<u64> {
        let mut counts = vec![0u64; bounds_ns.len()];
        for &(bucket, count) in &self.buckets {
            let value = bucket_mid_ns(bucket).clamp(self.min_ns, self.max_ns);
            let first = bounds_ns.partition_point(|&bound| bound < value);
            for slot in &mut counts[first..] {
                *slot += u64::from(count);
            }
        }
        counts
    }

    /// The value at quantile `q`: the middle of the bucket holding the
    /// sample of that rank, kept within the exact min..=max.
    fn quantile(&self, q: f64) -> u64 {
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count.max(1));
        let mut seen = 0u64;
        for &(bucket, count) in &self.buckets {
            seen += u64::from(count);
            if seen >= rank {
                return bucket_mid_ns(bucket).clamp(self.min_ns, self.max_ns);
            }
        }
        self.max_ns
    }

    pub fn summary(&self) -> LatencySummary {
        if self.count == 0 {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.count,
            min_ns: self.min_ns,
            p50_ns: self.quantile(0.50),
            p95_ns: self.quantile(0.95),
            p99_ns: self.quantile(0.99),
            max_ns: self.max_ns,
            mean_ns: u64::try_from(self.sum_ns / u128::from(self.count)).unwrap_or(u64::MAX),
        }
    }
}

/// What one 5-second bucket holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateBucket {
    pub flows: u32,
    /// HTTP requests and DNS queries.
    pub requests: u32,
    /// Dropped records.
    pub drops: u32,
    pub errors: u32,
    pub bytes: u64,
}

impl RateBucket {
    fn add(&mut self, other: &RateBucket) {
        self.flows = self.flows.saturating_add(other.flows);
        self.requests = self.requests.saturating_add(other.requests);
        self.drops = self.drops.saturating_add(other.drops);
        self.errors = self.errors.saturating_add(other.errors);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }

    fn is_empty(&self) -> bool {
        *self == RateBucket::default()
    }
}

/// Per-edge rates: a ring of [`RATE_BUCKETS`] buckets of [`BUCKET_NS`] each,
/// indexed by flow time. Bucket `i` holds flows with `time_ns / 5 s == i`.
///
/// Windows, read at the engine clock `now` (whose bucket is `c = now / 5 s`):
/// the 1-minute rate is the sum of buckets `c-11 ..= c` divided by 60 s, the
/// 5-minute rate the sum of `c-59 ..= c` divided by 300 s. The current bucket
/// is partly filled, so a rate dips slightly just after each boundary and is
/// exact for traffic that has been steady for the whole window.
///
/// The newest bucket is kept inline and the older ones in a separate array,
/// allocated on the first move to a new bucket: counting a flow touches only
/// the edge's own memory, and the array once per edge per 5 s.
#[derive(Debug, Clone)]
#[repr(C)]
pub struct RateRing {
    /// Index of the newest bucket, held in `current`; `EMPTY` before any flow.
    head: i64,
    current: RateBucket,
    /// Buckets `head-59 ..= head-1` at their slots (the head's slot is stale).
    older: Option<Box<[RateBucket; RATE_BUCKETS]>>,
}

const EMPTY: i64 = i64::MIN;

impl Default for RateRing {
    fn default() -> Self {
        Self {
            head: EMPTY,
            current: RateBucket::default(),
            older: None,
        }
    }
}

fn slot(index: i64) -> usize {
    index.rem_euclid(RATE_BUCKETS as i64) as usize
}

fn zeroed() -> Box<[RateBucket; RATE_BUCKETS]> {
    Box::new([RateBucket::default(); RATE_BUCKETS])
}

impl RateRing {
    /// Adds a record at `time_ns`; records older than the 5-minute window (or
    /// ahead of the clock) count in the totals only.
    pub fn add(&mut self, time_ns: i64, now_ns: i64, delta: &RateBucket) {
        let index = time_ns.div_euclid(BUCKET_NS);
        let current = now_ns.div_euclid(BUCKET_NS);
        if index > current || index <= current - RATE_BUCKETS as i64 {
            return;
        }
        self.add_bucket(index, delta);
    }

    fn add_bucket(&mut self, index: i64, delta: &RateBucket) {
        if self.head == EMPTY {
            self.head = index;
            self.current = *delta;
        } else if index == self.head {
            self.current.add(delta);
        } else if index > self.head {
            let older = self.older.get_or_insert_with(zeroed);
            if index - self.head >= RATE_BUCKETS as i64 {
                older.fill(RateBucket::default());
            } else {
                older[slot(self.head)] = self.current;
                for i in self.head + 1..index {
                    older[slot(i)] = RateBucket::default();
                }
            }
            self.head = index;
            self.current = *delta;
        } else if index > self.head - RATE_BUCKETS as i64 {
            self.older.get_or_insert_with(zeroed)[slot(index)].add(delta);
        }
    }

    fn bucket(&self, index: i64) -> RateBucket {
        if index == self.head {
            return self.current;
        }
        match &self.older {
            Some(older) if index < self.head && index > self.head - RATE_BUCKETS as i64 => {
                older[slot(index)]
            }
            _ => RateBucket::default(),
        }
    }

    /// The sum of the `window` buckets ending with the one `now_ns` falls in.
    pub fn sum(&self, now_ns: i64, window: usize) -> RateBucket {
        let mut total = RateBucket::default();
        if self.head == EMPTY {
            return total;
        }
        let current = now_ns.div_euclid(BUCKET_NS);
        let window = window.min(RATE_BUCKETS) as i64;
        let oldest_kept = self.head - RATE_BUCKETS as i64 + 1;
        for index in (current - window + 1).max(oldest_kept)..=current.min(self.head) {
            total.add(&self.bucket(index));
        }
        total
    }

    /// Per-second rates over the `window` buckets ending at `now_ns`.
    pub fn rates(&self, now_ns: i64, window: usize) -> Rates {
        let sum = self.sum(now_ns, window);
        let seconds = (window.min(RATE_BUCKETS) as i64 * BUCKET_NS) as f64 / 1e9;
        Rates {
            flows_per_s: f64::from(sum.flows) / seconds,
            requests_per_s: f64::from(sum.requests) / seconds,
            bytes_per_s: sum.bytes as f64 / seconds,
            drops_per_s: f64::from(sum.drops) / seconds,
            errors_per_s: f64::from(sum.errors) / seconds,
        }
    }

    pub fn merge(&mut self, other: &RateRing) {
        if other.head == EMPTY {
            return;
        }
        for index in other.head - RATE_BUCKETS as i64 + 1..=other.head {
            let bucket = other.bucket(index);
            if !bucket.is_empty() {
                self.add_bucket(index, &bucket);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn facts(time_ns: i64) -> FlowFacts {
        FlowFacts {
            time_ns,
            verdict: Verdict::Forwarded,
            packets: 2,
            bytes: 100,
            connection: false,
            refused: false,
            l7: L7Fact::None,
            handshake_ns: 0,
            drop: None,
            service: None,
        }
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut latency = Latency::default();
        for ms in 1..=1000u64 {
            latency.record(ms * MS);
        }
        let s = latency.summary();
        let close = |got: u64, want: u64| (got as f64 - want as f64).abs() / want as f64 <= 0.01;
        assert_eq!(s.count, 1000);
        assert_eq!(s.min_ns, MS);
        assert_eq!(s.max_ns, 1000 * MS);
        assert!(close(s.p50_ns, 500 * MS), "p50 {}", s.p50_ns);
        assert!(close(s.p95_ns, 950 * MS), "p95 {}", s.p95_ns);
        assert!(close(s.p99_ns, 990 * MS), "p99 {}", s.p99_ns);
        assert_eq!(s.mean_ns, 500_500_000);
    }

    #[test]
    fn every_value_lands_in_a_bucket_whose_middle_is_within_one_percent() {
        let mut us = 1u64;
        let mut last_bucket = 0u16;
        while us <= LATENCY_MAX_US {
            let bucket = bucket_of(us);
            assert!(bucket >= last_bucket, "buckets grow with values");
            last_bucket = bucket;
            let mid = bucket_mid_ns(bucket) as f64;
            let ns = (us * 1000) as f64;
            assert!(
                (mid - ns).abs() / ns <= 0.008,
                "{us} us -> bucket {bucket} mid {mid}"
            );
            us += 1 + us / 97;
        }
        assert!(bucket_of(LATENCY_MAX_US) < 1800);
    }

    #[test]
    fn merged_latency_equals_recording_everything_in_one() {
        let (mut a, mut b, mut both) = (Latency::default(), Latency::default(), Latency::default());
        for i in 1..=500u64 {
            let ns = i * i * 7_919;
            if i % 3 == 0 {
                a.record(ns)
            } else {
                b.record(ns)
            }
            both.record(ns);
        }
        a.merge(&b);
        assert_eq!(a.summary(), both.summary());
        assert_eq!(a.buckets, both.buckets);
        // Sparse: only the buckets that were hit take memory.
        assert!(both.buckets.len() < 500);
    }

    #[test]
    fn latency_clamps_out_of_range_values() {
        let mut latency = Latency::default();
        latency.record(10);
        latency.record(u64::MAX);
        let s = latency.summary();
        assert_eq!(s.count, 2);
        assert_eq!(s.min_ns, 1000);
        assert_eq!(s.max_ns, 3_600 * SECOND as u64);
    }

    #[test]
    fn one_minute_and_five_minute_rates() {
        // 4.9 s into bucket 200.
        let now = 1_004 * SECOND + 900_000_000;
        let mut stats = EdgeStats::default();
        // 120 flows spread over the current bucket and the 11 before it.
        let first_bucket_start = (now / BUCKET_NS - 11) * BUCKET_NS;
        for i in 0..120 {
            stats.add(&facts(first_bucket_start + i * (SECOND / 2)), now);
        }
        // 60 more, 200 s ago: in the 5-minute window only.
        for i in 0..60 {
            stats.add(&facts(now - 200 * SECOND + i), now);
        }
        // 10 from 6 minutes ago: totals only.
        for i in 0..10 {
            stats.add(&facts(now - 360 * SECOND + i), now);
        }
        let r1 = stats.rates.rates(now, RATE_1M_BUCKETS);
        let r5 = stats.rates.rates(now, RATE_BUCKETS);
        assert_eq!(r1.flows_per_s, 2.0);
        assert_eq!(r1.bytes_per_s, 200.0);
        assert_eq!(r5.flows_per_s, 180.0 / 300.0);
        assert_eq!(stats.flows, 190);

        // A minute later the first 120 have left the 1-minute window.
        let later = now + 60 * SECOND;
        assert_eq!(stats.rates.rates(later, RATE_1M_BUCKETS).flows_per_s, 0.0);
        assert_eq!(
            stats.rates.rates(later, RATE_BUCKETS).flows_per_s,
            180.0 / 300.0
        );
        // And after 5 more minutes nothing is left.
        assert_eq!(stats.rates.sum(later + 300 * SECOND, RATE_BUCKETS).flows, 0);
    }

    #[test]
    fn ring_reuses_slots_as_time_moves_on() {
        let mut ring = RateRing::default();
        let one = RateBucket {
            flows: 1,
            ..RateBucket::default()
        };
        for minute in 0..20i64 {
            let t = minute * 60 * SECOND;
            ring.add(t, t, &one);
        }
        // Only the flows of the last 5 minutes remain (minutes 15..=19).
        assert_eq!(ring.sum(19 * 60 * SECOND, RATE_BUCKETS).flows, 5);
    }

    #[test]
    fn counts_l7_drops_and_errors() {
        let now = 100 * SECOND;
        let mut stats = EdgeStats::default();
        let reason: Arc<str> = Arc::from("POLICY_DENIED");
        let mut f = facts(now);
        f.l7 = L7Fact::HttpResponse {
            code: 503,
            latency_ns: 2 * MS,
        };
        stats.add(&f, now);
        f.l7 = L7Fact::HttpResponse {
            code: 200,
            latency_ns: 0,
        };
        stats.add(&f, now);
        f.l7 = L7Fact::DnsResponse {
            rcode: 3,
            latency_ns: MS,
        };
        stats.add(&f, now);
        f.l7 = L7Fact::None;
        f.verdict = Verdict::Dropped;
        f.packets = 0;
        for hash in [1, 2, 1] {
            f.drop = Some(DropFact {
                reason: reason.clone(),
                tuple_hash: hash,
            });
            stats.add(&f, now);
        }
        let edge = stats.to_proto(now);
        assert_eq!(edge.flows, 6);
        assert_eq!(edge.errors, 2);
        assert_eq!(edge.http.map(|h| (h.success, h.server_error)), Some((1, 1)));
        assert_eq!(edge.dns_rcodes.len(), 1);
        assert_eq!(edge.dns_rcodes[0].name, "NXDOMAIN");
        assert_eq!(edge.latency.map(|l| l.count), Some(2));
        assert_eq!(edge.drops.len(), 1);
        assert_eq!((edge.drops[0].packets, edge.drops[0].flows), (3, 2));
        assert_eq!(edge.verdicts.len(), 2);
        assert_eq!(edge.rate_1m.map(|r| r.drops_per_s), Some(3.0 / 60.0));
    }

    #[test]
    fn merge_adds_counts_histograms_sets_and_rates() {
        let now = 100 * SECOND;
        let reason: Arc<str> = Arc::from("NO_SOCKET");
        let mut a = EdgeStats::default();
        let mut b = EdgeStats::default();
        let mut f = facts(now - 10 * SECOND);
        f.handshake_ns = MS;
        a.add(&f, now);
        f.time_ns = now - 400 * SECOND;
        f.handshake_ns = 3 * MS;
        f.verdict = Verdict::Dropped;
        f.drop = Some(DropFact {
            reason: Arc::from("NO_SOCKET"),
            tuple_hash: 7,
        });
        f.service = Some(Arc::from("api"));
        b.add(&f, now);
        f.time_ns = now;
        f.drop = Some(DropFact {
            reason,
            tuple_hash: 8,
        });
        b.add(&f, now);

        a.merge(&b);
        assert_eq!(a.flows, 3);
        assert_eq!(a.first_seen_ns, now - 400 * SECOND);
        assert_eq!(a.last_seen_ns, now);
        assert_eq!(a.verdicts[Verdict::Dropped as usize], 2);
        assert_eq!(a.drops.len(), 1);
        assert_eq!(a.drops[0].flows(), 2);
        let connect = a.connect_latency.as_ref().map(|l| l.summary());
        assert_eq!(
            connect.map(|c| (c.count, c.min_ns, c.max_ns)),
            Some((3, MS, 3 * MS))
        );
        // Two of the three are recent enough for the 1-minute window.
        assert_eq!(a.rates.sum(now, RATE_1M_BUCKETS).flows, 2);
        assert_eq!(a.services.len(), 1);
    }

    #[test]
    fn distinct_flows_stop_at_the_cap() {
        let mut drops = DropStats::new(Arc::from("X"));
        for hash in 0..(DISTINCT_FLOWS_CAP as u64 + 100) {
            drops.insert(hash);
        }
        assert_eq!(drops.flows(), DISTINCT_FLOWS_CAP as u64);
    }
}
