"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from rlm.cli import app


@pytest.fixture
def scripted_cli(tmp_path, monkeypatch, engine, clean_rlm_env, scripted) -> Callable:
    """``rlm`` in process against a scripted server whose root and sub model is ``root-model``:
    ``scripted_cli(root_steps, *args)`` gives (CliRunner result, server)."""
    def invoke(root: list, *args: str):
        server = scripted(root, models=["root-model"])
        env = {"RLM_BASE_URL": server.url, "RLM_ROOT_MODEL": "root-model", "RLM_MAX_RETRIES": "0"}
        return CliRunner().invoke(app, list(args), env=env), server

    return invoke
