"""A locale whose encoding is not UTF-8 (LC_ALL=C without UTF-8 mode: ASCII; a latin-1 locale; PYTHONIOENCODING):
user text that standard output cannot encode prints escaped instead of failing a run or a report, the code state
reads git's output as bytes, path fields the file-name encoding cannot name are refused in one line, and every
text file saerl opens names its encoding."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from saerl.config import build_config, load_config

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
SOURCES = ("saerl", "flows", "tasks", "benchmarks", "dev.py")  # the code whose text opens are checked
ASCII_LOCALE = {"LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}  # ASCII everywhere (no C.UTF-8 coercion)
NAME = "smoke_\u00fc\u6570\u03c0"  # a config name with a latin-1 letter, a CJK character and a Greek one
TOPIC = "linear_\u6570"  # a data file's topic label, as the report's cluster table shows it
NOTE = "topic 2 = arith_\u6570"  # a properties note quoting a label
CHILD_TIMEOUT_S = 120  # one saerl command in a child process
RUN_TIMEOUT_S = 900  # a smoke run up to ingest (the testbed LM's pretraining, a Prefect server's start)


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment with the checkout first on PYTHONPATH, less the locale and UTF-8 mode variables,
    plus `extra`. in: variables to set; out: the environment."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "PYTHONUTF8", "PYTHONIOENCODING",
                        "PYTHONCOERCECLOCALE")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env | extra


def run_cli(*args: str, timeout: float = CHILD_TIMEOUT_S, **env: str) -> subprocess.CompletedProcess:
    """`saerl ARGS` (flows.cli) in a child process under `env` (child_env), its output kept as bytes; killed after
    `timeout` seconds."""
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=child_env(**env), capture_output=True,
                          timeout=timeout, check=False, cwd=REPO)


# ------------------------------------------------------------------------------------------------ printing


def labelled_run(root: Path) -> str:
    """A finished run named NAME under `root` whose properties stage has a cluster of topic TOPIC and the note NOTE
    (a user's data with CJK topic labels). out: its run id."""
    from saerl.artifacts import ArtifactStore
    from saerl.runs import RunRecord, StageRecord, save_run

    clusters = pl.DataFrame({"cluster": [0, 1], "size": [5, 1], "share": [5 / 6, 1 / 6], "top_features": [[3], [7]],
                             "top_topic": ["arith", TOPIC], "top_topic_share": [1.0, 1.0]})

    def build(b):
        clusters.write_parquet(b.path / "clusters.parquet")
        b.note(notes=[NOTE])

    ref = ArtifactStore(root).ensure("properties", "p" * 20, build)[0]
    record = RunRecord(name=NAME, stages={"properties": StageRecord(
        stage="properties", key=ref.key, status="computed", reason=f"computed: config changed: data.prompt "
        f"'q'->'{NAME}: {{q}}'", config={}, inputs={}, path=ref.path)})
    save_run(root, record)
    return record.run_id


def text_stdout(monkeypatch: pytest.MonkeyPatch, encoding: str) -> io.BytesIO:
    """Make standard output a text file of `encoding` with Python's default strict errors, as a latin-1 or ASCII
    locale gives it (PYTHONIOENCODING=ascii). out: the bytes written to it."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding=encoding, write_through=True))
    return raw


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_report_and_status_print_labels_and_names_stdout_cannot_encode_escaped_and_write_the_page(
        tmp_path, monkeypatch, encoding):
    """Under a latin-1 or ASCII standard output, `saerl report` of a run on data with CJK topic labels exited 2
    with a bare codec error and wrote no HTML page (the table is printed first), and `saerl status` / `report` of a
    run named 'smoke_' + non-ASCII exited 2 the same way. Now the text prints with what the encoding lacks escaped,
    as Python's stderr does, and the page is written (UTF-8)."""
    from flows.cli import main

    root, page = tmp_path / "root", tmp_path / "out.html"
    run_id = labelled_run(root)
    out = text_stdout(monkeypatch, encoding)
    assert main(["report", "--root", str(root), "--html", str(page)]) == 0
    text = out.getvalue().decode(encoding)
    assert "linear_\\u6570" in text and "arith_\\u6570" in text, "the label is printed escaped"
    assert NAME.encode(encoding, "backslashreplace").decode(encoding) in text, "the run's name too"
    assert f"wrote {page}" in text
    assert TOPIC in page.read_text(encoding="utf-8") and NAME in page.read_text(encoding="utf-8")
    for command in (["status", "--root", str(root)], ["status", run_id, "--root", str(root), "--check"],
                    ["status", "--list", "--root", str(root)]):
        assert main(command) == 0, command
    assert out.getvalue().decode(encoding).count("smoke_") >= 4


def test_report_writes_its_page_even_when_printing_its_table_fails(tmp_path, monkeypatch):
    """The page is written before the table is printed: a printing that fails (a reader gone: `saerl report --html
    p | head`, an output that cannot take the text) leaves the page the user asked for."""
    from flows.cli import main

    root, page = tmp_path / "root", tmp_path / "out.html"
    labelled_run(root)

    class Gone(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Gone())
    main(["report", "--root", str(root), "--html", str(page)])
    assert TOPIC in page.read_text(encoding="utf-8")


def test_a_flow_line_stdout_cannot_encode_is_printed_escaped_not_failing_the_run(monkeypatch):
    """flows.pipeline.say printed a run's last table ('run ID (smoke_...)') and a stage's reason quoting a changed
    config value: under a latin-1 or ASCII locale the UnicodeEncodeError failed the finished run (exit 1, Prefect's
    flow run Failed, the record complete), and a deployment's run, which a Prefect worker starts without the CLI,
    the same. say escapes what the output's encoding lacks itself."""
    from flows.pipeline import say

    out = text_stdout(monkeypatch, "ascii")
    say(f"run 20261207-030743 ({NAME})\ningest  computed  config changed: data.prompt 'q'->'Aufgabe \u2713: {{q}}'",
        label="mix=0.2")
    text = out.getvalue().decode("ascii")
    assert "mix=0.2 | " in text and "(smoke_\\xfc\\u6570\\u03c0)" in text and "Aufgabe \\u2713" in text


def test_the_cli_prints_under_a_real_ascii_and_latin1_stdout(tmp_path):
    """The same through a real standard output: `saerl report` in a child process under PYTHONIOENCODING=ascii and
    =latin-1 (the audit's repro) exits 0 with the labels escaped, and writes the page."""
    root = tmp_path / "root"
    labelled_run(root)
    for encoding in ("ascii", "latin-1"):
        page = tmp_path / f"{encoding}.html"
        done = run_cli("report", "--root", str(root), "--html", str(page), PYTHONIOENCODING=encoding)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert b"linear_\\u6570" in done.stdout and page.is_file()


@pytest.mark.slow
def test_a_run_whose_name_stdout_cannot_encode_finishes_and_prints_its_table(tmp_path):
    """The audit's repro: `saerl run configs/smoke.yaml` named 'smoke_' + non-ASCII under PYTHONIOENCODING=ascii
    computed every stage, then its last table ('run ID (NAME)') raised: exit 1, 'failed at an unrecorded point',
    while the record said complete. It exits 0 with the name escaped; `saerl status` of it too."""
    root = str(tmp_path / "root")
    done = run_cli("run", str(SMOKE), f"name={NAME}", "--until", "ingest", "--root", root, PYTHONIOENCODING="ascii",
                   timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    assert b"(smoke_\\xfc\\u6570\\u03c0)" in done.stdout
    status = run_cli("status", "--root", root, PYTHONIOENCODING="ascii")
    assert status.returncode == 0 and b"smoke_\\xfc\\u6570\\u03c0" in status.stdout


def test_output_a_user_chose_errors_for_is_left_as_it_is(monkeypatch):
    """PYTHONIOENCODING=ascii:replace is the user's choice: kept. A file name's undecodable bytes (an argument
    under the C locale) are written back as those bytes, as before."""
    from flows.cli import OUTPUT_ERRORS, escape_unencodable_output

    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="ascii", errors="replace"))
    escape_unencodable_output()
    assert sys.stdout.errors == "replace"
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="ascii", errors="surrogateescape",
                                                        write_through=True))
    escape_unencodable_output()
    assert sys.stdout.errors == OUTPUT_ERRORS
    print("root r\udcfc, name \u00fc")
    assert raw.getvalue() == b"root r\xfc, name \\xfc\n"


# ------------------------------------------------------------------------------------------------ git's output


CODE_STATE = "import json, sys\nfrom saerl.artifacts import code_state\nprint(json.dumps(code_state(sys.argv[1])))"


def test_a_dirty_checkout_with_a_non_ascii_diff_has_one_code_state_under_every_locale(tmp_path):
    """Under LC_ALL=C (no UTF-8 mode) an uncommitted edit whose diff held a non-ASCII byte made git's output
    undecodable: `saerl --version` and every run died with UnicodeDecodeError; under latin-1 the diff hashed
    otherwise than under UTF-8, so one root used from both saw code drift. The hash now reads git's bytes: the same
    under every locale, and under UTF-8 the same as before (the decoded text, UTF-8 encoded)."""
    from gitrepo import git_in, make_saerl_checkout

    repo = make_saerl_checkout(tmp_path)
    (repo / "saerl" / "mod.py").write_text("x = 1  # Gr\u00f6\u00dfe \u2264 \u6570\n", encoding="utf-8")
    (repo / "saerl" / "new.py").write_text("y = '\u03c0'\n", encoding="utf-8")  # untracked
    states = {}
    for name, env in (("utf8", {"LC_ALL": "C.UTF-8"}), ("ascii", ASCII_LOCALE)):
        done = subprocess.run([sys.executable, "-c", CODE_STATE, str(repo / "saerl")], env=child_env(**env),
                              capture_output=True, timeout=CHILD_TIMEOUT_S, check=False)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        states[name] = json.loads(done.stdout)
    assert states["ascii"] == states["utf8"]
    assert states["utf8"]["dirty"] == "true" and states["utf8"]["files"] == ["saerl/mod.py", "saerl/new.py"]
    # the hash earlier manifests recorded: git's output read as UTF-8 text, stripped, encoded back
    diff = subprocess.run(["git", "diff", "HEAD", "--", "saerl", "flows", "tasks"], cwd=repo, capture_output=True,
                          check=True).stdout.decode("utf-8").strip()
    h = hashlib.sha256(diff.encode())
    h.update(b"saerl/new.py\0" + hashlib.sha256((repo / "saerl" / "new.py").read_bytes()).hexdigest().encode())
    assert states["utf8"]["diff"] == h.hexdigest()[:len(states["utf8"]["diff"])]
    assert git_in(repo, "status", "--short")  # still dirty: nothing was committed by reading it


# ------------------------------------------------------------------------------------------------ path fields


PATH_VALUES = {  # a config override per path field, its value non-ASCII
    "runtime.artifact_root": ["runtime.artifact_root=/tmp/r\u00e4ume_\u6570"],
    "data.path": ["data.source=file", "data.path=/tmp/d\u00e4t\u00e4/train.jsonl"],
    "eval.sets.test": ["eval.sets={test: /tmp/pr\u00fcfung.jsonl}"],
    "eval.sets.test.path": ["eval.sets={test: {path: /tmp/pr\u00fcfung.jsonl}}"],
    "model.name_or_path": ["model.name_or_path=/models/m\u00f6del"],
    "extract.model": ["extract.model=/models/\u6570"],
    "sae.path": ["sae.source=local", "sae.path=/saes/\u00e9t\u00e9"],
    "tracking.uri": ["tracking.uri=sqlite:////tmp/r%C3%A4ume/mlflow.db"],
}


@pytest.mark.parametrize("field", sorted(PATH_VALUES))
def test_a_path_field_the_file_name_encoding_cannot_write_is_refused_in_one_line(monkeypatch, field):
    from saerl.preflight import unencodable_path_problem

    cfg = load_config(SMOKE, PATH_VALUES[field])
    monkeypatch.setattr(sys, "getfilesystemencoding", lambda: "utf-8")
    assert unencodable_path_problem(cfg) is None, "UTF-8 names it"
    monkeypatch.setattr(sys, "getfilesystemencoding", lambda: "ascii")
    problem = unencodable_path_problem(cfg)
    assert problem is not None and problem.startswith(f"{field} '") and "\n" not in problem
    assert "(ascii)" in problem and "LANG=C.UTF-8" in problem and "PYTHONUTF8=1" in problem


def test_fields_that_name_no_local_path_are_not_refused(monkeypatch):
    """A config name, a hub id and a tracking server are no file names."""
    from saerl.preflight import unencodable_path_problem

    monkeypatch.setattr(sys, "getfilesystemencoding", lambda: "ascii")
    cfg = build_config({"name": NAME, "model": {"name_or_path": "Qwen/Qwen2.5-0.5B"},
                        "tracking": {"uri": "https://mlflow.example/\u00e4"}})
    assert unencodable_path_problem(cfg) is None


@pytest.mark.parametrize("field", ["runtime.artifact_root", "data.path"])
def test_saerl_run_under_an_ascii_locale_names_the_field_it_cannot_write(tmp_path, field):
    """Under LC_ALL=C a non-ASCII artifact root in the config gave `saerl: error: 'ascii' codec can't encode
    character ...`, and a non-ASCII data.path (the file there) 'data file ... does not exist'. Both now exit 2
    with one line naming the field, the value, the locale's encoding and the fix."""
    folder = f"{tmp_path}/d\u00e4t\u00e4_\u6570"  # made by its UTF-8 bytes: this process may run under LC_ALL=C too
    os.mkdir(folder.encode("utf-8"))
    with open(f"{folder}/train.jsonl".encode(), "wb") as fh:
        fh.write(b'{"question": "1+1?", "answer": "2"}\n')
    root = f"{tmp_path}/r\u00e4ume_\u6570"
    values = {"runtime.artifact_root": {"runtime": {"artifact_root": root}},
              "data.path": {"data": {"source": "file", "path": f"{folder}/train.jsonl"}}}[field]
    config = tmp_path / "cfg.json"  # JSON is YAML: read as UTF-8 under every locale
    config.write_text(json.dumps({"name": "t", **values}), encoding="utf-8")
    done = run_cli("run", str(config), "--until", "ingest", **ASCII_LOCALE)
    err = done.stderr.decode("ascii", "replace").strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, err
    assert err[0].startswith(f"saerl: {field} '") and "(ascii)" in err[0] and "PYTHONUTF8=1" in err[0]
    assert not os.path.exists(root.encode("utf-8")), "nothing made"


# ------------------------------------------------------------------------------------------------ the lint


TEXT_MODE = set("rwxat+")  # the characters of an open() mode; with 'b' it is binary
SUBPROCESS_CALLS = frozenset({"run", "Popen", "call", "check_call", "check_output"})
TEXT_SWITCHES = ("text", "universal_newlines")  # subprocess's text mode
KNOWN_ASCII = {  # calls left without an encoding on purpose: the file, module and call (ast.unparse)
    # the kernel's ASCII numbers; verify.py is pinned by its reviewed source hash (tests/test_verify.py)
    ("saerl/verify.py", "Path('/proc/self/statm').read_text()"),
}


def _imported_modules(tree: ast.AST) -> set[str]:
    """The names a module binds modules to by `import X [as Y]` (os, subprocess, tarfile, ...)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _argument(call: ast.Call, index: int, name: str) -> ast.expr | None:
    """A call's argument by position, else by keyword, else None."""
    return call.args[index] if len(call.args) > index else next(
        (k.value for k in call.keywords if k.arg == name), None)


def _text_mode(mode: ast.expr | None) -> bool:
    """Does an open() mode argument open text (no mode, a mode without 'b', or one that cannot be read here)?"""
    return not (isinstance(mode, ast.Constant) and isinstance(mode.value, str) and "b" in mode.value)


def _implicit(call: ast.Call, modules: set[str]) -> str | None:
    """What kind of text open `call` is when it names no encoding (the locale's then: ASCII under LC_ALL=C), else
    None: open() in text mode, Path.open() in text mode (a receiver that is no module, with no argument or a mode
    string), read_text() / write_text() without their encoding argument, subprocess's text mode, os.fdopen()."""
    if any(k.arg == "encoding" for k in call.keywords):
        return None
    func = call.func
    if isinstance(func, ast.Name):
        return "open" if func.id == "open" and _text_mode(_argument(call, 1, "mode")) else None
    if not isinstance(func, ast.Attribute):
        return None
    module = func.value.id if isinstance(func.value, ast.Name) and func.value.id in modules else None
    if func.attr == "open" and module is None:
        mode = _argument(call, 0, "mode")
        is_mode = mode is None or isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(
            mode.value) <= TEXT_MODE | {"b"}
        return ".open" if is_mode and _text_mode(mode) else None
    if func.attr == "read_text" and not call.args:
        return ".read_text"
    if func.attr == "write_text" and len(call.args) < 2:
        return ".write_text"
    if module == "subprocess" and func.attr in SUBPROCESS_CALLS and any(
            k.arg in TEXT_SWITCHES and not (isinstance(k.value, ast.Constant) and not k.value.value)
            for k in call.keywords):
        return f"subprocess.{func.attr}"
    if module == "os" and func.attr == "fdopen" and _text_mode(_argument(call, 1, "mode")):
        return "os.fdopen"
    return None


def implicit_encodings(source: str, where: str = "") -> list[str]:
    """The calls in `source` that open text in the locale's encoding (:func:`_implicit`), less KNOWN_ASCII ones of
    file `where`. in: a module's source, its path from the repo root; out: 'line N: kind' per call."""
    tree = ast.parse(source)
    modules = _imported_modules(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (kind := _implicit(node, modules)) and (
                where, ast.unparse(node)) not in KNOWN_ASCII:
            found.append(f"line {node.lineno}: {kind}")
    return sorted(found, key=lambda s: int(s.split()[1].rstrip(":")))


def test_every_text_file_saerl_opens_names_its_encoding():
    """Text opened without an encoding is read in the locale's: under LC_ALL=C a UTF-8 file raises
    UnicodeDecodeError, under latin-1 it mis-decodes (a model's config.json holding a non-ASCII value), and git's
    diff broke `saerl --version` and every run. Each open, read_text, write_text and text-mode subprocess names its
    encoding: utf-8 for files (JSON is UTF-8 by its spec), binary modes need none."""
    files = [p for s in SOURCES for p in ((REPO / s).rglob("*.py") if (REPO / s).is_dir() else [REPO / s])]
    offenders = {rel: found for p in files
                 if (found := implicit_encodings(p.read_text(encoding="utf-8"), rel := p.relative_to(REPO).as_posix()))}
    assert offenders == {}, 'pass encoding="utf-8" (a file) or the encoding a child process writes'


def test_the_encoding_check_sees_each_kind_of_text_open():
    source = ("import os\nimport subprocess\nimport tarfile\nfrom pathlib import Path\n"
              "open(p)\nopen(p, 'rb')\nopen(p, 'w', encoding='utf-8')\nopen(p, mode)\n"
              "p.open()\np.open('a')\np.open('rb')\nstore.open(stage, key)\ntarfile.open(p)\nos.open(p, 0)\n"
              "p.read_text()\np.read_text('utf-8')\np.write_text(t)\np.write_text(t, encoding='utf-8')\n"
              "subprocess.run(c, text=True)\nsubprocess.run(c, text=True, encoding='utf-8')\n"
              "subprocess.run(c, capture_output=True)\nsubprocess.check_output(c, universal_newlines=True)\n"
              "os.fdopen(fd, 'w')\nos.fdopen(fd, 'wb')\n")
    assert implicit_encodings(source) == [
        "line 5: open", "line 8: open", "line 9: .open", "line 10: .open", "line 15: .read_text",
        "line 17: .write_text", "line 19: subprocess.run", "line 22: subprocess.check_output", "line 23: os.fdopen"]
    assert implicit_encodings("from pathlib import Path\nPath('/proc/self/statm').read_text()\n",
                              "saerl/verify.py") == []
