//! [`Nutcracker`]: twemproxy (Debian's `nutcracker` package, installed by `tests/setup.sh`),
//! the sharding proxy, run at the front of a set of [`Hosts`] with a configuration made from
//! the repository's `deploy/nutcracker.yml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::hosts::{Hosts, Place};
use crate::server::PATIENCE;

/// The `nutcracker` executable, if installed (Debian puts it in `/usr/sbin`, which a non-root
/// `PATH` may lack); `None` after saying loudly that the test skips.
pub fn program() -> Option<PathBuf> {
    for candidate in ["nutcracker", "/usr/sbin/nutcracker"] {
        let runs = std::process::Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if runs {
            return Some(PathBuf::from(candidate));
        }
    }
    eprintln!(
        "\n*** SKIPPED: nutcracker (twemproxy) is not installed (Debian's nutcracker package; \
         `bash tests/setup.sh` installs it), so kvs-servers are not tested behind it. ***\n"
    );
    None
}

/// The repository's tested configuration, `deploy/nutcracker.yml`.
pub fn deploy_config() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .join("deploy/nutcracker.yml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `template` (a configuration of one pool, as `deploy/nutcracker.yml`) with its `listen`
/// address, its servers' addresses (in order; their weights and names kept) and its
/// `auto_eject_hosts` replaced. Panics unless the template has exactly one `listen`, one
/// `auto_eject_hosts` and as many servers as `servers`, so that no substitution is silently
/// skipped.
pub fn config(template: &str, listen: SocketAddr, servers: &[SocketAddr], eject: bool) -> String {
    let (mut listens, mut ejects, mut next) = (0, 0, 0);
    let mut out = String::new();
    for line in template.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let trimmed = line.trim();
        if trimmed.starts_with("listen:") {
            listens += 1;
            out += &format!("{indent}listen: {listen}\n");
        } else if trimmed.starts_with("auto_eject_hosts:") {
            ejects += 1;
            out += &format!("{indent}auto_eject_hosts: {eject}\n");
        } else if let Some(server) = trimmed.strip_prefix("- ") {
            // `- ip:port:weight [name]`: the address is everything before the last `:`
            // of the first word.
            let (addr_weight, name) = server.split_once(' ').unwrap_or((server, ""));
            let (_, weight) = addr_weight
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("server line without a weight: {line:?}"));
            let addr = servers
                .get(next)
                .unwrap_or_else(|| panic!("the template has more than {} servers", servers.len()));
            next += 1;
            out += &format!("{indent}- {addr}:{weight} {name}\n");
        } else {
            out += line;
            out += "\n";
        }
    }
    assert_eq!(listens, 1, "one `listen` in the template");
    assert_eq!(ejects, 1, "one `auto_eject_hosts` in the template");
    assert_eq!(
        next,
        servers.len(),
        "as many servers in the template as hosts"
    );
    out
}

/// A running nutcracker, killed when dropped.
pub struct Nutcracker {
    child: Child,
    /// Where it listens for clients.
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Nutcracker {
    /// Writes `config` (listening on `addr`, at the front of `hosts`) into `dir`, checks it
    /// with `nutcracker --test-conf`, starts nutcracker at the front and waits until it
    /// answers `PING` (asked with `redis-cli`).
    pub fn start(program: &Path, hosts: &Hosts, dir: &Path, config: &str) -> Nutcracker {
        let conf = dir.join("nutcracker.yml");
        std::fs::write(&conf, config).expect("write nutcracker.yml");
        let listen = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("listen:"))
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            .expect("the configuration listens on an IP:PORT");
        let test = hosts
            .command(Place::Front, program)
            .arg("--test-conf")
            .arg("--conf-file")
            .arg(&conf)
            .output()
            .expect("nutcracker runs");
        assert!(
            test.status.success(),
            "nutcracker rejects the configuration:\n{config}\n{}{}",
            String::from_utf8_lossy(&test.stdout),
            String::from_utf8_lossy(&test.stderr)
        );
        let log = dir.join("nutcracker.log");
        // Its statistics port, on the front's loopback (nutcracker would take 22222 on every
        // address otherwise).
        let stats = hosts.port(Place::Front, 22222).to_string();
        let child = hosts
            .command(Place::Front, program)
            .arg("--conf-file")
            .arg(&conf)
            .args(["--stats-addr", "127.0.0.1", "--stats-port", &stats])
            .arg("--output")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nutcracker starts");
        let mut proxy = Nutcracker {
            child,
            addr: listen,
            log,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let exited = proxy.child.try_wait().expect("wait works");
            assert!(
                exited.is_none(),
                "nutcracker exited ({exited:?}); its log:\n{}",
                proxy.log()
            );
            let ping = hosts
                .command(Place::Front, "redis-cli")
                .args([
                    "-h",
                    &listen.ip().to_string(),
                    "-p",
                    &listen.port().to_string(),
                ])
                .arg("PING")
                .stdin(Stdio::null())
                .output()
                .expect("redis-cli runs");
            if String::from_utf8_lossy(&ping.stdout).trim() == "PONG" {
                return proxy;
            }
            assert!(
                Instant::now() < deadline,
                "nutcracker never answered PING; its log:\n{}",
                proxy.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// What nutcracker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Nutcracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
