//! The server's CPU time and resident memory, read from the outside: from `/proc/<pid>/stat`
//! when the server runs on this machine (given by `--server-pid`, or found as the process that
//! listens on the URL's TCP port), else from the `process_cpu_seconds` and
//! `process_resident_memory_bytes` figures of its `/metrics`; for a cluster, the sum over its
//! nodes. Also this process's own CPU time, so a report can say how much of the machine the load
//! tool itself took.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::Context;

/// One reading of the server's counters.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// CPU used between two samples, as a percentage of one core.
pub fn cpu_percent(from: &Sample, to: &Sample) -> Option<f64> {
    let wall = to.at.saturating_duration_since(from.at).as_secs_f64();
    (wall > 0.0).then(|| (to.cpu_seconds - from.cpu_seconds).max(0.0) * 100.0 / wall)
}

#[derive(Debug, Clone)]
pub enum ServerProbe {
    Proc {
        pid: u32,
    },
    Metrics {
        url: String,
        http: reqwest::Client,
    },
    /// Several nodes of a cluster, each with its HTTP base URL: CPU time and memory add up.
    Nodes(Vec<(String, ServerProbe)>),
}

impl ServerProbe {
    /// Picks /proc when the server's pid is known or can be found, `/metrics` otherwise.
    pub fn new(url: &str, pid: Option<u32>) -> ServerProbe {
        let pid = pid.or_else(|| listening_pid(url));
        match pid {
            Some(pid) if read_proc(pid).is_some() => ServerProbe::Proc { pid },
            _ => ServerProbe::Metrics {
                url: format!("{}/metrics", url.trim_end_matches('/')),
                http: reqwest::Client::new(),
            },
        }
    }

    /// One probe per node (HTTP base URLs, the first being `url` of [`ServerProbe::new`]'s
    /// pid if given), summed.
    pub fn nodes(urls: &[String], first_pid: Option<u32>) -> ServerProbe {
        let probes = urls
            .iter()
            .enumerate()
            .map(|(i, url)| (url.clone(), ServerProbe::new(url, if i == 0 { first_pid } else { None })))
            .collect();
        ServerProbe::Nodes(probes)
    }

    /// `proc:<pid>`, `metrics`, or `nodes[…]`, for the report.
    pub fn source(&self) -> String {
        match self {
            ServerProbe::Proc { pid } => format!("proc:{pid}"),
            ServerProbe::Metrics { .. } => "metrics".to_owned(),
            ServerProbe::Nodes(nodes) => {
                let each: Vec<String> = nodes.iter().map(|(_, probe)| probe.source()).collect();
                format!("sum of nodes [{}]", each.join(", "))
            }
        }
    }

    /// Each node's own sample (one entry, URL empty, for a single server).
    pub async fn sample_each(&self) -> anyhow::Result<Vec<(String, Sample)>> {
        match self {
            ServerProbe::Nodes(nodes) => {
                let mut samples = Vec::with_capacity(nodes.len());
                for (url, probe) in nodes {
                    samples.push((url.clone(), probe.sample().await?));
                }
                Ok(samples)
            }
            single => Ok(vec![(String::new(), single.sample().await?)]),
        }
    }

    pub async fn sample(&self) -> anyhow::Result<Sample> {
        match self {
            ServerProbe::Nodes(_) => {
                let each = Box::pin(self.sample_each()).await?;
                Ok(Sample {
                    at: each.iter().map(|(_, s)| s.at).max().unwrap_or_else(Instant::now),
                    cpu_seconds: each.iter().map(|(_, s)| s.cpu_seconds).sum(),
                    rss_bytes: each.iter().map(|(_, s)| s.rss_bytes).sum(),
                })
            }
            ServerProbe::Proc { pid } => {
                let (cpu_seconds, rss_bytes) =
                    read_proc(*pid).with_context(|| format!("cannot read /proc/{pid}/stat: did the server exit?"))?;
                Ok(Sample { at: Instant::now(), cpu_seconds, rss_bytes })
            }
            ServerProbe::Metrics { url, http } => {
                let text = http
                    .get(url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .with_context(|| format!("cannot read {url}"))?
                    .text()
                    .await?;
                let at = Instant::now();
                let value = |name: &str| metric(&text, name);
                let cpu_seconds = value("process_cpu_seconds")
                    .or_else(|| value("process_cpu_seconds_total"))
                    .with_context(|| format!("{url} has no process_cpu_seconds"))?;
                let rss = value("process_resident_memory_bytes")
                    .with_context(|| format!("{url} has no process_resident_memory_bytes"))?;
                Ok(Sample { at, cpu_seconds, rss_bytes: rss as u64 })
            }
        }
    }
}

/// The value of an unlabelled metric in Prometheus text format.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

/// (CPU seconds, resident bytes) of a process.
pub fn read_proc(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: count fields after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    Some(((utime + stime) / ticks_per_second(), rss_pages * page_size()))
}

/// This process's CPU time, all threads.
pub fn own_cpu_seconds() -> f64 {
    read_proc(std::process::id()).map_or(0.0, |(cpu, _)| cpu)
}

/// The 1-minute load average of this machine.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// The process on this machine that listens on the URL's TCP port, if the URL points here.
pub fn listening_pid(url: &str) -> Option<u32> {
    let parsed = url::Url::parse(url).ok()?;
    let port = parsed.port_or_known_default()?;
    let host = parsed.host_str()?.trim_matches(['[', ']']);
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().ok()?.collect();
    if !addrs.iter().any(|a| is_local(a.ip())) {
        return None;
    }
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let target = target.to_string_lossy();
            let inode = target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']'));
            if inode.is_some_and(|i| inodes.iter().any(|known| known == i)) {
                return Some(pid);
            }
        }
    }
    None
}

fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || local_addresses().contains(&ip)
}

/// This machine's addresses, as far as /proc tells (IPv4 only; enough to recognise loopback
/// aliases and the host's own address).
fn local_addresses() -> Vec<IpAddr> {
    let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") else { return Vec::new() };
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .filter(|pair| pair[1].contains("/32 host LOCAL"))
        .filter_map(|pair| pair[0].trim().trim_start_matches("|-- ").parse().ok())
        .collect()
}

/// Socket inodes in state LISTEN on `port`, from /proc/net/tcp and tcp6.
fn listening_inodes(port: u16) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9)) else {
                continue;
            };
            let local_port = local.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && *state == "0A" {
                inodes.push((*inode).to_owned());
            }
        }
    }
    inodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_from_prometheus_text() {
        let text = "# HELP process_cpu_seconds x\nprocess_cpu_seconds 12.5\nprocess_cpu_seconds_total 12\n\
                    junction_peers{room=\"a\"} 3\nprocess_resident_memory_bytes 1048576\n";
        assert_eq!(metric(text, "process_cpu_seconds"), Some(12.5));
        assert_eq!(metric(text, "process_resident_memory_bytes"), Some(1_048_576.0));
        assert_eq!(metric(text, "junction_peers"), None);
    }

    #[test]
    fn this_process_can_be_read_from_proc() {
        let (cpu, rss) = read_proc(std::process::id()).expect("own stat");
        assert!(cpu >= 0.0);
        assert!(rss > 0);
    }

    #[test]
    fn the_listener_of_a_local_port_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(listening_pid(&format!("http://127.0.0.1:{port}")), Some(std::process::id()));
        assert_eq!(listening_pid("http://192.0.2.1:7880"), None, "not this machine");
    }
}
