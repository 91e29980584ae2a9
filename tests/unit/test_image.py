"""The image hash (no Docker): what changes it and what does not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rlm.errors import SandboxError
from rlm.sandbox.image import _assemble_context, hash_tag, image_hash
from rlm.sandbox.wheels import _platforms, pip_download_command

BASE = "rlm-base:bookworm"


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "sandbox_image").mkdir(parents=True)
    (root / "rlm" / "sandbox").mkdir(parents=True)
    (root / "Dockerfile.sandbox").write_text("ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}\n")
    (root / "sandbox_image" / "requirements.txt").write_text("ipykernel==7.4.0\n")
    (root / "sandbox_image" / "supervisor.py").write_text("print('hi')\n")
    (root / "rlm" / "sandbox" / "protocol.py").write_text("VERSION = 1\n")
    return root


def test_hash_is_stable(repo: Path) -> None:
    first = image_hash(repo, BASE)
    assert first == image_hash(repo, BASE)
    assert len(first) == 64 and int(first, 16) >= 0


def test_hash_changes_with_a_file_in_sandbox_image(repo: Path) -> None:
    before = image_hash(repo, BASE)
    (repo / "sandbox_image" / "supervisor.py").write_text("print('changed')\n")
    assert image_hash(repo, BASE) != before


def test_hash_changes_with_a_new_file_and_a_rename(repo: Path) -> None:
    before = image_hash(repo, BASE)
    (repo / "sandbox_image" / "repl.py").write_text("")
    added = image_hash(repo, BASE)
    assert added != before
    (repo / "sandbox_image" / "repl.py").rename(repo / "sandbox_image" / "repl2.py")
    assert image_hash(repo, BASE) not in (before, added)


def test_hash_changes_with_the_pins_the_dockerfile_and_the_protocol(repo: Path) -> None:
    seen = {image_hash(repo, BASE)}
    for rel, text in [("sandbox_image/requirements.txt", "ipykernel==7.3.0\n"),
                      ("Dockerfile.sandbox", "FROM scratch\n"),
                      ("rlm/sandbox/protocol.py", "VERSION = 2\n")]:
        (repo / rel).write_text(text)
        digest = image_hash(repo, BASE)
        assert digest not in seen, rel
        seen.add(digest)


def test_hash_changes_with_the_base_image_name(repo: Path) -> None:
    assert image_hash(repo, BASE) != image_hash(repo, "python:3.11-slim")


def test_hash_ignores_pycache(repo: Path) -> None:
    before = image_hash(repo, BASE)
    cache = repo / "sandbox_image" / "__pycache__"
    cache.mkdir()
    (cache / "supervisor.cpython-311.pyc").write_bytes(b"\x00compiled")
    (repo / "sandbox_image" / "stray.pyc").write_bytes(b"\x00")
    assert image_hash(repo, BASE) == before


def test_hash_does_not_depend_on_where_the_repo_is(repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    shutil.copytree(repo, other)
    assert image_hash(other, BASE) == image_hash(repo, BASE)


def test_hash_of_something_that_is_not_the_repo_says_so(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="Dockerfile.sandbox"):
        image_hash(tmp_path, BASE)


def test_the_real_repository_hashes() -> None:
    root = Path(__file__).resolve().parents[2]
    assert image_hash(root, BASE) == image_hash(root, BASE)


def test_hash_tag() -> None:
    assert hash_tag("rlm-sandbox:latest", "ab" * 32) == "rlm-sandbox:" + "ab" * 6
    assert hash_tag("localhost:5000/rlm-sandbox", "cd" * 32) == "localhost:5000/rlm-sandbox:" + "cd" * 6


def test_build_context_is_minimal(repo: Path, tmp_path: Path) -> None:
    (repo / "secret.env").write_text("API_KEY=x\n")
    (repo / "sandbox_image" / "__pycache__").mkdir()
    (repo / "sandbox_image" / "__pycache__" / "x.pyc").write_bytes(b"")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "ipykernel-7.4.0-py3-none-any.whl").write_bytes(b"PK")
    (wheels / ".complete").write_text("")
    context = tmp_path / "context"
    context.mkdir()
    _assemble_context(repo, wheels, context)
    files = sorted(p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file())
    assert files == ["Dockerfile.sandbox", "protocol.py", "sandbox_image/requirements.txt",
                     "sandbox_image/supervisor.py", "wheels/ipykernel-7.4.0-py3-none-any.whl"]


def test_pip_download_command_targets_the_image_python(tmp_path: Path) -> None:
    cmd = pip_download_command(tmp_path / "requirements.txt", "3.11", tmp_path / "out", machine="x86_64")
    joined = " ".join(cmd)
    assert "--only-binary=:all:" in cmd and "--python-version 3.11" in joined
    assert "--platform manylinux2014_x86_64" in joined and "--platform manylinux_2_28_x86_64" in joined
    assert _platforms("arm64") == ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64"]


class _FakeEngine:
    """Just enough of Engine for the decisions build_image makes before building."""

    def __init__(self, images: dict[str, dict[str, str]]) -> None:
        self.images = images
        self.tagged: list[tuple[str, str]] = []

    def image_labels(self, name: str) -> dict[str, str] | None:
        return self.images.get(name)

    def image_exists(self, name: str) -> bool:
        return name in self.images

    def tag_image(self, source: str, target: str) -> None:
        self.tagged.append((source, target))
        self.images[target] = self.images[source]

    def __getattr__(self, name: str):  # anything else means a build was attempted
        raise AssertionError(f"unexpected engine call: {name}")


def test_status_and_build_with_nothing_changed_do_nothing(repo: Path) -> None:
    from rlm.sandbox.image import build_image, image_status

    digest = image_hash(repo, BASE)
    engine = _FakeEngine({"rlm-sandbox:latest": {"rlm.image.hash": digest, "rlm.image.base": BASE}})
    status = image_status(engine, repo)  # type: ignore[arg-type]
    assert status.present and status.current and status.base_image == BASE
    result = build_image(engine, repo)  # type: ignore[arg-type]
    assert result.built is False and result.hash_tag == "rlm-sandbox:" + digest[:12]

    (repo / "sandbox_image" / "supervisor.py").write_text("changed\n")
    status = image_status(engine, repo)  # type: ignore[arg-type]
    assert status.present and not status.current and status.hash_found == digest


def test_an_earlier_build_of_the_same_sources_is_retagged(repo: Path) -> None:
    from rlm.sandbox.image import build_image

    digest = image_hash(repo, BASE)
    labels = {"rlm.image.hash": digest, "rlm.image.base": BASE}
    engine = _FakeEngine({"rlm-sandbox:" + digest[:12]: labels, BASE: {},
                          "rlm-sandbox:latest": {"rlm.image.hash": "old", "rlm.image.base": BASE}})
    result = build_image(engine, repo, base_image=BASE)  # type: ignore[arg-type]
    assert result.built is False
    assert engine.tagged == [("rlm-sandbox:" + digest[:12], "rlm-sandbox:latest")]


def test_making_the_local_base_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import rlm.sandbox.base_image as image

    monkeypatch.setattr(image.os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxError, match="needs root") as info:
        image.make_local_base(_FakeEngine({}))  # type: ignore[arg-type]
    assert "--base-image" in str(info.value)

    monkeypatch.setattr(image.os, "geteuid", lambda: 0)
    monkeypatch.setattr(image.shutil, "which", lambda _name: None)
    monkeypatch.setattr(image.os.path, "exists", lambda _p: False)
    with pytest.raises(SandboxError, match="debootstrap is not installed") as info:
        image.make_local_base(_FakeEngine({}))  # type: ignore[arg-type]
    assert "apt-get install" in str(info.value) and "--base-image" in str(info.value)


def test_the_package_layout_hashes_like_the_checkout() -> None:
    """rlm/sandbox/{guest,Dockerfile.sandbox} are the checkout's sources as package data (symlinks here,
    copies in a wheel): building from the installed package gives the same image as the checkout."""
    from rlm.sandbox.image import package_root, repo_root_default

    root = Path(__file__).resolve().parents[2]
    package = root / "rlm" / "sandbox"
    assert (package / "guest").resolve() == (root / "sandbox_image").resolve()
    assert (package / "Dockerfile.sandbox").resolve() == (root / "Dockerfile.sandbox").resolve()
    assert package_root() == package and repo_root_default() == package
    assert image_hash(package, BASE) == image_hash(root, BASE)


def test_a_package_copy_hashes_like_its_checkout(repo: Path, tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "rlm" / "sandbox"
    shutil.copytree(repo / "sandbox_image", package / "guest")
    shutil.copy2(repo / "Dockerfile.sandbox", package / "Dockerfile.sandbox")
    shutil.copy2(repo / "rlm" / "sandbox" / "protocol.py", package / "protocol.py")
    (package / "__init__.py").write_text("")
    assert image_hash(package, BASE) == image_hash(repo, BASE)
    (package / "guest" / "supervisor.py").write_text("print('changed')\n")
    assert image_hash(package, BASE) != image_hash(repo, BASE)
