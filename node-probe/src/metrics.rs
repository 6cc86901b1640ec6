//! `skymap-probe`'s Prometheus page on `--metrics-listen`, from counters the
//! probe keeps anyway. The main loop publishes a [`ProbeMetrics`] on a watch
//! channel (events as each ring-buffer batch is read, the rest every
//! housekeeping tick, 2 s), and each scrape renders the latest one, so the
//! HTTP side never touches the reader.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `skymap_probe_events_total` | counter | |
//! | `skymap_probe_flows_sent_total` | counter | |
//! | `skymap_lost_events_total` | counter | `stage` |
//! | `skymap_probe_relay_connected` | gauge | |
//! | `skymap_probe_interfaces_attached` | gauge | |

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use skymap_proto::metrics::{self, Exposition, Kind, MetricsError, MetricsSource};
use tokio::sync::watch;

/// The probe's figures at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeMetrics {
    /// Records read from the kernel's ring buffer, decodable or not.
    pub events: u64,
    /// Flows the relay's stream took.
    pub flows_sent: u64,
    /// Losses since the start, by stage (kernel-*, probe-*).
    pub losses: BTreeMap<String, u64>,
    pub relay_connected: bool,
    pub interfaces_attached: u64,
}

impl ProbeMetrics {
    /// The page, in the text exposition format.
    pub fn render(&self) -> String {
        let mut page = Exposition::new();
        let events = "skymap_probe_events_total";
        page.family(
            events,
            Kind::Counter,
            "Records read from the kernel's ring buffer.",
        );
        page.sample(events, &[], self.events);

        let sent = "skymap_probe_flows_sent_total";
        page.family(sent, Kind::Counter, "Flow records sent to the relay.");
        page.sample(sent, &[], self.flows_sent);

        let lost = "skymap_lost_events_total";
        page.family(
            lost,
            Kind::Counter,
            "Events lost on this node, by stage (kernel-*, probe-*).",
        );
        for (stage, count) in &self.losses {
            page.sample(lost, &[("stage", stage.as_str())], *count);
        }

        let connected = "skymap_probe_relay_connected";
        page.family(
            connected,
            Kind::Gauge,
            "1 while the stream to the relay is up.",
        );
        page.sample(connected, &[], self.relay_connected);

        let attached = "skymap_probe_interfaces_attached";
        page.family(
            attached,
            Kind::Gauge,
            "Interfaces the probe's programs are attached to.",
        );
        page.sample(attached, &[], self.interfaces_attached);
        page.finish()
    }
}

/// Renders the latest figures published on the channel.
#[derive(Debug)]
struct Published(watch::Receiver<ProbeMetrics>);

impl MetricsSource for Published {
    async fn render(&self) -> Result<String, String> {
        Ok(self.0.borrow().render())
    }
}

/// Binds `listen` and serves what `figures` holds for as long as the
/// process runs; returns the bound address.
pub async fn start(
    listen: &str,
    figures: watch::Receiver<ProbeMetrics>,
) -> Result<SocketAddr, MetricsError> {
    let (listener, addr) = metrics::bind(listen).await?;
    tokio::spawn(async move {
        let source = Arc::new(Published(figures));
        if let Err(e) = metrics::serve(listener, source, std::future::pending()).await {
            eprintln!("skymap-probe: metrics server on {addr}: {e}");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skymap_proto::metrics::Sample;

    #[test]
    fn renders_every_counter_and_gauge() {
        let figures = ProbeMetrics {
            events: 1234,
            flows_sent: 1000,
            losses: BTreeMap::from([
                ("kernel-ringbuf".to_string(), 7),
                ("probe-send-buffer".to_string(), 3),
            ]),
            relay_connected: true,
            interfaces_attached: 4,
        };
        let page = figures.render();
        let samples = metrics::parse(&page).expect("valid page");
        let sample = |name: &str, stage: Option<&str>, value: f64| Sample {
            name: name.to_string(),
            labels: stage
                .map(|stage| ("stage".to_string(), stage.to_string()))
                .into_iter()
                .collect(),
            value,
        };
        let lost = "skymap_lost_events_total";
        assert_eq!(
            samples,
            vec![
                sample("skymap_probe_events_total", None, 1234.0),
                sample("skymap_probe_flows_sent_total", None, 1000.0),
                sample(lost, Some("kernel-ringbuf"), 7.0),
                sample(lost, Some("probe-send-buffer"), 3.0),
                sample("skymap_probe_relay_connected", None, 1.0),
                sample("skymap_probe_interfaces_attached", None, 4.0),
            ]
        );
        for family in [
            "skymap_probe_events_total counter",
            "skymap_probe_flows_sent_total counter",
            "skymap_lost_events_total counter",
            "skymap_probe_relay_connected gauge",
            "skymap_probe_interfaces_attached gauge",
        ] {
            assert!(page.contains(&format!("# TYPE {family}\n")), "{family}");
        }
    }

    #[tokio::test]
    async fn scrapes_see_the_latest_published_figures() {
        let (publish, figures) = watch::channel(ProbeMetrics::default());
        let addr = start("127.0.0.1:0", figures).await.expect("serves");
        let scrape = || async {
            let (status, page) = metrics::get(addr, "/metrics").await.expect("scrape");
            assert_eq!(status, 200);
            page
        };
        assert!(scrape().await.contains("\nskymap_probe_events_total 0\n"));
        publish.send_modify(|m| m.events += 42);
        assert!(scrape().await.contains("\nskymap_probe_events_total 42\n"));
    }
}
