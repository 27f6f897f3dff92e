//! Locating the workspace's executables (`kvs-server`, `kvs-client`, `kvs-admin`).
//!
//! Test executables live in `target/<profile>/deps/`; the binaries they test in
//! `target/<profile>/`. `make test` builds the binaries first; for a plain `cargo test`, the
//! first test to need them runs `cargo build` for them once (a no-op when they are fresh), so a
//! test never runs a stale binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The path of the `kvs-server` executable.
pub fn kvs_server() -> PathBuf {
    binary("kvs-server")
}

/// The path of the `kvs-client` executable.
pub fn kvs_client() -> PathBuf {
    binary("kvs-client")
}

/// The path of the `kvs-admin` executable.
pub fn kvs_admin() -> PathBuf {
    binary("kvs-admin")
}

/// Runs `kvs-client` with `args` and returns what it did.
pub fn client(args: &[&str]) -> Output {
    Command::new(kvs_client())
        .args(args)
        .output()
        .expect("kvs-client runs")
}

fn binary(name: &str) -> PathBuf {
    let dir = profile_dir();
    build_once(dir);
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// `target/<profile>`: the parent of the `deps/` directory holding the test executable.
fn profile_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable has a path");
        let mut dir = exe.parent().expect("test executable is in a directory");
        if dir.ends_with("deps") {
            dir = dir.parent().expect("deps/ has a parent");
        }
        dir.to_path_buf()
    })
}

fn build_once(profile_dir: &Path) {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ is inside the workspace");
        let mut command = Command::new(cargo);
        command.current_dir(workspace).args([
            "build",
            "--quiet",
            "-p",
            "kvs-server",
            "-p",
            "kvs-client",
            "-p",
            "kvs-admin",
        ]);
        if profile_dir.ends_with("release") {
            command.arg("--release");
        }
        let status = command.status().expect("cargo runs");
        assert!(status.success(), "cargo build of the binaries failed");
    });
}
