"""The embedded server's lifecycle, its keeper, the guard and the fallback, with a stand-in
``llama-server`` (tests/fake_llama_server.py): a real process started by the real code under the
real keeper, answering real HTTP; no model is loaded."""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from rlm.config import Settings
from rlm.errors import EmbeddedServerDied, LLMError, ModelUnreachable, UsageError
from rlm.llm.base import ModelSettings
from rlm.llm.local import fallback as f
from rlm.llm.local import runtime as rt
from rlm.llm.local import server as e
from rlm.llm.local import weights as w

FAKE = Path(__file__).resolve().parents[1] / "fake_llama_server.py"


def install_fake_runtime(cache: Path) -> Path:
    """A runtime folder whose llama-server is the stand-in (and a CPU library name or two)."""
    folder = rt.runtime_dir(cache)
    folder.mkdir(parents=True, exist_ok=True)
    server = folder / rt.SERVER_BINARY
    server.write_text(f"#!{sys.executable}\n" + FAKE.read_text())
    server.chmod(0o755)
    for variant in ("x64", "haswell"):
        (folder / f"libggml-cpu-{variant}.so").write_bytes(b"")
    (folder / rt.BUILD_INFO).write_text(json.dumps({"version": "test", "machine": rt._machine(),
                                                    "build_seconds": 1.0}))
    return folder

SPEC = w.ModelSpec(size="tiny", alias="tiny-model", filename="tiny.gguf", packages=("x==1",), sha256="0" * 64,
                   total_bytes=4096, n_ctx=512)
OTHER = w.ModelSpec(size="other", alias="other-model", filename="other.gguf", packages=("y==1",), sha256="0" * 64,
                    total_bytes=4096, n_ctx=512)


@pytest.fixture
def fake_llama(tmp_path, monkeypatch):
    """A cache with SPEC's and OTHER's files in place and the stand-in llama-server as its runtime."""
    monkeypatch.setattr(e, "MODELS", {"other": OTHER, "tiny": SPEC})   # the last one counts as the largest
    monkeypatch.setattr(f, "MODELS", {"other": OTHER, "tiny": SPEC})
    monkeypatch.setattr(e, "DEFAULT_SIZE", "tiny")
    cache = tmp_path / "cache"
    install_fake_runtime(cache)
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
    assert "--alias tiny-model" in log and "--host 127.0.0.1" in log and "--ctx-size 512" in log
    assert info.backend == "libggml-cpu-haswell.so" and info.server_pid not in (0, info.pid)

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
    with pytest.raises(EmbeddedServerDied, match="exited with status 3 while starting") as info:
        e.start_server(SPEC, cache=fake_llama)
    assert "cannot load model" in info.value.message and "server-tiny-model.log" in info.value.hint
    assert "ollama" not in str(info.value).lower()
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
    assert e.running_server(fake_llama) is None        # this pytest process is alive but is not the keeper
    assert e.stop_server(fake_llama) is None           # and is never signalled


def test_missing_weights_or_runtime_are_clear_errors(tmp_path):
    with pytest.raises(ModelUnreachable, match="llama-server") as info:
        e.start_server(SPEC, cache=tmp_path)
    assert "rlm model install" in info.value.hint
    install_fake_runtime(tmp_path)
    with pytest.raises(ModelUnreachable, match="not installed") as info:
        e.start_server(SPEC, cache=tmp_path)
    assert "rlm model install --size tiny" in info.value.hint


def test_server_command(tmp_path):
    runtime = rt.RuntimeInfo(path=Path("/opt/llama"), version="v", machine="x86_64", variants=("x64",),
                             build_seconds=None)
    cmd = e.server_command(runtime, SPEC, Path("/m/tiny.gguf"), 8123, exit_file=tmp_path / "exit.json", threads=2,
                           python="py")
    assert cmd[:5] == ["py", "-m", "rlm.llm.local.keeper", "--status", str(tmp_path / "exit.json")]
    assert cmd[6] == "/opt/llama/llama-server"
    joined = " ".join(cmd)
    for part in ("--model /m/tiny.gguf", "--alias tiny-model", "--host 127.0.0.1", "--port 8123",
                 "--ctx-size 512", f"--n-predict {e.MAX_REPLY_TOKENS}", "--threads 2", "--threads-batch 2", "--parallel 2", "--kv-unified", "--no-cache-idle-slots",
                 "--flash-attn on", "--no-webui"):
        assert part in joined


# ------------------------------------------------------------------ deaths: keeper, prove, guard

def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_crash_on_the_first_completion_is_named(fake_llama, monkeypatch):
    monkeypatch.setenv("FAKE_LLAMA_CRASH_ON_CHAT", "1")
    info, _ = e.start_server(SPEC, cache=fake_llama)
    try:
        reply = e.prove(info)
    except EmbeddedServerDied as exc:
        text, hint = str(exc), exc.hint or ""
    else:
        pytest.fail(f"prove() returned {reply!r}; log:\n{Path(info.log).read_text()}")
    assert "killed by signal 11 (SIGSEGV)" in text and "on its first completion" in text
    assert "crashing on this completion" in text and info.log in hint
    assert "ollama" not in text.lower()


def test_ensure_server_proves_a_fresh_server(fake_llama, monkeypatch):
    monkeypatch.setenv("FAKE_LLAMA_CRASH_ON_CHAT", "1")
    assert e.running_server(fake_llama) is None
    try:
        info, reused = f.ensure_server(SPEC, cache=fake_llama)
    except EmbeddedServerDied as exc:
        assert "SIGSEGV" in str(exc)
    else:
        log = Path(info.log).read_text()
        pytest.fail(f"no crash reported (reused={reused}, {info}); log:\n{log}")
    monkeypatch.delenv("FAKE_LLAMA_CRASH_ON_CHAT")
    info, reused = f.ensure_server(SPEC, cache=fake_llama)
    assert not reused and e.prove(info).startswith("ready")


def _guarded(info, notes):
    from rlm.llm.local.guard import EmbeddedGuard, GuardedClient
    from rlm.llm.openai_client import OpenAICompatibleClient

    inner = OpenAICompatibleClient(ModelSettings(base_url=info.base_url, root_model=info.alias, max_retries=1,
                                                 timeout_s=30), backoff_base_s=0.05)
    return GuardedClient(inner, EmbeddedGuard(info, SPEC, cache=info_cache(info), say=notes.append))


def info_cache(info) -> Path:
    return Path(info.log).parent


def test_sigsegv_in_the_middle_of_a_request_is_reported(fake_llama, monkeypatch, tmp_path):
    seen = tmp_path / "seen"
    monkeypatch.setenv("FAKE_LLAMA_SEEN", str(seen))
    monkeypatch.setenv("FAKE_LLAMA_CHAT_DELAY", "30")
    info, _ = e.start_server(SPEC, cache=fake_llama)
    notes: list[str] = []
    client = _guarded(info, notes)
    errors: list[BaseException] = []

    def ask():
        try:
            client.complete([{"role": "user", "content": "hi"}], model=info.alias)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    t = threading.Thread(target=ask)
    t.start()
    _wait_for(lambda: seen.exists() and seen.read_text().strip() != "")
    os.kill(info.server_pid, 11)
    t.join(timeout=30)
    assert not t.is_alive() and len(errors) == 1
    err = errors[0]
    assert isinstance(err, EmbeddedServerDied)
    assert "killed by signal 11 (SIGSEGV) during a request" in err.message and info.log in err.hint
    assert "ollama" not in str(err).lower() and notes == []
    from rlm.cli.app import exit_code_for

    assert exit_code_for(err) == 4
    client.close()


def test_a_death_between_requests_restarts_once_and_says_so(fake_llama):
    info, _ = e.start_server(SPEC, cache=fake_llama)
    notes: list[str] = []
    client = _guarded(info, notes)
    assert client.complete([{"role": "user", "content": "hi"}], model=info.alias).text.startswith("ready")
    os.kill(info.server_pid, 9)
    _wait_for(lambda: not e.alive(info))
    reply = client.complete([{"role": "user", "content": "again"}], model=info.alias)
    assert reply.text.startswith("ready")
    assert any("killed by signal 9 (SIGKILL) between requests" in n and "restarting it once" in n for n in notes)
    assert any("restarted" in n for n in notes)
    again = e.running_server(fake_llama)
    assert again is not None and again.port == info.port and again.pid != info.pid
    os.kill(again.server_pid, 15)
    _wait_for(lambda: not e.alive(again))
    with pytest.raises(EmbeddedServerDied, match="after a restart"):
        client.complete([{"role": "user", "content": "third"}], model=info.alias)
    client.close()


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
    lines: list[str] = []

    class Buf:
        def getvalue(self) -> str:
            return "\n".join(lines)

    return lines.append, Buf()


def test_explicit_url_is_kept_even_when_unreachable(fake_llama):
    settings = Settings(model=ModelSettings(base_url=_closed_url(), root_model="qwen3:14b"))
    console, buf = _console()
    assert f.resolve(settings, base_url_explicit=True, say=console, cache=fake_llama).settings is settings
    assert buf.getvalue() == "" and not (fake_llama / "server.json").exists()


def test_answering_default_url_is_kept(fake_llama):
    with _Answering() as url:
        settings = Settings(model=ModelSettings(base_url=url))
        t0 = time.perf_counter()
        assert f.resolve(settings, base_url_explicit=False, cache=fake_llama).settings is settings
        assert time.perf_counter() - t0 < 1.0
    assert not (fake_llama / "server.json").exists()


def test_unreachable_default_starts_then_reuses_the_embedded_server(fake_llama):
    settings = Settings(model=ModelSettings(base_url=_closed_url(), root_model="qwen3:14b", temperature=0.7,
                                            timeout_s=60))
    console, buf = _console()
    model = f.resolve(settings, base_url_explicit=False, say=console, cache=fake_llama).settings.model
    info = e.running_server(fake_llama)
    assert info is not None and model.base_url == info.base_url
    assert model.root_model == model.sub_model == "tiny-model" and model.temperature == 0.0
    assert model.timeout_s >= 600
    out = buf.getvalue()
    assert "no model server at" in out and "starting the embedded tiny-model" in out and "rlm model stop" in out

    console, buf = _console()
    again = f.resolve(settings, base_url_explicit=False, say=console, cache=fake_llama).settings.model
    assert again == model and "already running" in buf.getvalue()
    assert e.running_server(fake_llama).pid == info.pid


def test_fallback_starts_the_largest_installed_model(fake_llama):
    w.model_path(SPEC, fake_llama).unlink()
    settings = Settings(model=ModelSettings(base_url=_closed_url()))
    model = f.resolve(settings, base_url_explicit=False, say=_console()[0], cache=fake_llama).settings.model
    assert model.root_model == "other-model"


def test_fallback_reuses_a_running_server_of_another_size(fake_llama):
    e.start_server(OTHER, cache=fake_llama)
    settings = Settings(model=ModelSettings(base_url=_closed_url()))
    model = f.resolve(settings, base_url_explicit=False, say=_console()[0], cache=fake_llama).settings.model
    assert model.root_model == "other-model"


def test_fallback_without_weights_or_runtime_says_what_to_do(tmp_path):
    settings = Settings(model=ModelSettings(base_url=_closed_url()))
    with pytest.raises(ModelUnreachable, match="llama.cpp's server is not built") as info:
        f.resolve(settings, base_url_explicit=False, cache=tmp_path)
    assert "ollama serve" in info.value.hint.lower() and "rlm model install" in info.value.hint
    install_fake_runtime(tmp_path)
    with pytest.raises(ModelUnreachable, match="the embedded model is not installed"):
        f.resolve(settings, base_url_explicit=False, cache=tmp_path)


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
    assert f.resolve(base, base_url_explicit=True, cache=fake_llama).settings is base
    adapted = f.resolve(base, base_url_explicit=False, say=_console()[0], cache=fake_llama).settings
    assert adapted.model.root_model in ("tiny-model", "other-model")
    assert adapted.run.max_sub_call_chars == f.EMBEDDED_MAX_SUB_CALL_CHARS
    assert adapted.sandbox.cell_timeout_s == f.EMBEDDED_CELL_TIMEOUT_S
    assert adapted.run.max_output_chars == f.EMBEDDED_MAX_OUTPUT_CHARS
    assert adapted.run.max_iterations == base.run.max_iterations and adapted.sandbox.image == base.sandbox.image
    small = Settings(run=RunSettings(max_sub_call_chars=1000, max_output_chars=500),
                     sandbox=SandboxSettings(cell_timeout_s=900))
    kept = f.adapt_settings(small, adapted.model)
    assert kept.run.max_sub_call_chars == 1000 and kept.sandbox.cell_timeout_s == 900
    assert kept.run.max_output_chars == 500


def test_status_json_names_the_build_and_the_cpu_backend(fake_llama, monkeypatch):
    from typer.testing import CliRunner

    from rlm.cli import app

    monkeypatch.setenv("RLM_CACHE_DIR", str(fake_llama))
    monkeypatch.setattr(w, "MODELS", {"other": OTHER, "tiny": SPEC})
    runner = CliRunner()
    idle = json.loads(runner.invoke(app, ["model", "status", "--json"]).stdout)
    assert idle["server"] is None and idle["cpu_backend"] is None
    assert idle["runtime"]["variants"] == ["haswell", "x64"]
    e.start_server(SPEC, cache=fake_llama)
    result = runner.invoke(app, ["model", "status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["cpu_backend"] == "libggml-cpu-haswell.so" and data["server"]["backend"] == data["cpu_backend"]
    text = runner.invoke(app, ["model", "status"]).stdout
    assert "CPU backend libggml-cpu-haswell.so" in text and "CPU variants haswell, x64 (chosen at run time)" in text


def test_slot_profiles_name_their_llama_server_flags() -> None:
    from rlm.llm.local.slots import DEFAULT_PROFILE, ONE_SLOT_PROFILE

    assert DEFAULT_PROFILE.flags() == ["--parallel", "2", "--kv-unified", "--no-cache-idle-slots", "--cache-ram", "1024"]
    assert ONE_SLOT_PROFILE.flags() == ["--parallel", "1"]  # llama-server's own prompt caching, one slot


def test_the_base_runs_slow_client_is_guarded_like_the_runs_client(fake_llama):
    """`rlm benchmark --compare-base` asks the base model on a client of its own (a longer wait):
    that client too restarts a dead embedded server instead of failing as an unreachable one."""
    from rlm.llm.resolve import slow_client

    info, _ = e.start_server(SPEC, cache=fake_llama)
    notes: list[str] = []
    client = _guarded(info, notes)
    settings = Settings(model=ModelSettings(base_url=info.base_url, root_model=info.alias, max_retries=1,
                                            timeout_s=30))
    slow = slow_client(client, settings, 3600)
    assert slow.inner.settings.timeout_s == 3600          # type: ignore[attr-defined]
    os.kill(info.server_pid, 9)
    _wait_for(lambda: not e.alive(info))
    assert slow.complete([{"role": "user", "content": "hi"}], model=info.alias).text.startswith("ready")
    assert any("restarting it once" in n for n in notes)
    again = e.running_server(fake_llama)
    assert again is not None
    os.kill(again.server_pid, 15)
    _wait_for(lambda: not e.alive(again))
    slow.close()
    client.close()
