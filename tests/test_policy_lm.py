"""The tiny policy LM: tokenizer round trip, chat template, save + reload through the Auto classes."""

import json

import polars as pl
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from saerl.config import ModelConfig
from saerl.config import TestbedConfig as TBConfig
from saerl.policy_lm import (
    ASSISTANT,
    build_tokenizer,
    generate,
    length_buckets,
    load_policy,
    new_model,
    pretrain,
    prompt_text,
    train_policy_lm,
)
from saerl.testbed import generate_world

CFG = TBConfig(n_pretrain=200, n_pool=200, n_eval=50, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                    pretrain_steps=3, batch_size=16, warmup_steps=1, log_every=1, eval_batch=64, max_new_tokens=8)


@pytest.fixture(scope="module")
def world() -> dict[str, pl.DataFrame]:
    return generate_world(CFG)


def _texts(world):
    return [t for df in world.values() for col in ("prompt", "solution") for t in df[col].to_list()]


def test_tokenizer_round_trips_every_prompt_and_solution(world):
    tok = build_tokenizer(_texts(world))
    for text in _texts(world):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text


def test_numbers_are_spelled_by_digits(world):
    tok = build_tokenizer(_texts(world))
    assert tok.convert_ids_to_tokens(tok("347 + 85", add_special_tokens=False)["input_ids"]) == [
        "3", "~~4", "~~7", "+", "8", "~~5"]
    assert prompt_text(tok, "What is 3 plus 4 ?").endswith(ASSISTANT)


def test_length_buckets_cover_each_example_once():
    import torch

    lengths = list(range(100))
    batches = length_buckets(lengths, 8, 4, torch.Generator().manual_seed(0))
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) == 96 and all(len(b) == 8 for b in batches)
    # each window of 4 batches is sorted by length before it is split: a batch spans about a quarter of a window's
    # lengths (about 21 of 0..99 here), where 8 prompts drawn at random span about 78
    spans = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert sum(spans) / len(spans) < 40, spans


def test_pretrained_model_saves_and_reloads_through_auto_classes(world, tmp_path, capsys, caplog):
    with caplog.at_level("INFO", logger="saerl.policy_lm"):
        summary = train_policy_lm(CFG, world, tmp_path)
    # the held-out accuracy is logged, not printed: the flow prints it through its own (labelled) lines
    assert "pretraining:" not in capsys.readouterr().out
    assert any(r.levelname == "INFO" and "greedy accuracy on the held-out eval split" in r.getMessage()
               for r in caplog.records if r.name == "saerl.policy_lm")
    assert (tmp_path / "model.safetensors").exists()
    levels = {str(d) for d in world["eval"]["difficulty"].unique()}
    assert set(summary["greedy_accuracy"]) == levels | {"all"}
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "TokenizersBackend"
    tok = AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=False)
    text = world["pool"]["prompt"][0]
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    enc = tok([prompt_text(tok, text)], add_special_tokens=False, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > enc["input_ids"].shape[1]
    assert model.config.eos_token_id == tok.eos_token_id and model.config.vocab_size == len(tok)


def test_a_wall_clock_step_during_pretraining_changes_no_recorded_seconds(world, tmp_path, monkeypatch,
                                                                          stepped_wall_clock):
    """The testbed LM's pretraining seconds were a wall-clock span: NTP stepping the clock back an hour mid-pretraining
    recorded -3600 s. A monotonic span now."""
    import saerl.policy_lm as policy_lm

    clock = stepped_wall_clock("saerl.policy_lm")
    pretrain = policy_lm.pretrain

    def stepped(*args, **kwargs):
        clock.step(-3600.0)
        return pretrain(*args, **kwargs)

    monkeypatch.setattr(policy_lm, "pretrain", stepped)
    assert 0.0 <= train_policy_lm(CFG, world, tmp_path)["pretrain_seconds"] < 600.0


def test_length_buckets_cap_the_batch_at_the_corpus_size():
    import torch

    batches = length_buckets(list(range(50)), 96, 32, torch.Generator().manual_seed(0))
    assert len(batches) == 1 and sorted(batches[0]) == list(range(50))
    assert length_buckets([], 96, 32, torch.Generator().manual_seed(0)) == []


def test_pretrain_on_fewer_examples_than_one_batch(world):
    """testbed.n_pretrain below testbed.batch_size: every step trains on the whole (small) corpus."""
    tok = build_tokenizer(_texts(world))
    small = world["pretrain"].head(5)
    before = torch.get_num_threads()
    log = pretrain(new_model(CFG, tok), tok, small, CFG.model_copy(update={"batch_size": 96, "threads": before + 1}),
                   progress=False)
    assert [step for step, _ in log] == [1, 2, 3]
    assert torch.get_num_threads() == before  # a Dask worker's next stage kept pretraining's count
    # fewer steps than log_every (the smoke config: 30 < 50), or a last window cut short: its loss is logged, so
    # the printed final loss is a number, not nan
    short = pretrain(new_model(CFG, tok), tok, small, CFG.model_copy(update={"log_every": 2}), progress=False)
    assert [step for step, _ in short] == [2, 3] and all(loss == loss for _, loss in short)


def test_the_pretraining_bar_shows_the_step_its_loss_is_from(world, capfd):
    """The bar iterated over the steps, whose count tqdm updates lazily: each new loss was drawn beside the count of
    an older step (126/1500 with step 150's loss in the audit's log). Each loss now comes with its own step."""
    import re

    tok = build_tokenizer(_texts(world))
    capfd.readouterr()
    log = pretrain(new_model(CFG, tok), tok, world["pretrain"].head(16), CFG, progress=True)
    frames = re.split(r"[\r\n]", capfd.readouterr().err)
    shown = [(int(m[1]), m[2]) for f in frames if (m := re.search(r" (\d+)/3 .*loss=([0-9.]+)", f))]
    assert shown[: len(log)] == [(step, f"{loss:.3f}") for step, loss in log], frames


def test_generate_samples_from_the_top_k_tokens(one_torch_thread):
    from tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_model(tok, "llama")
    prompts = ["what is 3 + 4 ?", "what is 1 + 1 ?"]
    greedy = generate(model, tok, prompts, 6, 2).texts
    hot = [generate(model, tok, prompts, 6, 2, temperature=5.0, seed=s, top_k=1).texts for s in range(3)]
    assert all(h == greedy for h in hot), "top_k=1 keeps only the most likely token: sampling is greedy"
    free = [generate(model, tok, prompts, 6, 2, temperature=5.0, seed=s).texts for s in range(3)]
    assert any(f != greedy for f in free), "top_k=0 samples from every token (else the check above proves nothing)"


class _FakeModel:
    """Stands for a loaded causal LM: records the device it is moved to."""

    def __init__(self) -> None:
        from transformers import LlamaConfig

        self.moved_to = None
        self.config = LlamaConfig(architectures=["LlamaForCausalLM"])

    def to(self, device):
        self.moved_to = device
        return self


def test_load_policy_reads_safetensors_in_float32_onto_the_device_asked_for(monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    calls: list[dict] = []

    def fake_model(_path, **kwargs):
        calls.append(kwargs)
        return _FakeModel()

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake_model)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda _path, **_kw: "tokenizer")
    model, tok = load_policy("some/hub-policy", ModelConfig(), device="cuda")
    assert model.moved_to == torch.device("cuda") and tok == "tokenizer"
    assert calls[0]["use_safetensors"] is True and calls[0]["dtype"] is torch.float32
    assert load_policy("some/hub-policy")[0].moved_to == torch.device("cpu"), "the default: CPU (trl places it)"


def test_generate_batches_match_one_prompt_at_a_time_whatever_the_tokenizer_pads(one_torch_thread):
    """A policy whose tokenizer pads on the right, or has no pad token (Llama 3), still generates each prompt's
    completion from its own last token: batched output equals one prompt at a time."""
    from tiny import tiny_model, tiny_tokenizer

    prompts = ["what is 1 + 2 ?", "what is 1 2 + 2 3 4 + 5 6 7 8 9 ?", "3 ?"]
    tok = tiny_tokenizer()
    model = tiny_model(tok, seed=1)
    alone = [generate(model, tok, [p], 6, 8).texts[0] for p in prompts]
    tok.padding_side = "right"
    assert generate(model, tok, prompts, 6, 8).texts == alone
    tok.pad_token = None
    assert generate(model, tok, prompts, 6, 8).texts == alone


def test_generate_ignores_the_checkpoints_generation_config(one_torch_thread):
    """A chat checkpoint ships repetition_penalty/top_p in its generation_config: greedy decoding and sampling
    read only what generate is given."""
    from tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_model(tok, seed=1)
    prompts = ["what is 1 + 2 ?", "what is 3 + 4 ?"]
    greedy = generate(model, tok, prompts, 8, 2)
    hot = generate(model, tok, prompts, 8, 2, temperature=5.0, seed=3)
    model.generation_config.repetition_penalty = 50.0
    model.generation_config.top_p = 0.01
    assert generate(model, tok, prompts, 8, 2) == greedy
    assert generate(model, tok, prompts, 8, 2, temperature=5.0, seed=3) == hot


def test_generate_stops_where_rl_rollouts_stop(one_torch_thread):
    """A chat checkpoint ends its turn with an id of its generation_config (e.g. <|im_end|>), not the tokenizer's
    EOS: label rollouts stop there, as trl's rollouts do, instead of running on to max_new_tokens."""
    from types import SimpleNamespace

    from tiny import tiny_model, tiny_tokenizer

    from saerl.policy_lm import stop_ids

    tok = tiny_tokenizer()
    model = tiny_model(tok, seed=1)
    full = generate(model, tok, ["what is 1 + 2 ?"], 8, 1).texts[0]
    first = tok(full.split()[0], add_special_tokens=False)["input_ids"][0]
    model.generation_config.eos_token_id = first  # the policy's first greedy token now ends its turn
    assert stop_ids(model, tok) == [tok.eos_token_id, first]
    cut = generate(model, tok, ["what is 1 + 2 ?"], 8, 1).texts[0]
    assert full.startswith(cut) and len(cut.split()) == 1 < len(full.split())
    gen = lambda eos: SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=eos))  # noqa: E731
    assert stop_ids(gen([tok.eos_token_id, 7]), tok) == [tok.eos_token_id, 7] and stop_ids(gen(None), tok) == [tok.eos_token_id]


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> {% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")


def chatml_tokenizer():
    """tests/tiny.py's tokenizer with a ChatML template (Qwen's: a turn ends with <|im_end|>, not with EOS)."""
    from tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.add_tokens(["user", "assistant"])
    tok.chat_template = CHATML
    return tok


def test_turn_end_id_is_the_special_token_that_closes_an_assistant_turn():
    from tiny import tiny_tokenizer

    from saerl.policy_lm import turn_end_id

    tok = chatml_tokenizer()
    assert turn_end_id(tok) == tok.convert_tokens_to_ids("<|im_end|>") != tok.eos_token_id
    testbed = build_tokenizer(["what is 1 + 2 ?"])
    assert turn_end_id(testbed) == testbed.eos_token_id  # the testbed's turn ends with its EOS
    assert turn_end_id(tiny_tokenizer()) is None  # its template closes no assistant turn
    tok.chat_template = None
    assert turn_end_id(tok) is None


@pytest.mark.parametrize("stop_at_turn_end", [True, False])
def test_loaded_policy_and_trl_rollouts_stop_at_the_turn_end(tmp_path, stop_at_turn_end, one_torch_thread):
    """A ChatML policy whose generation_config names only EOS (Qwen2.5-Math base): loaded with
    model.stop_at_turn_end, its EOS ids gain <|im_end|>, which trl's trainer and saerl's generate both stop at."""
    from datasets import Dataset
    from tiny import tiny_model

    from saerl.config import ModelConfig, TrainConfig
    from saerl.policy_lm import load_policy, stop_ids
    from saerl.rl import _trainer_class, grpo_config

    tok = chatml_tokenizer()
    tiny_model(tok, seed=0, hidden=16).save_pretrained(tmp_path / "p")
    tok.save_pretrained(tmp_path / "p")
    model, loaded = load_policy(tmp_path / "p", ModelConfig(stop_at_turn_end=stop_at_turn_end))
    end = loaded.convert_tokens_to_ids("<|im_end|>")
    expected = [loaded.eos_token_id, end] if stop_at_turn_end else [loaded.eos_token_id]
    assert stop_ids(model, loaded) == expected
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": "what is 1 + 1 ?"}]] * 4, "answer": ["2"] * 4})
    args = grpo_config(TrainConfig(num_generations=2, max_completion_length=3, max_steps=1), tmp_path / "rl", 2, 1, 0,
                       device="cpu", progress=False)
    trainer = _trainer_class()(model=model, reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
                               args=args, train_dataset=data, processing_class=loaded)
    assert trainer.eos_token_ids == expected


def test_a_loaded_policy_uses_no_hub_kernels(tmp_path):
    """transformers (>= 5.24, with kernels installed) turns hub kernels on by default; the policy saerl loads has
    them off unless model.hub_kernels asks, so model.train() on a GPU fetches no layer code from the hub."""
    from tiny import tiny_model

    from saerl.policy_lm import load_policy

    tok = chatml_tokenizer()
    tiny_model(tok, seed=0, hidden=16).save_pretrained(tmp_path / "p")
    tok.save_pretrained(tmp_path / "p")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "p").use_kernels is True  # transformers' own default
    model, _ = load_policy(tmp_path / "p")
    assert model.use_kernels is False


def test_an_encoder_is_refused_as_the_policy_not_loaded_with_a_random_lm_head(tmp_path):
    """AutoModelForCausalLM loads BERT (MiniLM) as BertLMHeadModel with is_decoder off: bidirectional attention and a
    newly initialised LM head, which generated word salad without complaint (labels and held-out scores measured on
    it). load_policy refuses it, naming the fix; the same BERT with is_decoder set is a causal LM and loads."""
    from tiny import tiny_tokenizer
    from transformers import BertConfig

    tok = tiny_tokenizer()
    for decoder in (False, True):
        conf = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=64, is_decoder=decoder)
        folder = tmp_path / f"bert-{decoder}"
        AutoModelForCausalLM.from_config(conf).save_pretrained(folder)
        tok.save_pretrained(folder)
        if decoder:
            assert type(load_policy(folder)[0]).__name__ == "BertLMHeadModel"
            continue
        with pytest.raises(ValueError, match=r"the policy model .*bert-False is an encoder \(BertLMHeadModel\), not a "
                                             r"causal LM.* set extract.model to it and keep a causal LM as "
                                             r"model.name_or_path"):
            load_policy(folder)
    from transformers import LlamaConfig

    from saerl.policy_lm import not_causal_problem

    bare = LlamaConfig()  # a config.json naming no architecture (older checkpoints): nothing says it is not causal
    assert not bare.architectures and not_causal_problem(bare, "x") is None
    assert not_causal_problem(BertConfig(), "x") is not None  # an encoder's type says it, architectures or not


def test_generate_batches_prompts_of_similar_length_and_answers_in_input_order(one_torch_thread):
    """Prompts are sorted by token length before batching (less padding: a batch of short prompts is not padded to
    a long one's width); each completion still comes back at its prompt's position, equal to that prompt alone."""
    from tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_model(tok, seed=1)
    long_, short = "what is 1 2 + 2 3 4 + 5 6 7 8 9 ?", "3 ?"
    prompts = [long_, short, long_, short]
    widths: list[int] = []
    real = model.generate

    def recording(*args, **kwargs):
        widths.append(kwargs["input_ids"].shape[1])
        return real(*args, **kwargs)

    model.generate = recording
    done: list[int] = []
    out = generate(model, tok, prompts, 6, 2, on_batch=done.append)
    lengths = [len(tok(prompt_text(tok, p), add_special_tokens=False)["input_ids"]) for p in (short, long_)]
    assert widths == lengths, "one batch of the two short prompts, one of the two long ones"
    assert done == [2, 2], "each batch reported once it is generated (a progress bar's update)"
    assert generate(model, tok, [], 6, 2).texts == [], "no prompts: no completions (the tokenizer failed on [])"
    alone = [generate(model, tok, [p], 6, 1) for p in prompts]
    assert out.texts == [a.texts[0] for a in alone] and out.lengths == [a.lengths[0] for a in alone]
    assert out.ended == [a.ended[0] for a in alone]


def test_generate_leaves_the_callers_random_state_alone(one_torch_thread):
    """Label rollouts and evaluations sample from their own seed inside a fork of torch's RNG: the caller's stream
    goes on as if nothing had run (before, the label stage's generate reseeded torch's global RNG, and an
    in-training eval reseeded the trainer: every training seed of one order sampled the same rollouts after it)."""
    import torch
    from tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_model(tok, seed=1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = generate(model, tok, ["what is 1 + 2 ?", "3 ?"], 6, 2, temperature=5.0, seed=4)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(7)
    assert generate(model, tok, ["what is 1 + 2 ?", "3 ?"], 6, 2, temperature=5.0, seed=4) == first


def test_policy_fit_notes_say_when_the_policy_cannot_read_the_prompts_or_fit_them():
    """The README's CPU path on real data trained the testbed's tiny LM on GSM8K, whose tokenizer read 62% of the
    prompts' tokens as <|unk|> and whose context was shorter than prompt plus completion, and printed a full arm
    comparison without a word; the train stage now notes both."""
    from saerl.policy_lm import ROTARY, Context, policy_fit_notes

    tok = build_tokenizer(["what is 2 plus 3 ?"])
    own, ids = ["what is 2 plus 3 ?", "what is 12 plus 7 ?"], ["a", "b"]
    assert policy_fit_notes(tok, Context(512, ROTARY), own, ids, 8) == []
    foreign = ["Natalia sold clips to 48 of her friends in April ?"]
    (unknown,) = policy_fit_notes(tok, Context(512, ROTARY), foreign, ["c"], 8)
    assert "reads" in unknown and "as its unknown token" in unknown and "plumbing" in unknown
    (tight,) = policy_fit_notes(tok, Context(12, ROTARY), own, ids, 8)  # 8 and 9 tokens templated: no room for 8
    assert tight.startswith("2 of 2 training prompts") and "train.max_completion_length=8" in tight
    assert policy_fit_notes(tok, None, own, ids, 10**6) == []  # no known context length: no such note
    tok.unk_token = tok.eos_token  # GPT-2's way: one token for unknown and end of text
    assert policy_fit_notes(tok, Context(512, ROTARY), ["what is 2 plus 3 ? <|eos|>"], ["d"], 8) == []


def test_prompts_over_a_rotary_policys_context_are_noted_by_id_with_the_fix_that_helps():
    """Lengths audit F3: with a 64-position RoPE policy and prompts of 106 to 2597 tokens, training's note said
    'their completions are cut short (lower train.max_completion_length ...)': nothing cuts them under RoPE, no
    completion limit makes a prompt longer than the context fit, and it named no prompt. A prompt that fills the
    context on its own now points at data.max_prompt_chars or a longer-context policy; one that fits but leaves too
    little room, at the completion limit; both name the ids and their token counts."""
    from saerl.policy_lm import ROTARY, Context, context_fit_notes, prompt_text

    tok = build_tokenizer(["what is 2 plus 3 ?"])
    prompts = ["what is 2 plus 3 ?", " ".join(["what is 2 plus 3 ?"] * 3), "2 ?"]
    sizes = [len(tok(prompt_text(tok, p), add_special_tokens=False)["input_ids"]) for p in prompts]
    assert sizes[2] + 8 <= 12 < sizes[0] + 8 and 12 <= sizes[1]  # the premise, with 12 positions and 8 to complete
    alone, tight = context_fit_notes(tok, Context(12, ROTARY), prompts, ["short", "long", "tiny"], 8,
                                     "train.max_completion_length", "training prompts")
    assert alone.startswith(f"1 of 3 training prompts, chat-templated, fill the policy's 12-token context on their "
                            f"own: 'long' ({sizes[1]} tokens)")
    assert f"data.max_prompt_chars={len(prompts[1]) - 1} or less" in alone and "lowering" in alone
    assert "cut short" not in alone + tight
    assert tight.startswith(f"1 of 3 training prompts, chat-templated, fit the policy's 12-token context but leave "
                            f"less than train.max_completion_length=8 tokens for a completion: 'short' ({sizes[0]} "
                            "tokens);")  # 'tiny' fits with its 8 tokens of completion
    assert "'tiny'" not in alone + tight
    assert f"lower train.max_completion_length to {12 - sizes[0]} or less" in tight


def test_prompts_over_a_learned_position_policys_positions_are_refused_before_it_generates():
    """Lengths audit F1b: a GPT-2-style policy (64 learned positions) with longer prompts ran ingest to encode, then
    died in the label stage (or training's first evaluation) with 'IndexError: index out of range in self', naming
    no length, row or setting. The check refuses before any generation, naming how many prompts, the first ids and
    their token counts, the limit and the fixes."""
    from saerl.policy_lm import LEARNED, OVERLONG_SHOWN, Context, context_fit_notes

    tok = build_tokenizer(["what is 2 plus 3 ?"])
    prompts = [" ".join(["what is 2 plus 3 ?"] * n) for n in range(1, 7)]
    ids = [f"p{n}" for n in range(1, 7)]
    assert context_fit_notes(tok, Context(512, LEARNED), prompts, ids, 8, "eval.max_new_tokens", "problems") == []
    with pytest.raises(ValueError) as err:
        context_fit_notes(tok, Context(20, LEARNED), prompts, ids, 8, "eval.max_new_tokens",
                          "problems of held-out set eval.sets.t")
    msg = str(err.value)
    assert msg.startswith("5 of 6 problems of held-out set eval.sets.t, chat-templated, plus eval.max_new_tokens=8 "
                          "completion tokens do not fit the policy's 20 positions: 'p2' (")
    assert "'p3'" in msg and f"and {5 - OVERLONG_SHOWN} more" in msg and "'p5'" not in msg
    assert "learned positions" in msg and "index out of range" in msg
    assert f"data.max_prompt_chars={len(prompts[1]) - 1} or less" in msg and "longer context" in msg


def test_a_models_position_limit_and_kind_are_read_from_its_config():
    """GPT-2 names its limit n_positions and has learned positions; Qwen2 (rope_parameters) and Llama are rotary;
    BERT (position_embedding_type absolute) learned; a config that says neither is 'unknown' (warned of, never
    refused); no limit, no context."""
    from transformers import BertConfig, GPT2Config, LlamaConfig, Qwen2Config

    from saerl.policy_lm import LEARNED, ROTARY, UNKNOWN_POSITIONS, Context, model_context

    assert model_context(GPT2Config(n_positions=64)) == Context(64, LEARNED)
    assert model_context(Qwen2Config(max_position_embeddings=64)) == Context(64, ROTARY)
    assert model_context(LlamaConfig(max_position_embeddings=160)) == Context(160, ROTARY)
    assert model_context(BertConfig(max_position_embeddings=512)) == Context(512, LEARNED)
    assert model_context({"model_type": "qwen2", "max_position_embeddings": 4096, "rope_theta": 1e4}).kind == ROTARY
    assert model_context({"model_type": "mystery", "max_position_embeddings": 128}) == Context(128, UNKNOWN_POSITIONS)
    assert model_context({"model_type": "mystery"}) is None
    assert model_context({"text_config": {"model_type": "gpt2", "n_positions": 32}}) == Context(32, LEARNED)


def test_the_unknown_token_note_counts_the_prompts_a_policy_cannot_read_not_only_their_tokens():
    """The testbed's word-level tokenizer reads a whole Chinese sentence as one <|unk|>: with 2 of 10 prompts
    Chinese (a fifth of them unreadable) the unknown tokens were 2% of the tokens and no note was given (i18n
    audit, finding 9). The note triggers on the larger of the token and the prompt share, and gives both."""
    from saerl.policy_lm import UNKNOWN_NOTE_SHARE, policy_fit_notes, unknown_shares

    world = ["Ann has 3 apples and buys 4 more . How many apples does Ann have now ?",
             "Ben has 5 pens and gives 2 away . How many pens does Ben have left ?"] * 4
    zh = ["小明有3个苹果，又买了4个，一共有几个？", "小红有5支笔，送给同学2支，还剩几支？"]
    tok = build_tokenizer(world)
    raw = tok(world + zh, add_special_tokens=False)["input_ids"]
    share, holding = unknown_shares(raw, tok.unk_token_id)
    assert share <= UNKNOWN_NOTE_SHARE < holding / len(raw), "the token share alone would give no note"
    from saerl.policy_lm import ROTARY, Context

    (note,) = policy_fit_notes(tok, Context(512, ROTARY), world + zh, [str(i) for i in range(10)], 8)
    assert f"reads {share:.0%} of the training prompts' tokens" in note
    assert "2 of 10 prompts (20%) hold it" in note and "plumbing" in note
    assert policy_fit_notes(tok, Context(512, ROTARY), world, [str(i) for i in range(8)], 8) == []
