//! Generates the C header from this crate's sources into `$OUT_DIR/kvs.h`. (The shared
//! library, its SONAME and its symbol versions are `install.sh`'s: it links libkvs.so from
//! the static library with `libkvs.map`.)
//!
//! The committed header is `include/kvs.h`; `tests/run.sh` fails when it differs from the one
//! generated here, and `tests/run.sh --update-header` copies the fresh one over it. The build
//! never writes outside `$OUT_DIR`.

use std::env;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");

    let (Ok(crate_dir), Ok(out_dir)) = (env::var("CARGO_MANIFEST_DIR"), env::var("OUT_DIR")) else {
        eprintln!("build.rs must run under cargo (CARGO_MANIFEST_DIR and OUT_DIR unset)");
        return ExitCode::FAILURE;
    };
    let crate_dir = PathBuf::from(crate_dir);
    let config = match cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("cannot read cbindgen.toml: {e}");
            return ExitCode::FAILURE;
        }
    };
    // with_src (not with_crate): parse lib.rs and its modules directly, without running
    // `cargo metadata` from inside the build.
    let generated = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src").join("lib.rs"))
        .generate();
    match generated {
        Ok(bindings) => {
            bindings.write_to_file(PathBuf::from(out_dir).join("kvs.h"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cbindgen failed to generate kvs.h: {e}");
            ExitCode::FAILURE
        }
    }
}
