"""Shared fixtures: one local Prefect server for the whole test session (started only if a test needs it)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A Prefect server on loopback, through the same helper the CLI uses."""
    from flows.server import prefect_server

    root = tmp_path_factory.mktemp("prefect-root")
    with prefect_server(root) as url:
        yield url


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one torch thread (and then do not fight other processes for the cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cpu_machine(monkeypatch):
    """This machine seen as one without a GPU (torch.cuda.is_available() False), for tests of what runtime.device
    auto resolves to on a CPU: on a GPU machine it resolves to cuda, and their expected keys name cpu."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
