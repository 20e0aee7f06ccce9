"""dev.py's venv: the constraints apply to a Python 3.11 venv, whatever Python runs dev.py (fast, nothing installed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    monkeypatch.setattr(dev.subprocess, "check_output", lambda *a, **k: venv_python.replace(".", " ") + "\n")
    return dev, calls


@pytest.mark.parametrize(("venv_python", "pinned"), [("3.11", True), ("3.12", False)])
def test_the_constraints_follow_the_venvs_python_not_the_one_running_dev_py(tmp_path, monkeypatch, capsys,
                                                                            venv_python, pinned):
    """dev.py decided from the Python running it: 3.11's pins were forced on a 3.12 venv, and a 3.11 venv drifted
    unpinned when dev.py ran under 3.12. The venv's own Python decides; a second call with nothing changed installs
    nothing (the stamp holds)."""
    dev, calls = _dev(tmp_path, monkeypatch, venv_python)
    monkeypatch.setattr(sys, "version_info", (3, 12, 0) if pinned else (3, 11, 7))  # the other one runs dev.py
    dev.ensure_venv()
    install = [c for c in calls if "-e" in c]
    assert len(install) == 1 and (("-c" in install[0]) == pinned)
    assert ("resolve afresh" in capsys.readouterr().out) == (not pinned)
    calls.clear()
    dev.ensure_venv()
    assert calls == []


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
    assert calls[0][1:3] == ("-m", "venv") and any("-c" in c for c in calls if "-e" in c)  # 3.11: pinned
