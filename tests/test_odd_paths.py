"""Odd filesystem paths: glob characters in artifact roots and data files (polars reads a path as a pattern unless
told not to), '?', '%' and '#' in a root's MLflow SQLite URL, '~' in a configured one, spaces in the commands
saerl prints to paste, and file names near the filesystem's length limit."""

from __future__ import annotations

import ast
import inspect
import logging
import os
import re
import shlex
import sys
from pathlib import Path

import polars as pl
import pytest

from saerl.artifacts import TEMP_NAME, ArtifactStore, remove_temp_files, write_file_atomic
from saerl.config import load_config
from saerl.data import IngestError, check_mapping, load_table

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("saerl", "flows", "tasks", "benchmarks", "dev.py")  # the code whose polars reads are checked
# polars readers that take a path and read it as a pattern, with no glob=False to say otherwise: given an open
# file instead (read_json, read_parquet_metadata: a path is read as it is)
PATTERN_ONLY_READERS = frozenset({"read_parquet_schema", "read_ndjson", "scan_ndjson", "read_ipc", "read_ipc_schema"})
UNNAMEABLE = ("this locale's file-name encoding ({}) cannot name it (LC_ALL=C without UTF-8 mode); saerl refuses such "
              "a path up front (saerl.preflight.check_paths_encodable)")  # why a test of a non-ASCII path is skipped


def nameable(name: str) -> bool:
    """Can this process hand the OS a file name holding `name` (its file-name encoding has every character)?"""
    try:
        name.encode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())
    except UnicodeEncodeError:
        return False
    return True


def needs_the_name(name: str) -> pytest.MarkDecorator:
    """Skip a test whose paths hold `name` where the file-name encoding cannot name it (UNNAMEABLE)."""
    return pytest.mark.skipif(not nameable(name), reason=UNNAMEABLE.format(sys.getfilesystemencoding()))


GLOB_READERS = frozenset(n for n in dir(pl) if n.startswith(("read_", "scan_"))
                         and "glob" in inspect.signature(getattr(pl, n)).parameters)


def _polars_names(tree: ast.AST) -> tuple[set[str], dict[str, str]]:
    """The names a module binds polars to ('pl'), and the readers it imports by name ({local name: reader})."""
    modules, readers = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == "polars"}
        elif isinstance(node, ast.ImportFrom) and node.module == "polars":
            readers |= {a.asname or a.name: a.name for a in node.names}
    return modules, readers


def _opened_names(tree: ast.AST) -> set[str]:
    """Names bound by `with open(...) as fh` / `with path.open(...) as fh` anywhere in a module."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                call, target = item.context_expr, item.optional_vars
                opener = isinstance(call, ast.Call) and (
                    isinstance(call.func, ast.Name) and call.func.id == "open"
                    or isinstance(call.func, ast.Attribute) and call.func.attr == "open")
                if opener and isinstance(target, ast.Name):
                    names.add(target.id)
    return names


def pattern_reads(source: str) -> list[str]:
    """The polars reads in `source` that may read a path as a glob pattern: a reader with a glob parameter called
    without glob=False, or a pattern-only reader (PATTERN_ONLY_READERS) given anything but a file opened in a
    `with` block. in: a module's source; out: 'line N: reader' per offending call."""
    tree = ast.parse(source)
    modules, imported = _polars_names(tree)
    opened = _opened_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in modules:
            reader = func.attr
        elif isinstance(func, ast.Name) and func.id in imported:
            reader = imported[func.id]
        else:
            continue
        if reader in GLOB_READERS:
            glob = next((k.value for k in node.keywords if k.arg == "glob"), None)
            if not (isinstance(glob, ast.Constant) and glob.value is False):
                found.append(f"line {node.lineno}: {reader}")
        elif reader in PATTERN_ONLY_READERS:
            source_arg = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == "source"), None)
            if not (isinstance(source_arg, ast.Name) and source_arg.id in opened):
                found.append(f"line {node.lineno}: {reader}")
    return found


def test_every_polars_read_of_a_path_reads_that_file_and_no_pattern():
    """polars reads a path as a glob by default: a root named 'runs [v2]' failed every run at ingest ('expanded
    paths were empty'), and a data file 'p?.parquet' silently took in its sibling 'pX.parquet'. Each read passes
    glob=False, or an open file where the reader has no such switch."""
    files = [p for s in SOURCES for p in ((REPO / s).rglob("*.py") if (REPO / s).is_dir() else [REPO / s])]
    offenders = {str(p.relative_to(REPO)): found for p in files if (found := pattern_reads(p.read_text(encoding="utf-8")))}
    assert offenders == {}, "pass glob=False (or an open file: PATTERN_ONLY_READERS) to these polars reads"


def test_the_pattern_read_check_sees_each_kind_of_read():
    source = ("import polars as pl\nimport polars as polars2\nfrom polars import read_csv as rc\n"
              "pl.read_parquet(p)\npl.scan_parquet(p, glob=False)\npolars2.scan_csv(p, glob=True)\nrc(p)\n"
              "pl.read_parquet_schema(p)\nwith p.open('rb') as fh:\n    pl.read_parquet_schema(fh)\n"
              "pl.read_ndjson(source=p)\npl.read_json(p)\n")
    assert pattern_reads(source) == ["line 4: read_parquet", "line 6: scan_csv", "line 7: read_csv",
                                     "line 8: read_parquet_schema", "line 11: read_ndjson"]


def test_the_readers_the_check_trusts_with_a_path_read_it_as_a_name(tmp_path):
    """read_json (a JSON array file) takes no glob switch and reads the named file only; read_ndjson reads a
    pattern (hence PATTERN_ONLY_READERS)."""
    pl.DataFrame({"a": [1, 2]}).write_json(tmp_path / "j?.json")
    pl.DataFrame({"a": [3]}).write_json(tmp_path / "jX.json")
    assert pl.read_json(tmp_path / "j?.json").height == 2
    pl.DataFrame({"a": [1, 2]}).write_ndjson(tmp_path / "n?.jsonl")
    pl.DataFrame({"a": [3]}).write_ndjson(tmp_path / "nX.jsonl")
    assert pl.read_ndjson(tmp_path / "n?.jsonl").height == 3, "polars stopped globbing ndjson: trim the list"


def _rows(n: int, start: int = 0) -> pl.DataFrame:
    """`n` gsm8k-like rows numbered from `start`."""
    return pl.DataFrame({"question": [f"What is {i} + 2?" for i in range(start, start + n)],
                         "answer": [f"#### {i + 2}" for i in range(start, start + n)]})


def test_a_data_file_named_like_a_pattern_reads_only_its_own_rows(tmp_path):
    """'p?.parquet' read its sibling 'pX.parquet' too, 'c*.csv' its sibling 'cY.csv' (ingest's key hashes the named
    file only, so a changed sibling even left a stale ingest cached); 'gsm8k [clean].parquet' could not be read."""
    _rows(6).write_parquet(tmp_path / "p?.parquet")
    _rows(4, 100).write_parquet(tmp_path / "pX.parquet")
    _rows(5).write_csv(tmp_path / "c*.csv")
    _rows(3, 100).write_csv(tmp_path / "cY.csv")
    _rows(7).write_parquet(tmp_path / "gsm8k [clean].parquet")
    assert load_table(tmp_path / "p?.parquet").frame.height == 6
    assert load_table(tmp_path / "c*.csv").frame.height == 5
    assert load_table(tmp_path / "gsm8k [clean].parquet").frame.height == 7
    cfg = load_config(None, ["data.source=file", f"data.path={tmp_path / 'x.jsonl'}"]).data
    for name in ("gsm8k [clean].parquet", "c*.csv"):  # the up-front check reads the header / schema itself
        check_mapping(cfg, tmp_path / name)
        with pytest.raises(IngestError, match=r"nosuch.*question"):
            check_mapping(cfg.model_copy(update={"prompt": "nosuch"}), tmp_path / name)


def test_a_held_out_set_with_brackets_in_its_name_is_read(tmp_path):
    """eval.sets.held: 'held [out].parquet' raised 'expanded paths were empty' where training and heldout read it."""
    from saerl.runners import held_out_rows

    held = tmp_path / "held [out].parquet"
    _rows(5).write_parquet(held)
    cfg = load_config(None, ["data.source=file", f"data.path={tmp_path / 'x.jsonl'}", f"eval.sets={{held: '{held}'}}"])
    assert held_out_rows(cfg, "held", cfg.eval.sets["held"]).kept.height == 5


def test_an_artifact_root_with_brackets_reads_its_own_artifacts(tmp_path):
    """A root 'runs [v2]' built its first artifact, then the next stage to read one failed: polars read the
    artifact's path as a pattern that matched nothing."""
    from saerl.pipeline import run_all
    from saerl.runners import read_prompts

    data = tmp_path / "train.parquet"  # a plain name: the root's own reads are what is checked
    _rows(8).write_parquet(data)
    root = tmp_path / "runs [v2]"
    cfg = load_config(None, ["data.source=file", f"data.path='{data}'", "data.answer=answer",
                             f"runtime.artifact_root='{root}'"])
    ingest = run_all(ArtifactStore(root), cfg, until="ingest")["ingest"].ref
    assert Path(ingest.path).is_relative_to(root)
    assert read_prompts({"ingest": ingest}).height == 8


ODD_ROOTS = ("runs?1", "pc%41", "a#b", pytest.param("sp ace é", marks=needs_the_name("é")),
             "x%3Fy")  # '?' ended the path, '%41' was decoded as 'A'


@pytest.mark.parametrize("name", ODD_ROOTS)
def test_a_roots_mlflow_url_names_its_own_database_file(tmp_path, name):
    """The root's store URL pasted the path in: SQLAlchemy (MLflow's) reads up to a '?' and decodes '%XX', so a
    root 'runs?1' kept its store in the file 'runs' beside it (shared by every 'runs?N'), and 'pc%41' opened 'pcA'.
    The URL quotes them; saerl's own reading of it (sqlite_file: the lock, mlruns, gc) names the same file."""
    from sqlalchemy.engine.url import make_url

    from saerl.tracking import ROOT_STORE, root_store_uri, sqlite_file

    root = tmp_path / name
    uri = root_store_uri(root)
    assert make_url(uri).database == str(root / ROOT_STORE)
    assert sqlite_file(uri) == root / ROOT_STORE


@pytest.mark.parametrize("uri", ["sqlite:////x/pc%41/m.db", "sqlite:////x/a%3Fb/m.db?timeout=5",
                                 "sqlite:////x/a#b/m.db", "sqlite:///rel/m.db", "sqlite:////x/q?x/m.db"])
def test_saerl_reads_a_given_sqlite_url_as_mlflow_does(uri, tmp_path, monkeypatch):
    """A tracking.uri the user wrote: sqlite_file (the lock beside the store, its mlruns folder, gc's accounting)
    names the file SQLAlchemy opens, '%41' decoded and the path ending at a '?', as MLflow reads it."""
    from sqlalchemy.engine.url import make_url

    from saerl.tracking import sqlite_file

    monkeypatch.chdir(tmp_path)
    assert sqlite_file(uri) == (tmp_path / make_url(uri).database).resolve()


def test_a_sqlite_tracking_uri_in_the_home_folder_is_the_same_file_for_saerl_and_mlflow(tmp_path, monkeypatch):
    """tracking.uri=sqlite:///~/m.db: saerl expanded '~' (its lock, mlruns folder and gc looked in the home folder)
    but MLflow opened './~/m.db' of the current folder. MLflow now gets the expanded path too."""
    from sqlalchemy.engine.url import make_url

    from saerl.tracking import recorded_store, sqlite_file, tracking_uri

    home = tmp_path / "home [me] 100%"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    cfg = load_config(None, ["tracking.uri=sqlite:///~/m.db"])
    uri = tracking_uri(cfg, tmp_path / "root")
    assert make_url(uri).database == str(home / "m.db") == str(sqlite_file(uri))
    assert sqlite_file(recorded_store({"tracking.uri": "sqlite:///~/m.db"}, tmp_path)) == home / "m.db"
    assert tracking_uri(load_config(None, ["tracking.uri=sqlite:////~/m.db"]), tmp_path) == "sqlite:////~/m.db"


@pytest.mark.slow
def test_mlflow_keeps_each_odd_roots_store_inside_it(tmp_path, monkeypatch):
    """Real MLflow clients on roots 'runs?1', 'runs?2', 'pc%41', 'a#b' and a home-folder URI: each store is created
    where saerl says it is (sqlite_file), inside its root, and none is shared."""
    from mlflow.tracking import MlflowClient

    from saerl.tracking import ROOT_STORE, root_store_uri, sqlite_file, tracking_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    uris = [root_store_uri(tmp_path / n) for n in ("runs?1", "runs?2", "pc%41", "a#b")]
    uris.append(tracking_uri(load_config(None, ["tracking.uri=sqlite:///~/m.db"]), tmp_path))
    for i, uri in enumerate(uris):
        sqlite_file(uri).parent.mkdir(parents=True, exist_ok=True)
        MlflowClient(tracking_uri=uri).create_experiment(f"e{i}")
    made = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.db"))
    assert made == sorted(["runs?1/" + ROOT_STORE, "runs?2/" + ROOT_STORE, "pc%41/" + ROOT_STORE,
                           "a#b/" + ROOT_STORE, "home/m.db"])
    assert all(sqlite_file(u).exists() for u in uris)


@pytest.mark.parametrize("length", [100, 250, 255])
def test_a_file_name_near_the_length_limit_is_written_atomically(tmp_path, length):
    """`saerl report --html NAME` with a 242-255 byte name: the temp name '.<name>.tmp-<pid>' was too long
    (ENAMETOOLONG) though the name itself is valid. The temp name fits, is still recognised as a temp file (a kill's
    leftover is removed), and two long names sharing their head get two temp names."""
    path = tmp_path / ("r" * (length - 5) + ".html")
    write_file_atomic(path, lambda tmp: tmp.write_text("page"))
    from saerl.artifacts import temp_name

    assert path.read_text() == "page" and os.listdir(tmp_path) == [path.name]
    twin = path.with_name("r" * (length - 5) + ".htmx")
    assert TEMP_NAME.fullmatch(temp_name(path)) and temp_name(path) != temp_name(twin)
    if length == 100:  # a name with room keeps the plain temp name
        assert temp_name(path) == f".{path.name}.tmp-{os.getpid()}"
    (tmp_path / temp_name(twin)).write_text("half")  # what a kill inside the write leaves
    assert remove_temp_files(tmp_path) == [tmp_path / temp_name(twin)]


def _pasted_words(text: str, command: str) -> list[str]:
    """The words a shell splits the first `command ...` quoted in backticks in `text` into."""
    (found,) = re.findall(rf"`({re.escape(command)} [^`]*)`", text)[:1]
    return shlex.split(found)


ODD_DIR = "sp ace données #1 [v2]"  # a folder name a pasted command split at


def test_the_started_line_pastes_whole_with_a_root_with_spaces(tmp_path, capsys):
    from flows.pipeline import announce

    root = tmp_path / ODD_DIR
    announce(root, "20260101-000000-000000-abcd")
    assert _pasted_words(capsys.readouterr().err, "saerl status") == [
        "saerl", "status", "20260101-000000-000000-abcd", "--root", str(root)]


@needs_the_name(ODD_DIR)
def test_the_full_disk_hint_pastes_whole_with_a_root_with_spaces(tmp_path):
    import errno

    from flows.cli import naming_a_full_disk

    root = tmp_path / ODD_DIR
    root.mkdir()
    with pytest.raises(OSError) as raised, naming_a_full_disk(root):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert _pasted_words(str(raised.value), "saerl gc") == ["saerl", "gc", "--root", str(root), "--dry-run"]


@needs_the_name(ODD_DIR)
def test_the_saerl_ingest_hints_paste_whole_with_a_data_file_with_spaces(tmp_path, caplog):
    """The eval-set warning and the no-usable-row error each name `saerl ingest FILE --prompt F --answer F`."""
    from saerl.runners import eval_sets

    folder = tmp_path / ODD_DIR
    folder.mkdir()
    held = folder / "held set.jsonl"
    held.write_text('{"question": "q1?", "answer": "1"}\n{"question": "", "answer": "2"}\n', encoding="utf-8")
    cfg = load_config(None, ["data.source=file", f"data.path={tmp_path / 'x.jsonl'}", f"eval.sets={{h: '{held}'}}"])
    with caplog.at_level(logging.WARNING, logger="saerl.runners"):
        eval_sets(cfg, {})
    said = " ".join(r.getMessage() for r in caplog.records)
    assert _pasted_words(said, "saerl ingest")[:3] == ["saerl", "ingest", str(held)]
    held.write_text('{"question": "", "answer": "2"}\n', encoding="utf-8")
    with pytest.raises(IngestError) as raised:
        eval_sets(cfg, {})
    assert _pasted_words(str(raised.value), "saerl ingest")[:3] == ["saerl", "ingest", str(held)]
