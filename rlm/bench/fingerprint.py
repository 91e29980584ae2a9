"""What a benchmark results file's records were made with: its fingerprint.

A results file is new by default; ``--resume FILE`` continues one only when the fingerprint of
this run equals the one in its records, field for field.  The fingerprint holds:

* ``git_commit``: the checkout's HEAD, and ``dirty``: whether files that make up rlm's behaviour
  differ from it (:data:`CODE_PATHS`: ``rlm/``, ``sandbox_image/``, ``Dockerfile.sandbox``,
  ``pyproject.toml``, ``configs/``).  Other files (docs, tests, README, the results file itself
  under ``docs/bench/``) may differ.  A run on a dirty tree is recorded as such and can never be
  resumed; a test-split run on a dirty tree is refused outright.
* ``code``: a hash of the syntax trees (docstrings and comments left out) of every module that
  changes a reply or a score: ``rlm/core`` (the loop, prompts, policy), ``rlm/llm``, ``rlm/config``,
  the benchmark's generators, data readers, splits and scorers, the base prompt
  (``rlm/jobs/benchmark.py``), and the sandbox image's hash (the REPL's helpers).
* ``model_sha256`` and ``server_flags``: for rlm's embedded llama.cpp server, the sha256 of the
  model file it serves and llama-server's command line (the port left out); for another
  llama.cpp server, ``/props``'s model path and generation settings; elsewhere ``null``.
* ``settings``: every setting that can change a reply (all of rlm's settings except those
  listed in :data:`NOT_REPLY_SETTINGS`: where files go, URLs, keys, timeouts, retries), the
  benchmark's ``seed`` and ``split``, and the base model's window and token counting.
* ``data_sha256``: the pinned public-data wheel.
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
from pathlib import Path
from typing import Any

from rlm.bench.public import sha256_file

ROOT = Path(__file__).resolve().parents[2]
CODE_PATHS = ("rlm", "sandbox_image", "Dockerfile.sandbox", "pyproject.toml", "configs")
NOT_REPLY_SETTINGS = frozenset({
    "base_url", "api_key", "timeout_s", "max_retries", "max_wait_s", "max_context_bytes", "trace_dir", "debug",
    "image", "start_timeout_s", "run_root", "extra_labels", "batch_concurrency", "pool_size"})
# modules outside rlm/core, rlm/llm and rlm/config whose code changes a reply or a score
BENCH_MODULES = ("rlm/bench/generators.py", "rlm/bench/qa.py", "rlm/bench/public.py", "rlm/bench/splits.py",
                 "rlm/bench/scorers.py", "rlm/bench/demo.py", "rlm/bench/window.py", "rlm/jobs/benchmark.py")
CODE_PACKAGES = ("rlm/core", "rlm/llm", "rlm/config")


def git_state(root: Path = ROOT) -> dict[str, Any]:
    """``{"commit": HEAD or None, "dirty": [changed code paths]}``."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": []}
    status = git("status", "--porcelain", "--untracked-files=all", "--", *CODE_PATHS) or ""
    dirty = sorted({line[3:].strip() for line in status.splitlines() if line.strip()})
    return {"commit": commit.strip(), "dirty": [d for d in dirty if not d.endswith(".pyc")]}


def code_fingerprint(source: str) -> str:
    """The syntax tree of a module's source, docstrings left out, as text: equal for two sources
    that differ only in comments, docstrings and layout."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def code_hash(root: Path = ROOT) -> str:
    """16 hex digits over the code that changes a reply or a score (see the module's docstring)."""
    from rlm.sandbox.image import image_hash, repo_root_default

    digest = hashlib.sha256(image_hash(repo_root_default(), "").encode())
    paths = sorted({p for pkg in CODE_PACKAGES for p in (root / pkg).rglob("*.py")}
                   | {root / m for m in BENCH_MODULES if (root / m).exists()})
    for path in paths:
        try:
            text = code_fingerprint(path.read_text(encoding="utf-8"))
        except SyntaxError:
            text = path.read_text(encoding="utf-8")
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:16]


def reply_settings(settings) -> dict[str, Any]:
    return {k: v for k, v in sorted(settings.to_flat_dict().items()) if k not in NOT_REPLY_SETTINGS}


def server_identity(base_url: str, props: dict | None) -> dict[str, Any]:
    """``{"server", "model_sha256", "server_flags"}`` for the server at ``base_url``."""
    from rlm.llm.local.server import read_state

    info = read_state()
    if info is not None and info.base_url.rstrip("/") == base_url.rstrip("/"):
        flags: list[str] = []
        try:
            raw = Path(f"/proc/{info.server_pid}/cmdline").read_bytes().split(b"\0")
            args = [a.decode(errors="replace") for a in raw if a]
            skip = False
            for arg in args[1:]:
                if skip:
                    skip = False
                    continue
                if arg == "--port":
                    skip = True
                    continue
                flags.append(Path(arg).name if arg.startswith("/") else arg)
        except OSError:
            flags = []
        model = Path(info.model_path)
        return {"server": "embedded llama.cpp", "model_sha256": sha256_file(model) if model.is_file() else None,
                "server_flags": flags or None}
    if props:
        keep = {k: v for k, v in (props.get("default_generation_settings") or {}).items()
                if k not in ("id", "id_task", "id_slot", "is_processing", "next_token", "prompt", "n_past")}
        return {"server": "llama.cpp", "model_sha256": None,
                "server_flags": {"model_path": props.get("model_path"), "generation": keep}}
    return {"server": "other", "model_sha256": None, "server_flags": None}


def differences(theirs: dict, ours: dict, prefix: str = "") -> list[str]:
    """Readable differences between two fingerprints."""
    out = []
    for key in sorted(set(theirs) | set(ours)):
        a, b = theirs.get(key), ours.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: {_short(a)} there, {_short(b)} now")
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
