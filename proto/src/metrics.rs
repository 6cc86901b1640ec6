//! Prometheus metrics for `skymap-relay` and `skymap-probe`, shared by both:
//!
//! - [`Exposition`]: builds a page in the text exposition format, version
//!   0.0.4 (HELP and TYPE lines, samples, histograms).
//! - [`serve`]: the small HTTP/1.1 server behind `--metrics-listen`, answering
//!   `GET /metrics` (the page, built on demand by a [`MetricsSource`]) and
//!   `GET /healthz`.
//! - [`parse`]: a strict reader of such a page, so tests check what a
//!   scraper would see (every line parses, every family is declared,
//!   histogram buckets add up).
//!
//! There is no registry: each binary renders its page from counters it keeps
//! anyway, at scrape time.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing;
use tokio::net::TcpListener;

/// The `Content-Type` of a text exposition page.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a metric family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value: counts stay exact integers, the rest are floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(value: u64) -> Self {
        Value::Int(value)
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::Float(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Int(u64::from(value))
    }
}

/// One histogram series: the cumulative count at each upper bound
/// (ascending; `+Inf` is added from `count`), the count and the sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

/// A page being built. Call [`Exposition::family`] before a family's
/// samples; families must not repeat.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family: its HELP and TYPE lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample of a counter or gauge family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        self.line(name, labels, None, value.into());
    }

    /// One series of a histogram family: `_bucket` lines (cumulative, ending
    /// with `le="+Inf"`), `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let bucket = format!("{name}_bucket");
        for &(le, count) in &histogram.buckets {
            self.line(&bucket, labels, Some(&float(le)), Value::Int(count));
        }
        self.line(&bucket, labels, Some("+Inf"), Value::Int(histogram.count));
        self.line(
            &format!("{name}_sum"),
            labels,
            None,
            Value::Float(histogram.sum),
        );
        self.line(
            &format!("{name}_count"),
            labels,
            None,
            Value::Int(histogram.count),
        );
    }

    pub fn finish(self) -> String {
        self.text
    }

    fn line(&mut self, name: &str, labels: &[(&str, &str)], le: Option<&str>, value: Value) {
        self.text.push_str(name);
        let le = le.map(|le| ("le", le));
        let mut all = labels.iter().copied().chain(le).peekable();
        if all.peek().is_some() {
            self.text.push('{');
            for (i, (label, value)) in all.enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = match value {
            Value::Int(n) => writeln!(self.text, " {n}"),
            Value::Float(x) => writeln!(self.text, " {}", float(x)),
        };
    }
}

fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Prometheus spells infinities `+Inf`/`-Inf`; Rust's `inf` would not parse.
fn float(x: f64) -> String {
    if x == f64::INFINITY {
        "+Inf".to_string()
    } else if x == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        x.to_string()
    }
}

/// What renders a page on demand.
pub trait MetricsSource: Send + Sync + 'static {
    /// The page, or why it cannot be had now (answered 503 with the reason).
    fn render(&self) -> impl Future<Output = Result<String, String>> + Send;
}

/// Why metrics cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen on {addr} for metrics (--metrics-listen): {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the metrics address; separate from [`serve`] so that a taken port
/// stops the start with a clear error, and so that port 0 can be asked for.
pub async fn bind(addr: &str) -> Result<(TcpListener, SocketAddr), MetricsError> {
    let bind_error = |source| MetricsError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// Serves `GET /metrics` and `GET /healthz` until `shutdown` completes.
/// `/healthz` says only that this server answers; the page itself answers
/// 503 when its source cannot render (the relay's aggregator is gone).
pub async fn serve<S: MetricsSource>(
    listener: TcpListener,
    source: Arc<S>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/metrics", routing::get(metrics::<S>))
        .route("/healthz", routing::get(|| async { "ok\n" }))
        .with_state(source);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics<S: MetricsSource>(State(source): State<Arc<S>>) -> Response {
    match source.render().await {
        Ok(page) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], page).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// Fetches `path` from a metrics server the simplest way (HTTP/1.0, so the
/// server closes when done): the status code and the body. For tests and
/// quick checks; Prometheus itself is the real client.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status code"))?;
    Ok((status, body.to_string()))
}

/// One sample as [`parse`] read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A page that does not hold to the format: the line it fails at (`None`
/// for a histogram whose series does not add up) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "metrics line {line}: {}", self.message),
            None => write!(f, "metrics: {}", self.message),
        }
    }
}

impl std::error::Error for ParseError {}

/// Reads a page strictly: every sample belongs to a family declared before
/// it with both HELP and TYPE, names and labels are well formed, values
/// parse, and each histogram series has ascending, cumulative buckets ending
/// in `+Inf` equal to its `_count`.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut helped: BTreeSet<String> = BTreeSet::new();
    let mut types: BTreeMap<String, Kind> = BTreeMap::new();
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let fail = |message: String| ParseError {
            line: Some(index + 1),
            message,
        };
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            check_name(name).map_err(fail)?;
            if !helped.insert(name.to_string()) {
                return Err(fail(format!("second HELP for {name}")));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| fail("TYPE without a type".into()))?;
            check_name(name).map_err(fail)?;
            let kind = match kind {
                "counter" => Kind::Counter,
                "gauge" => Kind::Gauge,
                "histogram" => Kind::Histogram,
                other => return Err(fail(format!("unknown type {other:?}"))),
            };
            if types.insert(name.to_string(), kind).is_some() {
                return Err(fail(format!("second TYPE for {name}")));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let sample = parse_sample(line).map_err(fail)?;
        let family = family_of(&sample.name, &types)
            .ok_or_else(|| fail(format!("{} has no TYPE before it", sample.name)))?;
        if !helped.contains(family) {
            return Err(fail(format!("{family} has no HELP before it")));
        }
        samples.push(sample);
    }
    check_histograms(&samples, &types)?;
    Ok(samples)
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("{name:?} is not a metric name"))
    }
}

/// The declared family a sample name belongs to (a histogram's samples carry
/// `_bucket`, `_sum` and `_count` suffixes).
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, Kind>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (types.get(base) == Some(&Kind::Histogram)).then_some(base)
    })
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("{line:?} has no value"))?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = rest
                .split_once("=\"")
                .ok_or_else(|| format!("bad labels in {line:?}"))?;
            check_name(label).map_err(|_| format!("{label:?} is not a label name"))?;
            let (value, after) = read_label_value(after)?;
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} twice in {line:?}"));
            }
            rest = after.strip_prefix(',').unwrap_or(after);
        }
    }
    let value_text = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before the value in {line:?}"))?;
    let value = parse_float(value_text).ok_or_else(|| format!("bad value {value_text:?}"))?;
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// A quoted label value up to its closing quote, unescaped, and what follows.
fn read_label_value(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                other => return Err(format!("bad escape {other:?} in a label value")),
            },
            '\n' => return Err("raw newline in a label value".into()),
            c => value.push(c),
        }
    }
    Err("label value without a closing quote".into())
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// A histogram series: its family and its labels but `le`.
type SeriesKey = (String, Vec<(String, String)>);

fn check_histograms(samples: &[Sample], types: &BTreeMap<String, Kind>) -> Result<(), ParseError> {
    let fail = |message: String| ParseError {
        line: None,
        message,
    };
    // (le, count) per series, in page order.
    let mut buckets: BTreeMap<SeriesKey, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<SeriesKey, f64> = BTreeMap::new();
    for sample in samples {
        let Some(family) = family_of(&sample.name, types) else {
            continue;
        };
        if types.get(family) != Some(&Kind::Histogram) {
            continue;
        }
        let others: Vec<(String, String)> = sample
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let key = (family.to_string(), others);
        if sample.name.ends_with("_bucket") {
            let le = sample
                .labels
                .get("le")
                .and_then(|le| parse_float(le))
                .ok_or_else(|| fail(format!("{} without a numeric le", sample.name)))?;
            buckets.entry(key).or_default().push((le, sample.value));
        } else if sample.name.ends_with("_count") {
            counts.insert(key, sample.value);
        }
    }
    for (key, series) in &buckets {
        let name = &key.0;
        for pair in series.windows(2) {
            if pair[1].0 <= pair[0].0 {
                return Err(fail(format!(
                    "{name}: le {} after {}",
                    pair[1].0, pair[0].0
                )));
            }
            if pair[1].1 < pair[0].1 {
                return Err(fail(format!(
                    "{name}: bucket le={} holds {} < {} below it",
                    pair[1].0, pair[1].1, pair[0].1
                )));
            }
        }
        let last = series.last().copied().unwrap_or((0.0, 0.0));
        if last.0 != f64::INFINITY {
            return Err(fail(format!("{name}: no le=\"+Inf\" bucket")));
        }
        if counts.get(key) != Some(&last.1) {
            return Err(fail(format!(
                "{name}: _count {:?} differs from the +Inf bucket {}",
                counts.get(key),
                last.1
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<String, String>);

    impl MetricsSource for Fixed {
        async fn render(&self) -> Result<String, String> {
            self.0.clone()
        }
    }

    async fn start(page: Result<String, String>) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let (listener, addr) = bind("127.0.0.1:0").await.expect("bind");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, Arc::new(Fixed(page)), async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    #[tokio::test]
    async fn serves_the_page_health_and_nothing_else() {
        let (addr, _stop) = start(Ok("# HELP a A.\n# TYPE a gauge\na 1\n".into())).await;
        assert_eq!(
            get(addr, "/metrics").await.expect("scrape"),
            (200, "# HELP a A.\n# TYPE a gauge\na 1\n".to_string())
        );
        assert_eq!(
            get(addr, "/healthz").await.expect("health"),
            (200, "ok\n".into())
        );
        assert_eq!(get(addr, "/other").await.expect("404").0, 404);

        let (addr, _stop) = start(Err("aggregator stopped".into())).await;
        assert_eq!(
            get(addr, "/metrics").await.expect("scrape"),
            (503, "aggregator stopped\n".to_string())
        );
    }

    #[tokio::test]
    async fn a_taken_port_names_the_flag() {
        let (_listener, addr) = bind("127.0.0.1:0").await.expect("bind");
        let err = bind(&addr.to_string()).await.expect_err("taken");
        assert!(
            err.to_string().starts_with(&format!(
                "cannot listen on {addr} for metrics (--metrics-listen): "
            )),
            "{err}"
        );
    }

    #[test]
    fn renders_families_samples_and_histograms() {
        let mut page = Exposition::new();
        page.family("x_total", Kind::Counter, "Things.\nMore \\ text.");
        page.sample("x_total", &[("a", "q\"uote\\d\nline")], 7u64);
        page.family("up", Kind::Gauge, "Up.");
        page.sample("up", &[], true);
        page.family("lat_seconds", Kind::Histogram, "Latency.");
        page.histogram(
            "lat_seconds",
            &[("src", "a/b")],
            &Histogram {
                buckets: vec![(0.001, 1), (1.0, 3)],
                count: 4,
                sum: 2.5,
            },
        );
        let text = page.finish();
        assert_eq!(
            text,
            "# HELP x_total Things.\\nMore \\\\ text.\n\
             # TYPE x_total counter\n\
             x_total{a=\"q\\\"uote\\\\d\\nline\"} 7\n\
             # HELP up Up.\n\
             # TYPE up gauge\n\
             up 1\n\
             # HELP lat_seconds Latency.\n\
             # TYPE lat_seconds histogram\n\
             lat_seconds_bucket{src=\"a/b\",le=\"0.001\"} 1\n\
             lat_seconds_bucket{src=\"a/b\",le=\"1\"} 3\n\
             lat_seconds_bucket{src=\"a/b\",le=\"+Inf\"} 4\n\
             lat_seconds_sum{src=\"a/b\"} 2.5\n\
             lat_seconds_count{src=\"a/b\"} 4\n"
        );
        let samples = parse(&text).expect("valid page");
        assert_eq!(samples.len(), 7);
        assert_eq!(samples[0].labels["a"], "q\"uote\\d\nline");
        assert_eq!(samples[0].value, 7.0);
        assert_eq!(samples[3].labels["le"], "1");
        assert_eq!(samples[4].value, 4.0);
    }

    #[test]
    fn infinities_are_spelt_the_prometheus_way() {
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(0.0025), "0.0025");
        assert_eq!(float(10.0), "10");
    }

    #[test]
    fn the_reader_refuses_what_a_scraper_would() {
        let declared = "# HELP h H.\n# TYPE h histogram\n";
        let cases = [
            ("a 1\n", "metrics line 1: a has no TYPE before it"),
            (
                "# TYPE a counter\na 1\n",
                "metrics line 2: a has no HELP before it",
            ),
            (
                "# HELP a A.\n# TYPE a counter\na{b=\"c} 1\n",
                "metrics line 3: label value without a closing quote",
            ),
            (
                "# HELP a A.\n# TYPE a counter\na one\n",
                "metrics line 3: bad value \"one\"",
            ),
            (
                "# HELP a A.\n# TYPE a summary\n",
                "metrics line 2: unknown type \"summary\"",
            ),
            (
                "h_bucket{le=\"1\"} 3\nh_bucket{le=\"2\"} 2\nh_bucket{le=\"+Inf\"} 3\nh_count 3\n",
                "metrics: h: bucket le=2 holds 2 < 3 below it",
            ),
            (
                "h_bucket{le=\"1\"} 3\nh_count 3\n",
                "metrics: h: no le=\"+Inf\" bucket",
            ),
            (
                "h_bucket{le=\"+Inf\"} 3\nh_count 4\n",
                "metrics: h: _count Some(4.0) differs from the +Inf bucket 3",
            ),
        ];
        for (body, expected) in cases {
            let page = if body.starts_with("h_") {
                format!("{declared}{body}")
            } else {
                body.to_string()
            };
            let err = parse(&page).expect_err(body);
            assert_eq!(err.to_string(), expected, "{body}");
        }
    }
}
