"""A git work tree laid out as saerl's checkout, for the tests of what a run records of its code
(saerl.artifacts.code_state, saerl.tracking.git_tags)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def git_in(repo: Path, *args: str) -> str:
    """The stripped output of `git <args>` in `repo`, committing as a throwaway user."""
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


def make_saerl_checkout(tmp_path: Path) -> Path:
    """A git work tree under tmp_path holding a package folder `saerl` and pyproject.toml, one commit (skips the test
    where git is not installed). out: the work tree's root."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    (repo / "saerl").mkdir(parents=True)
    (repo / "saerl" / "mod.py").write_text("x = 1\n")
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    git_in(repo, "init", "-q")
    git_in(repo, "add", ".")
    git_in(repo, "commit", "-q", "-m", "one")
    return repo
