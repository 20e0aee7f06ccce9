"""SAE stage (obtain a sae-lens SAE for the extracted layer) and encode stage (sparse per-prompt codes).

An SAE comes from one of three sources, behind :func:`obtain_sae`: a sae-lens pretrained release
(``SAE.from_pretrained``, needs hub access), a local sae-lens folder (``SAE.load_from_disk``), or one
trained here with sae-lens's ``SAETrainer`` on a seeded random token sample of the activation store
(content tokens only: never a prompt's head, see :mod:`saerl.activation_store`).
Whatever the source, the SAE is saved in sae-lens format in ``out_dir`` and scored on held-out tokens. An outside SAE
trained on TransformerLens's centred residual stream (``center_writing_weights`` in its metadata) is fed each token's
residual less its mean over d_model, in the report as in the codes (:func:`sae_input`).

``codes.zarr`` (P prompts, K = min(encode_top_k, d_sae)), one group per pooling in ``sae.encode_pool``::

    attrs                d_sae, top_k, pools, chunk_rows, content (settings hash), previous, fingerprint
    ids                  str     [P]
    <pool>/feature_ids   int32   [P, K]   top-K pooled features per prompt, strongest first; -1 = empty slot
    <pool>/values        float16 [P, K]   their pooled activations (0 in empty slots)

Codes are pooled over each prompt's content tokens (the rows after its head; head rows are not encoded).
Max pooling keeps each feature's strongest firing in the prompt (what the numbers are: level, operand size);
mean pooling weights a feature by the share of the prompt's tokens it fires on (what the prompt is phrased
as: its template). One pass over the token codes writes every pooling, and each property model reads the one
it is configured for (``score.cluster_pool``, ``score.model_pool``), so switching is a scoring rerun only.

Rows are chunked like the activation store's prompt-chunks (one Zarr chunk each), so encoding resumes
and shards per chunk exactly like extraction, and memory is bounded by one chunk plus one encode batch.
sae-lens is imported inside functions: it pulls in transformer-lens (~10 s) and most callers never need it.
"""

from __future__ import annotations

import functools
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import zarr
from tqdm.auto import tqdm

from saerl.activation_store import (
    Activations,
    chunk_ranges,
    content_mask,
    fingerprint_after,
    kept_or_chained,
    open_activations,
)
from saerl.artifacts import (
    ChunkLog,
    file_sha256,
    files_fault,
    loader_said,
    tensor_shapes,
    unreadable_files,
    while_wanted,
)
from saerl.config import SAEConfig, stable_hash
from saerl.testbed import LM_FOLDER

CODES_NAME = "codes.zarr"
CLOSEST_SHOWN = 3  # the closest releases or SAE ids a refusal of sae.release / sae.sae_id names
REPORT_NAME = "sae_report.json"
# the report's fields sae_report.json leaves out: a wall-clock time, other in every build of the same key (the manifest's
# `report` keeps it, and the stage's metrics: MLflow's work_seconds), so the artifact's files are the same bytes
UNFILED_REPORT = ("seconds",)
BAR_LOSS_EVERY = 10  # SAE training steps between refreshes of the bar's losses (each reads them off the device)
SAE_CFG = "cfg.json"  # the config file of a sae-lens folder (its keys sorted here: :func:`sort_cfg`)


class SAEShapeError(ValueError):
    """The SAE's input width does not match the residual width of the extracted layer."""


def check_width(d_in: int, act: Activations, origin: str) -> None:
    """Raise SAEShapeError unless the SAE's d_in equals the store's d_model."""
    if d_in != act.d_model:
        raise SAEShapeError(
            f"SAE {origin} has d_in={d_in} but layer {act.meta.layer} of {act.meta.model} has width "
            f"d_model={act.d_model}. Fix: use an SAE trained on this model's residual stream (sae.release/"
            f"sae.sae_id or sae.path), set extract.model/extract.layer to the SAE's model, or set sae.source: train.")


# hook names of the residual stream after a block, as sae-lens releases and saerl name them: (pattern, offset),
# the block whose output the hook reads = the number in the name + offset (resid_pre of block N is block N-1's
# output, which is what extract.layer N-1 reads: hidden_states[N])
RESIDUAL_HOOKS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"^blocks\.(\d+)\.hook_resid_post$"), 0), (re.compile(r"^blocks\.(\d+)\.hook_resid_pre$"), -1),
    (re.compile(r"^model\.layers\.(\d+)$"), 0), (re.compile(r"^layer\.(\d+)\.output$"), 0))


def hook_block(hook_name: str) -> int | None:
    """The block whose output (the residual stream after it) an SAE's hook reads, or None when the hook is not
    one of the residual-stream names of RESIDUAL_HOOKS (an attention or MLP output, a transcoder's input, ...).
    in: the SAE's metadata hook_name; out: block index (-1 = the embeddings) or None."""
    for pattern, offset in RESIDUAL_HOOKS:
        m = pattern.match(hook_name)
        if m:
            return int(m.group(1)) + offset
    return None


# a testbed policy's folder, <artifact root>/testbed/<key>/LM_FOLDER (saerl.runners.policy_path): its path moves with
# the root, its stage and key do not
TESTBED_STAGE = "testbed"


def model_identity(name: str) -> str:
    """The name a model is compared by whatever root it is read from: 'testbed:<key>' for a testbed policy's folder,
    named relative to the root ('testbed/<key>/lm': saerl.activation_store.model_reference) or, by an older saerl,
    by its absolute path (<root>/testbed/<key>/lm: an SAE trained on a root that was copied or moved names the old
    root's path), else the name as it is (a hub id or a folder). in: a model id or path; out: the name compared."""
    parts = Path(name).parts
    if len(parts) >= 3 and parts[-3] == TESTBED_STAGE and parts[-1] == LM_FOLDER:
        return f"{TESTBED_STAGE}:{parts[-2]}"
    return name


def check_hook(hook_name: str | None, model_name: str | None, act: Activations, origin: str,
               refuse: bool = True) -> list[str]:
    """Does an outside SAE read what extraction stored, the residual stream after block act.meta.layer? A width
    check alone passes an SAE of another layer, or of an attention output as wide as the residual. Raises
    SAEShapeError when its hook reads another block or is not a residual-stream hook (`refuse`, sae.hook_check:
    refuse), else returns that as a note; a model name other than the store's is a note either way (an SAE can be
    used on a model of the same family deliberately; a testbed policy is compared by its key: model_identity). in: the SAE's metadata hook_name and model_name, the
    store, where the SAE came from, refuse; out: notes (also one when the SAE names no hook: not checked)."""
    layer = act.meta.layer
    notes = [] if hook_name else [f"SAE {origin} names no hook in its metadata: whether it reads block {layer}'s "
                                  "residual stream, which extraction stored, is not checked"]
    block = hook_block(hook_name) if hook_name else layer
    if block != layer:
        what = ("not the residual stream after a block" if block is None else "the embeddings (before block 0)"
                if block < 0 else f"the residual stream after block {block}")
        problem = (f"SAE {origin} reads hook {hook_name!r}, {what}, but extraction stored the residual stream after "
                   f"block {layer} of {act.meta.model}")
        fix = (f"set extract.layer={block}" if block is not None and block >= 0 else
               "use an SAE of a block's output (hook_resid_post, or hook_resid_pre of a later block)")
        if refuse:
            raise SAEShapeError(f"{problem}. Fix: {fix}, or set sae.hook_check=warn to use it anyway.")
        notes.append(f"{problem} (sae.hook_check=warn)")
    if model_name and model_identity(model_name) != model_identity(act.meta.model):
        notes.append(f"SAE {origin} was trained on model {model_name!r}, the activations come from {act.meta.model!r}")
    return notes


# TransformerLens's from_pretrained options an SAE's metadata may name (model_from_pretrained_kwargs: how its model
# was loaded for training) that leave every residual stream as transformers computes it: folded layer-norm weights,
# value biases and factored attention matrices change the weights after the stream, not the stream; the rest are
# placement and precision. center_writing_weights is the one option read (centres_inputs); any other is noted.
RESIDUAL_NEUTRAL_KWARGS = frozenset({"fold_ln", "center_unembed", "fold_value_biases",
                                     "refactor_factored_attn_matrices", "device", "n_devices", "move_to_device",
                                     "dtype", "torch_dtype", "first_n_layers", "center_writing_weights"})


def pretrained_kwargs(sae: Any) -> dict[str, Any]:
    """The TransformerLens from_pretrained options an SAE's metadata says its model was loaded with
    (model_from_pretrained_kwargs; {} when it names none, as an SAE trained here). in: a sae-lens SAE; out: a dict."""
    return dict(getattr(getattr(sae.cfg, "metadata", None), "model_from_pretrained_kwargs", None) or {})


def centres_inputs(sae: Any) -> bool:
    """True if the SAE was trained on TransformerLens's residual stream with center_writing_weights (its metadata's
    model_from_pretrained_kwargs: sae-lens's gpt2-small-res-jb and others): every write to that stream is centred
    over d_model, so each token's residual is the transformers residual less its mean over d_model (exactly, for a
    LayerNorm model, whose layers read the stream through a mean-subtracting norm). The sae and encode stages feed
    such an SAE centred residuals (sae_input). in: a sae-lens SAE; out: the flag."""
    return bool(pretrained_kwargs(sae).get("center_writing_weights"))


def sae_input(sae: Any, x: torch.Tensor) -> torch.Tensor:
    """The token rows x [n, d_in] as `sae` reads them: centred per row (its mean over d_in subtracted) when it
    centres_inputs, else x itself; the mean and difference are taken in float32 (x may be the fp16 token sample).
    in: the SAE, rows; out: rows of the same shape and dtype."""
    if not centres_inputs(sae):
        return x
    wide = x.float()
    return (wide - wide.mean(dim=-1, keepdim=True)).to(x.dtype)


def processing_notes(sae: Any, act: Activations, origin: str) -> list[str]:
    """What an outside SAE's metadata says about the model's processing that extraction did not do alike: its
    residuals centred (centres_inputs: done here, said), TransformerLens options that would change the residual
    stream and are not applied (not RESIDUAL_NEUTRAL_KWARGS), and a BOS token before every training text
    (metadata prepend_bos) where the extracted prompts do not all begin with one same token (no BOS nor chat-template
    head: each prompt's own first token then holds the attention sink that the SAE saw only on BOS). in: the SAE,
    the store, where the SAE came from; out: notes ([] when nothing differs)."""
    notes = []
    kwargs = pretrained_kwargs(sae)
    if centres_inputs(sae):
        notes.append(f"SAE {origin} was trained on TransformerLens's residual stream with center_writing_weights "
                     "(metadata model_from_pretrained_kwargs): each token's residual is centred (its mean over d_model "
                     "subtracted) before it is encoded, which is that stream for a LayerNorm model")
    if other := sorted(set(kwargs) - RESIDUAL_NEUTRAL_KWARGS):
        notes.append(f"SAE {origin} was trained on a model loaded with TransformerLens options "
                     f"{ {k: kwargs[k] for k in other} } (metadata model_from_pretrained_kwargs), which extraction "
                     "does not apply: its codes may read activations unlike its training ones")
    if getattr(getattr(sae.cfg, "metadata", None), "prepend_bos", None) and act.n_prompts > 1:
        first = act.group["input_ids"].get_orthogonal_selection(act.offsets[:-1].astype(np.int64))
        if len(np.unique(first)) > 1:
            notes.append(f"SAE {origin} was trained on texts that begin with a BOS token (metadata prepend_bos), but "
                         f"the extracted prompts of {act.meta.model} begin with their own first tokens (no BOS nor "
                         "chat-template head): that token holds the attention sink, which the SAE saw on BOS alone; "
                         "use a tokenizer that adds BOS, or extract.chat_template=true with one that has a template")
    return notes


def token_batches(x: torch.Tensor, batch: int, seed: int, device: str) -> Iterator[torch.Tensor]:
    """Endless stream of float32 [batch, d] rows of x on `device`, reshuffled (seeded) every pass; drops a
    ragged tail. x may stay fp16 on the CPU: only one batch at a time is converted and moved."""
    gen = torch.Generator().manual_seed(seed)
    size = min(batch, len(x))
    while True:
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x) - size + 1, size):
            yield x[perm[start: start + size]].to(device, torch.float32)


def dense_topk_problem(cfg: SAEConfig, d_in: int) -> str | None:
    """What is wrong with a TopK SAE to train whose sae.k is not below its width (sae.expansion x the model's hidden
    size `d_in`): every latent would fire on every token, an autoencoder with no sparse code, which sae-lens trains
    without a word (saerl capped k at the width, also without a word). in: the SAE config, the model's hidden size;
    out: the problem, naming the fields and a fix, or None (k below the width, or another architecture)."""
    d_sae = cfg.expansion * d_in
    if cfg.architecture != "topk" or cfg.k < d_sae:
        return None
    return (f"sae.k={cfg.k} is not below the width of the SAE to train, {d_sae} latents (sae.expansion="
            f"{cfg.expansion} x the extracted model's hidden size {d_in}): a TopK SAE keeping every latent on every "
            f"token is no sparse code; lower sae.k below {d_sae}, or raise sae.expansion")


def train_sae(cfg: SAEConfig, x: torch.Tensor, meta: dict[str, Any], device: str = "cpu", progress: bool = True) -> Any:
    """Train a TopK (or standard L1) SAE of width expansion * d_in on token rows x [n, d] with sae-lens's
    SAETrainer; returns the trained training-SAE (activation scaling already folded into its weights). Raises
    ValueError for a TopK k not below the width (:func:`dense_topk_problem`)."""
    from sae_lens import (
        SAETrainer,
        StandardTrainingSAE,
        StandardTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    torch.manual_seed(cfg.seed)
    d_in = x.shape[1]
    common: dict[str, Any] = {"d_in": d_in, "d_sae": cfg.expansion * d_in, "device": device,
                              "normalize_activations": cfg.normalize}
    if problem := dense_topk_problem(cfg, d_in):
        raise ValueError(problem)
    if cfg.architecture == "topk":
        sae: Any = TopKTrainingSAE(TopKTrainingSAEConfig(k=cfg.k, **common))
    else:
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(l1_coefficient=cfg.l1_coefficient, **common))
    for key, value in meta.items():
        sae.cfg.metadata[key] = value
    batch = min(cfg.batch_size, len(x))
    trainer_cfg = SAETrainerConfig(
        total_training_samples=len(x) * cfg.train_epochs, train_batch_size_samples=batch, lr=cfg.lr,
        lr_end=cfg.lr, device=device, dead_feature_window=cfg.dead_feature_window,
        n_batches_for_norm_estimate=math.ceil(len(x) / batch), logger=LoggingConfig(log_to_wandb=False))
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=token_batches(x, batch, cfg.seed, device))
    steady_bar(trainer)
    with trainer_progress(progress):
        return trainer.fit()


def steady_bar(trainer: Any) -> None:
    """Make sae-lens's training bar move every step. SAETrainer moves it (and replaces its "Training SAE" label by
    the step's losses) once per 100 steps only, so a run of under 100 steps ended at 0% and the demo's 461 steps at
    87%, labelled "400| mse_loss: ...". Here each step advances it by its samples (ending at the total), the label
    stays, and the losses are its postfix every BAR_LOSS_EVERY steps. in: an SAETrainer; out: None (its bar
    update replaced)."""
    samples = trainer.cfg.train_batch_size_samples

    def update(step_output: Any, pbar: Any, update_interval: int = 1) -> None:
        pbar.update(min(samples, max(0, pbar.total - pbar.n)))
        if trainer.n_training_steps % BAR_LOSS_EVERY == 0:
            pbar.set_postfix_str(" | ".join(f"{name}: {torch.as_tensor(value).item():.4g}" for name, value in
                                            step_output.losses.items()), refresh=False)

    trainer._update_pbar = update


@contextmanager
def trainer_progress(on: bool) -> Iterator[None]:
    """sae-lens's SAETrainer.fit always draws tqdm bars (no option to turn them off): its training bar and the
    activation scaler's norm-estimate bar. With `on` False, both modules' tqdm is swapped for a disabled one
    while the block runs."""
    if on:
        yield
        return
    import sae_lens.training.activation_scaler as scaler_module
    import sae_lens.training.sae_trainer as trainer_module

    modules = (trainer_module, scaler_module)
    originals = [module.tqdm for module in modules]
    for module, original in zip(modules, originals, strict=True):
        module.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        for module, original in zip(modules, originals, strict=True):
            module.tqdm = original


@torch.no_grad()
def evaluate_sae(sae: Any, x: torch.Tensor, batch: int) -> dict[str, Any]:
    """On held-out token rows x [n, d] (any dtype/device; moved batch by batch): fraction of variance
    explained (1 - SSE / total SS about the mean), mean L0 per token, features that never fire."""
    dev = sae.W_enc.device
    batches = [x[s: s + batch] for s in range(0, len(x), batch)]
    mean = sum(b.to(dev, torch.float64).sum(0) for b in batches) / max(1, len(x))
    sse = tot = l0 = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=dev)
    for xb in (b.to(dev, torch.float32) for b in batches):
        feats = sae.encode(xb)
        sse += float(((xb - sae.decode(feats)) ** 2).sum(dtype=torch.float64))
        tot += float(((xb.double() - mean) ** 2).sum())
        active = feats > 0
        l0 += float(active.sum())
        fired |= active.any(0)
    dead = int((~fired).sum())
    return {"variance_explained": round(1.0 - sse / tot, 4) if tot > 0 else 0.0,
            "l0": round(l0 / max(1, len(x)), 3), "dead_features": dead,
            "dead_frac": round(dead / sae.cfg.d_sae, 4), "n_eval_tokens": len(x)}


# a block of weights_only_loads swaps torch.load process-wide: one block at a time (re-entrant for a nested one)
_WEIGHTS_ONLY_LOCK = threading.RLock()


@contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every torch.load inside the block is weights_only=True (torch's restricted unpickler: tensors and plain
    containers, no code run), whatever its caller passes and whatever the environment says (an explicit
    weights_only=True outranks TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD). sae-lens 6.54 reads several pretrained releases
    from .pt/.pth pickles with a bare ``torch.load`` looked up on the torch module at call time (loaders
    connor_rob_hook_z, goodfire, deepseek_r1, qwen_scope, dictionary_learning_1), a full unpickle once
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set. The swap is process-wide, so blocks run one at a time under a module
    lock (a pretrained SAE loads once per sae stage; a torch.load on another thread meanwhile is weights-only too),
    and torch's own load is back when the block ends; the environment is never touched."""
    with _WEIGHTS_ONLY_LOCK:
        load = torch.load

        @functools.wraps(load)
        def weights_only(*args: Any, **kwargs: Any) -> Any:
            return load(*args, **(kwargs | {"weights_only": True}))

        torch.load = weights_only
        try:
            yield
        finally:
            torch.load = load


def release_repo(release: str) -> str:
    """The hub repo a sae-lens release loads from: its entry in sae-lens's pretrained directory, or the release
    itself (sae-lens also reads a hub repo id as a release). in: sae.release; out: a repo id."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    entry = get_pretrained_saes_directory().get(release)
    return entry.repo_id if entry is not None else release


def cached_repo_commit(repo_id: str) -> str | None:
    """The commit of a hub repo's main branch that the local Hugging Face cache holds (refs/main), which a sae-lens
    pretrained SAE has just been loaded from, for the sae manifest (saerl.artifacts.HUB_COMMIT); None when the cache
    holds no such ref. in: repo id (:func:`release_repo`); out: the commit or None."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    ref = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") / "refs" / "main"
    try:
        return ref.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def release_problem(release: str, sae_id: str, hub_repo: bool = True) -> str | None:
    """Why sae-lens's directory rules out sae.release / sae.sae_id (read offline, from the installed sae-lens), or
    None: an id its listed release lacks, or (hub_repo=False: the hub has no repo of that name either) a release it
    does not list. Each names the closest entries. in: release, SAE id, whether an unlisted release may be a hub
    repo; out: one line naming the field and the fix, or None."""
    import difflib

    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    entry = directory.get(release)
    if entry is None:
        if hub_repo and "/" in release:  # 'org/name': a hub repo, maybe (the hub answers that)
            return None
        close = difflib.get_close_matches(release, list(directory), n=CLOSEST_SHOWN, cutoff=0.5)
        return (f"sae.release={release} is no release sae-lens lists and no hub repo"
                + (f"; closest: {', '.join(close)}" if close else "") + " (sae-lens's pretrained_saes.yaml lists them)")
    if sae_id in entry.saes_map:
        return None
    close = difflib.get_close_matches(sae_id, list(entry.saes_map), n=CLOSEST_SHOWN, cutoff=0.5)
    return (f"sae.sae_id={sae_id} is no SAE of release {release}" + (f"; closest: {', '.join(close)}" if close else "")
            + f" ({len(entry.saes_map)} ids, e.g. {next(iter(entry.saes_map))})")


def load_pretrained_sae(release: str, sae_id: str, device: str) -> Any:
    """A sae-lens pretrained SAE (SAE.from_pretrained), its weights read from safetensors or, for a release
    sae-lens reads from a pickle (.pt), through torch's weights-only loader alone (:func:`weights_only_loads`: safe
    with other loads on other threads at the same time). A pickle that holds more than weights is refused with what
    to do. in: release, SAE id, device; out: the SAE."""
    import pickle

    from sae_lens import SAE

    try:
        with weights_only_loads():
            return SAE.from_pretrained(release, sae_id, device=device)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"sae.release={release} sae.sae_id={sae_id}: its weights file is a pickle holding more than tensors, and "
            "saerl reads pickled weights only with torch's weights-only loader (a pickle can run code when loaded). "
            "Fix: load it once yourself where you trust it, save it with sae-lens (sae.save_model(DIR) writes "
            "cfg.json + sae_weights.safetensors) and set sae.source=local sae.path=DIR; or use another release. "
            f"torch said: {' '.join(str(err).split())[:300]}") from err


def _source_sae(cfg: SAEConfig, device: str) -> tuple[Any, str]:
    """Load a pretrained (hub: :func:`load_pretrained_sae`) or local SAE (safetensors) as the config names it;
    returns (sae, origin text)."""
    from sae_lens import SAE

    if cfg.source == "pretrained":
        if not (cfg.release and cfg.sae_id):
            raise ValueError("sae.source=pretrained needs sae.release and sae.sae_id (a sae-lens release and id)")
        return load_pretrained_sae(cfg.release, cfg.sae_id, device), f"{cfg.release}/{cfg.sae_id}"
    if not cfg.path:
        raise ValueError("sae.source=local needs sae.path (a folder with cfg.json + sae_weights.safetensors)")
    folder = Path(cfg.path).expanduser()  # '~/saes/x', as the up-front check and the keys read it
    if problem := local_sae_problem(folder, known_architectures()):
        raise ValueError(problem)
    try:
        return SAE.load_from_disk(folder, device=device), cfg.path
    except Exception as err:  # the load alone (a folder the checks above passed)
        if not files_fault(err):  # out of memory, an API change: not the files', so not said to be
            raise
        raise ValueError(sae_load_problem(folder, err)) from err


JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
              type(None): "null"}  # how JSON names what json.loads gave (a cfg.json that is no object)


def sae_load_problem(folder: Path, err: BaseException) -> str:
    """What sae-lens's error loading a local SAE folder means, as one line naming sae.path, the file and the fix:
    a file that cannot be read (saerl.artifacts.unreadable_files: cut short), else cfg.json and the weights
    disagree. in: the folder, the loader's error; out: the message."""
    said = loader_said(err)
    if bad := unreadable_files(folder):
        return (f"sae.path={folder}: {', '.join(bad)} cannot be read ({said}). Fix: copy the SAE folder again (a "
                "copy or download cut short leaves such a file), or load the SAE where it is whole and re-save it "
                "with sae.save_model(DIR)")
    return (f"sae.path={folder}: {SAE_WEIGHTS} does not load with its cfg.json ({said}): cfg.json's architecture, "
            "d_in or d_sae is not the weights'. Fix: put back the cfg.json saved with these weights, or load the SAE "
            "with sae-lens and re-save it with sae.save_model(DIR)")


def known_architectures() -> frozenset[str]:
    """The SAE architectures the installed sae-lens loads (its class registry)."""
    import sae_lens  # noqa: F401 - importing sae_lens registers its SAE classes
    from sae_lens.registry import SAE_CLASS_REGISTRY

    return frozenset(SAE_CLASS_REGISTRY)


def local_sae_problem(folder: Path, architectures: frozenset[str] | None = None,
                      width: int | None = None) -> str | None:
    """What keeps a local SAE folder (sae.path) from loading, said with its field and a fix, or None: a missing
    folder, no cfg.json (or one that is not a JSON object), no sae_weights.safetensors (saerl loads SAE weights
    from safetensors alone: a pickle (.pt) can run code when loaded) or one that cannot be read (cut short), a d_in
    or d_sae that is no positive integer or not the shape of the weights' decoder W_dec or encoder W_enc (a
    transcoder's d_in, which its decoder does not show), an architecture not in
    `architectures`
    (None: not checked; sae-lens's own error was a bare KeyError), an input width (cfg.json d_in) other than the
    extracted model's hidden size `width` (None, or a d_in that is no integer: not checked; the stage's
    check_width reads the store). in: the folder, the known architectures, the model's width; out: the problem or
    None."""
    if not folder.is_dir():
        return f"sae.path={folder} is not a folder (check sae.path: a sae-lens folder of cfg.json + {SAE_WEIGHTS})"
    try:
        cfg = json.loads((folder / "cfg.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return (f"sae.path={folder}: its cfg.json is missing or unreadable ({type(err).__name__}); a sae-lens SAE "
                f"folder holds cfg.json + {SAE_WEIGHTS} (sae.save_model(DIR) writes both)")
    return (_cfg_object_problem(folder, cfg) or _weights_file_problem(folder)
            or _architecture_problem(folder, cfg, architectures) or _size_fields_problem(folder, cfg)
            or _weight_shapes_problem(folder, cfg) or _width_problem(folder, cfg, width))


def _cfg_object_problem(folder: Path, cfg: Any) -> str | None:
    """A local SAE folder's cfg.json that holds no JSON object ('[1, 2]' was reported as "architecture None"), said
    with the file and the fix, or None. in: the folder, cfg.json as json.loads read it; out: the problem or None."""
    if isinstance(cfg, dict):
        return None
    return (f"sae.path={folder}: {folder / 'cfg.json'} holds a JSON {JSON_KINDS.get(type(cfg), type(cfg).__name__)}, "
            "not a JSON object of the SAE's settings (architecture, d_in, d_sae, ...). Fix: put back the cfg.json "
            f"saved with {SAE_WEIGHTS} (sae.save_model(DIR) writes both)")


def _weights_file_problem(folder: Path) -> str | None:
    """A local SAE folder without sae_weights.safetensors (saerl loads SAE weights from safetensors alone), or with
    one that cannot be read (cut short: sae-lens's error named neither the field nor the file), said with the fix,
    or None. in: the folder; out: the problem or None."""
    if not (folder / SAE_WEIGHTS).is_file():
        return (f"sae.path={folder} holds no {SAE_WEIGHTS}: saerl reads SAE weights from safetensors alone (a pickled "
                ".pt can run code when loaded). Fix: where you trust the weights, load them with sae-lens and save "
                "them with sae.save_model(DIR)")
    if SAE_WEIGHTS in unreadable_files(folder):
        return (f"sae.path={folder}: {SAE_WEIGHTS} cannot be read (safetensors refuses its header: a copy or "
                "download cut short). Fix: copy the SAE folder again, or load the SAE where it is whole and re-save "
                "it with sae.save_model(DIR)")
    return None


def _architecture_problem(folder: Path, cfg: dict[str, Any], architectures: frozenset[str] | None) -> str | None:
    """cfg.json's architecture (unnamed: 'standard') where the installed sae-lens does not load it, said with those
    it knows, or None. in: the folder, cfg.json, the known architectures (None: not checked); out: the problem or
    None."""
    arch = cfg.get("architecture", "standard")
    if architectures is None or arch in architectures:
        return None
    return (f"sae.path={folder}: cfg.json names architecture {arch!r}, which the installed sae-lens does not "
            f"load (it knows {', '.join(sorted(architectures))})")


def _size_fields_problem(folder: Path, cfg: dict[str, Any]) -> str | None:
    """cfg.json's first d_in or d_sae that is written and is no positive integer ('"d_in": "32"' failed in torch:
    "must be tuple of ints, not str"), said with the number to write, or None. in: the folder, cfg.json; out: the
    problem or None."""
    for size in ("d_in", "d_sae"):
        value = cfg.get(size)
        if size in cfg and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            number = value.strip() if isinstance(value, str) and value.strip().isdigit() else "N"
            return (f"sae.path={folder}: cfg.json's {size} is {value!r}, and it must be a positive integer (the "
                    f"SAE's {'input width' if size == 'd_in' else 'number of features'}). Fix: write it as a number, "
                    f'"{size}": {number}, or put back the cfg.json saved with {SAE_WEIGHTS}')
    return None


def _weight_shapes_problem(folder: Path, cfg: dict[str, Any]) -> str | None:
    """The first of the weights' decoder W_dec and encoder W_enc whose shape is not the one cfg.json's sizes give
    ((d_sae, d_in), a transcoder's (d_sae, d_out); (d_in, d_sae)), said with both and the fix, or None (a tensor
    the file lacks, or a size cfg.json does not write, is not checked). in: the folder, cfg.json; out: the problem
    or None."""
    out = "d_out" if "d_out" in cfg else "d_in"  # a transcoder's decoder writes d_out, not d_in
    shapes = weight_shapes(folder / SAE_WEIGHTS)
    for tensor, role, sizes in (("W_dec", "decoder", ("d_sae", out)), ("W_enc", "encoder", ("d_in", "d_sae"))):
        said = tuple(cfg.get(size) for size in sizes)
        if tensor in shapes and None not in said and shapes[tensor] != said:
            sizes_said = ", ".join(f"{size}={cfg[size]}" for size in sizes)
            return (f"sae.path={folder}: cfg.json says {sizes_said}, and "
                    f"{SAE_WEIGHTS} holds {'a' if role == 'decoder' else 'an'} {role} {tensor} of shape "
                    f"{list(shapes[tensor])} ({' x '.join(sizes)}): \"size mismatch for {tensor}\" once the sae stage "
                    "loaded it. Fix: put back the cfg.json saved with these weights (sae.save_model(DIR) writes both)")
    return None


def _width_problem(folder: Path, cfg: dict[str, Any], width: int | None) -> str | None:
    """cfg.json's d_in where it is not the extracted model's hidden size, said with the fixes, or None. in: the
    folder, cfg.json, the model's width (None, or a d_in that is no integer: not checked); out: the problem or
    None."""
    d_in = cfg.get("d_in")
    if width is None or not isinstance(d_in, int) or d_in == width:
        return None
    return (f"the SAE at sae.path={folder} reads vectors of d_in={d_in}, and the model extraction reads has "
            f"hidden size {width}. Fix: use an SAE trained on this model's residual stream (sae.path, or "
            "sae.release/sae.sae_id), set extract.model to the SAE's model, or set sae.source=train")


SHAPED_WEIGHTS = ("W_enc", "W_dec")  # the tensors whose shapes cfg.json's sizes give: (d_in, d_sae), (d_sae, d_in)


def weight_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """The shapes of a sae-lens weights file's encoder W_enc, (d_in, d_sae), and decoder W_dec, (d_sae, d_in; a
    transcoder's d_out), read from its header alone; those it holds ({} where it cannot be read; a tied SAE holds no
    W_enc). in: the .safetensors file; out: {name: shape}."""
    return {k: shape for k, shape in tensor_shapes(weights).items() if k in SHAPED_WEIGHTS}


def sort_cfg(path: Path) -> None:
    """Rewrite a sae-lens cfg.json with its keys sorted: sae-lens writes them in the order of a Python set, which
    moves with PYTHONHASHSEED, so the same SAE saved twice differed in bytes (and in its artifact's hashes).
    in: the file; out: none (the file rewritten, the same JSON object)."""
    path.write_text(json.dumps(json.loads(path.read_text(encoding="utf-8")), indent=2, sort_keys=True),
                    encoding="utf-8")


def obtain_sae(cfg: SAEConfig, activations_path: str | Path, out_dir: str | Path, device: str = "cpu",
               progress: bool = True) -> dict[str, Any]:
    """Get the SAE cfg.source names, check its width against the store, save it in sae-lens format in
    out_dir (cfg.json + sae_weights.safetensors, readable by SAE.load_from_disk; a trained SAE's metadata names the
    model as the store does, a model inside the artifact root relative to it) and return a report
    (also written to out_dir/sae_report.json, less UNFILED_REPORT): source, d_in, d_sae, variance_explained, l0, dead
    features on held-out tokens, token counts and seconds."""
    from sae_lens import SAE

    act = open_activations(activations_path)
    out = Path(out_dir)
    started = time.perf_counter()
    notes: list[str] = []
    if cfg.source != "train":  # a wrong width or layer fails before any token is read
        sae, origin = _source_sae(cfg, device)
        check_width(sae.cfg.d_in, act, origin)
        meta = sae.cfg.metadata
        notes = check_hook(getattr(meta, "hook_name", None), getattr(meta, "model_name", None), act, origin,
                           refuse=cfg.hook_check == "refuse") + processing_notes(sae, act, origin)
    n_avail = min(cfg.train_tokens, act.n_content_tokens)
    n_held = max(1, round(n_avail * cfg.heldout_frac))  # the same held-out rows whatever the source
    sample = act.sample_tokens(n_avail if cfg.source == "train" else n_held, cfg.seed, dtype=np.float16)
    train, held = torch.from_numpy(sample[n_held:]), torch.from_numpy(sample[:n_held])  # fp16, CPU
    if cfg.source == "train":
        meta = {"model_name": act.meta.model, "hook_name": f"layer.{act.meta.layer}.output"}
        train_sae(cfg, train, meta, device, progress).save_inference_model(out)
        origin = "trained here"
    else:
        held = sae_input(sae, held)  # the tokens as this SAE reads them, for its scale and its report alike
        if (note := fold_expected_average(sae, held)) is not None:
            notes.append(note)
        sae.save_model(out)
    sort_cfg(out / SAE_CFG)
    sae = SAE.load_from_disk(out, device=device)
    check_width(sae.cfg.d_in, act, origin)
    report = {"source": cfg.source, "origin": origin, "architecture": sae.cfg.architecture(),
              "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae, "k": getattr(sae.cfg, "k", None),
              "n_train_tokens": len(train) if cfg.source == "train" else 0,
              **evaluate_sae(sae, held, cfg.batch_size), "seconds": round(time.perf_counter() - started, 2),
              "notes": notes}
    filed = {k: v for k, v in report.items() if k not in UNFILED_REPORT}
    (out / REPORT_NAME).write_text(json.dumps(filed, indent=1), encoding="utf-8")
    return report


@torch.no_grad()
def fold_expected_average(sae: Any, x: torch.Tensor) -> str | None:
    """Make an outside SAE trained on scaled inputs read the raw activations. sae-lens's normalize_activations
    'expected_average_only_in' means the SAE was trained on activations scaled to a mean L2 norm of sqrt(d_in);
    `SAE.from_pretrained` folds the release's factor into the weights where it knows one, `SAE.load_from_disk`
    never does, and the SAE then encodes raw activations tens of times off its scale (the codes are noise, the
    variance explained near 0 or negative). The factor is estimated here as sae-lens's trainer does,
    sqrt(d_in) / mean token norm, on `x`, and folded (W_enc * f, W_dec / f, b_dec / f; normalize_activations
    becomes 'none'). in: the SAE, activations (tokens x d_in) of the extracted layer; out: a note with the factor,
    or None for an SAE that asks for no such scaling (left as it is)."""
    if getattr(sae.cfg, "normalize_activations", "none") != "expected_average_only_in":
        return None
    mean_norm = float(x.float().norm(dim=-1).mean())
    if not mean_norm > 0:
        raise ValueError("the outside SAE scales its inputs to their mean norm (normalize_activations "
                         "expected_average_only_in), and the extracted activations sampled for it are all zero; "
                         "check extract.layer and the extracted store")
    factor = sae.cfg.d_in ** 0.5 / mean_norm
    sae.fold_activation_norm_scaling_factor(factor)
    return (f"the SAE scales its inputs to a mean norm of sqrt(d_in) (normalize_activations "
            f"expected_average_only_in) and carried no factor: {factor:.4g} (sqrt({sae.cfg.d_in}) / the mean norm "
            f"of {len(x)} extracted tokens) was folded into its weights, as sae-lens's trainer estimates it")


def prompt_groups(lengths: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive [lo, hi) prompt groups of at most `budget` tokens each (a longer prompt goes alone)."""
    groups, lo, used = [], 0, 0
    for i, n in enumerate(lengths):
        if i > lo and used + n > budget:
            groups.append((lo, i))
            lo, used = i, 0
        used += int(n)
    return groups + [(lo, len(lengths))] if len(lengths) else groups


def pool_codes(codes: torch.Tensor, lengths: torch.Tensor, how: str) -> torch.Tensor:
    """Pool token codes [t, d_sae] of consecutive prompts with `lengths` (summing to t) into
    [n_prompts, d_sae]: max or mean over each prompt's tokens."""
    return torch.segment_reduce(codes, "max" if how == "max" else "mean", lengths=lengths, axis=0)


def _prepare_codes(store: Path, act: Activations, d_sae: int, k: int, cfg: SAEConfig, sae_dir: Path) -> str:
    """Create codes.zarr (or keep one with the same content: store fingerprint, SAE, k, poolings, to resume);
    returns its fingerprint. A replaced store's fingerprint chains from the one it replaces, as the activation
    store's does, so chunk-log records of an earlier store never count as done, even after a change and its undo;
    a folder left unreadable by a replacement killed mid-delete is replaced too."""
    weights = file_sha256(sae_dir / SAE_WEIGHTS)
    content = stable_hash([act.meta.fingerprint, d_sae, k, list(cfg.encode_pool), weights,
                           json.loads((sae_dir / "cfg.json").read_text(encoding="utf-8"))])
    old, previous = kept_or_chained(  # a store that predates the "content" attr: its fingerprint is its content
        store, content, lambda g: g.attrs.get("fingerprint"),
        lambda g: g.attrs.get("content", g.attrs["fingerprint"]) if g.attrs.get("fingerprint") else None)
    if old is not None:
        return str(old.attrs["fingerprint"])
    fp = fingerprint_after(previous, content)
    create_codes_store(store, act.n_prompts, d_sae, k, cfg.encode_pool, act.meta.chunk_rows, fp, ids=act.ids,
                       content=content, previous=previous)
    return fp


def create_codes_store(store: Path, n_prompts: int, d_sae: int, k: int, pools: str | Sequence[str],
                       chunk_rows: int, fingerprint: str, ids: Sequence[str] | None = None, content: str = "",
                       previous: str = "") -> zarr.Group:
    """Lay out an empty codes.zarr (the layout above, one group per pooling in `pools`) for n_prompts rows in
    Zarr chunks of chunk_rows, and return it open for writing. `ids`, when given, are written before the
    attrs: a store whose attrs carry the fingerprint is complete up to its chunks (resume keys on it).
    Without ids, write_codes_chunk fills them chunk by chunk (memory stays flat for any n_prompts). `content`
    (the settings' hash, default the fingerprint) and `previous` (the fingerprint of the store this one replaces,
    written first, so a replacement cut short still chains from it) go into the attrs too."""
    pools = [pools] if isinstance(pools, str) else list(pools)
    group = zarr.open_group(store, mode="w")
    group.attrs["previous"] = previous
    ids_array = group.create_array("ids", shape=(n_prompts,), chunks=(chunk_rows,), dtype=str)
    if ids is not None:
        ids_array[:] = np.array(ids, dtype=str)
    for pool in pools:
        group.create_array(f"{pool}/feature_ids", shape=(n_prompts, k), chunks=(chunk_rows, k), dtype=np.int32,
                           fill_value=-1)
        group.create_array(f"{pool}/values", shape=(n_prompts, k), chunks=(chunk_rows, k), dtype=np.float16,
                           fill_value=0)
    group.attrs.update({"d_sae": d_sae, "top_k": k, "pools": pools, "chunk_rows": chunk_rows,
                        "content": content or fingerprint, "fingerprint": fingerprint})
    return group


def write_codes_chunk(group: zarr.Group, lo: int, feature_ids: np.ndarray, values: np.ndarray,
                      ids: Sequence[str] | None = None, pool: str | None = None) -> None:
    """Write rows [lo, lo + len(feature_ids)) of one pooling's codes (default: the store's first pooling):
    top-K feature ids (int32, -1 = empty slot), their pooled values (stored float16, clamped to its largest
    finite value as extract clamps residuals: a stored inf would make every score-stage model fail) and, when
    given, the rows' prompt ids."""
    hi = lo + len(feature_ids)
    pool = pool or group.attrs["pools"][0]
    if ids is not None:
        group["ids"][lo:hi] = np.array(ids, dtype=str)
    group[f"{pool}/feature_ids"][lo:hi] = feature_ids.astype(np.int32)
    fp16_max = float(np.finfo(np.float16).max)
    group[f"{pool}/values"][lo:hi] = np.clip(values, -fp16_max, fp16_max).astype(np.float16)


SAE_WEIGHTS = "sae_weights.safetensors"  # the weights file of a sae-lens folder (SAE.load_from_disk)


@functools.lru_cache(maxsize=1)
def _load_sae_folder(folder: str, device: str, stamp: tuple[int, int]) -> Any:
    """SAE.load_from_disk(folder, device), kept for the next call with the same folder, device and weights stamp."""
    from sae_lens import SAE

    return SAE.load_from_disk(folder, device=device)


def load_sae_folder(folder: str | Path, device: str) -> Any:
    """The SAE in a sae-lens folder on `device`, loaded once per process for as long as it is the last one asked for
    and its weights file is unchanged (size and modification time): the encode shards a Dask worker runs one after
    another (runtime.shards_per_worker) load it once, not once each. Only for inference: the SAE is shared between
    callers. in: folder, device; out: the SAE."""
    weights = Path(folder) / SAE_WEIGHTS
    st = weights.stat() if weights.exists() else None
    stamp = (st.st_size, st.st_mtime_ns) if st is not None else (0, 0)
    return _load_sae_folder(str(Path(folder).resolve()), device, stamp)


def encode_codes(activations_path: str | Path, sae_dir: str | Path, cfg: SAEConfig, out_dir: str | Path,
                 chunk_log: ChunkLog, device: str = "cpu", chunk_ids: Sequence[int] | None = None,
                 progress: bool = True, on_chunk_done: Callable[[int], None] | None = None,
                 keep_going: Callable[[], bool] | None = None, reuse_sae: bool = False) -> dict[str, Any]:
    """Encode every content token (each prompt's rows after its head) with the SAE in sae_dir, pool per prompt
    (each pooling in cfg.encode_pool), keep the top cfg.encode_top_k features per prompt and pooling in
    out_dir/codes.zarr. Chunk by chunk (default: all chunks), skipping chunks chunk_log records; a rerun resumes;
    `keep_going()`, asked before each chunk, ends the run early when False (a shard whose fan-out stopped);
    `reuse_sae`: take the SAE from :func:`load_sae_folder` (a Dask worker's shards after the first skip the load),
    else load it for this call alone. Returns n_prompts, n_tokens (content tokens encoded), chunks_run (how many
    chunks this call encoded), seconds, d_sae, top_k and mean_nonzero (kept features per prompt), of the chunks run."""
    from sae_lens import SAE

    act = open_activations(activations_path)
    sae = load_sae_folder(sae_dir, device) if reuse_sae else SAE.load_from_disk(sae_dir, device=device)
    check_width(sae.cfg.d_in, act, str(sae_dir))
    k = min(cfg.encode_top_k, sae.cfg.d_sae)
    store = Path(out_dir) / CODES_NAME
    fp = _prepare_codes(store, act, sae.cfg.d_sae, k, cfg, Path(sae_dir))
    group = zarr.open_group(store, mode="r+")
    chunk_log.plan(len(act.ranges), fp)  # every chunk of the store, whichever this call runs (saerl status)
    wanted = range(len(act.ranges)) if chunk_ids is None else chunk_ids
    todo = [c for c in wanted if not (chunk_log.is_done(c) and chunk_log.get(c).get("fingerprint") == fp)]
    started, n_tok, nonzero, ran = time.perf_counter(), 0, 0, []
    for c in tqdm(while_wanted(todo, keep_going), total=len(todo), desc="encode", unit="chunk", disable=not progress):
        ran.append(c)
        lo, hi = act.ranges[c]
        lengths = np.diff(act.offsets[lo: hi + 1])
        starts = np.concatenate([[0], np.cumsum(lengths)])
        content, keep = lengths - act.heads[lo:hi], content_mask(lengths, act.heads[lo:hi])
        tokens = act.chunk_tokens(c)
        parts: dict[str, list[torch.Tensor]] = {pool: [] for pool in cfg.encode_pool}
        with torch.no_grad():
            for a, b in prompt_groups(content, cfg.encode_batch_tokens):
                rows = slice(starts[a], starts[b])
                x = sae_input(sae, torch.from_numpy(tokens[rows][keep[rows]]).to(device, torch.float32))
                lens = torch.from_numpy(content[a:b]).to(device)
                codes = sae.encode(x).float()  # a bf16/fp16 SAE: pool in float32 (numpy has no bfloat16)
                for pool in cfg.encode_pool:
                    parts[pool].append(pool_codes(codes, lens, pool))
        for pool, pooled in parts.items():
            vals, idx = torch.cat(pooled).topk(k, dim=1)
            idx[vals <= 0] = -1
            vals = vals.clamp(min=0)
            write_codes_chunk(group, lo, idx.cpu().numpy(), vals.cpu().numpy(), pool=pool)
            nonzero += int((idx >= 0).sum()) if pool == cfg.encode_pool[0] else 0
        chunk_log.mark(c, fingerprint=fp, n_tokens=int(content.sum()))
        n_tok += int(content.sum())
        if on_chunk_done is not None:
            on_chunk_done(c)
    seconds = time.perf_counter() - started
    n_prompts = sum(act.ranges[c][1] - act.ranges[c][0] for c in ran)
    return {"n_prompts": n_prompts, "n_tokens": n_tok, "chunks_run": len(ran), "seconds": round(seconds, 3),
            "d_sae": sae.cfg.d_sae, "top_k": k, "mean_nonzero": round(nonzero / max(1, n_prompts), 2)}


def open_codes(codes_path: str | Path) -> zarr.Group:
    """codes.zarr opened read-only, given the store or the folder holding it."""
    p = Path(codes_path)
    return zarr.open_group(p / CODES_NAME if (p / CODES_NAME).exists() else p, mode="r")


def kept_slots(fids: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Which top-K slots of a block [rows, K] hold a kept feature: a feature id >= 0 with a value > 0."""
    return (fids >= 0) & (vals > 0)


def load_codes_csr(codes_path: str | Path, pool: str | None = None) -> tuple[list[str], sp.csr_matrix]:
    """(ids, csr [n_prompts, d_sae] float32, column indices sorted in each row) from codes.zarr (or the folder
    holding it), for one pooling (default: the store's first): each row holds its prompt's kept pooled
    features, at most top_k nonzeros. A pooling the store lacks is a ValueError naming the fix.

    Read one Zarr row-chunk at a time, twice: the first pass counts each row's nonzeros (the CSR's indptr), the
    second fills preallocated index and value arrays, which are then sorted per row in place. Peak memory is the
    output plus one chunk, never a dense [n_prompts, top_k] array or a second copy of the output."""
    group = open_codes(codes_path)
    pools = list(group.attrs["pools"])
    pool = pool or pools[0]
    if pool not in pools:
        raise ValueError(f"the SAE codes hold the poolings {pools}, not {pool!r}: add it to sae.encode_pool "
                         f"(e.g. sae.encode_pool=[max,mean]) or read one of {pools}")
    fids_arr, vals_arr = group[f"{pool}/feature_ids"], group[f"{pool}/values"]
    n, step, d_sae = fids_arr.shape[0], fids_arr.chunks[0], int(group.attrs["d_sae"])
    blocks = chunk_ranges(n, step)
    counts = np.zeros(n, dtype=np.int64)
    for lo, hi in blocks:
        counts[lo:hi] = kept_slots(fids_arr[lo:hi], vals_arr[lo:hi]).sum(1)
    nnz = int(counts.sum())
    index = np.int32 if max(nnz, d_sae) <= np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(n + 1, dtype=index)
    np.cumsum(counts, out=indptr[1:])
    del counts
    indices, data = np.empty(nnz, dtype=index), np.empty(nnz, dtype=np.float32)
    ids: list[str] = []
    for lo, hi in blocks:
        fids, vals = fids_arr[lo:hi], vals_arr[lo:hi]
        keep = kept_slots(fids, vals)
        indices[indptr[lo]: indptr[hi]] = fids[keep]
        data[indptr[lo]: indptr[hi]] = vals[keep]
        ids += [str(x) for x in group["ids"][lo:hi]]
    csr = sp.csr_matrix((data, indices, indptr), shape=(n, d_sae), copy=False)
    csr.sort_indices()  # in place: top-K slots come strongest first
    return ids, csr
