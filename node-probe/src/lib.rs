//! skymap-probe: the eBPF node probe. The kernel programs (`bpf/`, C) report
//! flows, handshakes, payload snippets and drops on a ring buffer; this crate
//! loads them and turns what they report into `skymap.v1` flows for the relay.
//!
//! - [`preflight`]: capabilities and kernel features, checked before loading.
//! - [`loader`]: loading and attaching the programs with aya (also inside
//!   other network namespaces, via [`netns`]), reading events and counters.
//! - [`event`]: decoding the ring-buffer records laid out in `bpf/events.h`;
//!   [`dns`] and [`http`] parse the payload snippets they carry.
//! - [`reasons`]: drop reason names from the running kernel's BTF or tracefs.
//! - [`clock`]: the kernel's timestamps related to Unix time.
//! - [`assemble`]: decoded events to flow records, shaped as the relay counts.
//! - [`ship`]: a bounded queue and the stream to the relay, with reconnect.
//! - [`cpu`]: CPU per pod from cgroups or network namespaces, for saturation.
//! - [`metrics`]: the Prometheus page on `--metrics-listen`.

pub mod assemble;
pub mod clock;
pub mod cpu;
pub mod dns;
pub mod event;
pub mod http;
pub mod loader;
pub mod metrics;
pub mod netns;
pub mod preflight;
pub mod reasons;
pub mod ship;
