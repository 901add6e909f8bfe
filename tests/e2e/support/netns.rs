//! A client network for connectivity tests: a network namespace joined to the host by a veth
//! pair (host `10.213.N.1`, client `10.213.N.2`), with nftables rules in the client namespace
//! that drop what a restrictive network drops. Programs run inside it with `ip netns exec`.
//! Needs root (the tests and CI run as root), iproute2 and nftables (scripts/test installs them).
//! Everything is removed when the value is dropped.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct ClientNet {
    /// The namespace's name.
    pub name: String,
    /// The host's end of the link: servers the client should reach listen here.
    pub host_ip: Ipv4Addr,
    /// The client's address.
    pub client_ip: Ipv4Addr,
    host_link: String,
}

fn run(args: &[&str]) {
    let output = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|err| panic!("{args:?}: {err}"));
    assert!(output.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

impl ClientNet {
    /// Creates the namespace and its link; nothing is blocked yet.
    pub fn create() -> ClientNet {
        // Unique across the test processes that may run at once (pid) and the tests of one.
        let n = (std::process::id() % 200 + NEXT.fetch_add(1, Ordering::Relaxed) * 7) % 250 + 1;
        let tag = format!("{}x{n}", std::process::id() % 100_000);
        let (name, host_link, client_link) = (format!("jnet{tag}"), format!("jh{tag}"), format!("jc{tag}"));
        let host_ip = Ipv4Addr::new(10, 213, n as u8, 1);
        let client_ip = Ipv4Addr::new(10, 213, n as u8, 2);
        // A leftover of a killed run of the same pid would make `add` fail: clear it first.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_link]).output();
        run(&["ip", "netns", "add", &name]);
        let net = ClientNet { name: name.clone(), host_ip, client_ip, host_link: host_link.clone() };
        run(&["ip", "link", "add", &host_link, "type", "veth", "peer", "name", &client_link]);
        run(&["ip", "link", "set", &client_link, "netns", &name]);
        run(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &host_link]);
        run(&["ip", "link", "set", &host_link, "up"]);
        net.exec(&["ip", "addr", "add", &format!("{client_ip}/30"), "dev", &client_link]);
        net.exec(&["ip", "link", "set", &client_link, "up"]);
        net.exec(&["ip", "link", "set", "lo", "up"]);
        net.exec(&["nft", "add", "table", "inet", "junction_test"]);
        net.exec(&["nft", "add", "chain", "inet", "junction_test", "out", "{ type filter hook output priority 0; }"]);
        net
    }

    /// Runs a command inside the namespace, failing the test if it fails.
    pub fn exec(&self, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full);
    }

    /// Drops every UDP datagram the client sends to the host (a network that allows only TCP).
    pub fn drop_udp_to_host(&self) {
        self.drop_to_host(&["meta", "l4proto", "udp"]);
    }

    /// Drops TCP connections from the client to `port` on the host.
    pub fn drop_tcp_to_host(&self, port: u16) {
        self.drop_to_host(&["tcp", "dport", &port.to_string()]);
    }

    fn drop_to_host(&self, rule: &[&str]) {
        let host = self.host_ip.to_string();
        let mut args = vec!["nft", "add", "rule", "inet", "junction_test", "out", "ip", "daddr", &host];
        args.extend_from_slice(rule);
        args.push("drop");
        self.exec(&args);
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for ClientNet {
    fn drop(&mut self) {
        // Deleting the namespace deletes the client's end of the link, and with it the host's.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = Command::new("ip").args(["link", "del", &self.host_link]).output();
    }
}
