"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from typer.testing import CliRunner

from rlm.cli import app
from rlm.llm.fake_server import FakeModelServer


@pytest.fixture
def scripted_cli(tmp_path, monkeypatch, engine, clean_rlm_env) -> Iterator[Callable]:
    """``rlm`` in process against a scripted server whose root and sub model is ``root-model``:
    ``scripted_cli(root_steps, *args)`` gives (CliRunner result, server)."""
    servers: list[FakeModelServer] = []

    def invoke(root: list, *args: str):
        server = FakeModelServer(root_model="root-model", models=["root-model"], root=root)
        servers.append(server)
        env = {"RLM_BASE_URL": server.url, "RLM_ROOT_MODEL": "root-model", "RLM_MAX_RETRIES": "0"}
        return CliRunner().invoke(app, list(args), env=env), server

    yield invoke
    for server in servers:
        server.close()
