"""Tiny causal LMs and a word-level tokenizer with a chat template, for fast tests of the policy code paths."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

WORDS = ["<pad>", "<unk>", "<eos>", "<u>", "<a>", "####", "what", "is", "+", "?", *"0123456789"]
TEMPLATE = "{% for m in messages %}<u> {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}<a>{% endif %}"


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer over WORDS (left padding, chat template); decoding joins words with spaces."""
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="~~", cleanup=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")
    tok.chat_template = TEMPLATE
    tok.padding_side = "left"
    return tok


def tiny_model(tok: PreTrainedTokenizerFast, kind: str = "qwen2", seed: int = 0, hidden: int = 32, tied: bool = False):
    """A randomly initialised 1-layer Qwen2 or Llama causal LM sized for `tok`; `tied`: its head is its embeddings
    (tie_word_embeddings, as the testbed LM's)."""
    conf_cls = Qwen2Config if kind == "qwen2" else LlamaConfig
    conf = conf_cls(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
                    tie_word_embeddings=tied)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(conf)


def stub_weights(path, tag: bytes = b"") -> None:
    """A stand-in weights file: a valid safetensors file of one small tensor (the up-front checks read its header:
    a file that is no safetensors is refused as cut short), its bytes varied by `tag`. in: the file, a tag."""
    from safetensors.torch import save_file

    save_file({"w": torch.tensor(list(tag) or [0], dtype=torch.uint8)}, str(path))


def overfit(model, tok: PreTrainedTokenizerFast, pairs: list[tuple[str, str]], steps: int = 30) -> None:
    """A few Adam steps so greedy decoding answers each prompt with its completion (then EOS)."""
    seqs = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            + " " + c for p, c in pairs]
    enc = tok(seqs, add_special_tokens=False, return_tensors="pt", padding=True)
    ids = torch.cat([enc["input_ids"], torch.full((len(seqs), 1), tok.eos_token_id)], 1)
    mask = torch.cat([enc["attention_mask"], torch.ones(len(seqs), 1, dtype=torch.long)], 1)
    labels = ids.masked_fill(mask == 0, -100)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def tiny_policy(root):
    """Save a 1-layer llama policy with :func:`tiny_tokenizer`'s word-level tokenizer into `root`, and 40 addition
    prompts it can read (id, prompt, answer). in: a folder; out: (the folder, the prompts frame)."""
    import polars as pl

    tok = tiny_tokenizer()
    tiny_model(tok, "llama", seed=0, hidden=16).save_pretrained(root)
    tok.save_pretrained(root)
    prompts = pl.DataFrame({"id": [f"p{i:02d}" for i in range(40)],
                            "prompt": [f"what is {i % 10} + {i // 10} ?" for i in range(40)],
                            "answer": [str(i % 10 + i // 10) for i in range(40)]})
    return root, prompts

