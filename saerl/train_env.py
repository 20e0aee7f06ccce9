"""The environment a training run reads: what a user's shell exports for other trainers is not the run's config.

transformers' TrainingArguments and accelerate's Accelerator read settings from the environment where their
arguments leave them open, and saerl's config is what should decide them. Two families were seen to change a run:

- accelerate's own settings (``ACCELERATE_*``): ``ACCELERATE_MIXED_PRECISION=bf16``, common in a shell that uses
  accelerate elsewhere, ran a train stage configured in float32 under bf16 autocast, under the same cache key;
  ``ACCELERATE_USE_CPU`` moves training off the configured device, ``ACCELERATE_DYNAMO_BACKEND`` compiles the model,
  ``ACCELERATE_USE_FSDP`` / ``_DEEPSPEED`` / ``_MEGATRON_LM`` / ``_PARALLELISM_CONFIG`` shard it (and switch on the
  ``FSDP_*``, ``MEGATRON_LM_*``, ``PARALLELISM_CONFIG_*`` settings), ``ACCELERATE_TORCH_DEVICE`` picks the device.
  Every one of them is ignored but :data:`KEPT_ACCELERATE`, which only change what accelerate prints or checks.
- the variables that make a process one of several (:data:`DISTRIBUTED`: torchrun's, MPI's): left in a shell opened
  inside a torchrun or MPI job, a plain run failed at train for want of MASTER_ADDR, or, with it, waited for ever for
  a rank 1 that never came; torchrun's option defaults (``PET_*``, set in a Kubeflow PyTorchJob's pods) made the
  torchrun of ``train.num_processes`` wait for ever for a second node (``PET_NNODES=2``). They describe a process only in a rank saerl's own torchrun started
  (saerl.distributed.main marks it: :func:`mark_saerl_rank`); anywhere else they are ignored.

:func:`configured_environment` takes them out of this process's environment while a run builds its trainer and
trains, warning once which it ignores; saerl.distributed.rank_env leaves them out of the ranks' environment. The
config alone then decides the precision (train.bf16, on CUDA only) and the processes (train.num_processes), as the
train key says. This module imports nothing heavy.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

log = logging.getLogger("saerl.train_env")

ACCELERATE_PREFIX = "ACCELERATE_"
# accelerate's variables that change what it logs or checks, never what it trains: kept
KEPT_ACCELERATE = ("ACCELERATE_LOG_LEVEL", "ACCELERATE_DEBUG_MODE", "ACCELERATE_ENABLE_RICH")
# the variables by which torchrun (or `accelerate launch`) and MPI tell a process it is one of several, as
# accelerate (state.py, utils/environment.py) and torch.distributed read them
DISTRIBUTED = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
               "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
               "PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID", "MPI_LOCALNRANKS",
               "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
               "OMPI_COMM_WORLD_LOCAL_SIZE",
               "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_SIZE")
TORCHELASTIC_PREFIX = "TORCHELASTIC_"  # torchrun's agent's own (its run id, its store): of the same family
# torchrun's own defaults: each of its options reads PET_<OPTION> where the command line leaves it (Kubeflow's
# PyTorchJob sets PET_NNODES, PET_NPROC_PER_NODE, PET_MASTER_PORT in every pod); PET_NNODES=2 made saerl's
# standalone torchrun wait for a second node that never came
TORCHRUN_OPTION_PREFIX = "PET_"


class _Process:
    """This process's standing: whether saerl's torchrun started it as a rank (:func:`mark_saerl_rank`), and the
    sets of ignored variables already warned of (:func:`warn_ignored`)."""

    saerl_rank = False
    warned: set[frozenset[str]] = set()


def mark_saerl_rank() -> None:
    """Mark this process as a rank of a multi-process run saerl's own torchrun started (saerl.distributed.main, before
    anything reads the environment): from then on its WORLD_SIZE, RANK and the rest are its own. in/out: nothing."""
    _Process.saerl_rank = True


def is_saerl_rank() -> bool:
    """Whether saerl's torchrun started this process as a rank (:func:`mark_saerl_rank`). out: the flag."""
    return _Process.saerl_rank


def is_accelerate_setting(name: str) -> bool:
    """Is `name` one of accelerate's settings a run ignores (ACCELERATE_*, but KEPT_ACCELERATE)? in: a name."""
    return name.startswith(ACCELERATE_PREFIX) and name not in KEPT_ACCELERATE


def is_distributed(name: str) -> bool:
    """Is `name` one of the variables that make a process one of several (DISTRIBUTED, TORCHELASTIC_*, torchrun's
    PET_* option defaults)? in: a name."""
    return name in DISTRIBUTED or name.startswith((TORCHELASTIC_PREFIX, TORCHRUN_OPTION_PREFIX))


def ignored_names(environ: Mapping[str, str], saerl_rank: bool) -> list[str]:
    """The variables of `environ` a training run ignores, sorted: accelerate's settings, and, outside a rank saerl
    started (`saerl_rank` False), the distributed ones. in: an environment, whether the process is a saerl rank;
    out: names."""
    return sorted(n for n in environ if is_accelerate_setting(n) or (not saerl_rank and is_distributed(n)))


def warn_ignored(names: list[str]) -> None:
    """Warn, in one line, that a training run ignores `names` and why, once a process for each set of names (a
    stage's runs would repeat it). Nothing for none. in: the names."""
    key = frozenset(names)
    if not names or key in _Process.warned:
        return
    _Process.warned.add(key)
    log.warning("training ignores %s from the environment: the config decides the precision (train.bf16) and the "
                "processes (train.num_processes); unset them to silence this", ", ".join(names))


def without_ignored(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` less what a run ignores (:func:`ignored_names` of a process that is no saerl rank), warned of: the
    environment of the ranks saerl's torchrun starts, which sets their distributed variables itself.
    in: an environment; out: a copy without them."""
    dropped = ignored_names(environ, saerl_rank=False)
    warn_ignored(dropped)
    return {k: v for k, v in environ.items() if k not in dropped}


class _Open:
    """The blocks of :func:`configured_environment` open in this process: how many, and the variables of its
    families (accelerate's, the distributed ones) as the first found them."""

    lock = threading.Lock()
    depth = 0
    found: dict[str, str] = {}


def _family(name: str, saerl_rank: bool) -> bool:
    """Whether `name` belongs to what :func:`configured_environment` takes out and puts back. in: a name, whether
    this process is a saerl rank."""
    return is_accelerate_setting(name) or (not saerl_rank and is_distributed(name))


@contextmanager
def configured_environment() -> Iterator[None]:
    """For the block, this process's environment without the variables a run ignores (:func:`ignored_names`),
    warned of once (:func:`warn_ignored`), so the trainer built and run inside trains as the config says. Blocks may
    overlap (Dask runs a stage's runs in a worker's threads) and nest: the first to open takes them out, the last
    to close puts those variables back as the first found them, and removes any of their kind set inside (trl sets
    RANK and WORLD_SIZE for a colocated vLLM engine), so each run starts from the same environment. in/out: a
    context."""
    rank = is_saerl_rank()
    with _Open.lock:
        if _Open.depth == 0:
            _Open.found = {k: v for k, v in os.environ.items() if _family(k, rank)}
            warn_ignored(sorted(_Open.found))
            for name in _Open.found:
                os.environ.pop(name, None)
        _Open.depth += 1
    try:
        yield
    finally:
        with _Open.lock:
            _Open.depth -= 1
            if _Open.depth == 0:
                for name in [k for k in os.environ if _family(k, rank)]:
                    os.environ.pop(name, None)
                os.environ.update(_Open.found)
                _Open.found = {}


_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def in_configured_environment(fn: _Fn) -> _Fn:
    """`fn` run inside :func:`configured_environment` (saerl.rl's trainer config and training run). in: a function;
    out: the wrapped function (its signature kept)."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with configured_environment():
            return fn(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
