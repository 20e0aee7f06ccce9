"""Helpers for the ranks of a multi-process training test (saerl.distributed: the ranks import this module by the
path of its extra reward, 'rank_reward:record'). The reward scores 0 and appends the ids it was asked to score, with
its rank, to $SAERL_TEST_SEEN/seen-<rank>.jsonl, one line per call. Imported in a rank (torchrun's RANK set) with
$SAERL_TEST_SEEN set, it also watches the in-training evaluation: each call of saerl.policy_lm.generate appends its
prompts to generated-<rank>.jsonl there, and rank 1 logs a saerl warning (GENERATED) saying how many it generated.
:func:`gather_worker` is one process of a 2-process gloo group gathering shares (saerl.rl.gather_shares)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

SEEN = "SAERL_TEST_SEEN"  # the folder the ranks write what they saw into
GENERATED = "rank %s generated %d prompts"  # rank 1's warning per generate call (a saerl record of a rank > 0)


def record(completions: list[Any], id: list[str], **_: Any) -> list[float]:  # noqa: A002 - trl passes columns by name
    """in: the completions and their prompts' ids; out: 0.0 each (appends the ids to this rank's file)."""
    rank = os.environ.get("RANK", "0")
    with (Path(os.environ[SEEN]) / f"seen-{rank}.jsonl").open("a") as f:
        f.write(json.dumps(list(id)) + "\n")
    return [0.0] * len(completions)


def seen(folder: Path, rank: int, name: str = "seen") -> list[list[str]]:
    """What each call of `rank`'s reward (name 'seen': ids) or evaluation ('generated': prompts) saw, call by call.
    in: the folder, the rank, the file's name; out: lists."""
    path = folder / f"{name}-{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _watch_generate() -> None:
    """In a rank: wrap saerl.policy_lm.generate to append the prompts of each call to generated-<rank>.jsonl (and
    warn GENERATED in rank 1)."""
    from saerl import policy_lm

    rank, real = os.environ["RANK"], policy_lm.generate

    def generate(model: Any, tok: Any, prompts: list[str], *args: Any, **kwargs: Any) -> Any:
        with (Path(os.environ[SEEN]) / f"generated-{rank}.jsonl").open("a") as f:
            f.write(json.dumps(list(prompts)) + "\n")
        if rank == "1":
            logging.getLogger("saerl.rank_reward").warning(GENERATED, rank, len(prompts))
        return real(model, tok, prompts, *args, **kwargs)

    policy_lm.generate = generate


def gather_worker(rank: int, port: int, folder: str) -> None:
    """One of 2 gloo processes (torch.multiprocessing.spawn's rank first): gather this rank's share of the items
    0..6 doubled at one point ('step 2 set h'), then at different points (rank 0 at 'step 4 set h', rank 1 at
    'step 6 set h'), and write {"gathered": the first's list, "error": the second's error} to
    <folder>/gathered-<rank>.json."""
    import torch.distributed as dist

    from saerl.rl import gather_shares, share

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        mine = [2 * i for i in share(list(range(7)), rank, 2)]
        out: dict[str, Any] = {"gathered": gather_shares(mine, "step 2 set h"), "error": None}
        try:
            gather_shares(mine, f"step {4 + 2 * rank} set h")
        except RuntimeError as err:
            out["error"] = str(err)
        (Path(folder) / f"gathered-{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


if "RANK" in os.environ and SEEN in os.environ:
    _watch_generate()
