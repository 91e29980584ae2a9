"""Fixtures of the security suite: host canaries, a sibling container, a pool of sandbox sessions.

Everything here is package-scoped: the canaries (including the canary environment
variables) are checked and removed when the last security test has run, before any
other test directory.
"""

from __future__ import annotations

import os
import urllib.request

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # its reaper image cannot be pulled here

import pytest

from rlm.sandbox import SandboxSettings
from rlm.security import Canaries, CheckHandler, SessionPool, default_session_factory

SIBLING_PORT = 8000
HOST_PROBE_PATH = "/host-probe"


def http_get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:  # 404 is an answer too
        return exc.code


@pytest.fixture(scope="package")
def sibling(engine):
    """A container on the engine's default bridge network, serving HTTP: the sandbox must not reach it."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    ready = LogMessageWaitStrategy("Serving HTTP").with_startup_timeout(30).with_poll_interval(0.1)
    container = (DockerContainer("rlm-sandbox:latest")
                 .with_command(f"python3 -m http.server {SIBLING_PORT}")
                 .with_kwargs(labels={"rlm.security-suite": "sibling"})
                 .waiting_for(ready))
    container.start()
    try:
        wrapped = container.get_wrapped_container()
        ip = container.get_docker_client().bridge_ip(wrapped.id)
        assert ip, "the sibling container has no address on the default bridge network"
        # The target is alive and reachable from the host: a refusal from inside the sandbox means something.
        assert http_get(f"http://{ip}:{SIBLING_PORT}{HOST_PROBE_PATH}") in (200, 404)
        container.ip = ip
        yield container
    finally:
        container.stop()


def sibling_requests(container) -> list[str]:
    """Request lines the sibling logged, except the host's own probes."""
    out, err = container.get_logs()
    lines = (out + err).decode("utf-8", "replace").splitlines()
    return [line for line in lines if '"' in line and "HTTP/" in line and HOST_PROBE_PATH not in line]


@pytest.fixture(scope="package")
def canaries(sibling):
    c = Canaries().start()
    c.sibling = (sibling.ip, SIBLING_PORT)
    yield c
    problems = c.problems()
    c.stop()
    assert not problems, f"host canaries touched during the security suite: {problems}"


def pytest_generate_tests(metafunc):
    """Every test that uses a sandbox runs once per runtime (runc, and runsc when registered)."""
    if "sandbox_runtime" in metafunc.fixturenames:
        from rlm.sandbox.runtime import available_runtimes

        wanted = [r.strip() for r in os.environ.get("RLM_TEST_RUNTIMES", "").split(",") if r.strip()]
        metafunc.parametrize("sandbox_runtime", wanted or available_runtimes(), scope="package")


@pytest.fixture(scope="package")
def base_settings(sandbox_runtime):
    """Default hardening, under the runtime of this pass of the suite."""
    return SandboxSettings(runtime=sandbox_runtime)


@pytest.fixture(scope="package")
def pool(engine, canaries, base_settings):
    """Sandbox sessions with default hardening, one per distinct settings override, reused across tests."""
    p = SessionPool(default_session_factory(base_settings, engine=engine), canaries, CheckHandler())
    yield p
    p.close()
