//! Loading and attaching the kernel programs with aya, and reading what they
//! report: the ring buffer of events and the per-CPU loss counters.
//!
//! The object is the committed `bpf/probe.bpf.o`, compiled in, so a built
//! probe needs no clang. Everything attached is detached when the [`Probe`]
//! is dropped (aya's links; on kernels 6.6+ TC programs attach through TCX
//! links, which leave no filters or qdiscs behind).

use std::collections::BTreeMap;
use std::path::Path;

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::tc::{self, SchedClassifierLinkId, TcAttachType};
use aya::programs::{BtfTracePoint, ProgramError, SchedClassifier};
use aya::util::KernelVersion;
use aya::{Btf, Ebpf, EbpfLoader};
use tokio::io::unix::AsyncFd;

use crate::event::{self, Event};
use crate::netns;

/// The compiled kernel programs (see `bpf/build.sh`).
pub static OBJECT: &[u8] = include_bytes!("../bpf/probe.bpf.o");

/// Indexes of the `config` array (probe.bpf.c).
const CFG_FLUSH_NS: u32 = 0;
const CFG_PAYLOAD: u32 = 1;
const CFG_PAUSED: u32 = 2;
const CFG_WAKE_BYTES: u32 = 3;
/// The kernel wakes the reader once this share of the ring is waiting; the
/// reader looks by itself every [`POLL_EVERY`] for what is below it.
const WAKE_FRACTION: u32 = 8;
/// How often the reader looks at the ring without being woken.
pub const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
/// Indexes of the `counters` per-CPU array (events.h `enum counter`).
pub const COUNTER_NAMES: [&str; 6] = [
    "ringbuf-full",
    "packets",
    "flow-table-full",
    "non-ip-drops",
    "submitted",
    "discarded",
];

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub ring_bytes: u32,
    /// How often long flows report their counters.
    pub flush_ns: u64,
    /// Copy DNS and HTTP payload snippets.
    pub payloads: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ring_bytes: 1 << 22,
            flush_ns: 1_000_000_000,
            payloads: true,
        }
    }
}

/// What went wrong, with the step it went wrong at.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the eBPF object: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("{what}: {source}")]
    Program {
        what: String,
        #[source]
        source: ProgramError,
    },
    #[error("map {name}: {message}")]
    Map { name: &'static str, message: String },
    #[error("reading the kernel's BTF: {0}")]
    Btf(String),
    #[error("interface {interface}: {message}")]
    Interface { interface: String, message: String },
    #[error("{0}")]
    Netns(#[from] netns::NetnsError),
    #[error("ring buffer: {0}")]
    Ring(#[from] std::io::Error),
}

fn program_error(what: impl Into<String>) -> impl FnOnce(ProgramError) -> LoadError {
    let what = what.into();
    move |source| LoadError::Program { what, source }
}

/// Loaded programs, attached where asked; detached on drop.
pub struct Probe {
    ebpf: Ebpf,
    ring: Option<AsyncFd<RingBuf<MapData>>>,
    /// Interface (`NETNS:IFACE` in another namespace) → its links.
    attached: BTreeMap<String, Links>,
}

/// One interface's two TC links.
#[derive(Debug)]
struct Links {
    ingress: SchedClassifierLinkId,
    egress: SchedClassifierLinkId,
    l3: bool,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("attached", &self.attached.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Registers the ring buffer's descriptor with tokio's reactor.
#[allow(unsafe_code)]
fn watch(ring: RingBuf<MapData>) -> Result<AsyncFd<RingBuf<MapData>>, LoadError> {
    // SAFETY: the RingBuf owns its map's file descriptor (MapData holds an
    // OwnedFd); it stays open and the same for as long as the RingBuf lives,
    // which is as long as the AsyncFd that owns it.
    unsafe { AsyncFd::register(ring) }.map_err(|e| LoadError::Ring(e.into()))
}

impl Probe {
    /// Loads every program, configures them, and attaches the drop tracepoint.
    /// TC programs are loaded but attached per interface with [`Probe::attach`].
    /// Call it inside a tokio runtime (the ring buffer joins its reactor);
    /// check [`crate::preflight`] first for a clear message about privileges.
    pub fn load(options: &LoadOptions) -> Result<Self, LoadError> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("events", options.ring_bytes)
            .load(OBJECT)?;

        let mut config: Array<_, u64> = Array::try_from(
            ebpf.map_mut("config")
                .ok_or_else(|| missing_map("config"))?,
        )
        .map_err(|e| map_error("config", e))?;
        config
            .set(CFG_FLUSH_NS, options.flush_ns, 0)
            .map_err(|e| map_error("config", e))?;
        config
            .set(CFG_PAYLOAD, u64::from(options.payloads), 0)
            .map_err(|e| map_error("config", e))?;
        config
            .set(
                CFG_WAKE_BYTES,
                u64::from(options.ring_bytes / WAKE_FRACTION),
                0,
            )
            .map_err(|e| map_error("config", e))?;

        for name in ["tc_ingress", "tc_egress", "tc_ingress_l3", "tc_egress_l3"] {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| missing_program(name))?
                .try_into()
                .map_err(program_error(name))?;
            program
                .load()
                .map_err(program_error(format!("loading {name}")))?;
        }

        let btf = Btf::from_sys_fs().map_err(|e| LoadError::Btf(e.to_string()))?;
        let drops: &mut BtfTracePoint = ebpf
            .program_mut("kfree_skb")
            .ok_or_else(|| missing_program("kfree_skb"))?
            .try_into()
            .map_err(program_error("kfree_skb"))?;
        drops
            .load("kfree_skb", &btf)
            .map_err(program_error("loading kfree_skb"))?;
        drops
            .attach()
            .map_err(program_error("attaching kfree_skb"))?;

        let ring = RingBuf::try_from(
            ebpf.take_map("events")
                .ok_or_else(|| missing_map("events"))?,
        )
        .map_err(|e| map_error("events", e))?;
        Ok(Self {
            ebpf,
            ring: Some(watch(ring)?),
            attached: BTreeMap::new(),
        })
    }

    /// Attaches the TC programs to `interface` in this process's network
    /// namespace, both directions. Devices without an Ethernet header (sysfs
    /// type 65534: tun, wireguard) get the `_l3` programs.
    pub fn attach(&mut self, interface: &str) -> Result<(), LoadError> {
        let kind =
            std::fs::read_to_string(format!("/sys/class/net/{interface}/type")).map_err(|e| {
                LoadError::Interface {
                    interface: interface.to_string(),
                    message: e.to_string(),
                }
            })?;
        self.attach_with(interface, kind.trim() == "65534")
    }

    /// Attaches to `interface` inside the network namespace at `netns`.
    /// sysfs shows the probe's own namespace, not that one, so the device is
    /// taken to carry Ethernet headers (veth pairs, which is what pods use).
    pub fn attach_in(&mut self, netns: &Path, interface: &str) -> Result<(), LoadError> {
        let key = format!("{}:{interface}", netns.display());
        if self.attached.contains_key(&key) {
            return Ok(());
        }
        let links = netns::run_in(netns, || self.links(interface, false))??;
        self.attached.insert(key, links);
        Ok(())
    }

    fn attach_with(&mut self, interface: &str, l3: bool) -> Result<(), LoadError> {
        if self.attached.contains_key(interface) {
            return Ok(());
        }
        let links = self.links(interface, l3)?;
        self.attached.insert(interface.to_string(), links);
        Ok(())
    }

    /// Attaches both programs to `interface` in the calling thread's
    /// namespace.
    fn links(&mut self, interface: &str, l3: bool) -> Result<Links, LoadError> {
        // Kernels before 6.6 attach through the clsact qdisc (it may exist);
        // from 6.6 aya uses TCX links, and a qdisc added there would stay.
        if !KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)) {
            let _ = tc::qdisc_add_clsact(interface);
        }
        let suffix = if l3 { "_l3" } else { "" };
        let mut link = |name: String, direction: TcAttachType| {
            let program: &mut SchedClassifier = self
                .ebpf
                .program_mut(&name)
                .ok_or_else(|| missing_program("tc"))?
                .try_into()
                .map_err(program_error(name.clone()))?;
            program
                .attach(interface, direction)
                .map_err(program_error(format!("attaching {name} to {interface}")))
        };
        let ingress = link(format!("tc_ingress{suffix}"), TcAttachType::Ingress)?;
        let egress = link(format!("tc_egress{suffix}"), TcAttachType::Egress)?;
        Ok(Links {
            ingress,
            egress,
            l3,
        })
    }

    /// Detaches from `interface` (`NETNS:IFACE` for one attached with
    /// [`Probe::attach_in`]); it may already be gone.
    pub fn detach(&mut self, interface: &str) {
        let Some(Links {
            ingress,
            egress,
            l3,
        }) = self.attached.remove(interface)
        else {
            return;
        };
        let suffix = if l3 { "_l3" } else { "" };
        for (name, id) in [
            (format!("tc_ingress{suffix}"), ingress),
            (format!("tc_egress{suffix}"), egress),
        ] {
            if let Some(Ok(program)) = self
                .ebpf
                .program_mut(&name)
                .map(<&mut SchedClassifier>::try_from)
            {
                let _ = program.detach(id);
            }
        }
    }

    /// Pauses (or resumes) every program: while paused they return at once
    /// and produce nothing, so the counters and the ring buffer can be
    /// compared exactly.
    pub fn set_paused(&mut self, paused: bool) -> Result<(), LoadError> {
        let mut config: Array<_, u64> = Array::try_from(
            self.ebpf
                .map_mut("config")
                .ok_or_else(|| missing_map("config"))?,
        )
        .map_err(|e| map_error("config", e))?;
        config
            .set(CFG_PAUSED, u64::from(paused), 0)
            .map_err(|e| map_error("config", e))
    }

    /// Reads whatever the ring buffer holds now, without waiting.
    pub fn drain(&mut self) -> Batch {
        self.ring
            .as_mut()
            .map_or_else(Batch::default, |ring| decode_all(ring.get_mut()))
    }

    /// Waits for events, at most [`POLL_EVERY`] (the kernel wakes the reader
    /// only once a backlog builds up), and decodes what is there: decoded
    /// events, and how many records did not decode (with the first error).
    /// The batch may be empty.
    pub async fn read(&mut self) -> Result<Batch, LoadError> {
        let ring = self.ring.as_mut().ok_or_else(|| missing_map("events"))?;
        match tokio::time::timeout(POLL_EVERY, ring.readable_mut()).await {
            Ok(guard) => {
                let mut guard = guard?;
                let batch = decode_all(guard.get_inner_mut());
                guard.clear_ready();
                Ok(batch)
            }
            Err(_) => Ok(decode_all(ring.get_mut())),
        }
    }

    /// The kernel's counters summed over CPUs, by name ([`COUNTER_NAMES`]).
    pub fn counters(&self) -> Result<Vec<(&'static str, u64)>, LoadError> {
        let map = self
            .ebpf
            .map("counters")
            .ok_or_else(|| missing_map("counters"))?;
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|e| map_error("counters", e))?;
        COUNTER_NAMES
            .iter()
            .enumerate()
            .map(|(index, &name)| {
                let values = counters
                    .get(&(index as u32), 0)
                    .map_err(|e| map_error("counters", e))?;
                Ok((name, values.iter().sum()))
            })
            .collect()
    }
}

/// What one read of the ring buffer gave.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Event>,
    pub undecodable: u64,
    pub first_error: Option<String>,
}

/// Every record the ring holds now, decoded.
fn decode_all(ring: &mut RingBuf<MapData>) -> Batch {
    let mut batch = Batch::default();
    while let Some(record) = ring.next() {
        match event::decode(&record) {
            Ok(event) => batch.events.push(event),
            Err(error) => {
                batch.undecodable += 1;
                batch.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    batch
}

fn missing_map(name: &'static str) -> LoadError {
    LoadError::Map {
        name,
        message: "not in the object".to_string(),
    }
}

fn missing_program(name: &str) -> LoadError {
    LoadError::Program {
        what: name.to_string(),
        source: ProgramError::UnexpectedProgramType,
    }
}

fn map_error(name: &'static str, error: aya::maps::MapError) -> LoadError {
    LoadError::Map {
        name,
        message: error.to_string(),
    }
}
