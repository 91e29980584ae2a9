"""The embedded server's lifecycle and the fallback, with a stand-in `llama_cpp.server` process.

The stand-in is a real subprocess started by the real code (``python -m llama_cpp.server``
found first on PYTHONPATH) that answers ``/v1/models`` over real HTTP; no model is loaded.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from rlm.config import Settings
from rlm.errors import LLMError, ModelUnreachable, UsageError
from rlm.llm.local import server as e
from rlm.llm.local import weights as w
from rlm.llm.base import ModelSettings

FAKE_SERVER = r'''
import argparse, http.server, json, os, sys, time
p = argparse.ArgumentParser()
for flag in ("--model", "--model_alias", "--host", "--port", "--n_ctx", "--n_threads", "--n_threads_batch",
             "--interrupt_requests", "--logits_all", "--flash_attn", "--type_k", "--type_v"):
    p.add_argument(flag)
a = p.parse_args()
print("fake llama_cpp.server", " ".join(sys.argv[1:]), flush=True)
mode = os.environ.get("FAKE_LLAMA_MODE", "")
if mode == "exit":
    print("error: cannot load model", flush=True)
    sys.exit(3)
if mode == "hang":
    time.sleep(600)
time.sleep(float(os.environ.get("FAKE_LLAMA_DELAY", "0")))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        busy = os.environ.get("FAKE_LLAMA_BUSY_FLAG", "")
        if busy and os.path.exists(busy):   # like llama_cpp.server while it runs a completion
            time.sleep(6)
        body = json.dumps({"object": "list", "data": [{"id": a.model_alias, "object": "model"}]}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer((a.host, int(a.port)), H).serve_forever()
'''

SPEC = w.ModelSpec(size="tiny", alias="tiny-model", filename="tiny.gguf", packages=("x==1",), sha256="0" * 64,
                   total_bytes=4096, n_ctx=512)
OTHER = w.ModelSpec(size="other", alias="other-model", filename="other.gguf", packages=("y==1",), sha256="0" * 64,
                    total_bytes=4096, n_ctx=512)


@pytest.fixture
def fake_llama(tmp_path, monkeypatch):
    """A cache with SPEC's file in place and a stand-in llama_cpp.server first on PYTHONPATH."""
    pkg = tmp_path / "fakepkgs" / "llama_cpp"
    (pkg / "server").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "server" / "__init__.py").write_text("")
    (pkg / "server" / "__main__.py").write_text(FAKE_SERVER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fakepkgs"))
    monkeypatch.setattr(e, "llama_cpp_missing", lambda: [])
    monkeypatch.setattr(e, "MODELS", {"other": OTHER, "tiny": SPEC})   # the last one counts as the largest
    monkeypatch.setattr(e, "DEFAULT_SIZE", "tiny")
    cache = tmp_path / "cache"
    for spec in (SPEC, OTHER):
        path = w.model_path(spec, cache)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * spec.total_bytes)
    yield cache
    e.stop_server(cache, grace_s=2)


def test_start_reuse_stop(fake_llama):
    cache = fake_llama
    info, reused = e.start_server(SPEC, cache=cache)
    assert not reused and info.alias == "tiny-model" and info.base_url == f"http://127.0.0.1:{info.port}/v1"
    state = json.loads((cache / "server.json").read_text())
    assert state["pid"] == info.pid and state["port"] == info.port and state["model_path"].endswith("tiny.gguf")
    assert e.running_server(cache) == info
    log = Path(info.log).read_text()
    assert "--model_alias tiny-model" in log and "--host 127.0.0.1" in log and "--n_ctx 512" in log

    again, reused = e.start_server(SPEC, cache=cache)
    assert reused and again.pid == info.pid

    with pytest.raises(UsageError, match="already runs tiny-model"):
        e.start_server(OTHER, cache=cache)

    stopped = e.stop_server(cache)
    assert stopped is not None and stopped.pid == info.pid
    assert not e._alive(info.pid)
    assert not (cache / "server.json").exists()
    assert e.running_server(cache) is None
    assert e.stop_server(cache) is None


def test_a_busy_server_is_reused(fake_llama, monkeypatch, tmp_path):
    flag = tmp_path / "busy"
    monkeypatch.setenv("FAKE_LLAMA_BUSY_FLAG", str(flag))
    info, _ = e.start_server(SPEC, cache=fake_llama)
    flag.touch()
    t0 = time.perf_counter()
    assert e.running_server(fake_llama) == info
    again, reused = e.start_server(SPEC, cache=fake_llama)
    assert reused and again.pid == info.pid
    assert time.perf_counter() - t0 < 15


def test_explicit_port_is_used(fake_llama):
    port = e.free_port()
    info, _ = e.start_server(SPEC, cache=fake_llama, port=port)
    assert info.port == port and e.probe_url(info.base_url)


def test_server_that_exits_is_an_error_with_its_log(fake_llama, monkeypatch):
    monkeypatch.setenv("FAKE_LLAMA_MODE", "exit")
    with pytest.raises(LLMError, match="exited while starting") as info:
        e.start_server(SPEC, cache=fake_llama)
    assert "cannot load model" in info.value.message and "server-tiny-model.log" in info.value.hint
    assert not (fake_llama / "server.json").exists()


def test_server_not_ready_in_time_is_killed(fake_llama, monkeypatch):
    monkeypatch.setenv("FAKE_LLAMA_MODE", "hang")
    started = []
    real_popen = e.subprocess.Popen

    def spy(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(e.subprocess, "Popen", spy)
    with pytest.raises(LLMError, match="did not answer within"):
        e.start_server(SPEC, cache=fake_llama, ready_timeout_s=1.0)
    assert started and started[0].wait(timeout=10) is not None
    assert not (fake_llama / "server.json").exists()


def test_stale_state_is_cleared(fake_llama):
    dead = e.ServerInfo(pid=_dead_pid(), port=1, alias="tiny-model", size="tiny", model_path="x", log="x",
                        started_at=0.0)
    e._write_state(dead, fake_llama)
    assert e.running_server(fake_llama) is None
    assert not (fake_llama / "server.json").exists()
    info, reused = e.start_server(SPEC, cache=fake_llama)
    assert not reused and info.pid != dead.pid


def test_a_recycled_pid_is_not_taken_for_the_server(fake_llama):
    me = e.ServerInfo(pid=os.getpid(), port=1, alias="tiny-model", size="tiny", model_path="x", log="x",
                      started_at=0.0)
    e._write_state(me, fake_llama)
    assert e.running_server(fake_llama) is None        # this pytest process is alive but is not llama_cpp.server
    assert e.stop_server(fake_llama) is None           # and is never signalled


def test_missing_weights_or_llama_cpp_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(e, "llama_cpp_missing", lambda: [])
    with pytest.raises(ModelUnreachable, match="not installed") as info:
        e.start_server(SPEC, cache=tmp_path)
    assert "rlm model install --size tiny" in info.value.hint
    monkeypatch.setattr(e, "llama_cpp_missing", lambda: ["llama_cpp"])
    with pytest.raises(ModelUnreachable, match="llama-cpp-python") as info:
        e.start_server(SPEC, cache=tmp_path)
    assert "pip install '.[local]'" in info.value.hint


def test_server_command():
    cmd = e.server_command(SPEC, Path("/m/tiny.gguf"), 8123, threads=2, python="py")
    assert cmd[:3] == ["py", "-m", "llama_cpp.server"] and "--type_k" not in cmd
    joined = " ".join(cmd)
    for part in ("--model /m/tiny.gguf", "--model_alias tiny-model", "--host 127.0.0.1", "--port 8123",
                 "--n_ctx 512", "--n_threads 2", "--n_threads_batch 2", "--logits_all False",
                 "--interrupt_requests False", "--flash_attn True"):
        assert part in joined


# ------------------------------------------------------------------ the fallback

def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _closed_url() -> str:
    return f"http://127.0.0.1:{e.free_port()}/v1"


class _Answering:
    """Any HTTP server: what the probe of the default URL should accept (even a 404)."""

    def __enter__(self):
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(404)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _console():
    buf = io.StringIO()
    return Console(file=buf, width=200), buf


def test_explicit_url_is_kept_even_when_unreachable(fake_llama):
    settings = Settings(model=ModelSettings(base_url=_closed_url(), root_model="qwen3:14b"))
    console, buf = _console()
    assert e.resolve_model_settings(settings, base_url_explicit=True, console=console, cache=fake_llama) \
        is settings.model
    assert buf.getvalue() == "" and not (fake_llama / "server.json").exists()


def test_answering_default_url_is_kept(fake_llama):
    with _Answering() as url:
        settings = Settings(model=ModelSettings(base_url=url))
        t0 = time.perf_counter()
        assert e.resolve_model_settings(settings, base_url_explicit=False, cache=fake_llama) is settings.model
        assert time.perf_counter() - t0 < 1.0
    assert not (fake_llama / "server.json").exists()


def test_unreachable_default_starts_then_reuses_the_embedded_server(fake_llama):
    settings = Settings(model=ModelSettings(base_url=_closed_url(), root_model="qwen3:14b", temperature=0.7,
                                            timeout_s=60))
    console, buf = _console()
    model = e.resolve_model_settings(settings, base_url_explicit=False, console=console, cache=fake_llama)
    info = e.running_server(fake_llama)
    assert info is not None and model.base_url == info.base_url
    assert model.root_model == model.sub_model == "tiny-model" and model.temperature == 0.0
    assert model.timeout_s >= 600
    out = buf.getvalue()
    assert "no model server at" in out and "starting the embedded tiny-model" in out and "rlm model stop" in out

    console, buf = _console()
    again = e.resolve_model_settings(settings, base_url_explicit=False, console=console, cache=fake_llama)
    assert again == model and "already running" in buf.getvalue()
    assert e.running_server(fake_llama).pid == info.pid


def test_fallback_starts_the_largest_installed_model(fake_llama):
    w.model_path(SPEC, fake_llama).unlink()
    settings = Settings(model=ModelSettings(base_url=_closed_url()))
    model = e.resolve_model_settings(settings, base_url_explicit=False, console=_console()[0], cache=fake_llama)
    assert model.root_model == "other-model"


def test_fallback_reuses_a_running_server_of_another_size(fake_llama):
    e.start_server(OTHER, cache=fake_llama)
    settings = Settings(model=ModelSettings(base_url=_closed_url()))
    model = e.resolve_model_settings(settings, base_url_explicit=False, console=_console()[0], cache=fake_llama)
    assert model.root_model == "other-model"


def test_fallback_without_weights_or_llama_cpp_says_what_to_do(tmp_path, monkeypatch):
    settings = Settings(model=ModelSettings(base_url=_closed_url()))
    monkeypatch.setattr(e, "llama_cpp_missing", lambda: [])
    with pytest.raises(ModelUnreachable, match="the embedded model is not installed") as info:
        e.resolve_model_settings(settings, base_url_explicit=False, cache=tmp_path)
    assert "ollama serve" in info.value.hint.lower() and "rlm model install" in info.value.hint
    monkeypatch.setattr(e, "llama_cpp_missing", lambda: ["llama_cpp"])
    with pytest.raises(ModelUnreachable, match="llama-cpp-python"):
        e.resolve_model_settings(settings, base_url_explicit=False, cache=tmp_path)


def test_probe_is_quick_on_a_silent_port():
    import socket

    with socket.socket() as sock:                       # listens but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        t0 = time.perf_counter()
        assert not e.probe_url(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", timeout=0.3)
        assert time.perf_counter() - t0 < 1.5
    assert not e.probe_url(_closed_url())


def test_resolve_settings_adapts_budgets_only_for_the_embedded_model(fake_llama):
    from rlm.config import RunSettings
    from rlm.sandbox.settings import SandboxSettings

    base = Settings(model=ModelSettings(base_url=_closed_url()), run=RunSettings(max_sub_call_chars=500_000),
                    sandbox=SandboxSettings(cell_timeout_s=30))
    assert e.resolve_settings(base, base_url_explicit=True, cache=fake_llama) is base
    adapted = e.resolve_settings(base, base_url_explicit=False, console=_console()[0], cache=fake_llama)
    assert adapted.model.root_model in ("tiny-model", "other-model")
    assert adapted.run.max_sub_call_chars == e.EMBEDDED_MAX_SUB_CALL_CHARS
    assert adapted.sandbox.cell_timeout_s == e.EMBEDDED_CELL_TIMEOUT_S
    assert adapted.run.max_output_chars == e.EMBEDDED_MAX_OUTPUT_CHARS
    assert adapted.run.max_iterations == base.run.max_iterations and adapted.sandbox.image == base.sandbox.image
    small = Settings(run=RunSettings(max_sub_call_chars=1000, max_output_chars=500),
                     sandbox=SandboxSettings(cell_timeout_s=900))
    kept = e.adapt_settings(small, adapted.model)
    assert kept.run.max_sub_call_chars == 1000 and kept.sandbox.cell_timeout_s == 900
    assert kept.run.max_output_chars == 500
