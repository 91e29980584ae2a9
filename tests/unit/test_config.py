"""Settings loading: precedence, sources, validation messages. No real environment is read."""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from rlm.config import (
    FIELDS,
    RunSettings,
    Settings,
    describe_settings,
    load_settings,
    settings_from_mapping,
)
from rlm.config.trust import CONFIG_HOME_VAR, TrustStore
from rlm.errors import ConfigError
from rlm.llm.base import ModelSettings
from rlm.sandbox.settings import SandboxSettings

REPO = Path(__file__).resolve().parents[2]


def home(tmp_path: Path) -> Path:
    return tmp_path / ".rlm-config-home"


def trust_found(tmp_path: Path) -> None:
    """Trust the .env and configs/default.yaml in tmp_path as `rlm config trust` does."""
    store = TrustStore(home(tmp_path))
    for path in (tmp_path / ".env", tmp_path / "configs" / "default.yaml"):
        if path.is_file():
            store.trust(path, path.read_bytes())


def load(tmp_path: Path, environ: dict[str, str] | None = None, *, trust: bool = True, **kwargs):
    """Settings loaded in tmp_path with its own trust list; the files found there trusted unless trust=False."""
    if trust:
        trust_found(tmp_path)
    kwargs.setdefault("warn", False)
    return load_settings(environ={CONFIG_HOME_VAR: str(home(tmp_path)), **(environ or {})}, cwd=tmp_path, **kwargs)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, environ: dict[str, str] | None = None, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, environ, **kwargs)
    return str(info.value)


# ------------------------------------------------------------ defaults and table

def test_defaults_equal_the_seed(tmp_path: Path) -> None:
    loaded = load(tmp_path)
    s = loaded.settings
    assert s.model.base_url == "http://localhost:11434/v1"
    assert s.model.root_model == "qwen3:14b"
    assert s.model.sub_model is None and s.model.effective_sub_model == "qwen3:14b"
    assert s.run.max_iterations == 20
    assert s.run.max_output_chars == 10000
    assert s.sandbox.cell_timeout_s == 30
    assert s.run.max_sub_calls == 100
    assert s.run.max_sub_call_chars == 500000
    assert s.run.enable_sub_calls is True
    assert s.run.debug is False
    assert s.run.max_context_bytes == 2 * 1024 ** 3
    assert s.batch_concurrency == 2 and s.pool_size == 0
    assert set(loaded.sources.values()) == {"default"}
    assert loaded.config_file is None


def test_table_covers_every_dataclass_field() -> None:
    expected = {f.name for cls in (ModelSettings, RunSettings, SandboxSettings) for f in fields(cls)}
    expected |= {"batch_concurrency", "pool_size"}
    keys = [spec.key for spec in FIELDS]
    assert set(keys) == expected
    assert len(keys) == len(set(keys))
    env_names = [name for spec in FIELDS for name in spec.env_names]
    assert len(env_names) == len(set(env_names))


def test_default_yaml_lists_every_setting_with_its_default(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    listed = set(data) - {"model", "run", "sandbox"}
    for section in ("model", "run", "sandbox"):
        listed |= set(data[section])
    assert listed == {spec.key for spec in FIELDS}
    assert settings_from_mapping(data, source="default.yaml") == Settings()


@pytest.mark.parametrize("name", ["openai.yaml", "vllm.yaml", "strict-sandbox.yaml"])
def test_example_configs_load(tmp_path: Path, name: str) -> None:
    loaded = load(tmp_path, config_file=REPO / "configs" / "examples" / name)
    assert any(src.startswith("yaml:") for src in loaded.sources.values())


def test_to_flat_dict_keys_and_json() -> None:
    flat = Settings().to_flat_dict()
    assert {"max_iterations", "base_url", "memory_mb", "pool_size", "batch_concurrency"} <= set(flat)
    assert flat["max_iterations"] == 20 and flat["memory_mb"] == 2048
    assert flat["cap_drop"] == ["ALL"]
    json.dumps(flat)  # serializable for `config show --json`


def test_api_key_is_redacted_in_flat_dict_and_description(tmp_path: Path) -> None:
    loaded = load(tmp_path, {"OPENAI_API_KEY": "sk-secret"})
    assert loaded.settings.model.api_key == "sk-secret"
    assert loaded.sources["api_key"] == "env:OPENAI_API_KEY"
    assert loaded.settings.to_flat_dict()["api_key"] == "***"
    assert loaded.settings.to_flat_dict(redact=False)["api_key"] == "sk-secret"
    rows = {key: (value, source) for key, value, source, _ in describe_settings(loaded)}
    assert rows["api_key"] == ("***", "env:OPENAI_API_KEY")


def test_rlm_api_key_wins_over_openai_api_key(tmp_path: Path) -> None:
    loaded = load(tmp_path, {"OPENAI_API_KEY": "a", "RLM_API_KEY": "b"})
    assert loaded.settings.model.api_key == "b"
    assert loaded.sources["api_key"] == "env:RLM_API_KEY"


# ------------------------------------------------------------ precedence and sources

def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    write(tmp_path / "configs" / "default.yaml", "run:\n  max_iterations: 11\n")
    # YAML beats the default
    loaded = load(tmp_path)
    assert loaded.settings.run.max_iterations == 11
    assert loaded.sources["max_iterations"] == "yaml:configs/default.yaml"
    # .env beats YAML
    env_file = write(tmp_path / ".env", "MAX_ITERATIONS=12\n")
    loaded = load(tmp_path)
    assert loaded.settings.run.max_iterations == 12
    assert loaded.sources["max_iterations"] == f".env:{env_file}"
    # the environment beats .env
    loaded = load(tmp_path, {"MAX_ITERATIONS": "13"})
    assert loaded.settings.run.max_iterations == 13
    assert loaded.sources["max_iterations"] == "env:MAX_ITERATIONS"
    # the command line beats the environment
    loaded = load(tmp_path, {"MAX_ITERATIONS": "13"}, cli={"max_iterations": 14})
    assert loaded.settings.run.max_iterations == 14
    assert loaded.sources["max_iterations"] == "cli:--max-iterations"
    # None from the command line means "not given"
    loaded = load(tmp_path, {"MAX_ITERATIONS": "13"}, cli={"max_iterations": None})
    assert loaded.settings.run.max_iterations == 13


def test_sources_for_every_kind_of_layer(tmp_path: Path) -> None:
    cfg = write(tmp_path / "my.yaml", "sandbox:\n  memory_mb: 1024\n")
    write(tmp_path / ".env", "ROOT_MODEL=llama3\n")
    loaded = load(tmp_path, {"RLM_PIDS_LIMIT": "64"}, config_file=cfg,
                  cli={"debug": True, "root_model": None, "sub_model": "small"},
                  cli_flags={"sub_model": "--sub-model"})
    src = loaded.sources
    assert src["memory_mb"] == "yaml:my.yaml"
    assert src["root_model"] == f".env:{tmp_path / '.env'}"
    assert src["pids_limit"] == "env:RLM_PIDS_LIMIT"
    assert src["debug"] == "cli:--debug"
    assert src["sub_model"] == "cli:--sub-model"
    assert src["max_iterations"] == "default"
    s = loaded.settings
    assert (s.sandbox.memory_mb, s.model.root_model, s.sandbox.pids_limit) == (1024, "llama3", 64)
    assert s.run.debug is True and s.model.sub_model == "small"
    rows = describe_settings(loaded)
    assert [row[0] for row in rows] == [spec.key for spec in FIELDS]
    assert ("memory_mb", 1024, "yaml:my.yaml") == rows[[r[0] for r in rows].index("memory_mb")][:3]


def test_rlm_config_env_var_selects_the_file(tmp_path: Path) -> None:
    write(tmp_path / "configs" / "default.yaml", "max_iterations: 11\n")
    write(tmp_path / "other.yaml", "max_iterations: 7\n")
    loaded = load(tmp_path, {"RLM_CONFIG": "other.yaml"})
    assert loaded.settings.run.max_iterations == 7
    assert loaded.config_file == tmp_path / "other.yaml"


def test_env_names_of_the_seed_and_rlm_prefix(tmp_path: Path) -> None:
    environ = {
        "OLLAMA_BASE_URL": "http://gpu:8000/v1", "SUB_MODEL": "tiny", "RLM_TEMPERATURE": "0.7",
        "EXECUTION_TIMEOUT": "12.5", "MAX_OUTPUT_CHARS": "500", "MAX_SUB_CALL_CHARS": "1000",
        "RLM_REQUEST_TIMEOUT": "60", "RLM_RUNTIME": "runsc", "RLM_MAX_DEPTH": "2",
        "RLM_POOL_SIZE": "3", "RLM_BATCH_CONCURRENCY": "5", "RLM_MAX_CONTEXT_BYTES": "1000000",
        "RLM_CAP_DROP": "ALL, NET_RAW", "RLM_EXTRA_LABELS": "team=ml,env=ci",
    }
    s = load(tmp_path, environ).settings
    assert s.model.base_url == "http://gpu:8000/v1" and s.model.sub_model == "tiny"
    assert s.model.temperature == 0.7 and s.model.timeout_s == 60
    assert s.sandbox.cell_timeout_s == 12.5 and s.sandbox.runtime == "runsc"
    assert s.run.max_output_chars == 500 and s.run.max_sub_call_chars == 1000
    assert s.run.max_depth == 2 and s.run.max_context_bytes == 1000000
    assert s.pool_size == 3 and s.batch_concurrency == 5
    assert s.sandbox.cap_drop == ("ALL", "NET_RAW")
    assert s.sandbox.extra_labels == (("team", "ml"), ("env", "ci"))


def test_empty_env_values_count_as_unset(tmp_path: Path) -> None:
    write(tmp_path / ".env", "SUB_MODEL=\nMAX_ITERATIONS=\n")
    loaded = load(tmp_path)
    assert loaded.settings.run.max_iterations == 20
    assert loaded.sources["max_iterations"] == "default"


def test_dotenv_does_not_leak_into_os_environ(tmp_path: Path) -> None:
    name = "RLM_TEST_LEAK_CANARY"
    write(tmp_path / ".env", f"ROOT_MODEL=from-dotenv\n{name}=1\n")
    before = dict(os.environ)
    loaded = load(tmp_path)
    assert loaded.settings.model.root_model == "from-dotenv"
    assert name not in os.environ
    assert dict(os.environ) == before


@pytest.mark.parametrize("text,expected", [
    ("true", True), ("false", False), ("1", True), ("0", False), ("yes", True), ("no", False),
    ("on", True), ("off", False), ("TRUE", True), (" Off ", False),
])
def test_bool_parsing_from_env(tmp_path: Path, text: str, expected: bool) -> None:
    assert load(tmp_path, {"ENABLE_SUB_CALLS": text}).settings.run.enable_sub_calls is expected


def test_flat_keys_in_yaml(tmp_path: Path) -> None:
    cfg = write(tmp_path / "flat.yaml",
                "max_iterations: 15\nmemory_mb: 1024\nroot_model: m\npool_size: 2\nmodel:\n  temperature: 0.5\n")
    s = load(tmp_path, config_file=cfg).settings
    assert (s.run.max_iterations, s.sandbox.memory_mb, s.model.root_model, s.pool_size) == (15, 1024, "m", 2)
    assert s.model.temperature == 0.5


def test_empty_yaml_file_is_fine(tmp_path: Path) -> None:
    cfg = write(tmp_path / "empty.yaml", "# nothing\n")
    assert load(tmp_path, config_file=cfg).settings == Settings()


# ------------------------------------------------------------ validation

def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    cfg = write(tmp_path / "configs" / "x.yaml", "max_iteration: 10\n")
    message = error_of(tmp_path, config_file=cfg)
    assert "unknown key 'max_iteration' in configs/x.yaml (did you mean 'max_iterations'?)" in message


def test_unknown_key_in_a_section(tmp_path: Path) -> None:
    cfg = write(tmp_path / "x.yaml", "sandbox:\n  memory_mbb: 10\nrun:\n  memory_mb: 10\n")
    message = error_of(tmp_path, config_file=cfg)
    assert "unknown key 'sandbox.memory_mbb' in x.yaml (did you mean 'memory_mb'?)" in message
    assert "key 'memory_mb' in section 'run' of x.yaml belongs in section 'sandbox'" in message


def test_wrong_type_names_value_and_source(tmp_path: Path) -> None:
    message = error_of(tmp_path, {"MAX_ITERATIONS": "ten"})
    assert "max_iterations must be an integer, got 'ten' (from env:MAX_ITERATIONS)" in message
    assert "hint:" in message


def test_bad_bool_and_bad_float(tmp_path: Path) -> None:
    message = error_of(tmp_path, {"ENABLE_SUB_CALLS": "maybe", "RLM_TEMPERATURE": "warm"})
    assert "enable_sub_calls must be a boolean" in message and "'maybe'" in message
    assert "temperature must be a number, got 'warm' (from env:RLM_TEMPERATURE)" in message


def test_all_problems_are_listed_at_once(tmp_path: Path) -> None:
    cfg = write(tmp_path / "x.yaml", "max_iteration: 1\nrun:\n  max_sub_calls: -1\n")
    message = error_of(tmp_path, {"MAX_ITERATIONS": "ten"}, config_file=cfg)
    assert "3 configuration problems" in message
    assert "max_iteration'" in message and "'ten'" in message and "max_sub_calls" in message


def test_negative_iteration_count(tmp_path: Path) -> None:
    message = error_of(tmp_path, cli={"max_iterations": -3})
    assert "max_iterations must be greater than 0, got -3 (from cli:--max-iterations)" in message


def test_zero_count_rejected_but_zero_pool_allowed(tmp_path: Path) -> None:
    assert "max_sub_calls must be greater than 0" in error_of(tmp_path, {"MAX_SUB_CALLS": "0"})
    assert load(tmp_path, {"RLM_POOL_SIZE": "0"}).settings.pool_size == 0


@pytest.mark.parametrize("value", ["-0.1", "2.5"])
def test_temperature_out_of_range(tmp_path: Path, value: str) -> None:
    message = error_of(tmp_path, {"RLM_TEMPERATURE": value})
    assert "temperature must be between 0 and 2" in message and "env:RLM_TEMPERATURE" in message


def test_bad_url_scheme(tmp_path: Path) -> None:
    message = error_of(tmp_path, {"OLLAMA_BASE_URL": "ftp://host/v1"})
    assert "base_url must be an http:// or https:// URL" in message


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    cfg = write(tmp_path / "bad.yaml", "run:\n  max_iterations: 10\n  debug: [unclosed\n")
    message = error_of(tmp_path, config_file=cfg)
    assert "malformed YAML in bad.yaml, line " in message
    cfg2 = write(tmp_path / "bad2.yaml", "run:\n  max_iterations: 10\n bad_indent: 1\n")
    assert "malformed YAML in bad2.yaml, line 3" in error_of(tmp_path, config_file=cfg2)


def test_non_mapping_yaml(tmp_path: Path) -> None:
    cfg = write(tmp_path / "list.yaml", "- a\n- b\n")
    message = error_of(tmp_path, config_file=cfg)
    assert "top level of list.yaml must be a mapping" in message


def test_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    cfg = write(tmp_path / "x.yaml", "model: qwen3\n")
    assert "'model' in x.yaml must be a mapping" in error_of(tmp_path, config_file=cfg)


def test_explicit_missing_config_file(tmp_path: Path) -> None:
    message = error_of(tmp_path, config_file="nope.yaml")
    assert "config file nope.yaml does not exist" in message and "--config" in message
    assert "does not exist" in error_of(tmp_path, {"RLM_CONFIG": str(tmp_path / "gone.yaml")})


def test_config_file_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    assert "is a directory" in error_of(tmp_path, config_file=tmp_path / "dir.yaml")


def test_unknown_cli_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, cli={"max_iteratons": 3})
    assert "unknown setting 'max_iteratons'" in message and "max_iterations" in message


def test_sandbox_combination_error_names_source(tmp_path: Path) -> None:
    message = error_of(tmp_path, {"RLM_MEMORY_MB": "100"})
    assert "memory_mb is too small" in message
    assert "memory_mb from env:RLM_MEMORY_MB" in message


def test_yaml_user_must_be_quoted_string(tmp_path: Path) -> None:
    cfg = write(tmp_path / "x.yaml", "sandbox:\n  user: 1000\n")
    assert "user must be a string" in error_of(tmp_path, config_file=cfg)


# ------------------------------------------------------------ settings_from_mapping

def test_settings_from_mapping_over_a_base() -> None:
    base = settings_from_mapping({"root_model": "base-model", "memory_mb": 1024})
    spec = settings_from_mapping({"max_iterations": 5, "sandbox": {"pids_limit": 32}}, base=base)
    assert spec.run.max_iterations == 5 and spec.sandbox.pids_limit == 32
    assert spec.model.root_model == "base-model" and spec.sandbox.memory_mb == 1024
    assert base.run.max_iterations == 20  # the base is untouched


def test_settings_from_mapping_validates() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"max_iteration": 5, "temperature": 9}, source="batch.yaml#q1")
    message = str(info.value)
    assert "unknown key 'max_iteration' in batch.yaml#q1 (did you mean 'max_iterations'?)" in message
    assert "temperature must be between 0 and 2, got 9.0 (from batch.yaml#q1)" in message


def test_flat_dict_round_trips_through_settings_from_mapping() -> None:
    s = settings_from_mapping({"extra_labels": {"a": "b"}, "cap_drop": ["ALL"], "api_key": "k"})
    assert settings_from_mapping(s.to_flat_dict(redact=False)) == s


@pytest.mark.parametrize("yaml_text, environ", [
    ("model:\n  base_url: null\n", {}),
    ("base_url:\n", {}),
    ("", {"OLLAMA_BASE_URL": ""}),
    ("", {"OLLAMA_BASE_URL": "   "}),
])
def test_null_or_empty_base_url_leaves_it_unset(tmp_path: Path, yaml_text: str, environ: dict) -> None:
    write(tmp_path / "configs" / "default.yaml", yaml_text)
    loaded = load(tmp_path, environ)
    assert loaded.sources["base_url"] == "default"      # unset: Ollama if it answers, else the embedded model
    assert loaded.settings.model.base_url == ModelSettings().base_url


def test_shipped_default_yaml_leaves_base_url_unset(tmp_path: Path) -> None:
    write(tmp_path / "configs" / "default.yaml", (REPO / "configs" / "default.yaml").read_text())
    assert load(tmp_path).sources["base_url"] == "default"


def test_a_given_base_url_counts_even_when_it_is_the_default(tmp_path: Path) -> None:
    write(tmp_path / "configs" / "default.yaml", f"base_url: {ModelSettings().base_url}\n")
    assert load(tmp_path).sources["base_url"] == "yaml:configs/default.yaml"
    assert load(tmp_path, {"OLLAMA_BASE_URL": "http://h:1/v1"}).sources["base_url"] == "env:OLLAMA_BASE_URL"


def test_null_is_still_refused_for_other_required_settings(tmp_path: Path) -> None:
    write(tmp_path / "configs" / "default.yaml", "root_model: null\n")
    assert "root_model" in error_of(tmp_path)


# ------------------------------------------------------------ environment names (issue 35.4)

def test_every_setting_has_an_rlm_prefixed_name(tmp_path: Path) -> None:
    for spec in FIELDS:
        assert spec.rlm_names[0] == f"RLM_{spec.key.upper()}"
        assert all(name.startswith("RLM_") for name in spec.rlm_names)
    s = load(tmp_path, {"RLM_BASE_URL": "http://h:1/v1", "RLM_ROOT_MODEL": "r", "RLM_MAX_ITERATIONS": "4",
                        "RLM_CELL_TIMEOUT_S": "9", "RLM_DEBUG": "1", "RLM_TEMPERATURE": "0.5"}).settings
    assert (s.model.base_url, s.model.root_model, s.run.max_iterations, s.sandbox.cell_timeout_s) == \
        ("http://h:1/v1", "r", 4, 9.0)
    assert s.run.debug is True and s.model.temperature == 0.5


def test_generic_names_are_never_read_from_the_environment(tmp_path: Path) -> None:
    loaded = load(tmp_path, {"DEBUG": "true", "TEMPERATURE": "1.5"})
    assert loaded.settings.run.debug is False and loaded.settings.model.temperature == 0.0
    assert loaded.notices == ()
    write(tmp_path / ".env", "DEBUG=true\nTEMPERATURE=1.5\n")  # rlm's own (trusted) .env may use them
    loaded = load(tmp_path)
    assert loaded.settings.run.debug is True and loaded.settings.model.temperature == 1.5


def test_seed_aliases_from_the_environment_come_with_one_notice(tmp_path: Path) -> None:
    loaded = load(tmp_path, {"ROOT_MODEL": "a", "MAX_ITERATIONS": "3", "RLM_SUB_MODEL": "b"})
    assert loaded.settings.model.root_model == "a" and loaded.sources["root_model"] == "env:ROOT_MODEL"
    assert loaded.notices == ("reading ROOT_MODEL, MAX_ITERATIONS from the environment (the seed's names); "
                              "rlm's own are RLM_ROOT_MODEL, RLM_MAX_ITERATIONS",)
    # the prefixed name wins, and then the alias is not read at all
    loaded = load(tmp_path, {"ROOT_MODEL": "a", "RLM_ROOT_MODEL": "c"})
    assert loaded.settings.model.root_model == "c" and loaded.notices == ()
    # from .env the seed's names are read without a notice
    write(tmp_path / ".env", "ROOT_MODEL=d\nOLLAMA_BASE_URL=http://e:1/v1\n")
    loaded = load(tmp_path)
    assert loaded.settings.model.root_model == "d" and loaded.notices == ()


def test_config_error_carries_its_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, {"MAX_ITERATIONS": "x", "RLM_MAX_SUB_CALLS": "0"})
    assert info.value.problems == ["max_iterations must be an integer, got 'x' (from env:MAX_ITERATIONS)",
                                   "max_sub_calls must be greater than 0, got 0 (from env:RLM_MAX_SUB_CALLS)"]


def test_one_yaml_loader_and_one_suggestion_helper_for_config_and_specs() -> None:
    import rlm.jobs.spec as spec_module
    from rlm.config import loader

    source = Path(spec_module.__file__).read_text()
    assert "difflib" not in source and "yaml.safe_load" not in source
    assert "exc.problems" in source and "msg.startswith" not in source  # problems are read, not parsed from text
    assert spec_module.load_yaml is loader.load_yaml and spec_module.suggest is loader.suggest


@pytest.mark.parametrize("labels", [{"rlm.owner_pid": "1"}, {"team": "ml", "rlm.owner_host": "elsewhere"},
                                    "rlm.session=x"])
def test_extra_labels_may_not_name_rlms_own_labels(labels) -> None:
    """The reaper finds a session's owner by rlm.* labels: a file that set rlm.owner_pid=1 or another
    host would keep its containers from ever being reaped."""
    with pytest.raises(ConfigError, match="rlm's \\(the reaper reads them"):
        settings_from_mapping({"extra_labels": labels}, source="rlm.yaml")


def test_the_container_keeps_rlms_own_labels_whatever_extra_labels_hold(tmp_path: Path) -> None:
    from rlm.sandbox.provisioner import container_spec
    from rlm.sandbox.rundir import RunDirs
    from rlm.sandbox.settings import SandboxSettings

    dirs = RunDirs(root=tmp_path, run=tmp_path / "run", bridge=tmp_path / "bridge", context=tmp_path / "context")
    s = SandboxSettings(runtime="runc", extra_labels=(("team", "ml"), ("rlm.owner_pid", "1"), ("rlm.session", "x")))
    spec = container_spec(s, session_id="abc", generation=0, dirs=dirs, attachable=False, attached=None,
                          context=None)
    assert spec.labels["team"] == "ml" and spec.labels["rlm.session"] == "abc"
    assert spec.labels["rlm.owner_pid"] == str(os.getpid())
    # labels of rlm's other jobs (a Ray batch's rlm.job) pass through extra_labels
    assert settings_from_mapping({"extra_labels": {"rlm.job": "j1"}}).sandbox.extra_labels == (("rlm.job", "j1"),)
