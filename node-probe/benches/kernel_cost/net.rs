//! The bench's network: two namespaces joined by a veth pair (removed on
//! drop), a flood of 64-byte UDP packets from one to a socket in the other,
//! and tcpdump capturing them (killed on drop).
//!
//! The sender writes whole IPv4 packets on a raw socket (`IPPROTO_RAW`), so
//! one send can carry any source address and port: the "new flow every
//! packet" shape cycles through more tuples than the probe's flow table
//! holds, and both shapes cost the sender the same.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, connect, send,
    setsockopt, socket, sockopt,
};
use nix::unistd::Pid;
use skymap_node_probe::netns::run_in;

/// Both ends sit in one /16 so that the spoofed sources of the new-flow
/// shape are on-link for the receiver (no reverse-path surprise).
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 1);
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 2);
const PREFIX: u8 = 16;
pub const PORT: u16 = 5001;
/// Ethernet 14 + IPv4 20 + UDP 8 + 22 bytes of payload: `skb->len` is 64 at
/// the TC hooks, the smallest Ethernet frame (without its FCS).
pub const FRAME_BYTES: usize = 64;
const IP_PACKET: usize = FRAME_BYTES - 14;
/// Ports × source addresses the new-flow shape cycles through: four times
/// the probe's 65,536-entry LRU flow table, so every tuple has been evicted
/// before it comes round again.
const PORTS: u32 = 64_000;
const SOURCES: u32 = 4;

/// What the sender sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One tuple: after its first packet the flow table is updated in place.
    LongFlow,
    /// A new tuple every packet: an LRU insert and a new-flow event each.
    NewFlows,
}

impl Shape {
    pub fn label(self) -> &'static str {
        match self {
            Shape::LongFlow => "one long flow",
            Shape::NewFlows => "new flow/packet",
        }
    }
}

/// Two network namespaces and a veth pair, removed on drop.
#[derive(Debug)]
pub struct Net {
    pub client: String,
    pub server: String,
    pub client_if: String,
    pub server_if: String,
}

impl Net {
    /// Names carry the PID, so two benches (or a bench and the tests) can
    /// run side by side. Whatever was made is removed if a step fails.
    pub fn create() -> Result<Self, String> {
        let id = std::process::id();
        let net = Net {
            client: format!("skymap-bench-c{id}"),
            server: format!("skymap-bench-s{id}"),
            // IFNAMSIZ: 15 characters at most.
            client_if: format!("skbc{id}"),
            server_if: format!("skbs{id}"),
        };
        ip(&["netns", "add", &net.client])?;
        ip(&["netns", "add", &net.server])?;
        ip(&[
            "link",
            "add",
            &net.client_if,
            "type",
            "veth",
            "peer",
            "name",
            &net.server_if,
        ])?;
        ip(&["link", "set", &net.client_if, "netns", &net.client])?;
        ip(&["link", "set", &net.server_if, "netns", &net.server])?;
        for (ns, dev, addr) in [
            (&net.client, &net.client_if, CLIENT_IP),
            (&net.server, &net.server_if, SERVER_IP),
        ] {
            let cidr = format!("{addr}/{PREFIX}");
            ip(&["-n", ns, "addr", "add", &cidr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    pub fn path(name: &str) -> PathBuf {
        PathBuf::from("/run/netns").join(name)
    }

    /// The receiving socket, in the server namespace; it stays there.
    pub fn receiver(&self) -> Result<UdpSocket, String> {
        let socket = run_in(&Self::path(&self.server), || {
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT))
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("binding the receiver: {e}"))?;
        // Room for bursts while the receiving thread waits for a CPU:
        // root may exceed net.core.rmem_max.
        let _ = setsockopt(&socket, sockopt::RcvBufForce, &(16 << 20));
        socket.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(socket)
    }

    /// A raw IPv4 socket in the client namespace, connected to the server.
    pub fn sender(&self) -> Result<OwnedFd, String> {
        let fd = run_in(&Self::path(&self.client), || {
            socket(
                AddressFamily::Inet,
                SockType::Raw,
                SockFlag::empty(),
                SockProtocol::Raw,
            )
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("raw socket: {e}"))?;
        connect(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(SERVER_IP, 0)),
        )
        .map_err(|e| format!("connecting the raw socket: {e}"))?;
        Ok(fd)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and so the pair.
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The IPv4 packet the sender starts from. The kernel fills in the total
/// length and the header checksum of a raw packet; the UDP checksum is
/// left 0, which IPv4 allows.
fn packet() -> [u8; IP_PACKET] {
    let mut p = [0u8; IP_PACKET];
    p[0] = 0x45;
    // A nonzero IP id: the kernel would otherwise pick one per packet.
    p[4..6].copy_from_slice(&1u16.to_be_bytes());
    p[6] = 0x40; // don't fragment
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&CLIENT_IP.octets());
    p[16..20].copy_from_slice(&SERVER_IP.octets());
    p[20..22].copy_from_slice(&40_000u16.to_be_bytes());
    p[22..24].copy_from_slice(&PORT.to_be_bytes());
    p[24..26].copy_from_slice(&((IP_PACKET - 20) as u16).to_be_bytes());
    p
}

/// Sends as fast as the socket takes them until `stop`, publishing the
/// count in `sent` as it goes. Returns send errors (ENOBUFS under load).
pub fn flood(fd: &OwnedFd, shape: Shape, stop: &AtomicBool, sent: &AtomicU64) -> u64 {
    let mut p = packet();
    let mut errors = 0u64;
    let mut count = 0u64;
    let mut tuple = 0u32;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..64 {
            if shape == Shape::NewFlows {
                tuple = (tuple + 1) % (PORTS * SOURCES);
                let port = 1024 + (tuple % PORTS) as u16;
                let source = 16 + (tuple / PORTS) as u8;
                p[14] = source;
                p[20..22].copy_from_slice(&port.to_be_bytes());
            }
            match send(fd.as_raw_fd(), &p, MsgFlags::empty()) {
                Ok(_) => count += 1,
                Err(Errno::EINTR) => {}
                Err(_) => errors += 1,
            }
        }
        sent.store(count, Ordering::Relaxed);
    }
    sent.store(count, Ordering::Relaxed);
    errors
}

/// Reads the socket until `stop`, counting datagrams in `received`.
///
/// It empties the socket, then sleeps a millisecond, rather than blocking
/// in recv: a blocked reader is woken by the sender (an IPI) as often as it
/// finds the socket empty, which depends on how fast the sender is, so
/// anything slowing the sender down would also seem to make receiving
/// dearer. This way receiving costs the same per packet in every
/// configuration (the socket buffer holds far more than a millisecond).
pub fn receive(socket: &UdpSocket, stop: &AtomicBool, received: &AtomicU64) {
    let mut buffer = [0u8; 2048];
    let mut count = 0u64;
    while !stop.load(Ordering::Relaxed) {
        while socket.recv(&mut buffer).is_ok() {
            count += 1;
        }
        received.store(count, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// tcpdump writing everything on an interface to /dev/null, as a process
/// of its own; stopped (and its report read) by [`Tcpdump::stop`], killed
/// on drop.
#[derive(Debug)]
pub struct Tcpdump {
    child: Child,
    lines: mpsc::Receiver<String>,
}

/// What tcpdump said it did, from its closing report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Captured {
    pub captured: u64,
    pub dropped: u64,
}

impl Tcpdump {
    pub fn installed() -> bool {
        Command::new("tcpdump")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts it inside `netns` and waits until it is capturing.
    pub fn start(netns: &str, interface: &str) -> Result<Self, String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, "tcpdump", "-n", "-i", interface])
            .args(["-w", "/dev/null"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting tcpdump: {e}"))?;
        let (tx, lines) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let tcpdump = Tcpdump { child, lines };
        loop {
            match tcpdump.lines.recv_timeout(Duration::from_secs(5)) {
                Ok(line) if line.contains("listening on") => return Ok(tcpdump),
                Ok(_) => {}
                Err(_) => return Err("tcpdump did not start capturing".to_string()),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then its report: "N packets captured", "N packets dropped
    /// by kernel".
    pub fn stop(mut self) -> Captured {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
        let mut captured = Captured::default();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
            let number = || {
                line.split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            if line.ends_with("packets captured") {
                captured.captured = number();
            } else if line.ends_with("dropped by kernel") {
                captured.dropped = number();
            }
        }
        captured
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        // Already reaped by stop(); otherwise an error path: make sure.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
