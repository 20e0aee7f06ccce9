"""saerl.export: each format round-trips an arm's order with its prompts; the sampler modules stream it."""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import types
from pathlib import Path

import polars as pl
import pytest

from flows.cli import main
from saerl.artifacts import ArtifactStore
from saerl.curriculum import vanilla_order, whole_batch_rows, whole_batches
from saerl.export import (
    ARM_FILES,
    COLUMNS,
    README,
    REWARD,
    REWARD_FUNCTION,
    SAMPLER,
    SAMPLER_CLASS,
    TABLE,
    VERL_SAMPLER_RANGE,
    export_run,
    hydra_quoted,
    reward_module,
)
from saerl.report import run_config
from saerl.runners import PROMPTS, SCORES
from saerl.runs import RunRecord, StageRecord, save_run

REPO = Path(__file__).resolve().parents[1]
N_PROMPTS, EPOCHS, BATCH, GENERATIONS = 10, 2, 4, 3


def _publish(store: ArtifactStore, stage: str, key: str, tables: dict[str, pl.DataFrame]) -> str:
    """A finished artifact holding `tables` as parquet files; returns its path."""
    def write(build):
        for name, df in tables.items():
            df.write_parquet(build.path / name)

    return store.ensure(stage, key, write)[0].path


def _make_run(root: Path, epochs: int = EPOCHS, n_prompts: int = N_PROMPTS,
              config: dict | None = None) -> tuple[Path, RunRecord]:
    """An artifact root with an ingest, a score and a curriculum artifact (`epochs` epochs of `n_prompts`: the
    saerl and order_only order files stored shuffled, so the export must sort by position; vanilla's and
    filter_only's the curriculum stage's own draw, as it writes them) and a run record naming them, its config the
    batch size, the generations, curriculum.epochs, train.max_steps as many steps as the order has whole batches
    (the run's stream is the order read once), and `config`."""
    store = ArtifactStore(root)
    ids = [f"p{i:02d}" for i in range(n_prompts)]
    prompts = pl.DataFrame({"id": ids, "prompt": [f"What is {i}+1?" for i in range(n_prompts)],
                            "answer": [str(i + 1) for i in range(n_prompts)], "answer_raw": ids,
                            "row": list(range(n_prompts))})
    scores = pl.DataFrame({"id": ids, "cluster": [i % 3 for i in range(n_prompts)],
                           "difficulty_hat": [(i * 7 % 10) / 10 for i in range(n_prompts)],
                           "quality_hat": [1.0] * n_prompts})
    config = {"curriculum.batch_size": BATCH, "curriculum.epochs": epochs, "train.num_generations": GENERATIONS,
              "train.max_steps": max(1, n_prompts // BATCH * epochs), **(config or {})}
    shuffled = vanilla_order(ids, epochs, config.get("curriculum.seed", 0), BATCH)  # the curriculum stage's draw
    orders = {ARM_FILES["saerl"]: vanilla_order(ids, epochs, 1, BATCH).sample(fraction=1.0, shuffle=True, seed=1),
              ARM_FILES["order_only"]: vanilla_order(ids, epochs, 2, BATCH).sample(fraction=1.0, shuffle=True, seed=2),
              ARM_FILES["filter_only"]: shuffled, ARM_FILES["vanilla"]: shuffled}
    record = RunRecord(name="t", config=config)
    for stage, key, tables in (("ingest", "ki", {PROMPTS: prompts}), ("score", "ks", {SCORES: scores}),
                               ("curriculum", "kc", orders)):
        path = _publish(store, stage, key, tables)
        record.stages[stage] = StageRecord(stage, key, "computed", "", {}, {}, path=path)
    save_run(root, record)
    return root, record


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, RunRecord]:
    """_make_run with EPOCHS epochs under tmp_path/root."""
    return _make_run(tmp_path / "root")


def _expected(root: Path, arm: str) -> list[str]:
    """The arm's ids as RL reads them from the stored order file: in position order, in whole batches (without
    an epoch's short last batch)."""
    return whole_batches(pl.read_parquet(root / "curriculum" / "kc" / ARM_FILES[arm]), BATCH)


def _load_module(path: Path, name: str) -> types.ModuleType:
    """Import a written module from its path, as verl's class_path loading does."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _answers(root: Path) -> dict[str, tuple[str, str]]:
    df = pl.read_parquet(root / "ingest" / "ki" / PROMPTS)
    return {r["id"]: (r["prompt"], r["answer"]) for r in df.iter_rows(named=True)}


def _rl_stream(root: Path, record: RunRecord, arm: str, seed: int) -> list[str]:
    """The ids saerl's train stage trains (arm, seed) of the run on, built as it builds them: runners.arm_order_frame,
    in whole batches (compute_train), read by stream.training_order for stream.train_stream_length prompts
    (train_grpo)."""
    from saerl.artifacts import ArtifactRef
    from saerl.runners import arm_order_frame, read_prompts
    from saerl.stream import train_stream_length, training_order

    cfg = run_config(record)
    inputs = {s: ArtifactRef(s, r.key, r.path) for s, r in record.stages.items()}
    order = whole_batches(arm_order_frame(cfg, inputs, arm, seed), cfg.curriculum.batch_size)
    stream = train_stream_length(cfg.train, cfg.curriculum.batch_size)
    return training_order(read_prompts(inputs)["id"].to_list(), order, stream, seed)


def _hydra_read(token: str) -> str:
    r"""The text verl reads from one single-quoted Hydra override value: a small reimplementation of hydra-core 1.3's
    override grammar and unescaping, then OmegaConf's. Hydra's lexer (OverrideLexer.g4, QUOTED_VALUE) ends a quoted
    value at the first quote after an even run of backslashes (none counts), so every inner quote must follow an
    odd run and the closing one an even run; OverridesVisitor._unescape_quoted_string then keeps every other
    backslash of a run before a quote (or the end), and the quote of an odd run. OmegaConf resolves a `${` as an
    interpolation, unless escaped (ESC_INTER: 2n + 1 backslashes and `${` read as n and a literal `${`); an
    unescaped one is an AssertionError. in: the value as written, quotes included; out: the text."""
    assert len(token) >= 2 and token[0] == token[-1] == "'", token
    body = token[1:-1]
    assert all(len(m.group(1)) % 2 for m in re.finditer(r"(\\*)'", body)), f"{token}: an inner quote ends it"
    assert len(re.search(r"\\*\Z", body).group()) % 2 == 0, f"{token}: its closing quote is escaped"
    text = re.sub(r"(\\+)('|\Z)", lambda m: m.group(1)[1::2] + m.group(2), body)
    assert all(len(m.group(1)) % 2 for m in re.finditer(r"(\\*)\$\{", text)), f"{token}: an interpolation"
    return re.sub(r"(\\*)\$\{", lambda m: m.group(1)[: len(m.group(1)) // 2] + "${", text)


def _overrides(shell_text: str) -> dict[str, str]:
    """The Hydra overrides in a README's shell text (its bash block, or an inline command), split as a shell splits
    it, each key with the value verl reads (_hydra_read for a quoted one, else as it is). in: text; out: {key: value}."""
    words = [w for w in shlex.split(shell_text.replace("\\\n", " ")) if "=" in w]
    return {k: (_hydra_read(v) if v.startswith("'") else v) for k, v in (w.split("=", 1) for w in words)}


def _bash_block(text: str) -> str:
    """The one bash block of a README."""
    (block,) = re.findall(r"```bash\n(.*?)```", text, re.S)
    return block


def test_hf_round_trips_the_order(run, tmp_path):
    from datasets import load_from_disk

    root, _ = run
    out = tmp_path / "hf"
    export_run(root, "latest", "hf", out)
    ds = load_from_disk(str(out))
    assert ds["id"] == _expected(root, "saerl") and len(ds) == (N_PROMPTS // BATCH) * BATCH * EPOCHS
    assert ds["position"] == list(range(len(ds)))
    prompts = _answers(root)
    assert all((p, a) == prompts[i] for i, p, a in zip(ds["id"], ds["prompt"], ds["answer"], strict=True))
    assert "load_from_disk" in (out / README).read_text()


def test_latest_exports_the_newest_run_with_a_curriculum_saying_so(run, tmp_path, caplog):
    """After a failed attempt (its record names no curriculum stage) `export latest` refused, though the run before
    it had one: 'latest' now means the newest run that reached its curriculum, and says when that is not the newest."""
    import logging

    from saerl.runs import FAILED

    root, good = run
    failed = RunRecord(name="t", extra={FAILED: "extract: ValueError: extract.layer=6 is out of range"})
    failed.stages = {"ingest": good.stages["ingest"]}
    save_run(root, failed)
    with caplog.at_level(logging.WARNING, logger="saerl.export"):
        assert export_run(root, "latest", "hf", tmp_path / "hf").run_id == good.run_id, "the run it exported"
    assert f"the newest run, {failed.run_id}, has no curriculum stage (failed at extract); exporting " \
           f"{good.run_id}" in caplog.text
    with pytest.raises(ValueError, match=f"run {failed.run_id} has no curriculum stage"):
        export_run(root, failed.run_id, "hf", tmp_path / "hf2")  # named: that run, refused


def test_verl_round_trips_the_order_and_its_sampler_streams_it(run, tmp_path, monkeypatch):
    root, _ = run
    out = tmp_path / "verl"
    export_run(root, "latest", "verl", out, arm="order_only")
    df = pl.read_parquet(out / TABLE)
    extra = df["extra_info"].struct.unnest()
    assert extra["id"].to_list() == _expected(root, "order_only")
    assert extra["index"].to_list() == list(range(df.height))
    prompts = _answers(root)
    for row in df.iter_rows(named=True):
        prompt, answer = prompts[row["extra_info"]["id"]]
        assert row["prompt"] == [{"role": "user", "content": prompt}]
        assert row["reward_model"] == {"style": "rule", "ground_truth": answer}
        assert row["data_source"]

    sampler = getattr(_load_module(out / SAMPLER, "verl_sampler_plain"), SAMPLER_CLASS)
    assert list(sampler(data_source=list(range(df.height)), data_config={})) == list(range(df.height))

    class AbstractSampler:  # stands in for verl's, which create_rl_sampler checks with isinstance
        pass

    for name in ("verl", "verl.experimental", "verl.experimental.dataset", "verl.experimental.dataset.sampler"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["verl.experimental.dataset.sampler"].AbstractSampler = AbstractSampler
    with_verl = getattr(_load_module(out / SAMPLER, "verl_sampler_verl"), SAMPLER_CLASS)
    assert isinstance(with_verl(data_source=[0, 1], data_config={}), AbstractSampler)
    text = (out / README).read_text()
    assert f"data.sampler.class_name={SAMPLER_CLASS}" in text and f"data.train_batch_size={BATCH}" in text
    assert "data.shuffle=False" in text


def test_verl_export_writes_a_reward_that_judges_as_saerl_does(run, tmp_path):
    """verl's built-in openai/gsm8k reward takes only a strict final '#### N' compared as text: a right
    '\\boxed{3/4}' against the gold '\\frac{3}{4}' scored 0, whatever the policy learned. The export
    writes reward.py around saerl's verifier and its README's command points verl at it."""
    root, _ = run
    out = tmp_path / "verl"
    export_run(root, "latest", "verl", out)
    reward = _load_module(out / REWARD, "saerl_export_reward")  # as verl's custom_reward_function loads it
    score = getattr(reward, REWARD_FUNCTION)
    assert score("openai/gsm8k", "3 of the 4 slices: \\boxed{3/4}", "\\frac{3}{4}") == 1.0
    assert score("openai/gsm8k", "so \\boxed{4/3}", "\\frac{3}{4}") == 0.0
    assert score("openai/gsm8k", "the rise is \\boxed{10\\%}", "10%", extra_info={"index": 0}) == 1.0
    assert score("other", "#### 18", "18", None, reward_router_address=None) == 1.0  # keywords newer verl adds
    assert reward.TIMEOUT_S == 5.0  # the run's train.verify_timeout_s (the record sets none: the default)
    assert "TIMEOUT_S = 2.5 " in reward_module("verl", 2.5)
    text = (out / README).read_text()
    keys = _overrides(_bash_block(text))  # verl 0.7.1 and later
    assert keys["reward.custom_reward_function.path"] == str(out.resolve() / REWARD)
    assert keys["reward.custom_reward_function.name"] == REWARD_FUNCTION
    (top,) = re.findall(r"top level: `(.*?)`", text)  # verl 0.7.0 and earlier
    assert _overrides(top) == {"custom_reward_function.path": str(out.resolve() / REWARD),
                               "custom_reward_function.name": REWARD_FUNCTION}
    assert "saerl must be importable in verl's environment" in text


def test_trl_round_trips_the_order_and_its_sampler_repeats_each_prompt(run, tmp_path):
    from saerl.rl import OrderSampler

    root, _ = run
    out = tmp_path / "trl"
    export_run(root, "latest", "trl", out)
    df = pl.read_parquet(out / TABLE)
    assert df["id"].to_list() == _expected(root, "saerl") and df["position"].to_list() == list(range(df.height))
    module = _load_module(out / SAMPLER, "trl_sampler")
    stream = list(module.SaerlOrderSampler(df, GENERATIONS))
    assert stream == [i for i in range(df.height) for _ in range(GENERATIONS)]
    assert [df["id"][i] for i in stream[::GENERATIONS]] == _expected(root, "saerl")
    assert list(module.SaerlOrderSampler(df, GENERATIONS, BATCH, 2)) == list(OrderSampler(df.height, GENERATIONS, BATCH, 2))

    class FakeGRPOTrainer:  # the attributes trl's GRPOTrainer reads in _get_train_sampler
        num_generations, num_iterations = GENERATIONS, 1
        args = types.SimpleNamespace(generation_batch_size=BATCH * GENERATIONS, steps_per_generation=1)
        train_dataset = df

    sampler = module.ordered(FakeGRPOTrainer)()._get_train_sampler()
    assert list(sampler) == list(OrderSampler(df.height, GENERATIONS, BATCH, 1))


@pytest.mark.parametrize("arm", list(ARM_FILES))
def test_every_arm_exports_its_own_order_file(run, tmp_path, arm):
    root, _ = run
    export_run(root, "latest", "trl", tmp_path / arm, arm=arm)
    assert pl.read_parquet(tmp_path / arm / TABLE)["id"].to_list() == _expected(root, arm)


@pytest.mark.parametrize("arm", list(ARM_FILES))
def test_every_arm_exports_what_rl_reads_one_batch_per_block(run, tmp_path, arm):
    """RL reads every arm in whole batches (an epoch's short last batch left out): the export holds the same
    prompts, so each block of batch_size rows in the other trainer is one batch (a curriculum batch for saerl and
    order_only, a batch of one epoch's shuffle for vanilla and filter_only)."""
    root, _ = run
    export_run(root, "latest", "trl", tmp_path / arm, arm=arm)
    ids = pl.read_parquet(tmp_path / arm / TABLE)["id"].to_list()
    order = pl.read_parquet(root / "curriculum" / "kc" / ARM_FILES[arm]).sort("position")
    assert order.height == N_PROMPTS * EPOCHS and N_PROMPTS % BATCH  # the fixture has short batches
    assert ids == whole_batches(order, BATCH) and len(ids) == (N_PROMPTS // BATCH) * BATCH * EPOCHS
    export_run(root, "latest", "hf", tmp_path / f"{arm}_hf", arm=arm)
    from datasets import load_from_disk

    batches = load_from_disk(str(tmp_path / f"{arm}_hf"))["batch"]
    assert all(len(set(batches[i : i + BATCH])) == 1 for i in range(0, len(batches), BATCH))


def test_export_errors_name_the_problem(run, tmp_path):
    root, record = run
    with pytest.raises(ValueError, match="unknown arm"):
        export_run(root, "latest", "trl", tmp_path / "x", arm="nope")
    with pytest.raises(ValueError, match="unknown export format"):
        export_run(root, "latest", "csv", tmp_path / "x")
    shutil.rmtree(root / "curriculum" / "kc")
    with pytest.raises(ValueError, match="saerl gc"):
        export_run(root, "latest", "trl", tmp_path / "x")
    del record.stages["curriculum"]
    record.run_id += "z"
    save_run(root, record)
    with pytest.raises(ValueError, match="until curriculum"):  # named ('latest' reads the run before it)
        export_run(root, record.run_id, "trl", tmp_path / "x")


def test_an_empty_order_is_refused_not_exported_as_empty_files(tmp_path):
    """An order the quality filter emptied was exported as 0-row files with exit status 0."""
    root, record = _make_run(tmp_path / "root")
    orders = {f: pl.read_parquet(root / "curriculum" / "kc" / f) for f in ARM_FILES.values()}
    orders[ARM_FILES["saerl"]] = orders[ARM_FILES["saerl"]].head(0)
    record.stages["curriculum"].path = _publish(ArtifactStore(root), "curriculum", "kc2", orders)
    record.stages["curriculum"].key = "kc2"
    save_run(root, record)
    with pytest.raises(ValueError, match="saerl order is empty.*nothing to export"):
        export_run(root, "latest", "trl", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    export_run(root, "latest", "trl", tmp_path / "v", arm="vanilla")  # another arm still exports


def test_cli_export(run, tmp_path, capsys):
    root, record = run
    out = tmp_path / "cli"
    assert main(["export", record.run_id[:15], "--format", "verl", "--out", str(out), "--root", str(root)]) == 0
    printed = capsys.readouterr().out
    assert str(out / TABLE) in printed
    assert f"exported run {record.run_id}, arm saerl, training seed 0:" in printed, "named in full on stdout"
    assert main(["export", "nope", "--format", "trl", "--out", str(out), "--root", str(root)]) == 2
    assert "no unique run 'nope'" in capsys.readouterr().err


EXPORT_S = 120  # the most one `saerl export` child process below may take
HEAVY = ("torch", "trl", "transformers")  # what training loads and an export of a run's order needs none of


def _cli_export(root: Path, out: Path, code: str = "") -> subprocess.CompletedProcess:
    """`saerl export latest --format trl` of the run under `root` into `out`, in a fresh Python process that then
    runs `code` (its last lines, as the process ends). in: artifact root, output folder, code; out: the process."""
    argv = ["export", "latest", "--root", str(root), "--format", "trl", "--out", str(out)]
    script = f"import sys\nfrom flows.cli import main\nstatus = main({argv!r})\n{code}\nsys.exit(status)\n"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=EXPORT_S)


def test_cli_export_warns_once_of_a_field_the_recorded_config_names_that_saerl_no_longer_has(tmp_path):
    """The CLI read the run record's config to name the default seed, and export_run read it again: the warning
    about a field the schema has lost since the run printed twice. It is read once."""
    root, _ = _make_run(tmp_path / "root", config={"score.ood_topic_fraction": 0.3})
    done = _cli_export(root, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("the run record names fields this saerl no longer has, left out: "
                             "score.ood_topic_fraction") == 1, done.stderr


def test_cli_export_loads_no_training_library(tmp_path):
    """`saerl export` reused the train stage's stream functions from saerl.rl, which imports torch, transformers
    and trl's helpers at its top: the command took about 4.4 s instead of 0.8 s. An export imports none of them."""
    root, _ = _make_run(tmp_path / "root")
    done = _cli_export(root, tmp_path / "out", f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_cli_export_out_pointing_at_a_file_is_an_error_naming_out(run, tmp_path, capsys):
    """--out naming an existing file crashed with a FileExistsError traceback."""
    root, _ = run
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    assert main(["export", "latest", "--root", str(root), "--format", "verl", "--out", str(taken)]) == 2
    assert "--out" in capsys.readouterr().err and taken.read_text() == "mine"


def test_an_export_killed_half_way_keeps_the_last_whole_table(run, tmp_path, monkeypatch):
    """verl/trl wrote train.parquet in place: an export killed mid-write left half a file over the earlier one."""
    root, record = run
    out = tmp_path / "verl"
    export_run(root, record.run_id, "verl", out)
    whole = pl.read_parquet(out / TABLE)

    def killed_midway(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(pl.DataFrame, "write_parquet", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        export_run(root, record.run_id, "verl", out)
    monkeypatch.undo()
    assert pl.read_parquet(out / TABLE).equals(whole)


# ------------------------------------------------------------------------------------ what the README says


def test_a_whole_batch_export_says_how_many_rows_of_the_order_it_leaves_out_and_why(run, tmp_path, caplog):
    """The files and README said '16 rows in training order' and nothing of the short last batches RL leaves out
    (288 of 300 on a real run): the README and a warning now give the count and the reason."""
    root, _ = run
    order = pl.read_parquet(root / "curriculum" / "kc" / ARM_FILES["saerl"])
    rows = (N_PROMPTS // BATCH) * BATCH * EPOCHS
    left, absent = order.height - rows, N_PROMPTS - len(set(_expected(root, "saerl")))
    with caplog.at_level("WARNING", logger="saerl.export"):
        export_run(root, "latest", "hf", tmp_path / "hf")
    note = (f"{left} of the {order.height} rows of the saerl order are not in this file: the short last batch of "
            f"each epoch ({EPOCHS} batches of fewer than {BATCH} prompts), which saerl's own RL does not train on")
    text = (tmp_path / "hf" / README).read_text()
    assert f"arm saerl, training seed 0, {rows} rows in training order" in text and note in text
    assert f"Each block of {BATCH} rows is one saerl batch" in text
    verb = "is in no whole batch and appears" if absent == 1 else "are in no whole batch and appear"
    assert (f"{absent} of its prompts {verb} nowhere in the file" in text) == (absent > 0)
    assert any(note in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("arm", ["vanilla", "filter_only"])
def test_a_shuffled_arm_export_describes_its_own_arm_and_the_rows_rl_leaves_out(arm, tmp_path, caplog):
    """vanilla/filter_only (10 rows, batch 4): saerl's RL reads them in whole batches, as the ordered arms, so the
    export leaves each epoch's short last batch out and says so, and its README names the arm's shuffle; every
    exported row is in a batch the exported trl sampler yields."""
    root, _ = _make_run(tmp_path / "root", epochs=1)
    with caplog.at_level("WARNING", logger="saerl.export"):
        export_run(root, "latest", "trl", tmp_path / arm, arm=arm)
    df = pl.read_parquet(tmp_path / arm / TABLE)
    tail = N_PROMPTS % BATCH
    assert df.height == N_PROMPTS - tail and tail
    text = (tmp_path / arm / README).read_text()
    assert f"The {arm} arm's order as training seed 0 reads it: a seeded shuffle of" in text
    assert f"Each block of {BATCH} rows is one saerl batch" in text
    note = f"{tail} of the {N_PROMPTS} rows of the {arm} order are not in this file"
    assert note in text and any(note in r.getMessage() for r in caplog.records)
    sampler = _load_module(tmp_path / arm / SAMPLER, f"trl_sampler_{arm}").SaerlOrderSampler(df, 1, BATCH)
    assert sorted(set(sampler)) == list(range(N_PROMPTS - tail))


def test_an_export_whose_rows_all_fill_batches_says_nothing_is_left_out(tmp_path, caplog):
    root, _ = _make_run(tmp_path / "root", n_prompts=2 * BATCH)  # vanilla over EPOCHS epochs of 2 whole batches
    with caplog.at_level("WARNING", logger="saerl.export"):
        export_run(root, "latest", "verl", tmp_path / "v", arm="vanilla")
    text = (tmp_path / "v" / README).read_text()
    assert "not in this file" not in text and "do not fill a batch" not in text and not caplog.records


# ------------------------------------------------------------------------------------ the output folder


def test_an_export_over_an_earlier_export_of_another_format_removes_its_files(run, tmp_path, caplog):
    """hf into a folder holding a trl export left the stale train.parquet and saerl_sampler.py beside the new
    dataset, unmentioned; verl over hf left hf's shards and json files."""
    from datasets import load_from_disk

    root, _ = run
    out = tmp_path / "out"
    export_run(root, "latest", "trl", out)
    with caplog.at_level("WARNING", logger="saerl.export"):
        export_run(root, "latest", "hf", out)
    assert not (out / TABLE).exists() and not (out / SAMPLER).exists() and not (out / REWARD).exists()
    assert load_from_disk(str(out))["id"] == _expected(root, "saerl")
    assert any(f"removed 3 files of an earlier saerl export in {out}" in r.getMessage()
               and f"{REWARD}, {SAMPLER}, {TABLE}" in r.getMessage() for r in caplog.records)
    export_run(root, "latest", "verl", out)
    assert sorted(p.name for p in out.iterdir()) == sorted([README, REWARD, SAMPLER, TABLE])
    export_run(root, "latest", "verl", out, arm="vanilla")  # the same format again: replaced, nothing else
    assert sorted(p.name for p in out.iterdir()) == sorted([README, REWARD, SAMPLER, TABLE])
    assert "arm vanilla" in (out / README).read_text()
    export_run(root, "latest", "trl", out)  # trl over verl: trl's own reward module replaces verl's
    assert sorted(p.name for p in out.iterdir()) == sorted([README, REWARD, SAMPLER, TABLE])
    assert "def compute_score(completions" in (out / REWARD).read_text()


@pytest.mark.parametrize("files", [{"notes.txt": "mine"}, {TABLE: "my own data"}, {README: "# my project"},
                                   {README: "# saerl export: run x", "sub/": ""}])
def test_an_export_refuses_a_folder_that_is_not_empty_and_not_an_earlier_export(run, tmp_path, files):
    """An export wrote over (and beside) whatever the folder held: a user's README.md, their train.parquet."""
    root, _ = run
    out = tmp_path / "out"
    out.mkdir()
    for name, text in files.items():
        (out / name).mkdir() if name.endswith("/") else (out / name).write_text(text)
    before = {p.name: (p.read_text() if p.is_file() else None) for p in out.iterdir()}
    with pytest.raises(ValueError, match=f"export folder {out} is not empty and not an earlier saerl export"):
        export_run(root, "latest", "trl", out)
    assert {p.name: (p.read_text() if p.is_file() else None) for p in out.iterdir()} == before


def test_cli_export_into_a_users_folder_is_an_error(run, tmp_path, capsys):
    root, _ = run
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    assert main(["export", "latest", "--root", str(root), "--format", "hf", "--out", str(tmp_path / "mine")]) == 2
    assert "files no saerl export writes (notes.txt)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ trl's reward, the step budget


def test_trl_export_writes_a_reward_that_judges_as_saerl_does(run, tmp_path):
    """The trl export had no reward module, and trl's stock accuracy_reward takes a `solution` column (the file has
    `answer`) and scored a final '#### 17' 0. It now writes reward.py around saerl's verifier with trl's
    signature, for plain and conversational completions, and its README passes it as reward_funcs."""
    root, _ = run
    out = tmp_path / "trl"
    export_run(root, "latest", "trl", out)
    reward = _load_module(out / REWARD, "saerl_export_trl_reward")  # as the README loads it
    score = getattr(reward, REWARD_FUNCTION)
    plain = ["so 10 + 7 = 17\n#### 17", "the total is \\boxed{17}", "#### 18", "no answer here"]
    assert score(plain, ["17"] * 4) == [1.0, 1.0, 0.0, 0.0]
    chat = [[{"role": "assistant", "content": text}] for text in plain]
    assert score(prompts=[[{"role": "user", "content": "q"}]] * 4, completions=chat, answer=["17"] * 4,
                 id=["p0"] * 4, position=[0] * 4, ramp=[0] * 4, completion_ids=[[1]] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert score(["3 of 4: \\boxed{3/4}"], ["\\frac{3}{4}"]) == [1.0]
    assert reward.TIMEOUT_S == 5.0 and "TIMEOUT_S = 2.5 " in reward_module("trl", 2.5)
    text = (out / README).read_text()
    assert f"reward = load('saerl_reward', {str(out.resolve() / REWARD)!r})" in text
    assert f"reward_funcs=[reward.{REWARD_FUNCTION}]" in text
    assert "saerl must be importable in trl's environment" in text


@pytest.mark.parametrize(("max_steps", "order"), [
    (1, "It holds the first 4 of the 16 rows the saerl order has in whole batches: saerl's RL never reads the 12 "
        "after them"),
    (4, "It holds all 16 rows the saerl order has in whole batches, once."),
    (9, "The saerl order has 16 rows in whole batches, fewer than the run reads: saerl's RL reads it again from its "
        "top, as the file does")])
def test_trl_and_verl_readmes_train_the_runs_step_budget(tmp_path, max_steps, order):
    """trl's README kept GRPOConfig's default num_train_epochs=3 (the file read three times; saerl trained
    train.max_steps steps, the first max_steps x batch_size rows), verl's gave no step budget, and its command
    failed verl's check (ppo_mini_batch_size 256 over train_batch_size). Both now state the run's train.max_steps,
    and the file is exactly the rows those steps read (the first part of the order, or the order read again), read
    once; trl's says to divide the per-device batch by the number of processes."""
    root, _ = _make_run(tmp_path / "root", config={"train.max_steps": max_steps})  # 16 rows: 4 batches of BATCH
    export_run(root, "latest", "trl", tmp_path / "trl")
    export_run(root, "latest", "verl", tmp_path / "verl")
    trl_text, verl_text = (tmp_path / "trl" / README).read_text(), (tmp_path / "verl" / README).read_text()
    said = (f"This file is the whole stream saerl's RL reads for training seed 0 of this run: train.max_steps="
            f"{max_steps} steps of {BATCH} prompts, {max_steps * BATCH} rows. A trainer reads it once, from the top.")
    assert said in trl_text and said in verl_text and order in trl_text and order in verl_text
    assert pl.read_parquet(tmp_path / "trl" / TABLE).height == pl.read_parquet(tmp_path / "verl" / TABLE).height \
        == max_steps * BATCH
    assert (f"GRPOConfig(num_generations={GENERATIONS}, per_device_train_batch_size={BATCH * GENERATIONS}, "
            f"max_steps={max_steps}, ...)") in trl_text
    assert "on N processes (GPUs) divide it by N" in trl_text
    keys = _overrides(_bash_block(verl_text))
    assert {k: keys[k] for k in ("trainer.total_training_steps", "trainer.total_epochs",
                                 "actor_rollout_ref.actor.ppo_mini_batch_size", "data.train_batch_size")} == {
        "trainer.total_training_steps": str(max_steps), "trainer.total_epochs": "1",
        "actor_rollout_ref.actor.ppo_mini_batch_size": str(BATCH), "data.train_batch_size": str(BATCH)}


def test_dapo_runs_readmes_say_refills_read_further(tmp_path):
    """Under DAPO the run's stream holds its refill rounds' rows too (stream.train_stream_length): the file holds them,
    after the steps' rows, and the README says so."""
    from saerl.config import TrainConfig

    root, record = _make_run(tmp_path / "root", config={"train.max_steps": 2, "train.algorithm": "dapo"})
    export_run(root, "latest", "hf", tmp_path / "hf")
    rows = 2 * BATCH * (1 + TrainConfig().dynamic_sampling_max_rounds)
    assert (f"{2 * BATCH} rows, and the rows after them that its dynamic-sampling refills read further "
            f"(train.algorithm=dapo): {rows} rows in all") in (tmp_path / "hf" / README).read_text()
    from datasets import load_from_disk

    assert load_from_disk(str(tmp_path / "hf"))["id"] == _rl_stream(root, record, "saerl", 0)


def test_every_format_exports_the_ramp(run, tmp_path):
    """The order's `ramp` (which climb of its epoch a row belongs to: the run's budget is the first) was dropped by
    every format: hf and trl carry it as a column, verl in extra_info. An order from before ramps reads as ramp 0."""
    from datasets import load_from_disk

    root, record = run
    orders = {f: pl.read_parquet(root / "curriculum" / "kc" / f) for f in ARM_FILES.values()}
    saerl = orders[ARM_FILES["saerl"]].sort("position")
    orders[ARM_FILES["saerl"]] = saerl.with_columns(ramp=(pl.col("position") >= 8).cast(pl.Int64))
    orders[ARM_FILES["vanilla"]] = orders[ARM_FILES["vanilla"]].drop("ramp")  # an order from curriculum v3
    record.stages["curriculum"].path = _publish(ArtifactStore(root), "curriculum", "kr", orders)
    record.stages["curriculum"].key = "kr"
    save_run(root, record)
    expected = (whole_batch_rows(orders[ARM_FILES["saerl"]], BATCH))["ramp"].to_list()
    assert set(expected) == {0, 1}
    export_run(root, "latest", "hf", tmp_path / "hf")
    assert tuple(load_from_disk(str(tmp_path / "hf")).column_names) == COLUMNS
    assert load_from_disk(str(tmp_path / "hf"))["ramp"] == expected
    export_run(root, "latest", "trl", tmp_path / "trl")
    assert pl.read_parquet(tmp_path / "trl" / TABLE)["ramp"].to_list() == expected
    export_run(root, "latest", "verl", tmp_path / "verl")
    assert pl.read_parquet(tmp_path / "verl" / TABLE)["extra_info"].struct.field("ramp").to_list() == expected
    export_run(root, "latest", "trl", tmp_path / "vanilla", arm="vanilla")
    assert set(pl.read_parquet(tmp_path / "vanilla" / TABLE)["ramp"]) == {0}


def test_an_hf_export_draws_no_progress_bar_into_a_stderr_that_is_no_terminal(run, tmp_path, monkeypatch):
    """`saerl export --format hf` wrote 'Saving the dataset (0/1 shards)' frames into a redirected stderr, whatever
    it was: datasets' bars are off while it saves unless stderr is a terminal, and as they were after."""
    import datasets
    from datasets.utils import logging as ds_logging

    import saerl.export as ex

    root, _ = run
    seen: list[bool] = []
    save = datasets.Dataset.save_to_disk
    monkeypatch.setattr(datasets.Dataset, "save_to_disk",
                        lambda self, *a, **k: (seen.append(ds_logging.is_progress_bar_enabled()), save(self, *a, **k))[1])
    ds_logging.enable_progress_bar()
    for terminal in (False, True):
        monkeypatch.setattr(ex, "stderr_is_terminal", lambda t=terminal: t)
        export_run(root, "latest", "hf", tmp_path / f"hf{terminal}")
        assert ds_logging.is_progress_bar_enabled(), "as they were after"
    assert seen == [False, True]


def test_an_export_from_a_root_with_brackets_prints_commands_that_paste_whole(tmp_path):
    """An artifact root 'runs [v2]': the export read its order and prompts files as glob patterns that matched
    nothing (polars). Into a folder with spaces, the verl README's bash block split data.train_files, the reward
    path and the sampler path at the space."""
    root, _ = _make_run(tmp_path / "runs [v2]")
    out = tmp_path / "my export"
    export_run(root, "latest", "verl", out)
    text = (out / README).read_text()
    keys = _overrides(_bash_block(text))
    assert keys["data.train_files"] == str(out.resolve() / TABLE)
    assert keys["reward.custom_reward_function.path"] == str(out.resolve() / REWARD)
    (sampler,) = re.findall(r"sampler written here, `(.*?)`", text)
    assert _overrides(sampler)["data.sampler.class_path"] == str(out.resolve() / SAMPLER)
    (top,) = re.findall(r"top level: `(.*?)`", text)
    assert _overrides(top)["custom_reward_function.path"] == str(out.resolve() / REWARD)


def test_the_trl_readme_loads_exactly_the_exported_file_from_a_folder_with_brackets(tmp_path):
    """trl's README loads the table with `load_dataset('parquet', data_files=PATH)`, and datasets reads data_files
    as a glob: from a folder 'my export [v2]' it found no file. The printed path is escaped."""
    import ast
    import re

    from datasets import load_dataset

    root, _ = _make_run(tmp_path / "root")
    out = tmp_path / "my export [v2]"
    export_run(root, "latest", "trl", out)
    (files,) = re.findall(r"data_files=('.*?'), split", (out / README).read_text())
    data = load_dataset("parquet", data_files=ast.literal_eval(files), split="train", cache_dir=str(tmp_path / "c"))
    assert data.num_rows == pl.read_parquet(out / TABLE, glob=False).height


# ------------------------------------------------------------------------------------ the run's stream, per seed


@pytest.mark.parametrize("arm", list(ARM_FILES))
def test_every_arm_exports_the_whole_stream_rl_reads_past_the_order_file(tmp_path, arm):
    """A run of 9 steps over a 16-row order (36 rows): saerl's RL draws a fresh shuffle for each extra epoch of
    vanilla and filter_only (runners.arm_order_frame), but the export wrote the curriculum stage's order file and its
    README told trainers to read it again from the top, an order saerl never trained on after row 16. Every arm's
    export is now the very stream the train stage reads, all 36 rows, and its README says to read it once."""
    from datasets import load_from_disk

    root, record = _make_run(tmp_path / "root", config={"train.max_steps": 9})
    export_run(root, "latest", "hf", tmp_path / "hf", arm=arm)
    export_run(root, "latest", "verl", tmp_path / "verl", arm=arm)
    ids = load_from_disk(str(tmp_path / "hf"))["id"]
    assert ids == _rl_stream(root, record, arm, 0) and len(ids) == 9 * BATCH
    assert pl.read_parquet(tmp_path / "verl" / TABLE)["extra_info"].struct.field("id").to_list() == ids
    file_again = _expected(root, arm) * 3  # the order file read again from the top, as the README said
    assert (ids == file_again[: len(ids)]) == (arm not in ("vanilla", "filter_only"))
    text = (tmp_path / "verl" / README).read_text()
    assert _overrides(_bash_block(text))["trainer.total_epochs"] == "1" and "reads the file once" in text
    if arm in ("vanilla", "filter_only"):
        assert f"({-(-9 * BATCH // 8)} epochs drawn, 3 more than curriculum.epochs={EPOCHS}: saerl's RL draws a fresh " \
               "shuffle for each epoch a run needs past them)" in text


@pytest.mark.parametrize("arm", list(ARM_FILES))
def test_export_seed_writes_the_stream_that_training_seed_read(tmp_path, arm, capsys):
    """A run training seeds 1 and 2: the export wrote seed 0's order, which none of its training runs read, saying
    'as training seed 0 read it', and had no way to export seed 1's. `--seed S` exports the stream seed S reads
    (runners.order_seed); the default is the run's first seed when it trains no seed 0; a seed it does not train is
    refused in one line naming those it does."""
    root, record = _make_run(tmp_path / "root", config={"train.seeds": [1, 2]})
    streams = {s: _rl_stream(root, record, arm, s) for s in (0, 1, 2)}
    assert streams[1] != streams[0] and streams[2] != streams[1]
    for seed in (1, 2):
        assert main(["export", "latest", "--root", str(root), "--format", "trl", "--arm", arm, "--seed", str(seed),
                     "--out", str(tmp_path / f"s{seed}")]) == 0
        assert f"arm {arm}, training seed {seed}: wrote" in capsys.readouterr().out
        assert pl.read_parquet(tmp_path / f"s{seed}" / TABLE)["id"].to_list() == streams[seed]
        text = (tmp_path / f"s{seed}" / README).read_text()
        assert f"arm {arm}, training seed {seed}, " in text and f"as training seed {seed} reads it" in text
        assert f"This run trains seeds 1, 2 (train.seeds); `saerl export --seed S` writes another seed's stream " \
               f"(seed {3 - seed})." in text
    done = export_run(root, "latest", "trl", tmp_path / "default", arm=arm)  # no seed 0 in this run: its first
    assert (done.run_id, done.seed) == (record.run_id, 1), "the run and the default seed, as the CLI names them"
    assert tmp_path / "default" / TABLE in done.files
    assert pl.read_parquet(tmp_path / "default" / TABLE)["id"].to_list() == streams[1]
    assert main(["export", "latest", "--root", str(root), "--format", "trl", "--arm", arm, "--seed", "0",
                 "--out", str(tmp_path / "s0")]) == 2
    err = capsys.readouterr().err
    assert f"run {record.run_id} trains no seed 0: its training seeds are 1, 2 (train.seeds)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "s0").exists()


# ------------------------------------------------------------------------------------ verl's command, verl's range


@pytest.mark.parametrize("value", ["/plain/path.parquet", "/a [v2], b=c/x.py", "it's", "q\\'s", "end\\", "end\\\\",
                                   "\\\\'", "${HOME}/x", "\\${x}", "a\\\\${x}", "\"d\" 'e' \\ f", ""])
def test_hydra_quoted_values_read_back_as_given(value):
    """A single-quoted Hydra value reads back as the text through Hydra's unescaping and OmegaConf's (_hydra_read),
    whatever backslashes, quotes and `${` it holds; and through Hydra's own parser where hydra-core is installed
    (saerl does not depend on it)."""
    assert _hydra_read(hydra_quoted(value)) == value
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf
    except ImportError:
        return
    parsed = OverridesParser.create().parse_override(f"key={hydra_quoted(value)}").value()
    assert OmegaConf.create({"key": parsed}).key == value


def test_the_verl_readme_pastes_into_hydra_and_loads_the_file_from_any_folder_name(tmp_path):
    """An export into 'ex [v2]' or 'ex,comma': the README's command failed in Hydra ("mismatched input '['",
    "Ambiguous value"), and verl's dataset reads data.train_files as a glob (datasets.load_dataset), which matched
    nothing in a bracketed folder. Each path is now quoted for Hydra and the shell, and data.train_files
    glob-escaped: every path reads back whole, and the train file's pattern finds it, and loads."""
    from datasets import load_dataset

    root, _ = _make_run(tmp_path / "root")
    out = tmp_path / "ex [v2], a=b 'q' \"dq\" back\\slash*?"
    export_run(root, "latest", "verl", out)
    text = (out / README).read_text()
    keys = _overrides(_bash_block(text))
    (sampler,) = re.findall(r"sampler written here, `(.*?)`", text)
    (top,) = re.findall(r"top level: `(.*?)`", text)
    keys |= _overrides(sampler) | _overrides(top)
    here = out.resolve()
    for key, name in (("reward.custom_reward_function.path", REWARD), ("custom_reward_function.path", REWARD),
                      ("data.sampler.class_path", SAMPLER)):
        assert keys[key] == str(here / name), key
    assert glob.glob(keys["data.train_files"]) == [str(here / TABLE)]
    data = load_dataset("parquet", data_files=keys["data.train_files"], split="train", cache_dir=str(tmp_path / "c"))
    assert data.num_rows == pl.read_parquet(out / TABLE, glob=False).height


def test_verl_readme_and_sampler_name_the_releases_that_take_a_custom_sampler(run, tmp_path):
    """They said the sampler was for 'verl 0.7 and earlier', but verl before 0.5.0 has no custom samplers (and
    0.8.0 removed them): the export's README, its sampler module and saerl's README name 0.5.0 to 0.7.x."""
    root, _ = run
    export_run(root, "latest", "verl", tmp_path / "verl")
    text = (tmp_path / "verl" / README).read_text()
    assert VERL_SAMPLER_RANGE == "verl 0.5.0 to 0.7.x"
    assert f"{VERL_SAMPLER_RANGE} (custom samplers came in verl 0.5.0, and 0.8.0 removed them) also take the " \
           "sampler written here" in text
    assert (tmp_path / "verl" / SAMPLER).read_text().count(VERL_SAMPLER_RANGE) == 1
    project_readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert VERL_SAMPLER_RANGE in project_readme and "verl 0.7 and earlier" not in project_readme
