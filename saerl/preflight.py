"""What is checked before a run starts, and the errors that name the fix (no Prefect here).

:func:`check_runnable` is the plan (saerl.pipeline.plan) a run will follow, refusing up front what would fail at a
later stage, after hours of extraction and training: a path the locale cannot name, the SAE's fields at odds with
sae.source, no held-out set, a data or held-out file that is missing or lacks a mapped field, and (through
:func:`check_loaders`, for the stage runs not stored yet) a model folder or hub model that cannot load, vLLM or GPUs
that are not there, an extract.layer out of range, a local or pretrained SAE that does not fit, a length limit over
a model's positions. It warns of the settings a run ignores (:func:`sae_source_unread`, :func:`unkeyed_note`). Every
entry point that runs stages calls it: the CLI, the flows, sweeps, saerl.pipeline.run_all.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any

from saerl import runners
from saerl.artifacts import ArtifactStore
from saerl.config import (
    PKG_MODEL,
    ConfigError,
    HeldOutSet,
    PipelineConfig,
    clip_problem,
    device_type,
    flatten,
    held_out_file,
    held_out_mapping,
    no_gpu_problem,
    resolve_layer,
    under,
)
from saerl.distributed import check_processes, shared_gpus_problem
from saerl.overrides import scalar_text
from saerl.pipeline import DEVICE_DEPENDENT, HELD_OUT_READERS, MODEL_STAGES, missing_file, plan, stage_runs
from saerl.stages import (
    PINNED_NEUTRAL,
    RESULT_NEUTRAL,
    SAE_SOURCE_FIELDS,
    entry_hf_split_unread,
    hub_cached_config,
    keyed_fields,
    known_depth,
    known_size,
    schema_defaults,
)

log = logging.getLogger("saerl.preflight")

NO_TOKEN_STORE = ("extract.store_tokens=false keeps no token residuals, and the sae and encode stages read them: "
                  "set extract.store_tokens=true, or stop at the extraction with --until extract (a deployment's until "
                  "parameter)")
NO_HELD_OUT = ("no held-out set to evaluate on: the evaluate stage (and the learning curve) needs one; use "
               "data.source=testbed, set eval.sets={name: file}, or stop earlier with --until curriculum (a deployment's "
               "until parameter)")
CHAT_READERS = ("label", "train", "heldout")  # stages that prompt the policy through its chat template
HUB_CHECK_TIMEOUT_S = 10.0  # seconds the up-front check of a hub model not cached here waits for the hub (hub_model_problem)
HUB_CHECKS_KEPT = 16  # the hub models whose check a process remembers


def check_model(name: str, field: str, chat: bool, revision: str | None = None) -> None:
    """Refuse a model a config field names that cannot load, before the first stage (transformers' own error came when
    a stage loaded it, never naming the field): a hub id ('org/name') that is neither in the local Hugging Face cache
    nor on a hub this machine reaches (:func:`hub_model_problem`), a local folder that does not exist (a path: it
    starts with '/', '.' or '~', or has more than one '/'), holds no config.json or no .safetensors weights (a pickled
    checkpoint alone: transformers' own error named no field), and with `chat` (the plan prompts it: it is the policy)
    a local folder whose model is no causal LM (:func:`saerl.policy_lm.not_causal_problem`: an encoder such as MiniLM
    ran every stage to training, and generated from a random LM head), whose tokenizer has no chat template (RL's
    prompts are chat-formatted; it failed at the label stage, after extraction and the SAE) or no eos_token (trl's
    first training step failed on None), and a local folder with a file that cannot be read
    (saerl.activations.folder_load_problem: a .safetensors or .json file cut short), a tokenizer.json the tokenizers
    library cannot read (saerl.activations.tokenizer_file_problem) or weights that do not fit its config.json
    (saerl.activations.weights_config_problem: other tensor shapes or another layer count, read from the
    safetensors headers). A 'pkg:<module>' model is checked as the folder it resolves to; 'testbed' is left to its
    stage.
    in: the value, its config field, whether the plan prompts it; raises FileNotFoundError / ValueError."""
    if name == "testbed":
        return
    local = name  # the folder or hub id it names
    if name.startswith(PKG_MODEL):  # (a package not installed failed planning already: folder_stamp resolves it)
        from saerl.activations import resolve_model_path

        local = resolve_model_path(name, field)
    path = Path(local).expanduser()
    if not path.exists():
        if local.startswith(("/", ".", "~")) or local.count("/") > 1 or "\\" in local:
            raise FileNotFoundError(missing_file(f"model folder {name}", path, field)
                                    + "; a hub model is named 'org/name'")
        if problem := hub_model_problem(name, field, revision):  # a hub id
            raise ValueError(problem)
        return
    if path.is_file():  # a file of the model ('.../config.json', '.../model.safetensors') where its folder goes
        raise ValueError(f"{field}={name} is a file, not a model folder: name the folder that holds it, "
                         f"{field}={path.parent}")
    if not (path / "config.json").is_file():
        raise ValueError(f"{field}={name} is a folder without config.json, not a transformers model (a model's "
                         "save_pretrained folder holds config.json, its weights and its tokenizer)")
    if not any(path.glob("*.safetensors")):
        raise ValueError(f"{field}={name} holds no .safetensors weights: saerl loads model weights from safetensors "
                         "alone (a pickled pytorch_model.bin can run code when loaded). Fix: where you trust the "
                         "checkpoint, load it with transformers and save it with save_pretrained(DIR, "
                         "safe_serialization=True), then name DIR")
    from saerl.activations import folder_load_problem, tokenizer_file_problem, weights_config_problem

    if problem := folder_load_problem(f"{field}={name}", path):  # a weights or JSON file cut short: found when a
        raise ValueError(problem)  # stage loaded it, after a 130-line traceback naming neither the field nor the file
    if problem := tokenizer_file_problem(f"{field}={name}", path):  # a bare Exception when a stage loaded it
        raise ValueError(problem)
    if problem := weights_config_problem(f"{field}={name}", path):  # weights of other shapes or layers than
        raise ValueError(problem)  # config.json: found when a stage loaded them, or loaded with random blocks
    if chat:
        check_policy_folder(path, f"{field}={name}")


def check_policy_folder(path: Path, shown: str) -> None:
    """Refuse a local policy folder RL cannot prompt: its model is no causal LM (read from its config where
    transformers reads it without the repo's own code), its tokenizer has no chat template or no eos_token. in: the
    folder, the field as the user wrote it ('model.name_or_path=...'); raises ValueError naming the fix."""
    from saerl.policy_lm import not_causal_problem

    if (config := local_config(path)) is not None and (problem := not_causal_problem(config, shown)):
        raise ValueError(problem)
    if not has_chat_template(path):
        raise ValueError(f"{shown}: its tokenizer has no chat template (tokenizer_config.json's chat_template "
                         "or chat_template.jinja), and RL prompts the policy as a chat (trl): use a chat or instruct "
                         "model, or set tokenizer.chat_template and save_pretrained it into the folder")
    if has_eos_token(path) is False:
        raise ValueError(f"{shown}: its tokenizer has no eos_token, and RL (trl) ends each completion at it (the first "
                         "training step failed on None): set tokenizer.eos_token, e.g. to the chat template's "
                         "end-of-turn token, and save_pretrained it into the folder")


def local_config(path: Path) -> Any | None:
    """The transformers config of a local model folder, or None where transformers cannot read it alone (a model
    type of the repo's own code: its stage names the flag; a config.json it cannot parse: loading names it)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except (ValueError, OSError, KeyError, TypeError):
        return None


@functools.lru_cache(maxsize=HUB_CHECKS_KEPT)
def hub_answer(repo_id: str, revision: str | None) -> tuple[str, str] | None:
    """What the hub says of a model repo this machine has not cached: None (it has it, or answered with an error
    loading will name), or (kind, detail) with kind 'offline' (HF_HUB_OFFLINE), 'unreachable' (any transport failure;
    detail: the error), 'gated', 'missing' (no such repo, or a private one), 'revision' or 'invalid' (no repo id).
    One metadata request of at most HUB_CHECK_TIMEOUT_S, once a process (a sweep plans each child). in: repo id,
    revision (None: main)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if constants.is_offline_mode():
        return "offline", "HF_HUB_OFFLINE"
    try:
        HfApi().model_info(repo_id, revision=revision, timeout=HUB_CHECK_TIMEOUT_S)
    except GatedRepoError:
        return "gated", ""
    except RepositoryNotFoundError:
        return "missing", ""
    except RevisionNotFoundError:
        return "revision", str(revision)
    except HFValidationError:  # no request made: the value is no repo id ('my-org/bad name')
        return "invalid", ""
    except HfHubHTTPError as err:  # the hub answered, with another error: loading will say more, or succeed
        log.warning("checking %s on the hub: %s", repo_id, str(err).splitlines()[0])
    except Exception as err:  # noqa: BLE001 - any transport failure (DNS, refused, timeout, proxy) is "unreachable"
        return "unreachable", str(err)
    return None


def hub_problem(answer: tuple[str, str], shown: str, repo_id: str, local_fix: str) -> str:
    """A message for the hub's answer (:func:`hub_answer`) about a repo a config names. in: the answer, the config
    field as the user wrote it ('model.name_or_path=Qwen/...'), the repo, what to set for a local copy instead;
    out: one line naming the field and the fix."""
    from huggingface_hub import constants

    kind, detail = answer
    fix = (f"download it where the hub can be reached (`hf download {repo_id}`) and copy the Hugging Face cache "
           f"({constants.HF_HUB_CACHE}) here, or {local_fix}")
    return {
        "offline": f"{shown} is not in the local Hugging Face cache and the hub is off (HF_HUB_OFFLINE): {fix}",
        "unreachable": f"{shown} is not in the local Hugging Face cache and the hub cannot be reached ({detail}): {fix}",
        "gated": (f"{shown} is gated on the hub: accept its terms on https://huggingface.co/{repo_id}, then log in "
                  "(`hf auth login`) or set HF_TOKEN"),
        "missing": (f"{shown} is no model on the hub (or a private one: log in with `hf auth login` or set HF_TOKEN); "
                    f"check its spelling, or {local_fix}"),
        "revision": f"model.revision={detail} is no branch, tag or commit of {repo_id} on the hub: check model.revision",
        "invalid": (f"{shown} is neither a local folder nor a hub repo id (ORG/NAME of letters, digits, '-', '_', '.'): "
                    f"check its spelling, or {local_fix}"),
    }[kind]


def hub_model_problem(name: str, field: str, revision: str | None) -> str | None:
    """Why a hub model cannot load here, or None: not in the local Hugging Face cache, and the hub unreachable (offline
    mode, or no network: transformers retried for 30 s after the testbed and ingest had run, then said "couldn't
    connect to 'https://huggingface.co'", naming no field), or the hub says it has no such model, revision or access
    (:func:`hub_answer`). in: the hub id, its config field, its revision (None: main); out: the problem or None."""
    if hub_cached_config(name, revision) is not None:
        return None
    answer = hub_answer(name, revision)
    return None if answer is None else hub_problem(answer, f"{field}={name}", name,
                                                   f"name a local save_pretrained folder in {field}")


def pretrained_sae_problem(release: str, sae_id: str) -> str | None:
    """Why sae.source=pretrained cannot load sae.release / sae.sae_id here, or None: a release sae-lens does not list
    (and no hub repo), an id its release lacks (:func:`saerl.sae.release_problem`: both found by the sae stage after
    the whole extraction), or a repo neither in the local Hugging Face cache nor on a reachable hub (sae-lens retried
    for 40 s). in: release, SAE id; out: the problem or None."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    from saerl.sae import release_problem, release_repo

    if problem := release_problem(release, sae_id):
        return problem
    repo_id = release_repo(release)
    if (Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")).is_dir():  # downloaded
        return None  # before (its layout varies by release: the repo's folder, not one file of it)
    answer = hub_answer(repo_id, None)
    if answer is None or (answer[0] == "missing" and repo_id == release):  # no hub repo either: release_problem's
        return None if answer is None else release_problem(release, sae_id, hub_repo=False)
    return hub_problem(answer, f"sae.release={release} (hub repo {repo_id})", repo_id,
                       "save it with sae-lens into a folder and set sae.source=local sae.path=DIR")


def unpinned_hub_model(name: str, revision: str | None) -> str | None:
    """A warning for a policy named by hub id with no model.revision (None otherwise): artifacts are keyed by the
    name, so when the repo moves on the hub, stored extraction and label artifacts are reused beside training on
    the new weights, one run mixing two revisions unsaid. Names the commit the local Hugging Face cache holds for
    the main branch, when it holds one. in: model.name_or_path, model.revision; out: the warning or None."""
    if revision or name in ("testbed",) or name.startswith(PKG_MODEL) or Path(name).expanduser().exists():
        return None
    cached = hub_cached_config(name, None)  # <cache>/snapshots/<commit>/config.json
    sha = cached.parent.name if cached is not None else ""
    pin = f"model.revision={sha} (the commit your Hugging Face cache holds)" if sha else "model.revision=<commit sha>"
    return (f"model.name_or_path={name} is a hub id with no model.revision: stored artifacts are keyed by the name, "
            "so if the repo moves on the hub, cached extraction and labels are reused beside training on the new "
            f"weights; pin {pin}")


def has_chat_template(folder: Path) -> bool:
    """Does the tokenizer saved in `folder` carry a chat template (a chat_template.jinja file, or the chat_template
    entry of tokenizer_config.json)? in: model folder; out: the verdict."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    try:
        return bool(config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError):
        return False


def has_eos_token(folder: Path) -> bool | None:
    """Does the tokenizer saved in `folder` have an eos_token? True where tokenizer_config.json or
    special_tokens_map.json names one, else the tokenizer loaded (a tokenizer class can bring its own default, as
    GPT-2's does); None where it cannot load without the repo's own code or at all (its stage names why). in: model
    folder; out: the verdict."""
    from transformers import AutoTokenizer

    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            if json.loads((folder / name).read_text(encoding="utf-8")).get("eos_token"):
                return True
        except (OSError, ValueError, AttributeError):  # no such file, no JSON, or not an object
            continue
    try:
        return AutoTokenizer.from_pretrained(folder).eos_token is not None
    except (ValueError, OSError, KeyError, TypeError, AttributeError):
        return None


def check_vllm(device: str) -> None:
    """Refuse train.use_vllm where trl's colocated vLLM cannot run: vLLM not installed, or no CUDA device (runtime.device
    resolves to cpu). in: runtime.device; raises ValueError naming the fix."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ValueError("train.use_vllm=true but vLLM is not installed in this environment: install it (pip install "
                         "'trl[vllm]', CUDA only) or set train.use_vllm=false (rollouts through transformers' generate)")
    if device_type(device) != "cuda":
        raise ValueError(f"train.use_vllm=true needs a CUDA GPU, but runtime.device={device} resolves to cpu here: set "
                         "train.use_vllm=false, or run on a GPU machine")


def sae_source_unread(cfg: PipelineConfig) -> str | None:
    """A warning for the fields naming an SAE to load (SAE_SOURCE_FIELDS) that sae.source does not read: sae.path
    beside source 'train', which trains its own SAE and ignored the path without a word. Not refused: a sweep of
    sae.source=train,local with sae.path compares a trained SAE with a loaded one (saerl.stages.unread_fields leaves
    such fields out of the sae stage's key). in: config; out: one line naming the fields and the fix, or None."""
    sae = cfg.sae
    for source, fields in SAE_SOURCE_FIELDS.items():
        given = [f for f in fields if getattr(sae, f.split(".")[1]) is not None]
        if source != sae.source and given:
            values = " and ".join(f"{f} is {getattr(sae, f.split('.')[1])!r}" for f in given)
            return (f"{values} but sae.source is '{sae.source}', which does not read {'it' if len(given) == 1 else 'them'}"
                    f": set sae.source={source} to load that SAE, or leave {' and '.join(given)} out")
    return None


def unkeyed_settings(cfg: PipelineConfig, told: tuple[str, ...] = ()) -> list[str]:
    """The fields `cfg` sets to a value other than the schema's default that no stage run of its pipeline (the whole
    plan, whatever --until stops at: a field a later stage reads is not idle) keys (saerl.stages.keyed_fields: its
    stage ignores it under this config, saerl.stages.unread_fields, or keys it at its default, pinned_fields), in
    schema order, then each eval.sets entry's hf_split its file's reading ignores (saerl.stages.entry_hf_split_unread;
    'eval.sets.NAME.hf_split'). Left out: RESULT_NEUTRAL and PINNED_NEUTRAL fields (how to run, a stage's own
    summary), and the fields in `told` (those a warning of its own names: :func:`sae_source_unread`'s). in: config,
    the fields to leave out; out: dotted paths."""
    flat, defaults = flatten(cfg), schema_defaults()
    keyed: set[str] = set()
    for stage, _, _, variant in stage_runs(cfg):
        device = device_type(cfg.runtime.device) if stage in DEVICE_DEPENDENT else None
        keyed |= keyed_fields(cfg, stage, device, (variant or {}).get("arm"))
    out = [k for k, v in flat.items() if v != defaults[k] and k not in keyed and k not in told
           and not under(k, RESULT_NEUTRAL + PINNED_NEUTRAL)]
    if keyed & {"eval.sets"}:
        out += [f"eval.sets.{name}.hf_split" for name in cfg.eval.sets if entry_hf_split_unread(cfg, name)]
    return out


def unkeyed_note(cfg: PipelineConfig, told: tuple[str, ...] = ()) -> str | None:
    """A warning naming the settings that change nothing in a run of `cfg` (:func:`unkeyed_settings`, less `told`),
    None when there are none. in: config, the fields another warning names; out: one line naming the fields and the
    fix, or None."""
    fields = unkeyed_settings(cfg, told)
    if not fields:
        return None
    one = len(fields) == 1
    return (f"{'this setting changes' if one else 'these settings change'} nothing in this run: {', '.join(fields)} "
            f"(no stage of this config's pipeline reads {'it' if one else 'them'} under this config): leave "
            f"{'it' if one else 'them'} out, or set the config so that a stage reads {'it' if one else 'them'} (README, "
            "'What the demo does': a field not read under a config)")


def sae_source_problem(cfg: PipelineConfig) -> str | None:
    """What the sae stage would refuse after the whole extraction: sae.source=local without sae.path, or pretrained
    without sae.release and sae.sae_id. in: config; out: one line naming the fields and the fix, or None."""
    sae = cfg.sae
    if sae.source == "pretrained" and not (sae.release and sae.sae_id):
        return ("sae.source=pretrained needs sae.release and sae.sae_id (a sae-lens release and id): set both, or "
                "sae.source=train to train an SAE here")
    if sae.source == "local" and not sae.path:
        return ("sae.source=local needs sae.path (a folder with cfg.json + sae_weights.safetensors): set it, or "
                "sae.source=train to train an SAE here")
    return None


def held_out_field_fix(name: str, entry: str | HeldOutSet, err: Any) -> str:
    """The fix a held-out set's missing field adds to saerl.data's (whose data.* fix re-reads, and re-keys, the
    training data too): the entry with its own fields, and for an id field, the entry as it is with id: false (a
    file with no id column: content-hash ids, as data.id unset gives), which nothing else offers. in: the set's name,
    its eval.sets entry, the FieldNotFoundError (its .option: the mapping option whose field is missing); out: text."""
    path = held_out_file(entry)
    if err.option != "id":
        return (f" For this file alone, give it its own fields instead of changing data.*: eval.sets.{name}="
                f"{{path: {path}, prompt: F, answer: F}} (any of prompt, answer, id)")
    given = entry.model_dump(exclude_none=True) if isinstance(entry, HeldOutSet) else {"path": entry}

    def with_id(value: Any) -> str:
        return ", ".join(f"{k}: {v if k == 'id' else scalar_text(v)}" for k, v in {**given, "id": value}.items())

    return (f" For this file alone, rather than data.id (which re-ids the training data): if it has no id column, "
            f"read it without one (content-hash ids, as data.id unset gives): eval.sets.{name}={{{with_id('false')}}}; "
            f"if its ids are under another name: eval.sets.{name}={{{with_id('FIELD')}}}")


LOCAL_URI_SCHEMES = ("", "file", "sqlite")  # tracking.uri schemes naming a local file or folder (none: a path)
UTF8_FIX = "run under a UTF-8 locale (e.g. LANG=C.UTF-8) or with PYTHONUTF8=1"  # what makes any path nameable


def path_fields(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """The config's fields that name a local file or folder a run opens, with their values: runtime.artifact_root,
    data.path (data.source: file), each eval.sets file, the model and SAE fields (model.name_or_path,
    extract.model, sae.path with sae.source: local; a hub id is ASCII, so a value it cannot encode names a folder)
    and a local tracking.uri (a path, file: or sqlite: URI, percent-decoded). in: config; out: [(field, value)]."""
    from urllib.parse import unquote, urlsplit

    out = [("runtime.artifact_root", cfg.runtime.artifact_root)]
    if cfg.data.source == "file" and cfg.data.path:
        out.append(("data.path", cfg.data.path))
    for name, entry in cfg.eval.sets.items():
        out.append((f"eval.sets.{name}.path", entry.path) if isinstance(entry, HeldOutSet) else
                   (f"eval.sets.{name}", entry))
    out.append(("model.name_or_path", cfg.model.name_or_path))
    if cfg.extract.model:
        out.append(("extract.model", cfg.extract.model))
    if cfg.sae.source == "local" and cfg.sae.path:
        out.append(("sae.path", cfg.sae.path))
    if cfg.tracking.uri and urlsplit(cfg.tracking.uri).scheme in LOCAL_URI_SCHEMES:
        out.append(("tracking.uri", unquote(cfg.tracking.uri)))
    return out


def unencodable_path_problem(cfg: PipelineConfig) -> str | None:
    """The first path field (:func:`path_fields`) this process cannot hand the OS: its file-name encoding
    (sys.getfilesystemencoding(): ascii under LC_ALL=C without UTF-8 mode, latin-1 under a latin-1 locale) lacks a
    character of it, which the YAML config read as UTF-8. Such a path failed as a bare codec error from deep inside a
    run's start, or as a false 'data file ... does not exist'. in: config; out: one line naming the field, its
    value, the encoding and the fix (UTF8_FIX), or None."""
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    for field_name, value in path_fields(cfg):
        try:
            value.encode(encoding, errors)
        except UnicodeEncodeError:
            return (f"{field_name} {value!r} cannot be named to the filesystem in this locale's encoding "
                    f"({encoding}): {UTF8_FIX}")
    return None


def check_paths_encodable(cfg: PipelineConfig) -> None:
    """Refuse a config whose path fields this process cannot hand the OS (:func:`unencodable_path_problem`), before
    anything opens one. in: config; raises a ConfigError."""
    if problem := unencodable_path_problem(cfg):
        raise ConfigError(problem)


def _sae_problem(cfg: PipelineConfig, stages: set[str]) -> str | None:
    """What would fail the sae or encode stage of a run planning `stages`: no token residuals stored for them
    (NO_TOKEN_STORE: found after the whole extraction, in the sae stage) or, with the sae stage, the fields naming
    its SAE at odds with sae.source (:func:`sae_source_problem`). in: config, planned stage names; out: the problem
    or None."""
    if not cfg.extract.store_tokens and stages & {"sae", "encode"}:
        return NO_TOKEN_STORE
    return sae_source_problem(cfg) if "sae" in stages else None


def _ignored_notes(cfg: PipelineConfig, stages: set[str]) -> list[str]:
    """The warnings of the settings a run planning `stages` ignores: with the sae stage, the SAE fields its source
    does not read (:func:`sae_source_unread`), then the fields no planned key reads (:func:`unkeyed_note`), less
    those the first names. in: config, planned stage names; out: the lines, in order."""
    notes: list[str] = []
    told: tuple[str, ...] = ()  # fields a warning of their own names
    if "sae" in stages and (unread := sae_source_unread(cfg)):
        notes.append(unread)
        told = tuple(f for fields in SAE_SOURCE_FIELDS.values() for f in fields)
    if note := unkeyed_note(cfg, told):
        notes.append(note)
    return notes


def _late_stage_problem(cfg: PipelineConfig, stages: set[str]) -> str | None:
    """What would fail the train stage (:func:`saerl.config.clip_problem`; train.num_processes > 1 under Dask on
    GPUs, where the runs would share them: saerl.distributed.shared_gpus_problem) or heldout and evaluate (no
    held-out set: data other than the testbed's and no eval.sets, NO_HELD_OUT) of a run planning `stages`.
    in: config, planned stage names; out: the first problem or None."""
    if "train" in stages and (problem := clip_problem(cfg.train) or shared_gpus_problem(
            cfg.train.num_processes, cfg.runtime.device, cfg.runtime.task_runner, cfg.runtime.dask_address)):
        return problem
    if stages & {"heldout", "evaluate"} and cfg.data.source != "testbed" and not cfg.eval.sets:
        return NO_HELD_OUT
    return None


def _check_data_file(cfg: PipelineConfig) -> None:
    """Refuse a data.path (data.source: file) that does not exist or lacks a mapped field (saerl.data.check_mapping,
    from its header). in: config; raises FileNotFoundError / saerl.data.IngestError."""
    from saerl.data import check_mapping

    if cfg.data.source != "file" or not cfg.data.path:
        return
    if not (path := Path(cfg.data.path).expanduser()).exists():
        raise FileNotFoundError(missing_file(f"data file {cfg.data.path}", Path(cfg.data.path), "data.path"))
    check_mapping(cfg.data, path)


def _check_held_out_set(cfg: PipelineConfig, name: str, entry: str | HeldOutSet) -> None:
    """Refuse eval.sets entry `name` when its file does not exist, lacks the prompt / answer / id field (read with
    the data mapping, labels optional; the fix: :func:`held_out_field_fix`), cannot be read, or has no usable row
    (saerl.runners.check_held_out_rows). in: config, the set's name and entry; raises FileNotFoundError /
    saerl.data.IngestError."""
    from saerl.data import FieldNotFoundError, IngestError, check_mapping

    path = held_out_file(entry)
    if not path.exists():
        raise FileNotFoundError(missing_file(f"held-out set {path}", path, f"eval.sets.{name}"))
    try:
        check_mapping(held_out_mapping(cfg.data, entry), path, labels_optional=True)
    except FieldNotFoundError as err:
        raise IngestError(f"held-out set eval.sets.{name} ({path}), read with the data mapping and its own "
                          f"fields: {err}{held_out_field_fix(name, entry, err)}") from err
    except IngestError as err:  # an empty or unreadable file: no field fixes it
        raise IngestError(f"held-out set eval.sets.{name} ({path}), read with the data mapping and its own "
                          f"fields: {err}") from err
    runners.check_held_out_rows(cfg, name, entry)  # no usable row: refused at the train stage, after curriculum


def check_runnable(cfg: PipelineConfig, until: str | None = None,
                   warn: bool = True) -> list[tuple[str, tuple[str, ...]]]:
    """plan(cfg, until), refusing a run that would fail at its last stage, before hours of extraction and
    training: the sae or encode stage without token residuals (extract.store_tokens off) or with the fields naming
    its SAE at odds with sae.source (:func:`sae_source_problem`), heldout or evaluate with no
    held-out set (data other than the testbed's and no eval.sets), a data.path that does
    not exist or lacks a mapped field (every plan starts with ingest), a HELD_OUT_READERS stage with an eval.sets file that
    does not exist (their keys hash it), lacks the prompt / answer / id field (read with the data mapping, labels
    optional; for an id field data.id names, the fix names the entry's id: false: :func:`held_out_field_fix`) or
    has no usable row (the train stage found it, after the curriculum: saerl.runners.check_held_out_rows ingests its
    first rows, and the whole file only when none of those is usable). The files' fields are read from their headers
    (saerl.data.check_mapping). First, a path field the locale's file-name encoding cannot write
    (:func:`check_paths_encodable`). Every entry point that runs stages calls it (CLI, flows, sweeps, run_all). With
    `warn`, it warns of the settings the run ignores (:func:`sae_source_unread`, :func:`unkeyed_note`); a check made
    before the flow that checks again (the CLI's, a sweep's of its children) passes False, so a run warns once.
    in: config, last stage, whether to warn; out: the plan."""
    check_paths_encodable(cfg)  # before any of them is opened
    stages = plan(cfg, until)
    names = {s for s, _ in stages}
    if problem := _sae_problem(cfg, names):
        raise ValueError(problem)
    for note in _ignored_notes(cfg, names) if warn else ():
        log.warning(note)
    if problem := _late_stage_problem(cfg, names):
        raise ValueError(problem)
    _check_data_file(cfg)
    if names & set(HELD_OUT_READERS):  # their keys hash the held-out files
        for name, entry in cfg.eval.sets.items():
            _check_held_out_set(cfg, name, entry)
    check_loaders(cfg, until, warn)
    return stages


def _unstored(cfg: PipelineConfig, until: str | None) -> set[str]:
    """The stages of plan(cfg, until) with a run whose artifact is not stored (sizes checked, no hashing here).
    in: config, last stage; out: stage names."""
    from saerl.sweep import planned_keys

    store = ArtifactStore(Path(cfg.runtime.artifact_root).expanduser())
    return {stage for stage, runs in planned_keys(cfg, until).items()
            if any(store.problems(stage, key, hashes=False) for key in runs.values())}


def _check_runtime(cfg: PipelineConfig, todo: set[str]) -> None:
    """Refuse what the stages to compute (`todo`) need of this machine: vLLM for train.use_vllm (:func:`check_vllm`),
    a GPU for runtime.device=cuda (saerl.config.no_gpu_problem), the GPUs train.num_processes asks for
    (saerl.distributed.check_processes). in: config, stages to compute; raises ValueError."""
    if cfg.train.use_vllm and "train" in todo:
        check_vllm(cfg.runtime.device)
    if todo & set(MODEL_STAGES) and (problem := no_gpu_problem(cfg.runtime.device)):
        raise ValueError(problem)  # found deep in the extract stage's first model load ("Torch not compiled with CUDA")
    if "train" in todo:
        check_processes(cfg.train.num_processes, cfg.runtime.device, cfg.train.algorithm)


def _check_models(cfg: PipelineConfig, todo: set[str]) -> None:
    """Refuse a model the stages to compute (`todo`) load that cannot load (:func:`check_model`: the policy, with its
    chat template where a stage prompts it, warning of a hub policy with no pinned revision; extract.model) and an
    extract.layer out of range of a model whose depth is at hand (saerl.stages.known_depth). in: config, stages to
    compute; raises ValueError / FileNotFoundError."""
    prompted = bool(todo & set(CHAT_READERS))
    if prompted or ("extract" in todo and not cfg.extract.model):  # the policy is loaded
        check_model(cfg.model.name_or_path, "model.name_or_path", prompted, cfg.model.revision)
        if note := unpinned_hub_model(cfg.model.name_or_path, cfg.model.revision):
            log.warning("%s", note)
    if "extract" in todo and cfg.extract.model:
        check_model(cfg.extract.model, "extract.model", False)
    if "extract" in todo and (depth := known_depth(cfg, hub_cache=True)) is not None:
        resolve_layer(cfg.extract.layer, depth)  # an extract.layer out of range: refused when the model had loaded


def _sae_load_problem(cfg: PipelineConfig, todo: set[str]) -> str | None:
    """What would fail the sae stage's load, when it is to compute: a pretrained release / id the hub does not hold
    (:func:`pretrained_sae_problem`), a local SAE that does not load or is of another width than the model's, where
    known (saerl.sae.local_sae_problem; found after extraction had run), an SAE to train whose sae.k is not below its
    width, where the model's hidden size is known (saerl.sae.dense_topk_problem). in: config, stages to compute;
    out: the problem or None."""
    if "sae" not in todo:
        return None
    if cfg.sae.source == "pretrained" and cfg.sae.release and cfg.sae.sae_id:
        return pretrained_sae_problem(cfg.sae.release, cfg.sae.sae_id)
    if cfg.sae.source == "local" and cfg.sae.path:
        from saerl.sae import local_sae_problem

        width = known_size(cfg, "hidden_size", hub_cache=True)
        return local_sae_problem(Path(cfg.sae.path).expanduser(), width=width)  # the width checked up front
    if cfg.sae.source == "train" and (width := known_size(cfg, "hidden_size", hub_cache=True)) is not None:
        from saerl.sae import dense_topk_problem

        return dense_topk_problem(cfg.sae, width)  # found after the whole extraction, in the sae stage
    return None


def check_loaders(cfg: PipelineConfig, until: str | None = None, warn: bool = True) -> None:
    """Refuse, before the first stage, what would fail when a stage to compute loads its model: train.use_vllm where
    vLLM cannot run (:func:`check_vllm`; found when the first training run started, after extraction and labels),
    train.num_processes above the GPUs torch sees on a CUDA device (saerl.distributed.check_processes; found as the
    first training run started),
    runtime.device=cuda where torch sees no GPU (saerl.config.no_gpu_problem; a traceback from the first model the
    extract stage moved), and
    a model folder that cannot load (:func:`check_model`; found when a stage loaded it, never naming the field), an
    extract.layer out of range and a local SAE of another width where the model's config is at hand (the testbed
    LM, a local folder, a pkg: model's folder, a hub model in the local Hugging Face cache:
    saerl.stages.known_size), and a length limit over such a model's positions (:func:`length_problems`: refused, or
    with `warn` warned of, as it says). Only the stage runs whose artifact is not stored count (a rerun whose every training run is cached needs neither vLLM
    nor the policy's folder); with runtime.dask_address the workers load the models, on their machines: nothing is
    checked here. in: config, last stage; raises ValueError / FileNotFoundError."""
    if cfg.runtime.dask_address:
        return
    todo = _unstored(cfg, until)
    _check_runtime(cfg, todo)
    _check_models(cfg, todo)
    refusals, warnings_ = length_problems(cfg, todo)
    if refusals:
        raise ValueError("; and ".join(refusals))
    for note in warnings_ if warn else ():
        log.warning("%s", note)
    if problem := _sae_load_problem(cfg, todo):
        raise ValueError(problem)


def known_context(cfg: PipelineConfig, policy: bool) -> Any:
    """The position limit and kind (saerl.policy_lm.Context) of the policy (`policy`) or of the model the extract
    stage reads, where known without loading anything: the testbed LM's testbed.max_len (a Llama: rotary), else its
    config.json at hand (saerl.stages.known_config, the hub cache and pkg: folders included); None otherwise."""
    from saerl.policy_lm import ROTARY, Context, model_context
    from saerl.stages import known_config

    if cfg.model.name_or_path == "testbed" and (policy or cfg.extract.model is None):
        return Context(cfg.testbed.max_len, ROTARY)
    raw = known_config(cfg, hub_cache=True, policy=policy)
    return None if raw is None else model_context(raw)


def length_problems(cfg: PipelineConfig, todo: set[str]) -> tuple[list[str], list[str]]:
    """The length limits at odds with a model's position limit (:func:`known_context`), found before the first stage
    rather than deep in a run: extract.max_length over the positions of an extract model with learned positions is
    refused (MiniLM's forward pass fails on the first chunk holding a longer prompt, after hours of extraction; a
    rotary model reads on past them, and a cap over its context is harmless where the prompts are short, as the
    testbed's 160-position LM under the default 512); a completion limit (train.max_completion_length for the label
    and train stages, eval.max_new_tokens for heldout) that leaves no position for a prompt is refused for a policy
    with learned positions (generation past them fails with an IndexError naming no setting) and warned of for one
    with rotary or unknown positions (it runs on, past them). Each prompt is checked as its stage starts
    (saerl.policy_lm.context_fit_notes). in: config, the stages to compute; out: (refusals, warnings)."""
    from saerl.policy_lm import LEARNED

    refusals: list[str] = []
    warned: list[str] = []
    if "extract" in todo and (ctx := known_context(cfg, policy=False)) is not None \
            and ctx.kind == LEARNED and cfg.extract.max_length > ctx.positions:
        field = "extract.model" if cfg.extract.model else "model.name_or_path"
        refusals.append(f"extract.max_length={cfg.extract.max_length} is over the {ctx.positions} positions of the "
                        f"extract model ({field}={cfg.extract.model or cfg.model.name_or_path}), whose positions are "
                        f"learned: the first chunk holding a prompt longer than {ctx.positions} tokens would fail in "
                        f"its forward pass (a tensor-size error); lower extract.max_length to {ctx.positions} or less")
    limits = {}  # field -> limit, of the generating stages to compute
    if todo & {"label", "train"}:
        limits["train.max_completion_length"] = cfg.train.max_completion_length
    if "heldout" in todo and cfg.eval.max_new_tokens is not None:
        limits["eval.max_new_tokens"] = cfg.eval.max_new_tokens
    elif "heldout" in todo:
        limits["train.max_completion_length"] = cfg.train.max_completion_length  # eval.max_new_tokens unset
    if not limits or (ctx := known_context(cfg, policy=True)) is None:
        return refusals, warned
    for field, limit in limits.items():
        if limit < ctx.positions:
            continue
        shown = f"{field}={limit} leaves no room for a prompt in the policy's {ctx.positions} positions " \
                f"(model.name_or_path={cfg.model.name_or_path})"
        fix = (f"lower {field} below {ctx.positions} minus the longest chat-templated prompt's tokens, or use a "
               "policy with a longer context")
        if ctx.kind == LEARNED:
            refusals.append(f"{shown}, whose positions are learned: a completion that long fails generation with "
                            f"'IndexError: index out of range in self'; {fix}")
        else:
            warned.append(f"{shown}: a completion that runs that long is written at positions past those it was "
                          f"trained on; {fix}")
    return refusals, warned
