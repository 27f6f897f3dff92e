//! A password on the kvs protocol, against the real `kvs-server` on both engines: the `Auth`
//! request's bytes and the refusal of every other request before it, `KvsClient::auth`
//! (given again after the server was killed with `kill -9` and restarted), and `kvs-client
//! --password` / `KVS_PASSWORD`, whose output and exit codes are otherwise unchanged. The
//! password never reaches the server's log.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};

use kvs::protocol::{ErrorKind, Password, Request, Response, DEFAULT_MAX_FRAME_LEN};
use kvs::{KvsClient, KvsError};
use kvs_tests::binaries::{kvs_client, kvs_server};
use kvs_tests::server::PATIENCE;
use kvs_tests::ServerProcess;
use tempfile::TempDir;

const ENGINES: [&str; 2] = ["kvs", "sled"];

/// Distinctive, so that finding it in a log cannot be a coincidence.
const PASSWORD: &str = "kvs-pw-4f9a-never-logged";

fn start(dir: &TempDir, engine: &str, args: &[&str]) -> ServerProcess {
    let mut all = vec!["--engine", engine];
    all.extend_from_slice(args);
    ServerProcess::start(dir.path(), &all)
}

/// Sends one raw frame and returns the raw response frame, length prefix included.
fn exchange(stream: &mut TcpStream, frame: &[u8]) -> Vec<u8> {
    stream.write_all(frame).unwrap();
    let mut header = [0; 4];
    stream.read_exact(&mut header).unwrap();
    let mut payload = vec![0; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut payload).unwrap();
    [&header[..], &payload].concat()
}

fn frame(request: Request<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    request
        .encode_frame(&mut out, DEFAULT_MAX_FRAME_LEN)
        .unwrap();
    out
}

/// The kind and message of an error response frame.
fn error_of(response: &[u8]) -> (ErrorKind, String) {
    match Response::decode(&response[4..]).unwrap() {
        Response::Error { kind, message } => (kind, message.to_string()),
        other => panic!("not an error: {other:?}"),
    }
}

#[test]
fn every_request_before_auth_is_refused_and_auth_has_the_documented_bytes() {
    for engine in ENGINES {
        let data = TempDir::new().unwrap();
        let server = start(&data, engine, &["--requirepass", "pw"]);
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        for request in [
            Request::Get { key: b"k" },
            Request::Set {
                key: b"k",
                value: b"v",
            },
            Request::Remove { key: b"k" },
            Request::Scan {
                cursor: 0,
                count: 10,
                prefix: b"",
                pattern: None,
            },
            Request::Checkpoint { path: "cp" },
        ] {
            let (kind, message) = error_of(&exchange(&mut stream, &frame(request)));
            assert_eq!(kind, ErrorKind::InvalidArgument, "{engine}: {request:?}");
            assert!(
                message.contains("authentication required"),
                "{engine}: {message}"
            );
        }
        // A wrong password: the same kind, saying so; the connection stays open.
        let wrong = exchange(
            &mut stream,
            &frame(Request::Auth {
                password: Password(b"pW"),
            }),
        );
        let (kind, message) = error_of(&wrong);
        assert_eq!(kind, ErrorKind::InvalidArgument);
        assert!(message.contains("wrong password"), "{message}");
        // The right one, byte for byte as wire-protocol.md gives it, answered `Ok`.
        let auth = [0, 0, 0, 4, 0x0c, 2, b'p', b'w'];
        assert_eq!(
            frame(Request::Auth {
                password: Password(b"pw")
            }),
            auth
        );
        assert_eq!(exchange(&mut stream, &auth), [0, 0, 0, 1, 0x00]);
        // Now everything is served: Set answers Ok, Get the value.
        assert_eq!(
            exchange(
                &mut stream,
                &frame(Request::Set {
                    key: b"k",
                    value: b"v"
                })
            ),
            [0, 0, 0, 1, 0x00]
        );
        assert_eq!(
            exchange(&mut stream, &frame(Request::Get { key: b"k" })),
            [0, 0, 0, 4, 0x01, 0x01, 1, b'v']
        );
        // Nothing was written before the password: the store holds only `k`.
        assert!(!data.path().join("cp").exists(), "{engine}");
        drop(stream);
        // A new connection starts without it again.
        let mut again = TcpStream::connect(server.addr).unwrap();
        again.set_read_timeout(Some(PATIENCE)).unwrap();
        let (kind, _) = error_of(&exchange(&mut again, &frame(Request::Get { key: b"k" })));
        assert_eq!(kind, ErrorKind::InvalidArgument);
    }
}

#[test]
fn before_auth_frames_are_limited_to_64_kib_and_after_it_to_the_servers_limit() {
    for engine in ENGINES {
        let data = TempDir::new().unwrap();
        let server = start(&data, engine, &["--requirepass", "pw"]);
        // The length prefix alone of a 100 KiB Set: refused as soon as it is read, with a
        // Protocol error that says why, and the connection closed.
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let response = exchange(&mut stream, &(100u32 << 10).to_be_bytes());
        let (kind, message) = error_of(&response);
        assert_eq!(kind, ErrorKind::Protocol, "{engine}");
        assert!(
            message.contains("before the password is given") && message.contains("65536"),
            "{engine}: {message}"
        );
        let mut rest = Vec::new();
        assert_eq!(stream.read_to_end(&mut rest).unwrap_or(0), 0, "{engine}");
        // 64 KiB exactly is taken (and refused for the missing password).
        let value = vec![b'v'; (64 << 10) - 8];
        let set = frame(Request::Set {
            key: b"k",
            value: &value,
        });
        assert!(set.len() - 4 <= 64 << 10, "{}", set.len());
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let (kind, _) = error_of(&exchange(&mut stream, &set));
        assert_eq!(kind, ErrorKind::InvalidArgument, "{engine}");
        // After Auth, a 1 MiB value goes through on the same connection.
        let auth = frame(Request::Auth {
            password: Password(b"pw"),
        });
        assert_eq!(exchange(&mut stream, &auth), [0, 0, 0, 1, 0x00]);
        let big = vec![b'w'; 1 << 20];
        let set = frame(Request::Set {
            key: b"big",
            value: &big,
        });
        assert_eq!(exchange(&mut stream, &set), [0, 0, 0, 1, 0x00], "{engine}");
    }
}

#[test]
fn kvs_client_gives_its_password_and_again_after_the_server_restarts() {
    for engine in ENGINES {
        let data = TempDir::new().unwrap();
        // A fixed port, so that the restarted server is at the same address.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let server_command = || {
            let mut command = Command::new(kvs_server());
            command.args([
                "--addr",
                &addr,
                "--engine",
                engine,
                "--requirepass",
                PASSWORD,
            ]);
            command
        };
        let mut server = ServerProcess::start_command(server_command(), data.path());

        let mut client = KvsClient::connect(&addr).unwrap();
        let refused = client.set("k".to_string(), "v".to_string()).unwrap_err();
        assert!(
            matches!(
                &refused,
                KvsError::Remote { kind: ErrorKind::InvalidArgument, message }
                    if message.contains("authentication required")
            ),
            "{engine}: {refused}"
        );
        let wrong = client.auth(b"not it").unwrap_err();
        assert_eq!(wrong.kind(), ErrorKind::InvalidArgument, "{wrong}");
        assert!(wrong.to_string().contains("wrong password"), "{wrong}");
        // Still refused: a wrong password is not kept.
        assert!(client.get("k".to_string()).is_err());
        client.auth(PASSWORD.as_bytes()).unwrap();
        client.set("k".to_string(), "v".to_string()).unwrap();
        assert_eq!(client.get("k".to_string()).unwrap(), Some("v".to_string()));
        assert!(
            !format!("{client:?}").contains(PASSWORD),
            "{client:?} shows the password"
        );

        // kill -9 and a restart on the same address: the first request finds the connection
        // lost, the next connects again and gives the password before it.
        assert!(!server.signal_and_wait("KILL").success());
        drop(server);
        let server = ServerProcess::start_command(server_command(), data.path());
        let lost = client.get("k".to_string());
        assert!(
            matches!(lost, Err(KvsError::ConnectionLost { .. })) || lost.is_ok(),
            "{engine}: {lost:?}"
        );
        assert_eq!(client.get("k".to_string()).unwrap(), Some("v".to_string()));
        client.set("k2".to_string(), "w".to_string()).unwrap();

        // A server without a password takes any.
        let open_dir = TempDir::new().unwrap();
        let open = start(&open_dir, engine, &[]);
        let mut client = KvsClient::connect(open.addr).unwrap();
        client.auth(b"anything").unwrap();
        client.set("k".to_string(), "v".to_string()).unwrap();

        assert!(!server.stderr().contains(PASSWORD), "{}", server.stderr());
    }
}

/// `kvs-client args` with `KVS_PASSWORD` set to `env` (or unset).
fn kvs_client_with(args: &[&str], env: Option<&str>) -> Output {
    let mut command = Command::new(kvs_client());
    command.args(args).env_remove("KVS_PASSWORD");
    if let Some(env) = env {
        command.env("KVS_PASSWORD", env);
    }
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn kvs_client_takes_the_password_from_a_flag_or_the_environment() {
    for engine in ENGINES {
        let data = TempDir::new().unwrap();
        let server = start(&data, engine, &["--requirepass", PASSWORD]);
        let addr = server.addr_arg();
        let a = ["--addr", addr.as_str()];
        let with_flag = |command: &[&str]| {
            let mut args = command.to_vec();
            args.extend_from_slice(&a);
            args.extend_from_slice(&["--password", PASSWORD]);
            kvs_client_with(&args, None)
        };
        let with_env = |command: &[&str], env: &str| {
            let mut args = command.to_vec();
            args.extend_from_slice(&a);
            kvs_client_with(&args, Some(env))
        };
        // The outputs and exit codes of cli.rs's table, with the password given.
        let set = with_flag(&["set", "k", "v"]);
        assert!(set.status.success() && set.stdout.is_empty(), "{set:?}");
        let get = with_env(&["get", "k"], PASSWORD);
        assert!(get.status.success(), "{get:?}");
        assert_eq!(stdout(&get), "v\n");
        let missing = with_flag(&["get", "nope"]);
        assert!(missing.status.success());
        assert_eq!(stdout(&missing), "Key not found\n");
        let rm = with_env(&["rm", "nope"], PASSWORD);
        assert_eq!(rm.status.code(), Some(1));
        assert_eq!(stderr(&rm), "Key not found\n");
        let rm = with_flag(&["rm", "k"]);
        assert!(rm.status.success() && rm.stdout.is_empty(), "{rm:?}");
        // The flag wins over the environment.
        let flag_wins = {
            let mut args = vec!["get", "k"];
            args.extend_from_slice(&a);
            args.extend_from_slice(&["--password", PASSWORD]);
            kvs_client_with(&args, Some("wrong"))
        };
        assert!(flag_wins.status.success(), "{flag_wins:?}");

        // Without it, or with a wrong one: exit 1 and a message saying which.
        let mut args = vec!["get", "k"];
        args.extend_from_slice(&a);
        let none = kvs_client_with(&args, None);
        assert_eq!(none.status.code(), Some(1), "{none:?}");
        assert!(
            stderr(&none).starts_with("kvs-client: error: ")
                && stderr(&none).contains("authentication required"),
            "{none:?}"
        );
        assert!(none.stdout.is_empty());
        let wrong = with_env(&["get", "k"], "wrong");
        assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
        assert!(stderr(&wrong).contains("wrong password"), "{wrong:?}");

        assert!(!server.stderr().contains(PASSWORD), "{}", server.stderr());
    }
}
