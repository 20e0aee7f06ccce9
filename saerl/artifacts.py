"""Content-addressed artifacts: one folder per (stage, key), atomic writes, verified manifests, chunk logs.

Layout under the artifact root::

    <root>/<stage>/<key>/            a finished artifact: its files + manifest.json
    <root>/<stage>/.partial-<key>/   an artifact being built (kept on failure, so a rerun resumes)
    <root>/<stage>/.lock-<key>       a lock file: one process builds a key, others wait then reuse

A reader never sees half an artifact: files are written into the partial folder, fsynced, hashed into
`manifest.json`, and the folder is renamed into place in one step. Reading verifies the manifest (every
file's size and sha256); a corrupt or partial artifact raises :class:`CorruptArtifact` naming its path.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger("saerl.artifacts")
MANIFEST = "manifest.json"
KEY_SHOWN = 12  # characters of an artifact key in a message (as the run's lines print it)
CACHE_RECORDS_DIR = "prefect-results"  # <root>/<this>/<stage>-<key>: the orchestrator's cache record of a stage run
# (tasks.stage persists Prefect task results there); saerl gc removes a record once its artifact is gone
CHUNK_DIR = "_chunks"
CHUNK_PLAN = "plan.info"  # in a chunk log's folder: {"chunks": how many the writer plans, "fingerprint": its records'}
# (ChunkLog.plan; not *.json, so no chunk record; dropped with the log at publish), read by chunk_progress
TRACKED_LIBRARIES = (
    "saerl", "torch", "transformers", "trl", "sae-lens", "prefect", "zarr", "polars", "scikit-learn", "mlflow",
    "math-verify", "numpy", "scipy",
)
HUB_COMMIT = "hub_commit"  # a manifest's field: the hub commit of the model or SAE its build loaded (where known)
PYTHON = "python"  # library_versions' entry for the interpreter's version (no package to ask importlib for)
HASH_BLOCK = 1 << 20
PACKAGE_DIR = Path(__file__).resolve().parent  # the saerl package's folder: its git commit is the code's
CODE_PATHS = ("saerl", "flows", "tasks", "pyproject.toml")  # a checkout's code, relative to its top: what its dirty
# flag reads (an artifact root, an MLflow store or a scratch file elsewhere in the checkout is no code change)
GIT_TIMEOUT_S = 5  # the longest a git call may take before the commit / dirty fields read 'unknown'
# the variables that point git at another repository, index or object store than the one it finds from its working
# folder (`git rev-parse --local-env-vars` of git 2.39, and GIT_NAMESPACE): a GIT_DIR / GIT_WORK_TREE pair in the
# shell (a "bare dotfiles repository") made manifests record that repository's commit as saerl's code; git_output
# runs git without them
GIT_REPOSITORY_ENV = ("GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT",
                      "GIT_OBJECT_DIRECTORY", "GIT_DIR", "GIT_WORK_TREE", "GIT_IMPLICIT_WORK_TREE", "GIT_GRAFT_FILE",
                      "GIT_INDEX_FILE", "GIT_NO_REPLACE_OBJECTS", "GIT_REPLACE_REF_BASE", "GIT_PREFIX",
                      "GIT_INTERNAL_SUPER_PREFIX", "GIT_SHALLOW_FILE", "GIT_COMMON_DIR", "GIT_NAMESPACE")
UNKNOWN = "unknown"
DIRTY_SHOWN = 5  # changed files a code state names (the first, sorted), before '+N more'
DIFF_SHOWN = 12  # hex characters of the hash of a dirty checkout's changes (:func:`code_state`)


class CorruptArtifact(RuntimeError):
    """An artifact whose manifest is missing or does not match its files."""


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the artifact in `folder` as a dict, or {} when it is missing or unreadable (for readers that
    show what they can: a report, a tracker; ArtifactRef.manifest raises instead). in: artifact folder; out: dict."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def lock_held(path: Path) -> bool | None:
    """Does a process hold the lock on the file `path` (:func:`file_lock`)? None when there is no such file (none
    is made) or it cannot be opened. in: lock file; out: True / False / None."""
    try:
        fh = open(path, encoding="utf-8")
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:  # EWOULDBLOCK, or EACCES where flock says so (as gc.try_lock reads it)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                return True
            raise
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


@contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None, shared: bool = False) -> Iterator[float]:
    """Hold an exclusive lock on the file `path` (made, with its folder, when missing) for the block, waiting
    for any other process that holds it: one process at a time on this machine; with `shared`, a shared one, which
    any number hold together and which waits only for an exclusive holder. in: lock file, `on_wait` (called once
    before waiting, when another process holds the lock), shared or not; out: a context giving the seconds waited
    (0.0 when the lock was free)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with open(path, "a", encoding="utf-8") as fh:
        waited = 0.0
        try:
            fcntl.flock(fh, mode | fcntl.LOCK_NB)
        except OSError as err:  # EWOULDBLOCK, or EACCES where flock says so (as lock_held reads it)
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if on_wait is not None:
                on_wait()
            started = time.monotonic()
            fcntl.flock(fh, mode)
            waited = round(time.monotonic() - started, 3)
        try:
            yield waited
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def folder_problems(folder: Path, hashes: bool = True) -> list[str]:
    """What is wrong with the artifact folder `folder` (empty list = complete and intact): missing, an unreadable
    manifest, or a file it lists that is missing, of another size or (hashes=True) of another sha256
    (:meth:`ArtifactStore.problems`). in: the folder, whether to hash; out: the problems."""
    if not folder.exists():
        return ["missing"]
    mpath = folder / MANIFEST
    try:
        entries = _manifest_entries(json.loads(mpath.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return [f"unreadable manifest {mpath}: {type(err).__name__}: {err}"]
    out = []
    for rel, size, sha in entries:
        p = folder / rel
        if not p.is_file():
            out.append(f"missing file {p}")
        elif (now := p.stat().st_size) != size:
            out.append(f"size mismatch {p}: {now} bytes, the manifest records {size}")
        elif hashes and file_sha256(p) != sha:
            out.append(f"hash mismatch {p}")
    return out


@dataclass(frozen=True)
class ArtifactRef:
    """A small, picklable reference to a finished artifact: what tasks pass between each other."""

    stage: str
    key: str
    path: str

    def file(self, name: str) -> Path:
        """Path of one file inside the artifact."""
        return Path(self.path) / name

    def manifest(self) -> dict[str, Any]:
        """The artifact's manifest as a dict."""
        return json.loads((Path(self.path) / MANIFEST).read_text(encoding="utf-8"))


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose behaviour shapes artifacts (TRACKED_LIBRARIES; one not installed
    is left out), and the interpreter's under PYTHON. in: nothing; out: {package: version}."""
    out = {PYTHON: platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


# the libraries whose versions can move an artifact's numbers (saerl's own code is keyed by stage versions; prefect
# and mlflow only run and record): a cached artifact built with others is reused, and its reason says so
RESULT_LIBRARIES = ("torch", "transformers", "trl", "sae-lens", "zarr", "polars", "scikit-learn", "math-verify",
                    "numpy", "scipy")


def version_drift(built: dict[str, str] | None, now: dict[str, str]) -> str:
    """The RESULT_LIBRARIES whose installed version differs from the one an artifact was built with, as text
    ('torch 2.12.0 (now 2.13.0)'), '' when none does or the artifact recorded none. Library versions are in no key:
    an upgrade would otherwise rebuild every artifact (the testbed LM's pretraining included), while most upgrades
    change no number; the reason of a reused artifact says it instead. in: the artifact's manifest
    library_versions, the installed ones (:func:`library_versions`); out: the text."""
    built = built or {}
    return ", ".join(f"{name} {built[name]} (now {now.get(name, 'not installed')})" for name in RESULT_LIBRARIES
                     if name in built and built[name] != now.get(name))


def build_machine() -> dict[str, str]:
    """Where an artifact is published, beside its library versions: float results of training depend on the
    machine too (the testbed LM rebuilt from one config and code on another session's machine came out another
    model). cpu: the processor's model name; torch_cpu: the vector unit torch's kernels use (AVX2, AVX512, ...),
    when this process has imported torch, and torch_threads, its CPU thread count (a Dask worker's 1 thread and a
    laptop's 2 give one key float results apart in the last bits); cuda: the GPU's name, when this process has started CUDA. The publishing
    process's: a sharded stage's chunks may have been computed on other Dask workers. Never fails a publish (torch
    half-imported in another thread is left out)."""
    out = {"cpu": _cpu_model()}
    torch = sys.modules.get("torch")
    try:
        if torch is not None:
            out["torch_cpu"] = str(torch.backends.cpu.get_cpu_capability())
            out["torch_threads"] = str(torch.get_num_threads())  # CPU float sums move in the last bits with it
            if torch.cuda.is_initialized():
                out["cuda"] = torch.cuda.get_device_name()
    except Exception:  # noqa: BLE001 - provenance only: a module mid-import has no backends yet
        pass
    return out


def _cpu_model() -> str:
    """The processor's model name from /proc/cpuinfo (Linux), else platform.processor(), else 'unknown'."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment git runs in for :func:`git_output`: `environ` (None: this process's) less GIT_REPOSITORY_ENV,
    so git reads the repository it finds from its working folder, whatever the shell points it at. in: an
    environment; out: a copy."""
    return {k: v for k, v in (os.environ if environ is None else environ).items() if k not in GIT_REPOSITORY_ENV}


def git_bytes(args: list[str], cwd: Path) -> bytes | None:
    """The raw output of `git <args>` run in `cwd` (in :func:`git_env`: a GIT_DIR or GIT_WORK_TREE in the
    environment is not followed), or None when git is missing, fails or takes longer than GIT_TIMEOUT_S. Bytes: git
    writes file contents and names as they are, whatever the locale (a diff holding UTF-8 read as text under an
    ASCII locale raised UnicodeDecodeError, failing `saerl --version` and every run)."""
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=GIT_TIMEOUT_S, check=False,
                             env=git_env())
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_output(args: list[str], cwd: Path) -> str | None:
    """The stripped output of `git <args>` (:func:`git_bytes`) as text: decoded as the OS names files
    (os.fsdecode: a path git prints opens again under any locale, an undecodable byte kept as a surrogate), or None
    as git_bytes. in: git's arguments, its folder; out: the text."""
    raw = git_bytes(args, cwd)
    return None if raw is None else os.fsdecode(raw).strip()


def diff_bytes(raw: bytes) -> bytes:
    """What a diff's hash reads of `git diff`'s raw output: the text UTF-8 decoding gave before diffs were read as
    bytes (newlines made '\\n', its ends stripped), as UTF-8, an undecodable byte kept as it is (surrogateescape).
    The same under every locale, and the hash under a UTF-8 locale stays what earlier manifests recorded. in: git's
    output; out: the bytes to hash."""
    text = raw.decode("utf-8", "surrogateescape").replace("\r\n", "\n").replace("\r", "\n")
    return text.strip().encode("utf-8", "surrogateescape")


def source_checkout(package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The git work tree saerl's code is checked out in: the repository git finds from the package's folder, when
    its top level is the package's parent (a saerl installed in site-packages inside a user's own repository is
    not that repository's code). in: the package folder; out: the work tree's root, or None."""
    top = git_output(["rev-parse", "--show-toplevel"], package_dir)
    return Path(top).resolve() if top and Path(top).resolve() == Path(package_dir).resolve().parent else None


def code_state(package_dir: Path = PACKAGE_DIR) -> dict[str, Any]:
    """The code of saerl's own checkout (:func:`source_checkout`) as it is now: {'commit': hash, 'dirty': 'true' /
    'false'}, 'unknown' where it cannot be told (no checkout: an installed saerl; git missing or slow). Dirty reads
    the code alone (CODE_PATHS, each under the package's folder's parent: modified, staged or untracked files not
    ignored); a dirty one also gives 'diff', a hash (DIFF_SHOWN hex) of `git diff HEAD` over those paths and of the
    untracked files' names and contents (two checkouts of one commit with the same changes give the same hash), and
    'files', the first DIRTY_SHOWN changed paths ('+N more' after them). in: the package folder; out: the dict."""
    top = source_checkout(package_dir)
    commit = (git_output(["rev-parse", "HEAD"], top) if top else None) or UNKNOWN
    changed = git_output(["diff", "HEAD", "--name-only", "--", *CODE_PATHS], top) if top else None
    untracked = git_output(["ls-files", "--others", "--exclude-standard", "--", *CODE_PATHS], top) if top else None
    diff = git_bytes(["diff", "HEAD", "--", *CODE_PATHS], top) if changed else b""
    if top is None or changed is None or untracked is None or diff is None:
        return {"commit": commit, "dirty": UNKNOWN}
    new = untracked.splitlines()
    files = sorted(set(changed.splitlines()) | set(new))
    if not files:
        return {"commit": commit, "dirty": "false"}
    h = hashlib.sha256(diff_bytes(diff))
    for rel in sorted(new):
        h.update(os.fsencode(rel) + b"\0")  # the name's own bytes, under every locale
        h.update(file_sha256(top / rel).encode() if (top / rel).is_file() else b"")
    more = [f"+{len(files) - DIRTY_SHOWN} more"] if len(files) > DIRTY_SHOWN else []
    return {"commit": commit, "dirty": "true", "diff": h.hexdigest()[:DIFF_SHOWN], "files": files[:DIRTY_SHOWN] + more}


@functools.lru_cache(maxsize=1)
def build_code() -> dict[str, Any]:
    """:func:`code_state` of saerl's checkout, read once a process (four git calls, five when dirty), at its first
    ask: the code a process runs is what it imported, so its later edits are not its code. Every manifest records it
    (ArtifactStore.publish), and a run's record and MLflow tags (saerl.tracking.git_tags). out: the dict (do not
    change it)."""
    return code_state()


def code_drift(built: Any, now: dict[str, Any]) -> str:
    """How the code an artifact was built by (its manifest's 'git': :func:`code_state`) differs from the code of the
    run reusing it (`now`), as text: 'at commit 1a2b3c4d5e6f (now 5d6e7f8a9b0c)', 'with uncommitted changes (diff
    0123456789ab: saerl/runners.py)', both, or '' when they match or either is unknown (a manifest from before
    manifests recorded it, a saerl outside a checkout). Code is in no key beyond the stages' versions: a stage's code
    edited without a version bump is reused, and its reason says so. in: the manifest's 'git' (anything), the
    current state; out: the text (also when this run's checkout has uncommitted changes and the build's had none: the
    case of a stage edited without a version bump)."""
    if not isinstance(built, dict) or UNKNOWN in (built.get("commit", UNKNOWN), now.get("commit", UNKNOWN)):
        return ""
    out = []
    if built["commit"] != now["commit"]:
        out.append(f"at commit {str(built['commit'])[:KEY_SHOWN]} (now {str(now['commit'])[:KEY_SHOWN]})")
    if built.get("dirty") == "true" and (now.get("dirty") != "true" or built.get("diff") != now.get("diff")):
        out.append(f"with uncommitted changes (diff {built.get('diff', UNKNOWN)}: "
                   f"{', '.join(map(str, built.get('files') or []))})")
    elif built.get("dirty") == "false" and now.get("dirty") == "true":  # code edited since, without a version bump
        out.append(f"by the committed code, while this run has uncommitted changes (diff {now.get('diff', UNKNOWN)}: "
                   f"{', '.join(map(str, now.get('files') or []))})")
    return "; ".join(out)


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def tree_bytes(folder: Path) -> int:
    """Total bytes of the files under a folder, 0 when there is none. in: folder; out: bytes."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def unreadable_files(folder: Path) -> list[str]:
    """The files directly in a model or SAE folder that cannot be read as what their suffix says: a .safetensors
    file whose header safetensors refuses (a copy or download cut short: "incomplete metadata, file not fully
    covered"; the header alone is read) and a .json file that is no JSON. in: the folder; out: their names, sorted
    ([] for a folder that is not there)."""
    from safetensors import SafetensorError, safe_open

    bad = []
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="numpy"):
                    pass
            elif path.suffix == ".json":
                json.loads(path.read_bytes())
        except (SafetensorError, OSError, ValueError):  # ValueError: JSONDecodeError, UnicodeDecodeError
            bad.append(path.name)
    return bad


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor of a .safetensors file with its shape, read from the file's header alone (no tensor is read); {}
    for a file that is not there or cannot be read (cut short: :func:`unreadable_files` names it). in: the file; out:
    {tensor name: shape}."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 - no dict
    except (SafetensorError, OSError):
        return {}


# the words of a loader's RuntimeError when a folder's weights do not fit its config: transformers' shape check and
# torch's load_state_dict (a tensor the architecture needs missing, or one it has no place for)
FILES_DISAGREE = ("size mismatch", "ignore_mismatched_sizes", "Missing key(s) in state_dict",
                  "Unexpected key(s) in state_dict")


def files_fault(err: BaseException) -> bool:
    """Is a model or SAE loader's error its folder's files' fault: a safetensors file it cannot read (safetensors'
    SafetensorError: a copy cut short), a JSON file that is no JSON, or weights that do not fit the config (a plain
    RuntimeError in FILES_DISAGREE's words)? Anything else is not (out of memory on a GPU or a CPU, a RuntimeError
    subclass such as NotImplementedError, an API change's TypeError): the model and SAE loaders re-raise only the
    files' faults as the user's error, naming the field and file (saerl.activations.folder_load_guard,
    saerl.sae._source_sae), and let the rest pass unchanged. in: the error; out: bool."""
    from safetensors import SafetensorError

    if isinstance(err, SafetensorError | json.JSONDecodeError):
        return True
    return type(err) is RuntimeError and any(words in str(err) for words in FILES_DISAGREE)


LOADER_SAID_CHARS = 300  # how much of a loader's own message a model or SAE folder's error quotes (one line)


def loader_said(err: BaseException) -> str:
    """A model or SAE loader's error as one short line for a message: its type and its words, whitespace folded,
    cut at LOADER_SAID_CHARS. in: the error; out: text."""
    return f"{type(err).__name__}: {' '.join(str(err).split())[:LOADER_SAID_CHARS]}"


_SHA256_SEEN: dict[tuple[int, ...], str] = {}  # a file's stat (below) -> its sha256, for this process


def remembered_sha256(path: Path) -> str:
    """sha256 of a data file, read once per process while the file stays as it was: one plan hashes an eval set
    for every (arm, seed) and a run plans its keys more than once. 'As it was' is its device, inode, size,
    modification and change times; the change time moves on every write and no tool sets it back, so a
    rewritten file is read again. in: path; out: hex digest (the artifact store's integrity checks read files
    afresh, not through this)."""
    st = path.stat()
    seen = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if seen not in _SHA256_SEEN:
        _SHA256_SEEN[seen] = file_sha256(path)
    return _SHA256_SEEN[seen]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hash_tree(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {sha256, bytes}} for every file under `folder` except the manifest and the build's chunk log
    (CHUNK_DIR, with the part files label and evaluate keep in it: publish drops it); fsyncs each."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name == MANIFEST or p.relative_to(folder).parts[0] == CHUNK_DIR:
            continue
        with open(p, "rb") as f:
            os.fsync(f.fileno())
        files[p.relative_to(folder).as_posix()] = {"sha256": file_sha256(p), "bytes": p.stat().st_size}
    return files


def file_stat(path: Path) -> tuple[int, int, int, int]:
    """What a remembered verification of a file holds for (:func:`tree_stamp`): its size, modification and change
    times in ns, and inode; a rewrite moves the change time whatever it sets the others to. in: the file; out: the
    tuple."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def file_stats(folder: Path) -> dict[str, tuple[int, int, int, int]]:
    """:func:`file_stat` of every file under `folder`, by relative path. in: the folder; out: {relative path:
    stat tuple}."""
    return {p.relative_to(folder).as_posix(): file_stat(p) for p in folder.rglob("*") if p.is_file()}


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to `path` through a temp file + fsync + rename (:func:`write_file_atomic`)."""
    text = json.dumps(obj, indent=1, sort_keys=True, default=str)
    write_file_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


TEMP_NAME = re.compile(r"\.(.+)\.tmp-\d+")  # write_file_atomic's temp name ('.<name>.tmp-<pid>'), left by a kill
NAME_MAX = 255  # bytes in one file name where the filesystem does not say (os.pathconf's PC_NAME_MAX; Linux's own)
TEMP_TAG_CHARS = 12  # hex digits of a long name's hash in its shortened temp name (temp_name)


def temp_name(path: Path) -> str:
    """The temp name write_file_atomic writes `path` under, beside it (TEMP_NAME): '.<name>.tmp-<pid>', or, where
    that would be longer than the folder's file names may be (a 242-255 byte name: ENAMETOOLONG), the name's head
    cut to fit and a hash of the whole name ('.<head>~<hash>.tmp-<pid>': two long names never share one). in: the
    target file (its folder exists); out: the temp file's name."""
    suffix = f".tmp-{os.getpid()}"
    plain = f".{path.name}{suffix}"
    try:
        limit = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError):  # no such folder (the write then says so), or no limit known
        limit = NAME_MAX
    if len(os.fsencode(plain)) <= limit:
        return plain
    raw = os.fsencode(path.name)
    tag = "~" + hashlib.sha256(raw).hexdigest()[:TEMP_TAG_CHARS]
    room = limit - len(os.fsencode(f".{tag}{suffix}"))
    return f".{raw[:room].decode(errors='ignore')}{tag}{suffix}"  # whole characters of the head only


def write_file_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write a file through `write(tmp)` under a temp name beside `path` (:func:`temp_name`, which fits however long
    the name), fsync it and rename it into place, so a reader (or a resumed run) sees the whole file or none of it; a
    `write` that raises leaves no temp file behind (a killed process does: :func:`remove_temp_files`)."""
    tmp = path.with_name(temp_name(path))
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a failed write leaves neither a half file nor its temp beside `path`
        tmp.unlink(missing_ok=True)
        raise


@functools.lru_cache(maxsize=1)
def umask_modes() -> tuple[int, int]:
    """(file mode, folder mode): what this process's umask leaves of 0o666 and 0o777, read off a probe file and
    folder made in a private temp folder (os.umask reads the mask only by setting it, which would race with the
    files other threads create meanwhile). in: nothing; out: the two permission modes."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        os.close(os.open(os.path.join(tmp, "f"), os.O_CREAT | os.O_WRONLY, 0o666))
        os.mkdir(os.path.join(tmp, "d"), 0o777)
        return (stat.S_IMODE(os.stat(os.path.join(tmp, "f")).st_mode),
                stat.S_IMODE(os.stat(os.path.join(tmp, "d")).st_mode))


def follow_umask(folder: Path) -> int:
    """Widen every file and folder under `folder` (itself included) to at least what the umask gives a new one
    (umask_modes): safetensors writes its files 0600 whatever the umask (the policy LM, SAE weights, score models,
    trained policies), so another user sharing the root, or reading it with `saerl report`, was refused them. Never
    narrows a mode. in: a folder; out: how many paths were widened."""
    file_mode, folder_mode = umask_modes()
    widened = 0
    for path in [folder, *folder.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        want = folder_mode if stat.S_ISDIR(st.st_mode) else file_mode
        if stat.S_IMODE(st.st_mode) | want != stat.S_IMODE(st.st_mode):
            os.chmod(path, stat.S_IMODE(st.st_mode) | want)
            widened += 1
    return widened


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files (TEMP_NAME) a killed :func:`write_file_atomic` left anywhere under `folder` (a partial
    build being published: no writer is left in it). in: a folder; out: the paths removed."""
    stale = [p for p in folder.rglob(".*.tmp-*") if p.is_file() and TEMP_NAME.fullmatch(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _manifest_entries(manifest: Any) -> list[tuple[str, int, str]]:
    """(relative path, bytes, sha256) per file a parsed manifest lists; KeyError/TypeError/ValueError/
    AttributeError when it is not a manifest (no 'files' mapping, entries without sizes or hashes, a path
    leaving the folder)."""
    entries = [(str(rel), int(info["bytes"]), str(info["sha256"])) for rel, info in manifest["files"].items()]
    for rel, _, _ in entries:
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise ValueError(f"file entry {rel!r} points outside the artifact")
    return entries


_VERIFIED: dict[str, tuple[Any, ...]] = {}  # artifact folder -> its tree_stamp when it last verified, this process


def tree_stamp(folder: Path) -> tuple[Any, ...] | None:
    """What a verification of the artifact `folder` holds for: (path, size, modification and change times in ns,
    inode) of its manifest and of every file it lists, or None when the manifest or a listed file cannot be read
    (nothing is then remembered). One stat per file, no reading. in: the folder; out: the stamp or None."""
    try:
        mpath = folder / MANIFEST
        rels = [MANIFEST, *(rel for rel, _, _ in _manifest_entries(json.loads(mpath.read_text(encoding="utf-8"))))]
        return tuple((rel, *file_stat(folder / rel)) for rel in rels)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


class ChunkLog:
    """Records which chunks of a chunked writer are finished, inside a partial artifact folder.

    A writer calls :meth:`mark` after a chunk's data is fully written; on resume it skips every chunk
    :meth:`is_done` reports. Each record stores metadata the writer wants back (e.g. row counts).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder) / CHUNK_DIR
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, chunk: int | str) -> Path:
        return self.folder / f"{chunk}.json"

    def is_done(self, chunk: int | str) -> bool:
        """True when `chunk` was marked finished (an unreadable record counts as not finished)."""
        try:
            json.loads(self._path(chunk).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return True

    def mark(self, chunk: int | str, **meta: Any) -> None:
        """Record `chunk` as finished (atomically), with optional metadata."""
        write_json_atomic(self._path(chunk), meta)

    def get(self, chunk: int | str) -> dict[str, Any]:
        """Metadata recorded for a finished chunk ({} when the record is missing or unreadable)."""
        try:
            record = json.loads(self._path(chunk).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def done(self) -> list[str]:
        """Names of all finished chunks."""
        return sorted(p.stem for p in self.folder.glob("*.json"))

    def plan(self, n_chunks: int, fingerprint: str = "") -> None:
        """Record how many chunks the writer plans in all and the fingerprint its chunk records carry (CHUNK_PLAN),
        so `saerl status` can say how far an unfinished build got (:func:`chunk_progress`): none of the artifact's
        files, no chunk record. Written when it changes (a shard that finds its plan there leaves it); two threads of
        one process writing the same plan at once (one temp name) leave it written by one.
        in: the number of chunks, the fingerprint ('' = records are not told apart)."""
        path = self.folder / CHUNK_PLAN
        record = {"chunks": int(n_chunks), "fingerprint": fingerprint}
        if read_chunk_plan(path.parent) == record:
            return
        try:
            write_json_atomic(path, record)
        except FileNotFoundError:  # the other writer renamed the shared temp file first: the same plan is there
            pass


@dataclass
class Build:
    """A partial artifact being built: write files under `path`, add manifest fields with `note`; `root` is the
    artifact root it is built in (None: a build outside a store), for files that name another artifact of the root
    relative to it (saerl.activation_store.model_reference), so the same key built in two roots is the same bytes."""

    path: Path
    notes: dict[str, Any]
    root: Path | None = None

    @property
    def chunks(self) -> ChunkLog:
        """The chunk log of this build (for resumable chunked writers)."""
        return ChunkLog(self.path)

    def note(self, **fields: Any) -> None:
        """Add fields (row counts, metrics, ...) to the manifest."""
        self.notes.update(fields)


def while_wanted(chunks: Iterable[int], keep_going: Callable[[], bool] | None) -> Iterator[int]:
    """`chunks` in order, ending before the first one for which `keep_going()` is False (None: all of them): a
    shard asks before each chunk whether its fan-out still wants it (saerl.pipeline.shard_wanted).
    in: chunk ids, the check; out: the chunk ids to run."""
    for c in chunks:
        if keep_going is not None and not keep_going():
            log.info("stopping before chunk %s: the fan-out that started this shard was stopped or replaced", c)
            return
        yield c


def is_chunk_record(path: Path) -> bool:
    """Whether a file of a chunk log's folder is a chunk's record (`<chunk id>.json`, chunk ids being numbers) and
    not another file kept there (a fan-out's shards.json, the plan). in: its path; out: bool."""
    return path.suffix == ".json" and path.stem.isdigit()


def chunk_records(build_folder: Path) -> dict[str, tuple[int, int]]:
    """The chunk log of a build folder (:class:`ChunkLog`: `<folder>/_chunks/<chunk>.json`), each finished chunk's
    record by name (:func:`is_chunk_record`: a fan-out's shards.json is none) with its (inode, modification time in
    ns): a chunk the build computes again is marked again, by an atomic rename, so its record changes
    (:func:`reused_chunks`). Reads names and stats only: nothing is created (a ChunkLog would create its folder). in: a partial artifact folder (ArtifactStore.partial_path) or a build's path;
    out: {record name: (inode, mtime_ns)} ({} when the folder or its log does not exist)."""
    out = {}
    for path in (Path(build_folder) / CHUNK_DIR).glob("*.json"):
        if not is_chunk_record(path):
            continue
        try:
            st = path.stat()
        except FileNotFoundError:  # replaced or removed meanwhile
            continue
        out[path.name] = (st.st_ino, st.st_mtime_ns)
    return out


def read_chunk_plan(log_folder: Path) -> dict[str, Any]:
    """The plan a chunk log's folder records (:meth:`ChunkLog.plan`): {"chunks": int, "fingerprint": str}; {} when it
    has none (a build that has not planned yet, or one begun before plans were recorded) or it cannot be read.
    in: the log's folder (`<build>/_chunks`); out: the plan."""
    try:
        plan = json.loads((Path(log_folder) / CHUNK_PLAN).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    ok = isinstance(plan, dict) and isinstance(plan.get("chunks"), int) and isinstance(plan.get("fingerprint"), str)
    return plan if ok else {}


@dataclass(frozen=True)
class ChunkProgress:
    """How far an unfinished chunked build got: chunks done, chunks planned (None: not recorded), and when the
    newest of those done was recorded (epoch seconds; None when none is)."""

    done: int
    planned: int | None
    newest: float | None


def chunk_progress(build_folder: Path) -> ChunkProgress | None:
    """How far a chunked build got, from its chunk log alone (:class:`ChunkLog`; no chunk data is read): the chunk
    records (`<chunk id>.json`, readable) that carry the plan's fingerprint (any, without a plan: a build begun before
    plans were recorded, whose total is then unknown), the planned count (:func:`read_chunk_plan`) and the newest
    record's modification time. A record of a replaced store (another fingerprint) is work to do again, as the writer
    decides; other files of the folder (a fan-out's shards.json, temp files) are no chunks. None when the folder has
    neither plan nor record (no chunked stage, not started, or published). in: a partial artifact folder
    (ArtifactStore.partial_path); out: the progress or None."""
    folder = Path(build_folder) / CHUNK_DIR
    plan = read_chunk_plan(folder)
    wanted = plan.get("fingerprint")
    done, newest = 0, None
    for path in folder.glob("*.json"):
        if not is_chunk_record(path):
            continue
        try:
            record, mtime = json.loads(path.read_text(encoding="utf-8")), path.stat().st_mtime
        except (OSError, ValueError):  # unreadable, or replaced or removed meanwhile
            continue
        if not isinstance(record, dict) or (wanted and record.get("fingerprint") != wanted):
            continue
        done, newest = done + 1, max(mtime, newest or mtime)
    if not plan and not done:
        return None
    return ChunkProgress(done, plan.get("chunks"), newest)


def reused_chunks(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> int:
    """How many chunks a build reused from the interrupted build it resumed: the records of :func:`chunk_records`
    taken before it ran that are unchanged after it (a record of a replaced store, another fingerprint, is computed
    and marked again, so it does not count). in: the two snapshots; out: the count."""
    return sum(1 for name, stamp in before.items() if after.get(name) == stamp)


class ArtifactStore:
    """All artifacts under one root folder, addressed by (stage, key)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        if self.root.exists() and not self.root.is_dir():  # mkdir said only "[Errno 17] File exists"
            raise NotADirectoryError(f"the artifact root {self.root} is a file, not a folder: pass --root (or "
                                     "runtime.artifact_root) a folder, new or one your runs wrote to")
        self.root.mkdir(parents=True, exist_ok=True)
        self.waited: dict[tuple[str, str], float] = {}  # seconds a build lock waited for another process

    def path(self, stage: str, key: str) -> Path:
        """Final folder of an artifact (may not exist)."""
        return self.root / stage / key

    def partial_path(self, stage: str, key: str) -> Path:
        """Folder an unfinished build lives in; stable, so a rerun resumes it."""
        return self.root / stage / f".partial-{key}"

    def problems(self, stage: str, key: str, hashes: bool = True) -> list[str]:
        """What is wrong with a stored artifact (empty list = complete and intact): an unreadable manifest, or a file
        it lists that is missing, of another size or (hashes=True) of another sha256. hashes=False checks sizes only:
        one stat per file, quick on gigabytes (`saerl status`), but blind to a changed byte that keeps the size."""
        return folder_problems(self.path(stage, key), hashes)

    def is_complete(self, stage: str, key: str) -> bool:
        """True when the artifact exists and verifies. A verification is remembered in this process (any store) while
        the manifest and every file it lists keep their size, modification and change times and inode
        (:func:`tree_stamp`): a flow that checked an artifact and the task that reuses it, or a build just published,
        hash it once, while a file rewritten since is hashed again."""
        folder = self.path(stage, key)
        stamp = tree_stamp(folder)
        if stamp is not None and _VERIFIED.get(str(folder)) == stamp:
            return True
        if self.problems(stage, key):
            return False
        if stamp is not None:
            _VERIFIED[str(folder)] = stamp
        return True

    def open(self, stage: str, key: str) -> ArtifactRef:
        """A verified reference to a finished artifact; raises CorruptArtifact naming the path."""
        if not self.is_complete(stage, key):
            problems = self.problems(stage, key)
            raise CorruptArtifact(f"artifact {self.path(stage, key)} is not usable: {'; '.join(problems)}")
        return ArtifactRef(stage, key, str(self.path(stage, key)))

    @contextmanager
    def lock(self, stage: str, key: str) -> Iterator[None]:
        """Exclusive inter-process lock for building one key. When another process holds it (a second run of the
        same config building the same artifact), a warning says so before the wait, which may last as long as that
        build; the seconds waited are kept in `waited[(stage, key)]` (:meth:`take_waited`)."""
        lock_path = self.root / stage / f".lock-{key}"

        def warn() -> None:
            log.warning("%s %s: another process is building this artifact (it holds %s); waiting for it to finish, "
                        "then reusing what it built", stage, key[:KEY_SHOWN], lock_path)

        with file_lock(lock_path, on_wait=warn) as waited:
            if waited:
                self.waited[(stage, key)] = waited
            yield

    def take_waited(self, stage: str, key: str) -> float:
        """Seconds the last :meth:`lock` of (stage, key) in this store waited for another process (0 when it did not
        wait), forgotten once read."""
        return self.waited.pop((stage, key), 0.0)

    def begin(self, stage: str, key: str) -> Build:
        """Open (or reopen, to resume) the partial folder of a build. Hold :meth:`lock` around the build."""
        partial = self.partial_path(stage, key)
        partial.mkdir(parents=True, exist_ok=True)
        started = {"started": time.monotonic()}  # a span's start (publish's 'seconds'), no time of day
        return Build(partial, started, self.root)

    def publish(self, stage: str, key: str, build: Build, manifest: dict[str, Any] | None = None) -> ArtifactRef:
        """Hash and fsync a finished build, write its manifest and rename it into place in one step. The chunk log
        goes just before the rename, so a publish cut short (hashing a large artifact takes a while) resumes."""
        partial = build.path
        notes = dict(build.notes)
        started = notes.pop("started", time.monotonic())
        record = {
            "stage": stage,
            "key": key,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.monotonic() - started, 3),
            "library_versions": library_versions(),
            "machine": build_machine(),
            "git": build_code(),  # the code that built it: a stage's code edited without a version bump keys alike
            **(manifest or {}),
            **notes,
        }
        # a killed writer's half-written file would be hashed into the artifact; only now, with every writer done: the
        # shards of a sharded build write into one partial folder at once (their chunk marks), each through begin
        remove_temp_files(partial)
        follow_umask(partial)  # before the stats: a mode change is no content change, but keep them in step
        before = file_stats(partial)  # the files as they are hashed: the memo below holds only if none moved since
        record["files"] = hash_tree(partial)
        write_json_atomic(partial / MANIFEST, record)
        shutil.rmtree(partial / CHUNK_DIR, ignore_errors=True)  # only now: a publish cut short still resumes
        _fsync_dir(partial)
        final = self.path(stage, key)
        if final.exists():  # a corrupt leftover: move it aside, then remove
            trash = final.with_name(f".trash-{key}-{os.getpid()}")
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(partial, final)
        _fsync_dir(final.parent)
        stamp = tree_stamp(final)  # just hashed into its manifest: no second pass, unless a file changed meanwhile
        if stamp is not None and all(before.get(rel) == tuple(st) for rel, *st in stamp if rel != MANIFEST):
            _VERIFIED[str(final)] = stamp
        return self.open(stage, key)

    @contextmanager
    def build(self, stage: str, key: str, manifest: dict[str, Any] | None = None) -> Iterator[Build]:
        """Build an artifact in its partial folder and publish it atomically when the block succeeds.

        On an exception the partial folder stays, with its chunk log, so the next build resumes.
        The caller should hold :meth:`lock` (``ensure`` does both).
        """
        build = self.begin(stage, key)
        yield build
        self.publish(stage, key, build, manifest)

    def ensure(
        self, stage: str, key: str, compute: Callable[[Build], None], manifest: dict[str, Any] | None = None,
        take_lock: bool = True,
    ) -> tuple[ArtifactRef, bool]:
        """Return (ref, computed): reuse a verified artifact, or build it with `compute(build)` under a lock.

        A corrupt stored artifact is rebuilt. `computed` is False when the artifact was reused. With
        take_lock=False the caller holds the key's lock for this call (another process may: a flow fanning a
        sharded stage out holds it for its stage task).
        """
        if self.is_complete(stage, key):
            return self.open(stage, key), False
        with self.lock(stage, key) if take_lock else nullcontext():
            if self.is_complete(stage, key):  # another process finished it while we waited
                return self.open(stage, key), False
            with self.build(stage, key, manifest) as b:
                compute(b)
        return self.open(stage, key), True

    def size_bytes(self, stage: str, key: str) -> int:
        """Total bytes of a stored artifact's files."""
        return tree_bytes(self.path(stage, key))
