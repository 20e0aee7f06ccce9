"""saerl.artifacts: atomic builds, manifests, verification, resume through chunk logs, locking."""

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest
from gitrepo import git_in, make_saerl_checkout

from saerl.artifacts import MANIFEST, ArtifactStore, CorruptArtifact


def _write(build, text="hello"):
    (build.path / "a.txt").write_text(text)
    (build.path / "sub").mkdir(exist_ok=True)
    (build.path / "sub" / "b.bin").write_bytes(b"\x00\x01" * 100)
    build.note(rows=2)


def test_build_publishes_with_manifest(tmp_path):
    import torch  # imported, as by a stage that ran a model: the kernels' vector unit is part of where it was built

    store = ArtifactStore(tmp_path)
    ref, computed = store.ensure("s", "k1", _write, {"inputs": {"x": "1"}})
    assert computed
    m = ref.manifest()
    assert m["rows"] == 2 and m["inputs"] == {"x": "1"} and set(m["files"]) == {"a.txt", "sub/b.bin"}
    assert "torch" in m["library_versions"]
    assert m["machine"]["cpu"] and m["machine"]["torch_cpu"] == torch.backends.cpu.get_cpu_capability()
    assert m["machine"]["torch_threads"] == str(torch.get_num_threads())
    assert not store.partial_path("s", "k1").exists()
    ref2, computed2 = store.ensure("s", "k1", lambda b: pytest.fail("must not recompute"))
    assert not computed2 and ref2 == ref


def test_failed_build_leaves_no_final_and_keeps_partial(tmp_path):
    store = ArtifactStore(tmp_path)

    def boom(build):
        (build.path / "half.txt").write_text("x")
        raise RuntimeError("died")

    with pytest.raises(RuntimeError):
        store.ensure("s", "k", boom)
    assert not store.path("s", "k").exists()
    assert (store.partial_path("s", "k") / "half.txt").exists()


def test_a_killed_atomic_writes_temp_file_is_not_published_by_the_resumed_build(tmp_path):
    """A process killed inside write_file_atomic leaves '.<name>.tmp-<pid>' in the partial folder; the resumed
    build hashed it into the artifact (a label stage's 5 MB of stale parquet, listed in the manifest). Publishing
    removes such temp files, and only those; reopening the partial does not: the shards of a sharded build reopen
    one partial folder while others write their chunk marks through temp files there."""
    from saerl.artifacts import write_file_atomic

    store = ArtifactStore(tmp_path)
    partial = store.partial_path("s", "k")
    (partial / "sub").mkdir(parents=True)
    (partial / ".labels.parquet.tmp-26168").write_bytes(b"half")  # what SIGKILL inside the write left
    (partial / "sub" / ".b.bin.tmp-7").write_bytes(b"half")
    (partial / ".keep.tmp-notapid").write_bytes(b"a file of the stage's own")

    def build(b):
        write_file_atomic(b.path / "labels.parquet", lambda tmp: tmp.write_bytes(b"whole"))

    store.begin("s", "k")  # a second shard starting while the first one writes
    assert (partial / ".labels.parquet.tmp-26168").exists(), "another writer's temp file is left alone"
    ref, _ = store.ensure("s", "k", build)
    assert set(ref.manifest()["files"]) == {"labels.parquet", ".keep.tmp-notapid"}


def test_resume_skips_finished_chunks(tmp_path):
    store = ArtifactStore(tmp_path)
    calls = []

    def chunked(build, fail_at=None):
        for i in range(4):
            if build.chunks.is_done(i):
                continue
            if i == fail_at:
                raise RuntimeError("killed")
            calls.append(i)
            (build.path / f"c{i}").write_text(str(i))
            build.chunks.mark(i, rows=1)

    with pytest.raises(RuntimeError):
        store.ensure("s", "k", lambda b: chunked(b, fail_at=2))
    assert calls == [0, 1]
    store.ensure("s", "k", chunked)
    assert calls == [0, 1, 2, 3]
    assert "_chunks/0.json" not in store.path("s", "k").joinpath(MANIFEST).read_text()


def test_publish_cut_short_still_resumes_finished_chunks(tmp_path, monkeypatch):
    """A build killed while publishing (hashing a large artifact takes a while) keeps its chunk log: the rerun
    redoes no chunk."""
    from saerl import artifacts

    store = ArtifactStore(tmp_path)
    calls = []

    def chunked(build):
        for i in range(3):
            if not build.chunks.is_done(i):
                calls.append(i)
                (build.path / f"c{i}").write_text(str(i))
                build.chunks.mark(i)

    real_hash_tree = artifacts.hash_tree

    def killed(folder):
        raise KeyboardInterrupt("killed while hashing")

    monkeypatch.setattr(artifacts, "hash_tree", killed)
    with pytest.raises(KeyboardInterrupt):
        store.ensure("s", "k", chunked)
    monkeypatch.setattr(artifacts, "hash_tree", real_hash_tree)
    store.ensure("s", "k", chunked)
    assert calls == [0, 1, 2]
    assert set(store.open("s", "k").manifest()["files"]) == {"c0", "c1", "c2"}
    assert not (store.path("s", "k") / artifacts.CHUNK_DIR).exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
def test_corruption_is_detected_named_and_rebuilt(tmp_path, damage):
    store = ArtifactStore(tmp_path)
    ref, _ = store.ensure("s", "k", _write)
    target = ref.file("sub/b.bin")
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[10] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:50])
    elif damage == "delete":
        target.unlink()
    else:
        ref.file(MANIFEST).write_text("{not json")
    fresh = ArtifactStore(tmp_path)
    assert not fresh.is_complete("s", "k")
    with pytest.raises(CorruptArtifact) as err:
        fresh.open("s", "k")
    assert str(store.path("s", "k")) in str(err.value)
    _, computed = fresh.ensure("s", "k", _write)
    assert computed and fresh.is_complete("s", "k")
    assert not list((tmp_path / "s").glob(".trash-*"))


def _slow_build(root, out):
    store = ArtifactStore(root)

    def compute(build):
        time.sleep(1.0)
        (build.path / "x").write_text("1")

    _, computed = store.ensure("s", "k", compute)
    out.put(computed)


def test_two_processes_one_computes_other_reuses(tmp_path):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_slow_build, args=(str(tmp_path), q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    results = sorted([q.get(timeout=5), q.get(timeout=5)])
    assert results == [False, True]
    assert not list((tmp_path / "s").glob(".partial-*"))


def test_manifest_is_valid_json_with_hashes(tmp_path):
    store = ArtifactStore(tmp_path)
    ref, _ = store.ensure("s", "k", _write)
    m = json.loads(ref.file(MANIFEST).read_text())
    assert all(len(v["sha256"]) == 64 for v in m["files"].values())


# ------------------------------------------------------------------------- Zarr chunks inside stage artifacts

SYNTH_CHUNK_ROWS = 4
SYNTH_TOP_K = 6
SYNTH_D_SAE = 64


def write_synthetic_activations(out_dir, n_prompts: int = 12, d_model: int = 16, seed: int = 0):
    """An activations.zarr in out_dir laid out and written exactly as the extract stage does (prepare_store,
    then ChunkWriter per prompt-chunk, recorded in out_dir's chunk log), from seeded random numbers instead of
    a model. Returns out_dir."""
    import numpy as np

    from saerl.activation_store import STORE_NAME, ChunkWriter, chunk_ranges, prepare_store
    from saerl.artifacts import ChunkLog
    from saerl.config import ExtractConfig

    rng = np.random.default_rng(seed)
    token_ids = [list(rng.integers(0, 50, int(rng.integers(1, 6)))) for _ in range(n_prompts)]
    cfg = ExtractConfig(chunk_rows=SYNTH_CHUNK_ROWS, pooling=["mean"], token_block_rows=8)
    meta = prepare_store(out_dir / STORE_NAME, [f"p{i}" for i in range(n_prompts)], token_ids, model="synthetic",
                         layer=1, d_model=d_model, n_layers=2, cfg=cfg)
    import zarr

    writer = ChunkWriter(zarr.open_group(out_dir / STORE_NAME, mode="r+"), meta)
    log = ChunkLog(out_dir)
    for c, (lo, hi) in enumerate(chunk_ranges(n_prompts, SYNTH_CHUNK_ROWS)):
        n_tok = sum(len(t) for t in token_ids[lo:hi])
        tokens = rng.normal(size=(n_tok, d_model)).astype(np.float16)
        writer.write_and_mark(log, c, tokens, {"mean": rng.normal(size=(hi - lo, d_model)).astype(np.float32)})
    return out_dir


def write_synthetic_codes(out_dir, n_prompts: int = 12, seed: int = 0):
    """A codes.zarr in out_dir through the encode stage's own layout helpers, from seeded random top-K codes."""
    import numpy as np

    from saerl.sae import CODES_NAME, create_codes_store, write_codes_chunk

    rng = np.random.default_rng(seed)
    group = create_codes_store(out_dir / CODES_NAME, n_prompts, SYNTH_D_SAE, SYNTH_TOP_K, "max", SYNTH_CHUNK_ROWS,
                               "synthetic", ids=[f"p{i}" for i in range(n_prompts)])
    for lo in range(0, n_prompts, SYNTH_CHUNK_ROWS):
        rows = min(SYNTH_CHUNK_ROWS, n_prompts - lo)
        fids = np.stack([rng.choice(SYNTH_D_SAE, SYNTH_TOP_K, replace=False) for _ in range(rows)])
        write_codes_chunk(group, lo, fids, rng.uniform(0.1, 2.0, (rows, SYNTH_TOP_K)))
    return out_dir


def _read_zarr_arrays(folder) -> dict:
    """Every array of every Zarr store in an artifact folder, by path."""
    import zarr

    out = {}

    def visit(group, prefix: str) -> None:
        for name, arr in group.arrays():
            out[f"{prefix}{name}"] = arr[:]
        for name, sub in group.groups():
            visit(sub, f"{prefix}{name}/")

    for store in sorted(folder.glob("*.zarr")):
        visit(zarr.open_group(store, mode="r"), f"{store.name}/")
    return out


STAGE_WRITERS = {"extract": (write_synthetic_activations, "activations.zarr/pooled/mean/c/1/0"),
                 "encode": (write_synthetic_codes, "codes.zarr/max/feature_ids/c/1/0")}


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(flipped))


@pytest.mark.parametrize("stage", list(STAGE_WRITERS))
@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_damaged_zarr_chunk_is_detected_named_and_rebuilt(tmp_path, stage, how):
    """A truncated or byte-flipped Zarr chunk file in an extract or encode artifact: problems() names the file,
    open() raises CorruptArtifact with the path, and ensure() rebuilds the same arrays."""
    import numpy as np

    writer, chunk_file = STAGE_WRITERS[stage]
    store = ArtifactStore(tmp_path / "root")
    ref, _ = store.ensure(stage, "k", lambda b: writer(b.path))
    original = _read_zarr_arrays(ref.file(""))
    target = ref.file(chunk_file)
    assert target.is_file(), sorted(str(p) for p in ref.file("").rglob("*"))
    _damage(target, how)
    fresh = ArtifactStore(tmp_path / "root")
    problems = fresh.problems(stage, "k")
    assert problems and str(target) in problems[0]
    assert ("size mismatch" if how == "truncate" else "hash mismatch") in problems[0]
    with pytest.raises(CorruptArtifact, match=str(target)):
        fresh.open(stage, "k")
    ref2, computed = fresh.ensure(stage, "k", lambda b: writer(b.path))
    assert computed and not fresh.problems(stage, "k")
    rebuilt = _read_zarr_arrays(ref2.file(""))
    assert rebuilt.keys() == original.keys()
    for name, arr in original.items():
        assert np.array_equal(arr, rebuilt[name]), name
    assert not list((tmp_path / "root" / stage).glob(".partial-*"))


@pytest.mark.parametrize("manifest", [
    "{not json", "[]", '{"files": []}', '{"files": {"a.txt": "deadbeef"}}', '{"files": {"a.txt": {"bytes": 5}}}',
    '{"stage": "s"}', '{"files": {"../outside.txt": {"bytes": 1, "sha256": "00"}}}', ""])
def test_malformed_manifest_is_reported_not_a_crash(tmp_path, manifest):
    store = ArtifactStore(tmp_path)
    ref, _ = store.ensure("s", "k", _write)
    ref.file(MANIFEST).write_text(manifest)
    fresh = ArtifactStore(tmp_path)
    problems = fresh.problems("s", "k")
    assert len(problems) == 1 and problems[0].startswith(f"unreadable manifest {ref.file(MANIFEST)}")
    with pytest.raises(CorruptArtifact, match=str(store.path("s", "k"))):
        fresh.open("s", "k")
    assert fresh.ensure("s", "k", _write)[1]


def test_manifest_listing_a_hash_that_does_not_match(tmp_path):
    store = ArtifactStore(tmp_path)
    ref, _ = store.ensure("s", "k", _write)
    m = json.loads(ref.file(MANIFEST).read_text())
    m["files"]["a.txt"]["sha256"] = "0" * 64
    ref.file(MANIFEST).write_text(json.dumps(m))
    assert ArtifactStore(tmp_path).problems("s", "k") == [f"hash mismatch {ref.file('a.txt')}"]
    (store.path("s", "k") / MANIFEST).unlink()
    assert ArtifactStore(tmp_path).problems("s", "k")[0].startswith("unreadable manifest")


def test_problems_without_hashes_checks_sizes_only(tmp_path):
    """hashes=False (`saerl status` without --verify) stats each listed file: it finds a missing or truncated file
    but not a changed byte that keeps the size; the default hashes too."""
    store = ArtifactStore(tmp_path)
    ref, _ = store.ensure("s", "k", _write)
    target = ref.file("a.txt")
    size = target.stat().st_size
    target.write_bytes(bytes([target.read_bytes()[0] ^ 1]) + target.read_bytes()[1:])
    assert store.problems("s", "k", hashes=False) == []
    assert store.problems("s", "k") == [f"hash mismatch {target}"]
    target.write_bytes(target.read_bytes()[:-1])
    assert store.problems("s", "k", hashes=False) == [
        f"size mismatch {target}: {size - 1} bytes, the manifest records {size}"]
    target.unlink()
    assert store.problems("s", "k", hashes=False) == [f"missing file {target}"]


def test_unreadable_chunk_record_counts_as_not_done(tmp_path):
    from saerl.artifacts import ChunkLog

    log = ChunkLog(tmp_path)
    log.mark(3, rows=2)
    (log.folder / "4.json").write_text('{"rows": ')
    assert log.is_done(3) and log.get(3) == {"rows": 2}
    assert not log.is_done(4) and log.get(4) == {} and not log.is_done(5)


def test_a_write_that_raises_leaves_no_temp_file(tmp_path):
    from saerl.artifacts import write_file_atomic

    target = tmp_path / "table.parquet"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_file_atomic(target, broken)
    assert [p.name for p in tmp_path.iterdir()] == ["table.parquet"] and target.read_text() == "old"


def test_a_build_waiting_for_another_process_says_so_and_reports_the_wait(tmp_path, caplog):
    """A second run of the same config waited silently on the build lock (13 minutes in the audit), then printed the
    artifact as an ordinary cache hit. It now warns before the wait, and the reuse reports the seconds waited."""
    import threading

    from saerl.runs import explain

    store, other = ArtifactStore(tmp_path), ArtifactStore(tmp_path)
    started = threading.Event()

    def slow(build):
        started.set()
        time.sleep(1.0)
        (build.path / "x.txt").write_text("built")

    builder = threading.Thread(target=lambda: other.ensure("score", "k" * 20, slow))
    builder.start()
    started.wait(10)
    with caplog.at_level("WARNING", logger="saerl.artifacts"):
        ref, computed = store.ensure("score", "k" * 20, lambda b: pytest.fail("built twice"))
    builder.join()
    assert not computed and (tmp_path / "score" / ("k" * 20) / "x.txt").read_text() == "built"
    assert any("another process is building this artifact" in r.getMessage() for r in caplog.records)
    waited = store.take_waited("score", "k" * 20)
    assert 0.3 < waited < 10 and store.take_waited("score", "k" * 20) == 0.0
    assert explain("score", False, {}, {}, {}, waited=waited).startswith("cached: built by another process meanwhile")
    assert explain("score", False, {}, {}, {}) == "cached: same code version, inputs and config as a stored artifact"
    caplog.clear()
    with caplog.at_level("WARNING", logger="saerl.artifacts"), store.lock("score", "free"):
        pass  # a free lock: no warning, no wait
    assert not caplog.records and store.take_waited("score", "free") == 0.0


def test_a_reused_artifact_names_every_tracked_library_that_moves_numbers_and_none_that_only_runs():
    """math-verify decides the verdicts (labels, rewards, held-out accuracy), so a reused artifact built under
    another version of it must say so, as for torch; saerl (keyed by stage code versions), prefect and mlflow
    (they only run and record) are not named."""
    from saerl.artifacts import TRACKED_LIBRARIES, version_drift

    drift = version_drift(dict.fromkeys(TRACKED_LIBRARIES, "0.0"), dict.fromkeys(TRACKED_LIBRARIES, "9.9"))
    named = {part.split(" ")[0] for part in drift.split(", ")}
    assert "math-verify" in named and named == set(TRACKED_LIBRARIES) - {"saerl", "prefect", "mlflow"}, drift


def test_an_artifact_is_hashed_once_per_process_until_a_file_changes(tmp_path, monkeypatch):
    """A publish hashed every file into the manifest and then hashed them all again to open the artifact, and each
    new store (a task's, beside the flow's) hashed a reused one once more: about a second per GB each time. A
    verification is now remembered in the process while every file keeps its stat; a file rewritten since (even
    to the same size) is hashed again and caught."""
    from saerl import artifacts

    calls: list[str] = []
    real = artifacts.file_sha256
    monkeypatch.setattr(artifacts, "file_sha256", lambda p: calls.append(Path(p).name) or real(p))
    ref, computed = ArtifactStore(tmp_path).ensure("extract", "k", lambda b: (b.path / "a.bin").write_bytes(b"x" * 64))
    assert computed and calls.count("a.bin") == 1, calls  # the publish's own pass only
    assert ArtifactStore(tmp_path).is_complete("extract", "k") and calls.count("a.bin") == 1  # another store
    time.sleep(0.01)
    (Path(ref.path) / "a.bin").write_bytes(b"y" * 64)  # the same size, other bytes
    assert not ArtifactStore(tmp_path).is_complete("extract", "k") and calls.count("a.bin") == 2


def test_a_file_changed_while_its_build_was_hashed_is_not_remembered_as_verified(tmp_path, monkeypatch):
    """A publish remembers its artifact as verified only if no file changed between hashing and the rename: one
    rewritten right after its hash (a straggling writer) was remembered, and the process would reuse it."""
    from saerl import artifacts

    real = artifacts.hash_tree

    def hash_then_rewrite(folder: Path) -> dict:
        files = real(folder)
        time.sleep(0.01)
        (folder / "a.bin").write_bytes(b"y" * 64)  # the same size, other bytes, after its hash
        return files

    monkeypatch.setattr(artifacts, "hash_tree", hash_then_rewrite)
    with pytest.raises(CorruptArtifact, match="hash mismatch"):
        ArtifactStore(tmp_path).ensure("extract", "k", lambda b: (b.path / "a.bin").write_bytes(b"x" * 64))


def test_an_artifact_root_that_is_a_file_is_refused_naming_it(tmp_path):
    """`saerl run ... --root FILE` said only "[Errno 17] File exists: FILE"; now the root is named as a file with
    the fix, as an OSError the CLI prints on one line."""
    from saerl.artifacts import ArtifactStore

    root = tmp_path / "root"
    root.write_text("")
    with pytest.raises(OSError, match=r"artifact root .*root is a file, not a folder: pass --root"):
        ArtifactStore(root)
    assert ArtifactStore(tmp_path / "new").root.is_dir()


def test_published_files_follow_the_umask_even_where_a_writer_made_them_private(tmp_path):
    """safetensors writes its files 0600 whatever the umask, so the policy LM, SAE weights and score models of a root
    were refused to another user reading it (`saerl report`, `status --verify`) or sharing it; a published artifact's
    files and folders now get at least what the umask gives a new file, and a wider mode is kept."""
    import stat

    from saerl.artifacts import ArtifactStore, umask_modes

    file_mode, folder_mode = umask_modes()
    old = os.umask(0o022)
    try:
        umask_modes.cache_clear()
        store = ArtifactStore(tmp_path / "root")

        def write(build):
            (build.path / "sub").mkdir(mode=0o700)
            for name, mode in (("model.safetensors", 0o600), ("sub/x.bin", 0o600), ("open.txt", 0o666)):
                path = build.path / name
                path.write_bytes(b"w")
                os.chmod(path, mode)

        ref, _ = store.ensure("s", "k", write, {})
        modes = {p.relative_to(ref.path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in Path(ref.path).rglob("*")}
        assert modes["model.safetensors"] == modes["sub/x.bin"] == 0o644 and modes["sub"] == 0o755
        assert modes["open.txt"] == 0o666 and store.open("s", "k").path  # never narrowed; still verifies
        assert not store.problems("s", "k")
    finally:
        os.umask(old)
        umask_modes.cache_clear()
    assert umask_modes() == (file_mode, folder_mode)


@pytest.fixture
def code_checkout(tmp_path):
    """A git work tree laid out as saerl's (a `saerl` package, pyproject.toml), one commit."""
    return make_saerl_checkout(tmp_path)


def test_a_manifest_records_the_code_and_interpreter_that_built_it(tmp_path):
    """No manifest held a git commit or dirty flag: an artifact built by uncommitted code was reused by a clean run
    of the same commit, its record crediting that commit. Nor python, numpy or scipy, which move floats too."""
    import platform

    from saerl.artifacts import build_code

    store = ArtifactStore(tmp_path)
    with store.build("s", "k") as b:
        _write(b)
    m = store.open("s", "k").manifest()
    assert m["git"] == build_code() and {"commit", "dirty"} <= set(m["git"])
    assert m["library_versions"]["python"] == platform.python_version()
    assert {"numpy", "scipy"} <= set(m["library_versions"])


def test_the_dirty_flag_reads_the_code_alone_and_names_the_changes(code_checkout):
    """An artifact root (or any untracked file) inside the checkout marked every run dirty: `git status --porcelain`
    counted it. The flag reads saerl's code paths now, and a dirty state names its files and hashes its changes."""
    from saerl.artifacts import code_state

    repo, pkg = code_checkout, code_checkout / "saerl"
    head = git_in(repo, "rev-parse", "HEAD")
    (repo / "myroot").mkdir()
    (repo / "myroot" / "mlflow.db").write_text("db")
    (repo / "notes.txt").write_text("scratch")
    assert code_state(pkg) == {"commit": head, "dirty": "false"}
    (pkg / "mod.py").write_text("x = 2\n")
    edited = code_state(pkg)
    assert edited["dirty"] == "true" and edited["files"] == ["saerl/mod.py"] and len(edited["diff"]) == 12
    assert code_state(pkg) == edited, "the same changes hash alike"
    (pkg / "new.py").write_text("y = 1\n")
    added = code_state(pkg)
    assert added["files"] == ["saerl/mod.py", "saerl/new.py"] and added["diff"] != edited["diff"]
    (pkg / "new.py").write_text("y = 2\n")
    assert code_state(pkg)["diff"] != added["diff"], "an untracked file's content is in the hash"
    assert code_state(repo / "elsewhere") == {"commit": "unknown", "dirty": "unknown"}


def test_the_code_state_is_the_packages_checkout_whatever_git_dir_the_shell_sets(code_checkout, tmp_path,
                                                                                   monkeypatch):
    """A GIT_DIR / GIT_WORK_TREE pair in the shell (a bare dotfiles repository) made git read that repository: a
    manifest recorded its commit as saerl's, dirty with its files; a relative GIT_DIR=.git (as git hands its hooks)
    read 'unknown'. git now runs without the variables that point it at another repository."""
    from saerl.artifacts import code_state

    repo, pkg = code_checkout, code_checkout / "saerl"
    head = git_in(repo, "rev-parse", "HEAD")
    other = make_saerl_checkout(tmp_path / "other")
    (other / "saerl" / "mod.py").write_text("x = 3\n")
    git_in(other, "commit", "-q", "-am", "two")
    assert git_in(other, "rev-parse", "HEAD") != head  # the premise: another commit
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(repo))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    assert code_state(pkg) == {"commit": head, "dirty": "false"}
    monkeypatch.setenv("GIT_DIR", ".git")
    monkeypatch.delenv("GIT_WORK_TREE")
    monkeypatch.delenv("GIT_INDEX_FILE")
    assert code_state(pkg) == {"commit": head, "dirty": "false"}


def test_code_drift_says_what_other_code_built_an_artifact():
    from saerl.artifacts import code_drift

    clean = {"commit": "b" * 40, "dirty": "false"}
    dirty = {"commit": "b" * 40, "dirty": "true", "diff": "0123456789ab", "files": ["saerl/runners.py"]}
    assert code_drift(clean, clean) == "" and code_drift(dirty, dirty) == ""
    assert code_drift(dirty, clean) == "with uncommitted changes (diff 0123456789ab: saerl/runners.py)"
    # a stage edited without a version bump: this run's checkout is dirty, the reused build was not (review)
    assert code_drift(clean, dirty) == ("by the committed code, while this run has uncommitted changes (diff "
                                        "0123456789ab: saerl/runners.py)")
    assert code_drift({"commit": "a" * 40, "dirty": "false"}, clean) == f"at commit {'a' * 12} (now {'b' * 12})"
    assert code_drift(None, clean) == "" and code_drift(clean, {"commit": "unknown", "dirty": "unknown"}) == ""


def test_a_wall_clock_step_changes_no_build_seconds_nor_lock_wait(tmp_path, stepped_wall_clock):
    """A manifest's 'seconds' and a lock's wait were wall-clock spans: NTP stepping the clock back an hour during a
    build recorded -3600 s, forward 2 h during a wait reported a 2 h wait. They are monotonic spans now; the
    manifest's `created` stays the wall clock's (a time of day)."""
    import threading

    from saerl.artifacts import file_lock

    clock = stepped_wall_clock("saerl.artifacts")

    def build(b):
        clock.step(-3600.0)
        (b.path / "x.txt").write_text("x")

    ref, computed = ArtifactStore(tmp_path).ensure("score", "k" * 20, build)
    assert computed and 0.0 <= ref.manifest()["seconds"] < 60.0, ref.manifest()["seconds"]
    lock, holding = tmp_path / "held.lock", threading.Event()

    def hold():
        with file_lock(lock):
            holding.set()
            time.sleep(0.3)
            clock.step(7200.0)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    with file_lock(lock) as waited:
        pass
    holder.join()
    assert 0.2 < waited < 60.0, waited
