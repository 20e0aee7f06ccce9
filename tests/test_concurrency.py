"""Two processes on one artifact root at once: both run the smoke config up to extract, started together.
Exactly one computes the extract artifact; the other waits on the per-key lock and then reuses it; no partial
folder is left behind and both end with the same verified artifact."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_resume import UPSTREAM, copy_stages, finish, smoke_upstream, start_runner

from saerl.artifacts import ArtifactStore

pytestmark = pytest.mark.slow

N_RUNNERS = 2
# Slow enough that the extraction (~60 prompt-chunks) outlasts the gap between the two starts many times over.
SLEEP_AFTER_CHUNK_S = 0.05
MIN_WAIT_S = 1.0  # the runner that did not compute must have been blocked on the lock at least this long
READY_TIMEOUT_S = 300


def test_two_processes_one_computes_the_other_waits_and_reuses(tmp_path_factory):
    root = copy_stages(smoke_upstream(tmp_path_factory), tmp_path_factory.mktemp("shared-root"), UPSTREAM)
    go = root / "go"
    procs = [start_runner(root, "extract", SLEEP_AFTER_CHUNK_S, str(go)) for _ in range(N_RUNNERS)]
    deadline = time.monotonic() + READY_TIMEOUT_S
    while len(list(root.glob("go.ready-*"))) < N_RUNNERS:  # both imported everything and wait at the line
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    go.touch()
    results = [finish(p) for p in procs]

    extract = [r["extract"] for r in results]
    assert sorted(r["computed"] for r in extract) == [False, True]
    assert len({r["key"] for r in extract}) == 1 and len({r["path"] for r in extract}) == 1
    waiter = next(r for r in extract if not r["computed"])
    assert waiter["seconds"] >= MIN_WAIT_S, f"the reusing runner did not wait on the lock: {waiter}"
    assert all(not r[s]["computed"] for r in results for s in UPSTREAM)
    assert not list(root.glob("*/.partial-*")) and not list(root.glob("*/.trash-*"))
    assert ArtifactStore(root).problems("extract", extract[0]["key"]) == []
    assert Path(extract[0]["path"]).is_dir()
