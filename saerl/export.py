"""Export a run's curriculum for other trainers, for `saerl export`: HF datasets, verl, trl.

An export holds the stream one training run of an arm reads, the whole of it, in order: the arm's order as that
training seed draws it (:func:`saerl.runners.arm_order_frame`, seeded by saerl.runners.order_seed: seed 0 reads the
curriculum artifact's own files, `order.parquet` for saerl, `order_only.parquet`; vanilla and filter_only a seeded
shuffle per epoch, with as many more epochs as the run needs, each a fresh shuffle), in whole batches
(:func:`saerl.curriculum.whole_batch_rows`, without an epoch's short last batch, as the train stage reads it), read
as saerl.stream.training_order reads it (a curriculum shorter than the run again from its top) for the run's whole
stream (saerl.stream.train_stream_length: train.max_steps x curriculum.batch_size rows, DAPO's refill rounds included).
So one file is exactly the run's stream for every arm: a trainer reads it once, from the top, and every block of
batch_size rows is one batch (one step) there too. The rows are joined with the ingested prompts
(`prompts.parquet`) into one frame: position, id, prompt, answer, batch, epoch, cluster, difficulty_hat, ramp. The
training seed is `--seed` (default: seed 0 when the run trains it, else its first training seed); a seed the run
does not train is refused.

Each format writes that frame and, for verl and trl, a small sampler module (no saerl import, so it runs where saerl
is not installed) and a README.md saying how to plug them in and how many steps saerl's run trained
(train.max_steps). verl and trl also get a reward module (REWARD) that judges completions with saerl's own verifier,
as saerl's RL does: verl's built-in gsm8k reward takes only a strict final `#### N` compared as text, which misses
`\\boxed{}` answers and golds such as `\\frac{3}{4}` or `10%`, and trl's stock accuracy_reward reads a `solution`
column (not `answer`) and scores a final `#### N` 0; that module needs saerl importable. A prompt repeated over
epochs appears once per visit. The README and a warning say how many rows of the order the whole batches leave out.
The verl README's paths are quoted for Hydra (:func:`hydra_quoted`) and then for the shell, and data.train_files is
glob-escaped (verl's dataset hands it to datasets.load_dataset, which globs), so a folder named `run [v2], a=b`
pastes whole.

The output folder must be new, empty, or an earlier saerl export (its README.md starts with EXPORT_MARK and it
holds only files an export writes): any other folder is refused, so an export never writes over a user's files.
Over an earlier export, the files it wrote that this export does not write (another format's train.parquet and
saerl_sampler.py, or hf's dataset files and shards) are removed once the new files are in place, and a warning
names them.
"""

from __future__ import annotations

import glob
import json
import logging
import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from saerl.artifacts import TEMP_NAME, ArtifactRef, ArtifactStore, CorruptArtifact, write_file_atomic
from saerl.config import PipelineConfig, TrainConfig
from saerl.curriculum import whole_batch_rows
from saerl.runners import ARM_ORDERS, PROMPTS, VANILLA, arm_order_frame, order_seed
from saerl.runs import RunRecord, load_run, runs_of
from saerl.stages import SHUFFLED_ARMS
from saerl.status import ended
from saerl.terminal import stderr_is_terminal

FORMATS = ("hf", "verl", "trl")
ARM_FILES = {**ARM_ORDERS, "vanilla": VANILLA}
COLUMNS = ("position", "id", "prompt", "answer", "batch", "epoch", "cluster", "difficulty_hat", "ramp")
# the rows' data_source: verl's built-in reward for it takes only a strict final '#### N' compared as text; the export's
# REWARD module (the README's command) reads no data_source and judges as saerl does
DATA_SOURCE = "openai/gsm8k"
ABILITY = "math"
TABLE = "train.parquet"
SAMPLER = "saerl_sampler.py"
SAMPLER_CLASS = "SaerlOrderSampler"
REWARD = "reward.py"  # verl's custom reward function module, or trl's reward function (reward_module)
REWARD_FUNCTION = "compute_score"
README = "README.md"
EXPORT_MARK = "# saerl export"  # the first line of every README.md an export writes
HF_FILES = ("dataset_info.json", "state.json")  # what datasets' save_to_disk writes beside its shards
_HF_SHARD = re.compile(r"data-\d{5}-of-\d{5}\.arrow")
SHOWN_ENTRIES = 5  # a refused folder's entries named in the error
DEFAULT_SEED = 0  # the training seed exported when the run trains it: it reads the curriculum artifact's own draw
# the verl releases whose data.sampler.class_path takes a custom sampler (verl 0.5.0 added it, 0.8.0 removed it)
VERL_SAMPLER_RANGE = "verl 0.5.0 to 0.7.x"
HYDRA_QUOTE = "'"  # the quote the verl README's Hydra override values are written in (hydra_quoted)
SHELL_DOUBLE_QUOTED = '$`\\"!'  # what a shell reads specially inside double quotes (shell_word)
log = logging.getLogger("saerl.export")

VERL_SAMPLER = '''"""Exported by saerl: a verl sampler that reads the train file in its stored (curriculum) order.

@VERL_SAMPLER_RANGE@ load it with data.sampler.class_path=<this file> data.sampler.class_name=SaerlOrderSampler
and check it is a verl AbstractSampler (verl before 0.5.0 has no custom samplers; 0.8.0 removed them); without verl
installed it is a plain torch Sampler (for inspection).
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


VERL_REWARD = '''r"""Exported by saerl: verl's reward for this export, judged by saerl's own verifier (saerl.verify) as saerl's RL
and evaluation judge it: the completion's final answer (the last `#### X` or `\\boxed{X}`) against the row's gold
(reward_model.ground_truth), numbers, fractions, percents and LaTeX read alike (`\\boxed{3/4}` matches `\\frac{3}{4}`,
`\\boxed{10\\%}` matches `10%`). 1.0 when correct, else 0.0; a check that times out or errs scores 0, as in saerl's RL.
Model output is only parsed, never run.

verl 0.7.1 and later load it with reward.custom_reward_function.path=<this file>
reward.custom_reward_function.name=compute_score (verl 0.7.0 and earlier: custom_reward_function.path and
custom_reward_function.name, at the top level). saerl must be importable where verl computes rewards: install it in
verl's environment.
"""

from typing import Any

try:
    from saerl.verify import verify_answer
except ImportError as err:
    raise ImportError(f"this reward judges with saerl's verifier: install saerl in verl's environment ({err})") from err

TIMEOUT_S = @TIMEOUT_S@  # the run's train.verify_timeout_s: the wall-clock bound on one answer check


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None,
                  **kwargs: Any) -> float:
    """1.0 when the final answer of `solution_str` equals `ground_truth` (saerl.verify.verify_answer), else 0.0.
    data_source, extra_info and any other keyword verl passes are not read."""
    return float(verify_answer(solution_str, str(ground_truth), TIMEOUT_S).correct)
'''

TRL_REWARD = '''r"""Exported by saerl: a trl reward function for this export, judged by saerl's own verifier
(saerl.verify) as saerl's RL and evaluation judge it: each completion's final answer (the last `#### X` or
`\\boxed{X}`) against its row's `answer` column, numbers, fractions, percents and LaTeX read alike
(`\\boxed{3/4}` matches `\\frac{3}{4}`, `\\boxed{10\\%}` matches `10%`). 1.0 when correct, else 0.0; a check that
times out or errs scores 0, as in saerl's RL. Model output is only parsed, never run.

Load it from its path and pass reward_funcs=[module.compute_score] to GRPOTrainer. saerl must be importable where
trl runs: install it in trl's environment.
"""

from typing import Any

try:
    from saerl.verify import verify_batch
except ImportError as err:
    raise ImportError(f"this reward judges with saerl's verifier: install saerl in trl's environment ({err})") from err

TIMEOUT_S = @TIMEOUT_S@  # the run's train.verify_timeout_s: the wall-clock bound on one answer check


def completion_text(completion: Any) -> str:
    """The text of a trl completion: a string as it is; a conversational one (a list of chat messages) as its
    messages' contents joined, as saerl's RL reads it."""
    return completion if isinstance(completion, str) else "".join(m["content"] for m in completion)


def compute_score(completions: list[Any], answer: list[str], **kwargs: Any) -> list[float]:
    """trl's reward function signature: 1.0 for each completion whose final answer equals its row's `answer`
    (saerl.verify.verify_batch), else 0.0. prompts and the other columns trl passes as keywords are not read."""
    results = verify_batch([completion_text(c) for c in completions], [str(a) for a in answer], TIMEOUT_S)
    return [float(r.correct) for r in results]
'''

REWARD_TEMPLATES = {"verl": VERL_REWARD, "trl": TRL_REWARD}  # REWARD's source per format (reward_module)


def verl_sampler() -> str:
    """The text of a verl export's SAMPLER module, naming the verl releases that take it (VERL_SAMPLER_RANGE)."""
    return VERL_SAMPLER.replace("@VERL_SAMPLER_RANGE@", VERL_SAMPLER_RANGE)


def reward_timeout(info: dict[str, Any]) -> float:
    """The seconds one answer check of the verl export's reward may take: the run's train.verify_timeout_s (the
    export's `info`), else the schema's default. in: export info; out: seconds."""
    return float(info.get("verify_timeout_s", TrainConfig().verify_timeout_s))


def reward_module(fmt: str, timeout_s: float) -> str:
    """The text of a verl or trl export's REWARD module (REWARD_TEMPLATES: verl's custom reward function
    compute_score(data_source, solution_str, ground_truth, ...), or trl's reward function compute_score(completions,
    answer, **kwargs)), each answer check bounded by `timeout_s` seconds (the run's train.verify_timeout_s).
    in: 'verl' or 'trl', seconds; out: Python source."""
    return REWARD_TEMPLATES[fmt].replace("@TIMEOUT_S@", repr(float(timeout_s)))


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


def export_seed(cfg: PipelineConfig, run_id: str, seed: int | None = None) -> int:
    """The training seed whose stream an export writes: `seed`, which the run must train (train.seeds; ValueError
    naming the seeds it trains otherwise); None: DEFAULT_SEED when the run trains it (the curriculum artifact's own
    draw), else the run's first training seed. in: the run's config, its id, the seed asked for; out: the seed."""
    seeds = list(cfg.train.seeds)
    if seed is None:
        return DEFAULT_SEED if DEFAULT_SEED in seeds else seeds[0]
    if seed not in seeds:
        raise ValueError(f"run {run_id} trains no seed {seed}: its training seeds are {', '.join(map(str, seeds))} "
                         f"(train.seeds); export one of them, e.g. --seed {seeds[0]}")
    return seed


def arm_inputs(root: Path, record: RunRecord, cfg: PipelineConfig, arm: str, seed: int) -> dict[str, ArtifactRef]:
    """The artifacts :func:`saerl.runners.arm_order_frame` reads for one arm and training seed, as the train stage is
    handed them: ingest and curriculum, and score where a curriculum arm's seed draws its own order (every seed but
    the one reading the curriculum artifact's draw, seed 0). ValueError (stage_dir) when the run lacks one or it is
    gone. in: artifact root, run record, its config, arm, seed; out: {stage: artifact ref}."""
    stages = ["ingest", "curriculum"]
    if arm not in SHUFFLED_ARMS and order_seed(cfg, seed) != cfg.curriculum.seed:
        stages.append("score")
    inputs = {}
    for stage in stages:
        path = stage_dir(root, record, stage)
        inputs[stage] = ArtifactRef(stage, record.stages[stage].key, str(path))
    return inputs


def training_stream(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], arm: str,
                    seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows training seed `seed` of `arm` trains on, in order, built as the train stage builds them: the arm's
    order (:func:`saerl.runners.arm_order_frame`: vanilla and filter_only draw a fresh shuffle for each epoch the
    run needs), its whole batches (:func:`saerl.curriculum.whole_batch_rows`, as compute_train's whole_batches),
    read for the run's whole stream (saerl.stream.train_stream_length) as saerl.stream.training_order reads it (an order
    shorter than the run again from its top); positions renumbered 0..n-1. An order from before ramps (curriculum
    stage v3, where each epoch was one climb) reads ramp 0. in: config, the train stage's inputs (arm_inputs), arm,
    training seed; out: the stream's rows (empty when the order has no rows) and the arm's whole order
    (ORDER_SCHEMA)."""
    from saerl.stream import train_stream_length, training_order

    b = cfg.curriculum.batch_size
    order = arm_order_frame(cfg, inputs, arm, seed)
    if "ramp" not in order.columns:
        order = order.with_columns(ramp=pl.lit(0, pl.Int64))
    whole = whole_batch_rows(order, b)
    if whole.is_empty():
        return whole, order
    # training_order repeats the order it is given as RL does: given the rows' numbers, it names the row each
    # place of the stream reads
    rows = training_order([], [str(i) for i in range(whole.height)], train_stream_length(cfg.train, b), seed)
    stream = whole[[int(r) for r in rows]].with_columns(position=pl.int_range(0, pl.len(), dtype=pl.Int64))
    return stream, order


def with_prompts(stream: pl.DataFrame, ingest: Path, arm: str) -> pl.DataFrame:
    """The stream's rows joined with their prompts and answers, in stream order. in: the stream (training_stream),
    the ingest artifact folder, arm (for the error); out: frame with COLUMNS. ValueError for ids missing from the
    prompts."""
    prompts = pl.read_parquet(ingest / PROMPTS, glob=False).select(pl.col("id").cast(pl.String), "prompt", "answer")
    frame = (stream.with_columns(pl.col("id").cast(pl.String)).join(prompts, on="id", how="left")
             .sort("position").select(COLUMNS))
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
    ground_truth: answer}, extra_info {index: position, id, ramp}, in the frame's order."""
    return frame.select(
        pl.lit(data_source).alias("data_source"),
        user_messages("prompt").alias("prompt"),
        pl.lit(ABILITY).alias("ability"),
        pl.struct(pl.lit("rule").alias("style"), pl.col("answer").alias("ground_truth")).alias("reward_model"),
        pl.struct(pl.col("position").alias("index"), pl.col("id"), pl.col("ramp")).alias("extra_info"),
    )


def trl_table(frame: pl.DataFrame) -> pl.DataFrame:
    """trl's conversational prompt rows in order: position, id, prompt (chat messages), answer (the
    column trl passes to reward functions), ramp."""
    return frame.select("position", "id", user_messages("prompt").alias("prompt"), "answer", "ramp")


def coverage_note(info: dict[str, Any]) -> str:
    """What of the arm's order (as the exported training seed draws it) the file leaves out because saerl's RL
    trains on whole batches only: the rows of each epoch's short last batch, and the prompts that are in no whole
    batch; '' when every batch is whole. in: an export's info (export_run); out: text."""
    if not info["left_out"]:
        return ""
    b, n = info["batch_size"], info["short_batches"]
    k = info["prompts_unbatched"]
    absent = (f"; {k} of its prompts {'is' if k == 1 else 'are'} in no whole batch and appear{'s' if k == 1 else ''} "
              "nowhere in the file" if k else "")
    return (f"{info['left_out']} of the {info['order_rows']} rows of the {info['arm']} order are not in this file: the "
            f"short last batch of each epoch ({n} batch{'es' if n != 1 else ''} of fewer than {b} prompts), which "
            f"saerl's own RL does not train on: it trains on whole batches only{absent}.")


def seeds_text(seeds: list[int]) -> str:
    """'seed 0' or 'seeds 0, 1, 2'. in: training seeds; out: text."""
    return f"seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))}"


def readme_head(info: dict[str, Any]) -> str:
    """The README.md head of an export: run, arm, training seed, rows, whose order it is and how the rows make
    batches, the seeds the run trains, and what the whole batches leave out (coverage_note). in: an export's info
    (export_run); out: markdown ending in a blank line."""
    b, arm, seed = info["batch_size"], info["arm"], info["seed"]
    head = (f"{EXPORT_MARK}: run {info['run']}, arm {arm}, training seed {seed}, {info['rows']} rows in training "
            "order\n\n")
    if arm in SHUFFLED_ARMS:
        epochs, designed = info["epochs"], info["curriculum_epochs"]
        more = (f", {epochs - designed} more than curriculum.epochs={designed}: saerl's RL draws a fresh shuffle for "
                "each epoch a run needs past them" if epochs > designed else "")
        body = (f"The {arm} arm's order as training seed {seed} reads it: a seeded shuffle of {SHUFFLED_ARMS[arm]}, "
                f"a fresh one each epoch ({epochs} epoch{'s' if epochs != 1 else ''} drawn{more}).")
    else:
        body = (f"The {arm} arm's curriculum as training seed {seed} reads it (each training seed draws its own "
                "curriculum: saerl.runners.order_seed).")
    body += f" Each block of {b} rows is one saerl batch (one RL step); keep the order: do not shuffle."
    others = [s for s in info["seeds"] if s != seed]
    body += (f" This run trains {seeds_text(info['seeds'])} (train.seeds)"
             + (f"; `saerl export --seed S` writes another seed's stream ({seeds_text(others)})." if others else "."))
    note = coverage_note(info)
    return head + body + (f"\n\n{note}" if note else "") + "\n\n"


def stream_note(info: dict[str, Any]) -> str:
    """What this file is of saerl's run, in a few sentences: the whole stream the exported training seed reads, once
    from its top (train.max_steps steps of batch_size rows; under train.algorithm dapo also the rows its refills
    can read), and how that stream reads the arm's order in whole batches: the first part of it (the rest never
    read), all of it, or, for a curriculum shorter than the run, all of it again from its top.
    in: an export's info (export_run); out: text."""
    steps, b, rows, whole, arm = info["max_steps"], info["batch_size"], info["rows"], info["whole_rows"], info["arm"]
    text = (f"This file is the whole stream saerl's RL reads for training seed {info['seed']} of this run: "
            f"train.max_steps={steps} steps of {b} prompts")
    if info.get("algorithm") == "dapo":
        text += (f", {steps * b} rows, and the rows after them that its dynamic-sampling refills read further "
                 f"(train.algorithm=dapo): {rows} rows in all.")
    else:
        text += f", {rows} rows. A trainer reads it once, from the top."
    if rows < whole:
        unread = info["prompts_unread"] - info["prompts_unbatched"]
        text += (f" It holds the first {rows} of the {whole} rows the {arm} order has in whole batches: saerl's RL "
                 f"never reads the {whole - rows} after them"
                 + (f" ({unread} of its prompts appear{'s' if unread == 1 else ''} in no row of the file)"
                    if unread else "") + ".")
    elif rows == whole:
        text += f" It holds all {whole} rows the {arm} order has in whole batches, once."
    else:  # only a curriculum arm: a shuffled arm's order is drawn as long as the run (saerl.runners.arm_order_frame)
        text += (f" The {arm} order has {whole} rows in whole batches, fewer than the run reads: saerl's RL reads "
                 "it again from its top, as the file does (its rows appear again with their batch and epoch).")
    return text


def shell_word(word: str) -> str:
    """`word` quoted for a POSIX shell, read back as one word exactly: as it is where it needs no quoting, in double
    quotes where it holds none of the characters special inside them (SHELL_DOUBLE_QUOTED: $, `, \\, ", and
    interactive bash's history mark !), else in single quotes (shlex.quote). in: one word; out: shell text."""
    quoted = shlex.quote(word)
    if quoted == word or set(word) & set(SHELL_DOUBLE_QUOTED):
        return quoted
    return f'"{word}"'


def hydra_quoted(value: str) -> str:
    r"""`value` as a Hydra override value that Hydra reads back as exactly `value`, whatever it holds (`[`, `]`,
    `,`, `=`, quotes, spaces, backslashes): a single-quoted Hydra string, in which Hydra's override grammar takes
    any character (unquoted, brackets, commas and `=` are its syntax), escaped as Hydra unescapes one (hydra-core
    1.3, OverrideVisitor._unescape_quoted_string, only backslashes before a quote are read): a run of n
    backslashes before a quote becomes 2n + 1 backslashes and the quote, a run of n ending the value 2n. Each `${`
    in it, which OmegaConf would resolve as an interpolation when verl reads the value, is escaped first as
    OmegaConf unescapes one (`\${`; a run of n backslashes before it becomes 2n + 1). The shell quotes the whole
    override after (shell_word). in: text; out: the quoted value, quotes included."""
    text = re.sub(r"(\\*)\$\{", lambda m: "\\" * (2 * len(m.group(1)) + 1) + "${", value)
    text = re.sub(rf"(\\*){HYDRA_QUOTE}", lambda m: "\\" * (2 * len(m.group(1)) + 1) + HYDRA_QUOTE, text)
    text = re.sub(r"(\\+)\Z", lambda m: m.group(1) * 2, text)
    return f"{HYDRA_QUOTE}{text}{HYDRA_QUOTE}"


def hydra_override(key: str, value: str) -> str:
    """One Hydra override of a path value for the verl README's bash block: key='value' (hydra_quoted), quoted for
    the shell (shell_word). in: key, value; out: shell text."""
    return shell_word(f"{key}={hydra_quoted(value)}")


def readme(fmt: str, out: Path, info: dict[str, Any]) -> str:
    """The README.md text for one export: what is in the folder, what of saerl's run it is (stream_note), and how
    to point the trainer at it with the run's step budget (train.max_steps), reading the file once."""
    head = readme_head(info) + stream_note(info) + "\n\n"
    steps, b, g = info["max_steps"], info["batch_size"], info["num_generations"]
    if fmt == "hf":
        return head + (f"```python\nfrom datasets import load_from_disk\nds = load_from_disk({str(out)!r})  "
                       "# columns: " + ", ".join(COLUMNS) + "\n```\n")
    timeout = reward_timeout(info)
    if fmt == "verl":
        reward_path = f"custom_reward_function.path={hydra_quoted(str(out / REWARD))}"
        reward_name = f"custom_reward_function.name={REWARD_FUNCTION}"
        sampler = (hydra_override("data.sampler.class_path", str(out / SAMPLER))
                   + f" data.sampler.class_name={SAMPLER_CLASS}")
        # verl's dataset hands data.train_files to datasets.load_dataset as data_files, a glob: escaped
        train_files = hydra_override("data.train_files", glob.escape(str(out / TABLE)))
        return head + (
            "```bash\npython -m verl.trainer.main_ppo \\\n"
            f"  {train_files} \\\n"
            f"  data.train_batch_size={b} \\\n"
            "  data.shuffle=False \\\n"
            f"  {shell_word(f'reward.{reward_path}')} reward.{reward_name} \\\n"
            f"  actor_rollout_ref.rollout.n={g} \\\n"
            f"  actor_rollout_ref.actor.ppo_mini_batch_size={b} \\\n"
            f"  trainer.total_training_steps={steps} \\\n"
            "  trainer.total_epochs=1 ...\n```\n\n"
            "`data.shuffle=False` reads the rows in file order. The file is the run's whole stream: "
            f"`trainer.total_training_steps={steps}` stops where saerl's RL stops, and `trainer.total_epochs=1` "
            "reads the file once (verl stops at whichever ends first). `actor_rollout_ref.actor.ppo_mini_batch_size` "
            "is one update per batch, as "
            f"saerl's RL does (verl's default, 256, is over data.train_batch_size={b} and fails its config check). "
            "The rows' `extra_info` carries `index` (position), `id` and `ramp`. `data.filter_overlong_prompts` "
            "drops rows but keeps the order of the rest. Each path is quoted for Hydra ('...', which takes brackets, "
            "commas and `=`) and then for the shell, and `data.train_files` is glob-escaped (verl reads it with "
            "datasets.load_dataset, which globs).\n\n"
            f"The reward is `{REWARD}`: saerl's own verifier, as saerl's RL judges (the last `#### X` or "
            "`\\boxed{X}` against reward_model.ground_truth; `\\boxed{3/4}` matches `\\frac{3}{4}`, `10\\%` "
            f"matches `10%`; each check bounded by {timeout:g} s, the run's train.verify_timeout_s). "
            "It imports saerl, so saerl must be importable in verl's environment (install it there). Without it "
            f"verl picks its built-in reward by `data_source` ({info['data_source']!r}); for openai/gsm8k that "
            "takes only a final `#### N`, compared as text, which saerl's prompts do not ask for: `\\boxed{}` "
            "answers and golds such as `\\frac{3}{4}` or `10%` would always score 0.\n\n"
            f"verl 0.7.0 and earlier name the reward keys at the top level: `{shell_word(reward_path)} {reward_name}`. "
            f"{VERL_SAMPLER_RANGE} (custom samplers came in verl 0.5.0, and 0.8.0 removed them) also take the "
            f"sampler written here, `{sampler} data.dataloader_num_workers=0` (verl requires no dataloader workers "
            "with a custom sampler), which reads the same order as `data.shuffle=False`.\n")
    return head + (
        "```python\nimport importlib.util\nfrom datasets import load_dataset\n"
        "from trl import GRPOConfig, GRPOTrainer\n\n\n"
        "def load(name, path):\n"
        "    spec = importlib.util.spec_from_file_location(name, path)\n"
        "    module = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(module)\n"
        "    return module\n\n\n"
        f"mod = load('saerl_sampler', {str(out / SAMPLER)!r})\n"
        f"reward = load('saerl_reward', {str(out / REWARD)!r})\n"
        # datasets reads data_files as a glob pattern: escaped, a folder named 'export [v2]' is read as it is
        f"data = load_dataset('parquet', data_files={glob.escape(str(out / TABLE))!r}, split='train')\n"
        f"trainer = mod.ordered(GRPOTrainer)(model=..., reward_funcs=[reward.{REWARD_FUNCTION}], train_dataset=data,\n"
        f"    args=GRPOConfig(num_generations={g}, per_device_train_batch_size={b * g}, max_steps={steps}, ...))\n"
        "```\n\n"
        f"`max_steps={steps}` trains as many steps as saerl's RL does for this run, reading the file once from its "
        "top (trl's default, num_train_epochs=3 with no max_steps, would read it three times). "
        f"per_device_train_batch_size={b * g} is {b} prompts x num_generations={g} "
        "completions, one batch of the file per step, on one process: on N processes (GPUs) divide it by N (trl's "
        "step reads per_device_train_batch_size x N completions).\n\n"
        "`mod.ordered(cls)` subclasses a GRPOTrainer with `_get_train_sampler` returning "
        f"`{SAMPLER_CLASS}(dataset, num_generations, generation_batch_size // num_generations, "
        "num_iterations * steps_per_generation)`: each prompt num_generations times in a row, in file order. "
        "`GRPOConfig(shuffle_dataset=False)` gives the same order with trl's own sampler. "
        "The `answer` column (and `id`, `position`, `ramp`) reach reward functions as keyword arguments.\n\n"
        f"The reward is `{REWARD}`'s `{REWARD_FUNCTION}(completions, answer, **kwargs)`: saerl's own verifier, as "
        "saerl's RL judges (the last `#### X` or `\\boxed{X}` against `answer`, plain or conversational "
        f"completions; each check bounded by {timeout:g} s, the run's train.verify_timeout_s). It imports saerl, so "
        "saerl must be importable in trl's environment. trl's stock `accuracy_reward` does not fit this file: it "
        "reads a `solution` column, and scores a final `#### N` 0.\n")


def is_export_file(name: str) -> bool:
    """True for the name of a file some saerl export writes (any format: TABLE, SAMPLER, README, hf's files and
    shards), or the temp name of one that a killed export left. in: a file name; out: bool."""
    temp = TEMP_NAME.fullmatch(name)  # the temp name of a file a killed export left
    name = temp.group(1) if temp else name
    return name in (TABLE, SAMPLER, REWARD, README, *HF_FILES) or _HF_SHARD.fullmatch(name) is not None


def earlier_export(out: Path) -> list[Path]:
    """The files of an earlier saerl export in folder `out` ([] when it is missing or empty). ValueError naming
    what is there when `out` holds anything else: a file no export writes, a subfolder, or export-named files
    without an export's README.md (train.parquet may well be the user's own). in: a folder; out: its files."""
    if not out.is_dir():
        return []
    entries = sorted(out.iterdir())
    if not entries:
        return []
    readme_path = out / README
    with_mark = False
    if readme_path.is_file():
        with readme_path.open(encoding="utf-8", errors="replace") as fh:
            with_mark = fh.readline().startswith(EXPORT_MARK)
    others = [e.name for e in entries if not (e.is_file() and is_export_file(e.name))]
    if with_mark and not others:
        return entries
    shown = others or [e.name for e in entries]
    listed = ", ".join(shown[:SHOWN_ENTRIES]) + (f" and {len(shown) - SHOWN_ENTRIES} more" if len(shown) > SHOWN_ENTRIES
                                                   else "")
    why = (f"it holds files no saerl export writes ({listed})" if others
           else f"it holds {listed} but no README.md of a saerl export")
    raise ValueError(f"export folder {out} is not empty and not an earlier saerl export: {why}. Export into a new or "
                     "empty folder (an earlier saerl export's folder is reused: its files are replaced)")


def _new_files(fmt: str, out: Path) -> set[str]:
    """Names of the files an export of `fmt` wrote into `out`: for hf, README, HF_FILES and the shards its
    state.json lists; else TABLE, SAMPLER, REWARD, README."""
    if fmt != "hf":
        return {TABLE, SAMPLER, REWARD, README}
    state = json.loads((out / "state.json").read_text(encoding="utf-8"))
    return {README, *HF_FILES, *(f["filename"] for f in state.get("_data_files", []))}


@contextmanager
def datasets_bars(show: bool) -> Iterator[None]:
    """For the block, datasets' progress bars ('Saving the dataset (0/1 shards)') on only when `show` (an export
    has no runtime.progress: :func:`write_export` passes whether stderr is a terminal, as runtime.progress's auto
    does); they went into every redirected stderr. Put back as they were after it. in: whether to show them."""
    from datasets.utils import logging as ds_logging

    before = ds_logging.is_progress_bar_enabled()
    if not show:
        ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if before and not show:
            ds_logging.enable_progress_bar()


def write_export(frame: pl.DataFrame, fmt: str, out: Path, info: dict[str, Any]) -> list[Path]:
    """Write an ordered frame in one format into `out` (created); returns the files written (for hf, the
    dataset folder itself and its README). The verl/trl files and the README are each written under a temp name
    and renamed into place: a killed export never leaves half a file (nor half of one over an earlier export).
    `out` must be new, empty or an earlier saerl export (ValueError otherwise, before anything is written, see
    earlier_export); the earlier export's files this one does not write are removed once it is written, with a
    warning naming them."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format '{fmt}'; formats: {', '.join(FORMATS)}")
    earlier = earlier_export(out)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "hf":
        from datasets import Dataset

        with datasets_bars(stderr_is_terminal()):
            Dataset.from_polars(frame).save_to_disk(str(out))
        written = [out]
    else:
        table = verl_table(frame, info["data_source"]) if fmt == "verl" else trl_table(frame)
        write_file_atomic(out / TABLE, table.write_parquet)
        _write_text_atomic(out / SAMPLER, verl_sampler() if fmt == "verl" else TRL_SAMPLER)
        written = [out / TABLE, out / SAMPLER]
        _write_text_atomic(out / REWARD, reward_module(fmt, reward_timeout(info)))
        written.append(out / REWARD)
    _write_text_atomic(out / README, readme(fmt, out.resolve(), info))
    keep = _new_files(fmt, out)
    stale = [f for f in earlier if f.name not in keep]
    for f in stale:
        f.unlink(missing_ok=True)
    if stale:
        log.warning("removed %d files of an earlier saerl export in %s that this %s export does not write: %s",
                    len(stale), out, fmt, ", ".join(f.name for f in stale))
    return [*written, out / README]


def _write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` (UTF-8) through a temp file renamed into place."""
    write_file_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def order_coverage(order: pl.DataFrame, stream: pl.DataFrame, batch_size: int) -> dict[str, int]:
    """How the exported stream covers the arm's order as its training seed draws it: order_rows (rows of the order:
    prompt visits over all its epochs), epochs (drawn), whole_rows (those in whole batches), left_out (the rest: the
    rows of each epoch's short last batch), short_batches (the order's batches shorter than batch_size, when rows
    are left out), prompts_unbatched (prompts of the order in no whole batch), prompts_unread (prompts of the order
    that appear nowhere in the stream: those, and any the run stops before). in: the order and the stream
    (training_stream), B; out: those counts."""
    whole = whole_batch_rows(order, batch_size)
    left_out = order.height - whole.height
    short = order.group_by("batch").len().filter(pl.col("len") != batch_size).height if left_out else 0
    prompts = order["id"].cast(pl.String).unique()
    return {"order_rows": order.height, "epochs": order["epoch"].n_unique(), "whole_rows": whole.height,
            "left_out": left_out, "short_batches": short,
            "prompts_unbatched": int(prompts.is_in(whole["id"].cast(pl.String).implode()).not_().sum()),
            "prompts_unread": int(prompts.is_in(stream["id"].cast(pl.String).implode()).not_().sum())}


def exported_run(root: Path, run_id: str) -> RunRecord:
    """The run record an export reads: `run_id` (a unique prefix), or for 'latest' the newest run that reached its
    curriculum stage, saying which when newer runs did not (one that failed or stopped earlier, or ran --until an
    earlier stage: 'latest' named it, and the export refused). in: artifact root, run id; out: the record."""
    if run_id != "latest":
        return load_run(root, run_id)
    newest = load_run(root, "latest")  # UnknownRun, with its fix, when the root holds no record
    for record in runs_of(root, None):
        if "curriculum" in record.stages and "ingest" in record.stages:
            if record.run_id != newest.run_id:
                log.warning("the newest run, %s, has no curriculum stage (%s); exporting %s, the newest that has "
                            "one", newest.run_id, ended(root, newest), record.run_id)
            return record
    return newest  # no run has one: stage_dir says so, naming the newest


def check_choices(fmt: str, arm: str) -> None:
    """ValueError naming the choices when `fmt` is no export format (FORMATS) or `arm` no arm (ARM_FILES).
    in: format, arm."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format '{fmt}'; formats: {', '.join(FORMATS)}")
    if arm not in ARM_FILES:
        raise ValueError(f"unknown arm '{arm}'; arms: {', '.join(ARM_FILES)}")


@dataclass(frozen=True)
class Exported:
    """What :func:`export_run` exported, as `saerl export` names it: the run (its id: 'latest' or a prefix resolved;
    it may not be the newest run, exported_run), the training seed whose stream it is (the default resolved:
    export_seed) and the files written."""

    run_id: str
    seed: int
    files: list[Path]


def export_run(root: Path, run_id: str, fmt: str, out: Path, arm: str = "saerl",
               data_source: str = DATA_SOURCE, seed: int | None = None) -> Exported:
    """`saerl export`: the stream training seed `seed` of one run's `arm` reads (training_stream: the whole run's,
    in order) with its prompts, in format `fmt`, into `out` (new, empty or an earlier export: see write_export).
    in: artifact root, run id (unique prefix or 'latest'), format, output folder, arm, verl data_source, training
    seed (None: export_seed's default; one the run does not train is a ValueError naming those it does); out: the
    run exported, the seed and the files (:class:`Exported`). The run's record and its config are read once (a field
    the schema lost since the run is warned of once; :func:`export_record` does the rest)."""
    from saerl.report import run_config

    check_choices(fmt, arm)  # before the run is looked for
    record = exported_run(root, run_id)
    cfg = run_config(record)
    chosen = export_seed(cfg, record.run_id, seed)
    return Exported(record.run_id, chosen,
                    export_record(root, record, cfg, fmt, out, arm, data_source, chosen))


def export_record(root: Path, record: RunRecord, cfg: PipelineConfig, fmt: str, out: Path, arm: str = "saerl",
                  data_source: str = DATA_SOURCE, seed: int = DEFAULT_SEED) -> list[Path]:
    """:func:`export_run` of a run record already read, with the config it ran with (saerl.report.run_config, read
    once by the caller: reading it again repeated its warnings) and the training seed (export_seed). in: artifact
    root, run record, its config, format, output folder, arm, verl data_source, training seed; out: files written.
    Warns (logging, which the CLI prints) when rows of the order are in no whole batch (coverage_note)."""
    check_choices(fmt, arm)
    inputs = arm_inputs(root, record, cfg, arm, seed)
    batch_size = cfg.curriculum.batch_size
    stream, order = training_stream(cfg, inputs, arm, seed)
    if stream.is_empty():  # wrote 0-row files with exit status 0
        raise ValueError(f"run {record.run_id}'s {arm} order is empty (its curriculum stage's note says why: the "
                         "quality filter or the difficulty cap removed every prompt): nothing to export; rerun with a "
                         "lower score.quality_threshold, or export another arm (--arm vanilla)")
    frame = with_prompts(stream, Path(inputs["ingest"].path), arm)
    t = cfg.train
    info = {"run": record.run_id, "arm": arm, "seed": seed, "seeds": list(t.seeds), "rows": frame.height,
            "data_source": data_source, "batch_size": batch_size, "max_steps": t.max_steps, "algorithm": t.algorithm,
            "num_generations": t.num_generations, "verify_timeout_s": t.verify_timeout_s,
            "curriculum_epochs": cfg.curriculum.epochs, **order_coverage(order, stream, batch_size)}
    files = write_export(frame, fmt, Path(out), info)
    note = coverage_note(info)
    if note:
        log.warning("export of run %s, arm %s, seed %d: %s", record.run_id, arm, seed, note)
    return files
