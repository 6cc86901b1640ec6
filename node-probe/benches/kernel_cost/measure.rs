//! What the bench reads to measure: the machine's CPU time from /proc/stat,
//! the kernel's run-time statistics of this process's eBPF programs, and
//! whether Ctrl-C was pressed.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{SysconfVar, sysconf};

/// Set once by the Ctrl-C watcher; every loop of the bench checks it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Turns Ctrl-C into [`interrupted`], so the bench stops its floods and
/// cleans up instead of dying with namespaces and tcpdump left behind.
/// SIGINT is blocked in this thread before any other starts (threads and
/// children inherit the mask) and taken by a watcher thread with sigwait:
/// no signal handler, no unsafe code.
pub fn watch_ctrl_c() -> Result<(), String> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.thread_block()
        .map_err(|e| format!("blocking SIGINT: {e}"))?;
    std::thread::spawn(move || {
        while set.wait().is_ok() {
            if !INTERRUPTED.swap(true, Ordering::Relaxed) {
                eprintln!("interrupted: stopping and cleaning up");
            }
        }
    });
    Ok(())
}

/// Machine-wide CPU time, in clock ticks, summed over all CPUs.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq. Steal (another guest's time)
    /// and idle/iowait are not ours.
    pub busy: u64,
    pub total: u64,
}

impl CpuTimes {
    pub fn now() -> Result<Self, String> {
        let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("cpu "))
            .ok_or("/proc/stat: no cpu line")?
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest time is
        // already inside user).
        let busy = field(0) + field(1) + field(2) + field(5) + field(6);
        Ok(Self {
            busy,
            total: busy + field(3) + field(4) + field(7),
        })
    }
}

/// CPU time, in clock ticks, of the processes doing the bench's work: this
/// one (every thread, ended ones too), tcpdump when it runs, and the
/// ksoftirqd threads, which take over packet processing under load. With
/// tick-based accounting (no CONFIG_IRQ_TIME_ACCOUNTING) a softirq that runs
/// in a task's context is charged to that task, so the TC programs are in
/// here. Unlike [`CpuTimes`] it leaves out whatever else the machine runs.
pub fn own_ticks(pids: &[u32]) -> u64 {
    ["self".to_string()]
        .into_iter()
        .chain(pids.iter().map(u32::to_string))
        .filter_map(|pid| process_ticks(&pid))
        .sum()
}

/// utime + stime from /proc/PID/stat (fields 14 and 15).
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields restart
    // after its last ')', at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(field(14)? + field(15)?)
}

/// The PIDs of the ksoftirqd threads.
pub fn ksoftirqd() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.starts_with("ksoftirqd/"))
        })
        .collect()
}

/// Nanoseconds per clock tick of /proc/stat.
pub fn ns_per_tick() -> f64 {
    let hz = sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&hz| hz > 0)
        .unwrap_or(100);
    1e9 / hz as f64
}

/// Run time and run count of one program, cumulative since it loaded.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunStats {
    pub run_ns: u64,
    pub runs: u64,
}

/// The kernel's statistics for the eBPF programs this process holds, by
/// name. Ours are found by the file descriptors we hold, not by name: a
/// test or a probe elsewhere on the machine loads programs with the same
/// names.
pub fn program_stats() -> BTreeMap<String, RunStats> {
    let ids = own_program_ids();
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|info| ids.contains(&info.id()))
        .map(|info| {
            let name = info.name_as_str().unwrap_or("?").to_string();
            let stats = RunStats {
                run_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                runs: info.run_count(),
            };
            (name, stats)
        })
        .collect()
}

/// `prog_id` of every eBPF program descriptor in /proc/self/fdinfo.
fn own_program_ids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fdinfo") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("prog_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect()
}

/// Turns on run-time statistics for every eBPF program until dropped
/// (BPF_ENABLE_STATS: the kernel turns them off when the descriptor
/// closes, even if this process is killed). They cost each run two clock
/// reads, so they are on only in the rounds that read them.
pub fn enable_stats() -> Result<OwnedFd, String> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| format!("enabling BPF run-time statistics: {e}"))
}

/// Whether someone turned run-time statistics on with the sysctl (stats
/// enabled through BPF_ENABLE_STATS, as here, do not show in it).
pub fn stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1")
}
