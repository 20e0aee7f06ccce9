"""A change to a module whose code shapes a stage's artifacts must be a decision: bump the version of each stage
whose output it alters (saerl/stages.py; then every stored artifact of it is rebuilt), or re-pin the module when
it alters none (a docstring, a log line, how a plot looks). Without this, a contributor who edited
saerl/curriculum.py and forgot the bump got the old order reused, its reason saying 'same code version', and one
who bumped only the stage of the file they edited left another stage stale: curriculum.py's vanilla_order is
the train stage's vanilla order too (session 36's contributor audit).

SHAPES maps each module to the stages whose artifacts its code shapes: traced by running every stage of the smoke
config (score.difficulty_source=measured for label) and recording which saerl modules ran while each computed,
plus the paths a smoke run does not take (Dask shards: pipeline.prepare_shards; held-out files: data, in heldout and
in train's learning curve; the label stage's seeded subset: property_models) and the constants a trace does not see
(data.GOOD_QUALITY and curriculum.NO_PROBE_QUALITY in what score writes). A new module must be placed in SHAPES or
NO_ARTIFACT. A change that bumps some of a module's stages and not others is a decision about each: the failure lists
the stages whose versions stayed, since one left out is reused stale (curriculum.py changed and curriculum bumped
alone: the vanilla arm's training, keyed on no curriculum version, kept its old order)."""

from __future__ import annotations

import hashlib
import pprint
import sys
from pathlib import Path

from saerl.stages import STAGES, code_version

SAERL = Path(__file__).resolve().parents[1] / "saerl"
ALL = tuple(STAGES)
SHAPES: dict[str, tuple[str, ...]] = {
    "activation_store": ("extract", "sae", "encode", "label", "score", "properties"),
    "answers": ("train", "heldout", "evaluate"),  # eval.answer_extraction: the curve, the final evaluation, its note
    "activations": ("testbed", "extract", "sae", "encode", "label", "train", "heldout"),
    "artifacts": ALL,
    "checkpoints": ("train",),  # which checkpoint a killed run resumes from
    "config": ALL,  # its validators and defaults are what every stage's config slice holds
    "curriculum": ("score", "curriculum", "train"),  # train: vanilla_order, whole_batches; score: NO_PROBE_QUALITY
    "dapo": ("train",),
    "distributed": ("train",),  # a run of train.num_processes > 1: the ranks' spec, their result read back
    "data": ("ingest", "score", "properties", "train", "heldout", "evaluate"),  # train: its eval sets; GOOD_QUALITY
    "evaluate": ("train", "heldout", "evaluate"),
    "labels": ("label",),
    "pipeline": ("ingest", "extract", "encode"),  # data_file; prepare_shards lays out a sharded store
    "plots": ("properties", "curriculum", "train", "evaluate"),
    "policy_lm": ("testbed", "label", "train", "heldout"),
    "property_models": ("label", "score", "properties"),  # label: seeded_subset
    "report": ("evaluate",),
    "rl": ("testbed", "train"),
    "runners": ALL,
    "sae": ("sae", "encode", "score", "properties"),
    "scoring": ("score", "properties"),
    "stages": ALL,  # unread_fields, SHUFFLED_ARMS: what a runner ignores or shuffles
    "stream": ("train",),  # the training stream's length and order (moved out of rl.py: export reads it too)
    "testbed": ("testbed", "label"),
    "train_env": ("train",),  # which of the environment's settings the trainer reads (its precision, its processes)
}
# modules whose code writes no stage's artifact: orchestration, records, reading and exporting results. overrides
# turns a command line into config values, and no stage runs it: whatever values a change of its parsing gives, they
# are what the config slice holds and what the keys hash, so an artifact is never reused for other values (a change
# of config's validators, defaults or helpers can alter what a stage does with the same values: config is ALL's)
# (preflight: the checks before a run, which refuse or warn and change nothing a stage computes)
NO_ARTIFACT = ("__init__", "export", "gc", "overrides", "preflight", "privacy", "runs", "status", "sweep", "terminal",
               "tracking")
# pinned by tests/test_verify.py (REVIEWED_SOURCES) against verify.VERSION, which the code version of every stage
# that verifies carries (saerl.stages.VERIFYING)
PINNED_ELSEWHERE = ("verify",)

REPIN = "python tests/test_stage_sources.py (from the venv: it rewrites REVIEWED at the end of this file)"
MARK = "# the sources as last reviewed, with every stage's code version then (written by `python " \
    "tests/test_stage_sources.py`)\n"


def sha(module: str) -> str:
    """sha256 of saerl/<module>.py's bytes."""
    return hashlib.sha256((SAERL / f"{module}.py").read_bytes()).hexdigest()


def current() -> dict[str, dict[str, str]]:
    """What REVIEWED would be if everything now were reviewed: the stages' code versions and the sources' hashes."""
    return {"versions": {s: code_version(s) for s in ALL}, "sources": {m: sha(m) for m in sorted(SHAPES)}}


def test_every_module_is_placed():
    """A new module shapes some stage's artifacts or none: say which, so its changes are watched."""
    modules = {p.stem for p in SAERL.glob("*.py")}
    placed = [*SHAPES, *NO_ARTIFACT, *PINNED_ELSEWHERE]
    assert len(placed) == len(set(placed)), "a module is placed twice"
    assert modules == set(placed), (f"place these in tests/test_stage_sources.py (SHAPES or NO_ARTIFACT): "
                                    f"{sorted(modules - set(placed))}; remove these: {sorted(set(placed) - modules)}")
    assert all(set(stages) <= set(ALL) for stages in SHAPES.values())


def stayed(reviewed: dict[str, dict[str, str]], now: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """{module of SHAPES whose source differs from `reviewed`: the stages it shapes whose code version is the one
    `reviewed` recorded}, modules with none left out. in: REVIEWED, current(); out: that mapping."""
    versions, sources = reviewed.get("versions", {}), reviewed.get("sources", {})
    out = {}
    for m in SHAPES:
        same = [s for s in SHAPES[m] if versions.get(s) == now["versions"][s]]
        if m in sources and sources[m] != now["sources"][m] and same:
            out[m] = same
    return out


def unbumped(reviewed: dict[str, dict[str, str]], now: dict[str, dict[str, str]]) -> list[str]:
    """The changed modules (:func:`stayed`) none of whose stages changed its code version. in: REVIEWED, current();
    out: one line per module."""
    return [f"saerl/{m}.py shapes {', '.join(same)}" for m, same in stayed(reviewed, now).items() if same == list(SHAPES[m])]


def kept_versions(reviewed: dict[str, dict[str, str]], now: dict[str, dict[str, str]]) -> list[str]:
    """For each changed module (:func:`stayed`), the stages it shapes whose code version did not change (all of them
    for an unbumped module). in: REVIEWED, current(); out: one line per such module."""
    return [f"saerl/{m}.py: {', '.join(same)}" for m, same in stayed(reviewed, now).items()]


def test_a_module_that_shapes_artifacts_changes_only_with_a_decision():
    """A module's source changed while none of the stages it shapes changed its code version: its stored
    artifacts would be reused as if the code were the same. Decide: bump, or re-pin."""
    now = current()
    stale = unbumped(REVIEWED, now)
    assert not stale, (
        "changed without a stage version bump:\n  " + "\n  ".join(stale) + "\nIf the change alters what a stage "
        "writes (a number, a row, a file), bump that stage's version in saerl/stages.py and docs/design.md's stage "
        f"table; if it alters none (a docstring, a message, a plot's looks), do not. Either way, then re-pin: {REPIN}")
    kept = kept_versions(REVIEWED, now)
    assert REVIEWED == now, ("the sources or stage versions changed since they were reviewed" + (
        "; of the stages these changed modules shape, these kept their versions: bump each whose output the change "
        "alters:\n  " + "\n  ".join(kept) + "\n" if kept else "") + f"; re-pin: {REPIN}")


def test_a_change_counts_as_decided_once_a_stage_it_shapes_is_bumped():
    """curriculum.py shapes score, curriculum and train: editing it unbumped is caught; bumping train (vanilla_order
    changed) decides it; bumping curriculum alone decides it too, but the failure names score and train, which kept
    their versions; a bump of a stage it does not shape decides nothing."""
    now = {"versions": {s: "1" for s in ALL}, "sources": {m: "a" for m in SHAPES}}
    edited = {**now, "sources": {**now["sources"], "curriculum": "b"}}
    assert unbumped(now, edited) == ["saerl/curriculum.py shapes score, curriculum, train"]
    assert kept_versions(now, edited) == ["saerl/curriculum.py: score, curriculum, train"]
    assert unbumped(now, {**edited, "versions": {**now["versions"], "train": "2"}}) == []
    curriculum_bumped = {**edited, "versions": {**now["versions"], "curriculum": "2"}}
    assert unbumped(now, curriculum_bumped) == []
    assert kept_versions(now, curriculum_bumped) == ["saerl/curriculum.py: score, train"]
    assert unbumped(now, {**edited, "versions": {**now["versions"], "sae": "2"}}) != []


def repin() -> None:
    """Rewrite REVIEWED (after MARK, the end of this file) as everything is now: run it once the change is decided."""
    path = Path(__file__)
    text = path.read_text()
    head = text[: text.index(MARK) + len(MARK)] if MARK in text else text.rstrip("\n") + "\n\n\n" + MARK
    path.write_text(f"{head}REVIEWED = {pprint.pformat(current(), width=116, sort_dicts=True)}\n")
    print(f"re-pinned {len(SHAPES)} modules and {len(ALL)} stage versions in {path}", file=sys.stderr)


if __name__ == "__main__":
    repin()


# the sources as last reviewed, with every stage's code version then (written by `python tests/test_stage_sources.py`)
REVIEWED = {'sources': {'activation_store': 'd79c01decacfb05f93c463e0c5d19ad00edff5335ee9f318dc96febe8e9c0b0b',
             'activations': '305251185614be6fcb5c50c324d6c07301cd221309b785832bf254ead4d69381',
             'answers': '1e820e0781056eef744a92fe55a4a7cbe594999d307a04e5d83e031f664e9030',
             'artifacts': '1531ae18589934a5dd62f59e5be8eb09d98d7636988a3174a6bd4e252ac0096d',
             'checkpoints': '952f79e64b79843ac68dbcadba37746f0a7acd59624ec4a7649cda605260b1ad',
             'config': '35e204ebc22e7e3898d92d11f4dbe255a9e64667b40f1be63600333ce73de682',
             'curriculum': 'b13393c15ec7cac82a6efa633a9674fb1e130bb983d9d4dd5e1fbe686afc6ba0',
             'dapo': 'bd7958d0bfdac8c3bbf84b0b618855f86a331fa42e25749494105099f6c2ff7f',
             'data': 'b0944e8a6bebcb5aea11534367f53e470659ceb5c09af0af9b8550f7e0eb9cf3',
             'distributed': '4891022bd59aa76bb549c11d41ee920099db92978218d11e73298f7a279b44af',
             'evaluate': 'd9e38a3d71de5b85a859e0912afbdbb7e608a25d96f8497889702dd61819cdec',
             'labels': '7e74547ef2165d027d3bd813ce603efaa425d23552e8069c2ba9c8f4d77525d9',
             'pipeline': 'bb5a739663b7c00a529c8fc8f2afd37b43c90fde9391178645e1700dba349319',
             'plots': 'f3c453289f57b16db2ec189a65b6962fa8ea3f0240a5b883bb515faa9da46fb4',
             'policy_lm': '05a5c33421286d92e8f2043584b069786a3511e3ec46a3e38566a55a47aaf250',
             'property_models': 'd486d756fc0261047773d1eb96c69ea89c5ccb5c8679842d605326fe1c83cfd8',
             'report': 'a7a026d3c6fd65613a0756b2d1e57f59db1b69ac853ad7c7756384095e5923a2',
             'rl': 'bbf6ae4d26cac8c339f158a7c88873f690cfdfba51ff99d00555dfbd260eb72a',
             'runners': '42e6c8a68380735c35b4e258f433af60793387bc4ec5226fa044a1a3eab57bcb',
             'sae': '4b5f84ad83721f14db9c65a5feca7dfec290b7670c7d8df427496e2e2fe3ff32',
             'scoring': '82e85510b7861ff015173b09efb05513fb53228006951496ccd164a2ff20e334',
             'stages': '756712747cb10ccf186f3e96809239a0c27fa6bcb3ebea8ab00f20f7bc5ff01f',
             'stream': 'bb3c3d8def0604e5636ec26c690708ef4d4e173ce496a7e344208b0e27fca0e6',
             'testbed': '07ea2827a882147243bdb1e7088fa7c01147d30d068b1a5090d65fa4ab561a93',
             'train_env': '7ac65dc23d09eec738713f9fae77cc70a858ee26b30941dd2460f8ccfa15323e'},
 'versions': {'curriculum': '5',
              'encode': '4',
              'evaluate': '26',
              'extract': '6',
              'heldout': '4+verify7',
              'ingest': '16+verify7',
              'label': '12+verify7',
              'properties': '3',
              'sae': '6',
              'score': '15',
              'testbed': '6',
              'train': '19+verify7'}}
