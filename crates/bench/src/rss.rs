//! Resident memory of a process and its direct children, read from `/proc`.

use std::fs;

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
    fn reads_own_rss() {
        let me = std::process::id();
        assert!(rss_kb(me).unwrap() > 0);
        assert_eq!(with_children(me).unwrap()[0].pid, me);
    }
}
