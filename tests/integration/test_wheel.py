"""A wheel carries everything a user needs (issue 14.3); marker ``docker``, about a minute.

The wheel is built (offline: ``pip wheel --no-deps --no-build-isolation``) from a copy of
the sources, installed into a fresh venv outside the checkout, and used from another folder:
``rlm sandbox build`` finds the image current (the sources in the wheel hash the same as the
checkout's), and a query against the scripted model server answers through the sandbox.

The venv gets rlm from the wheel only; its dependencies come from the test venv's
site-packages through a ``.pth`` line (no download, and not the editable rlm: that one is
installed by a ``.pth`` file, which a plain path entry does not run).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rlm.config import CONFIG_ENV_VAR, FIELDS
from rlm.llm.fake_server import FakeModelServer
from rlm.sandbox.image import BASE_LABEL, DEFAULT_IMAGE, image_hash, image_status

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
SOURCES = ["pyproject.toml", "README.md", "Dockerfile.sandbox", "rlm", "sandbox_image"]
RLM_ENV = {name for spec in FIELDS for name in spec.env_names} | {CONFIG_ENV_VAR}


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv outside the checkout with rlm installed from a freshly built wheel."""
    try:
        import wheel  # noqa: F401 - setuptools needs it for bdist_wheel without build isolation
    except ImportError:
        pytest.fail("the `wheel` package is missing: install the test extra (pip install -e '.[test]')")
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(dist), str(src)], cwd=base)
    wheels = list(dist.glob("rlm-*.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    for needed in ("rlm/sandbox/Dockerfile.sandbox", "rlm/sandbox/protocol.py", "rlm/sandbox/guest/repl.py",
                   "rlm/sandbox/guest/supervisor.py", "rlm/sandbox/guest/kernel_main.py",
                   "rlm/sandbox/guest/requirements.txt"):
        assert needed in names, f"{needed} is not in the wheel"
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=base)
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=base).strip())
    (purelib / "zz_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
          str(wheels[0])], cwd=base)
    return venv


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RLM_ENV and k != "PYTHONPATH"}
    env.update(PYTHONUNBUFFERED="1", COLUMNS="200", RLM_MAX_RETRIES="0", **extra)
    return env


def test_the_wheel_builds_the_same_image_from_another_folder(engine, installed, tmp_path):
    python = str(installed / "bin" / "python")
    where = _run([python, "-c", "import rlm, rlm.sandbox.image as i; print(rlm.__file__); print(i.repo_root_default())"],
                 cwd=tmp_path, env=_env()).split()
    assert all(str(installed) in line for line in where), where  # the wheel's copy, not the checkout
    base = (engine.image_labels(DEFAULT_IMAGE) or {}).get(BASE_LABEL) or "python:3.11-slim"
    code = f"from rlm.sandbox.image import image_hash, repo_root_default; print(image_hash(repo_root_default(), {base!r}))"
    assert _run([python, "-c", code], cwd=tmp_path, env=_env()).strip() == image_hash(REPO, base)
    if not image_status(engine, REPO).current:
        pytest.skip("the image is stale for this checkout: run `rlm sandbox build` first")
    out = _run([str(installed / "bin" / "rlm"), "sandbox", "build"], cwd=tmp_path, env=_env())
    assert "is current" in out, out


def test_a_query_from_the_wheel_answers_through_the_sandbox(engine, installed, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("alpha\n" * 100 + "The secret code is 7421.\n")
    root = ["```repl\nimport re\ncode = re.search(r'code is (\\d+)', context).group(1)\n"
            "print(code, llm_query('ok?'))\n```", "FINAL_VAR(code)"]
    with FakeModelServer(root_model="root-model", models=["sub-model"], root=root, sub={"default": "yes"}) as server:
        proc = subprocess.run([str(installed / "bin" / "rlm"), "query", "-q", "What is the secret code?", "-f",
                               str(doc), "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=180,
                              stdin=subprocess.DEVNULL,
                              env=_env(RLM_BASE_URL=server.url, RLM_ROOT_MODEL="root-model", RLM_SUB_MODEL="sub-model"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["answer"] == "7421"
    assert result["sub_calls"] == 1
