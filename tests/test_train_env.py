"""What a training run reads of the environment (saerl.train_env): a shell's settings for other trainers
(accelerate's, a torchrun or MPI rank left behind) are ignored, in one process and in the ranks saerl starts."""

from __future__ import annotations

import logging
import os
import subprocess

import pytest

from saerl import distributed, train_env

STALE = {"ACCELERATE_MIXED_PRECISION": "bf16", "ACCELERATE_USE_CPU": "true", "ACCELERATE_DYNAMO_BACKEND": "inductor",
         "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "OMPI_COMM_WORLD_SIZE": "2",
         "TORCHELASTIC_RUN_ID": "old", "PET_NNODES": "2", "PET_MASTER_PORT": "29400"}
TORCHRUN_SECONDS = 60  # a standalone torchrun of one rank ends in seconds; under PET_NNODES=2 it never did
KEPT = {"ACCELERATE_LOG_LEVEL": "debug", "PATH_LIKE_OTHER": "x"}  # what only changes accelerate's logging, and others


@pytest.fixture
def shell(monkeypatch):
    """STALE and KEPT in the environment, no other variable of their families, and no warning given yet."""
    monkeypatch.setattr(train_env._Process, "warned", set())
    monkeypatch.setattr(train_env._Process, "saerl_rank", False)
    for name in list(os.environ):
        if train_env.is_accelerate_setting(name) or train_env.is_distributed(name):
            monkeypatch.delenv(name)
    for name, value in {**STALE, **KEPT}.items():
        monkeypatch.setenv(name, value)


def present(names) -> dict[str, str]:
    """The environment's values of `names` (those set). in: names; out: {name: value}."""
    return {k: os.environ[k] for k in names if k in os.environ}


def test_a_plain_run_trains_without_them_and_gets_them_back(shell, caplog):
    """Inside the block none of STALE is set (KEPT is); blocks nest and overlap (a Dask worker's threads), the last
    to close putting back what the first found and removing what the trainer set inside (trl's RANK for vLLM); one
    warning names them, once a process."""
    with caplog.at_level(logging.WARNING, logger="saerl.train_env"):
        with train_env.configured_environment():
            assert present(STALE) == {} and present(KEPT) == KEPT
            with train_env.configured_environment():
                os.environ["RANK"] = "0"  # as trl sets it for a colocated vLLM engine
            assert os.environ["RANK"] == "0", "an inner block's end restores nothing"
        assert present(STALE) == STALE and present(KEPT) == KEPT
        with train_env.configured_environment():
            assert present(STALE) == {}
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1, warned
    assert warned[0].startswith("training ignores " + ", ".join(sorted(STALE)) + " from the environment")


def test_a_rank_saerl_started_keeps_its_own_ranks_variables(shell):
    """saerl.distributed.main marks its process: torchrun's variables are its own there; accelerate's settings are
    still ignored."""
    train_env.mark_saerl_rank()
    ranks = {k: v for k, v in STALE.items() if train_env.is_distributed(k)}
    with train_env.configured_environment():
        assert present(STALE) == ranks
    assert present(STALE) == STALE


def test_the_ranks_saerl_starts_inherit_none_of_them(shell, caplog):
    """torchrun sets each rank's own WORLD_SIZE, RANK and the rest; a stale one of the stage's process (MPI's too)
    and accelerate's settings stay out of the ranks' environment, warned of here."""
    with caplog.at_level(logging.WARNING, logger="saerl.train_env"):
        env = distributed.rank_env(2, "cpu", cpus=8)
    assert not set(STALE) & set(env) and present(KEPT) == {k: env[k] for k in KEPT}
    assert len(caplog.records) == 1 and "WORLD_SIZE" in caplog.records[0].getMessage()
    assert present(STALE) == STALE  # this process's environment is left as it is


def test_saerls_torchrun_starts_alone_under_a_pods_torchrun_defaults(shell, tmp_path):
    """A shell with torchrun's option defaults of a multi-node job (Kubeflow's PET_NNODES=2) no longer makes the
    standalone torchrun of train.num_processes wait for a second node: with the ranks' environment, torchrun starts
    its one rank and ends (it waited for ever)."""
    argv = distributed.torchrun_command(1, tmp_path)[:-3] + ["-m", "platform"]  # torchrun's own options, then a rank
    done = subprocess.run(argv, env=distributed.rank_env(1, "cpu", cpus=1), capture_output=True, text=True,
                          timeout=TORCHRUN_SECONDS)
    assert done.returncode == 0, done.stderr[-2000:]
