"""Export a run's curriculum for other trainers, for `saerl export`: HF datasets, verl, trl.

The order an arm trains on (the curriculum artifact's order file: `order.parquet` for saerl,
`order_only.parquet`, `filter_only.parquet`, and `vanilla_order.parquet`, the vanilla arm's seed-0 shuffle)
is joined with the ingested prompts (`prompts.parquet`) into one frame in training order: position, id,
prompt, answer, batch, epoch, cluster, difficulty_hat. Each format writes that frame and, for verl and trl,
a small sampler module (no saerl import, so it runs where saerl is not installed) and a README.md saying
how to plug them in. A prompt repeated over epochs appears once per visit. The arms RL reads in whole batches
(saerl, order_only: :func:`saerl.curriculum.whole_batches`) are exported as trained, without an epoch's short
last batch, so that every block of batch_size rows is one curriculum batch (one step) in the other trainer too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from saerl.artifacts import ArtifactStore, CorruptArtifact, write_file_atomic
from saerl.config import CurriculumConfig, TrainConfig
from saerl.curriculum import whole_batch_rows
from saerl.runners import ARM_ORDERS, PROMPTS, VANILLA
from saerl.runs import RunRecord, load_run

FORMATS = ("hf", "verl", "trl")
ARM_FILES = {**ARM_ORDERS, "vanilla": VANILLA}
WHOLE_BATCH_ARMS = ("saerl", "order_only")  # arms RL reads in whole batches (saerl.runners.arm_order)
COLUMNS = ("position", "id", "prompt", "answer", "batch", "epoch", "cluster", "difficulty_hat")
DATA_SOURCE = "openai/gsm8k"  # verl's built-in reward for this source scores a final '#### N', as saerl's does
ABILITY = "math"
TABLE = "train.parquet"
SAMPLER = "saerl_sampler.py"
SAMPLER_CLASS = "SaerlOrderSampler"
README = "README.md"

VERL_SAMPLER = '''"""Exported by saerl: a verl sampler that reads the train file in its stored (curriculum) order.

verl loads it with data.sampler.class_path=<this file> data.sampler.class_name=SaerlOrderSampler and
checks it is a verl AbstractSampler; without verl installed it is a plain torch Sampler (for inspection).
"""

from collections.abc import Iterator, Sized
from typing import Any


def _sampler_base() -> type:
    """verl's AbstractSampler when verl is installed, else torch's Sampler (verl is not needed to import)."""
    try:
        from verl.experimental.dataset.sampler import AbstractSampler
    except ImportError:
        from torch.utils.data import Sampler

        return Sampler
    return AbstractSampler


class SaerlOrderSampler(_sampler_base()):
    """Indices 0..n-1 in file order, once each (verl repeats each prompt rollout.n times itself)."""

    def __init__(self, data_source: Sized, data_config: Any = None) -> None:
        self.data_source = data_source
        self.data_config = data_config

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)
'''

TRL_SAMPLER = '''"""Exported by saerl: a torch Sampler that reads the train file in its stored (curriculum) order for trl.

Like trl's RepeatSampler with shuffling off: each index num_generations times in a row (one GRPO group),
each block of batch_size prompts yielded repeat_count times (trl reuses a generation batch for
num_iterations * steps_per_generation steps); a last block shorter than batch_size is dropped, as trl does.
"""

from collections.abc import Iterator, Sized
from typing import Any

from torch.utils.data import Sampler


class SaerlOrderSampler(Sampler[int]):
    """Dataset indices in stored order, each repeated num_generations times, blocks repeated repeat_count."""

    def __init__(self, data_source: Sized, num_generations: int, batch_size: int = 1, repeat_count: int = 1) -> None:
        self.n, self.num_generations = len(data_source), num_generations
        self.batch_size, self.repeat_count = batch_size, repeat_count

    def __iter__(self) -> Iterator[int]:
        for start in range(0, self.n - self.batch_size + 1, self.batch_size):
            for _ in range(self.repeat_count):
                for i in range(start, start + self.batch_size):
                    yield from [i] * self.num_generations

    def __len__(self) -> int:
        return (self.n // self.batch_size) * self.batch_size * self.num_generations * self.repeat_count


def ordered(trainer_class: type) -> type:
    """A subclass of trl's GRPOTrainer (or a subclass of it) whose train sampler is SaerlOrderSampler."""

    class Ordered(trainer_class):
        def _get_train_sampler(self, dataset: Any = None) -> Sampler:
            data = self.train_dataset if dataset is None else dataset
            return SaerlOrderSampler(data, self.num_generations,
                                     self.args.generation_batch_size // self.num_generations,
                                     self.num_iterations * self.args.steps_per_generation)

    Ordered.__name__ = Ordered.__qualname__ = f"Ordered{trainer_class.__name__}"
    return Ordered
'''


def stage_dir(root: Path, record: RunRecord, stage: str) -> Path:
    """The verified artifact folder of `stage` in a run; ValueError when the run lacks it or it is gone."""
    rec = record.stages.get(stage)
    if rec is None:
        raise ValueError(f"run {record.run_id} has no {stage} stage (it ran: {', '.join(record.stages)}); "
                         f"run the pipeline at least --until curriculum")
    try:
        return Path(ArtifactStore(root).open(stage, rec.key).path)
    except CorruptArtifact as err:
        raise ValueError(f"{err} (collected by saerl gc? rerun the pipeline to rebuild it)") from None


def ordered_prompts(curriculum: Path, ingest: Path, arm: str = "saerl", batch_size: int | None = None) -> pl.DataFrame:
    """The arm's order as RL reads it, joined with the prompts, sorted by position. in: curriculum and ingest
    artifact folders, arm, the run's curriculum.batch_size (None = the order file whole: for the arms in
    WHOLE_BATCH_ARMS RL leaves an epoch's short last batch out, :func:`saerl.curriculum.whole_batch_rows`);
    out: frame with COLUMNS. ValueError for an unknown arm or ids missing from the prompts."""
    if arm not in ARM_FILES:
        raise ValueError(f"unknown arm '{arm}'; arms: {', '.join(ARM_FILES)}")
    order = pl.read_parquet(curriculum / ARM_FILES[arm])
    if batch_size is not None and arm in WHOLE_BATCH_ARMS:  # as RL reads it, positions renumbered 0..n-1
        order = whole_batch_rows(order, batch_size).with_columns(position=pl.int_range(0, pl.len(), dtype=pl.Int64))
    prompts = pl.read_parquet(ingest / PROMPTS).select("id", "prompt", "answer")
    frame = order.join(prompts, on="id", how="left").sort("position").select(COLUMNS)
    missing = frame.filter(pl.col("prompt").is_null())["id"]
    if missing.len():
        raise ValueError(f"{missing.len()} ids of the {arm} order are not among the prompts (first: "
                         f"{missing[0]!r}): the curriculum and ingest artifacts come from different runs")
    return frame


def user_messages(column: str) -> pl.Expr:
    """A text column as a one-message chat: [{"role": "user", "content": text}]."""
    return pl.concat_list(pl.struct(pl.lit("user").alias("role"), pl.col(column).alias("content")))


def verl_table(frame: pl.DataFrame, data_source: str = DATA_SOURCE) -> pl.DataFrame:
    """verl's RL dataset rows: data_source, prompt (chat messages), ability, reward_model {style: rule,
    ground_truth: answer}, extra_info {index: position, id}, in the frame's order."""
    return frame.select(
        pl.lit(data_source).alias("data_source"),
        user_messages("prompt").alias("prompt"),
        pl.lit(ABILITY).alias("ability"),
        pl.struct(pl.lit("rule").alias("style"), pl.col("answer").alias("ground_truth")).alias("reward_model"),
        pl.struct(pl.col("position").alias("index"), pl.col("id")).alias("extra_info"),
    )


def trl_table(frame: pl.DataFrame) -> pl.DataFrame:
    """trl's conversational prompt rows in order: position, id, prompt (chat messages), answer (the
    column trl passes to reward functions)."""
    return frame.select("position", "id", user_messages("prompt").alias("prompt"), "answer")


def readme(fmt: str, out: Path, info: dict[str, Any]) -> str:
    """The README.md text for one export: what is in the folder and how to point the trainer at it."""
    head = (f"# saerl export: run {info['run']}, arm {info['arm']}, {info['rows']} rows in training order\n\n"
            f"Each block of {info['batch_size']} rows is one saerl batch (one RL step); keep the order: "
            "do not shuffle.\n\n")
    if fmt == "hf":
        return head + (f"```python\nfrom datasets import load_from_disk\nds = load_from_disk({str(out)!r})  "
                       "# columns: " + ", ".join(COLUMNS) + "\n```\n")
    if fmt == "verl":
        return head + (
            "```bash\npython -m verl.trainer.main_ppo \\\n"
            f"  data.train_files={out / TABLE} \\\n"
            f"  data.train_batch_size={info['batch_size']} \\\n"
            f"  data.sampler.class_path={out / SAMPLER} data.sampler.class_name={SAMPLER_CLASS} \\\n"
            "  data.dataloader_num_workers=0 \\\n"
            f"  actor_rollout_ref.rollout.n={info['num_generations']} \\\n"
            "  trainer.total_epochs=1 ...\n```\n\n"
            "verl requires `dataloader_num_workers=0` with a custom sampler. `data.shuffle=False` without the "
            "sampler reads the same order. The file already holds every epoch of the curriculum, so train one "
            "epoch. `data.filter_overlong_prompts` drops rows but keeps the order of the rest. `data_source` "
            f"is {info['data_source']!r}: it picks verl's built-in reward (openai/gsm8k scores a final "
            "`#### N` against reward_model.ground_truth); use custom_reward_function.path for another.\n")
    return head + (
        "```python\nimport importlib.util\nfrom datasets import load_dataset\nfrom trl import GRPOConfig, GRPOTrainer\n\n"
        f"spec = importlib.util.spec_from_file_location('saerl_sampler', {str(out / SAMPLER)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        f"data = load_dataset('parquet', data_files={str(out / TABLE)!r}, split='train')\n"
        "trainer = mod.ordered(GRPOTrainer)(model=..., reward_funcs=..., train_dataset=data,\n"
        f"    args=GRPOConfig(num_generations={info['num_generations']}, "
        f"per_device_train_batch_size={info['batch_size'] * info['num_generations']}, ...))\n```\n\n"
        "`mod.ordered(cls)` subclasses a GRPOTrainer with `_get_train_sampler` returning "
        f"`{SAMPLER_CLASS}(dataset, num_generations, generation_batch_size // num_generations, "
        "num_iterations * steps_per_generation)`: each prompt num_generations times in a row, in file order. "
        "`GRPOConfig(shuffle_dataset=False)` gives the same order with trl's own sampler. "
        "The `answer` column reaches reward functions as a keyword argument.\n")


def write_export(frame: pl.DataFrame, fmt: str, out: Path, info: dict[str, Any]) -> list[Path]:
    """Write an ordered frame in one format into `out` (created); returns the files written (for hf, the
    dataset folder itself and its README). The verl/trl files and the README are each written under a temp name
    and renamed into place: a killed export never leaves half a file (nor half of one over an earlier export)."""
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "hf":
        from datasets import Dataset

        Dataset.from_polars(frame).save_to_disk(str(out))
        written = [out]
    elif fmt in ("verl", "trl"):
        table = verl_table(frame, info["data_source"]) if fmt == "verl" else trl_table(frame)
        write_file_atomic(out / TABLE, table.write_parquet)
        _write_text_atomic(out / SAMPLER, VERL_SAMPLER if fmt == "verl" else TRL_SAMPLER)
        written = [out / TABLE, out / SAMPLER]
    else:
        raise ValueError(f"unknown export format '{fmt}'; formats: {', '.join(FORMATS)}")
    _write_text_atomic(out / README, readme(fmt, out.resolve(), info))
    return [*written, out / README]


def _write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` (UTF-8) through a temp file renamed into place."""
    write_file_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def export_run(root: Path, run_id: str, fmt: str, out: Path, arm: str = "saerl",
               data_source: str = DATA_SOURCE) -> list[Path]:
    """`saerl export`: one run's `arm` order with its prompts, in format `fmt`, into `out`. in: artifact
    root, run id (unique prefix or 'latest'), format, output folder, arm, verl data_source; out: files."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format '{fmt}'; formats: {', '.join(FORMATS)}")
    record = load_run(root, run_id)
    batch_size = int(record.config.get("curriculum.batch_size", CurriculumConfig().batch_size))
    frame = ordered_prompts(stage_dir(root, record, "curriculum"), stage_dir(root, record, "ingest"), arm, batch_size)
    info = {"run": record.run_id, "arm": arm, "rows": frame.height, "data_source": data_source,
            "batch_size": batch_size,
            "num_generations": record.config.get("train.num_generations", TrainConfig().num_generations)}
    return write_export(frame, fmt, Path(out), info)
