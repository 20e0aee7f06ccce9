#!/usr/bin/env python3
"""Set up the project venv (once) and run the demo or the tests: `python3 dev.py demo|test [args]`.

Needs nothing but Python 3.11+. The venv lives in `.venv/`; it is created on first use and reused after,
and reinstalled when pyproject.toml or the constraints change. torch goes in first as `torch==2.13.0`, or pip would
pull the newest (multi-GB CUDA) torch through a dependency's open torch range; where pip's configuration offers
torch's CPU wheel (as on the machines this was built on) that is the one installed. On Python 3.11 every other
package is installed at the version of constraints/py311.txt (the environment CI tested), so two installs a month
apart test the same stack; where they do not resolve (pip says a pinned version has no file for that Python, or the
pins conflict) the ranges of pyproject.toml resolve afresh (said when it happens); any other failure of the pinned
install (the network's) stops dev.py, to be run again.
"""

from __future__ import annotations

import hashlib
import locale
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".saerl-installed"
TORCH = "torch==2.13.0"
CONSTRAINTS = ROOT / "constraints" / "py311.txt"  # the exact versions CI tests, frozen on Python 3.11 (every one has a
# wheel for 3.12 and 3.13 too, and their tests pass there: session 38)
MIN_PYTHON = (3, 11)  # pyproject.toml's requires-python
PYTEST_WORKERS = "4"
SLOWEST_SHOWN = 15  # the slowest tests `dev.py test` lists after the run (pytest --durations), where CI time goes
# what pip writes when the network failed it (urllib3's errors, its retries, no index answering) ...
NETWORK_ERRORS = ("Retrying (Retry(", "NewConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                  "ProtocolError", "Max retries exceeded", "Connection broken", "Temporary failure in name resolution",
                  "Name or service not known", "Network is unreachable", "ProxyError", "SSLError", "IncompleteRead",
                  "HTTP error", "Could not fetch URL")
# ... and when the pins do not resolve on this Python: a pinned version with no file for it, conflicting pins, or a
# pinned sdist that does not build here
MISFIT_ERRORS = ("Could not find a version that satisfies", "No matching distribution found", "ResolutionImpossible",
                 "requires a different python version", "subprocess-exited-with-error", "Failed to build",
                 "Failed building wheel")


def sh(*cmd: str) -> None:
    """Run a command from the repo root, exiting with its code on failure."""
    print("+", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=ROOT)
    if code:
        sys.exit(code)


def attempt(*cmd: str) -> tuple[int, str]:
    """Run a command from the repo root, its output shown once it ends (a failure is the caller's to handle).
    out: (its exit code, its output: stdout and stderr together)."""
    print("+", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          encoding=locale.getpreferredencoding(False), errors="replace")  # the child's own (pip's)
    print(done.stdout, end="", flush=True)
    return done.returncode, done.stdout


def pins_misfit(output: str) -> bool:
    """Did a pinned install fail because the pins do not resolve on this Python (a pinned version with no wheel or
    build for it, pins that conflict: MISFIT_ERRORS), not for a reason that passes (the network: NETWORK_ERRORS,
    which wins; "(from versions: none)" says neither: pip prints it offline and where no release fits this
    Python)? in: pip's output; out: the verdict (False for a failure neither names: nothing says the pins do not
    fit)."""
    if any(marker in output for marker in NETWORK_ERRORS):
        return False
    return any(marker in output for marker in MISFIT_ERRORS)


def check_python() -> None:
    """Exit with the fix when the Python running dev.py is older than MIN_PYTHON: a 3.10 went on to make .venv, pull
    a CUDA torch (gigabytes) and only then be refused by pip. in/out: nothing."""
    if tuple(sys.version_info[:2]) < MIN_PYTHON:
        want = ".".join(map(str, MIN_PYTHON))
        print(f"dev.py: this is Python {'.'.join(map(str, sys.version_info[:2]))}; saerl needs Python {want} or newer "
              f"(pyproject.toml's requires-python): run it with a newer one, e.g. `python{want} dev.py "
              f"{' '.join(sys.argv[1:]) or 'demo'}`", file=sys.stderr)
        sys.exit(2)


def venv_version() -> tuple[int, ...]:
    """The major and minor version of .venv's Python. in: nothing; out: e.g. (3, 11)."""
    out = subprocess.check_output([str(BIN / "python"), "-c", "import sys; print(*sys.version_info[:2])"],
                                  text=True, encoding="utf-8")
    return tuple(int(v) for v in out.split())


def ensure_venv() -> None:
    """Create .venv and install torch (CPU) then the package with dev extras, unless already current. A .venv of a
    Python older than MIN_PYTHON (made by an older python3 before) is made again with the one running dev.py."""
    check_python()
    if (BIN / "python").exists() and (old := venv_version()) < MIN_PYTHON:
        print(f"dev.py: .venv has Python {'.'.join(map(str, old))}, older than saerl needs: making it "
              f"again with Python {'.'.join(map(str, sys.version_info[:2]))}", flush=True)
        shutil.rmtree(VENV)
    if not (BIN / "python").exists():
        sh(sys.executable, "-m", "venv", str(VENV))
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()
                            + (CONSTRAINTS.read_bytes() if CONSTRAINTS.exists() else b"")).hexdigest()
    if STAMP.exists() and STAMP.read_text(encoding="utf-8").split()[:1] == [wanted]:
        return
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    sh(*pip, "-q", "--upgrade", "pip")
    sh(*pip, "-q", TORCH)
    # the versions CI tested wherever they install (they were kept to Python 3.11, and 3.12's and 3.13's installs
    # drifted to other numpy, scipy and zarr versions though the pins install there); else the ranges, said so
    code, output = attempt(*pip, "-q", "-e", ".[dev]", "-c", str(CONSTRAINTS)) if CONSTRAINTS.exists() else (1, "")
    pinned = code == 0
    version = ".".join(map(str, venv_version()))
    if not pinned and CONSTRAINTS.exists() and not pins_misfit(output):  # a failure that passes: no " unpinned" stamp
        print(f"dev.py: installing {CONSTRAINTS.relative_to(ROOT)} (the versions CI tested) failed, and pip's output "
              f"above does not say they do not fit Python {version} (a network failure?): nothing was recorded; run "
              "dev.py again once that is fixed", file=sys.stderr, flush=True)
        sys.exit(code)
    if not pinned:
        print(f"dev.py: {CONSTRAINTS.relative_to(ROOT)} (the versions CI tested, on Python 3.11) does not install on "
              f"Python {version}: pyproject.toml's ranges resolve afresh here (an environment CI did not test)",
              flush=True)
        sh(*pip, "-q", "-e", ".[dev]")
    STAMP.write_text(wanted + ("" if pinned else " unpinned"), encoding="utf-8")


def main() -> int:
    """`python3 dev.py setup|demo|test [args]`: make the venv current, then run the demo or lint and the tests."""
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test", "setup"):
        print(__doc__)
        return 2
    ensure_venv()
    what, rest = sys.argv[1], sys.argv[2:]
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if what == "demo":
        sh(str(BIN / "saerl"), "demo", *rest)
    elif what == "test":
        sh(str(BIN / "ruff"), "check", "saerl", "tasks", "flows", "tests", "benchmarks", "dev.py")
        # Test files run on up to PYTEST_WORKERS processes (pytest-xdist), a file's tests in one worker so its
        # module fixtures are built once. Many slow tests wait on servers and subprocesses, so two workers on two
        # cores beat one (675 s to 405 s when this was chosen; the grown suite took 770 s so in session 25).
        # The SLOWEST_SHOWN slowest tests are listed last: CI's log says where its time goes.
        sh(str(BIN / "python"), "-m", "pytest", "-q", "-ra", "-n", "auto", "--maxprocesses", PYTEST_WORKERS,
           "--dist", "loadfile", f"--durations={SLOWEST_SHOWN}", *rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
