"""gVisor for real: `rlm sandbox gvisor install` on this machine (idempotent), then sessions under runsc.

Needs root and apt-get (to install runsc when missing) and a local dockerd; skipped elsewhere
unless CI is set (CI runs as root and must be able to install it).
"""

from __future__ import annotations

import os
import shutil

import pytest

from rlm.sandbox import SandboxSession, SandboxSettings, gvisor, runtime

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def installed(engine):
    if (os.geteuid() != 0 or shutil.which("apt-get") is None) and not gvisor.find_runsc():
        if os.environ.get("CI"):
            pytest.fail("CI must be able to install runsc (root and apt-get)")
        pytest.skip("installing runsc needs root and apt-get")
    first = gvisor.install(engine_factory=lambda: engine_proxy(engine))
    runtime.forget()
    return first


class engine_proxy:  # noqa: N801 - a thin wrapper: install() closes its engine, the test's one stays open
    def __init__(self, engine):
        self._engine = engine

    def info(self):
        return self._engine.info()

    def close(self):
        pass


def test_install_registers_runsc_and_a_second_run_does_nothing(installed, engine):
    again = gvisor.install(engine_factory=lambda: engine_proxy(engine))
    assert not again.changed, f"second run acted: {again.actions}"
    st = gvisor.status(engine)
    assert st.registered and st.configured and st.platform == "ptrace", st
    assert st.version and "runsc" in st.version
    entry = engine.info()["Runtimes"]["runsc"]
    assert entry["path"] == installed.runsc_path and tuple(entry["runtimeArgs"]) == gvisor.RUNTIME_ARGS
    assert runtime.RUNSC in runtime.available_runtimes(engine)


def test_a_session_under_runsc_runs_in_gvisor_with_its_limits(installed, engine):
    with SandboxSession(settings=SandboxSettings(runtime="runsc", cell_timeout_s=20), engine=engine) as s:
        attrs = engine._client.containers.get(s.container_id).attrs
        assert attrs["HostConfig"]["Runtime"] == "runsc"
        r = s.execute("import resource, subprocess\n"
                      "print(resource.getrlimit(resource.RLIMIT_NPROC))\n"
                      "print(subprocess.run(['dmesg'], capture_output=True, text=True).stdout.count('gVisor'))")
        nproc, gvisor_lines = r.stdout.split("\n")[:2]
        assert nproc == "(51, 51)", r.output   # pids_limit 128, but 2048 MB // 40 MB per task (runtime.py)
        assert int(gvisor_lines) >= 1, "dmesg inside shows gVisor's own kernel log"
        assert s.execute("print(6*7)").stdout.strip() == "42"


def test_runc_stays_one_setting_away(installed, engine):
    with SandboxSession(settings=SandboxSettings(runtime="runc", cell_timeout_s=20), engine=engine) as s:
        attrs = engine._client.containers.get(s.container_id).attrs
        assert attrs["HostConfig"]["Runtime"] == "runc"
        assert s.execute("print(open('/proc/self/status').read().count('NoNewPrivs'))").stdout.strip() == "1"
