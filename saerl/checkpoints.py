"""A training run's checkpoint folders: which one a resumed run continues from (:func:`last_checkpoint`).

One definition for the two readers: the train stage resuming (:func:`saerl.rl.train_grpo`) and `saerl status`
naming the newest checkpoint of a run under way or killed (:func:`saerl.status.newest_checkpoint`), so status
never names a checkpoint the resume would pass over. Paths alone: no torch or transformers import, so status stays
quick.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_PREFIX = "checkpoint-"  # + optimizer step: a training run's checkpoint folder (transformers' naming)
TRAINER_STATE = "trainer_state.json"  # the file transformers writes into a checkpoint folder as it saves it, last
CURVE_FILE = "saerl_curve.json"  # the eval rows (and per-problem results) so far, inside each trainer checkpoint


def checkpoint_step(c: Path) -> int:
    """N of a ``checkpoint-<N>`` folder. in: the folder; out: N."""
    return int(c.name.removeprefix(CHECKPOINT_PREFIX))


def checkpoint_folders(folder: Path) -> list[Path]:
    """The ``checkpoint-<N>`` folders in `folder` (N digits; another name is no checkpoint), any order.
    in: a run's checkpoint folder; out: the paths ([] where `folder` is not there)."""
    return [c for c in Path(folder).glob(CHECKPOINT_PREFIX + "*") if c.name.removeprefix(CHECKPOINT_PREFIX).isdigit()]


def is_complete(c: Path) -> bool:
    """Whether checkpoint folder `c` holds TRAINER_STATE (the trainer's last file) and CURVE_FILE (saerl's,
    written after it by :class:`saerl.rl.CurveCheckpoint`, and removed first when a checkpoint is pruned): a kill
    while saving or pruning leaves a folder without it. in: the folder; out: bool."""
    return (c / TRAINER_STATE).exists() and (c / CURVE_FILE).exists()


def last_checkpoint(folder: Path, every: int = 1, final: int | None = None) -> Path | None:
    """The checkpoint a resumed run continues from: the newest complete one in `folder` (:func:`is_complete`),
    ``checkpoint-<N>`` whose N is a multiple of `every` (a generation-batch boundary, saerl.rl.save_period) or at
    least `final` (the run's last step: nothing is left to train). in: the run's checkpoint folder,
    train.steps_per_generation, the run's steps; out: the folder or None."""
    def resumable(c: Path) -> bool:
        step = checkpoint_step(c)
        return step % every == 0 or (final is not None and step >= final)

    done = [c for c in checkpoint_folders(folder) if is_complete(c) and resumable(c)]
    return max(done, key=checkpoint_step, default=None)
