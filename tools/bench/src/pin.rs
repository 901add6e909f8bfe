//! Keeps the bench tool and the server under test off each other's cores, so that a figure
//! measures the server and not the two fighting over a core: every thread of each process is
//! pinned with `sched_setaffinity` (threads started later inherit their creator's set).
//!
//! `--pin auto` (the default): a server already confined to some of the tool's cores (started
//! under `taskset`, as `scripts/bench` does) keeps them and the tool takes the rest; a server
//! on every core is moved to the first half of them. `--server-cores` names the server's cores;
//! `--pin off` leaves both alone.

use std::collections::BTreeSet;
use std::fs;

use anyhow::{Context, bail};
use clap::ValueEnum;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum PinMode {
    #[default]
    Auto,
    Off,
}

/// Which cores the server and the tool ran on, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub server_cores: String,
    pub tool_cores: String,
    /// Whether the tool moved the server (rather than finding it confined already).
    pub server_moved: bool,
}

/// Pins the server (`pid`) and this process per `mode` and `server_cores`; `None` when there
/// is nothing to place (pinning off, one core, or no server process on this machine).
pub fn place(pid: Option<u32>, mode: PinMode, server_cores: Option<&str>) -> anyhow::Result<Option<Placement>> {
    if mode == PinMode::Off {
        return Ok(None);
    }
    let Some(pid) = pid else {
        if server_cores.is_some() {
            bail!("--server-cores needs the server's process (--server-pid, or a server listening on this machine)");
        }
        return Ok(None);
    };
    let ours = affinity(0).context("reading the bench tool's CPU affinity")?;
    let theirs = affinity(pid as i32).with_context(|| format!("reading the CPU affinity of process {pid}"))?;
    let wanted = match server_cores {
        Some(list) => Some(parse_cores(list)?),
        None => None,
    };
    let Some(split) = split(&ours, &theirs, wanted) else { return Ok(None) };
    if split.server != theirs {
        set_process_affinity(pid, &split.server).with_context(|| format!("pinning the server (process {pid})"))?;
    }
    set_process_affinity(std::process::id(), &split.tool).context("pinning the bench tool")?;
    Ok(Some(Placement {
        server_cores: format_cores(&split.server),
        tool_cores: format_cores(&split.tool),
        server_moved: split.server != theirs,
    }))
}

#[derive(Debug, PartialEq, Eq)]
struct Split {
    server: BTreeSet<usize>,
    tool: BTreeSet<usize>,
}

/// The decision, from the tool's cores (`ours`), the server's now (`theirs`) and the ones asked
/// for: `None` when the two cannot be separated (one core).
fn split(ours: &BTreeSet<usize>, theirs: &BTreeSet<usize>, wanted: Option<BTreeSet<usize>>) -> Option<Split> {
    let server = match wanted {
        Some(cores) => cores,
        // Confined already, and not to all of ours: keep it.
        None if theirs.is_subset(ours) && theirs.len() < ours.len() => theirs.clone(),
        None => ours.iter().copied().take(ours.len() / 2).collect(),
    };
    let tool: BTreeSet<usize> = ours.difference(&server).copied().collect();
    (!server.is_empty() && !tool.is_empty()).then_some(Split { server, tool })
}

/// `0`, `0,2`, `0-3`, `0-1,4`.
pub fn parse_cores(list: &str) -> anyhow::Result<BTreeSet<usize>> {
    let mut cores = BTreeSet::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        let from: usize = from.trim().parse().with_context(|| format!("`{part}` is not a core or a range of cores"))?;
        let to: usize = to.trim().parse().with_context(|| format!("`{part}` is not a core or a range of cores"))?;
        if from > to || to >= libc::CPU_SETSIZE as usize {
            bail!("`{part}` is not a range of cores");
        }
        cores.extend(from..=to);
    }
    if cores.is_empty() {
        bail!("no cores named");
    }
    Ok(cores)
}

pub fn format_cores(cores: &BTreeSet<usize>) -> String {
    let mut runs: Vec<String> = Vec::new();
    let mut iter = cores.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        runs.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    runs.join(",")
}

/// The affinity of one thread (`tid`; 0 = the calling one).
fn affinity(tid: i32) -> std::io::Result<BTreeSet<usize>> {
    // SAFETY: `set` is a plain bit set, zeroed, of the size passed.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        set
    };
    // SAFETY: reads bits of an initialised set within CPU_SETSIZE.
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect())
}

/// Pins every thread of process `pid` (from `/proc/<pid>/task`) to `cores`.
fn set_process_affinity(pid: u32, cores: &BTreeSet<usize>) -> std::io::Result<()> {
    // SAFETY: `set` is zeroed and only bits below CPU_SETSIZE (checked by `parse_cores` and
    // `affinity`) are set.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cores {
            libc::CPU_SET(cpu, &mut set);
        }
        set
    };
    for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
        let Some(tid) = entry?.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else { continue };
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        if unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
            let err = std::io::Error::last_os_error();
            // A thread that ended since the listing is no matter.
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(err);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cores(list: &str) -> BTreeSet<usize> {
        parse_cores(list).unwrap()
    }

    #[test]
    fn core_lists_parse_and_print_back() {
        assert_eq!(format_cores(&cores("0")), "0");
        assert_eq!(format_cores(&cores("0-3")), "0-3");
        assert_eq!(format_cores(&cores("0-1, 4,6,7")), "0-1,4,6-7");
        assert!(parse_cores("").is_err());
        assert!(parse_cores("3-1").is_err());
        assert!(parse_cores("x").is_err());
        assert!(parse_cores("0-99999").is_err());
    }

    #[test]
    fn a_confined_server_keeps_its_cores_and_the_tool_takes_the_rest() {
        let got = split(&cores("0-3"), &cores("0"), None).unwrap();
        assert_eq!((got.server, got.tool), (cores("0"), cores("1-3")));
    }

    #[test]
    fn a_server_on_every_core_gets_the_first_half() {
        let got = split(&cores("0-3"), &cores("0-3"), None).unwrap();
        assert_eq!((got.server, got.tool), (cores("0-1"), cores("2-3")));
        let got = split(&cores("0-1"), &cores("0-63"), None).unwrap();
        assert_eq!((got.server, got.tool), (cores("0"), cores("1")));
    }

    #[test]
    fn named_cores_win_and_one_core_cannot_be_split() {
        let got = split(&cores("0-3"), &cores("0"), Some(cores("2-3"))).unwrap();
        assert_eq!((got.server, got.tool), (cores("2-3"), cores("0-1")));
        assert_eq!(split(&cores("0"), &cores("0"), None), None);
        assert_eq!(split(&cores("0-1"), &cores("0-1"), Some(cores("0-1"))), None, "nothing left for the tool");
    }

    #[test]
    fn pinning_this_process_is_seen_by_the_kernel() {
        let before = affinity(0).unwrap();
        let only = before.iter().next().copied().map(|c| BTreeSet::from([c])).unwrap();
        set_process_affinity(std::process::id(), &only).unwrap();
        assert_eq!(affinity(0).unwrap(), only);
        set_process_affinity(std::process::id(), &before).unwrap();
        assert_eq!(affinity(0).unwrap(), before);
    }
}
