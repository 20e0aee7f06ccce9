"""The testbed's tiny policy LM: its own word-piece tokenizer, a Qwen2 config, CPU pretraining, evaluation.

Tokenizer: whole words of the world are tokens; a number is split into its digits (``347`` -> ``3 ~~4 ~~7``,
``~~`` marking a continuation), so any number round-trips. (A Metaspace variant in which a digit is the same
token wherever it stands was tried and did not learn faster: docs/testbed.md.) It is saved with its class named explicitly
(``TokenizersBackend``) so ``AutoTokenizer`` does not fall back to the model type's own tokenizer class.
The model is a Llama config: transformers 5 always maps model type ``qwen2`` to ``Qwen2Tokenizer``
(``MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS``), whatever the saved tokenizer config names.
Chat template: ``<|user|> {prompt} <|assistant|>`` then the completion ``{solution} <|eos|>``; the LM is
pretrained on exactly the token sequence trl builds in RL (prompt ids, then completion ids, then EOS).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedTokenizerFast

from saerl.config import ModelConfig, TestbedConfig

logger = logging.getLogger("saerl.policy_lm")  # not `log`: the name of the loss log in this module's functions
PAD, UNK, EOS, USER, ASSISTANT = "<|pad|>", "<|unk|>", "<|eos|>", "<|user|>", "<|assistant|>"
TOKENIZER_CLASS = "TokenizersBackend"  # transformers 5's name for a plain `tokenizers`-backed tokenizer
CONT = "~~"  # word-piece continuation prefix (never appears in world text)
DIGITS = "0123456789"
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}" + USER + " {{ m['content'] }} "
    "{% else %}" + ASSISTANT + " {{ m['content'] }} " + EOS + " {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}"
)


def world_vocab(texts: list[str]) -> list[str]:
    """Sorted token list of a world: specials, digits, continuation digits, and every non-numeric word
    (numbers are spelled by digits). in: all texts; out: the vocabulary, specials first."""
    words = {w for t in texts for w in t.split() if not w.lstrip("-").isdigit()}
    words |= {"-"}
    return [PAD, UNK, EOS, USER, ASSISTANT, *DIGITS, *(CONT + d for d in DIGITS), *sorted(words)]


def build_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A word-piece tokenizer over the world's vocabulary, with the chat template. in: texts; out: tokenizer."""
    vocab = {w: i for i, w in enumerate(world_vocab(texts))}
    core = Tokenizer(models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix=CONT, max_input_chars_per_word=64))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix=CONT, cleanup=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, unk_token=UNK, eos_token=EOS,
                                  bos_token=EOS, additional_special_tokens=[USER, ASSISTANT])
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def save_tokenizer(tok: PreTrainedTokenizerFast, out_dir: Path) -> None:
    """save_pretrained, then name the class in tokenizer_config.json so AutoTokenizer rebuilds this one."""
    tok.save_pretrained(out_dir)
    path = out_dir / "tokenizer_config.json"
    conf = json.loads(path.read_text(encoding="utf-8"))
    conf["tokenizer_class"] = TOKENIZER_CLASS
    conf["padding_side"] = "left"
    path.write_text(json.dumps(conf, indent=2), encoding="utf-8")


def load_policy(model_dir: str | Path, model_cfg: ModelConfig | None = None,
                device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) from a folder, hub id or 'pkg:<module>', through the Auto classes: weights from
    safetensors only (never a pickled checkpoint), with the pinned revision, trust_remote_code and hub kernels
    exactly as `model_cfg` says (None = the defaults: no remote code, no hub kernels). The model is float32 on `device` ('auto', 'cpu',
    'cuda': runtime.device, resolved by saerl.activations.pick_device), float32 everywhere as RL trains it, so
    labels, training and evaluation read the same weights; training leaves it on the CPU ("cpu", the default)
    and trl places it. With model.stop_at_turn_end, the chat template's end-of-turn token (:func:`turn_end_id`)
    joins the generation_config's EOS ids, where trl's rollouts and :func:`stop_ids` look. A model that needs its
    own code while model.trust_remote_code is off raises RemoteCodeError naming the flag; a model that is no causal
    LM (:func:`not_causal_problem`: BERT's BertLMHeadModel loaded with a new, random LM head) a ValueError; a local
    folder whose files are damaged or disagree a FolderLoadError naming model.name_or_path (when the config's
    model is loaded) and the file (saerl.activations.folder_load_guard)."""
    from saerl.activations import (
        folder_load_guard,
        hub_kwargs,
        pick_device,
        remote_code_guard,
        resolve_model_path,
        weights_kwargs,
    )

    mcfg = model_cfg or ModelConfig()
    named = str(model_dir) == mcfg.name_or_path  # the config's policy, not a trained one (an artifact's folder)
    shown = f"model.name_or_path={model_dir}" if named else f"the policy folder {model_dir}"
    path = resolve_model_path(str(model_dir), "model.name_or_path" if named else None)
    with remote_code_guard(str(model_dir)):  # the model first: its config names any code of the repo's own
        with folder_load_guard(shown, path):
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **weights_kwargs(mcfg))
        if problem := not_causal_problem(model.config, f"the policy model {model_dir}"):
            raise ValueError(problem)
        with folder_load_guard(shown, path):
            tok = AutoTokenizer.from_pretrained(path, **hub_kwargs(mcfg))
    if (model_cfg or ModelConfig()).stop_at_turn_end:
        add_stop_id(model, turn_end_id(tok))
    return model.to(pick_device(device)), tok


def not_causal_problem(config: Any, shown: str) -> str | None:
    """Why a model cannot be the policy, or None: RL generates with it, so it must be a causal LM
    (saerl.activations.is_causal); an encoder (BERT, MiniLM) loaded as one gets bidirectional attention and a new,
    random LM head, and generates without complaint. A config naming no architecture passes unless its type is an
    encoder's or an encoder-decoder's. in: its transformers config, how to name it in the message
    ('model.name_or_path=...'); out: one line naming the fix, or None."""
    from saerl.activations import ENCODER_TYPES, is_causal, reads_both_ways

    if is_causal(config):
        return None
    if not config.architectures and not reads_both_ways(config) and not getattr(config, "is_encoder_decoder", False):
        return None  # a config.json naming no architecture (older checkpoints): nothing says it is not causal
    archs = ", ".join(config.architectures or []) or f"model type {config.model_type}"
    kind = ("an encoder" if config.model_type in ENCODER_TYPES else
            "an encoder-decoder" if getattr(config, "is_encoder_decoder", False) else "a model")
    return (f"{shown} is {kind} ({archs}), not a causal LM, and the policy must be one: RL generates with it left "
            "to right (an architecture named *ForCausalLM or *LMHeadModel, or a multimodal one with a text decoder "
            "such as Gemma3ForConditionalGeneration). An encoder's internals can still be read: set "
            "extract.model to it and keep a causal LM as model.name_or_path")


# a policy whose tokenizer reads more of the prompts' tokens as its unknown token, or finds it in more of the prompts,
# is noted
UNKNOWN_NOTE_SHARE = 0.02


def unknown_shares(raw: list[list[int]], unk: int) -> tuple[float, int]:
    """How much of some tokenized prompts is the unknown token: the share of their tokens that are `unk`, and how
    many prompts hold it at least once. A word-level tokenizer (the testbed's, BERT-like WordPiece ones) reads a whole
    Chinese sentence as one unknown token, so the token share alone (3% for 2 unreadable prompts of 10) understates
    what the policy cannot read. in: each prompt's token ids, the unknown token's id; out: (token share, prompts)."""
    total = sum(len(x) for x in raw)
    return (sum(x.count(unk) for x in raw) / total if total else 0.0), sum(unk in x for x in raw)


# how a model encodes positions, read from its config (:func:`position_kind`)
LEARNED, ROTARY, UNKNOWN_POSITIONS = "learned", "rotary", "unknown"
POSITION_LIMIT_FIELDS = ("max_position_embeddings", "n_positions")  # a config's position limit (GPT-2's: n_positions)
# config fields only a rotary (RoPE) model has: transformers 5's rope_parameters, 4's rope_theta / rope_scaling,
# GPT-J / GPT-NeoX / CodeGen's rotary_dim / rotary_pct / rotary_emb_base
ROTARY_FIELDS = ("rope_parameters", "rope_theta", "rope_scaling", "rotary_dim", "rotary_pct", "rotary_emb_base")
ROTARY_EMBEDDING_TYPES = frozenset({"rotary", "rope"})  # position_embedding_type values of a rotary model
# position_embedding_type values of a model with a table of positions (BERT-like: 'absolute', or a table of
# distances bounded by the same limit)
LEARNED_EMBEDDING_TYPES = frozenset({"absolute", "relative_key", "relative_key_query"})
# model types with learned absolute positions whose config may name no position_embedding_type
LEARNED_POSITION_MODELS = frozenset({"gpt2", "gpt_bigcode", "gpt_neo", "opt", "biogpt", "bert", "roberta",
                                     "xlm-roberta", "distilbert", "electra", "mpnet", "bart", "mbart"})
OVERLONG_SHOWN = 3  # the over-long prompts a refusal or note names by id and token count


class Context(NamedTuple):
    """A model's position limit and how it encodes positions: LEARNED (a table of positions: generation past it
    fails with 'IndexError: index out of range in self'), ROTARY (RoPE: it runs on past it, on positions it was never
    trained on) or UNKNOWN_POSITIONS (the config says neither; treated as ROTARY, warned of and not refused, so no
    model is refused for a guess)."""

    positions: int
    kind: str


def position_kind(raw: dict[str, Any]) -> str:
    """How a model encodes positions, from its config's fields: ROTARY where it names a rotary setting
    (ROTARY_FIELDS) or a rotary position_embedding_type, LEARNED where its position_embedding_type is a table's
    (LEARNED_EMBEDDING_TYPES) or its model_type is one of LEARNED_POSITION_MODELS, else UNKNOWN_POSITIONS.
    in: the config as a dict (its text model's); out: the kind."""
    emb = raw.get("position_embedding_type")
    if emb in ROTARY_EMBEDDING_TYPES or any(raw.get(f) is not None for f in ROTARY_FIELDS):
        return ROTARY
    if emb in LEARNED_EMBEDDING_TYPES or raw.get("model_type") in LEARNED_POSITION_MODELS:
        return LEARNED
    return UNKNOWN_POSITIONS


def model_context(conf: Any) -> Context | None:
    """A model's :class:`Context` from its config (a transformers config, or config.json as a dict; a multimodal
    model's text_config where it has one): its first POSITION_LIMIT_FIELDS field that is a positive int, and
    :func:`position_kind`. in: the config; out: the context, or None where it names no position limit."""
    raw = conf if isinstance(conf, dict) else conf.to_dict()
    raw = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else raw
    limit = next((raw[f] for f in POSITION_LIMIT_FIELDS if isinstance(raw.get(f), int) and raw[f] > 0), None)
    return None if limit is None else Context(limit, position_kind(raw))


class Overlong(NamedTuple):
    """A prompt that leaves too few positions for its completion: its id, its tokens chat-templated, its
    characters (what data.max_prompt_chars counts)."""

    id: str
    tokens: int
    chars: int


def overlong_prompts(tok: Any, positions: int, prompts: list[str], ids: list[str], limit: int) -> list[Overlong]:
    """The prompts whose tokens, chat-templated as the policy reads them (:func:`prompt_text`; as they are where
    the tokenizer has no template), plus `limit` completion tokens exceed `positions`, in their order.
    in: tokenizer, the policy's position limit, prompts, their ids, the completion limit; out: the over-long ones."""
    texts = [prompt_text(tok, p) for p in prompts] if getattr(tok, "chat_template", None) else list(prompts)
    counts = [len(x) for x in tok(texts, add_special_tokens=False)["input_ids"]] if texts else []
    return [Overlong(str(i), n, len(p)) for i, n, p in zip(ids, counts, prompts, strict=True) if n + limit > positions]


def named_overlong(over: list[Overlong]) -> str:
    """The first OVERLONG_SHOWN over-long prompts by id and token count ("'a' (300 tokens), ... and 4 more")."""
    shown = ", ".join(f"{o.id!r} ({o.tokens} tokens)" for o in over[:OVERLONG_SHOWN])
    return shown + (f" and {len(over) - OVERLONG_SHOWN} more" if len(over) > OVERLONG_SHOWN else "")


def drop_fix(over: list[Overlong]) -> str:
    """The ingest setting that drops these prompts: data.max_prompt_chars below the shortest one's characters."""
    return (f"drop them at ingest with data.max_prompt_chars={min(o.chars for o in over) - 1} or less (it drops "
            "every prompt of more characters)")


def context_fit_notes(tok: Any, context: Context | None, prompts: list[str], ids: list[str], limit: int,
                      field: str, what: str) -> list[str]:
    """Whether the prompts a stage generates on, chat-templated, leave `limit` tokens (`field`) of the policy's
    position limit for a completion (:func:`overlong_prompts`). A LEARNED policy is refused with a ValueError before
    it generates (past its positions it fails with an IndexError that names no length): how many prompts, the first
    ids with their token counts, the limit and the fixes. Otherwise the notes: the prompts that fill the context on
    their own (lowering `field` cannot help: data.max_prompt_chars or a longer-context policy), and those that fit
    but leave less than `limit` tokens (lower `field`). in: tokenizer, the policy's context (None: unknown, no
    check), prompts, their ids, the completion limit, its field, what the prompts are ('training prompts');
    out: notes ([] when all fit)."""
    if context is None or not prompts:
        return []
    positions = context.positions
    over = overlong_prompts(tok, positions, prompts, ids, limit)
    if not over:
        return []
    alone = [o for o in over if o.tokens >= positions]
    room = positions - max(o.tokens for o in over)  # the completion limit every one of them would fit with
    head = f"{len(over)} of {len(prompts)} {what}, chat-templated,"
    if context.kind == LEARNED:
        lower = f"lower {field} to {room} or less; " if room > 0 else ""
        raise ValueError(f"{head} plus {field}={limit} completion tokens do not fit the policy's {positions} "
                         f"positions: {named_overlong(over)}. The policy (model.name_or_path) has learned positions, "
                         "and generating past them fails with 'IndexError: index out of range in self'. Fix: "
                         f"{drop_fix(over)}; {lower}or use a policy with a longer context")
    past = ("positions it was never trained on" if context.kind == ROTARY else "positions past its limit (where its "
            "positions are learned, as GPT-2's, generation there fails with an IndexError)")
    notes = []
    if alone:
        notes.append(f"{len(alone)} of {len(prompts)} {what}, chat-templated, fill the policy's {positions}-token "
                     f"context on their own: {named_overlong(alone)}; it reads them and writes their completions at "
                     f"{past}, so what it does on them says little, and lowering {field} cannot help: "
                     f"{drop_fix(alone)}, or use a policy with a longer context (model.name_or_path)")
    if fits := [o for o in over if o.tokens < positions]:
        notes.append(f"{len(fits)} of {len(prompts)} {what}, chat-templated, fit the policy's {positions}-token "
                     f"context but leave less than {field}={limit} tokens for a completion: {named_overlong(fits)}; "
                     f"a completion that runs that long is written at {past}: lower {field} to "
                     f"{positions - max(o.tokens for o in fits)} or less, or use a policy with a longer context")
    return notes


def policy_fit_notes(tok: Any, context: Context | None, prompts: list[str], ids: list[str],
                     max_completion_length: int) -> list[str]:
    """Whether a policy can read the training prompts at all, in notes: the share of their tokens its tokenizer maps
    to its unknown token and the share of prompts holding it at least once (unknown_shares; either above
    UNKNOWN_NOTE_SHARE: the testbed's tiny LM read 62% of GSM8K's tokens as <|unk|>, and a comparison of arms trained
    on such prompts says nothing about the method), then whether they fit its context with
    train.max_completion_length tokens of completion (:func:`context_fit_notes`: a learned-position policy is refused
    with a ValueError). in: tokenizer, the model's context (:func:`model_context`; None: unknown), prompts, their ids,
    train.max_completion_length; out: notes ([] when it fits)."""
    notes = []
    raw = tok(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []  # the prompts' own tokens
    unk = tok.unk_token_id
    if unk is not None and raw and unk not in (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id):
        # (GPT-2's unknown token is its end of text too: not a sign of text it cannot read)
        share, holding = unknown_shares(raw, unk)
        if max(share, holding / len(raw)) > UNKNOWN_NOTE_SHARE:
            notes.append(f"the policy's tokenizer reads {share:.0%} of the training prompts' tokens as its unknown "
                         f"token {tok.unk_token!r}, and {holding} of {len(raw)} prompts ({holding / len(raw):.0%}) "
                         "hold it: it cannot read those prompts whole, so training on them and the arm comparison "
                         "check the plumbing, not the method; use a policy trained on such text (model.name_or_path)")
    return notes + context_fit_notes(tok, context, prompts, ids, max_completion_length,
                                     "train.max_completion_length", "training prompts")


TURN_PROBE = "saerl turn end probe"  # assistant content whose end marks where the template closes the turn


def turn_end_id(tok: Any) -> int | None:
    """The special token the tokenizer's chat template puts right after an assistant message's content (the end
    of a turn: Qwen's <|im_end|>, Llama 3's <|eot_id|>, Gemma's <end_of_turn>, the testbed's EOS); None when the
    tokenizer has no template, the template renders no assistant turn, or what follows is not a special token."""
    if not getattr(tok, "chat_template", None):
        return None
    from jinja2 import TemplateError

    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": TURN_PROBE}]
    try:
        text = tok.apply_chat_template(chat, tokenize=False)
    except (TemplateError, ValueError):
        return None
    if TURN_PROBE not in text:
        return None
    after = tok(text[text.rindex(TURN_PROBE) + len(TURN_PROBE):], add_special_tokens=False)["input_ids"]
    special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
    return after[0] if after and after[0] in special else None


def add_stop_id(model: Any, token_id: int | None) -> None:
    """Add `token_id` to the model's generation_config EOS ids (which trl's rollouts and :func:`stop_ids` read),
    keeping those already there; None or an id already there changes nothing."""
    if token_id is None:
        return
    ids = config_eos_ids(model)
    if token_id not in ids:
        model.generation_config.eos_token_id = [*ids, token_id]


def config_eos_ids(model: Any) -> list[int]:
    """The model's generation_config EOS ids as a list (it may hold none, one id or a list)."""
    conf = model.generation_config.eos_token_id
    return [] if conf is None else [conf] if isinstance(conf, int) else list(conf)


def prompt_text(tok: Any, prompt: str) -> str:
    """The chat-templated prompt, as trl renders it for generation."""
    return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)


def new_model(cfg: TestbedConfig, tok: PreTrainedTokenizerFast) -> Any:
    """A randomly initialised Llama causal LM sized by `cfg`, with the tokenizer's special ids."""
    conf = LlamaConfig(
        vocab_size=len(tok), hidden_size=cfg.d_model, intermediate_size=cfg.d_ff, num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads, max_position_embeddings=cfg.max_len,
        tie_word_embeddings=True, pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id, use_cache=True,
    )
    torch.manual_seed(cfg.seed)
    return AutoModelForCausalLM.from_config(conf)


def encode_examples(tok: Any, prompts: list[str], completions: list[str]) -> list[tuple[list[int], int]]:
    """Per example (prompt ids + completion ids + EOS, number of prompt ids)."""
    p_ids = tok([prompt_text(tok, p) for p in prompts], add_special_tokens=False)["input_ids"]
    c_ids = tok(completions, add_special_tokens=False)["input_ids"]
    return [(p + c + [tok.eos_token_id], len(p)) for p, c in zip(p_ids, c_ids, strict=True)]


def _batch(examples: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, labels) with the loss on completion tokens only. Causal attention never lets a
    real token see the padding after it, so no attention mask is needed (the faster SDPA causal path)."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    for i, (seq, n_prompt) in enumerate(examples):
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
    return ids, labels


def length_buckets(lengths: list[int], batch: int, window: int, gen: torch.Generator) -> list[list[int]]:
    """One epoch of batches: shuffle, sort each window of `window` batches by length (less padding), split,
    shuffle the batches. in: sequence lengths, batch size (capped at the number of sequences, so a corpus
    smaller than one batch still makes one), window, rng; out: index lists."""
    batch = min(batch, len(lengths))
    if batch == 0:
        return []
    perm = torch.randperm(len(lengths), generator=gen).tolist()
    out: list[list[int]] = []
    span = batch * window
    for s in range(0, len(perm) - batch + 1, span):
        chunk = sorted(perm[s : s + span], key=lambda i: lengths[i])
        out += [chunk[j : j + batch] for j in range(0, len(chunk) - batch + 1, batch)]
    return [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]


def pretrain(model: Any, tok: Any, df: pl.DataFrame, cfg: TestbedConfig, progress: bool = True) -> list[tuple[int, float]]:
    """AdamW with warmup + cosine decay on (prompt -> worked solution) pairs of `df`, loss on the completion.
    in: model, tokenizer, pretraining frame, config, progress bar on/off; out: [(step, mean loss since last log)].
    Runs on cfg.threads torch threads and gives the process its own count back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _pretrain(model, tok, df, cfg, progress)
    finally:
        torch.set_num_threads(before)


def _pretrain(model: Any, tok: Any, df: pl.DataFrame, cfg: TestbedConfig, progress: bool) -> list[tuple[int, float]]:
    """:func:`pretrain`'s loop, on the threads it set."""
    examples = encode_examples(tok, df["prompt"].to_list(), df["solution"].to_list())
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, cfg.pretrain_steps - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    batches: list[list[int]] = []
    log, acc = [], []
    # counted by hand, not by iterating the bar: an iterating tqdm updates its count lazily, and a postfix drawn
    # between two updates showed a stale step (126/1500 beside a loss of step 150)
    bar = tqdm(total=cfg.pretrain_steps, desc="pretrain", mininterval=5, disable=not progress)
    for step in range(cfg.pretrain_steps):
        if not batches:
            batches = length_buckets([len(e[0]) for e in examples], cfg.batch_size, cfg.bucket_batches, gen)
        ids, labels = _batch([examples[i] for i in batches.pop()], tok.pad_token_id)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        acc.append(loss.item())
        bar.update()
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.pretrain_steps:  # the last window, even short
            log.append((step + 1, sum(acc) / len(acc)))
            bar.set_postfix(loss=f"{log[-1][1]:.3f}")
            acc = []
    bar.close()
    model.eval()
    return log


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (input_ids, attention_mask) [b, L] of token id lists, whatever the tokenizer's own
    padding_side: a decoder generates from each row's last position, which must be a real token."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[r, width - len(s):] = 1
    return ids, mask


def stop_ids(model: Any, tok: Any) -> list[int]:
    """The token ids that end a completion, as trl's GRPOTrainer stops RL rollouts: the tokenizer's EOS plus the
    checkpoint generation_config's EOS ids (a chat model ends its turn with one of those, e.g. <|im_end|>)."""
    ids = config_eos_ids(model)
    return ids if tok.eos_token_id in ids or tok.eos_token_id is None else [tok.eos_token_id, *ids]


def _sampling_kwargs(temperature: float, top_k: int = 0) -> dict[str, Any]:
    """HF generate settings for greedy (temperature 0) or sampling at `temperature` from the `top_k` most likely
    tokens (0 = all). Every knob is set explicitly: generate fills fields left at their defaults from the
    checkpoint's generation_config (a real chat model ships top_p/top_k/repetition_penalty there), which would
    change what is measured."""
    if temperature <= 0:
        return {"do_sample": False, "num_beams": 1, "temperature": None, "top_k": None, "top_p": None,
                "min_p": None, "repetition_penalty": 1.0}
    return {"do_sample": True, "num_beams": 1, "temperature": temperature, "top_k": top_k, "top_p": 1.0,
            "min_p": None, "typical_p": 1.0, "repetition_penalty": 1.0}


class Completions(NamedTuple):
    """What :func:`generate` returns, one entry per prompt, in the prompts' order."""

    texts: list[str]  # decoded completions, special tokens dropped
    lengths: list[int]  # generated tokens up to and including the stop id (all of them when none came)
    ended: list[bool]  # whether the completion stopped at a stop id; False: cut at max_new_tokens


@torch.no_grad()
def generate(model: Any, tok: Any, prompts: list[str], max_new_tokens: int, batch_size: int,
             temperature: float = 0.0, seed: int = 0, top_k: int = 0,
             on_batch: Callable[[int], None] | None = None) -> Completions:
    """Completions of chat-templated `prompts` (:func:`prompt_text`), generated on the model's device, the one
    generation of the project (label rollouts, in-training and final evaluation, the testbed LM's accuracy).
    in: model, tokenizer, prompt texts, max_new_tokens, batch_size, temperature (0 = greedy), torch seed, top_k
    (sampling from the k most likely tokens, 0 = all; ignored when greedy); out: :class:`Completions`.
    Prompts go in batches of similar token length (sorted by length: less padding; results come back in input
    order), left-padded whatever the tokenizer's padding_side (pad = the tokenizer's pad token, else EOS); each
    completion stops at :func:`stop_ids`, as RL rollouts do. Every sampling knob is set explicitly
    (:func:`_sampling_kwargs`), so a checkpoint's generation_config does not change what is measured. The seed
    applies inside a fork of torch's RNG: the caller's random state is left as it was (a training run that
    evaluates every N steps keeps its own seeded sampling). Deterministic for a seed and batch size. `on_batch`, when
    given, is called with each batch's prompt count once it is generated (a progress bar's update). No prompts: no
    completions."""
    if not prompts:  # the tokenizer fails on an empty list
        return Completions([], [], [])
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model.eval()
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        stops = sorted(set(stop_ids(model, tok)))
        ids = tok([prompt_text(tok, p) for p in prompts], add_special_tokens=False)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = Completions([""] * len(ids), [0] * len(ids), [False] * len(ids))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            input_ids, mask = left_pad([ids[i] for i in rows], pad_id)
            gen = model.generate(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                                 max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=stops,
                                 **_sampling_kwargs(temperature, top_k))[:, input_ids.shape[1] :].cpu()
            for r, i in enumerate(rows):
                seq = gen[r].tolist()
                end = next((j + 1 for j, t in enumerate(seq) if t in stops), None)
                out.ended[i] = end is not None
                out.lengths[i] = end if end is not None else len(seq)
                out.texts[i] = tok.decode(seq[: out.lengths[i]], skip_special_tokens=True)
            if on_batch is not None:
                on_batch(len(rows))
    return out


def correct(completions: list[str], golds: list[str]) -> list[bool]:
    """Whether each completion's final answer equals its gold (the RL reward's check)."""
    from saerl.rl import is_correct

    return is_correct(completions, golds)


def accuracy_table(df: pl.DataFrame, flags: list[bool], by: str = "difficulty") -> pl.DataFrame:
    """Mean correctness per value of `by` plus an 'all' row. in: frame, one flag per row; out: (by, n, acc)."""
    t = df.select(pl.col(by).cast(pl.Utf8), pl.Series("ok", flags, dtype=pl.Float64))
    per = t.group_by(by).agg(pl.len().alias("n"), pl.col("ok").mean().alias("acc")).sort(by)
    return pl.concat([per, pl.DataFrame({by: ["all"], "n": [t.height], "acc": [t["ok"].mean()]},
                                        schema=per.schema)])


def train_policy_lm(cfg: TestbedConfig, world: dict[str, pl.DataFrame], out_dir: Path,
                    progress: bool = True) -> dict[str, Any]:
    """Tokenizer from the whole world's text, pretrain on `world['pretrain']`, save to `out_dir`, reload
    through the Auto classes and measure greedy accuracy per level on `world['eval']`.
    in: config, world frames, output folder; out: summary dict (seconds, loss log, accuracy per level)."""
    texts = [t for df in world.values() for col in ("prompt", "solution") for t in df[col].to_list()]
    tok = build_tokenizer(texts)
    model = new_model(cfg, tok)
    start = time.monotonic()
    log = pretrain(model, tok, world["pretrain"], cfg, progress)
    seconds = time.monotonic() - start
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    save_tokenizer(tok, out_dir)
    model, tok = load_policy(out_dir)
    ev = world["eval"]
    flags = correct(generate(model, tok, ev["prompt"].to_list(), cfg.max_new_tokens, cfg.eval_batch).texts,
                    ev["answer"].to_list())
    table = accuracy_table(ev, flags)
    levels = ", ".join(f"{lv if lv == 'all' else f'L{float(lv):g}'} {acc:.3f}"
                       for lv, acc in zip(table["difficulty"], table["acc"], strict=True))
    # logged, not printed: the flow prints the per-level accuracy through its own lines (a sweep's led by the setting)
    logger.info("pretraining: %.0f s, %.2fM params, final loss %.3f; greedy accuracy on the held-out eval split: %s",
                seconds, sum(p.numel() for p in model.parameters()) / 1e6, log[-1][1] if log else float("nan"), levels)
    return {"pretrain_seconds": round(seconds, 1), "loss_log": log,
            "greedy_accuracy": dict(zip(table["difficulty"].to_list(), table["acc"].to_list(), strict=True))}


def score_policy(model: Any, tok: Any, df: pl.DataFrame, k: int, temperature: float, max_new_tokens: int,
                 batch: int, seed: int = 0) -> tuple[list[bool], list[float]]:
    """Per problem of `df` (prompt, answer): greedy correctness and mean correctness over k samples at
    `temperature`. in: policy, frame, k, temperature, limits, seed; out: (greedy flags, mean@k per problem)."""
    prompts, golds = df["prompt"].to_list(), df["answer"].to_list()
    greedy = correct(generate(model, tok, prompts, max_new_tokens, batch).texts, golds)
    samples = correct(generate(model, tok, prompts * k, max_new_tokens, batch, temperature, seed).texts, golds * k)
    n = len(prompts)
    mean_k = [sum(samples[j * n + i] for j in range(k)) / k for i in range(n)]
    return greedy, mean_k
