"""What saerl writes on its stderr, the terminal's side of logging: whether stderr can draw progress bars
(:func:`stderr_is_terminal`), saerl's log handler there, which writes a line above whatever bar is drawn
(:class:`BarSafeHandler`: a tqdm bar of this process, or the unfinished line another process's output left,
relayed here by :func:`relay_output`: a training rank's bar), and the log line's format (:func:`stderr_handler`),
led by the label of the sweep setting a line is logged for (:func:`labelled_logs`), as that run's printed lines are.
On stdout: how wide a printed table may be (:func:`output_columns`), a table laid out in padded columns
(:func:`table_lines`: status, report, the run's and the ablation's tables) whose free-text last column is wrapped to
fit it (:func:`fit_cell`, prose lines: :func:`fit_lines`), with columns left out where the others do not fit
(:func:`fit_columns`: status --list), widths counted in terminal columns
(:func:`display_width`: a CJK character takes two, a combining mark none).

No stage's artifact depends on anything here.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import threading
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

DUMB_TERMINAL = "dumb"  # the TERM of a terminal that cannot move its cursor (Emacs' shell, some CI log viewers): a
# bar's carriage-return frames pile up there, as rich (Prefect's console) reads it too
LOG_FORMAT = "%(asctime)s %(setting)s%(levelname)s %(name)s: %(message)s"  # setting: LabelledFormatter's label
LOG_DATEFMT = "%Y-%m-%d %H:%M:%S"  # the date too: a long run's log file crosses midnight
LABEL_SEP = " | "  # between a sweep run's label and what it leads: its printed and logged lines, its MLflow run names
SETTING = "setting"  # the log record attribute LOG_FORMAT reads the label from (LabelledFormatter sets it)
_LABEL: contextvars.ContextVar[str | None] = contextvars.ContextVar("saerl_log_label", default=None)
# what another process's output (relay_output) has left unfinished on this process's stderr: the visible text of its
# last line, a progress bar's frame, written again below a log line (BarSafeHandler); the lock orders the two writers
_RELAYED = {"line": ""}
_RELAY_LOCK = threading.Lock()
LINE_ENDS = ("\n", "\r")  # a relayed line's text starts anew after either (a bar redraws its frame after '\r')
COLUMNS_VAR = "COLUMNS"  # the width a user sets for printed tables (bash, zsh and fish keep their own unexported: set,
# it is the user's), on a terminal and on a pipe alike (`COLUMNS=100 saerl status | less`)
WRAP_MIN_COLUMNS = 40  # the narrowest a free-text column is wrapped in beside the columns before it (a 130-character
# 'why' in 4 lines); with less room its text is wrapped on lines of its own under its row, BELOW_INDENT in
BELOW_INDENT = 4  # the indent of a free-text cell wrapped under its row
COLUMN_GAP = "  "  # between a table's columns (table_lines)
WIDE = ("W", "F")  # unicodedata.east_asian_width of a character a terminal draws two columns wide (CJK, fullwidth)
NO_LINE_START = ("Pe", "Pf", "Po")  # the Unicode categories of punctuation that closes ('。', '、', '」', ','), and
NO_LINE_END = ("Ps", "Pi")  # of punctuation that opens ('（', '「'): where a line may break between two wide characters
# (CJK text), the one stays on the line of the character before it, the other goes with the character after it
WRAP_SPACE = "\t\n\x0b\x0c\r "  # what textwrap counts as whitespace: a word ends there, a line may break there


def stderr_is_terminal() -> bool:
    """Is this process's stderr, where progress bars are drawn, a terminal that can draw them: a tty whose TERM is
    not DUMB_TERMINAL and which has columns (a pty nobody sized, as `script -qc CMD /dev/null` gives a CI job, is 0x0:
    tqdm drew its bars there as empty lines, and the heartbeat lines that replace them were off)? False where it
    cannot be told (no stderr, a captured one). out: bool."""
    try:
        if sys.stderr is None or not sys.stderr.isatty():
            return False
        return os.environ.get("TERM") != DUMB_TERMINAL and os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False


def output_columns() -> int | None:
    """How many columns a printed table may fill (:func:`fit_cell`): COLUMNS where it is set to a positive whole
    number (the user's: also on a pipe or a file), else the width of the terminal stdout is, else None: stdout is a
    pipe or a file (a script, a test reading it) and gets one line per row, as it always did; or a terminal of 0
    columns (a pty nobody sized: `script -qc CMD /dev/null` in a CI job), whose width nobody knows. out: columns or
    None."""
    given = os.environ.get(COLUMNS_VAR, "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    try:
        if sys.stdout is None or not sys.stdout.isatty():
            return None
        return os.get_terminal_size(sys.stdout.fileno()).columns or None
    except (AttributeError, OSError, ValueError):  # a captured stdout without a file descriptor
        return None


def display_width(text: str) -> int:
    """How many terminal columns `text` takes: two for an East Asian wide or fullwidth character (WIDE: CJK
    ideographs, kana, hangul, fullwidth forms), none for a combining mark (an accent drawn on the character before it),
    one for any other. in: a line's text (no tab or newline); out: its columns."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in WIDE else 1 for c in text)


def pad(text: str, columns: int) -> str:
    """`text` with spaces after it to take `columns` terminal columns (str.ljust counting :func:`display_width`; as
    it is where it takes more). in: the text, the columns; out: the padded text."""
    return text + " " * (columns - display_width(text))


def _chunks(text: str) -> list[str]:
    """`text` cut where a line may break, as textwrap cuts it (runs of WRAP_SPACE; runs of other characters: a
    word), and, as CJK text is broken, before and after each wide character (CJK has no spaces between its words);
    a combining mark and closing punctuation (NO_LINE_START: '。', '、', '）', ',') stay with the character before
    them, opening punctuation (NO_LINE_END: '（', '「') with the one after it. in: the text, its whitespace made
    spaces; out: the chunks, which join back to it."""
    chunks: list[str] = []
    after_wide = False  # whether the last chunk's last drawn character is a wide one
    for c in text:
        space, wide = c in WRAP_SPACE, unicodedata.east_asian_width(c) in WIDE
        if not chunks or (chunks[-1][-1] in WRAP_SPACE) != space:
            join = False  # a word after a space, a space after a word
        elif (space or unicodedata.combining(c) or unicodedata.category(c) in NO_LINE_START
              or unicodedata.category(chunks[-1][-1]) in NO_LINE_END):
            join = True
        else:
            join = not (wide or after_wide)
        if join:
            chunks[-1] += c
        else:
            chunks.append(c)
        if not unicodedata.combining(c):
            after_wide = wide and not space
    return chunks


def wrap_columns(text: str, columns: int) -> list[str]:
    """`text` wrapped on lines of at most `columns` terminal columns (:func:`display_width`), as textwrap.wrap(text,
    columns, break_long_words=False, break_on_hyphens=False) wraps it counting characters, and byte for byte so on
    text without wide characters or combining marks: at spaces (dropped at a line's end, and at the start of each
    line but the first), a word (a path, a key) longer than `columns` whole on a line of its own; and between two
    wide characters (:func:`_chunks`). in: the text, the columns (> 0); out: the lines ([] for blank text)."""
    chunks = _chunks(text.expandtabs().translate({ord(c): " " for c in WRAP_SPACE}))
    lines: list[str] = []
    i = 0
    while i < len(chunks):
        if lines and not chunks[i].strip():
            i += 1  # a line after the first starts at its first word
        line, used = [], 0
        while i < len(chunks) and used + display_width(chunks[i]) <= columns:
            line.append(chunks[i])
            used += display_width(chunks[i])
            i += 1
        if not line and i < len(chunks):
            line.append(chunks[i])  # a word wider than the line: whole, on a line of its own
            i += 1
        if line and not line[-1].strip():
            line.pop()
        if line:
            lines.append("".join(line))
    return lines


def fit_cell(lead: str, text: str, width: int | None) -> list[str]:
    """A table row's lines in `width` columns: `lead` (its columns before its free-text last one, padded, with the gap
    after them; '' for a line of prose) and then `text`, the free-text cell (a 'why', a note), wrapped at word
    boundaries and between wide (CJK) characters (:func:`wrap_columns`; no other word is split: a path or key longer
    than the room stands whole) with its continuation lines indented under the cell. With less than
    WRAP_MIN_COLUMNS beside `lead`, the cell's text goes on lines of its own under the row's (`lead` alone),
    BELOW_INDENT in; where that too is narrower than WRAP_MIN_COLUMNS, or the line fits, or `width` is None (stdout
    no terminal, :func:`output_columns`), the one line `lead + text` as before; an empty cell, its row's line (its
    padding aside) too. The columns in `lead` (names, ids, numbers) never wrap. Widths are terminal columns
    (:func:`display_width`). in: the lead, the cell's text, the width or None; out: the lines."""
    line = lead + text
    if width is None or display_width(line) <= width or not text.strip():  # an empty cell: nothing to wrap (a blank
        return [line]  # line was added under its row where only the padding passed the width)
    lead_columns = display_width(lead)
    beside = width - lead_columns >= WRAP_MIN_COLUMNS
    if not beside and (display_width(lead.rstrip()) > width or width - BELOW_INDENT < WRAP_MIN_COLUMNS):
        return [line]
    room = width - lead_columns if beside else width - BELOW_INDENT
    pieces = wrap_columns(text, room) or [""]
    if beside:
        return [lead + pieces[0], *(" " * lead_columns + piece for piece in pieces[1:])]
    return [lead.rstrip(), *(" " * BELOW_INDENT + piece for piece in pieces)]


def fit_lines(lines: list[str], width: int | None) -> list[str]:
    """Lines of prose (a header, a note under a table) wrapped to `width`, each as :func:`fit_cell` wraps a cell with
    no lead (None: as they are). in: the lines, the width; out: the lines."""
    return [piece for line in lines for piece in fit_cell("", line, width)]


def _lead_widths(rows: Sequence[Sequence[str]]) -> list[int]:
    """The terminal columns of each column but the last: its widest cell (:func:`display_width`). in: the rows
    (header first, at least one); out: the widths."""
    return [max(display_width(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]


def table_lines(rows: Sequence[Sequence[str]], width: int | None, wrap_last: bool = True) -> list[str]:
    """A table's lines: its columns left-aligned in the terminal columns of their widest cell (:func:`pad`),
    COLUMN_GAP between them, the last one unpadded; with `width` and `wrap_last`, that last (free-text) cell wrapped
    to fit it (:func:`fit_cell`: under its column, or under its row where the room beside is too narrow); without
    either, one line per row. No line ends in spaces. in: the rows (header first, every row as many cells), the
    width or None, whether the last column is free text to wrap; out: the lines."""
    if not rows:
        return []
    widths = _lead_widths(rows)
    return [line.rstrip() for row in rows for line in fit_cell(
        "".join(pad(cell, w) + COLUMN_GAP for cell, w in zip(row[:-1], widths, strict=True)), row[-1],
        width if wrap_last else None)]


def table_width(rows: Sequence[Sequence[str]]) -> int:
    """The columns :func:`table_lines` needs for a table's columns before its free-text last one, padded with the gap
    after them, and its header's last cell: what fits `width` needs for every row's columns to stay on their line (the
    last cell wraps under its column or its row). in: the rows, header first; out: terminal columns (0: no rows)."""
    if not rows:
        return 0
    widths = _lead_widths(rows)
    return sum(widths) + len(COLUMN_GAP) * len(widths) + display_width(rows[0][-1])


def fit_columns(rows: Sequence[Sequence[str]], width: int | None, drops: Sequence[str],
                if_empty: Sequence[str] = ()) -> tuple[list[tuple[str, ...]], list[str]]:
    """A table narrowed to `width` terminal columns (:func:`table_width`) by leaving columns out, each only while it
    is still too wide: first those of `drops` and `if_empty` (header names) empty in every row below the header, then
    the others of `drops` in their order; every other column stays (where those alone are too wide, the table stays
    that wide). None (no terminal: :func:`output_columns`) or a table that fits: as it is.
    in: the rows (header first), the width or None, the columns that may go (least useful first), those that may go
    only where empty; out: (the rows, the columns left out that held a value in some row, in `drops` order)."""
    kept = [tuple(row) for row in rows]
    if width is None or not kept:
        return kept, []
    empty = [d for d in (*drops, *if_empty) if d in kept[0] and not any(row[kept[0].index(d)] for row in kept[1:])]
    told: list[str] = []
    for name in [*empty, *(d for d in drops if d not in empty)]:
        if table_width(kept) <= width:
            break
        if name in kept[0] and len(kept[0]) > 1:
            i = kept[0].index(name)
            kept = [row[:i] + row[i + 1:] for row in kept]
            told += [] if name in empty else [name]
    return kept, told


@contextmanager
def filtered(logger_name: str, line_filter: logging.Filter) -> Iterator[None]:
    """For the block, logger `logger_name` passes its records through `line_filter` (a library's line that says
    nothing to saerl's user, dropped where it is logged). in: a logger's name, the filter; out: a context."""
    logger = logging.getLogger(logger_name)
    logger.addFilter(line_filter)
    try:
        yield
    finally:
        logger.removeFilter(line_filter)


@contextmanager
def labelled_logs(label: str | None) -> Iterator[None]:
    """For the block (and the Prefect task runs it submits to threads, which copy its context), saerl's stderr log
    lines are led by `label` and LABEL_SEP after their time (:class:`LabelledFormatter`): an ablation's settings'
    lines said nothing of which setting logged them. None or '': no label (a single run's lines as they were).
    in: a sweep setting's label."""
    token = _LABEL.set(label or None)
    try:
        yield
    finally:
        _LABEL.reset(token)


class LabelledFormatter(logging.Formatter):
    """LOG_FORMAT's formatter: a record's SETTING is the label of the sweep setting it was logged for
    (:func:`labelled_logs`) and LABEL_SEP, or '' outside one ('2026-12-07 09:30:06 mix_ratio=0.1 | WARNING
    saerl.scoring: ...'; a single run's line has none)."""

    def format(self, record: logging.LogRecord) -> str:
        """in: a log record; out: its line."""
        label = _LABEL.get()
        setattr(record, SETTING, f"{label}{LABEL_SEP}" if label else "")
        return super().format(record)


class BarSafeHandler(logging.StreamHandler):
    """The log handler of saerl's stderr (the CLI's, a training rank's): a record logged while a tqdm progress bar is
    drawn is written through tqdm.write, which clears the bars, writes the line and draws them again below it (a
    training run's in-training evaluation line was written into its bar's line, glued to the bar's last frame, which
    stayed on screen). Where another process's output left a line unfinished (a training rank's bar, relayed by
    :func:`relay_output`), that line is cleared, the record written and the line written again below it, as tqdm
    does. With neither (runtime.progress off, or auto with stderr no terminal: every bar disabled) it writes as
    logging's StreamHandler does, byte for byte."""

    def emit(self, record: logging.LogRecord) -> None:
        """in: a log record; writes it, above the bars or the relayed line where any is drawn."""
        with _RELAY_LOCK:
            open_line = _RELAYED["line"]
            if open_line:
                try:  # a failed write (a closed reader) is logging's to report, as on the other paths, not the caller's
                    self.stream.write("\r" + " " * len(open_line) + "\r")  # cleared as tqdm clears a bar
                    super().emit(record)
                    self.stream.write(open_line)
                    self.flush()
                except RecursionError:  # as StreamHandler.emit
                    raise
                except Exception:
                    self.handleError(record)
                return
        bars = drawn_bars()
        if bars is None:
            super().emit(record)
            return
        try:
            bars.write(self.format(record), file=self.stream, end=self.terminator)
            self.flush()
        except RecursionError:  # as StreamHandler.emit
            raise
        except Exception:
            self.handleError(record)


def drawn_bars() -> Any:
    """tqdm's bar class, where a bar of it is drawn now (an open bar that is not disabled), else None (also where
    tqdm was never imported: nothing draws). out: the class or None."""
    std = sys.modules.get("tqdm.std")
    bar = getattr(std, "tqdm", None)
    return bar if bar is not None and len(getattr(bar, "_instances", ())) > 0 else None


def stderr_handler() -> BarSafeHandler:
    """saerl's log handler on stderr (the CLI's, a training rank's): a :class:`BarSafeHandler` whose lines are
    LOG_FORMAT's (:class:`LabelledFormatter`). out: the handler."""
    handler = BarSafeHandler()
    handler.setFormatter(LabelledFormatter(LOG_FORMAT, LOG_DATEFMT))
    return handler


def relay_output(text: str, stream: TextIO | None = None) -> None:
    """Write another process's output on this process's stderr (or `stream`) as it comes (a training rank's, its
    progress bar's carriage-return frames included), keeping the visible text of the line it leaves unfinished, so
    that a log line of this process is written above it (:class:`BarSafeHandler`), not glued onto it.
    in: the text, the stream (None: sys.stderr)."""
    out = sys.stderr if stream is None else stream
    with _RELAY_LOCK:
        out.write(text)
        out.flush()
        line = _RELAYED["line"] + text
        for end in LINE_ENDS:
            line = line.rsplit(end, 1)[-1]
        _RELAYED["line"] = line


def end_relay(stream: TextIO | None = None) -> None:
    """The relayed output has ended (the other process exited): a line it left unfinished (a bar killed mid-frame)
    is ended with a newline, so this process's next line starts its own. in: the stream (None: sys.stderr)."""
    out = sys.stderr if stream is None else stream
    with _RELAY_LOCK:
        if _RELAYED["line"]:
            out.write("\n")
            out.flush()
        _RELAYED["line"] = ""
