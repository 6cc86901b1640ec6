//! Getting flows to the relay without ever blocking the ring-buffer reader.
//!
//! [`Shipper::send`] only appends to a bounded queue: when the relay is away
//! or slow the queue keeps the newest flows and drops the oldest, counting
//! them as loss stage `probe-send-buffer`. One task connects, streams
//! `FlowBatch`es (sequence numbered, carrying the probe's cumulative loss
//! counters, which is how the relay reads them) and reconnects with a backoff
//! that starts at 100 ms and doubles up to 5 s. CPU samples ride along with
//! the next batch; only the newest interval's are kept, since an older figure
//! is stale. Every new stream starts with a batch, empty if need be, so the
//! relay shows the node connected even while its interfaces are quiet.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use skymap_proto::v1::ingest_client::IngestClient;
use skymap_proto::v1::{CpuSample, Flow, FlowBatch, LossCounter};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

/// Largest batch sent.
const BATCH_FLOWS: usize = 1000;
/// A batch goes out at least this often while flows wait, and losses are
/// reported at least this often.
const SEND_EVERY: Duration = Duration::from_millis(200);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Loss stage for flows pushed out of a full queue.
pub const LOSS_SEND_BUFFER: &str = "probe-send-buffer";
/// Loss stage for batches the relay's stream did not take.
pub const LOSS_SEND_FAILED: &str = "probe-send-failed";

#[derive(Debug, Default)]
struct Queue {
    flows: VecDeque<Flow>,
    capacity: usize,
    /// Losses since the probe started, by stage.
    losses: BTreeMap<String, u64>,
    /// The relay has not heard of the latest losses, or a new stream has
    /// not yet been announced.
    report: bool,
    /// The newest CPU samples, not yet sent.
    cpu: Vec<CpuSample>,
    connected: bool,
    sent: u64,
}

impl Queue {
    fn take_batch(&mut self, node: &str, seq: u64) -> Option<FlowBatch> {
        if self.flows.is_empty() && self.cpu.is_empty() && !self.report {
            return None;
        }
        self.report = false;
        let count = self.flows.len().min(BATCH_FLOWS);
        let flows: Vec<Flow> = self.flows.drain(..count).collect();
        let losses = self
            .losses
            .iter()
            .map(|(stage, &count)| LossCounter {
                node_name: node.to_string(),
                stage: stage.clone(),
                count,
            })
            .collect();
        Some(FlowBatch {
            node_name: node.to_string(),
            seq,
            flows,
            losses,
            cpu: std::mem::take(&mut self.cpu),
        })
    }

    fn lose(&mut self, stage: &str, count: u64) {
        if count > 0 {
            *self.losses.entry(stage.to_string()).or_default() += count;
            self.report = true;
        }
    }
}

/// What the shipper has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShipStatus {
    pub connected: bool,
    pub queued: usize,
    pub sent: u64,
}

/// The queue and its sending task; dropping it stops the task.
#[derive(Debug)]
pub struct Shipper {
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    // A panic elsewhere cannot leave the queue half-updated in a way that
    // matters more than losing the probe: keep going with what is there.
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shipper {
    /// Starts sending to the relay at `url` (`http://HOST:PORT`) as `node`,
    /// keeping at most `capacity` flows while it cannot.
    pub fn spawn(url: String, node: String, capacity: usize) -> Self {
        let queue = Arc::new(Mutex::new(Queue {
            capacity: capacity.max(1),
            ..Queue::default()
        }));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(run(url, node, queue.clone(), wake.clone()));
        Self { queue, wake, task }
    }

    /// Queues flows; never waits.
    pub fn send(&self, flows: Vec<Flow>) {
        if flows.is_empty() {
            return;
        }
        {
            let mut q = lock(&self.queue);
            q.flows.extend(flows);
            let excess = q.flows.len().saturating_sub(q.capacity);
            if excess > 0 {
                q.flows.drain(..excess);
                q.lose(LOSS_SEND_BUFFER, excess as u64);
            }
        }
        self.wake.notify_one();
    }

    /// Adds losses counted elsewhere (kernel, decoding, assembly), as
    /// increments since the previous call.
    pub fn add_losses<'a>(&self, losses: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut q = lock(&self.queue);
        for (stage, count) in losses {
            q.lose(stage, count);
        }
    }

    /// A handle that hands CPU samples to this shipper from another thread.
    pub fn cpu_sender(&self) -> CpuSender {
        CpuSender {
            queue: self.queue.clone(),
            wake: self.wake.clone(),
        }
    }

    pub fn status(&self) -> ShipStatus {
        let q = lock(&self.queue);
        ShipStatus {
            connected: q.connected,
            queued: q.flows.len(),
            sent: q.sent,
        }
    }

    /// Waits up to `timeout` for the queue to empty (at exit).
    pub async fn flush(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            let idle = {
                let q = lock(&self.queue);
                q.flows.is_empty() && !q.report
            };
            if idle {
                return;
            }
            self.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// See [`Shipper::cpu_sender`].
#[derive(Debug, Clone)]
pub struct CpuSender {
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
}

impl CpuSender {
    /// Replaces the samples waiting to be sent with a newer interval's.
    pub fn send(&self, samples: Vec<CpuSample>) {
        lock(&self.queue).cpu = samples;
        self.wake.notify_one();
    }
}

async fn run(url: String, node: String, queue: Arc<Mutex<Queue>>, wake: Arc<Notify>) {
    let mut backoff = BACKOFF_FIRST;
    let mut seq = 0u64;
    loop {
        let client = match IngestClient::connect(url.clone()).await {
            Ok(client) => client,
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        // One batch in flight: a batch is either taken by the stream or
        // counted as lost, never silently buffered in between.
        let (tx, rx) = mpsc::channel::<FlowBatch>(1);
        let mut client = client;
        let mut call = tokio::spawn(async move { client.stream(ReceiverStream::new(rx)).await });
        {
            let mut q = lock(&queue);
            q.connected = true;
            q.report = true;
        }
        backoff = BACKOFF_FIRST;
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(SEND_EVERY) => {}
                _ = &mut call => break,
            }
            loop {
                let Some(batch) = lock(&queue).take_batch(&node, seq + 1) else {
                    break;
                };
                let flows = batch.flows.len() as u64;
                match tx.send(batch).await {
                    Ok(()) => {
                        seq += 1;
                        lock(&queue).sent += flows;
                    }
                    Err(_) => {
                        lock(&queue).lose(LOSS_SEND_FAILED, flows);
                        break;
                    }
                }
            }
            if call.is_finished() {
                break;
            }
        }
        lock(&queue).connected = false;
        call.abort();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
