"""An extra reward function for the ranks of a multi-process training test (saerl.distributed: the ranks import it
by its path, 'rank_reward:record'): it scores 0 and appends the ids it was asked to score, with its rank, to
$SAERL_TEST_SEEN/seen-<rank>.jsonl, one line per call."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SEEN = "SAERL_TEST_SEEN"  # the folder the ranks write what they saw into


def record(completions: list[Any], id: list[str], **_: Any) -> list[float]:  # noqa: A002 - trl passes columns by name
    """in: the completions and their prompts' ids; out: 0.0 each (appends the ids to this rank's file)."""
    rank = os.environ.get("RANK", "0")
    with (Path(os.environ[SEEN]) / f"seen-{rank}.jsonl").open("a") as f:
        f.write(json.dumps(list(id)) + "\n")
    return [0.0] * len(completions)


def seen(folder: Path, rank: int) -> list[list[str]]:
    """The ids each call of `rank`'s reward saw, call by call. in: the folder, the rank; out: lists of ids."""
    path = folder / f"seen-{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
