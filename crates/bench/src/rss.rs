//! Resident memory of a process and its direct children, read from `/proc`.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

/// One process's resident set size.
#[derive(Debug, Serialize)]
pub struct ProcRss {
    pub pid: u32,
    pub name: String,
    pub rss_kb: u64,
}

/// `VmRSS` of `pid` in KiB (0 for a process without one, such as a zombie).
pub fn rss_kb(pid: u32) -> Result<u64> {
    Ok(status(pid)?.1)
}

/// How often [`settled_kb`] samples, how many samples its window holds (one second's),
/// how far apart they may be, and its bound.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
const WINDOW: usize = 5;
const TOLERANCE: f64 = 0.002;
const SETTLE_BOUND: Duration = Duration::from_secs(5);

/// An RSS sample taken once the process's RSS had settled (or the bound passed).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Settled {
    pub kb: u64,
    /// Seconds from the first sample to this one.
    pub after_s: f64,
    /// `false`: still moving when the bound passed (`kb` is then the last sample).
    pub settled: bool,
}

/// `VmRSS` of `pid` once it has stopped moving: sampled every 250 ms until the samples of
/// the last second are within 0.2 % of each other (about 60 KB of a 30 MB server), or 5 s
/// pass. Why a settled value rather than one sample at a fixed delay: servers return
/// freed memory lazily (mimalloc `purge_delay` = 1 s after a free, V8's garbage collector
/// when it gets to it), so a sample shortly after a burst of work may still count that
/// work's transient memory; a window one second long is at least mimalloc's delay.
pub async fn settled_kb(pid: u32) -> Result<Settled> {
    let start = Instant::now();
    let mut window = Vec::with_capacity(WINDOW + 1);
    loop {
        window.push(rss_kb(pid)?);
        if window.len() > WINDOW {
            window.remove(0);
        }
        let steady = window.len() == WINDOW && steady(&window);
        if steady || start.elapsed() >= SETTLE_BOUND {
            return Ok(Settled {
                kb: window[window.len() - 1],
                after_s: start.elapsed().as_secs_f64(),
                settled: steady,
            });
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// Whether samples are within [`TOLERANCE`] of their largest.
fn steady(samples: &[u64]) -> bool {
    let (Some(lo), Some(hi)) = (samples.iter().min(), samples.iter().max()) else {
        return false;
    };
    (hi - lo) as f64 <= *hi as f64 * TOLERANCE
}

/// `pid` followed by its direct children, each with its RSS.
pub fn with_children(pid: u32) -> Result<Vec<ProcRss>> {
    let mut out = vec![proc_rss(pid)?];
    for child in children(pid)? {
        // A child may exit between the scan and the read; skip it then.
        if let Ok(entry) = proc_rss(child) {
            out.push(entry);
        }
    }
    Ok(out)
}

fn proc_rss(pid: u32) -> Result<ProcRss> {
    let (name, rss_kb) = status(pid)?;
    Ok(ProcRss { pid, name, rss_kb })
}

/// `(Name, VmRSS kB)` from `/proc/<pid>/status`.
fn status(pid: u32) -> Result<(String, u64)> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .map(str::trim)
    };
    let name = field("Name:").unwrap_or_default().to_owned();
    let rss_kb = match field("VmRSS:") {
        Some(value) => value
            .trim_end_matches("kB")
            .trim()
            .parse()
            .map_err(|e| anyhow!("bad VmRSS {value:?} in {path}: {e}"))?,
        None => 0,
    };
    Ok((name, rss_kb))
}

/// Proportional set size of `pid` in KiB: its RSS with each shared page (the binary's
/// text, shared libraries) divided among the processes mapping it, so the sum over many
/// identical workers is what they really cost together.
pub fn pss_kb(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no Pss in {path}"))
}

/// Direct children of `pid`, found by scanning `/proc/*/stat` for the parent pid.
fn children(pid: u32) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").context("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(child) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        if parent_of(&stat) == Some(pid) {
            out.push(child);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The ppid field of a `/proc/<pid>/stat` line (the comm field may hold spaces
/// and parentheses, so parse after the last `)`).
fn parent_of(stat: &str) -> Option<u32> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ppid_after_odd_comm() {
        assert_eq!(parent_of("42 (a) b (c)) S 7 42 42 0"), Some(7));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn steady_means_within_the_tolerance_of_the_largest() {
        assert!(steady(&[30_000, 30_040, 30_010, 30_000, 30_050]));
        // A purge of a few hundred KB (mimalloc returns 64 KiB slices) is movement.
        assert!(!steady(&[32_548, 32_548, 32_548, 32_548, 30_228]));
        assert!(!steady(&[]));
    }

    #[test]
    fn reads_own_rss() {
        let me = std::process::id();
        assert!(rss_kb(me).unwrap() > 0);
        assert_eq!(with_children(me).unwrap()[0].pid, me);
    }
}
