"""gVisor registration (daemon.json merge, atomic write) and runtime resolution, without an engine."""

from __future__ import annotations

import json
import os

import pytest

from rlm.errors import SandboxError
from rlm.sandbox import gvisor, runtime


def test_merge_adds_runsc_and_keeps_every_other_key():
    config = {"log-driver": "json-file", "registry-mirrors": ["http://127.0.0.1:5000"],
              "runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}, "default-runtime": "runc"}
    merged, changed = gvisor.merge_runtime(config, "/usr/bin/runsc")
    assert changed
    assert merged["runtimes"]["runsc"] == {"path": "/usr/bin/runsc",
                                           "runtimeArgs": ["--host-uds=all", "--platform=ptrace", "--network=none"]}
    assert merged["runtimes"]["nvidia"] == {"path": "nvidia-container-runtime"}
    assert {k: v for k, v in merged.items() if k != "runtimes"} == {k: v for k, v in config.items()
                                                                    if k != "runtimes"}
    assert "runsc" not in config["runtimes"], "the input is not modified"


def test_merge_is_idempotent():
    once, _ = gvisor.merge_runtime({}, "/usr/bin/runsc")
    twice, changed = gvisor.merge_runtime(once, "/usr/bin/runsc")
    assert not changed and twice == once


def test_merge_replaces_a_runsc_entry_with_other_args():
    old = {"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--platform=kvm"]}}}
    merged, changed = gvisor.merge_runtime(old, "/usr/bin/runsc")
    assert changed and merged["runtimes"]["runsc"]["runtimeArgs"] == list(gvisor.RUNTIME_ARGS)


@pytest.mark.parametrize("text", [None, "", "  \n"])
def test_missing_or_blank_daemon_json_is_an_empty_config(text):
    assert gvisor.parse_daemon_json(text) == {}


@pytest.mark.parametrize("text, what", [('{"runtimes": ', "not valid JSON"), ("[1, 2]", "not an object"),
                                        ('{"runtimes": []}', '"runtimes" is not an object')])
def test_invalid_daemon_json_is_an_error_with_what_to_do(text, what):
    with pytest.raises(SandboxError) as err:
        gvisor.parse_daemon_json(text, "/etc/docker/daemon.json")
    assert what in err.value.message and "/etc/docker/daemon.json" in (err.value.hint or "")


def test_atomic_write_keeps_a_backup_and_the_mode(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text('{"debug": true}\n')
    path.chmod(0o600)
    backup = gvisor.write_atomic(path, {"debug": True, "runtimes": {}})
    assert json.loads(path.read_text()) == {"debug": True, "runtimes": {}}
    assert backup and json.loads(open(backup).read()) == {"debug": True}
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["daemon.json", backup.rsplit("/", 1)[1]])


def test_atomic_write_of_a_new_file_has_no_backup(tmp_path):
    assert gvisor.write_atomic(tmp_path / "docker" / "daemon.json", {"a": 1}) is None
    assert json.loads((tmp_path / "docker" / "daemon.json").read_text()) == {"a": 1}


def test_config_file_of_dockerd_and_platform_of_args():
    assert str(gvisor.config_file_of(["dockerd", "--config-file=/x/d.json"])) == "/x/d.json"
    assert str(gvisor.config_file_of(["dockerd", "--config-file", "/y.json"])) == "/y.json"
    assert gvisor.config_file_of(["dockerd"]) == gvisor.DAEMON_JSON
    assert gvisor.runtime_platform(["--host-uds=all", "--platform=kvm"]) == "kvm"
    assert gvisor.runtime_platform([]) is None


def test_remote_engine_is_refused_with_the_manual_steps(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2375")
    with pytest.raises(SandboxError) as err:
        gvisor._local_dockerd()
    assert "remote" in err.value.message and "runtimeArgs" in (err.value.hint or "")


def test_runtime_resolution_and_limits():
    try:
        runtime.pin_auto("runsc")
        assert runtime.resolve("auto") == runtime.resolve(None) == runtime.resolve("") == "runsc"
        assert runtime.resolve("runc") == "runc", "runc is one setting away even where runsc is the default"
        runtime.pin_auto("runc")
        assert runtime.resolve(None) == "runc"
    finally:
        runtime.pin_auto(os.environ.get("RLM_TEST_RUNTIME") or "runc")   # what tests/conftest.py pins
    assert runtime.resolve("runsc") == "runsc"
    assert runtime.limits("runc", 128) == runtime.Limits(128, None)
    gv = runtime.limits("runsc", 128)
    assert gv.nproc == 128 and gv.pids_limit >= 1024


def test_not_root_without_runsc_says_to_use_sudo(monkeypatch):
    monkeypatch.setattr(gvisor.os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxError) as err:
        gvisor._apt_install(lambda _m: None)
    assert "root" in err.value.message and "sudo rlm sandbox gvisor install" in (err.value.hint or "")


def test_no_apt_get_says_where_to_get_runsc(monkeypatch):
    monkeypatch.setattr(gvisor.os, "geteuid", lambda: 0)
    monkeypatch.setattr(gvisor.shutil, "which", lambda name: None)
    with pytest.raises(SandboxError) as err:
        gvisor._apt_install(lambda _m: None)
    assert "apt-get" in err.value.message and "gvisor.dev" in (err.value.hint or "")


def test_a_registration_in_this_process_is_seen_by_its_next_session(monkeypatch):
    """`auto` picks runsc right after `install` registers it, not only in the next process: the
    list of runtimes the engine had before the reload is dropped."""
    class Engine:
        def __init__(self) -> None:
            self.runtimes: dict = {"runc": {"path": "runc"}}

        def info(self) -> dict:
            return {"Runtimes": self.runtimes}

    engine = Engine()
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    runtime.forget()
    assert runtime.registered_runtimes(engine) == {"runc"}
    engine.runtimes[gvisor.RUNTIME] = {"path": "/usr/bin/runsc", "runtimeArgs": list(gvisor.RUNTIME_ARGS)}
    assert runtime.registered_runtimes(engine) == {"runc"}          # cached
    gvisor.wait_registered(engine, "/usr/bin/runsc", timeout=1)
    assert runtime.registered_runtimes(engine) == {"runc", "runsc"}
    runtime.forget()
