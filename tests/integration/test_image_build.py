"""The sandbox image as built by the set-up (marker ``docker``)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from rlm.errors import EngineUnavailable
from rlm.sandbox.engine import ContainerSpec, Engine
from rlm.sandbox.image import DEFAULT_IMAGE, build_image, image_status

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def engine():
    try:
        eng = Engine()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine answers ({exc.message}); run ./scripts/setup")
    yield eng
    eng.close()


def _run(engine: Engine, code: str) -> int | None:
    """Run python3 -c CODE in a locked-down container as uid 1000; return its exit code."""
    name = f"rlm-imagetest-{uuid.uuid4().hex[:8]}"
    spec = ContainerSpec(image=DEFAULT_IMAGE, command=["python3", "-c", code], name=name,
                         labels={"rlm.test": "image"}, network_mode="none", read_only=True,
                         security_opt=["no-new-privileges"], auto_remove=False)
    cid = engine.run(spec)
    try:
        deadline = time.monotonic() + 60
        info = engine.inspect(cid)
        while info is not None and info.status in ("created", "running") and time.monotonic() < deadline:
            time.sleep(0.05)
            info = engine.inspect(cid)
        assert info is not None and info.status == "exited", f"container did not finish: {info}"
        return info.exit_code
    finally:
        engine.remove(cid)


def test_image_is_present_and_current(engine: Engine) -> None:
    status = image_status(engine, REPO)
    assert status.present, "run ./scripts/setup (or rlm sandbox build) first"
    assert status.current, f"image is stale: found {status.hash_found}, expected {status.hash_expected}"


def test_kernel_packages_import_as_uid_1000_without_network(engine: Engine) -> None:
    # Exit codes say what failed: 1 = an import failed, 3 = wrong user.
    code = ("import os, sys, ipykernel, zmq, jupyter_client, protocol; "
            "sys.exit(0 if (os.getuid(), os.getgid()) == (61000, 61000) else 3)")
    assert _run(engine, code) == 0


def test_no_pip_in_the_image(engine: Engine) -> None:
    # Exit codes: 3 = pip left in /opt/rlm/lib, 4 = pip importable from anywhere.
    code = ("import importlib.util, os, sys; "
            "sys.exit(3 if os.path.exists('/opt/rlm/lib/pip') else "
            "4 if importlib.util.find_spec('pip') is not None else 0)")
    assert _run(engine, code) == 0


def test_second_build_does_nothing(engine: Engine) -> None:
    lines: list[str] = []
    started = time.monotonic()
    result = build_image(engine, REPO, progress=lines.append)
    assert result.built is False, lines
    assert time.monotonic() - started < 10
    assert engine.image_exists(result.hash_tag)
