"""Shared fixtures.  Docker tests use the real engine and the image built from this commit."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from rlm.errors import EngineUnavailable
from rlm.llm.fake_server import FakeModelServer

# `auto` (the default runtime) resolves to RLM_TEST_RUNTIME in tests (default runc), so that the suite's
# runtime is chosen by the test command, not by what happens to be installed.  The security suite runs
# under each runtime of RLM_TEST_RUNTIMES (default: runc, and runsc when registered; tests/security/conftest.py).
TEST_RUNTIME_ENV = "RLM_TEST_RUNTIME"
SCRIPTED_ROOT, SCRIPTED_SUB = "root-model", "sub-model"   # the scripted servers' model names


def pytest_configure(config):
    from rlm.sandbox import runtime

    runtime.pin_auto(os.environ.get(TEST_RUNTIME_ENV) or "runc")


@pytest.fixture(autouse=True)
def _own_trust_list(tmp_path_factory, monkeypatch):
    """Every test has an empty list of trusted settings files (`rlm config trust`), never the developer's."""
    monkeypatch.setenv("RLM_CONFIG_HOME", str(tmp_path_factory.mktemp("rlm-config-home")))


def _engine_or_skip():
    from rlm.sandbox.engine import Engine

    try:
        return Engine()
    except EngineUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a Docker engine: {exc}")
        pytest.skip(f"no Docker engine: {exc}")


@pytest.fixture
def clean_rlm_env(tmp_path, monkeypatch):
    """No rlm setting from the developer's environment (every RLM_* name, the seed's aliases,
    RLM_CONFIG), and the test's own empty folder as the working folder."""
    from rlm.config import CONFIG_ENV_VAR, FIELDS

    for spec in FIELDS:
        for name in spec.env_names:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def engine():
    eng = _engine_or_skip()
    if not eng.image_exists("rlm-sandbox:latest"):
        msg = "the sandbox image is not built: run ./scripts/test (or rlm sandbox build)"
        pytest.fail(msg) if os.environ.get("CI") else pytest.skip(msg)
    yield eng
    leftovers = [c.name for c in eng.list_labelled("rlm.session")
                 if c.labels.get("rlm.owner_pid") == str(os.getpid())]
    for name in leftovers:  # do not leave them running even when the check fails
        eng.remove(name)
    assert not leftovers, f"sandbox containers left behind by the tests: {leftovers}"
    eng.close()


@pytest.fixture
def sandbox_settings(tmp_path_factory):
    from rlm.sandbox import SandboxSettings

    return SandboxSettings(cell_timeout_s=20)


@pytest.fixture
def session(engine, sandbox_settings):
    from rlm.sandbox import SandboxSession

    with SandboxSession(settings=sandbox_settings, engine=engine) as s:
        yield s


@pytest.fixture
def text_context(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("alpha beta gamma\n" * 100 + "The secret code is 7421.\n" + "delta epsilon\n" * 100)
    return path


@pytest.fixture
def scripted() -> Iterator[Callable[..., FakeModelServer]]:
    """A factory of scripted model servers (real HTTP on 127.0.0.1; root-model, sub-model), all
    closed at the end: ``scripted(root_steps, **FakeModelServer options)`` (``models``: the models
    offered besides the root model, default the sub model)."""
    servers: list[FakeModelServer] = []

    def start(root: list, *, models: list[str] | None = None, **kw) -> FakeModelServer:
        server = FakeModelServer(root_model=SCRIPTED_ROOT, models=[SCRIPTED_SUB] if models is None else models,
                                 root=root, **kw)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
