//! `skymap replay`: feeds a recording into a relay, one ingest stream per
//! recorded node, at the recorded pace scaled by `--speed`.
//!
//! Timestamps move to "now" by default, so the relay's rates and windows read
//! as live traffic; `--keep-time` keeps them as recorded.

use std::collections::HashMap;
use std::io::{IsTerminal, stderr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, eyre};
use std::io::BufRead;

use skymap_proto::jsonl::{FlowReader, ReadReport};
use skymap_proto::v1::ingest_client::IngestClient;
use skymap_proto::v1::{Flow, FlowBatch, IngestSummary};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::{now_ns, open_recording, report_rejects};
use crate::{ReplayArgs, conn};

/// Node name for recorded flows that carry none.
const UNNAMED_NODE: &str = "replay";
/// Partial batches go out at least this often, so a slow recording still flows.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

struct NodeStream {
    name: String,
    batches: mpsc::Sender<FlowBatch>,
    pending: Vec<Flow>,
    seq: u64,
    call: JoinHandle<Result<IngestSummary, tonic::Status>>,
}

impl NodeStream {
    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.seq += 1;
        let batch = FlowBatch {
            node_name: self.name.clone(),
            seq: self.seq,
            flows: std::mem::take(&mut self.pending),
            ..FlowBatch::default()
        };
        if self.batches.send(batch).await.is_err() {
            // The call has ended: its status says why (e.g. a client
            // certificate the relay requires).
            let why = match (&mut self.call).await {
                Ok(Err(status)) => format!(": {}", status.message()),
                _ => String::new(),
            };
            return Err(eyre!(
                "the relay closed the stream for node {}{why}",
                self.name
            ));
        }
        Ok(())
    }
}

/// Where a recorded time lands in the replay.
struct Pace {
    speed: f64,
    started: Instant,
    started_ns: i64,
    /// Recorded time of the first flow of the current pass.
    origin_ns: Option<i64>,
    /// Replay time already used by earlier passes (with --loop).
    offset: Duration,
}

impl Pace {
    fn offset_of(&mut self, time_ns: i64) -> Duration {
        let origin = *self.origin_ns.get_or_insert(time_ns);
        let recorded = Duration::from_nanos(u64::try_from(time_ns - origin).unwrap_or(0));
        if self.speed == 0.0 {
            return self.offset;
        }
        self.offset + recorded.div_f64(self.speed)
    }
}

pub async fn run(args: ReplayArgs) -> Result<ExitCode> {
    if !(args.speed.is_finite() && args.speed >= 0.0) {
        return Err(eyre!(
            "--speed must be 0 (as fast as possible) or a positive number"
        ));
    }
    if args.batch == 0 {
        return Err(eyre!("--batch must be at least 1"));
    }
    let name = args.file.display().to_string();
    if name == "-" && args.repeat {
        return Err(eyre!("--loop needs a file, not standard input"));
    }
    // Fail on an unreadable file before touching the relay.
    let reader = open_recording(&args.file)?;
    let client = conn::ingest(&args.relay).await?;
    let options = Feed {
        speed: args.speed,
        repeat: args.repeat,
        keep_time: args.keep_time,
        batch: args.batch,
        progress: Progress::new(),
    };
    let file = args.file.clone();
    let fed = feed(
        client,
        reader,
        || open_recording(&file),
        options,
        tokio::signal::ctrl_c(),
    )
    .await?;
    report_rejects(&name, &fed.report);
    eprintln!(
        "replayed {} flows in {} batches{}",
        fed.sent,
        fed.summary.batches,
        if fed.stopped { " (interrupted)" } else { "" }
    );
    if fed.report.flows == 0 && fed.report.rejected > 0 {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// How to feed a recording.
pub struct Feed {
    pub speed: f64,
    pub repeat: bool,
    pub keep_time: bool,
    pub batch: usize,
    pub progress: Progress,
}

/// What a feed did.
pub struct Fed {
    pub sent: u64,
    pub summary: IngestSummary,
    /// What reading the last pass skipped.
    pub report: ReadReport,
    pub stopped: bool,
}

type Reader = FlowReader<Box<dyn BufRead + Send>>;

/// Sends a recording's flows to a relay, one ingest stream per recorded
/// node, at the recorded pace; with `repeat`, opens it again with `reopen`
/// at the end, until `stop` completes.
pub async fn feed<S: Future>(
    client: IngestClient<Channel>,
    mut reader: Reader,
    mut reopen: impl FnMut() -> Result<Reader>,
    options: Feed,
    stop: S,
) -> Result<Fed> {
    let mut nodes: HashMap<String, NodeStream> = HashMap::new();
    let mut pace = Pace {
        speed: options.speed,
        started: Instant::now(),
        started_ns: now_ns(),
        origin_ns: None,
        offset: Duration::ZERO,
    };
    let progress = options.progress;
    let mut sent: u64 = 0;
    let mut last_flush = Instant::now();
    tokio::pin!(stop);
    let mut stopped = false;

    'passes: loop {
        let mut last_offset = pace.offset;
        while let Some(mut flow) = reader.next() {
            let at = pace.offset_of(flow.time_ns);
            last_offset = at;
            let wait = at.saturating_sub(pace.started.elapsed());
            if !wait.is_zero() {
                for node in nodes.values_mut() {
                    node.flush().await?;
                }
                last_flush = Instant::now();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = &mut stop => { stopped = true; break 'passes; }
                }
            }
            if !options.keep_time {
                flow.time_ns = pace.started_ns + i64::try_from(at.as_nanos()).unwrap_or(i64::MAX);
            }
            if flow.node_name.is_empty() {
                flow.node_name = UNNAMED_NODE.to_string();
            }
            let node = match nodes.get_mut(&flow.node_name) {
                Some(node) => node,
                None => {
                    let stream = open_node(&client, &flow.node_name);
                    nodes.entry(flow.node_name.clone()).or_insert(stream)
                }
            };
            node.pending.push(flow);
            if node.pending.len() >= options.batch {
                node.flush().await?;
            }
            sent += 1;
            if last_flush.elapsed() >= FLUSH_EVERY {
                for node in nodes.values_mut() {
                    node.flush().await?;
                }
                last_flush = Instant::now();
                progress.show(sent, nodes.len(), reader.report().rejected);
                if futures::FutureExt::now_or_never(&mut stop).is_some() {
                    stopped = true;
                    break 'passes;
                }
            }
        }
        if !options.repeat {
            break;
        }
        if reader.report().flows == 0 {
            return Err(eyre!(
                "{}: no flow could be read, nothing to loop over",
                reader.name()
            ));
        }
        // The next pass starts where this one ended, one step later.
        pace.offset = last_offset + Duration::from_millis(1);
        pace.origin_ns = None;
        reader = reopen()?;
    }

    let mut summary = IngestSummary::default();
    for (_, mut node) in nodes.drain() {
        node.flush().await?;
        drop(node.batches);
        match node.call.await {
            Ok(Ok(s)) => {
                summary.batches += s.batches;
                summary.flows += s.flows;
                summary.rejected += s.rejected;
            }
            Ok(Err(status)) => {
                return Err(eyre!(
                    "relay ended the stream for node {}: {}",
                    node.name,
                    status.message()
                ));
            }
            Err(e) => return Err(eyre!("stream for node {} failed: {e}", node.name)),
        }
    }
    progress.done();
    Ok(Fed {
        sent,
        summary,
        report: reader.report().clone(),
        stopped,
    })
}

fn open_node(client: &IngestClient<Channel>, name: &str) -> NodeStream {
    let (tx, rx) = mpsc::channel(16);
    let mut client = client.clone();
    let call = tokio::spawn(async move {
        client
            .stream(ReceiverStream::new(rx))
            .await
            .map(tonic::Response::into_inner)
    });
    NodeStream {
        name: name.to_string(),
        batches: tx,
        pending: Vec::new(),
        seq: 0,
        call,
    }
}

/// A progress line on a terminal's stderr, at most a few times a second.
pub struct Progress {
    enabled: bool,
}

impl Progress {
    /// Shown when stderr is a terminal.
    pub fn new() -> Self {
        Self {
            enabled: stderr().is_terminal(),
        }
    }

    /// Never shown (the explorer owns the terminal).
    pub fn quiet() -> Self {
        Self { enabled: false }
    }

    fn show(&self, sent: u64, nodes: usize, rejected: u64) {
        if self.enabled {
            eprint!("\rreplayed {sent} flows from {nodes} nodes, {rejected} lines rejected ");
        }
    }

    fn done(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}
