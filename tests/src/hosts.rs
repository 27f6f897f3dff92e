//! [`Hosts`]: several hosts on one machine, each with its own address, for the tests that put
//! kvs-servers on different hosts behind a proxy (`tests/tests/scaling.rs`).
//!
//! Where the test may create network namespaces (it runs as root and `ip netns add` works),
//! each host is a network namespace of its own, and so is the *front*, where the proxy and the
//! clients run: the hosts' interfaces (veth pairs) plug into a bridge in the front namespace,
//! on a private subnet, 10.77.0.0/24 (the front 10.77.0.1, host `i` 10.77.0.(11 + i)). Nothing
//! is added to the machine's own namespace (no interface, address or route), so the subnet
//! cannot clash with a real network, and no traffic of the test leaves the namespaces it made.
//! The names are unique per test run (`kvst-<pid>-<n>-...`), and [`Drop`] deletes them
//! (which also destroys their interfaces), including when the test panics; namespaces left by
//! an earlier run that was killed (its process gone) are deleted when the next one starts.
//!
//! Elsewhere (not root, or `ip netns add` fails), the hosts fall back to the loopback
//! addresses 127.0.0.2, 127.0.0.3, ... and the front to 127.0.0.1, which the test says
//! loudly: the sharding is tested just the same, but the hosts share one network stack.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The prefix of the network namespaces these tests make.
const PREFIX: &str = "kvst-";

/// Where a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Where the proxy and the clients run.
    Front,
    /// Host number `i` (from 0).
    Host(usize),
}

/// Hosts with their own addresses, and a front; cleaned up when dropped.
pub struct Hosts {
    /// The namespaces, if namespaces are used: the front's, then each host's.
    namespaces: Option<Namespaces>,
    /// Each host's address.
    addrs: Vec<IpAddr>,
    /// The front's address.
    front: IpAddr,
}

struct Namespaces {
    front: String,
    hosts: Vec<String>,
}

impl Hosts {
    /// `n` hosts (at most 200) and a front: network namespaces where possible, else loopback
    /// addresses (said loudly on stderr).
    ///
    /// `KVS_TEST_NO_NETNS=1` in the environment makes it use loopback addresses even where it
    /// could make namespaces (to test that path).
    pub fn new(n: usize) -> Hosts {
        assert!(n <= 200, "at most 200 hosts");
        let made = if std::env::var_os("KVS_TEST_NO_NETNS").is_some_and(|v| v == "1") {
            Err("KVS_TEST_NO_NETNS=1 is set".to_string())
        } else {
            Namespaces::create(n)
        };
        match made {
            Ok(namespaces) => Hosts {
                namespaces: Some(namespaces),
                addrs: (0..n)
                    .map(|i| IpAddr::V4(Ipv4Addr::new(10, 77, 0, 11 + i as u8)))
                    .collect(),
                front: IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)),
            },
            Err(why) => {
                eprintln!(
                    "\n*** NO NETWORK NAMESPACES: {why}. The {n} hosts run on the loopback \
                     addresses 127.0.0.2..{}, sharing this machine's network stack, instead of \
                     each in a namespace of its own (that needs root and `ip netns`). ***\n",
                    n + 1
                );
                Hosts {
                    namespaces: None,
                    addrs: (0..n)
                        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)))
                        .collect(),
                    front: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
                }
            }
        }
    }

    /// Whether the hosts are network namespaces (else loopback addresses).
    pub fn isolated(&self) -> bool {
        self.namespaces.is_some()
    }

    /// The names of the network namespaces made (the front's first); none on loopback
    /// addresses.
    pub fn namespaces(&self) -> Vec<String> {
        self.namespaces
            .as_ref()
            .map(|n| [&n.front].into_iter().chain(&n.hosts).cloned().collect())
            .unwrap_or_default()
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> IpAddr {
        self.addrs[i]
    }

    /// The front's address, where the proxy listens.
    pub fn front(&self) -> IpAddr {
        self.front
    }

    /// A port free at `place`'s address: in a namespace of its own any port is, so a fixed
    /// one; on a shared loopback, one the OS says is free now.
    pub fn port(&self, place: Place, fixed: u16) -> u16 {
        if self.isolated() {
            return fixed;
        }
        let ip = match place {
            Place::Front => self.front,
            Place::Host(i) => self.addrs[i],
        };
        TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
            .port()
    }

    /// A command that runs `program` at `place` (through `ip netns exec`, which `exec`s it:
    /// the process started is `program` itself, so signals reach it).
    pub fn command(&self, place: Place, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.namespaces {
            None => Command::new(program),
            Some(namespaces) => {
                let name = match place {
                    Place::Front => &namespaces.front,
                    Place::Host(i) => &namespaces.hosts[i],
                };
                let mut command = Command::new("ip");
                command.args(["netns", "exec", name]).arg(program);
                command
            }
        }
    }
}

impl Namespaces {
    /// The front's namespace with a bridge, and `n` hosts' namespaces plugged into it.
    fn create(n: usize) -> Result<Namespaces, String> {
        if !is_root() {
            return Err("the test does not run as root".to_string());
        }
        remove_stale();
        static RUN: AtomicUsize = AtomicUsize::new(0);
        let base = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        );
        let mut made = Namespaces {
            front: format!("{base}-front"),
            hosts: Vec::new(),
        };
        // From here on, `made` deletes what exists if a step fails.
        ip(&["netns", "add", &made.front]).map_err(|e| format!("`ip netns add` failed: {e}"))?;
        let front = made.front.clone();
        ip(&["-n", &front, "link", "set", "lo", "up"])?;
        ip(&["-n", &front, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &front, "addr", "add", "10.77.0.1/24", "dev", "br0"])?;
        ip(&["-n", &front, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let host = format!("{base}-host{i}");
            ip(&["netns", "add", &host])?;
            made.hosts.push(host.clone());
            let port = format!("host{i}");
            let addr = format!("10.77.0.{}/24", 11 + i);
            ip(&["-n", &host, "link", "set", "lo", "up"])?;
            // Both ends are made directly in their namespaces: no name in the machine's own.
            ip(&[
                "link", "add", "eth0", "netns", &host, "type", "veth", "peer", "name", &port,
                "netns", &front,
            ])?;
            ip(&["-n", &front, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &front, "link", "set", &port, "up"])?;
            ip(&["-n", &host, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &host, "link", "set", "eth0", "up"])?;
        }
        Ok(made)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.hosts.iter().chain([&self.front]) {
            if let Err(e) = ip(&["netns", "del", name]) {
                eprintln!("cannot delete network namespace {name}: {e}");
            }
        }
    }
}

/// Whether this process's effective user is root (the third field of `Uid:` in
/// `/proc/self/status`, the kernel's view: real, effective, saved, filesystem).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uid = status.lines().find(|l| l.starts_with("Uid:"))?;
            Some(uid.split_whitespace().nth(2)? == "0")
        })
        .unwrap_or(false)
}

/// Deletes the namespaces of earlier runs whose process is gone (killed before its cleanup).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Runs `ip args`; its stderr is the error.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
