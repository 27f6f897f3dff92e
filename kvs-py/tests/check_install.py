"""Checks of the kvs wheel as users get it, run by kvs-py/tests/run.sh (not collected by pytest).

    python check_install.py wheel WHEEL VERSION
        The wheel file itself: its name (abi3 for CPython 3.9 on), the files it ships (the
        package, the compiled module, the type stubs and py.typed) and its metadata.

    python check_install.py installed VERSION
        Run by the interpreter of the environment the wheel was installed into, with the PATH
        the install used: no cargo, rustc or rustup on it; `pip check` clean; `pip show kvs`
        with name, version, license and summary; `import kvs` resolving to that
        environment's site-packages, with the stubs and py.typed beside it.

Prints one "ok ..." line per check; on the first failed one prints "FAIL ..." and exits 1.
"""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

SUMMARY = "An embeddable key/value store (the kvs engine) and a client for kvs-server"
LICENSE = "MIT OR Apache-2.0"
# Files every wheel must ship (the compiled module's name is checked separately).
PACKAGE_FILES = ["kvs/__init__.py", "kvs/_kvs.pyi", "kvs/py.typed"]
# Classifier prefixes the metadata must have at least one of each.
CLASSIFIER_KINDS = [
    "License :: OSI Approved :: MIT License",
    "License :: OSI Approved :: Apache Software License",
    "Operating System :: ",
    "Programming Language :: Python :: 3.9",
    "Programming Language :: Python :: 3 :: Only",
    "Programming Language :: Rust",
    "Topic :: Database",
    "Typing :: Typed",
]


def ok(what: str) -> None:
    print(f"ok   {what}", flush=True)


def fail(what: str) -> None:
    print(f"FAIL {what}", flush=True)
    sys.exit(1)


def check(condition: bool, what: str, detail: str = "") -> None:
    if condition:
        ok(what)
    else:
        fail(f"{what}{': ' + detail if detail else ''}")


def check_wheel(wheel: Path, version: str) -> None:
    # {name}-{version}-{python tag}-{abi tag}-{platform tag}.whl
    match = re.fullmatch(r"kvs-([^-]+)-cp39-abi3-([a-z0-9_]+)\.whl", wheel.name)
    check(match is not None, f"{wheel.name} is an abi3 wheel of kvs for CPython 3.9 and later")
    assert match is not None
    check(match.group(1) == version, f"the wheel's version is the workspace's ({version})",
          match.group(1))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        missing = [name for name in PACKAGE_FILES if name not in names]
        check(not missing, f"the wheel ships {', '.join(PACKAGE_FILES)}", f"missing {missing}")
        modules = [n for n in names if re.fullmatch(r"kvs/_kvs\.abi3\.so", n)]
        check(len(modules) == 1, "the wheel ships the compiled module kvs/_kvs.abi3.so",
              f"files: {names}")
        stubs = archive.read("kvs/_kvs.pyi").decode()
        check("class KvStore" in stubs and "class Client" in stubs,
              "kvs/_kvs.pyi holds the stubs of KvStore and Client")
        metadata_name = f"kvs-{version}.dist-info/METADATA"
        check(metadata_name in names, f"the wheel has {metadata_name}")
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    expected = {
        "Name": "kvs",
        "Version": version,
        "Summary": SUMMARY,
        "License": LICENSE,
        "Requires-Python": ">=3.9",
    }
    for field, value in expected.items():
        check(metadata.get(field) == value, f"METADATA {field}: {value}",
              f"got {metadata.get(field)!r}")
    check((metadata.get("Description-Content-Type") or "").startswith("text/markdown"),
          "METADATA has the README as a markdown description")
    description = metadata.get_payload()
    check(isinstance(description, str) and description.startswith("# kvs for Python"),
          "METADATA's description is kvs-py/README.md")
    classifiers = metadata.get_all("Classifier") or []
    for kind in CLASSIFIER_KINDS:
        check(any(c.startswith(kind) for c in classifiers), f"METADATA classifier {kind}...",
              f"classifiers: {classifiers}")
    # The repository states no project URL, so the metadata must not invent one.
    check(metadata.get_all("Project-URL") is None, "METADATA has no Project-URL")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


def check_installed(version: str) -> None:
    found = {tool: shutil.which(tool) for tool in ("cargo", "rustc", "rustup")}
    check(not any(found.values()),
          f"no cargo, rustc or rustup on PATH={os.environ.get('PATH', '')}", str(found))

    pip_check = run("-m", "pip", "check")
    check(pip_check.returncode == 0, "python -m pip check is clean",
          pip_check.stdout + pip_check.stderr)

    show = run("-m", "pip", "show", "kvs")
    check(show.returncode == 0, "pip show kvs", show.stderr)
    fields = dict(
        line.split(": ", 1) for line in show.stdout.splitlines() if ": " in line
    )
    expected = {"Name": "kvs", "Version": version, "License": LICENSE, "Summary": SUMMARY}
    for field, value in expected.items():
        check(fields.get(field) == value, f"pip show kvs: {field}: {value}",
              f"got {fields.get(field)!r}")

    import kvs  # noqa: PLC0415 (after the PATH check, so that a failure there reads first)

    site = Path(sysconfig.get_paths()["platlib"]).resolve()
    package = Path(kvs.__file__).resolve().parent
    check(package == site / "kvs", f"import kvs resolves to {site / 'kvs'}", str(package))
    check(kvs.__version__ == version, f"kvs.__version__ is {version}", kvs.__version__)
    for name in ("_kvs.pyi", "py.typed"):
        check((package / name).is_file(), f"{name} is installed beside the package")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "wheel":
        check_wheel(Path(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "installed":
        check_installed(sys.argv[2])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
