"""Files found in the working folder are read only once trusted; nothing weakens the sandbox without
--unsafe-sandbox (issue 32, A15).  Host-side only: no Docker, no network."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlm.cli import app
from rlm.config import FIELDS, RLMConfigWarning, load_settings, settings_from_mapping
from rlm.config.trust import CONFIG_HOME_VAR, TrustStore, config_home
from rlm.errors import ConfigError
from rlm.llm.base import ModelSettings
from rlm.sandbox.settings import SandboxSettings
from rlm.security.config_checks import A15_DOTENV, A15_KEYS, EVIL_URL, working_folder_checks

HARDENED = SandboxSettings()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "config-home"


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def load(cwd: Path, home: Path, environ: dict[str, str] | None = None, **kwargs):
    kwargs.setdefault("warn", False)
    return load_settings(environ={CONFIG_HOME_VAR: str(home), **(environ or {})}, cwd=cwd, **kwargs)


def trust(home: Path, path: Path) -> None:
    TrustStore(home).trust(path, path.read_bytes())


def refusal(cwd: Path, home: Path, environ: dict[str, str] | None = None, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(cwd, home, environ, **kwargs)
    return info.value


# ------------------------------------------------------------ A15, as reported

def test_a15_dotenv_is_ignored_until_trusted_then_refused_then_allowed_with_unsafe(cwd: Path, home: Path) -> None:
    (cwd / ".env").write_text(A15_DOTENV)
    loaded = load(cwd, home)
    assert loaded.settings.sandbox == HARDENED
    assert loaded.settings.model.base_url == ModelSettings().base_url and loaded.sources["base_url"] == "default"
    assert EVIL_URL not in json.dumps(loaded.settings.to_flat_dict(redact=False))
    assert loaded.notices == (f"ignoring {cwd / '.env'} (not trusted); to use it: rlm config trust {cwd / '.env'}",)
    assert loaded.ignored_files == (cwd / ".env",)

    trust(home, cwd / ".env")
    error = refusal(cwd, home)
    assert len(error.problems) == len(A15_KEYS)
    for key in A15_KEYS:
        line = next(p for p in error.problems if p.startswith(key + "="))
        assert f"from .env:{cwd / '.env'}" in line and "--unsafe-sandbox" in line
    assert "--unsafe-sandbox" in error.hint

    loaded = load(cwd, home, unsafe_sandbox=True)
    s = loaded.settings.sandbox
    assert (s.network_mode, s.user, s.seccomp, s.no_new_privileges, s.read_only_rootfs, s.cap_drop) == \
        ("host", "0:0", "docker-default", False, False, ("NET_RAW",))
    assert [w.split("=")[0] for w in loaded.weakened] == ["network_mode", "read_only_rootfs", "user", "cap_drop",
                                                         "no_new_privileges", "seccomp"]
    assert loaded.weakened_notice.startswith("the sandbox is weakened (--unsafe-sandbox): network_mode=host (.env:")
    assert loaded.settings.model.base_url == EVIL_URL  # trusted: the user's own word on where prompts go


def test_security_catalogue_host_check_passes() -> None:
    checks = working_folder_checks()
    assert [name for name, _, _ in checks] == ["untrusted .env is ignored", "trusted .env cannot weaken the sandbox",
                                               "--unsafe-sandbox applies and lists them",
                                               "a changed .env needs trusting again"]
    assert all(ok for _, ok, _ in checks), checks


# ------------------------------------------------------------ trust

def test_trusted_dotenv_is_read_and_a_change_needs_trusting_again(cwd: Path, home: Path) -> None:
    env = cwd / ".env"
    env.write_text("OLLAMA_BASE_URL=http://mine:1/v1\nROOT_MODEL=m\n")
    trust(home, env)
    loaded = load(cwd, home)
    assert loaded.settings.model.base_url == "http://mine:1/v1" and loaded.notices == ()
    env.write_text("OLLAMA_BASE_URL=http://other:1/v1\nROOT_MODEL=m\n")
    loaded = load(cwd, home)
    assert loaded.settings.model.base_url == ModelSettings().base_url
    assert loaded.notices == (f"ignoring {env} (changed since it was trusted); to use it: rlm config trust {env}",)
    assert TrustStore(home).untrust(env) is True and TrustStore(home).entries() == {}


def test_untrusted_default_yaml_is_ignored_but_a_copy_of_the_defaults_is_silent(cwd: Path, home: Path) -> None:
    cfg = cwd / "configs" / "default.yaml"
    cfg.parent.mkdir()
    cfg.write_text("run:\n  max_iterations: 3\nsandbox:\n  memory_mb: 4096\n")
    loaded = load(cwd, home)
    assert loaded.settings.run.max_iterations == 20 and loaded.config_file is None
    assert "rlm config trust" in loaded.notices[0] and str(cfg) in loaded.notices[0]
    trust(home, cfg)
    loaded = load(cwd, home)
    assert loaded.settings.run.max_iterations == 3 and loaded.settings.sandbox.memory_mb == 4096  # raising: fine
    cfg.write_text("run:\n  max_iterations: 20\nmodel:\n  base_url: null\n")  # the defaults again: harmless
    assert load(cwd, home).notices == ()


def test_a_dotenv_of_another_program_is_silently_ignored(cwd: Path, home: Path) -> None:
    (cwd / ".env").write_text("DATABASE_URL=postgres://x\nSECRET_KEY=abc\n")
    loaded = load(cwd, home)
    assert loaded.notices == () and loaded.ignored_files == ()


def test_explicit_config_and_real_environment_are_the_users_word(cwd: Path, home: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("max_iterations: 7\n")
    assert load(cwd, home, config_file=mine).settings.run.max_iterations == 7
    assert load(cwd, home, {"RLM_CONFIG": str(mine)}).settings.run.max_iterations == 7
    # RLM_CONFIG from an untrusted .env is not followed
    (cwd / ".env").write_text(f"RLM_CONFIG={mine}\n")
    assert load(cwd, home).settings.run.max_iterations == 20


def test_a_damaged_trust_list_trusts_nothing(cwd: Path, home: Path) -> None:
    (cwd / ".env").write_text("ROOT_MODEL=x\n")
    home.mkdir()
    (home / "trusted.json").write_text("{not json")
    loaded = load(cwd, home)
    assert loaded.settings.model.root_model == ModelSettings().root_model
    assert any("damaged" in n for n in loaded.notices)


def test_config_home_follows_rlm_then_xdg_then_home() -> None:
    assert config_home({CONFIG_HOME_VAR: "/a", "XDG_CONFIG_HOME": "/b"}) == Path("/a")
    assert config_home({"XDG_CONFIG_HOME": "/b"}) == Path("/b/rlm")
    assert config_home({"HOME": "/h"}) == Path("/h/.config/rlm")


def test_trust_list_is_private_and_keyed_by_absolute_path(cwd: Path, home: Path) -> None:
    env = cwd / ".env"
    env.write_text("ROOT_MODEL=x\n")
    trust(home, env)
    data = json.loads((home / "trusted.json").read_text())
    assert list(data["files"]) == [str(env.resolve())]
    assert (home / "trusted.json").stat().st_mode & 0o077 == 0


# ------------------------------------------------------------ weakening from every layer

@pytest.mark.parametrize("name,value", [
    ("RLM_NETWORK_MODE", "bridge"), ("RLM_USER", "0:0"), ("RLM_USER", "1000:0"),
    ("RLM_CAP_DROP", "NET_RAW"), ("RLM_SECCOMP", "unconfined"), ("RLM_NO_NEW_PRIVILEGES", "0"),
    ("RLM_READ_ONLY_ROOTFS", "no"),
])
def test_weakening_from_the_environment_is_refused_without_unsafe(cwd: Path, home: Path, name: str, value: str) -> None:
    error = refusal(cwd, home, {name: value})
    assert len(error.problems) == 1 and f"from env:{name}" in error.problems[0]
    assert "--unsafe-sandbox" in error.problems[0]
    assert load(cwd, home, {name: value}, unsafe_sandbox=True).weakened[0].endswith(f"(env:{name})")


def test_hardened_values_and_raised_limits_are_not_weakening(cwd: Path, home: Path) -> None:
    environ = {"RLM_NETWORK_MODE": "none", "RLM_USER": "2000:2000", "RLM_CAP_DROP": "all,NET_RAW",
               "RLM_SECCOMP": "rlm", "RLM_PIDS_LIMIT": "4096", "RLM_MEMORY_MB": "16384", "RLM_RUNTIME": "runsc"}
    assert load(cwd, home, environ).weakened == ()


def test_runtime_downgrade_is_refused_from_files_only(cwd: Path, home: Path, tmp_path: Path) -> None:
    assert load(cwd, home, {"RLM_RUNTIME": "runc"}).settings.sandbox.runtime == "runc"  # the documented floor
    assert load(cwd, home, cli={"runtime": "runc"}).settings.sandbox.runtime == "runc"
    cfg = tmp_path / "run.yaml"
    cfg.write_text("sandbox:\n  runtime: runc\n")
    error = refusal(cwd, home, config_file=cfg)
    assert "runtime='runc' from yaml:" in error.problems[0] and "gVisor" in error.problems[0]
    (cwd / ".env").write_text("RLM_RUNTIME=runc\n")
    trust(home, cwd / ".env")
    assert "from .env:" in refusal(cwd, home).problems[0]


def test_flags_and_keyword_settings_need_unsafe_too(cwd: Path, home: Path) -> None:
    error = refusal(cwd, home, cli={"network_mode": "host"}, cli_flags={"network_mode": "RLM(network_mode=...)"})
    assert "from cli:RLM(network_mode=...)" in error.problems[0]
    loaded = load(cwd, home, cli={"network_mode": "host", "unsafe_sandbox": True})
    assert loaded.settings.unsafe_sandbox and loaded.weakened == ("network_mode=host (cli:--network-mode)",)


def test_without_a_sandbox_weakening_values_are_dropped_with_a_notice(cwd: Path, home: Path) -> None:
    loaded = load(cwd, home, {"RLM_NETWORK_MODE": "host"}, unsafe_sandbox=None)
    assert loaded.settings.sandbox.network_mode == "none" and loaded.sources["network_mode"] == "default"
    assert loaded.notices == ("ignoring network_mode=host from env:RLM_NETWORK_MODE: it gives model code a network "
                              "(this command runs no sandbox)",)


def test_library_callers_get_warnings(cwd: Path, home: Path) -> None:
    (cwd / ".env").write_text("ROOT_MODEL=x\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load(cwd, home, {"RLM_NETWORK_MODE": "host"}, unsafe_sandbox=True, warn=True)
    texts = [str(w.message) for w in caught if issubclass(w.category, RLMConfigWarning)]
    assert len(texts) == 2 and "not trusted" in texts[0] and "weakened" in texts[1]


def test_api_needs_unsafe_sandbox_for_weakening(cwd: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlm import RLM

    for spec in FIELDS:
        for name in spec.env_names:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(CONFIG_HOME_VAR, str(home))
    monkeypatch.chdir(cwd)
    with pytest.raises(ConfigError, match="network_mode='host' from cli:RLM\\(network_mode=...\\)"):
        RLM(network_mode="host")
    with pytest.warns(RLMConfigWarning, match="the sandbox is weakened"):
        r = RLM(network_mode="host", unsafe_sandbox=True)
    assert r.settings.sandbox.network_mode == "host" and r.loaded.weakened


def test_a_spec_cannot_weaken_the_sandbox_unless_the_command_line_allowed_it() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"sandbox": {"seccomp": "unconfined", "runtime": "runc"}}, source="spec s.yaml")
    assert len(info.value.problems) == 2 and all("spec s.yaml" in p for p in info.value.problems)
    base = settings_from_mapping({}, unsafe_sandbox=True)
    with pytest.warns(RLMConfigWarning):
        s = settings_from_mapping({"sandbox": {"seccomp": "unconfined"}}, base=base, source="spec s.yaml")
    assert s.sandbox.seccomp == "unconfined" and s.weakened == ("seccomp=unconfined (spec s.yaml)",)


# ------------------------------------------------------------ the command line

@pytest.fixture
def cli(cwd: Path, home: Path, monkeypatch: pytest.MonkeyPatch):
    for spec in FIELDS:
        for name in spec.env_names:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("RLM_CONFIG", raising=False)
    monkeypatch.setenv(CONFIG_HOME_VAR, str(home))
    monkeypatch.chdir(cwd)
    runner = CliRunner()
    return lambda *args, env=None: runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


def test_cli_trust_show_untrust(cli, cwd: Path, home: Path) -> None:
    (cwd / ".env").write_text("ROOT_MODEL=from-dotenv\n")
    result = cli("config", "show", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["root_model"] == ModelSettings().root_model
    assert result.stderr.strip() == f"note: ignoring {cwd / '.env'} (not trusted); to use it: rlm config trust " \
                                    f"{cwd / '.env'}"
    result = cli("config", "trust")
    assert result.exit_code == 0 and f"trusted {cwd / '.env'}" in result.stdout
    result = cli("config", "show")
    assert result.exit_code == 0 and result.stderr == "" and "from-dotenv" in result.stdout
    assert f"{cwd / '.env'}  (ok)" in result.stdout
    assert cli("config", "untrust", ".env").exit_code == 0
    assert "not trusted" in cli("config", "show").stderr


def test_cli_trust_with_nothing_to_trust_is_a_usage_error(cli) -> None:
    result = cli("config", "trust")
    assert result.exit_code == 2 and "nothing to trust" in result.stderr


def test_cli_refuses_weakening_and_unsafe_sandbox_lists_it(cli, cwd: Path) -> None:
    (cwd / ".env").write_text("RLM_NETWORK_MODE=host\n")
    assert cli("config", "trust").exit_code == 0
    result = cli("query", "-q", "x", "-c", "text")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "network_mode='host' from .env:" in result.stderr and "--unsafe-sandbox" in result.stderr
    result = cli("config", "show", "--json", "--unsafe-sandbox")
    assert result.exit_code == 0 and json.loads(result.stdout)["network_mode"] == "host"
    assert result.stderr.startswith("warning: the sandbox is weakened (--unsafe-sandbox): network_mode=host (.env:")
    # a command that runs no sandbox drops the value with a note instead of failing
    result = cli("trace", "show", "missing.jsonl")
    assert "ignoring network_mode=host" in result.stderr and "does not exist" in result.stderr


def test_a_dotenv_link_to_a_fifo_or_folder_is_ignored_without_blocking(cwd: Path, home: Path, tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (cwd / ".env").symlink_to(fifo)
    assert load(cwd, home).notices == (f"ignoring {cwd / '.env'} (cannot read it)",)
    (cwd / ".env").unlink()
    (cwd / ".env").symlink_to(tmp_path)
    assert load(cwd, home).notices == (f"ignoring {cwd / '.env'} (cannot read it)",)
