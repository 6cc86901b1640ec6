//! The explorer's link to a relay: one background task that connects, opens
//! the graph and flow streams, polls the status, and on any failure closes
//! everything and retries with [`Backoff`]. It never returns an error and
//! never clears anything: all it has to say arrives as an [`Event`], and the
//! next full snapshot replaces the last picture.

pub mod backoff;

use std::time::Duration;

use skymap_proto::v1::observer_client::ObserverClient;
use skymap_proto::v1::{
    Flow, GetFlowsRequest, GetFlowsResponse, GraphUpdate, StatusRequest, StatusResponse,
    WatchGraphRequest, Zoom, get_flows_response,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::conn::{self, append_sources};
use skymap_proto::tls::describe;

pub use backoff::Backoff;

/// Where the link stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    Connecting,
    Connected {
        since: Instant,
    },
    Reconnecting {
        /// 1 for the first retry after a failure; back to 1 after a healthy
        /// connection.
        attempt: u32,
        retry_at: Instant,
        last_error: String,
    },
}

/// Everything the link reports, in the order it happened.
// Boxing would cost an allocation per flow to save channel slots, which are
// few; each event is moved once, into the UI's state.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Event {
    State(ConnState),
    Graph(GraphUpdate),
    Flow(Flow),
    /// Flows missed, by the relay (this client read too slowly) or here (the
    /// UI did).
    Lost(u64),
    Status(StatusResponse),
}

/// What to watch.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub zoom: Zoom,
    pub namespaces: Vec<String>,
    /// Follow flows as well as the graph.
    pub flows: bool,
    /// How many recent flows to replay when the flow stream opens.
    pub last: u64,
}

impl Default for Subscription {
    fn default() -> Self {
        Self {
            zoom: Zoom::Workload,
            namespaces: Vec::new(),
            flows: true,
            last: 0,
        }
    }
}

/// Tuning; the defaults suit the explorer, tests shrink the delays.
#[derive(Debug, Clone)]
pub struct Options {
    pub backoff: Backoff,
    /// How often to ask for the relay's status.
    pub status_every: Duration,
    /// Room in the event channel.
    pub capacity: usize,
    pub connect_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            status_every: Duration::from_secs(2),
            capacity: 1024,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Largest message accepted from the relay (a full graph of a big cluster is
/// several MB).
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Controls the connection task; dropping it stops the task.
#[derive(Debug)]
pub struct Handle {
    subscription: watch::Sender<Subscription>,
    task: JoinHandle<()>,
}

impl Handle {
    /// Reopens the streams with a new zoom or namespace selection; the
    /// relay answers with a fresh full snapshot.
    pub fn resubscribe(&self, sub: Subscription) {
        self.subscription.send_replace(sub);
    }

    /// Stops the task and closes the streams.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Spawns the connection task on the current tokio runtime (which must
/// exist) to `url`, an `http://HOST:PORT` address; events arrive on the
/// returned receiver.
pub fn spawn(url: String, sub: Subscription) -> (Handle, mpsc::Receiver<Event>) {
    spawn_with(url, sub, Options::default())
}

/// [`spawn`] with explicit tuning.
pub fn spawn_with(
    url: String,
    sub: Subscription,
    options: Options,
) -> (Handle, mpsc::Receiver<Event>) {
    let (events, receiver) = mpsc::channel(options.capacity.max(1));
    let (subscription, subs) = watch::channel(sub);
    let task = tokio::spawn(async move {
        // Stopped: the UI or the handle is gone, nobody to tell.
        let _ = run(url, options, subs, Sink { events, lost: 0 }).await;
    });
    (Handle { subscription, task }, receiver)
}

/// The UI dropped its receiver or the handle: the task ends.
#[derive(Debug)]
struct Stopped;

/// The event channel, with the rule for each kind of event when it is full.
struct Sink {
    events: mpsc::Sender<Event>,
    /// Flows dropped here (or reported lost by the relay) not yet reported.
    lost: u64,
}

impl Sink {
    /// Waits for room: states and graph updates are never dropped (the relay
    /// already degrades a slow watcher to snapshots).
    async fn send(&mut self, event: Event) -> Result<(), Stopped> {
        self.events.send(event).await.map_err(|_| Stopped)
    }

    /// Drops the flow and counts it rather than holding up the streams.
    fn flow(&mut self, flow: Flow) -> Result<(), Stopped> {
        self.flush_lost()?;
        if self.lost > 0 {
            // Still full: a flow now would overtake the loss report.
            self.lost += 1;
            return Ok(());
        }
        match self.events.try_send(Event::Flow(flow)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lost += 1;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Stopped),
        }
    }

    fn lost(&mut self, count: u64) -> Result<(), Stopped> {
        self.lost = self.lost.saturating_add(count);
        self.flush_lost()
    }

    fn flush_lost(&mut self) -> Result<(), Stopped> {
        if self.lost == 0 {
            return Ok(());
        }
        match self.events.try_send(Event::Lost(self.lost)) {
            Ok(()) => {
                self.lost = 0;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Stopped),
        }
    }

    /// Status is sent again soon, so a full channel just skips this one.
    fn status(&mut self, status: StatusResponse) -> Result<(), Stopped> {
        match self.events.try_send(Event::Status(status)) {
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Stopped),
            _ => Ok(()),
        }
    }
}

/// How a connection ended.
struct Failure {
    error: String,
    /// It lived long enough or delivered data: the backoff starts over.
    healthy: bool,
}

async fn run(
    url: String,
    options: Options,
    mut subs: watch::Receiver<Subscription>,
    mut sink: Sink,
) -> Result<(), Stopped> {
    let mut attempt = 0u32;
    loop {
        sink.send(Event::State(ConnState::Connecting)).await?;
        let failure = match connect(&url, &options).await {
            Ok(channel) => session(channel, &options, &mut subs, &mut sink).await?,
            Err(error) => Failure {
                error,
                healthy: false,
            },
        };
        attempt = if failure.healthy {
            1
        } else {
            attempt.saturating_add(1)
        };
        let retry_at = Instant::now() + options.backoff.delay(attempt);
        sink.send(Event::State(ConnState::Reconnecting {
            attempt,
            retry_at,
            last_error: failure.error,
        }))
        .await?;
        let sleep = tokio::time::sleep_until(retry_at);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                // A new subscription just waits for the next connection.
                changed = subs.changed() => changed.map_err(|_| Stopped)?,
            }
        }
    }
}

async fn connect(url: &str, options: &Options) -> Result<Channel, String> {
    // With the process's TLS settings, whose files are read again at every
    // attempt.
    let endpoint = conn::endpoint(url)
        .map_err(|e| e.to_string())?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true);
    endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach the relay at {url}: {}", describe(&e)))
}

/// One connection: streams open until one fails; a new subscription reopens
/// them on the same channel.
async fn session(
    channel: Channel,
    options: &Options,
    subs: &mut watch::Receiver<Subscription>,
    sink: &mut Sink,
) -> Result<Failure, Stopped> {
    let since = Instant::now();
    let mut received = false;
    let fail = |error: String, received: bool| Failure {
        error,
        healthy: received || since.elapsed() > options.backoff.reset_after,
    };
    let mut client = ObserverClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut announced = false;
    loop {
        let sub = subs.borrow_and_update().clone();
        let request = WatchGraphRequest {
            zoom: sub.zoom as i32,
            namespaces: sub.namespaces.clone(),
        };
        let mut graph = match client.watch_graph(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Ok(fail(rpc_error("WatchGraph", &status), received)),
        };
        let mut flows = None;
        if sub.flows {
            let request = GetFlowsRequest {
                number: sub.last,
                follow: true,
                ..Default::default()
            };
            match client.get_flows(request).await {
                Ok(response) => flows = Some(response.into_inner()),
                Err(status) => return Ok(fail(rpc_error("GetFlows", &status), received)),
            }
        }
        if !announced {
            sink.send(Event::State(ConnState::Connected { since }))
                .await?;
            announced = true;
        }
        let mut status_tick = tokio::time::interval(options.status_every);
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = subs.changed() => {
                    changed.map_err(|_| Stopped)?;
                    break;
                }
                message = graph.message() => match message {
                    Ok(Some(update)) => {
                        received = true;
                        sink.send(Event::Graph(update)).await?;
                    }
                    Ok(None) => {
                        return Ok(fail("the relay closed the graph stream".to_string(), received));
                    }
                    Err(status) => return Ok(fail(rpc_error("WatchGraph", &status), received)),
                },
                message = next_flow(&mut flows) => match message {
                    Ok(Some(response)) => {
                        received = true;
                        match response.response {
                            Some(get_flows_response::Response::Flow(flow)) => sink.flow(flow)?,
                            Some(get_flows_response::Response::Lost(lost)) => sink.lost(lost.count)?,
                            None => {}
                        }
                    }
                    Ok(None) => {
                        return Ok(fail("the relay closed the flow stream".to_string(), received));
                    }
                    Err(status) => return Ok(fail(rpc_error("GetFlows", &status), received)),
                },
                _ = status_tick.tick() => {
                    sink.flush_lost()?;
                    let call = client.get_status(StatusRequest {});
                    match tokio::time::timeout(options.connect_timeout, call).await {
                        Ok(Ok(status)) => sink.status(status.into_inner())?,
                        Ok(Err(status)) => {
                            return Ok(fail(rpc_error("GetStatus", &status), received));
                        }
                        Err(_) => {
                            let error = format!(
                                "GetStatus: no answer within {:?}",
                                options.connect_timeout
                            );
                            return Ok(fail(error, received));
                        }
                    }
                }
            }
        }
    }
}

/// The next flow message, or never when flows are not followed.
async fn next_flow(
    flows: &mut Option<Streaming<GetFlowsResponse>>,
) -> Result<Option<GetFlowsResponse>, tonic::Status> {
    match flows {
        Some(stream) => stream.message().await,
        None => std::future::pending().await,
    }
}

fn rpc_error(call: &str, status: &tonic::Status) -> String {
    let what = if status.message().is_empty() {
        status.code().description()
    } else {
        status.message()
    };
    let mut text = format!("{call}: {what}");
    append_sources(&mut text, std::error::Error::source(status));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(port: u32) -> Flow {
        Flow {
            packets: u64::from(port),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_full_channel_drops_flows_and_reports_them_as_lost_in_order() {
        let (events, mut receiver) = mpsc::channel(2);
        let mut sink = Sink { events, lost: 0 };
        for port in 1..=5 {
            assert!(sink.flow(flow(port)).is_ok());
        }
        assert_eq!(sink.lost, 3);
        let first: Vec<_> = [receiver.recv().await, receiver.recv().await]
            .into_iter()
            .map(|e| match e {
                Some(Event::Flow(f)) => f.packets,
                other => panic!("expected a flow, got {other:?}"),
            })
            .collect();
        assert_eq!(first, [1, 2]);
        // Room again: the loss is reported before the next flow.
        assert!(sink.flow(flow(6)).is_ok());
        assert!(matches!(receiver.recv().await, Some(Event::Lost(3))));
        assert!(matches!(receiver.recv().await, Some(Event::Flow(f)) if f.packets == 6));
        assert_eq!(sink.lost, 0);
    }

    #[tokio::test]
    async fn a_closed_channel_stops_the_task() {
        let (events, receiver) = mpsc::channel(2);
        drop(receiver);
        let mut sink = Sink { events, lost: 0 };
        assert!(sink.flow(flow(1)).is_err());
        assert!(sink.send(Event::Lost(1)).await.is_err());
    }

    #[test]
    fn error_text_names_the_call_and_the_reason() {
        let status = tonic::Status::unavailable("relay shutting down");
        assert_eq!(
            rpc_error("WatchGraph", &status),
            "WatchGraph: relay shutting down"
        );
        let status = tonic::Status::new(tonic::Code::Unavailable, "");
        assert_eq!(
            rpc_error("GetFlows", &status),
            "GetFlows: The service is currently unavailable"
        );
    }
}
