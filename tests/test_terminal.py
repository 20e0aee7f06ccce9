"""What saerl writes to a terminal and to output sinks of other shapes: log lines above a drawn progress bar, when
`runtime.progress: auto` draws bars, a closed reader or a full disk under a short output, help text width, usage
errors, and MLflow's log lines (session 46's terminal-output audit)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ptys import drain, sized_pty

from flows.cli import build_parser, parse_args

REPO = Path(__file__).resolve().parents[1]
STAMP = rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"  # saerl's log line date (saerl.terminal.LOG_DATEFMT)
SUBPROCESS_S = 120  # the most one child process below may take
TERMINAL_COLUMNS = 80  # the terminal every help text must fit


def child_env(**extra: str) -> dict[str, str]:
    """The suite's environment for a child python that imports this checkout, without PYTHONUNBUFFERED (Python's
    default buffering, as a user's shell has it) unless `extra` sets it. in: variables to set; out: the env."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def on_terminal(code: str, rows: int, cols: int, **env: str) -> tuple[int, bytes]:
    """Run `python -c code` with its stderr on a fresh pty of `rows` x `cols` (0 x 0: one nobody sized, as `script
    -qc CMD /dev/null` gives a CI job) and stdout discarded. in: code, the size, variables to set (TERM...);
    out: (exit status, the bytes the terminal got)."""
    master, slave = sized_pty(rows, cols)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=slave, env=child_env(**env), cwd=REPO)
    os.close(slave)
    got = drain(master)
    return proc.wait(timeout=SUBPROCESS_S), got


EVAL_LINE = "train saerl:0 step 2: heldout greedy 0.000 (20 problems, 0.5 s)"
TRAINING_BAR = f"""
import logging, types
from flows.cli import _setup_logging
from saerl.rl import StepBar
_setup_logging(False)
bar = StepBar("train saerl:0")
bar.on_train_begin(None, types.SimpleNamespace(is_world_process_zero=True, max_steps=3), None)
bar.training_bar.update(1)
logging.getLogger("saerl.rl").info({EVAL_LINE!r})
bar.training_bar.update(2)
bar.training_bar.close()
"""


def test_a_log_line_written_while_the_training_bar_is_drawn_goes_above_the_bar():
    """On a terminal, an in-training evaluation's INFO line was written right after the training bar's last frame,
    on the bar's line: the frozen frame stayed on screen glued to it ('... 1/3 [00:02<00:042026-12-07 06:13:20 INFO
    saerl.rl: ...'), and the bar was drawn again below. The line now starts a line of its own (the bar cleared
    first) and the bar is drawn again after it."""
    status, screen = on_terminal(TRAINING_BAR, 24, 80, TERM="xterm")
    assert status == 0, screen
    line = re.search(rb"(.)" + STAMP + rb" INFO saerl\.rl: " + re.escape(EVAL_LINE.encode()) + rb"\r?\n", screen, re.S)
    assert line is not None, screen
    assert line.group(1) in (b"\r", b"\n"), f"glued to the bar: {screen[max(line.start() - 60, 0):line.end()]!r}"
    assert b"train saerl:0:" in screen[:line.start()] and b"train saerl:0: 100%" in screen[line.end():], screen


def test_log_lines_to_a_file_are_as_before_while_a_disabled_bar_is_open(tmp_path):
    """Where no bar is drawn (runtime.progress off, or auto with stderr no terminal: every saerl bar disabled), a log
    line is written as logging's StreamHandler writes it, byte for byte: nothing of tqdm's in a log file."""
    code = ("import logging\nfrom tqdm.auto import tqdm\nfrom flows.cli import _setup_logging\n_setup_logging(False)\n"
            "bar = tqdm(total=3, disable=True)\nlogging.getLogger('saerl.rl').info('said')\nbar.close()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, env=child_env(), cwd=REPO,
                          timeout=SUBPROCESS_S)
    assert re.fullmatch(STAMP + rb" INFO saerl\.rl: said\n", done.stderr), done.stderr


RANK_BAR = "train saerl:0:  40%|####      | 2/5"  # rank 0's bar frame, relayed by the stage's process


def test_a_log_line_relayed_while_a_training_ranks_bar_is_drawn_goes_above_the_bar(monkeypatch):
    """With train.num_processes > 1, rank 0 draws its training bar in its own process, and the stage's process copies
    that output to its stderr (saerl.distributed._pump); the rank's log records, relayed through the stage's loggers,
    were written right after the bar's frame, on its line ('... 2/52026-12-07 ... INFO saerl.rl: ...'): no bar of
    the stage's own process was drawn for the handler to write above. The line now starts a line of its own (the
    frame cleared first), the frame is drawn again below it, and a frame left unfinished when the ranks end is ended,
    so the next line starts its own too."""
    import io
    import logging
    from collections import deque

    from saerl.distributed import _pump
    from saerl.terminal import end_relay, stderr_handler

    screen = io.StringIO()
    monkeypatch.setattr(sys, "stderr", screen)
    logger = logging.getLogger("saerl.test_relayed_lines")
    handler = stderr_handler()  # on the stderr above, as the CLI's
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        _pump(io.BytesIO(("\r" + RANK_BAR).encode()), deque())
        logger.info(EVAL_LINE)
        _pump(io.BytesIO(b"\rtrain saerl:0:  60%|######    | 3/5"), deque())  # then killed: no closing frame
        end_relay()
        logger.info("after the ranks")
    finally:
        end_relay()  # nothing left relayed for the tests after this one
        logger.removeHandler(handler)
    text = screen.getvalue()
    line = re.search("(.)" + STAMP.decode() + " INFO saerl.test_relayed_lines: " + re.escape(EVAL_LINE) + "\n", text,
                     re.S)
    assert line is not None, repr(text)
    assert line.group(1) == "\r", f"glued to the bar: {text!r}"
    assert text[line.end():].startswith(RANK_BAR), f"the bar is not drawn again below the line: {text!r}"
    assert re.search(r"3/5\n" + STAMP.decode() + " INFO saerl.test_relayed_lines: after the ranks\n$", text), repr(text)


def test_a_bar_frame_relayed_in_two_reads_is_cleared_whole_and_drawn_again_whole_below_a_shorter_log_line():
    """The stage's process relays a rank's output as it reads it (saerl.distributed._pump: read1 of up to 4096
    bytes), so a frame can come in two pieces. A log line written then clears the whole frame, spaces over every
    column of it (a log line shorter than the frame left the frame's end on screen after it), and draws the whole
    frame again below it (not its last piece only)."""
    import logging

    from saerl.terminal import BarSafeHandler, end_relay, relay_output

    frame, log_line = "train  40%|####      | 4/10 [00:04<00:06]", "eval: accuracy 0.5"
    screen = io.StringIO()
    handler = BarSafeHandler(screen)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        relay_output("\r" + frame[:28], screen)
        relay_output(frame[28:], screen)
        handler.emit(logging.LogRecord("saerl", logging.INFO, __file__, 0, log_line, None, None))
    finally:
        end_relay(io.StringIO())  # nothing left relayed for the tests after this one
    assert len(log_line) < len(frame)
    assert screen.getvalue() == f"\r{frame}\r{' ' * len(frame)}\r{log_line}\n{frame}"


class ClosedReader(io.StringIO):
    """A stderr whose reader has gone: every write fails as a closed pipe's does."""

    def write(self, text: str) -> int:
        """in: text; raises BrokenPipeError."""
        raise BrokenPipeError(32, "Broken pipe")


def test_a_failed_write_above_a_relayed_bar_line_is_loggings_to_report_not_the_callers(monkeypatch):
    """A log line written above a training rank's relayed bar (BarSafeHandler's relayed-line path) let a failed
    write (a closed reader) escape from the logging call, failing the stage that logged; logging's other paths report
    it (Handler.handleError) and go on. It goes the same way now."""
    import logging

    from saerl import terminal

    monkeypatch.setattr(logging, "raiseExceptions", False)  # handleError stays quiet, as with python -O
    handler = terminal.stderr_handler()
    handler.setStream(ClosedReader())
    logger = logging.getLogger("saerl.test_closed_reader")
    logger.addHandler(handler)
    logger.propagate = False
    monkeypatch.setitem(terminal._RELAYED, "line", RANK_BAR)
    try:
        logger.warning("above the rank's bar")  # raised BrokenPipeError
    finally:
        logger.removeHandler(handler)


ABLATION_LINES = """
import logging, sys
from flows.cli import _setup_logging
_setup_logging(False)  # before Prefect is imported, as `saerl ablate` does
import flows.sweep as fs
from saerl.config import load_config
from saerl.sweep import with_setting


class Child:  # pipeline_flow, standing in for each setting's run: it logs as a stage does
    def with_options(self, **_):
        return self

    def __call__(self, config, until=None, sweep=None):
        logging.getLogger("saerl.scoring").warning("mix %s: k at the edge", config["curriculum"]["mix_ratio"])
        return {"run_id": "r" + sweep["setting"], "stages": {"score": {"status": "cached", "path": ""}}}


fs.pipeline_flow = Child()
config = with_setting(load_config(sys.argv[1]).model_dump(mode="json"),
                      {"runtime.artifact_root": sys.argv[2], "tracking.enabled": False})
fs.ablation_flow.fn(config=config, grid={"curriculum.mix_ratio": [0.0, 0.5]}, until="curriculum")
logging.getLogger("saerl.sweep").warning("after the sweep")
"""


def test_an_ablations_log_lines_carry_their_settings_label(tmp_path):
    """`saerl ablate` printed each setting's stage lines led by its label, but the log lines its settings' runs wrote
    on stderr (a score's warning, training health) said nothing of which setting they were for. Each is now led by
    its setting's label after its time, as its printed lines are; a line outside any setting has none."""
    done = subprocess.run([sys.executable, "-c", ABLATION_LINES, str(REPO / "configs" / "smoke.yaml"), str(tmp_path)],
                          capture_output=True, env=child_env(), cwd=REPO, timeout=SUBPROCESS_S)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if b" WARNING saerl." in line]
    assert len(lines) == 3, done.stderr
    for line, label, mix in zip(lines, (b"mix_ratio=0.0", b"mix_ratio=0.5"), (b"0.0", b"0.5"), strict=False):
        assert re.fullmatch(STAMP + b" " + re.escape(label) + rb" \| WARNING saerl\.scoring: mix " + mix
                            + b": k at the edge", line), done.stderr
    assert re.fullmatch(STAMP + rb" WARNING saerl\.sweep: after the sweep", lines[2]), done.stderr


PROGRESS = "from saerl.config import RuntimeConfig; import sys; sys.stderr.write(f'progress={RuntimeConfig().progress}')"


@pytest.mark.parametrize(("term", "rows", "cols", "drawn"), [
    ("xterm-256color", 24, 80, True),
    ("dumb", 24, 80, False),  # Emacs' shell, some CI log viewers: a bar's '\r' frames and cursor-up codes piled up
    ("xterm", 0, 0, False),  # `script -qc CMD /dev/null`: tqdm drew empty lines, and the heartbeat lines were off
])
def test_progress_auto_draws_bars_only_on_a_terminal_that_can_show_them(term, rows, cols, drawn):
    """`runtime.progress: auto` was `stderr.isatty()` alone: a TERM=dumb terminal got carriage-return frames and
    cursor-up escapes, and a pty of 0 columns got bars tqdm drew as empty lines instead of the heartbeat lines
    (saerl.rl.ProgressLog). auto is now a terminal whose TERM is not dumb and which has columns."""
    status, screen = on_terminal(PROGRESS, rows, cols, TERM=term)
    assert status == 0 and f"progress={drawn}".encode() in screen, screen


NORMALIZING = """
import json, sys
from pathlib import Path
import saerl.verify as V
from saerl.config import DataConfig
from saerl.data import ingest
V.NORMALIZE_BLOCK = 1  # a bar over 3 blocks, as over 3 x 2048 LaTeX golds
path = Path(sys.argv[1])
path.write_text("".join(json.dumps({"q": f"What is {i} over {i + 1}?", "a": f"\\\\frac{{{i}}}{{{i + 1}}}"}) + "\\n"
                        for i in range(3)))
cfg = DataConfig(source="file", path=str(path), prompt="q", answer="a")
assert ingest(cfg, path, progress=sys.argv[2] == "on").kept.height == 3
"""


def test_the_gold_normalizing_bar_follows_runtime_progress(tmp_path):
    """ingest's "normalizing gold answers" bar followed tqdm's own terminal test, not runtime.progress: drawn on a
    terminal under `runtime.progress: false`, never drawn with `true` and stderr in a file. It follows the setting."""
    data = str(tmp_path / "golds.jsonl")
    status, screen = on_terminal(NORMALIZING.replace("sys.argv[1]", repr(data)).replace("sys.argv[2]", "'off'"),
                                 24, 100, TERM="xterm")
    assert status == 0 and b"normalizing gold answers" not in screen, screen
    done = subprocess.run([sys.executable, "-c", NORMALIZING, data, "on"], capture_output=True, env=child_env(),
                          cwd=REPO, timeout=SUBPROCESS_S)
    assert done.returncode == 0 and b"normalizing gold answers" in done.stderr, done.stderr


def closed_reader() -> int:
    """The write end of a pipe whose reader has gone (`saerl ... | true`). out: its file descriptor."""
    read, write = os.pipe()
    os.close(read)
    return write


@pytest.mark.parametrize("unbuffered", [False, True])
@pytest.mark.parametrize("command", [["--version"], ["--help"], ["status", "--list", "--root", "ROOT"]])
def test_a_short_output_whose_reader_has_gone_exits_0_and_a_full_disk_says_so_in_one_line(command, unbuffered,
                                                                                         tmp_path):
    """A command whose short output stayed in stdout's buffer until the interpreter's exit (status, --version,
    --help) printed "Exception ignored ... BrokenPipeError" and exited 120 when its reader had gone, and the same
    with "OSError: [Errno 28]" on a full disk; `--version` under PYTHONUNBUFFERED=1 a 27-line traceback and exit 1.
    A gone reader is now exit status 0 without a word (as `saerl report | head`), a full disk one `saerl: error:`
    line and exit status 2 (as `saerl report > /dev/full`)."""
    argv = [sys.executable, "-m", "flows.cli", *(str(tmp_path) if w == "ROOT" else w for w in command)]
    env = child_env(**({"PYTHONUNBUFFERED": "1"} if unbuffered else {}))
    pipe = closed_reader()
    try:
        done = subprocess.run(argv, stdout=pipe, stderr=subprocess.PIPE, env=env, cwd=REPO, timeout=SUBPROCESS_S)
    finally:
        os.close(pipe)
    assert (done.returncode, done.stderr) == (0, b"")
    if not Path("/dev/full").is_char_device():
        pytest.skip("no /dev/full device to fill")
    if unbuffered and command == ["--help"]:  # argparse drops a failed write of its help: exit 0, as before
        return
    with open("/dev/full", "wb") as full:
        done = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, env=env, cwd=REPO, timeout=SUBPROCESS_S)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(
        "saerl: error: [Errno 28] No space left on device"), done.stderr


def subcommand_parsers() -> dict[str, object]:
    """Every subcommand's parser by name (build_parser's subparsers). out: {name: parser}."""
    parser = build_parser()
    return next(a.choices for a in parser._actions if a.dest == "command")


@pytest.mark.parametrize("command", [None, *subcommand_parsers()])
def test_help_fits_an_80_column_terminal(command, monkeypatch, capsys):
    """`saerl --help`'s exit statuses, `saerl ablate --help`'s description and `saerl run --help`'s example were
    wrapped by hand at up to 99 columns, so an 80-column terminal broke them mid-word. Every help line now fits in
    80 columns."""
    monkeypatch.setenv("COLUMNS", str(TERMINAL_COLUMNS))
    with pytest.raises(SystemExit):
        parse_args([*([command] if command else []), "--help"])
    text = capsys.readouterr().out
    assert text and [line for line in text.splitlines() if len(line) > TERMINAL_COLUMNS] == []


@pytest.mark.parametrize(("argv", "required"), [
    (["run"], "config"),
    (["ablate"], "config, --grid"),
    (["ablate", "--grid", "a=1,2"], "config"),
])
def test_a_missing_config_names_only_what_is_required(argv, required, capsys):
    """`saerl run` without CONFIG said 'the following arguments are required: config, overrides', and `saerl
    ablate` '... config, overrides, --grid', though overrides are optional (`saerl run configs/smoke.yaml` runs)."""
    with pytest.raises(SystemExit) as stop:
        parse_args(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: the following arguments are required: {required}")


MLFLOW_STORE = """
import logging, sys
if sys.argv[1] == "first":  # MLflow imported before saerl's logging is set up (it configured its loggers then)
    import mlflow
from flows.cli import _setup_logging
_setup_logging(sys.argv[2] == "-v")
from mlflow.tracking import MlflowClient
MlflowClient(tracking_uri="sqlite:///" + sys.argv[3]).search_experiments()  # a new store: MLflow creates its tables
logging.getLogger("mlflow.store").debug("a debug line")
"""


@pytest.mark.slow
@pytest.mark.parametrize(("order", "verbose"), [("after", ""), ("first", "-v")])
def test_mlflows_log_lines_take_saerls_format_and_level(order, verbose, tmp_path):
    """MLflow gave its loggers a handler of its own: its lines ('2026/12/07 06:10:58 INFO mlflow.store.db.utils:
    Creating initial MLflow database tables...') carried another date format than saerl's beside them, and `saerl
    -v` did not reach its DEBUG lines. They now go through saerl's handler: its format, its level."""
    done = subprocess.run([sys.executable, "-c", MLFLOW_STORE, order, verbose, str(tmp_path / "mlflow.db")],
                          capture_output=True, env=child_env(), cwd=REPO, timeout=SUBPROCESS_S)
    assert done.returncode == 0, done.stderr
    mlflow_lines = [line for line in done.stderr.splitlines() if b" mlflow." in line]
    assert any(b"INFO mlflow.store.db.utils: Creating initial MLflow database tables" in line
               for line in mlflow_lines), done.stderr
    assert all(re.match(STAMP + rb" (DEBUG|INFO|WARNING|ERROR) mlflow\.", line) for line in mlflow_lines), done.stderr
    assert any(line.endswith(b"DEBUG mlflow.store: a debug line") for line in mlflow_lines) == bool(verbose)


RUN_WHY = ("cached: same code version, inputs and config as a stored artifact; built by other code: at commit "
           "38ad53c19140 (now 89de70019665)")  # a reused stage run's why, 131 characters
SWEEP_LABEL = "mix_ratio=0.3"  # a sweep child's label, leading each of its printed lines


def test_a_runs_printed_stage_lines_and_table_fit_the_terminal(monkeypatch, capsys):
    """`saerl run` printed a line per stage run as it ended and the run's table at its end, each with the stage run's
    why (up to 200 columns): at the terminal's width (COLUMNS here) every printed line, led by its time (and a sweep
    child's by its label), fits it, the why's pieces read back whole; stdout no terminal: one line each, as before."""
    from flows.pipeline import STAMP_CHARS, format_report, said_columns, say, stage_line
    from saerl.runs import RunRecord, StageRecord

    rec = StageRecord("heldout:reach_probe:1", "ab" * 32, "cached", RUN_WHY, {}, {}, 0.0, 20_000)
    record = RunRecord(name="demo", run_id="20260103-000000-cccccc", stages={rec.stage: rec, "evaluate": StageRecord(
        "evaluate", "cd" * 32, "computed", "computed: input changed: heldout:saerl:0", {}, {}, 0.7, 150_000)})
    monkeypatch.delenv("COLUMNS", raising=False)
    assert stage_line(rec, None) == f"[{rec.stage}] cached key={rec.key[:12]} 0.0s  {RUN_WHY}"
    assert len(format_report(record, said_columns(None)).splitlines()) == 1 + 1 + len(record.stages)
    monkeypatch.setenv("COLUMNS", str(TERMINAL_COLUMNS))
    say(stage_line(rec, None))
    say(format_report(record, said_columns(None)))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 2 + 1 + len(record.stages) and [line for line in lines if len(line) > TERMINAL_COLUMNS] == []
    table = next(i for i, line in enumerate(lines) if line[STAMP_CHARS:].startswith("run "))
    assert " ".join(line.strip() for line in lines[1:table]) == RUN_WHY
    rows = lines[table + 2:]  # the reused stage run's row, its why under it, then evaluate's
    assert " ".join(line.strip() for line in rows[1:] if line.startswith(" ")).startswith(RUN_WHY + " computed:")
    say(stage_line(rec, SWEEP_LABEL), SWEEP_LABEL)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 1 and [line for line in lines if len(line) > TERMINAL_COLUMNS] == []
    assert all(line.startswith(f"{SWEEP_LABEL} | ") for line in lines[1:])


def test_a_runs_table_ends_no_line_in_spaces(monkeypatch):
    """The run's table (flows.pipeline.format_report) padded a stage run with no why out to its why column: its line
    ended in spaces, on a terminal and in a log file alike. No line of it ends in a space now, at a width or not."""
    from flows.pipeline import format_report
    from saerl.runs import RunRecord, StageRecord

    record = RunRecord(name="demo", run_id="20260103-000000-cccccc", stages={
        "label": StageRecord("label", "ef" * 32, "computed", "", {}, {}, 0.7, 150_000),
        "evaluate": StageRecord("evaluate", "cd" * 32, "cached", RUN_WHY, {}, {}, 0.1, 1_000)})
    for width in (None, TERMINAL_COLUMNS):
        lines = format_report(record, width).splitlines()
        assert any(line.startswith("label ") for line in lines) and [line for line in lines if line.endswith(" ")] == []


# ---------------------------------------------------------------------------------- saerl.terminal.table_lines

TABLE = [("stage", "status", "key", "why"), ("heldout:reach_probe:1", "cached", "abababababab", RUN_WHY),
         ("evaluate", "computed", "cdcdcdcdcdcd", "computed: input changed: heldout:saerl:0"),
         ("label", "computed", "efefefefefef", "")]  # a run's stage runs: the last one has no why
STATUS_COLUMN = 23  # where TABLE's status column starts: its widest stage and the gap after it
WHY_COLUMN = 47  # where TABLE's why column starts: its widest cells and the gaps after them
BESIDE_WIDTH = 100  # TABLE's why wraps beside its row, in the 53 columns left (>= WRAP_MIN_COLUMNS)
BELOW_WIDTH = 60  # 13 columns beside the row: TABLE's why goes under its row
# TABLE's lines as saerl printed them before table_lines (status's _table at session 48's start), byte for byte
TABLE_PRINTED = {
    None: ["stage                  status    key           why",
           f"heldout:reach_probe:1  cached    abababababab  {RUN_WHY}",
           "evaluate               computed  cdcdcdcdcdcd  computed: input changed: heldout:saerl:0",
           "label                  computed  efefefefefef"],
    BESIDE_WIDTH: ["stage                  status    key           why",
                   "heldout:reach_probe:1  cached    abababababab  cached: same code version, inputs and config as a",
                   "                                               stored artifact; built by other code: at commit",
                   "                                               38ad53c19140 (now 89de70019665)",
                   "evaluate               computed  cdcdcdcdcdcd  computed: input changed: heldout:saerl:0",
                   "label                  computed  efefefefefef"],
    BELOW_WIDTH: ["stage                  status    key           why",
                  "heldout:reach_probe:1  cached    abababababab",
                  "    cached: same code version, inputs and config as a stored",
                  "    artifact; built by other code: at commit 38ad53c19140",
                  "    (now 89de70019665)",
                  "evaluate               computed  cdcdcdcdcdcd",
                  "    computed: input changed: heldout:saerl:0",
                  "label                  computed  efefefefefef"],
}
CJK_NOTE = ("策略无法读懂提示：它在训练前对留出集的贪心准确率为0.0%，因此各组之间的差异只是噪声；请使用能读懂提示的模型"
            "（model.name_or_path）。プロンプトを読めるモデルを使ってください：/data/モデル/checkpoint-1000、"
            "cafe\u0301のメモ。")  # a note with no space in it (CJK has none between words), a decomposed é
CJK_WIDTH = 80


def test_table_lines_prints_an_ascii_table_as_before_byte_for_byte():
    """One table layout (saerl.terminal.table_lines) replaced status's, report's, the run's and the ablation's
    copies, and widths came to be counted in terminal columns: a table of ASCII text prints as it did, at no width,
    with its why wrapped beside its row and under it."""
    from saerl.terminal import table_lines

    assert {width: table_lines(TABLE, width) for width in TABLE_PRINTED} == TABLE_PRINTED


def test_table_lines_aligns_its_columns_and_wraps_the_last_under_its_column():
    """Every cell of a column starts where its header does, two spaces after the widest cell before it; at a width
    the last column's text is wrapped under that column, its words read back whole, no line wider than the width;
    without a width, or with wrap_last=False (a table of names and numbers), each row stays one line."""
    from saerl.terminal import table_lines

    lines = table_lines(TABLE, BESIDE_WIDTH)
    assert lines[0].index("status") == lines[1].index("cached") == lines[-1].index("computed") == STATUS_COLUMN
    assert lines[0].index("why") == lines[1].index("cached: same") == WHY_COLUMN
    assert all(len(line) <= BESIDE_WIDTH for line in lines) and len(lines) > len(TABLE)
    assert all(line[:WHY_COLUMN].strip() == "" for line in lines[2:4]), "continued under its column"
    assert " ".join(line[WHY_COLUMN:] for line in lines[1:4]) == RUN_WHY
    assert len(table_lines(TABLE, None)) == len(TABLE)
    assert table_lines(TABLE, BELOW_WIDTH, wrap_last=False) == table_lines(TABLE, None)


def test_table_lines_wraps_the_last_column_under_its_row_where_the_room_beside_it_is_narrow():
    """With less than WRAP_MIN_COLUMNS beside a row's other columns, its last cell goes on lines of its own under the
    row, BELOW_INDENT in, each within the width; the row's line keeps its other columns."""
    from saerl.terminal import BELOW_INDENT, WRAP_MIN_COLUMNS, table_lines

    assert BELOW_WIDTH - WHY_COLUMN < WRAP_MIN_COLUMNS
    lines = table_lines(TABLE, BELOW_WIDTH)
    assert lines[1] == "heldout:reach_probe:1  cached    abababababab"
    under = lines[2:5]
    assert all(line.startswith(" " * BELOW_INDENT) and line[BELOW_INDENT] != " " for line in under)
    assert " ".join(line.strip() for line in under) == RUN_WHY and all(len(line) <= BELOW_WIDTH for line in lines)


@pytest.mark.parametrize("width", [None, 20, BELOW_WIDTH, BESIDE_WIDTH, 1000])
def test_table_lines_ends_no_line_in_spaces(width):
    """A row with an empty last cell, a cell padded to its column, a wrapped piece: no printed line ends in a space."""
    from saerl.terminal import table_lines

    rows = [*TABLE, ("a", "b", "c", "   "), ("", "", "", "")]
    assert [line for line in table_lines(rows, width) if line != line.rstrip()] == []


def test_display_width_counts_terminal_columns():
    """A CJK or fullwidth character takes two columns of a terminal, a combining mark none, any other one."""
    from saerl.terminal import display_width

    assert [display_width(t) for t in ("", "why", "中文", "ＡＢ", "cafe\u0301", "メモ。")] == [0, 3, 4, 4, 4, 6]


def test_a_cjk_note_fits_the_terminal_and_aligns_its_columns():
    """A note in Chinese and Japanese (a prompt, a 'why'), counted in characters, ran past the terminal: each CJK
    character takes two columns. Now every line fits the width in terminal columns, the note is broken between its
    CJK characters (it has no spaces) and reads back whole, and a column after a CJK cell starts where its header
    does on the screen."""
    from saerl.terminal import display_width, table_lines

    rows = [("setting", "arm", "note"), ("温度=0.5", "saerl", CJK_NOTE), ("temperature=1", "vanilla", "ok")]
    lines = table_lines(rows, CJK_WIDTH)
    assert [line for line in lines if display_width(line) > CJK_WIDTH] == [] and len(lines) > len(rows)
    starts = {display_width(line[:line.index(arm)]) for line, arm in ((lines[0], "arm"), (lines[1], "saerl"),
                                                                        (lines[-1], "vanilla"))}
    column, first = lines[0].index("note"), lines[1].index("策")  # on screen, the note's first line starts at column
    assert len(starts) == 1 and display_width(lines[1][:first]) == column
    under = [line[column:] for line in lines[2:-1]]
    assert all(not line[:column].strip() for line in lines[2:-1]) and "".join([lines[1][first:], *under]) == CJK_NOTE
    assert [piece for piece in under if piece.startswith(("。", "、", "，", "）"))] == [], "no line starts with a stop"
    assert [line for line in lines if line.endswith("（")] == [], "nor ends with an opening bracket"
    assert table_lines(rows, None)[1].endswith(CJK_NOTE)


def test_wrap_columns_wraps_ascii_text_as_textwrap_does():
    """The wrap that counts terminal columns (saerl.terminal.wrap_columns) cuts text without wide characters where
    textwrap.wrap(break_long_words=False, break_on_hyphens=False) cut it, which the tables used before: spaces,
    tabs, newlines and hyphens, words longer than the line, leading and trailing spaces."""
    import random
    import string
    import textwrap

    from saerl.terminal import wrap_columns

    pick = random.Random(48)
    alphabet = string.ascii_letters + string.digits + "-./_,;:()" + " " * 12 + "\t\n"
    for _ in range(3000):
        text = "".join(pick.choice(alphabet) for _ in range(pick.randint(0, 160)))
        columns = pick.randint(1, 60)
        assert wrap_columns(text, columns) == textwrap.wrap(
            text, columns, break_long_words=False, break_on_hyphens=False), (text, columns)


# ---------------------------------------------------------------------------------- saerl.terminal.fit_cell

RAN_WITH = "curriculum.seed=3 score.n_clusters=5 train.max_steps=50 --until curriculum"  # a free-text cell (74 columns)
ROW_LEAD = "20261207-092914-4512  "  # a row's columns before its free-text cell, the gap after them (22 columns)
WIDE_LEAD = "x" * 58 + "  "  # a row whose columns before its free-text cell take 58 of the terminal's columns
LONG_WORD = "p" * 50  # a word (a path, a key) longer than the room beside ROW_LEAD
FIT_CASES = {  # what: (lead, text, width, its lines, whether every line fits the width)
    "the line fits exactly": (ROW_LEAD, RAN_WITH, len(ROW_LEAD + RAN_WITH), [ROW_LEAD + RAN_WITH], True),
    "the line fits exactly beside a wide lead": (WIDE_LEAD, "--until curriculum", 78,
                                                 [WIDE_LEAD + "--until curriculum"], True),
    "exactly WRAP_MIN_COLUMNS beside the lead: wrapped under its column": (ROW_LEAD, RAN_WITH, 62, [
        "20261207-092914-4512  curriculum.seed=3 score.n_clusters=5",
        "                      train.max_steps=50 --until curriculum"], True),
    "the lead exactly the width: the cell under its row, BELOW_INDENT in": (WIDE_LEAD, RAN_WITH, 58, [
        "x" * 58, "    curriculum.seed=3 score.n_clusters=5", "    train.max_steps=50 --until curriculum"], True),
    "the lead wider than the width: one line": (WIDE_LEAD, RAN_WITH, 50, [WIDE_LEAD + RAN_WITH], False),
    "under the row narrower than WRAP_MIN_COLUMNS: one line": ("run-1  ", RAN_WITH, 43, ["run-1  " + RAN_WITH],
                                                                False),
    "a word longer than the room stands whole": (ROW_LEAD, f"a {LONG_WORD} b", 62, [
        "20261207-092914-4512  a", " " * 22 + LONG_WORD, " " * 22 + "b"], False),
    "a path is not split at its hyphen": (ROW_LEAD, "y" * 25 + " data/openai-gsm8k/test.jsonl", 62, [
        "20261207-092914-4512  " + "y" * 25, " " * 22 + "data/openai-gsm8k/test.jsonl"], True),
}


@pytest.mark.parametrize(("lead", "text", "width", "lines", "fits"), FIT_CASES.values(), ids=list(FIT_CASES))
def test_fit_cell_wraps_a_free_text_cell_to_the_width_at_each_boundary(lead, text, width, lines, fits):
    """A row whose line fits the terminal exactly stays one line; with WRAP_MIN_COLUMNS or more beside its lead the
    cell wraps under its column, with less under its row, BELOW_INDENT in, and where the lead alone is wider than the
    terminal, or the room under the row narrower than WRAP_MIN_COLUMNS, the row stays one line; a word is never
    split (not at a hyphen either), and a wrapped line is never wider than the terminal but for a word longer than
    the room. Each of these was a mutant no test saw (session 48's mutation audit), one printing lines wider than
    the terminal."""
    from saerl.terminal import BELOW_INDENT, WRAP_MIN_COLUMNS, display_width, fit_cell

    assert (WRAP_MIN_COLUMNS, BELOW_INDENT) == (40, 4), "the cases above are laid out for these"
    got = fit_cell(lead, text, width)
    assert got == lines
    if fits:
        assert [line for line in got if display_width(line) > width] == [], got
    assert " ".join(got).split() == (lead + text).split(), "the words read back whole"


def test_filtered_drops_a_loggers_lines_for_the_block_alone():
    """saerl.terminal.filtered: the one way saerl drops a library's line where it is logged (trl's tied-keys
    warning during training, distributed's close-only lines): only inside the block, and only on that logger."""
    import logging

    from saerl.terminal import filtered

    class NoTies(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "tied" not in record.getMessage()

    logger = logging.getLogger("saerl.test.filtered")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        with filtered(logger.name, NoTies()):
            logger.warning("tied weights")
            logger.warning("kept")
            logging.getLogger("saerl.test.other").addHandler(handler)
            logging.getLogger("saerl.test.other").warning("tied elsewhere")
        logger.warning("tied after")
    finally:
        logger.removeHandler(handler)
        logging.getLogger("saerl.test.other").removeHandler(handler)
    assert seen == ["kept", "tied elsewhere", "tied after"] and logger.filters == []


def test_fit_columns_leaves_out_empty_columns_then_the_listed_ones_in_order_until_the_table_fits():
    """saerl.terminal.fit_columns: a column empty below the header goes first and unnamed (one that may go only
    where empty, too), then the listed ones in their order, only while the table is too wide; the others stay."""
    from saerl.terminal import fit_columns, table_width

    rows = [("id", "blank", "size", "count", "end", "note"), ("run-1", "", "12.50", "3", "ok", ""),
            ("run-2", "", "0.10", "14", "failed", "")]
    assert fit_columns(rows, None, ["size"]) == (rows, [])
    assert fit_columns(rows, table_width(rows), ["size", "count"], ["note"]) == (rows, [])
    kept, told = fit_columns(rows, table_width(rows) - 1, ["size", "count"], ["blank", "note"])
    assert (kept[0], told) == (("id", "size", "count", "end", "note"), [])  # the empty column was enough
    kept, told = fit_columns(rows, 20, ["size", "count", "blank"], ["note"])
    assert kept == [("id", "count", "end"), ("run-1", "3", "ok"), ("run-2", "14", "failed")] and told == ["size"]
    assert table_width(kept) <= 20
    kept, told = fit_columns(rows, 5, ["size", "count"])
    assert kept[0] == ("id", "blank", "end", "note") and told == ["size", "count"], "the others stay, however wide"
