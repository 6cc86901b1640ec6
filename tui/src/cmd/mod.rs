//! One module per `skymap` command, and what they share.

pub mod explain;
pub mod graph;
pub mod lab;
pub mod observe;
pub mod replay;
pub mod snapshot;
pub mod status;
pub mod ui;

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::ExitCode;

use color_eyre::eyre::{Result, WrapErr, eyre};
use skymap_proto::jsonl::{FlowReader, ReadReport};
use skymap_tui::conn;
use skymap_tui::kube::{self, LocalForward};

/// True when the error is stdout closing under us (`skymap observe | head`),
/// which is a normal way to stop.
pub fn is_broken_pipe(error: &color_eyre::eyre::Report) -> bool {
    error.chain().any(|cause| {
        let io_kind = cause.downcast_ref::<io::Error>().map(io::Error::kind);
        let json_kind = cause
            .downcast_ref::<serde_json::Error>()
            .and_then(serde_json::Error::io_error_kind);
        io_kind.or(json_kind) == Some(io::ErrorKind::BrokenPipe)
    })
}

/// `--context`: finds the relay through the kubeconfig and points `relay`
/// at a local port-forward to it, which lives as long as the value returned.
pub async fn through_cluster(relay: &mut String, target: &kube::Target) -> Result<LocalForward> {
    let forward = kube::connect(target).await?;
    // With --tls-ca the relay speaks TLS through the forward too; main()
    // defaults the name checked to the Service's DNS name.
    *relay = if conn::tls().ca.is_some() {
        format!("https://{}", forward.addr())
    } else {
        forward.url()
    };
    Ok(forward)
}

/// A command that failed through a port-forward also says why the forward
/// failed, if it did (the command itself only sees a closed connection).
pub fn explain_forward(
    outcome: Result<ExitCode>,
    forward: Option<&LocalForward>,
) -> Result<ExitCode> {
    match (outcome, forward.and_then(LocalForward::last_error)) {
        (Err(e), Some(why)) => Err(e.wrap_err(why)),
        (outcome, _) => outcome,
    }
}

/// Wall clock in Unix nanoseconds.
pub fn now_ns() -> i64 {
    skymap_relay::aggregator::now_ns()
}

/// `--since`/`--until`: a duration ago (`5m`, `1h30m`) or an RFC 3339 time.
pub fn parse_time(flag: &str, text: &str, now_ns: i64) -> Result<i64> {
    if let Ok(ago) = humantime::parse_duration(text) {
        let ago = i64::try_from(ago.as_nanos()).unwrap_or(i64::MAX);
        return Ok(now_ns.saturating_sub(ago).max(1));
    }
    let at = humantime::parse_rfc3339_weak(text).map_err(|_| {
        eyre!("{flag} {text:?}: expected a duration (30s, 5m, 2h) or a time (2026-11-26T06:00:00Z)")
    })?;
    let ns = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| eyre!("{flag} {text:?}: before 1970"))?
        .as_nanos();
    Ok(i64::try_from(ns).unwrap_or(i64::MAX))
}

/// Opens a recording (`-` is standard input) as a stream of flows.
pub fn open_recording(path: &Path) -> Result<FlowReader<Box<dyn BufRead + Send>>> {
    let name = path.display().to_string();
    let reader: Box<dyn BufRead + Send> = if name == "-" {
        Box::new(BufReader::new(io::stdin()))
    } else {
        let file = File::open(path).wrap_err_with(|| format!("cannot open {name}"))?;
        Box::new(BufReader::with_capacity(1 << 20, file))
    };
    Ok(FlowReader::new(reader, &name))
}

/// Tells the user what was skipped while reading a recording.
pub fn report_rejects(name: &str, report: &ReadReport) {
    if report.rejected == 0 {
        return;
    }
    eprintln!(
        "skymap: {name}: {} of {} lines rejected",
        report.rejected, report.lines
    );
    for error in &report.errors {
        eprintln!("  {error}");
    }
    if report.rejected > report.errors.len() as u64 {
        eprintln!(
            "  ... and {} more",
            report.rejected - report.errors.len() as u64
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_flags_accept_durations_and_timestamps() {
        let now = 1_800_000_000_000_000_000;
        assert_eq!(
            parse_time("--since", "5m", now).ok(),
            Some(now - 300_000_000_000)
        );
        assert_eq!(
            parse_time("--since", "2026-11-26T06:00:00Z", now).ok(),
            Some(1_795_672_800_000_000_000)
        );
        let err = parse_time("--since", "yesterday", now).expect_err("not a time");
        assert!(err.to_string().contains("--since \"yesterday\""));
    }
}
