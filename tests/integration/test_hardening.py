"""Hardening of the sandbox container, checked from inside it (and from the engine)."""

from __future__ import annotations

import errno
import http.server
import json
import os
import threading
import urllib.request
import uuid

import docker
import pytest

from rlm.errors import SandboxError
from rlm.sandbox import SandboxSession, SandboxSettings

pytestmark = pytest.mark.docker

CANARY = "RLM_TEST_CANARY_" + uuid.uuid4().hex[:8].upper()
CANARY_VALUE = "host-secret-" + uuid.uuid4().hex


def _value(session: SandboxSession, code: str, expr: str):
    ex = session.execute(code + f"\nimport json as _j\nprint(_j.dumps({expr}))", timeout=30)
    assert ex.ok, ex.output
    return json.loads(ex.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hard(engine):
    """A session with the default settings; the canary variable is set on the host before it opens."""
    os.environ[CANARY] = CANARY_VALUE
    try:
        with SandboxSession(settings=SandboxSettings(cell_timeout_s=30), engine=engine) as s:
            yield s
    finally:
        os.environ.pop(CANARY, None)


TIGHT = SandboxSettings(cell_timeout_s=30, memory_mb=1024, tmpfs_mb=8, fsize_mb=2, pids_limit=64)


@pytest.fixture(scope="module")
def tight(engine):
    """Small limits, so each one can be hit quickly."""
    with SandboxSession(settings=TIGHT, engine=engine) as s:
        yield s


# ------------------------------------------------------------------------------ network
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_no_network_at_all(hard):
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), _Quiet)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # the server really answers on the host, so a failure inside means isolation
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.status == 200
        targets = [("1.1.1.1", 80), ("8.8.8.8", 53), ("127.0.0.1", port), ("172.17.0.1", port)]
        code = (
            "import socket\n"
            f"targets = {targets!r}\n"
            "outcome = {}\n"
            "for host, port in targets:\n"
            "    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
            "    s.settimeout(3)\n"
            "    try:\n"
            "        s.connect((host, port))\n"
            "        outcome[f'{host}:{port}'] = 'connected'\n"
            "    except OSError as e:\n"
            "        outcome[f'{host}:{port}'] = type(e).__name__ + ':' + str(e.errno)\n"
            "    finally:\n"
            "        s.close()\n"
            "import os\n"
            "ifaces = sorted(os.listdir('/sys/class/net'))\n"
            "dev = [l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]]\n"
        )
        got = _value(hard, code, "[outcome, ifaces, dev]")
    finally:
        server.shutdown()
        server.server_close()
    outcome, ifaces, dev = got
    assert all(v != "connected" for v in outcome.values()), outcome
    assert ifaces == ["lo"] and dev == ["lo"]


def test_canary_container_on_the_same_engine_is_unreachable(hard):
    """A real container on Docker's default bridge (reachable from the host) must not be reachable."""
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    testcontainers_config.ryuk_disabled = True  # its reaper image cannot be pulled here
    ready = LogMessageWaitStrategy("Serving HTTP").with_startup_timeout(30).with_poll_interval(0.05)
    canary = DockerContainer(hard.settings.image).with_command(
        ["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0"]).waiting_for(ready)
    with canary:
        wrapped = canary.get_wrapped_container()
        wrapped.reload()
        ip = wrapped.attrs["NetworkSettings"]["IPAddress"] or next(
            iter(wrapped.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
        assert ip
        with urllib.request.urlopen(f"http://{ip}:8000/", timeout=5) as resp:  # reachable from the host
            assert resp.status == 200
        code = (
            "import socket\n"
            "s = socket.socket(); s.settimeout(3)\n"
            "try:\n"
            f"    s.connect(({ip!r}, 8000)); result = 'connected'\n"
            "except OSError as e:\n"
            "    result = 'blocked:' + str(e.errno)\n"
        )
        assert _value(hard, code, "result").startswith("blocked")


# ------------------------------------------------------------------------- filesystem
def test_root_filesystem_is_read_only_and_tmp_is_writable(hard):
    code = (
        "import errno\n"
        "res = {}\n"
        "for p in ['/usr/evil', '/etc/evil', '/opt/rlm/evil.py', '/evil']:\n"
        "    try:\n"
        "        open(p, 'w').write('x'); res[p] = 'ok'\n"
        "    except OSError as e:\n"
        "        res[p] = e.errno\n"
        "open('/tmp/scratch.txt', 'w').write('hello')\n"
        "res['tmp'] = open('/tmp/scratch.txt').read()\n"
        "import os\n"
        "open(os.path.expanduser('~/note.txt'), 'w').write('home')\n"
        "res['home'] = open(os.path.expanduser('~/note.txt')).read()\n"
    )
    res = _value(hard, code, "res")
    assert res.pop("tmp") == "hello" and res.pop("home") == "home"
    assert set(res.values()) == {errno.EROFS}, res


def test_tmp_is_capped_by_tmpfs_mb(tight):
    code = (
        "import os, errno\n"
        "written, err = 0, None\n"
        "try:\n"
        "    for i in range(20):\n"  # 20 x 1 MiB files: each under fsize_mb, together past tmpfs_mb
        "        with open(f'/tmp/fill{i}', 'wb') as f:\n"
        "            f.write(b'x' * (1 << 20))\n"
        "        written += 1\n"
        "except OSError as e:\n"
        "    err = e.errno\n"
        "for i in range(20):\n"
        "    try: os.unlink(f'/tmp/fill{i}')\n"
        "    except FileNotFoundError: pass\n"
    )
    written, err = _value(tight, code, "[written, err]")
    assert err == errno.ENOSPC
    assert written < TIGHT.tmpfs_mb + 1


def test_file_size_ulimit(tight):
    code = (
        "import os\n"
        "err = None\n"
        "try:\n"
        "    with open('/tmp/big.bin', 'wb') as f:\n"
        f"        f.write(b'x' * ({TIGHT.fsize_mb} * (1 << 20) + 4096))\n"
        "except OSError as e:\n"
        "    err = e.errno\n"
        "size = os.path.getsize('/tmp/big.bin')\n"
        "os.unlink('/tmp/big.bin')\n"
    )
    err, size = _value(tight, code, "[err, size]")
    assert err == errno.EFBIG
    assert size <= TIGHT.fsize_mb * (1 << 20)
    assert tight.execute("1 + 1").display == ["2"]


# ------------------------------------------------------------------- users and privileges
def test_runs_as_uid_gid_61000_without_capabilities_or_new_privileges(hard):
    code = (
        "import os\n"
        "status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"
        "ids = [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), sorted(os.getgroups())]\n"
    )
    ids, status = _value(hard, code, "[ids, status]")
    assert ids == [61000, 61000, 61000, 61000, [61000]]
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[cap].strip(), 16) == 0, (cap, status[cap])
    assert status["NoNewPrivs"].strip() == "1"


def test_no_host_environment_inside(hard):
    assert os.environ.get(CANARY) == CANARY_VALUE  # the host had it when the session opened
    code = (
        "import os\n"
        f"name, value = {CANARY!r}, {CANARY_VALUE!r}\n"
        "in_env = name in os.environ or any(value in v for v in os.environ.values())\n"
        "found, readable = [], 0\n"
        "for pid in os.listdir('/proc'):\n"
        "    if not pid.isdigit():\n"
        "        continue\n"
        "    try:\n"
        "        data = open(f'/proc/{pid}/environ', 'rb').read()\n"
        "    except OSError:\n"
        "        continue\n"
        "    readable += 1\n"
        "    if name.encode() in data or value.encode() in data:\n"
        "        found.append(pid)\n"
    )
    in_env, found, readable = _value(hard, code, "[in_env, found, readable]")
    assert not in_env
    assert found == []
    assert readable >= 1  # the kernel (the supervisor is not dumpable: its environ is unreadable even to its uid)


def test_container_carries_session_and_owner_labels(engine, hard):
    labelled = [c for c in engine.list_labelled(f"rlm.session={hard.id}")]
    assert [c.id for c in labelled] == [hard.container_id]
    labels = labelled[0].labels
    assert labels["rlm.session"] == hard.id
    assert labels["rlm.owner_pid"] == str(os.getpid())


def test_settings_reach_the_engine(hard):
    """Each hardening setting is applied to the container, none silently dropped."""
    s = hard.settings
    client = docker.from_env()
    try:
        host = client.api.inspect_container(hard.container_id)["HostConfig"]
    finally:
        client.close()
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert any(o.startswith("no-new-privileges") for o in host["SecurityOpt"])
    assert host["PidsLimit"] == s.pids_limit
    assert host["Memory"] == s.memory_mb * 1024 * 1024
    assert host["MemorySwap"] == host["Memory"]  # no extra swap
    assert host["NanoCpus"] == int(s.cpus * 1e9)
    assert host["Init"] is s.init  # off by default: rlm's supervisor is pid 1
    assert any(o.startswith("seccomp=") for o in host["SecurityOpt"])  # rlm's profile
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]}
    assert ulimits["nofile"] == (s.nofile, s.nofile)
    assert ulimits["fsize"] == (s.fsize_mb << 20, s.fsize_mb << 20)
    assert f"size={s.tmpfs_mb}m" in host["Tmpfs"]["/tmp"]
    inside = _value(hard, "import resource", "[resource.getrlimit(resource.RLIMIT_NOFILE), "
                                            "open('/proc/1/cmdline').read().split(chr(0))[1]]")
    assert inside == [[s.nofile, s.nofile], "/opt/rlm/supervisor.py"]


def test_unknown_runtime_is_an_error_not_ignored(engine):
    before = {c.id for c in engine.list_labelled("rlm.session")}
    s = SandboxSession(settings=SandboxSettings(runtime="no-such-runtime-rlm"), engine=engine)
    with pytest.raises(SandboxError):
        s.open()
    assert s.closed
    assert {c.id for c in engine.list_labelled("rlm.session")} == before
    assert s.run_dir is None or not s.run_dir.exists()


# ------------------------------------------------------------------------ resources
def test_pids_limit_stops_a_process_flood_and_the_session_answers(tight):
    code = (
        "import subprocess\n"
        "procs, err = [], None\n"
        "try:\n"
        "    for i in range(300):\n"
        "        procs.append(subprocess.Popen(['sleep', '120']))\n"
        "except OSError as e:\n"
        "    err = type(e).__name__\n"
        "started = len(procs)\n"
        "for p in procs:\n"
        "    p.kill()\n"
        "for p in procs:\n"
        "    p.wait()\n"
    )
    err, started = _value(tight, code, "[err, started]")
    assert err is not None
    assert 0 < started < TIGHT.pids_limit
    after = tight.execute("import os; print(len(os.listdir('/proc')) > 0)")
    assert after.ok and after.stdout == "True\n" and after.restarted is None


def test_memory_bomb_raises_memory_error_and_the_session_continues(hard):
    hard.execute("survivor = 'alive'")
    # fill /tmp first: tmpfs pages count against the memory limit, the RLIMIT_AS margin must cover them
    fill = hard.execute(
        "import os\ntry:\n    for i in range(100):\n        open(f'/tmp/f{i}', 'wb').write(b'x' * (1 << 20))\n"
        "except OSError:\n    pass")
    assert fill.ok, fill.output
    ex = hard.execute("bomb = []\nwhile True:\n    bomb.append(b'\\x01' * (16 << 20))", timeout=60)
    assert ex.error_name == "MemoryError", ex.output
    assert ex.restarted is None and not ex.state_lost
    after = hard.execute("del bomb\nimport os\nfor i in range(100):\n    try: os.unlink(f'/tmp/f{i}')\n"
                         "    except FileNotFoundError: pass\nprint(survivor)")
    assert after.ok and after.stdout == "alive\n"


def test_oom_kill_of_the_kernel_ends_in_a_usable_session(tight):
    """Two processes together past the cgroup limit: the kernel (the larger) is OOM-killed."""
    tight.execute("before_oom = 1")
    code = (
        "import subprocess, sys\n"
        "held = b'\\x01' * (550 << 20)\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import time; x = b\"\\\\x01\" * (450 << 20); time.sleep(60)'])\n"
        "child.wait()\n"
    )
    ex = tight.execute(code, timeout=60)
    assert ex.restarted in ("kernel", "container"), ex.output
    assert ex.state_lost
    assert "memory" in (ex.notice or "")
    after = tight.execute("print('before_oom' in globals(), 2 + 2)")
    assert after.ok and after.stdout == "False 4\n"
