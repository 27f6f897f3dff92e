//! The Python with redis-py that the tests use: the virtual environment `tests/setup.sh` and
//! `kvs-py/tests/run.sh` make (`KVS_PY_VENV`, default `target/py-venv`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The virtual environment's interpreter, if it can `import redis`; `None` after saying loudly
/// that the test skips.
pub fn with_redis() -> Option<PathBuf> {
    let venv = match std::env::var_os("KVS_PY_VENV") {
        Some(venv) => PathBuf::from(venv),
        None => match std::env::var_os("CARGO_TARGET_DIR") {
            Some(target) => PathBuf::from(target).join("py-venv"),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("tests/ is inside the workspace")
                .join("target/py-venv"),
        },
    };
    let python = venv.join("bin/python");
    let imports = Command::new(&python)
        .args(["-c", "import redis"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if imports {
        return Some(python);
    }
    eprintln!(
        "\n*** SKIPPED: no redis-py in {} (`bash tests/setup.sh` installs it), so the \
         redis-py clients are not tested here. ***\n",
        venv.display()
    );
    None
}
