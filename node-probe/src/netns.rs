//! Work inside another network namespace. `setns` switches only the calling
//! thread, so each call runs on a thread of its own that enters the
//! namespace, does the work and ends: the caller's namespace is never
//! touched, even if the work fails. Sockets and links made there stay in that
//! namespace after the thread is gone.

use std::fs::File;
use std::path::Path;

use nix::sched::{CloneFlags, setns};

/// Why work could not run in a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("entering network namespace {path}: {source}")]
    Enter {
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("the work in network namespace {0} panicked")]
    Panicked(String),
}

/// Runs `work` inside the network namespace at `path` (e.g.
/// `/run/netns/NAME` or `/proc/PID/ns/net`) and returns what it returns.
pub fn run_in<T: Send>(path: &Path, work: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: name.clone(),
        source,
    })?;
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                path: name.clone(),
                source,
            })?;
            Ok(work())
        });
        thread
            .join()
            .map_err(|_| NetnsError::Panicked(name.clone()))?
    })
}

/// The interfaces of the calling thread's network namespace.
pub fn interfaces() -> Vec<String> {
    nix::net::if_::if_nameindex()
        .map(|list| {
            list.iter()
                .map(|i| i.name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `name` matches a shell-style glob with `*` and `?` (`veth*`,
/// `eth?`); anything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("veth*", "veth1a2b"));
        assert!(glob_match("veth*", "veth"));
        assert!(!glob_match("veth*", "eth0"));
        assert!(glob_match("eth?", "eth0"));
        assert!(!glob_match("eth?", "eth10"));
        assert!(glob_match("*", "lo"));
        assert!(glob_match("lo", "lo"));
        assert!(!glob_match("lo", "lo0"));
        assert!(glob_match("c*l*m", "cilium"));
    }

    #[test]
    fn a_missing_namespace_is_an_error_naming_it() {
        let err = run_in(Path::new("/run/netns/skymap-does-not-exist"), || 1)
            .expect_err("no such namespace");
        assert!(err.to_string().contains("skymap-does-not-exist"), "{err}");
    }

    #[test]
    fn own_namespace_runs_the_work_and_lists_loopback() {
        let lo = run_in(Path::new("/proc/self/ns/net"), || {
            interfaces().contains(&"lo".to_string())
        });
        assert!(matches!(lo, Ok(true)), "{lo:?}");
    }
}
