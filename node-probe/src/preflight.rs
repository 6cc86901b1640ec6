//! What the probe checks before it loads anything: the capabilities it needs
//! and the kernel features its programs use. Everything missing is reported
//! at once, in one message that says how to get it.
//!
//! - Capabilities: CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN, which implies
//!   both on kernels before 5.8) to load programs and maps, and CAP_NET_ADMIN
//!   to attach TC programs. Root has them all.
//! - Kernel: BTF (`/sys/kernel/btf/vmlinux`, for CO-RE and `tp_btf`), and
//!   5.17 or newer, where `kfree_skb` carries the drop reason (ring buffers
//!   need 5.8, BTF tracepoints 5.5).

use std::fmt;
use std::path::Path;

/// A Linux capability, by its number in `linux/capability.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    NetAdmin = 12,
    SysAdmin = 21,
    Perfmon = 38,
    Bpf = 39,
}

/// The capabilities the probe asks for: what a container must be granted
/// (`securityContext.capabilities.add`, by [`Cap::kubernetes_name`]).
pub const REQUIRED: [Cap; 3] = [Cap::Bpf, Cap::Perfmon, Cap::NetAdmin];

impl Cap {
    /// The name Kubernetes uses, without `CAP_` (`NET_ADMIN`).
    pub fn kubernetes_name(self) -> &'static str {
        let name = self.name();
        name.strip_prefix("CAP_").unwrap_or(name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Cap::NetAdmin => "CAP_NET_ADMIN",
            Cap::SysAdmin => "CAP_SYS_ADMIN",
            Cap::Perfmon => "CAP_PERFMON",
            Cap::Bpf => "CAP_BPF",
        }
    }
}

/// The effective capability set of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities(u64);

impl Capabilities {
    /// From the `CapEff:` line of `/proc/PID/status`.
    pub fn from_status(status: &str) -> Option<Self> {
        let hex = status
            .lines()
            .find_map(|line| line.strip_prefix("CapEff:"))?
            .trim();
        u64::from_str_radix(hex, 16).ok().map(Self)
    }

    /// This process's.
    pub fn current() -> Option<Self> {
        Self::from_status(&std::fs::read_to_string("/proc/self/status").ok()?)
    }

    pub fn has(self, cap: Cap) -> bool {
        self.0 & (1u64 << cap as u32) != 0
    }

    /// The capabilities missing for the probe, empty when it has enough.
    pub fn missing(self) -> Vec<Cap> {
        let mut missing = Vec::new();
        let admin = self.has(Cap::SysAdmin);
        for cap in [Cap::Bpf, Cap::Perfmon] {
            if !self.has(cap) && !admin {
                missing.push(cap);
            }
        }
        if !self.has(Cap::NetAdmin) {
            missing.push(Cap::NetAdmin);
        }
        missing
    }
}

/// A kernel release as `uname -r` prints it, reduced to (major, minor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion(pub u32, pub u32);

impl KernelVersion {
    /// `6.18.0-1-amd64` → 6.18.
    pub fn parse(release: &str) -> Option<Self> {
        let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Self(major, minor))
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// The oldest kernel whose kfree_skb tracepoint passes the drop reason.
pub const MIN_KERNEL: KernelVersion = KernelVersion(5, 17);

/// What was found about this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub capabilities: Option<Capabilities>,
    pub kernel_release: Option<String>,
    pub btf: bool,
}

impl Facts {
    pub fn gather() -> Self {
        Self {
            capabilities: Capabilities::current(),
            kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease").ok(),
            btf: Path::new(crate::reasons::VMLINUX_BTF).exists(),
        }
    }
}

/// Everything in the way, for one message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("skymap-probe cannot run here: {}", .problems.join("; "))]
pub struct PreflightError {
    pub problems: Vec<String>,
}

/// Checks `facts`; the error lists every problem with what to do about it.
pub fn check(facts: &Facts) -> Result<(), PreflightError> {
    let mut problems = Vec::new();
    match facts.capabilities {
        None => problems
            .push("cannot read this process's capabilities from /proc/self/status".to_string()),
        Some(caps) => {
            let missing = caps.missing();
            if !missing.is_empty() {
                let names: Vec<&str> = missing.iter().map(|c| c.name()).collect();
                problems.push(format!(
                    "missing {} (run as root, or grant them: `setcap cap_bpf,cap_perfmon,cap_net_admin+ep skymap-probe`; in Kubernetes, securityContext.capabilities.add: [BPF, PERFMON, NET_ADMIN])",
                    names.join(", ")
                ));
            }
        }
    }
    match facts
        .kernel_release
        .as_deref()
        .map(|r| (r, KernelVersion::parse(r)))
    {
        None => problems
            .push("cannot read the kernel release from /proc/sys/kernel/osrelease".to_string()),
        Some((release, None)) => problems.push(format!(
            "kernel release {:?} is not a version",
            release.trim()
        )),
        Some((release, Some(version))) if version < MIN_KERNEL => problems.push(format!(
            "kernel {} is older than {MIN_KERNEL}, the first to report why a packet was dropped",
            release.trim()
        )),
        Some(_) => {}
    }
    if !facts.btf {
        problems.push(format!(
            "the kernel has no BTF ({} is missing; it needs CONFIG_DEBUG_INFO_BTF=y)",
            crate::reasons::VMLINUX_BTF
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PreflightError { problems })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[Cap]) -> Capabilities {
        Capabilities(list.iter().fold(0, |bits, &c| bits | 1 << c as u32))
    }

    fn facts(capabilities: Capabilities, release: &str, btf: bool) -> Facts {
        Facts {
            capabilities: Some(capabilities),
            kernel_release: Some(release.to_string()),
            btf,
        }
    }

    #[test]
    fn reads_the_effective_set() {
        let status = "Name:\tskymap-probe\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n";
        let root = Capabilities::from_status(status).expect("CapEff");
        assert!(root.missing().is_empty());
        let none = Capabilities::from_status("CapEff:\t0000000000000000\n").expect("CapEff");
        assert_eq!(none.missing(), REQUIRED);
        let names: Vec<&str> = REQUIRED.iter().map(|c| c.kubernetes_name()).collect();
        assert_eq!(names, ["BPF", "PERFMON", "NET_ADMIN"]);
        assert_eq!(Capabilities::from_status("Name: x\n"), None);
        assert_eq!(Capabilities::from_status("CapEff:\tzz\n"), None);
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon_but_not_net_admin() {
        assert!(caps(&[Cap::SysAdmin, Cap::NetAdmin]).missing().is_empty());
        assert!(
            caps(&[Cap::Bpf, Cap::Perfmon, Cap::NetAdmin])
                .missing()
                .is_empty()
        );
        assert_eq!(caps(&[Cap::SysAdmin]).missing(), vec![Cap::NetAdmin]);
        assert_eq!(
            caps(&[Cap::Bpf, Cap::NetAdmin]).missing(),
            vec![Cap::Perfmon]
        );
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(
            KernelVersion::parse("6.18.0-1-amd64"),
            Some(KernelVersion(6, 18))
        );
        assert_eq!(KernelVersion::parse("5.17\n"), Some(KernelVersion(5, 17)));
        assert_eq!(KernelVersion::parse("linux"), None);
        assert!(KernelVersion(5, 10) < MIN_KERNEL && MIN_KERNEL < KernelVersion(6, 1));
    }

    #[test]
    fn one_message_names_every_problem() {
        let all = caps(&[Cap::SysAdmin, Cap::NetAdmin]);
        assert_eq!(check(&facts(all, "6.18.0", true)), Ok(()));

        let err = check(&facts(caps(&[]), "5.10.0-28-amd64", false)).expect_err("three problems");
        assert_eq!(err.problems.len(), 3);
        let text = err.to_string();
        for needle in [
            "CAP_BPF",
            "CAP_PERFMON",
            "CAP_NET_ADMIN",
            "5.10.0-28-amd64",
            "5.17",
            "BTF",
            "setcap",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        let unknown = Facts {
            capabilities: None,
            kernel_release: None,
            btf: true,
        };
        assert_eq!(check(&unknown).expect_err("unknowns").problems.len(), 2);
    }
}
