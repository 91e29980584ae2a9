"""Host-specific attacks: they need the test suite's own fixtures (a sibling container, the Docker
API, a second session, a custom handler), so they are not part of the shipped catalogue."""

from __future__ import annotations

import json
import secrets
import threading
import time

import pytest

from rlm.config import load_settings
from rlm.sandbox import SandboxSession
from rlm.security import Attack, host, refused, report_of, run_attack

from .conftest import sibling_requests

pytestmark = pytest.mark.docker


def pids_current(container_id: str) -> int | None:
    """Host tasks (processes and threads) in the container's pids cgroup; None when unread."""
    folder = host._first_dir(host._CGROUP_DIRS, container_id)
    try:
        return int((folder / "pids.current").read_text()) if folder else None
    except (OSError, ValueError):
        return None


def test_sibling_container_unreachable(pool, sibling):
    def no_requests(execution, ctx, data):
        seen = sibling_requests(sibling)
        return not seen, ("the sibling logged no request" if not seen else f"SIBLING WAS REACHED: {seen[:3]}")

    attack = Attack("net_sibling_container", "network", "a container on the same engine is unreachable", r"""
        import socket
        ip, port = PROBE["sibling"]
        def tcp():
            with socket.create_connection((ip, port), timeout=3) as s:
                s.sendall(b"GET /from-the-sandbox HTTP/1.0\r\n\r\n")
                s.recv(100)
        def udp():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"x", (ip, port))
        def ping():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP) as s:
                s.sendto(b"\x08\x00\xf7\xff\x00\x00\x00\x00", (ip, 0))
        gateway = ip.rsplit(".", 1)[0] + ".1"
        report(out={"tcp sibling": attempt(tcp), "udp sibling": attempt(udp), "icmp sibling": attempt(ping),
                    "tcp bridge gateway " + gateway: attempt(socket.create_connection, (gateway, 2375), timeout=3)})
    """, refused("out", extra=no_requests))
    result = run_attack(pool, attack)
    assert result.alive and result.passed, result.seen


def test_api_key_from_settings_never_enters_the_sandbox(engine, tmp_path, canaries, base_settings):
    """A key given the usual ways (environment / .env) is in the host's Settings and nowhere in the container."""
    key = "sk-rlm-canary-" + secrets.token_hex(16)
    (tmp_path / ".env").write_text(f"OPENAI_API_KEY={key}\n")
    loaded = load_settings(environ={"RLM_API_KEY": key, "RLM_RUNTIME": base_settings.runtime}, cwd=tmp_path)
    assert loaded.settings.model.api_key == key  # the host really has it
    with SandboxSession(settings=loaded.settings.sandbox, engine=engine) as session:
        container_env = engine._client.containers.get(session.container_id).attrs["Config"]["Env"]
        r = session.execute(
            "import os\n"
            "blobs = {}\n"
            "for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
            "    try:\n"
            "        blobs[pid] = open(f'/proc/{pid}/environ', 'rb').read().decode('utf-8', 'replace')\n"
            "    except OSError as exc:\n"
            "        blobs[pid] = type(exc).__name__\n"
            "import json; print(json.dumps(blobs))")
        blobs = json.loads(r.stdout)
        assert session.execute("print(1+1)").stdout.strip() == "2"
    assert len(blobs) >= 2  # the supervisor (pid 1, unreadable: not dumpable) and the kernel
    assert not any(key in value for value in container_env), "the API key is in the container's configuration"
    assert not any(key in text for text in blobs.values()), "the API key is in a process environment inside"
    assert not any(v in text for v in canaries.env_values.values() for text in blobs.values())


def test_sessions_cannot_reach_each_other(pool, engine, canaries, base_settings):
    """Another session's run folder and bridge (host paths) are invisible; its processes too."""
    with SandboxSession(settings=base_settings, engine=engine) as other:
        marker = other.execute("import os; print(os.getpid())").stdout.strip()
        paths = [str(other.run_dir), str(other.run_dir / "run" / "k-1"), str(other.run_dir / "bridge" / "llm.sock")]

        def untouched(execution, ctx, data):
            alive = other.execute("print(1+1)").stdout.strip() == "2"
            return alive, "the other session still answers" if alive else "THE OTHER SESSION WAS HURT"

        attack = Attack("cross_session", "files", "another session's folders and sockets are out of reach",
                        r"""
            import os, socket
            def connect(p):
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(p)
            out = {}
            for p in PATHS:
                out["stat " + p] = attempt(os.stat, p)
                out["connect " + p] = attempt(connect, p)
            kernels = [p for p in os.listdir("/proc") if p.isdigit()
                       and b"kernel_main.py" in open(f"/proc/{p}/cmdline", "rb").read()]
            out["the other session's kernel process"] = "ok" if len(kernels) > 1 else "invisible"
            report(out=out)
        """.replace("PATHS", json.dumps(paths)), refused("out", extra=untouched))
        result = run_attack(pool, attack)
        assert marker.isdigit()
    assert result.alive and result.passed, result.seen


def test_fork_bomb_in_one_session_does_not_stop_another(pool, engine, base_settings):
    """Sessions have their own pids/CPU limits: a bomb in one leaves another (and the host) working."""
    with SandboxSession(settings=base_settings, engine=engine) as victim:
        started = threading.Event()

        def detonate():
            started.set()
            victim.execute("import os, time\n"
                           "if os.fork() == 0:\n"
                           "    while True:\n"
                           "        try:\n"
                           "            os.fork()\n"
                           "        except OSError:\n"
                           "            time.sleep(0.5)\n"
                           "time.sleep(3600)", timeout=30)

        thread = threading.Thread(target=detonate)
        thread.start()
        started.wait()
        # Readiness, from the host: runc's pids cgroup holds the guest processes (full near 128); under gVisor
        # it holds the Sentry's threads, which grow with the guest's processes (about 4 per busy process),
        # or the bomb filled the victim's memory first and the host ended it.
        gvisor = base_settings.runtime == "runsc"
        deadline = time.monotonic() + 25
        while True:
            current = pids_current(victim.container_id) or 0
            info = engine.inspect(victim.container_id)
            if current >= (300 if gvisor else 100) or (gvisor and (info is None or info.status != "running")):
                break
            assert time.monotonic() < deadline, f"the neighbour's fork bomb never went off ({current} tasks)"
            time.sleep(0.05)
        attack = Attack("neighbour_fork_bomb", "resources", "another session keeps working", r"""
            import subprocess
            report(spawn="works" if subprocess.run(["true"]).returncode == 0 else "refused")
        """, lambda execution, ctx: ((report_of(execution) or {}).get("spawn") == "works",
                                     "new processes start while the neighbour bombs"))
        result = run_attack(pool, attack)
        victim.interrupt()  # ends the victim's cell; closing the session removes its container and the bomb
        thread.join()
    assert result.alive and result.passed, result.seen


def test_large_subcall_reply_is_delivered(engine, base_settings):
    """A sub-call reply much larger than the socket buffer arrives whole, even to a slow reader."""
    big = "y" * 2_000_000
    with SandboxSession(settings=base_settings, engine=engine, handler=lambda request: {"text": big}) as s:
        # The client reads the reply a moment late (a busy kernel does): the host must still deliver it whole.
        r = s.execute(r"""
import json, socket, struct, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(3)
s.connect("/rlm/bridge/llm.sock")
body = json.dumps({"v": 1, "id": 1, "op": "llm_query", "prompt": "give me a long answer"}).encode()
s.sendall(struct.pack(">I", len(body)) + body)
time.sleep(0.5)
data = b""
try:
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        data += chunk
        if len(data) >= 4 and len(data) >= 4 + struct.unpack(">I", data[:4])[0]:
            break
except socket.timeout:
    pass
print(len(data) - 4, struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None)
""", timeout=10)
        assert s.execute("print(1+1)").stdout.strip() == "2"
    got, announced = r.stdout.split()
    assert announced != "None" and int(got) == int(announced), f"received {got} of {announced} bytes"
