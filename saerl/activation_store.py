"""The Zarr v3 layout of ``activations.zarr`` and its readers.

Layout (``P`` prompts, ``T`` tokens in all, ``d`` = d_model, prompt-chunk ``c`` = prompts
``[c * chunk_rows, (c + 1) * chunk_rows)``)::

    attrs             meta (StoreMeta: model, layer, d_model, n_layers, chunk_rows, pooling, ..., fingerprint),
                      content (its inputs' hash), previous; content_model once a resume renamed meta.model
                      (meta.model: a model folder inside the artifact root by its path relative to the root,
                      'testbed/<key>/lm', so two roots write the same bytes: :func:`model_reference`)
    ids               str     [P]        prompt ids (written up front)
    offsets           int64   [P + 1]    prompt i's tokens are rows offsets[i]:offsets[i+1] (up front)
    heads             int32   [P]        prompt i's first heads[i] tokens are its head (up front; see below)
    input_ids         int32   [T]        the token ids the model saw (up front: chunks need no tokenizer)
    pooled/<kind>     float32 [P, d]     Zarr chunks of (chunk_rows, d): one Zarr chunk per prompt-chunk
    tokens/c<000012>  float16 [T_c, d]   one array per prompt-chunk, rows offsets[lo]:offsets[hi]

Everything a prompt-chunk writes (its own token array, its own Zarr chunk of each pooled array) is
disjoint from every other prompt-chunk's, so shards in different processes can write at once after a
single :func:`prepare_store`. Token offsets come from tokenization, so every chunk knows its range.

A prompt's *head* (extract.skip_head, causal models) is its leading tokens that carry nothing about the prompt:
the chat template's tokens before the prompt text, the same for every prompt and so with the same residuals, and
at least the first token (the attention sink, whose residual norm dwarfs the rest). Token rows are stored for every
token, head included (offsets index them all); the mean and max pooled vectors, the SAE's token sample
(:meth:`Activations.sample_tokens`) and the encode stage's pooling read only the rows after the head ("content"
rows); the "last" pooling is the final token. A store without a heads array (older stores) has heads of 0.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import zarr

from saerl.artifacts import ChunkLog, tree_bytes
from saerl.config import ExtractConfig

STORE_NAME = "activations.zarr"
TOKENS = "tokens"
POOLED = "pooled"
HEADS = "heads"
# attr of a store resumed under another model name (a store an older saerl prepared, naming the testbed policy by its
# absolute path; a library caller's root copied or moved): the model name its `content` hash was taken with, kept
# when meta.model is renamed to the name the store is prepared under now
CONTENT_MODEL = "content_model"
DRAW_BLOCK = 1 << 20  # content tokens keyed at a time by draw_tokens (8 MB of keys)
# SplitMix64 (Steele, Lea and Flood 2014): a prompt's tokens are its stream's values, state = the prompt's seed +
# (position + 1) * SPLITMIX_GAMMA, each value the finalizer (two multiply-xorshift rounds, a bijection of 64 bits)
SPLITMIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)
SPLITMIX_MULTIPLIERS = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
SPLITMIX_SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31))
ID_HASH_BYTES = 8  # blake2b digest size of a prompt's id: its 64-bit stream seed
NO_TOKENS = (
    "this store kept no token residuals (extract.store_tokens was false); the sae and encode stages "
    "read them: set extract.store_tokens=true and run extract again"
)


@dataclass(frozen=True)
class StoreMeta:
    """What a store holds and the settings every chunk must share (kept in the group attrs)."""

    model: str
    layer: int
    d_model: int
    n_layers: int
    n_prompts: int
    n_tokens: int
    chunk_rows: int
    pooling: tuple[str, ...]
    store_tokens: bool
    token_budget: int
    token_block_rows: int
    fingerprint: str
    dtype: str = ""  # the model's resolved dtype ('float32', 'bfloat16', ...); "" = not recorded
    n_truncated: int = 0  # prompts longer than extract.max_length tokens, cut to it (0 in stores that predate it)
    skip_head: bool = False  # extract.skip_head when prepared (the heads array holds what each prompt skips)


def chunk_ranges(n_prompts: int, chunk_rows: int) -> list[tuple[int, int]]:
    """[(lo, hi)) prompt ranges of every prompt-chunk."""
    return [(lo, min(lo + chunk_rows, n_prompts)) for lo in range(0, n_prompts, chunk_rows)]


def content_mask(lengths: np.ndarray, heads: np.ndarray) -> np.ndarray:
    """bool [sum(lengths)] over the token rows of consecutive prompts with `lengths`: True for the rows after each
    prompt's first heads[i] (its content rows), False for its head rows."""
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    position = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(starts, lengths)
    return position >= np.repeat(np.asarray(heads, dtype=np.int64), lengths)


@dataclass(frozen=True)
class TokenIds:
    """The token ids of consecutive prompts, laid out as a store keeps them: prompt i's ids are
    flat[offsets[i]:offsets[i+1]] (flat int32 [T], offsets int64 [P + 1], offsets[0] = 0). About 4 bytes a token,
    where a tokenizer's lists of Python ints take about 145 (a 500k-prompt pool: 0.3 GB, not 6.5-11 GB)."""

    flat: np.ndarray
    offsets: np.ndarray

    @classmethod
    def of(cls, seqs: TokenIds | Sequence[Sequence[int]]) -> TokenIds:
        """`seqs` as TokenIds: itself when it is one, else its lists of ids packed."""
        if isinstance(seqs, TokenIds):
            return seqs
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.fromiter((t for seq in seqs for t in seq), dtype=np.int32, count=int(offsets[-1]))
        return cls(flat, offsets)

    def __len__(self) -> int:
        """How many prompts."""
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        """Prompt i's ids (a view into flat)."""
        return self.flat[self.offsets[i]: self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        """Each prompt's ids in order."""
        return (self[i] for i in range(len(self)))

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per prompt (int64 [P])."""
        return np.diff(self.offsets)

    def tolist(self) -> list[list[int]]:
        """Each prompt's ids as a list of ints (for small pools: tests, benchmarks)."""
        return [seq.tolist() for seq in self]


def _fingerprint(ids: list[str], flat: np.ndarray, offsets: np.ndarray, heads: np.ndarray,
                 fields: dict[str, object]) -> str:
    h = hashlib.sha256(json.dumps([ids, fields], sort_keys=True).encode())
    for array in (offsets, flat, heads):  # their bytes, read in place (tobytes() copied the token ids once more)
        h.update(np.ascontiguousarray(array))
    return h.hexdigest()[:20]


def model_reference(name: str, root: str | Path | None) -> str:
    """How a store's meta.model (and so the SAE trained on it, its cfg.json's metadata.model_name) names the model
    read as `name`: a folder inside the artifact root `root` (the testbed policy, <root>/testbed/<key>/lm:
    saerl.runners.policy_path) by its path relative to the root, POSIX-spelled ('testbed/<key>/lm'), the same
    whatever folder the root is in, so two roots of one config write the same bytes; any other name as given (a hub
    id, a pkg: model, a folder outside the root or relative to the working folder; every name when root is None: a
    library caller's store). The stage reads the model from its own path, never from this name (extract_chunks'
    model_path). in: the name the model is read from, the artifact root or None; out: the name stored."""
    if root is None or not Path(name).is_absolute():
        return name
    path, base = Path(name).resolve(), Path(root).resolve()
    return path.relative_to(base).as_posix() if path.is_relative_to(base) and path != base else name


def fingerprint_after(previous: str, content: str) -> str:
    """The fingerprint of a store that replaces one fingerprinted `previous` ('' = none): its content hash, or,
    when it replaces another, a hash of both, so no replacement ever reuses an earlier store's fingerprint."""
    return hashlib.sha256(f"{previous}:{content}".encode()).hexdigest()[:20] if previous else content


def kept_or_chained(store: str | Path, content: str, fingerprint_of: Callable[[zarr.Group], str | None],
                    content_of: Callable[[zarr.Group], str | None]) -> tuple[zarr.Group | None, str]:
    """The Zarr store at `store` when it is complete and holds `content` (content_of: None while incomplete), to
    keep and resume: (it, ""); else (None, what its replacement's fingerprint chains from: the old store's
    fingerprint (fingerprint_of), or the `previous` attr a replacement cut short left, or, for a folder without a
    readable root (a replacement killed while it deleted the store it replaced), a value no store ever had; ""
    when there is no store). So chunk-log records of an earlier store never count as done, even after a change
    and its undo. A store to replace is first marked incomplete (one atomic write of its root attrs leaves only
    `previous`): its deletion goes file by file, and a kill before the root's turn would otherwise leave its
    complete-looking attrs over missing chunks, kept by a rerun with its settings."""
    if not Path(store).exists():
        return None, ""
    try:
        old = zarr.open_group(store, mode="r")
    except (OSError, ValueError):  # no readable root: its chain is lost
        return None, f"unreadable-{uuid.uuid4().hex}"
    if content_of(old) == content:
        return old, ""
    previous = fingerprint_of(old) or old.attrs.get("previous", "")
    zarr.open_group(store, mode="r+").attrs.put({"previous": previous})
    return None, previous


def prepare_store(store: str | Path, ids: list[str], token_ids: TokenIds | Sequence[Sequence[int]], model: str,
                  layer: int, d_model: int, n_layers: int, cfg: ExtractConfig, dtype: str = "", n_truncated: int = 0,
                  heads: Sequence[int] | np.ndarray | None = None, root: str | Path | None = None) -> StoreMeta:
    """Create the store's up-front arrays (ids, offsets, heads, input_ids, empty pooled arrays) and attrs (with
    `n_truncated`, the prompts tokenization cut to extract.max_length, and cfg.skip_head); `token_ids` are each
    prompt's ids, packed (TokenIds, as extraction gives them) or as lists; `heads` are the head lengths per prompt
    (None = 0 each; each must leave its prompt at least one token: 0 <= head < length). `model` is the name the model
    is read from; meta.model, and the content hash, take its :func:`model_reference` under the artifact root `root`
    (a folder inside the root by its root-relative path; None: as given). An existing store with the same content
    (same ids, tokens, heads, model shape, resolved `dtype` and settings) is kept, so a rerun resumes; the model's
    folder is not compared (the artifact key pins the model, and a root copied or moved, or a store an older saerl
    named by its absolute path, gives it another name): a kept store's meta.model becomes the name prepared now
    (:func:`renamed_model`). Any other store is replaced, with a fingerprint no earlier store had (chunk-log records
    of a replaced store never count as done, even after a change and its undo; a folder left unreadable by a
    replacement killed mid-delete is replaced too). Call once before any extract_chunks (one process)."""
    if len(ids) != len(token_ids):
        raise ValueError(f"{len(ids)} ids for {len(token_ids)} prompts")
    packed = TokenIds.of(token_ids)
    flat = np.ascontiguousarray(packed.flat, dtype=np.int32)  # as stored and hashed (no copy when already so)
    offsets = np.ascontiguousarray(packed.offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    head = np.zeros(len(ids), dtype=np.int32) if heads is None else np.asarray(heads, dtype=np.int32)
    if head.shape != lengths.shape or (head < 0).any() or (len(head) and (head >= lengths).any()):
        raise ValueError(f"heads must give one length per prompt, each in [0, its token count): got {len(head)} "
                         f"heads for {len(lengths)} prompts")
    named_now = model_reference(model, root)
    fields = {"model": named_now, "layer": layer, "d_model": d_model, "n_layers": n_layers, "n_prompts": len(ids),
              "n_tokens": int(offsets[-1]), "chunk_rows": cfg.chunk_rows, "pooling": tuple(cfg.pooling),
              "store_tokens": cfg.store_tokens, "token_budget": cfg.token_budget,
              "token_block_rows": cfg.token_block_rows, "dtype": dtype, "n_truncated": n_truncated,
              "skip_head": cfg.skip_head}
    content = _fingerprint(list(ids), flat, offsets, head, fields)

    def held(group: zarr.Group) -> str | None:
        """The content a complete store holds (None while incomplete), equal to `content` when it differs only in
        the model's folder, the store's named by an absolute path and the model read from one (the artifact key pins
        the model by its content: its folder moves with the root; an older saerl named the testbed policy by its
        absolute path); a hub id names another model (a library caller reusing one folder for two), and so does
        another root-relative name (another testbed policy)."""
        if not group.attrs.get("meta"):
            return None
        stored, named = group.attrs.get("content"), hashed_model(group)
        folders = Path(named).is_absolute() and Path(model).is_absolute()
        same = folders and named != named_now and stored == _fingerprint(list(ids), flat, offsets, head,
                                                                         {**fields, "model": named})
        return content if same else stored

    old, previous = kept_or_chained(store, content, lambda g: (g.attrs.get("meta") or {}).get("fingerprint"), held)
    if old is not None:
        return renamed_model(store, old, named_now)
    meta = StoreMeta(**fields, fingerprint=fingerprint_after(previous, content))  # type: ignore[arg-type]
    check_disk(Path(store), store_bytes(meta))
    group = zarr.open_group(store, mode="w")
    group.attrs["previous"] = previous  # a replacement cut short still chains from the store it replaced
    rows = max(1, cfg.chunk_rows)
    group.create_array("ids", shape=(len(ids),), chunks=(rows,), dtype=str)[:] = np.array(ids, dtype=str)
    group.create_array("offsets", data=offsets)
    group.create_array(HEADS, data=head)
    block = max(1, min(cfg.token_block_rows, len(flat)))
    group.create_array("input_ids", shape=flat.shape, chunks=(block,), dtype=np.int32)[:] = flat
    pooled = group.require_group(POOLED)
    for kind in cfg.pooling:
        pooled.create_array(kind, shape=(len(ids), d_model), chunks=(rows, d_model), dtype=np.float32)
    group.require_group(TOKENS)
    group.attrs["content"] = content
    group.attrs["meta"] = asdict(meta)
    return meta


def hashed_model(group: zarr.Group) -> str:
    """The model name a store's `content` hash was taken with: its CONTENT_MODEL attr (left when a resume renamed
    meta.model), else meta.model. in: an open store; out: the name."""
    return str(group.attrs.get(CONTENT_MODEL) or group.attrs["meta"]["model"])


def renamed_model(store: str | Path, group: zarr.Group, model: str) -> StoreMeta:
    """The metadata of a store kept to resume, its meta.model set to `model`, the name it is prepared under now
    (:func:`model_reference` of the path the model is read from: another name than the one it was prepared under
    for a store an older saerl named by its absolute path, or a library caller's root copied or moved), with the
    name its content hash was taken with kept in CONTENT_MODEL; its fingerprint is unchanged, so its chunk records
    count. A store prepared under `model` is left as it is. in: the store's path, the store open for reading, the
    model name; out: its metadata."""
    meta = _meta(group)
    if meta.model == model:
        return meta
    renamed = replace(meta, model=model)
    zarr.open_group(store, mode="r+").attrs.update({"meta": asdict(renamed), CONTENT_MODEL: hashed_model(group)})
    return renamed


def store_bytes(meta: StoreMeta) -> int:
    """Raw bytes of a store: every token's residual (float16) when meta.store_tokens, each pooled vector (float32)
    and every token's id (int32, stored either way). in: store metadata; out: bytes."""
    tokens = meta.n_tokens * meta.d_model * 2 if meta.store_tokens else 0
    return tokens + meta.n_prompts * len(meta.pooling) * meta.d_model * 4 + meta.n_tokens * 4


def check_disk(store: Path, raw_bytes: int) -> None:
    """Refuse an extraction whose residuals will not fit on the disk of `store` (found when the disk filled, hours
    in: 500k prompts of a 1536-wide model keep 140-230 GB of token residuals): OSError when `raw_bytes` is over the
    free space (with what a store it replaces takes), naming the sizes and the fixes. The raw size, not a
    compressed guess: float16 residuals barely compress (Zarr's default zstd kept 78% of the demo's, 94% of
    1536-wide ones like a real model's), and a check at 75% passed an extraction that then filled the disk at
    chunk 3 of 4. in: the store path, raw bytes."""
    folder = next((p for p in (store, *store.parents) if p.exists()), Path("."))
    replaced = tree_bytes(store)
    free = shutil.disk_usage(folder).free + replaced  # a store replaced here gives its space back
    if raw_bytes > free:
        raise OSError(f"extraction would write up to {raw_bytes / 2**30:.1f} GB of residuals (their raw size; they "
                      f"barely compress) into {store}, and its disk has {free / 2**30:.1f} GB free: free space, point "
                      "runtime.artifact_root at a larger disk, extract fewer prompts (data.max_rows), or keep only "
                      "pooled vectors (extract.store_tokens=false, for runs that stop at extract)")


def _meta(group: zarr.Group) -> StoreMeta:
    raw = dict(group.attrs["meta"])
    raw["pooling"] = tuple(raw["pooling"])
    return StoreMeta(**raw)


def open_for_write(store: str | Path) -> tuple[zarr.Group, StoreMeta]:
    """A prepared store opened for chunk writes, with its metadata."""
    group = zarr.open_group(store, mode="r+")
    return group, _meta(group)


def list_chunks(store: str | Path) -> list[int]:
    """Ids of every prompt-chunk of a prepared store (the unit to shard and resume)."""
    meta = _meta(zarr.open_group(_zarr_path(store), mode="r"))
    return list(range(len(chunk_ranges(meta.n_prompts, meta.chunk_rows))))


def token_array_name(chunk: int) -> str:
    """Name of a prompt-chunk's token array inside tokens/."""
    return f"c{chunk:06d}"


class ChunkWriter:
    """Writes one prompt-chunk's results into its own token array and pooled Zarr chunks."""

    def __init__(self, group: zarr.Group, meta: StoreMeta) -> None:
        self.group = group
        self.meta = meta
        self.ranges = chunk_ranges(meta.n_prompts, meta.chunk_rows)

    def write(self, chunk: int, tokens: np.ndarray | None, pooled: dict[str, np.ndarray]) -> None:
        """Write (overwriting any half-written earlier attempt) chunk `chunk`'s arrays."""
        lo, hi = self.ranges[chunk]
        for kind, arr in pooled.items():
            self.group[f"{POOLED}/{kind}"][lo:hi] = arr
        if tokens is not None:
            block = max(1, min(self.meta.token_block_rows, len(tokens)))
            out = self.group[TOKENS].create_array(token_array_name(chunk), shape=tokens.shape,
                                                  chunks=(block, tokens.shape[1]), dtype=np.float16,
                                                  overwrite=True)
            out[:] = tokens

    def write_and_mark(self, log: ChunkLog, chunk: int, tokens: np.ndarray | None, pooled: dict[str, np.ndarray],
                       on_done: Callable[[int], None] | None = None) -> None:
        """Write one chunk, then record it in the log (a chunk is done only once its bytes are), then
        call on_done(chunk)."""
        self.write(chunk, tokens, pooled)
        log.mark(chunk, fingerprint=self.meta.fingerprint, n_tokens=0 if tokens is None else len(tokens),
                 n_clipped=clipped_values(tokens))
        if on_done is not None:
            on_done(chunk)


FP16_MAX = float(np.finfo(np.float16).max)  # 65504: token rows are stored float16, clamped to +-this (run_chunk)
CLIP_COUNT_BLOCK = 1 << 22  # values clipped_values reads at a time (8 MB of float16)


def clipped_values(tokens: np.ndarray | None) -> int:
    """How many values of a chunk's float16 token rows sit at +-FP16_MAX: residuals beyond float16's range, which
    extraction clamps there (a value of exactly 65504 is as good as never a model's own). in: the rows (None: no
    token rows stored); out: the count."""
    if tokens is None or not tokens.size:
        return 0
    flat = tokens.reshape(-1)  # a view; read a block at a time (np.abs of a whole chunk copied it: ~350 MB at Qwen's)
    return sum(int(np.count_nonzero(np.abs(flat[i: i + CLIP_COUNT_BLOCK]) >= np.float16(FP16_MAX)))
               for i in range(0, flat.size, CLIP_COUNT_BLOCK))


def _zarr_path(path: str | Path) -> Path:
    p = Path(path)
    return p / STORE_NAME if (p / STORE_NAME).exists() else p


@dataclass
class Activations:
    """Read view of a finished store: ids, offsets, pooled vectors, token rows, token samples."""

    group: zarr.Group
    meta: StoreMeta
    ids: list[str]
    offsets: np.ndarray
    heads: np.ndarray  # int [n_prompts]: head tokens per prompt (0 each in a store without the array)

    @property
    def n_prompts(self) -> int:
        return self.meta.n_prompts

    @property
    def n_tokens(self) -> int:
        """Token rows stored (every token the model read, heads included)."""
        return self.meta.n_tokens

    @property
    def n_content_tokens(self) -> int:
        """Token rows after the heads: what sample_tokens draws from and the encode stage pools."""
        return self.n_tokens - int(self.heads.sum())

    @property
    def d_model(self) -> int:
        return self.meta.d_model

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return chunk_ranges(self.meta.n_prompts, self.meta.chunk_rows)

    def pooled(self, kind: str = "mean", rows: np.ndarray | None = None) -> np.ndarray:
        """Pooled vectors float32 [n_prompts, d] (kind in meta.pooling), or those of the prompts numbered `rows`, in
        that order (read straight into one array: no second copy of a large pool's vectors)."""
        if kind not in self.meta.pooling:
            raise KeyError(f"pooling '{kind}' was not stored (stored: {list(self.meta.pooling)}; set extract.pooling)")
        array = self.group[f"{POOLED}/{kind}"]
        return array[:] if rows is None else array.get_orthogonal_selection((np.asarray(rows), slice(None)))

    def chunk_tokens(self, chunk: int) -> np.ndarray:
        """Token rows float16 [tokens of the chunk, d] of one prompt-chunk."""
        self._require_tokens()
        return self.group[f"{TOKENS}/{token_array_name(chunk)}"][:]

    def _require_tokens(self) -> None:
        """ValueError (NO_TOKENS, with the fix) if the store was extracted without token residuals."""
        if not self.meta.store_tokens:
            raise ValueError(NO_TOKENS)

    def prompt_tokens(self, i: int) -> np.ndarray:
        """Token rows float16 [length, d] of prompt i."""
        self._require_tokens()
        chunk = i // self.meta.chunk_rows
        base = self.offsets[self.ranges[chunk][0]]
        arr = self.group[f"{TOKENS}/{token_array_name(chunk)}"]
        return arr[int(self.offsets[i] - base): int(self.offsets[i + 1] - base)]

    def sample_tokens(self, n: int, seed: int, dtype: type = np.float32) -> np.ndarray:
        """n distinct content token rows (never a head row) drawn uniformly (all of them if n >= n_content_tokens),
        [n, d] in `dtype`, in random order (:func:`draw_tokens`). Order-free: each token's place in the draw comes
        from the seed, its prompt's id and its position in the prompt, so a store of the same prompts in another
        order draws the same tokens in the same order. Prefix-consistent: a smaller n with the same seed gives the
        first n rows of a larger one (held-out rows are the same whatever is sampled after them). Reads only the
        Zarr chunks hit."""
        self._require_tokens()
        n = min(n, self.n_content_tokens)
        picked = draw_tokens(self.ids, self.offsets, self.heads, n, seed)
        out = np.empty((n, self.d_model), dtype=dtype)
        starts = np.array([self.offsets[lo] for lo, _ in self.ranges] + [self.n_tokens])
        owner = np.searchsorted(starts, picked, side="right") - 1
        for chunk in np.unique(owner):
            where = np.flatnonzero(owner == chunk)
            local = picked[where] - starts[chunk]
            order = np.argsort(local)
            arr = self.group[f"{TOKENS}/{token_array_name(int(chunk))}"]
            out[where[order]] = arr.get_orthogonal_selection((local[order], slice(None)))
        return out


def prompt_seeds(ids: Sequence[str], seed: int) -> np.ndarray:
    """Each prompt's 64-bit stream seed: blake2b of its id keyed by `seed` (one hash a prompt, from a copy of the
    keyed hasher: 500k ids in about 0.4 s). in: prompt ids, the draw's seed; out: uint64 [len(ids)]."""
    keyed = hashlib.blake2b(digest_size=ID_HASH_BYTES, key=str(int(seed)).encode())

    def digest(prompt_id: str) -> bytes:
        h = keyed.copy()
        h.update(str(prompt_id).encode())
        return h.digest()

    return np.frombuffer(b"".join([digest(i) for i in ids]), dtype="<u8").astype(np.uint64)


def splitmix_mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, in place: two xorshift-multiply rounds and a last xorshift (uint64, wrapping), a
    bijection of 64 bits whose outputs look uniform for states a gamma apart. in: uint64 states; out: the same array,
    mixed."""
    z ^= z >> SPLITMIX_SHIFTS[0]
    z *= SPLITMIX_MULTIPLIERS[0]
    z ^= z >> SPLITMIX_SHIFTS[1]
    z *= SPLITMIX_MULTIPLIERS[1]
    z ^= z >> SPLITMIX_SHIFTS[2]
    return z


def token_keys(seeds: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """SplitMix64 keys of tokens: the value at `positions` of the stream each of `seeds` starts, the state
    seed + (position + 1) * SPLITMIX_GAMMA mixed (:func:`splitmix_mix`). in: uint64 seeds and int positions, one each
    per token; out: uint64 keys, uniform over 64 bits."""
    z = positions.astype(np.uint64)
    z += np.uint64(1)
    z *= SPLITMIX_GAMMA
    z += seeds
    return splitmix_mix(z)


def draw_tokens(ids: Sequence[str], offsets: np.ndarray, heads: np.ndarray, n: int, seed: int,
                block: int = DRAW_BLOCK) -> np.ndarray:
    """The store rows of n distinct content tokens (rows after each prompt's head) drawn uniformly, in draw order:
    every content token gets a key from the seed, its prompt's id and its position in the prompt (:func:`token_keys`
    of :func:`prompt_seeds`), and the n smallest keys win, in key order. So the draw is order-free (prompts stored
    in another order give the same (id, position) tokens in the same order), prefix-consistent (a smaller n gives
    the first n of a larger one's draw) and the same whatever `block` is; a head row never gets a key. Two tokens
    whose 64-bit keys are equal (about P^2 * L / 2^64 for P prompts of L tokens: 1e-6 at 500k prompts of 100
    tokens) are taken in store order. Memory as :func:`smallest_keys`, plus 8 bytes a prompt for each of its seed,
    content offset and stream base. Cost, on 2 shared cores (session 46): 200k of 50M content tokens (500k prompts)
    in 1.5 s and 69 MB (the draw by store position it replaced: 0.5-0.7 s, 39 MB), 20M of 20M in 8 s and 308 MB
    (4.6 s, 306 MB): the ids' hashing and every token's keying, seconds beside an SAE's training on those tokens.
    in: ids [P], offsets int [P + 1] (prompt i's rows are offsets[i]:offsets[i+1]), heads int [P] (each below its
    prompt's length), n (<= the content tokens), seed; out: int64 store rows [n]."""
    offsets = np.asarray(offsets, dtype=np.int64)
    heads = np.asarray(heads, dtype=np.int64)
    content = np.concatenate([[0], np.cumsum(np.diff(offsets) - heads)]).astype(np.int64)
    # content token k of prompt p: state seeds[p] + (k - content[p] + heads[p] + 1) * gamma = base[p] + k * gamma
    base = prompt_seeds(ids, seed) + (heads - content[:-1] + 1).astype(np.uint64) * SPLITMIX_GAMMA

    def keys_of(start: int, stop: int) -> np.ndarray:
        """The keys of the content tokens numbered [start, stop) (numbered in store order): they belong to a run of
        consecutive prompts, whose bases are repeated by how many of the range's tokens each holds."""
        lo, hi = np.searchsorted(content, [start, stop], side="right") - 1
        counts = np.diff(np.clip(content[lo: hi + 2], start, stop))
        z = np.arange(start, stop, dtype=np.uint64)
        z *= SPLITMIX_GAMMA
        z += np.repeat(base[lo: lo + len(counts)], counts)
        return splitmix_mix(z)

    rows = smallest_keys(int(content[-1]), n, keys_of, block)  # content numbers, made store rows in place
    shift = offsets[:-1] + heads - content[:-1]  # a content number's store row, less the number, per prompt
    for start in range(0, n, block):
        part = rows[start: start + block]
        part += shift[np.searchsorted(content, part, side="right") - 1]
    return rows


def smallest_keys(total: int, n: int, keys_of: Callable[[int, int], np.ndarray], block: int = DRAW_BLOCK) -> np.ndarray:
    """The indices of the n smallest of `total` keys, in key order (equal keys by index), where keys_of(start, stop)
    gives indices [start, stop)'s keys (uint64; called once per block of indices, so a key must not depend on the
    block). Shuffling every index took 8 bytes a token: 400 MB for a 50M-token store to draw a sample of 200k. At
    most half the indices: the n smallest so far are kept in buffers of n + block (16 bytes each), and a block adds
    only its keys below the largest kept (a later index never wins a tie); a larger n keys every index at once
    (8 bytes each) and sorts them (sorting a buffer again and again costs more than one sort there).
    in: total, n (<= total), the key function, block; out: int64 indices [n]."""
    if 2 * n >= total:
        keys = np.empty(total, dtype=np.uint64)
        for start in range(0, total, block):
            keys[start:start + block] = keys_of(start, min(total, start + block))
        return np.argsort(keys, kind="stable")[:n].astype(np.int64, copy=False)
    keys, index = np.empty(n + block, dtype=np.uint64), np.empty(n + block, dtype=np.int64)
    kept, bound = 0, None  # bound: the largest key kept, once n are
    for start in range(0, total, block):
        fresh = keys_of(start, min(total, start + block))
        where = np.arange(start, start + len(fresh)) if bound is None else start + np.flatnonzero(fresh < bound)
        m = len(where)
        keys[kept:kept + m] = fresh if bound is None else fresh[where - start]
        index[kept:kept + m] = where
        kept += m
        if kept > n:
            best = np.argpartition(keys[:kept], n - 1)[:n] if n else np.empty(0, dtype=np.int64)
            keys[:n], index[:n] = keys[best], index[best]
            kept = n
            bound = keys[:n].max() if n else np.uint64(0)
    return index[:kept][np.lexsort((index[:kept], keys[:kept]))]


def open_activations(path: str | Path) -> Activations:
    """Open ``activations.zarr`` (or the artifact folder holding it) for reading."""
    group = zarr.open_group(_zarr_path(path), mode="r")
    meta = _meta(group)
    return Activations(group, meta, [str(x) for x in group["ids"][:]], group["offsets"][:],
                       store_heads(group, meta.n_prompts))


def store_heads(group: zarr.Group, n_prompts: int) -> np.ndarray:
    """The store's head length per prompt, int64 [n_prompts] (0 each in a store that predates the heads array)."""
    return group[HEADS][:].astype(np.int64) if HEADS in group else np.zeros(n_prompts, dtype=np.int64)
