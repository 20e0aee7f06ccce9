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
