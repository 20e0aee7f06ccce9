"""saerl.artifacts: atomic builds, manifests, verification, resume through chunk logs, locking."""

import json
import multiprocessing as mp
import time

import pytest

from saerl.artifacts import MANIFEST, ArtifactStore, CorruptArtifact


def _write(build, text="hello"):
    (build.path / "a.txt").write_text(text)
    (build.path / "sub").mkdir(exist_ok=True)
    (build.path / "sub" / "b.bin").write_bytes(b"\x00\x01" * 100)
    build.note(rows=2)


def test_build_publishes_with_manifest(tmp_path):
    store = ArtifactStore(tmp_path)
    ref, computed = store.ensure("s", "k1", _write, {"inputs": {"x": "1"}})
    assert computed
    m = ref.manifest()
    assert m["rows"] == 2 and m["inputs"] == {"x": "1"} and set(m["files"]) == {"a.txt", "sub/b.bin"}
    assert "torch" in m["library_versions"]
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
