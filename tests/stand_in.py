"""A loaded policy's stand-in, for tests that stub the policy's loading and generation (saerl.policy_lm.load_policy,
saerl.evaluate.evaluate_loaded) and run a stage's own code around them (saerl.runners.compute_heldout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar


class StandInPolicy(str):
    """A loaded policy's stand-in: its path, as text (what a stubbed evaluation reads to tell policies apart), with a
    config, as a loaded model has, that names no position limit (saerl.policy_lm.model_context reads none, so the
    stage checks no prompt against it and reads no tokenizer)."""

    config: ClassVar[dict[str, Any]] = {}


def stand_in_load(path: str | Path, *_args: Any, **_kwargs: Any) -> tuple[StandInPolicy, None]:
    """load_policy's stand-in. in: the policy's folder or name (and load_policy's other arguments, ignored);
    out: (its StandInPolicy, no tokenizer)."""
    return StandInPolicy(path), None
