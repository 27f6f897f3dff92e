//! kvs-server as an operator runs it, against the real binary: its options from a TOML file
//! (`--config`, with `deploy/kvs-server.toml` loaded as it is shipped), the Prometheus
//! endpoint (`--metrics-addr`) scraped with the real `curl` (`tests/setup.sh` installs it),
//! and systemd's readiness protocol (`READY=1`, `STOPPING=1` on `$NOTIFY_SOCKET`, a path or
//! an abstract name), with the unit file `deploy/kvs-server.service` checked by
//! `systemd-analyze verify` where it is installed, and started for real where systemd runs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kvs_tests::binaries::kvs_server;
use kvs_tests::resp::{Conn as Resp, Frame};
use kvs_tests::server::PATIENCE;
use kvs_tests::ServerProcess;
use tempfile::TempDir;

/// The repository's `deploy/` directory.
fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .join("deploy")
}

/// Runs `kvs-server ARGS` in `dir` until it exits (a server that starts is a failure of the
/// caller's expectation: `--addr 127.0.0.1:0` keeps it off any real port meanwhile).
fn run_server(dir: &Path, args: &[&str]) -> Output {
    Command::new(kvs_server())
        .current_dir(dir)
        .args(args)
        .output()
        .expect("kvs-server runs")
}

// ---------------------------------------------------------------------------------------
// --config

/// The shipped example loads as it is; the command line overrides it (`--addr`), and what
/// the command line leaves alone comes from the file.
#[test]
fn the_example_config_loads_and_the_command_line_overrides_it() {
    let example = deploy().join("kvs-server.toml");
    let dir = TempDir::new().unwrap();
    let example_arg = example.to_str().unwrap();
    // The file says 127.0.0.1:4000 and metrics on 127.0.0.1:4001: both overridden.
    let mut server = ServerProcess::start(
        dir.path(),
        &["--config", example_arg, "--metrics-addr", "127.0.0.1:0"],
    );
    assert_ne!(server.addr.port(), 4000, "--addr did not override the file");
    let started = server.wait_for_log("listening on");
    assert!(started.contains("engine kvs"), "{started}");
    assert!(started.contains("sync os"), "{started}");
    let metrics = server.wait_for_log("serving metrics at");
    assert!(!metrics.contains(":4001/"), "{metrics}");
    assert!(server.signal_and_wait("TERM").success());

    // Values from a file of our own, one overridden on the command line.
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        "# a comment\nthreads = 3\ncluster-mode = \"emulated\"\nclient-timeout = 2.5\n\
         drain-timeout = 1\npool = \"rayon\"\nlog-level = \"debug\"\n",
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let mut server = ServerProcess::start(dir.path(), &["--config", config_arg]);
    let started = server.wait_for_log("listening on");
    assert!(started.contains("(3 threads, rayon pool"), "{started}");
    assert!(started.contains("cluster mode emulated"), "{started}");
    assert!(server.signal_and_wait("TERM").success());

    let mut server = ServerProcess::start(dir.path(), &["--config", config_arg, "--threads", "2"]);
    let started = server.wait_for_log("listening on");
    assert!(started.contains("(2 threads, rayon pool"), "{started}");
    assert!(server.signal_and_wait("TERM").success());
}

/// A password file named in the config file protects the server; one given on the command
/// line replaces it.
#[test]
fn a_config_file_can_name_the_password_file() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("pw"), "from-the-file\n").unwrap();
    std::fs::write(dir.path().join("other"), "from-the-flag\n").unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "requirepass-file = \"pw\"\n").unwrap();
    let config_arg = config.to_str().unwrap();

    let server = ServerProcess::start(dir.path(), &["--config", config_arg]);
    let mut resp = Resp::connect(server.addr);
    assert!(
        matches!(resp.call(&[b"GET", b"k"]), Frame::Error(e) if e.starts_with("NOAUTH")),
        "no password asked for"
    );
    assert_eq!(
        resp.call(&[b"AUTH", b"from-the-file"]),
        Frame::Simple("OK".into())
    );
    drop(server);

    let server = ServerProcess::start(
        dir.path(),
        &["--config", config_arg, "--requirepass-file", "other"],
    );
    let mut resp = Resp::connect(server.addr);
    assert!(matches!(
        resp.call(&[b"AUTH", b"from-the-file"]),
        Frame::Error(_)
    ));
    assert_eq!(
        resp.call(&[b"AUTH", b"from-the-flag"]),
        Frame::Simple("OK".into())
    );
}

/// Every way a config file can be wrong: exit 2, as a bad flag, and a message that names the
/// file and the option (or, for TOML syntax, the line). The server never starts.
#[test]
fn a_bad_config_file_is_refused_naming_the_file_and_the_option() {
    let dir = TempDir::new().unwrap();
    // Each: the file's text, and what the error must say beside the file's path.
    let cases: &[(&str, &[&str])] = &[
        (
            "addr = \"127.0.0.1:0\"\nbogus = 1\n",
            &["`bogus`", "unknown option", "the options are addr,"],
        ),
        (
            "addr = \"127.0.0.1:0\"\nthreads = \"4\"\n",
            &["`threads`", "must be an integer, not a string"],
        ),
        (
            "addr = \"127.0.0.1:0\"\nthreads = 0\n",
            &["`threads`", "0 is not in 1..=1024"],
        ),
        (
            "addr = \"127.0.0.1:0\"\nclient-timeout = true\n",
            &[
                "`client-timeout`",
                "must be a number of seconds",
                "a boolean",
            ],
        ),
        (
            "addr = \"127.0.0.1:0\"\ndrain-timeout = 0.0\n",
            &["`drain-timeout`", "not in 0.001..=86400"],
        ),
        (
            "addr = \"not an address\"\n",
            &["`addr`", "invalid value 'not an address'"],
        ),
        (
            "engine = \"redis\"\n",
            &["`engine`", "possible values: kvs, sled"],
        ),
        (
            "addr = \"127.0.0.1:0\"\nlog-level = \"loud\"\n",
            &["`log-level`", "'loud'"],
        ),
        (
            "addr = \"127.0.0.1:0\"\n# comment\nthreads = \n",
            &["TOML parse error at line 3"],
        ),
        (
            "addr = \"127.0.0.1:0\"\n[server]\nthreads = 2\n",
            &["`server`", "unknown option"],
        ),
        (
            "addr = \"127.0.0.1:0\"\nconfig = \"other.toml\"\n",
            &["`config`", "unknown option"],
        ),
        (
            "addr = \"127.0.0.1:0\"\nrequirepass = \"a\"\nrequirepass-file = \"b\"\n",
            &["`requirepass` and `requirepass-file` cannot both be given"],
        ),
    ];
    // A password of the wrong type is refused without being shown.
    let secret = dir.path().join("secret.toml");
    std::fs::write(&secret, "requirepass = 918273645\n").unwrap();
    let out = run_server(dir.path(), &["--config", secret.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`requirepass`: must be a string"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("918273645"),
        "the password was shown: {stderr}"
    );

    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = run_server(dir.path(), &["--config", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("kvs-server: error: {}: ", file.display())),
            "{text:?}: the file is not named first: {stderr}"
        );
        for needle in *expected {
            assert!(
                stderr.contains(needle),
                "{text:?}: no {needle:?} in {stderr}"
            );
        }
        assert!(
            !stderr.contains("listening on"),
            "{text:?}: it started: {stderr}"
        );
    }

    let missing = dir.path().join("no-such.toml");
    let out = run_server(dir.path(), &["--config", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot read the config file {}",
            missing.display()
        )),
        "{stderr}"
    );

    // The command line is checked as before, config file or not.
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "addr = \"127.0.0.1:0\"\n").unwrap();
    let out = run_server(
        dir.path(),
        &["--config", good.to_str().unwrap(), "--threads", "0"],
    );
    assert_eq!(out.status.code(), Some(2));
    let help = run_server(dir.path(), &["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--config <FILE>"), "{help}");
    assert!(help.contains("--metrics-addr <IP:PORT>"), "{help}");
}

// ---------------------------------------------------------------------------------------
// --metrics-addr

/// `INFO` of a connection.
trait Info {
    /// `INFO`'s `field:value` lines.
    fn info(&mut self) -> BTreeMap<String, String>;
}

impl Info for Resp {
    fn info(&mut self) -> BTreeMap<String, String> {
        let Frame::Bulk(Some(text)) = self.call(&[b"INFO"]) else {
            panic!("INFO is not a bulk string");
        };
        String::from_utf8(text)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// The address of the metrics endpoint, from the server's log.
fn metrics_addr(server: &ServerProcess) -> SocketAddr {
    let line = server.wait_for_log("serving metrics at http://");
    line.rsplit("http://")
        .next()
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// Runs `curl ARGS` (no proxy: the endpoint is on loopback) and returns its stdout; panics
/// if curl fails or is missing.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--noproxy",
            "*",
            "--max-time",
            "60",
        ])
        .args(args)
        .output()
        .expect("curl runs (tests/setup.sh installs it)");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("curl's output is UTF-8")
}

/// One scrape, parsed; panics if any line is not text exposition format.
fn scrape(addr: SocketAddr) -> Exposition {
    let body = curl(&["--fail", &format!("http://{addr}/metrics")]);
    Exposition::parse(&body).unwrap_or_else(|e| panic!("{e}\nin the scrape:\n{body}"))
}

/// A parsed scrape: each sample by its name and labels as written (`kvs_info{...}`).
#[derive(Debug)]
struct Exposition {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    fn get(&self, name: &str) -> f64 {
        *self
            .samples
            .get(name)
            .unwrap_or_else(|| panic!("no sample {name} in {:?}", self.samples))
    }

    /// Parses the text exposition format (version 0.0.4) as Prometheus reads it, strictly:
    /// `# HELP name text`, `# TYPE name type` (before the samples of that name, once), and
    /// `name{label="value",...} value [timestamp]`, every line ended by `\n`. Beyond the
    /// format, kvs's own rules: every name starts with `kvs_`, counters end with `_total`.
    fn parse(text: &str) -> Result<Exposition, String> {
        let body = text
            .strip_suffix('\n')
            .ok_or("the last line has no line feed")?;
        let mut samples = BTreeMap::new();
        let mut types = BTreeMap::new();
        let mut helps = BTreeMap::new();
        for (number, line) in body.split('\n').enumerate() {
            let at = |what: &str| format!("line {}: {what}: {line:?}", number + 1);
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest
                    .split_once(' ')
                    .ok_or_else(|| at("HELP without text"))?;
                check_name(name).map_err(|e| at(&e))?;
                if help.trim().is_empty() || helps.insert(name.to_string(), help).is_some() {
                    return Err(at("empty or second HELP"));
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .ok_or_else(|| at("TYPE without type"))?;
                check_name(name).map_err(|e| at(&e))?;
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(at("unknown type"));
                }
                if kind == "counter" && !name.ends_with("_total") {
                    return Err(at("a counter whose name does not end in _total"));
                }
                if types.insert(name.to_string(), kind.to_string()).is_some() {
                    return Err(at("second TYPE"));
                }
                if samples
                    .keys()
                    .any(|s: &String| s.split('{').next() == Some(name))
                {
                    return Err(at("TYPE after its samples"));
                }
            } else if line.starts_with('#') || line.is_empty() {
                return Err(at("a comment or blank line kvs does not write"));
            } else {
                let (series, value) = parse_sample(line).map_err(|e| at(&e))?;
                let name = series.split('{').next().unwrap_or_default();
                if !types.contains_key(name) {
                    return Err(at("a sample without a TYPE line before it"));
                }
                if samples.insert(series.clone(), value).is_some() {
                    return Err(at("a series written twice"));
                }
            }
        }
        Ok(Exposition { samples, types })
    }
}

/// A metric name as the format allows it, and kvs's prefix.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        return Err(format!("{name:?} is not a metric name"));
    }
    if !name.starts_with("kvs_") {
        return Err(format!("{name:?} lacks the kvs_ prefix"));
    }
    Ok(())
}

/// `name{labels} value [timestamp]` into the series as written and the value.
fn parse_sample(line: &str) -> Result<(String, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    check_name(&line[..name_end])?;
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        // label="value" pairs, values with \\, \" and \n escapes.
        let mut chars = rest.char_indices().skip(1).peekable();
        let end = loop {
            let label_start = chars.peek().map(|&(i, _)| i).ok_or("unclosed labels")?;
            let mut label_end = label_start;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    label_end = i;
                    break;
                }
                if !(c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("bad label name character {c:?}"));
                }
            }
            if label_end == label_start {
                return Err("empty label name".into());
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted".into());
            }
            loop {
                match chars.next().ok_or("unclosed label value")? {
                    (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' | '"' | 'n' => {}
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    (_, '"') => break,
                    (_, '\n') => return Err("line feed in a label value".into()),
                    _ => {}
                }
            }
            match chars.next().ok_or("unclosed labels")? {
                (_, ',') => continue,
                (i, '}') => break i + 1,
                (_, c) => return Err(format!("{c:?} after a label value")),
            }
        };
        rest = &rest[end..];
    }
    let series = &line[..line.len() - rest.len()];
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = rest.split(' ');
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("{v:?} is not a number"))?,
    };
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("{timestamp:?} is not a timestamp"))?;
    }
    if fields.next().is_some() {
        return Err("more than a value and a timestamp".into());
    }
    Ok((series.to_string(), value))
}

/// The parser above refuses what is not exposition format (else the test below, which
/// relies on it, could pass on anything).
#[test]
fn the_exposition_parser_of_these_tests_is_strict() {
    let good = "# HELP kvs_a_total A.\n# TYPE kvs_a_total counter\nkvs_a_total 3\n\
                # HELP kvs_b B.\n# TYPE kvs_b gauge\nkvs_b{x=\"1\\\"2\",y=\"\"} 1.5 1700000000\n";
    let parsed = Exposition::parse(good).unwrap();
    assert_eq!(parsed.get("kvs_a_total"), 3.0);
    assert_eq!(parsed.get("kvs_b{x=\"1\\\"2\",y=\"\"}"), 1.5);
    for bad in [
        "# TYPE kvs_a gauge\nkvs_a 1",           // no final line feed
        "kvs_a 1\n",                             // no TYPE
        "# TYPE kvs_a counter\nkvs_a 1\n",       // counter without _total
        "# TYPE a gauge\na 1\n",                 // no kvs_ prefix
        "# TYPE kvs_a gauge\nkvs_a one\n",       // not a number
        "# TYPE kvs_a gauge\nkvs_a{x=1} 1\n",    // unquoted label
        "# TYPE kvs_a gauge\nkvs_a{x=\"1\" 1\n", // unclosed labels
        "# TYPE kvs_a gauge\nkvs_a  1\n",        // two spaces
        "# TYPE kvs_a gauge\n\nkvs_a 1\n",       // blank line
        "# TYPE kvs_a gauge\n# TYPE kvs_a gauge\nkvs_a 1\n", // second TYPE
        "# TYPE kvs_a gauge\nkvs_a 1\nkvs_a 2\n", // series twice
        "# TYPE kvs_a gauge\nkvs-a 1\n",         // bad name
    ] {
        assert!(Exposition::parse(bad).is_err(), "{bad:?} was accepted");
    }
}

/// The real server scraped with the real curl: every line is exposition format, the figures
/// are INFO's and move as commands go by, and other requests get 404, 405 and 400.
#[test]
fn metrics_are_scraped_with_curl_and_move_with_the_commands() {
    let dir = TempDir::new().unwrap();
    let server = ServerProcess::start(dir.path(), &["--metrics-addr", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    assert!(metrics.ip().is_loopback());

    let before = scrape(metrics);
    for (name, kind) in [
        ("kvs_info", "gauge"),
        ("kvs_uptime_seconds", "gauge"),
        ("kvs_connected_clients", "gauge"),
        ("kvs_connections_received_total", "counter"),
        ("kvs_commands_processed_total", "counter"),
        ("kvs_keyspace_hits_total", "counter"),
        ("kvs_keyspace_misses_total", "counter"),
        ("kvs_keyspace_keys", "gauge"),
        ("kvs_keyspace_expires", "gauge"),
        ("kvs_memory_used_bytes", "gauge"),
        ("kvs_disk_bytes", "gauge"),
    ] {
        assert_eq!(
            before.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
    }
    assert_eq!(
        before.get(&format!(
            "kvs_info{{version=\"{}\",engine=\"kvs\"}}",
            kvs::VERSION
        )),
        1.0
    );
    assert_eq!(before.get("kvs_connected_clients"), 0.0);
    assert_eq!(before.get("kvs_keyspace_keys"), 0.0);
    assert!(before.get("kvs_memory_used_bytes") > 0.0);

    let mut resp = Resp::connect(server.addr);
    let ok = Frame::Simple("OK".into());
    assert_eq!(resp.call(&[b"SET", b"a", b"1"]), ok);
    assert_eq!(resp.call(&[b"SET", b"b", b"2", b"EX", b"1000"]), ok);
    assert_eq!(resp.call(&[b"SET", b"c", b"3"]), ok);
    assert_eq!(resp.call(&[b"GET", b"a"]), Frame::Bulk(Some(b"1".to_vec())));
    assert_eq!(resp.call(&[b"GET", b"nope"]), Frame::Bulk(None));
    let info = resp.info();

    let after = scrape(metrics);
    // The connection is still open; it is the only one besides the scrapes (which are not
    // client connections).
    assert_eq!(after.get("kvs_connected_clients"), 1.0);
    assert_eq!(info["connected_clients"], "1");
    assert_eq!(
        after.get("kvs_connections_received_total") - before.get("kvs_connections_received_total"),
        1.0
    );
    // 3 SETs, 2 GETs and the INFO.
    assert_eq!(
        after.get("kvs_commands_processed_total") - before.get("kvs_commands_processed_total"),
        6.0
    );
    assert_eq!(
        after.get("kvs_commands_processed_total").to_string(),
        info["total_commands_processed"]
    );
    assert_eq!(
        after.get("kvs_keyspace_hits_total") - before.get("kvs_keyspace_hits_total"),
        1.0
    );
    assert_eq!(
        after.get("kvs_keyspace_misses_total") - before.get("kvs_keyspace_misses_total"),
        1.0
    );
    assert_eq!(after.get("kvs_keyspace_keys"), 3.0);
    assert_eq!(after.get("kvs_keyspace_expires"), 1.0);
    assert!(
        info["db0"].starts_with("keys=3,expires=1,"),
        "{}",
        info["db0"]
    );
    let ttl = after.get("kvs_keyspace_avg_ttl_seconds");
    assert!(ttl > 0.0 && ttl <= 1000.0, "{ttl}");
    assert!(after.get("kvs_disk_bytes") > before.get("kvs_disk_bytes"));
    assert!(after.get("kvs_uptime_seconds") >= before.get("kvs_uptime_seconds"));
    drop(resp);

    // Anything but GET /metrics.
    let status = |args: &[&str]| {
        let mut all = vec!["--output", "/dev/null", "--write-out", "%{http_code}"];
        all.extend_from_slice(args);
        curl(&all)
    };
    assert_eq!(status(&[&format!("http://{metrics}/")]), "404");
    assert_eq!(status(&[&format!("http://{metrics}/metricsx")]), "404");
    assert_eq!(
        status(&["--request", "POST", &format!("http://{metrics}/metrics")]),
        "405"
    );
    assert_eq!(
        status(&["--head", &format!("http://{metrics}/metrics")]),
        "405"
    );
    assert_eq!(
        status(&[&format!("http://{metrics}/metrics?name=kvs_info")]),
        "200"
    );
    let mut raw = TcpStream::connect(metrics).unwrap();
    raw.set_read_timeout(Some(PATIENCE)).unwrap();
    raw.write_all(b"HELLO THERE\r\n\r\n").unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
}

/// On the sled engine: the label names it, and the keyspace and the bytes on disk (sled's
/// files, a directory down) are its.
#[test]
fn metrics_name_the_sled_engine() {
    let dir = TempDir::new().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        &["--engine", "sled", "--metrics-addr", "127.0.0.1:0"],
    );
    let metrics = metrics_addr(&server);
    let mut resp = Resp::connect(server.addr);
    assert_eq!(resp.call(&[b"SET", b"k", b"v"]), Frame::Simple("OK".into()));
    let scraped = scrape(metrics);
    assert_eq!(
        scraped.get(&format!(
            "kvs_info{{version=\"{}\",engine=\"sled\"}}",
            kvs::VERSION
        )),
        1.0
    );
    assert_eq!(scraped.get("kvs_keyspace_keys"), 1.0);
    assert_eq!(scraped.get("kvs_connected_clients"), 1.0);
    assert!(scraped.get("kvs_disk_bytes") > 0.0);
}

/// Scrapers that connect and send nothing, dribble, or send an endless header neither stall
/// the server's clients nor keep a well-behaved scrape from being answered, and each is cut
/// off by the endpoint's deadline.
#[test]
fn a_hostile_scraper_stalls_nothing() {
    let dir = TempDir::new().unwrap();
    let server = ServerProcess::start(dir.path(), &["--metrics-addr", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);

    let started = Instant::now();
    let silent = TcpStream::connect(metrics).unwrap();
    let mut dribbling = TcpStream::connect(metrics).unwrap();
    dribbling.write_all(b"GET /metr").unwrap();
    let mut endless = TcpStream::connect(metrics).unwrap();
    endless.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let header = format!("X-Filler: {}\r\n", "x".repeat(1000));
    for _ in 0..16 {
        // Past the 8 KiB head limit the endpoint answers 431 and stops reading: a write may
        // then fail, which is the point.
        if endless.write_all(header.as_bytes()).is_err() {
            break;
        }
    }

    // Meanwhile clients are served, and a scrape is answered.
    let mut resp = Resp::connect(server.addr);
    assert_eq!(resp.call(&[b"SET", b"k", b"v"]), Frame::Simple("OK".into()));
    assert_eq!(resp.call(&[b"GET", b"k"]), Frame::Bulk(Some(b"v".to_vec())));
    assert_eq!(scrape(metrics).get("kvs_keyspace_keys"), 1.0);

    let mut answer = Vec::new();
    endless.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = endless.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");

    // The silent and the dribbling scraper are closed by the endpoint (5 s deadline), not by
    // us: reading sees the end of the stream, well before our own (much longer) timeout.
    for (name, mut stream) in [("silent", silent), ("dribbling", dribbling)] {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut rest = Vec::new();
        match stream.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "{name}: answered {rest:?}"),
            // A reset is a close too.
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{name}: {e}"),
        }
    }
    let took = started.elapsed();
    eprintln!("the idle scrapers were cut off after {took:?} (the deadline is 5 s)");
    // The deadline is 5 s; the bound tells "cut off by the deadline" from "never cut off"
    // (PATIENCE, 60 s, would have failed the read above first), with room for a slow machine.
    assert!(took < Duration::from_secs(45), "{took:?}");
    assert_eq!(resp.call(&[b"GET", b"k"]), Frame::Bulk(Some(b"v".to_vec())));
}

/// A scraper that connected and sends nothing does not hold up a graceful shutdown: the
/// endpoint cuts its connection instead of waiting out its 5 s deadline.
#[test]
fn a_silent_scraper_does_not_hold_up_the_shutdown() {
    let dir = TempDir::new().unwrap();
    let mut server = ServerProcess::start(dir.path(), &["--metrics-addr", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let mut silent = TcpStream::connect(metrics).unwrap();
    // Its scrape has begun once the endpoint answers another one (scrapes are accepted in
    // order), so the shutdown below finds it in flight.
    scrape(metrics);
    let started = Instant::now();
    assert!(
        server.signal_and_wait("TERM").success(),
        "{}",
        server.stderr()
    );
    let took = started.elapsed();
    eprintln!("stopped {took:?} after SIGTERM, with a silent scraper connected");
    // Waiting for the scraper would take its deadline, 5 s from its connection; a stop
    // takes milliseconds. 4 s tells the two apart with a wide margin for a slow machine.
    assert!(took < Duration::from_secs(4), "the shutdown took {took:?}");
    silent.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut rest = Vec::new();
    let _ = silent.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
}

// ---------------------------------------------------------------------------------------
// systemd

/// Receives one datagram (at most [`PATIENCE`]) as text.
fn receive(socket: &UnixDatagram) -> String {
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("a notification arrives on NOTIFY_SOCKET");
    String::from_utf8(buf[..n].to_vec()).expect("notifications are text")
}

/// The `NAME=value` lines of a notification.
fn fields(message: &str) -> BTreeMap<&str, &str> {
    message
        .split('\n')
        .map(|line| {
            line.split_once('=')
                .unwrap_or_else(|| panic!("{message:?}"))
        })
        .collect()
}

/// Starts the server with `NOTIFY_SOCKET=target`, checks that `READY=1` arrives on `socket`
/// naming the address it serves, that a client is served right after, and that SIGTERM
/// sends `STOPPING=1` before a clean exit.
fn readiness_over(socket: &UnixDatagram, target: &str) {
    let dir = TempDir::new().unwrap();
    let mut command = Command::new(kvs_server());
    command
        .args(["--addr", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", target);
    let mut server = ServerProcess::start_command(command, dir.path());

    let ready = receive(socket);
    let ready = fields(&ready);
    assert_eq!(ready.get("READY"), Some(&"1"), "{ready:?}");
    let status = ready.get("STATUS").expect("a STATUS line");
    assert_eq!(*status, format!("serving on {}", server.addr));
    // Right after READY=1, without waiting for anything else.
    let mut resp = Resp::connect(server.addr);
    assert_eq!(resp.call(&[b"PING"]), Frame::Simple("PONG".into()));
    drop(resp);

    assert!(
        server.signal_and_wait("TERM").success(),
        "{}",
        server.stderr()
    );
    let stopping = receive(socket);
    assert_eq!(
        fields(&stopping).get("STOPPING"),
        Some(&"1"),
        "{stopping:?}"
    );
    // Nothing after it.
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    assert!(socket.recv(&mut buf).is_err(), "a third notification");
}

#[test]
fn readiness_is_signalled_on_a_notify_socket_path() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    readiness_over(&socket, path.to_str().unwrap());
}

#[test]
fn readiness_is_signalled_on_an_abstract_notify_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("kvs-ops-test-{}-{:?}", std::process::id(), Instant::now());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    readiness_over(&socket, &format!("@{name}"));
}

/// A client's SHUTDOWN stops the server too: systemd hears STOPPING=1 then.
#[test]
fn shutdown_by_a_client_is_signalled_too() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut command = Command::new(kvs_server());
    command
        .args(["--addr", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &path);
    let mut server = ServerProcess::start_command(command, dir.path());
    assert_eq!(fields(&receive(&socket)).get("READY"), Some(&"1"));
    let mut resp = Resp::connect(server.addr);
    resp.stream.write_all(b"SHUTDOWN\r\n").unwrap();
    assert!(server.wait().success(), "{}", server.stderr());
    assert_eq!(fields(&receive(&socket)).get("STOPPING"), Some(&"1"));
}

/// The unit file has what a `Type=notify` service of kvs needs, `systemd-analyze verify`
/// finds nothing wrong with it (where systemd-analyze is installed), and where systemd runs
/// it starts for real.
#[test]
fn the_unit_file_is_valid_and_starts_where_systemd_runs() {
    let unit = std::fs::read_to_string(deploy().join("kvs-server.service")).unwrap();
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let has = |key: &str, value: &str| settings.contains(&(key, value));
    assert!(has("Type", "notify"));
    assert!(has("StateDirectory", "kvs"));
    assert!(has("WorkingDirectory", "/var/lib/kvs"));
    assert!(has("Restart", "on-failure"));
    assert!(has("User", "kvs"));
    assert!(has("NoNewPrivileges", "yes"));
    assert!(has("ProtectSystem", "strict"));
    assert!(settings.iter().any(|(k, _)| *k == "LimitNOFILE"));
    let exec = settings
        .iter()
        .find(|(k, _)| *k == "ExecStart")
        .map(|(_, v)| *v)
        .expect("ExecStart");
    assert_eq!(
        exec,
        "/usr/local/bin/kvs-server --config /etc/kvs/kvs-server.toml"
    );

    // The unit as installed, but with the binary this test built (verify checks that the
    // command exists and is executable).
    let dir = TempDir::new().unwrap();
    let binary = kvs_server();
    let local = unit.replace("/usr/local/bin/kvs-server", binary.to_str().unwrap());
    let unit_path = dir.path().join("kvs-server.service");
    std::fs::write(&unit_path, &local).unwrap();
    match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_path)
        .output()
    {
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "systemd-analyze verify: {stderr}");
            // Unknown keys and bad values are warnings with exit status 0.
            assert!(stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
            eprintln!("systemd-analyze verify: the unit file is valid");
        }
        Err(e) => {
            eprintln!("*** systemd-analyze is not installed ({e}): the unit file was NOT verified")
        }
    }

    let running = Command::new("systemctl")
        .arg("is-system-running")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("no systemctl: {e}"));
    if running != "running" && running != "degraded" {
        eprintln!(
            "*** systemd is not running here (systemctl is-system-running: {running}), as in \
             a container: the unit was NOT started for real"
        );
        return;
    }
    start_the_unit_for_real(&local);
}

/// Installs `unit` as a transient service with its own state directory and a config file on
/// free ports, starts it (`systemctl start` of a `Type=notify` unit returns once it said
/// `READY=1`), checks it is active and serving, stops it and checks it stopped cleanly.
fn start_the_unit_for_real(unit: &str) {
    let name = format!("kvs-ops-test-{}", std::process::id());
    let config = format!("/run/{name}.toml");
    std::fs::write(
        &config,
        "addr = \"127.0.0.1:0\"\nmetrics-addr = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    // No `kvs` user here: a dynamic one; the test's own state directory and config.
    let unit = unit
        .replace("User=kvs\n", "DynamicUser=yes\n")
        .replace("Group=kvs\n", "")
        .replace("StateDirectory=kvs\n", &format!("StateDirectory={name}\n"))
        .replace(
            "WorkingDirectory=/var/lib/kvs\n",
            &format!("WorkingDirectory=/var/lib/{name}\n"),
        )
        .replace("/etc/kvs/kvs-server.toml", &config);
    let unit_path = format!("/run/systemd/system/{name}.service");
    std::fs::write(&unit_path, unit).unwrap();
    let systemctl = |args: &[&str]| {
        let out = Command::new("systemctl").args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    assert!(systemctl(&["daemon-reload"]).0);
    let started = systemctl(&["start", &format!("{name}.service")]);
    let active = systemctl(&["is-active", &format!("{name}.service")]);
    let stopped = systemctl(&["stop", &format!("{name}.service")]);
    let after = systemctl(&["is-active", &format!("{name}.service")]);
    let result = systemctl(&[
        "show",
        "-p",
        "Result",
        "--value",
        &format!("{name}.service"),
    ]);
    let _ = std::fs::remove_file(&unit_path);
    let _ = std::fs::remove_file(&config);
    systemctl(&["daemon-reload"]);
    assert!(started.0, "systemctl start failed");
    assert_eq!(active.1, "active");
    assert!(stopped.0, "systemctl stop failed");
    assert_eq!(after.1, "inactive");
    assert_eq!(result.1, "success");
    eprintln!("systemd started {name}.service (READY=1) and stopped it cleanly");
}
