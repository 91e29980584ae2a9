"""Fault round 2 on the configuration edge (issue 33: D4 for specs, D5, D12): each bad input is a
ConfigError with a one-line (or capped) message and exit code 2, never a traceback or "a bug in rlm"."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlm.cli import app
from rlm.config import FIELDS, load_settings
from rlm.config.trust import CONFIG_HOME_VAR, TrustStore
from rlm.errors import ConfigError
from rlm.jobs import load_spec

DEEP = 100_000
BAD_DOTENV = b"ROOT_MODEL=fine\nSUB_MODEL=caf\xe9\n"   # Latin-1 e-acute: not UTF-8
BAD_OFFSET = BAD_DOTENV.index(b"\xe9")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for spec in FIELDS:
        for name in spec.env_names:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("RLM_CONFIG", raising=False)
    monkeypatch.setenv(CONFIG_HOME_VAR, str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), env={"COLUMNS": "300"})


def assert_clean_usage_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "bug in rlm" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# ------------------------------------------------------------ D5: a .env that is not UTF-8

def test_untrusted_non_utf8_dotenv_is_ignored_with_a_notice(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(BAD_DOTENV)
    loaded = load_settings(environ={CONFIG_HOME_VAR: str(tmp_path / "home")}, cwd=tmp_path, warn=False)
    assert loaded.settings.model.root_model != "fine" and "not trusted" in loaded.notices[0]


def test_trusting_a_non_utf8_dotenv_is_refused_in_one_line(cli, tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(BAD_DOTENV)
    result = cli("config", "trust")
    assert_clean_usage_error(result, f"is not UTF-8 text (byte 0xe9 at offset {BAD_OFFSET})", ".env")
    assert result.stderr.splitlines()[0].startswith("error: invalid configuration: the .env file")
    assert not (tmp_path / "home" / "trusted.json").exists()


def test_a_trusted_dotenv_that_is_not_utf8_is_a_config_error(cli, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(BAD_DOTENV)
    TrustStore(tmp_path / "home").trust(env, env.read_bytes())  # trusted by hand: the reader must still cope
    with pytest.raises(ConfigError) as info:
        load_settings(environ={CONFIG_HOME_VAR: str(tmp_path / "home")}, cwd=tmp_path, warn=False)
    assert info.value.problems == [f"the .env file {env} is not UTF-8 text (byte 0xe9 at offset {BAD_OFFSET})"]
    result = cli("config", "show")
    assert_clean_usage_error(result, f"byte 0xe9 at offset {BAD_OFFSET}")
    assert len(result.stderr.splitlines()) == 2  # the error and its hint


# ------------------------------------------------------------ D4: specs and config files nested 100,000 deep

@pytest.mark.parametrize("name,text", [
    ("deep.yaml", "queries: " + "[" * DEEP + "]" * DEEP + "\n"),
    ("deep.json", '{"queries": ' + '{"a": ' * DEEP + "1" + "}" * DEEP + "}"),
])
def test_a_spec_nested_100000_levels_deep_is_a_config_error(tmp_path: Path, name: str, text: str) -> None:
    spec = tmp_path / name
    spec.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_spec(spec)
    assert info.value.problems == [f"{name} is nested more than 100 levels deep (line 1)"]
    result = CliRunner().invoke(app, ["batch", "run", str(spec)])
    assert result.exit_code == 2 and "nested more than 100 levels deep" in result.output
    assert "RecursionError" not in result.output and "bug in rlm" not in result.output


def test_a_config_file_nested_100000_levels_deep_is_a_config_error(cli, tmp_path: Path) -> None:
    (tmp_path / "deep.yaml").write_text("max_iterations: " + "[" * DEEP + "]" * DEEP + "\n")
    assert_clean_usage_error(cli("config", "show", "--config", "deep.yaml"), "deep.yaml is nested more than 100")


# ------------------------------------------------------------ D12: problem lists are capped

def test_a_spec_with_5000_bad_entries_prints_20_problems_and_the_count(tmp_path: Path) -> None:
    spec = tmp_path / "many.yaml"
    spec.write_text("queries:\n" + "".join(f"  - {{id: q{i}, question: Q, context: x, colour: red}}\n" for i in range(5000)))
    with pytest.raises(ConfigError) as info:
        load_spec(spec)
    assert len(info.value.problems) == 5000                      # every problem is kept for code
    lines = info.value.message.splitlines()
    assert lines[0] == f"5000 problems in batch spec {spec.resolve()}:"
    assert len(lines) == 1 + 20 + 1 and lines[-1] == "  ... and 4980 more problems"
    result = CliRunner().invoke(app, ["batch", "run", str(spec)])
    assert result.exit_code == 2 and len(result.output) < 5000 and "and 4980 more problems" in result.output


def test_config_problems_are_capped_and_each_is_cut(tmp_path: Path) -> None:
    cfg = tmp_path / "x.yaml"
    cfg.write_text("".join(f"unknown_{i}: 1\n" for i in range(30)) + f"root_model: [{'x' * 10_000}]\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=cfg, environ={}, cwd=tmp_path, warn=False)
    assert len(info.value.problems) == 31
    assert info.value.message.endswith("  ... and 11 more problems")
    assert max(len(line) for line in str(info.value).splitlines()) <= ConfigError.MAX_PROBLEM_CHARS + 10
