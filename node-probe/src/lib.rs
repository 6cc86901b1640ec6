//! skymap-probe: the eBPF node probe. It will stream
//! `skymap_proto::v1::FlowBatch`es to the relay.
//!
//! This first slice is the userspace side that needs no kernel: [`event`]
//! decodes the ring-buffer records laid out in `bpf/events.h`, and [`dns`]
//! and [`http`] parse the payload snippets that payload events carry;
//! [`reasons`] names the kernel's drop reasons from its own BTF or tracefs;
//! [`preflight`] checks capabilities and kernel features before loading;
//! [`assemble`] turns decoded events into `skymap.v1` flow records.

pub mod assemble;
pub mod dns;
pub mod event;
pub mod http;
pub mod loader;
pub mod netns;
pub mod preflight;
pub mod reasons;
pub mod ship;
