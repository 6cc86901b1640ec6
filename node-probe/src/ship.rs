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
//!
//! With `https://` the connection is TLS ([`ClientTls`]); its files are read
//! again at every connection attempt, so a renewed client certificate is
//! used from the next reconnection on. Why a connection attempt failed is
//! printed once per distinct reason, and the return once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use skymap_proto::tls::{ClientTls, append_sources, describe, with_hint};
use skymap_proto::v1::ingest_client::IngestClient;
use skymap_proto::v1::{CpuSample, Flow, FlowBatch, LossCounter};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// Largest batch sent.
const BATCH_FLOWS: usize = 1000;
/// A batch goes out at least this often while flows wait, and losses are
/// reported at least this often.
const SEND_EVERY: Duration = Duration::from_millis(200);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A stream open this long is working: a relay refusing the probe (mutual
/// TLS) ends it at the first batch, well before.
const ESTABLISHED: Duration = Duration::from_secs(1);

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
        Self::spawn_with_tls(url, ClientTls::default(), node, capacity)
    }

    /// [`Shipper::spawn`], with TLS settings for an `https://` relay.
    pub fn spawn_with_tls(url: String, tls: ClientTls, node: String, capacity: usize) -> Self {
        let queue = Arc::new(Mutex::new(Queue {
            capacity: capacity.max(1),
            ..Queue::default()
        }));
        let wake = Arc::new(Notify::new());
        let target = Target { url, tls };
        let task = tokio::spawn(run(target, node, queue.clone(), wake.clone()));
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

    /// Every loss counted so far, by stage (what the relay is sent).
    pub fn losses(&self) -> BTreeMap<String, u64> {
        lock(&self.queue).losses.clone()
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

/// Whether the shipper could connect to `url` with `tls` as they are now
/// (address and TLS files), without connecting: for a clear error at start
/// instead of a retry loop.
pub fn check_target(url: &str, tls: &ClientTls) -> Result<(), String> {
    let target = Target {
        url: url.to_string(),
        tls: tls.clone(),
    };
    target.endpoint().map(|_| ())
}

/// Where the relay is and how to reach it.
#[derive(Debug)]
struct Target {
    url: String,
    tls: ClientTls,
}

impl Target {
    /// The endpoint, with the TLS files read now.
    fn endpoint(&self) -> Result<Endpoint, String> {
        let endpoint = Endpoint::from_shared(self.url.clone()).map_err(|e| {
            format!(
                "relay address {:?} is not valid: {}",
                self.url,
                describe(&e)
            )
        })?;
        self.tls.apply(endpoint).map_err(|e| describe(&e))
    }

    /// Reads the TLS files again, so renewed ones are used.
    async fn connect(&self) -> Result<IngestClient<Channel>, String> {
        let channel = self.endpoint()?.connect().await.map_err(|e| describe(&e))?;
        Ok(IngestClient::new(channel))
    }

    /// Prints why the relay cannot be reached, unless that was the last
    /// reason printed.
    fn failed(&self, failing: &mut Option<String>, reason: String) {
        if failing.as_ref() != Some(&reason) {
            eprintln!(
                "skymap-probe: cannot stream to the relay at {} (retrying): {reason}",
                self.url
            );
            *failing = Some(reason);
        }
    }
}

async fn run(target: Target, node: String, queue: Arc<Mutex<Queue>>, wake: Arc<Notify>) {
    let mut backoff = BACKOFF_FIRST;
    let mut seq = 0u64;
    // The reason the last attempt failed, printed once while it lasts.
    let mut failing: Option<String> = None;
    loop {
        let client = match target.connect().await {
            Ok(client) => client,
            Err(reason) => {
                target.failed(&mut failing, reason);
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
        let opened = tokio::time::Instant::now();
        {
            let mut q = lock(&queue);
            q.connected = true;
            q.report = true;
        }
        backoff = BACKOFF_FIRST;
        let ended = loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(SEND_EVERY) => {}
                ended = &mut call => break ended,
            }
            if failing.is_some() && opened.elapsed() >= ESTABLISHED {
                eprintln!("skymap-probe: connected to the relay at {}", target.url);
                failing = None;
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
                break (&mut call).await;
            }
        };
        lock(&queue).connected = false;
        call.abort();
        if let Ok(Err(status)) = ended {
            let mut reason = format!("the relay ended the stream: {}", status.message());
            append_sources(&mut reason, std::error::Error::source(&status));
            target.failed(&mut failing, with_hint(reason));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use skymap_proto::test_pki::{Ca, Pem};
    use skymap_proto::v1::StatusRequest;
    use skymap_proto::v1::observer_client::ObserverClient;
    use skymap_relay::server::{self, RelayConfig};
    use skymap_relay::tls::TlsConfig;

    use super::*;

    /// A CA, the relay's certificate for 127.0.0.1 and a probe's client
    /// certificate, as files in `dir`.
    struct Files {
        ca: PathBuf,
        server: (PathBuf, PathBuf),
        client: (PathBuf, PathBuf),
    }

    fn files(dir: &Path) -> Files {
        std::fs::create_dir_all(dir).expect("scratch dir");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let ca = Ca::new("skymap test CA").expect("CA");
        let pair = |name: &str| {
            let Pem { cert, key } = ca.sign(name, &[name]).expect("cert");
            (
                write(&format!("{name}.pem"), &cert),
                write(&format!("{name}-key.pem"), &key),
            )
        };
        Files {
            server: pair("127.0.0.1"),
            client: pair("node-a"),
            ca: write("ca.pem", &ca.cert),
        }
    }

    fn client_tls(files: &Files) -> ClientTls {
        ClientTls {
            ca: Some(files.ca.clone()),
            cert: Some(files.client.0.clone()),
            key: Some(files.client.1.clone()),
            server_name: None,
        }
    }

    #[test]
    fn the_target_is_checked_with_the_files_as_they_are() {
        let dir = std::env::temp_dir().join(format!("skymap-ship-tls-{}", std::process::id()));
        let files = files(&dir);
        let tls = client_tls(&files);
        assert_eq!(check_target("https://relay:4245", &tls), Ok(()));
        assert_eq!(
            check_target("https://relay:4245", &ClientTls::default()),
            Err(
                "https://relay:4245/: https:// needs --tls-ca FILE, the CA certificate that \
                 signed the relay's certificate (system roots are not used)"
                    .to_string()
            )
        );
        let missing = ClientTls {
            key: Some(dir.join("gone.pem")),
            ..tls.clone()
        };
        let error = check_target("https://relay:4245", &missing).expect_err("no key file");
        assert!(
            error.starts_with(&format!("cannot read {}: ", dir.join("gone.pem").display())),
            "{error}"
        );
        let swapped = ClientTls {
            key: Some(files.server.1.clone()),
            ..tls
        };
        assert_eq!(
            check_target("https://relay:4245", &swapped),
            Err(format!(
                "the private key in {} does not match the certificate in {}",
                files.server.1.display(),
                files.client.0.display()
            ))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flows_reach_a_relay_that_requires_a_client_certificate() {
        let dir = std::env::temp_dir().join(format!("skymap-ship-mtls-{}", std::process::id()));
        let files = files(&dir);
        let config = RelayConfig {
            tls: Some(TlsConfig {
                client_ca: Some(files.ca.clone()),
                ..TlsConfig::new(files.server.0.clone(), files.server.1.clone())
            }),
            ..RelayConfig::default()
        };
        let relay = server::start("127.0.0.1:0", config).await.expect("relay");
        let url = format!("https://{}", relay.addr);
        let shipper = Shipper::spawn_with_tls(url.clone(), client_tls(&files), "node-a".into(), 10);
        shipper.send(vec![Flow {
            time_ns: 1_795_672_800_000_000_000,
            node_name: "node-a".to_string(),
            ..Flow::default()
        }]);

        let explorer = ClientTls {
            ca: Some(files.ca.clone()),
            ..ClientTls::default()
        };
        let endpoint = explorer
            .apply(Endpoint::from_shared(url).expect("url"))
            .expect("TLS settings");
        let mut observer = ObserverClient::new(endpoint.connect().await.expect("connect"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let status = observer
                .get_status(StatusRequest {})
                .await
                .expect("status")
                .into_inner();
            if status.flows_total == 1 {
                assert_eq!(status.nodes[0].name, "node-a");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(shipper.status().sent, 1);
        drop(shipper);
        relay.shutdown().await.expect("shutdown");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
