"""dev.py's venv: the constraints apply wherever they install, whatever Python runs dev.py (fast, nothing installed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# pip's output when a pin has no file for the venv's Python, and when no index answered (offline, DNS down)
MISFIT = ("ERROR: Ignored the following versions that require a different python version: 1.13.1 Requires-Python >=3.9,<3.13\n"
          "ERROR: Could not find a version that satisfies the requirement scipy==1.13.1 (from versions: 1.14.1, 1.15.0)\n"
          "ERROR: No matching distribution found for scipy==1.13.1\n")
OFFLINE = ("WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection "
           "broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f>: Failed to "
           "establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/numpy/\n"
           "ERROR: Could not find a version that satisfies the requirement numpy==2.1.3 (from versions: none)\n"
           "ERROR: No matching distribution found for numpy==2.1.3\n")
TIMEOUT = ("ERROR: Exception:\nTraceback (most recent call last):\n  ...\npip._vendor.urllib3.exceptions.ReadTimeoutError: "
           "HTTPSConnectionPool(host='files.pythonhosted.org', port=443): Read timed out.\n")


def _dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, venv_python: str) -> tuple[object, list[tuple[str, ...]]]:
    """dev.py loaded with its venv in tmp_path, a venv Python of version `venv_python`, and commands recorded."""
    spec = importlib.util.spec_from_file_location("dev_under_test", ROOT / "dev.py")
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    monkeypatch.setattr(dev, "VENV", tmp_path / ".venv")
    monkeypatch.setattr(dev, "BIN", tmp_path / ".venv" / "bin")
    monkeypatch.setattr(dev, "STAMP", tmp_path / ".venv" / ".saerl-installed")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text("")
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(dev, "sh", lambda *cmd: calls.append(cmd))
    monkeypatch.setattr(dev, "attempt", lambda *cmd: calls.append(cmd) or (0, ""))  # the pins install
    monkeypatch.setattr(dev.subprocess, "check_output", lambda *a, **k: venv_python.replace(".", " ") + "\n")
    return dev, calls


@pytest.mark.parametrize(("venv_python", "pins_install"), [("3.11", True), ("3.12", True), ("3.13", False)])
def test_the_tested_versions_go_in_wherever_they_install(tmp_path, monkeypatch, capsys, venv_python, pins_install):
    """The constraints (CI's versions, frozen on 3.11) were applied to a 3.11 venv alone: a 3.12 or 3.13 venv
    resolved pyproject's ranges afresh (numpy, scipy, zarr drifted) though every pin installs there. They are tried
    on any venv now; where pip cannot install them, the ranges go in, said so. A second call with nothing changed
    installs nothing (the stamp holds), whichever way the first went."""
    dev, calls = _dev(tmp_path, monkeypatch, venv_python)
    tried: list[tuple[str, ...]] = []
    monkeypatch.setattr(dev, "attempt", lambda *cmd: tried.append(cmd) or ((0, "") if pins_install else (1, MISFIT)))
    monkeypatch.setattr(sys, "version_info", (3, 11, 7))  # dev.py run by another Python than the venv's
    dev.ensure_venv()
    assert len(tried) == 1 and "-c" in tried[0] and "-e" in tried[0], "the pins are tried first, on any Python"
    fallback = [c for c in calls if "-e" in c]
    assert fallback == ([] if pins_install else [fallback[0]]) and all("-c" not in c for c in fallback)
    assert ("resolve afresh" in capsys.readouterr().out) == (not pins_install)
    assert dev.STAMP.read_text().endswith(" unpinned") == (not pins_install)
    calls.clear()
    tried.clear()
    dev.ensure_venv()
    assert calls == [] and tried == []


def test_a_python_older_than_saerl_needs_is_refused_before_anything_is_installed(tmp_path, monkeypatch, capsys):
    """python3 dev.py on Python 3.10 (Ubuntu 22.04's) made .venv, pulled a CUDA torch and was then refused by pip;
    now it stops first, naming the Python it needs, which is pyproject.toml's requires-python."""
    import tomllib

    dev, calls = _dev(tmp_path, monkeypatch, "3.11")
    monkeypatch.setattr(sys, "version_info", (3, 10, 12))
    with pytest.raises(SystemExit) as stopped:
        dev.ensure_venv()
    assert stopped.value.code == 2 and calls == []
    assert "saerl needs Python 3.11 or newer" in capsys.readouterr().err
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=" + ".".join(map(str, dev.MIN_PYTHON))


def test_a_venv_of_a_too_old_python_is_made_again(tmp_path, monkeypatch, capsys):
    """A .venv an older python3 made was reused by every later run, even under Python 3.11; it is made again."""
    dev, calls = _dev(tmp_path, monkeypatch, "3.10")
    monkeypatch.setattr(sys, "version_info", (3, 11, 7))
    versions = iter(["3 10\n", "3 11\n"])  # the old venv, then the new one

    def made_again(cmd):
        (tmp_path / ".venv" / "bin").mkdir(parents=True, exist_ok=True)
        (tmp_path / ".venv" / "bin" / "python").write_text("")
        calls.append(cmd)

    monkeypatch.setattr(dev.subprocess, "check_output", lambda *a, **k: next(versions))
    monkeypatch.setattr(dev, "sh", lambda *cmd: made_again(cmd) if "venv" in cmd else calls.append(cmd))
    dev.ensure_venv()
    assert "older than saerl needs" in capsys.readouterr().out
    assert calls[0][1:3] == ("-m", "venv")


@pytest.mark.parametrize("output", [OFFLINE, TIMEOUT, "ERROR: Could not install packages due to an OSError: [Errno 28]"])
def test_a_pinned_install_failing_for_a_passing_reason_is_not_recorded_unpinned(tmp_path, monkeypatch, capsys, output):
    """A network failure of the pinned install (pip reached no index, a download timed out) installed pyproject's
    ranges and stamped the venv " unpinned" for good, as if the pins did not fit this Python. Now dev.py stops with
    pip's code, asks to run it again, and records nothing; the next run tries the pins again."""
    dev, calls = _dev(tmp_path, monkeypatch, "3.11")
    monkeypatch.setattr(sys, "version_info", (3, 11, 7))
    monkeypatch.setattr(dev, "attempt", lambda *cmd: calls.append(cmd) or (1, output))
    with pytest.raises(SystemExit) as stopped:
        dev.ensure_venv()
    assert stopped.value.code == 1 and not dev.STAMP.exists()
    assert [c for c in calls if "-e" in c and "-c" not in c] == [], "the ranges were not installed"
    assert "run dev.py again" in capsys.readouterr().err
    assert dev.pins_misfit(MISFIT) and not dev.pins_misfit(OFFLINE)
    no_release = ("ERROR: Ignored the following versions that require a different python version: 0.1 Requires-Python "
                  ">=3.8,<3.13\nERROR: Could not find a version that satisfies the requirement foo==0.2 (from versions: "
                  "none)\nERROR: No matching distribution found for foo==0.2\n")
    assert dev.pins_misfit(no_release), "no release fits this Python: the ranges go in (it looped on 'run again')"
