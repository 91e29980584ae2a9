"""Typed settings, loaded once at the edge from defaults, YAML, ``.env``, environment and CLI.

Precedence (lowest first): built-in defaults < YAML (``config_file``, ``RLM_CONFIG`` or
``configs/default.yaml`` in the working directory) < ``.env`` in the working directory
< environment variables < command-line values.

One table, :data:`FIELDS`, describes every setting (flat key, section, type, environment
names, help); it drives YAML parsing, environment parsing, validation and ``config show``.
Defaults live in the dataclasses themselves.  Nothing is read at import time.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm.config.values import _PARSERS, _PLAIN, _BadValue, _http_url, _non_empty, _non_negative, _positive, _temperature  # noqa: F401
from rlm.errors import ConfigError
from rlm.llm.base import ModelSettings
from rlm.sandbox.settings import SandboxSettings

__all__ = [
    "FIELDS",
    "FieldSpec",
    "LoadedSettings",
    "RunSettings",
    "Settings",
    "describe_settings",
    "env_table",
    "load_settings",
    "settings_from_mapping",
]

DEFAULT_CONFIG_PATH = Path("configs") / "default.yaml"
CONFIG_ENV_VAR = "RLM_CONFIG"
SECTIONS = ("model", "run", "sandbox")
TOP = ""  # section name of the top-level settings
SECRET_KEYS = frozenset({"api_key"})
REDACTED = "***"
GENERIC_HINT = ("see configs/default.yaml for every key; `rlm config show` prints each "
                "setting and where it came from")


@dataclass(frozen=True)
class RunSettings:
    """Budgets and switches of one RLM run."""

    max_iterations: int = 20
    max_output_chars: int = 10000
    enable_sub_calls: bool = True
    max_sub_calls: int = 100
    max_sub_call_chars: int = 500000
    max_depth: int = 1
    sub_call_concurrency: int = 8
    sub_call_timeout_s: float = 0.0     # 0: the cell's timeout (sandbox.cell_timeout_s)
    max_child_runs: int = 2
    allowed_models: tuple[str, ...] = ()
    max_context_bytes: int = 2 * 1024 ** 3
    trace_dir: str = "traces"
    debug: bool = False


@dataclass(frozen=True)
class Settings:
    """Everything rlm can be told, as typed objects."""

    model: ModelSettings = field(default_factory=ModelSettings)
    run: RunSettings = field(default_factory=RunSettings)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    batch_concurrency: int = 2
    pool_size: int = 0

    def to_flat_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """All settings as one level of snake_case keys with JSON-friendly values.

        The API key is shown as ``***`` unless ``redact=False``.
        """
        out: dict[str, Any] = {}
        for spec in FIELDS:
            value = _PLAIN[spec.kind](getattr(self._section(spec.section), spec.key))
            if redact and spec.key in SECRET_KEYS and value:
                value = REDACTED
            out[spec.key] = value
        return out

    def _section(self, section: str) -> Any:
        return self if section == TOP else getattr(self, section)


@dataclass(frozen=True)
class LoadedSettings:
    """Settings plus where each flat key's value came from."""

    settings: Settings
    sources: dict[str, str]
    config_file: Path | None = None

    @property
    def base_url_configured(self) -> bool:
        """Whether a base URL was given anywhere (flag, environment, ``.env``, YAML); when not,
        rlm uses Ollama at the default URL if it answers, else the embedded model."""
        return self.sources.get("base_url", "default") != "default"


# ---------------------------------------------------------------- the table

@dataclass(frozen=True)
class FieldSpec:
    """One setting: flat key, section (``""`` = top level), kind, env names, help, check."""

    key: str
    section: str
    kind: str
    help: str
    env: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None

    @property
    def env_names(self) -> tuple[str, ...]:
        return self.env or (f"RLM_{self.key.upper()}",)


def _f(key: str, section: str, kind: str, help: str, *env: str,
       check: Callable[[Any], str | None] | None = None) -> FieldSpec:
    return FieldSpec(key, section, kind, help, tuple(env), check)


FIELDS: tuple[FieldSpec, ...] = (
    # model
    _f("base_url", "model", "str", "OpenAI-compatible server URL (Ollama, vLLM, llama.cpp, OpenAI)",
       "OLLAMA_BASE_URL", check=_http_url),
    _f("api_key", "model", "opt_str", "API key sent to the server (never enters the sandbox)",
       "RLM_API_KEY", "OPENAI_API_KEY"),
    _f("root_model", "model", "str", "model that drives the REPL loop", "ROOT_MODEL", check=_non_empty),
    _f("sub_model", "model", "opt_str", "model for llm_query sub-calls (empty: same as root_model)",
       "SUB_MODEL"),
    _f("temperature", "model", "float", "sampling temperature (0..2)", "TEMPERATURE", check=_temperature),
    _f("timeout_s", "model", "float", "seconds per model request", "RLM_REQUEST_TIMEOUT", check=_positive),
    _f("max_retries", "model", "int", "retries on connection errors, 429 and 5xx", check=_non_negative),
    _f("max_wait_s", "model", "float",
       "seconds one model call may wait in total, over all its retries (0: no total limit)",
       "RLM_MAX_WAIT", check=_non_negative),
    # run
    _f("max_iterations", "run", "int", "root-model turns before giving up", "MAX_ITERATIONS",
       check=_positive),
    _f("max_output_chars", "run", "int", "cell output characters shown to the model per turn",
       "MAX_OUTPUT_CHARS", check=_positive),
    _f("enable_sub_calls", "run", "bool", "allow llm_query from model code", "ENABLE_SUB_CALLS"),
    _f("max_sub_calls", "run", "int", "llm_query calls allowed per run", "MAX_SUB_CALLS", check=_positive),
    _f("max_sub_call_chars", "run", "int", "largest prompt one llm_query may send", "MAX_SUB_CALL_CHARS",
       check=_positive),
    _f("max_depth", "run", "int", "recursion depth of sub-calls (1: sub-calls are plain model calls)",
       check=_positive),
    _f("sub_call_concurrency", "run", "int", "parallel sub-calls in llm_query_batched", check=_positive),
    _f("sub_call_timeout_s", "run", "float", "seconds one sub-call may take (0: the cell's timeout)",
       check=_non_negative),
    _f("max_child_runs", "run", "int", "rlm_query child runs (containers) at once per run", check=_positive),
    _f("allowed_models", "run", "str_list", "models llm_query(model=...) may name besides root_model and sub_model"),
    _f("max_context_bytes", "run", "int", "largest context file accepted, in bytes", check=_positive),
    _f("trace_dir", "run", "str", "folder for JSONL traces when no trace path is given", check=_non_empty),
    _f("debug", "run", "bool", "verbose logs and tracebacks", "DEBUG"),
    # sandbox
    _f("image", "sandbox", "str", "Docker image of the sandbox", check=_non_empty),
    _f("runtime", "sandbox", "opt_str", "container runtime (empty or auto: runsc when registered, else runc; runc; runsc)"),
    _f("network_mode", "sandbox", "str", "container network ('none': no network at all)", check=_non_empty),
    _f("read_only_rootfs", "sandbox", "bool", "mount the container's root filesystem read-only"),
    _f("tmpfs_mb", "sandbox", "int", "size of /tmp inside the container (MB)", check=_positive),
    _f("home_tmpfs_mb", "sandbox", "int", "size of $HOME inside the container (MB)", check=_positive),
    _f("user", "sandbox", "str", "uid:gid the kernel runs as (quote it in YAML)", check=_non_empty),
    _f("cap_drop", "sandbox", "str_list", "Linux capabilities dropped (comma-separated in env)"),
    _f("no_new_privileges", "sandbox", "bool", "forbid privilege gain through setuid binaries"),
    _f("seccomp", "sandbox", "str", "seccomp profile: rlm, docker-default, or a JSON file", check=_non_empty),
    _f("pids_limit", "sandbox", "int", "most processes/threads in the container", check=_positive),
    _f("memory_mb", "sandbox", "int", "memory limit (MB), no extra swap", check=_positive),
    _f("address_space_margin_mb", "sandbox", "int", "RLIMIT_AS = memory - tmpfs sizes - this margin (MB)",
       check=_non_negative),
    _f("cpus", "sandbox", "float", "CPU quota (cores)", check=_positive),
    _f("nofile", "sandbox", "int", "open-file limit (RLIMIT_NOFILE)", check=_positive),
    _f("fsize_mb", "sandbox", "int", "largest file a cell may write (MB)", check=_positive),
    _f("init", "sandbox", "bool", "Docker's tini as pid 1 (false: rlm's supervisor is pid 1, reaping orphans)"),
    _f("cell_timeout_s", "sandbox", "float", "seconds one cell may run", "EXECUTION_TIMEOUT",
       check=_positive),
    _f("interrupt_grace_s", "sandbox", "float", "seconds after an interrupt before a kernel restart",
       check=_positive),
    _f("start_timeout_s", "sandbox", "float", "seconds for container + kernel to be ready", check=_positive),
    _f("output_limit_bytes", "sandbox", "int", "stdout/stderr bytes kept per cell", check=_positive),
    _f("final_limit_chars", "sandbox", "int", "largest FINAL answer kept (chars)", check=_positive),
    _f("bridge_max_frame", "sandbox", "int", "largest llm_query bridge message (bytes)", check=_positive),
    _f("run_root", "sandbox", "opt_str", "host folder for run directories (empty: /tmp/rlm-<uid>)"),
    _f("extra_labels", "sandbox", "labels", "extra container labels (k=v,k2=v2 in env)"),
    # top level
    _f("batch_concurrency", TOP, "int", "questions run at once by the batch runner", check=_positive),
    _f("pool_size", TOP, "int", "warm sandbox sessions kept ready (0: off)", check=_non_negative),
)

FIELDS_BY_KEY: dict[str, FieldSpec] = {spec.key: spec for spec in FIELDS}


# ---------------------------------------------------------------- problems

class _Problems:
    """Collects every problem so they are reported at once."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.hints: list[str] = []

    def add(self, message: str, hint: str | None = None) -> None:
        self.messages.append(message)
        if hint and hint not in self.hints:
            self.hints.append(hint)

    def raise_if_any(self) -> None:
        if not self.messages:
            return
        if len(self.messages) == 1:
            message = f"invalid configuration: {self.messages[0]}"
        else:
            lines = "\n".join(f"  - {m}" for m in self.messages)
            message = f"{len(self.messages)} configuration problems:\n{lines}"
        raise ConfigError(message, hint="; ".join(self.hints) or GENERIC_HINT)


def _suggest(key: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


# ---------------------------------------------------------------- layers

Layer = dict[str, tuple[object, str]]  # flat key -> (raw value, source)


def _mapping_layer(data: Mapping, source: str, where: str, problems: _Problems) -> Layer:
    """Flat and sectioned keys of a YAML-like mapping, with unknown keys reported."""
    layer: Layer = {}
    top_candidates = list(SECTIONS) + list(FIELDS_BY_KEY)
    for raw_key, value in data.items():
        key = str(raw_key)
        if key in SECTIONS:
            _section_into(layer, key, value, source, where, problems)
        elif key in FIELDS_BY_KEY:
            layer[key] = (value, source)
        else:
            problems.add(f"unknown key '{key}' in {where}{_suggest(key, top_candidates)}")
    return layer


def _section_into(layer: Layer, section: str, value: object, source: str, where: str,
                  problems: _Problems) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        problems.add(f"'{section}' in {where} must be a mapping of {section} settings, got {value!r}")
        return
    own = [spec.key for spec in FIELDS if spec.section == section]
    for raw_key, item in value.items():
        key = str(raw_key)
        spec = FIELDS_BY_KEY.get(key)
        if spec is not None and spec.section == section:
            layer[key] = (item, source)
        elif spec is not None:
            home = f"section '{spec.section}'" if spec.section else "the top level"
            problems.add(f"key '{key}' in section '{section}' of {where} belongs in {home}")
        else:
            problems.add(f"unknown key '{section}.{key}' in {where}{_suggest(key, own)}")


def _env_layer(env: Mapping[str, str | None], source_of: Callable[[str], str]) -> Layer:
    """Known variables of an environment-like mapping; empty values count as unset."""
    layer: Layer = {}
    for spec in FIELDS:
        for name in spec.env_names:
            value = env.get(name)
            if value is not None and value.strip() != "":
                layer[spec.key] = (value, source_of(name))
                break
    return layer


def _cli_layer(cli: Mapping[str, object], flags: Mapping[str, str], problems: _Problems) -> Layer:
    layer: Layer = {}
    for key, value in cli.items():
        if value is None:
            continue
        if key not in FIELDS_BY_KEY:
            problems.add(f"unknown setting '{key}' from the command line{_suggest(key, list(FIELDS_BY_KEY))}")
            continue
        layer[key] = (value, "cli:" + flags.get(key, "--" + key.replace("_", "-")))
    return layer


def _display(path: Path, cwd: Path) -> str:
    """A path relative to cwd when it lies under it, else absolute."""
    try:
        return str(path.resolve().relative_to(cwd.resolve()))
    except ValueError:
        return str(path)


def _read_yaml(path: Path, where: str, problems: _Problems) -> Mapping | None:
    """Parse one YAML file; report unreadable, malformed and non-mapping files."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        problems.add(f"config file {where} is a directory", "give the path of a YAML file")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(f"cannot read config file {where}: {exc}")
        return None
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        problems.add(f"config file {where} is nested too deeply to read", "flatten it: settings are 'key: value' lines")
        return None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc)
        problems.add(f"malformed YAML in {where}{at}: {what}", "fix the YAML syntax at that line")
        return None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        problems.add(f"the top level of {where} must be a mapping of settings, got {type(data).__name__}",
                     "write 'key: value' lines, e.g. 'max_iterations: 20'")
        return None
    return data


def _find_config(config_file: str | Path | None, environ: Mapping[str, str],
                 dotenv: Mapping[str, str | None], cwd: Path) -> tuple[Path | None, bool]:
    """The YAML file to read and whether it was asked for explicitly."""
    explicit = config_file or environ.get(CONFIG_ENV_VAR) or dotenv.get(CONFIG_ENV_VAR)
    if explicit:
        path = Path(explicit).expanduser()
        return (path if path.is_absolute() else cwd / path), True
    default = cwd / DEFAULT_CONFIG_PATH
    return (default if default.is_file() else None), False


# ---------------------------------------------------------------- merging and building

def _defaults(base: Settings) -> tuple[dict[str, Any], dict[str, str]]:
    values = {spec.key: getattr(base._section(spec.section), spec.key) for spec in FIELDS}
    return values, {key: "default" for key in values}


# Settings that null (or an empty string) leaves unset: ``base_url`` unset means Ollama at the default
# URL when it answers, else the embedded model; any value given counts as the user's choice.
NULL_MEANS_UNSET = frozenset({"base_url"})


def _apply(layer: Layer, values: dict[str, Any], sources: dict[str, str], problems: _Problems) -> None:
    """Convert each raw value of a layer and put it over the current values."""
    for key, (raw, source) in layer.items():
        spec = FIELDS_BY_KEY[key]
        if key in NULL_MEANS_UNSET and (raw is None or (isinstance(raw, str) and not raw.strip())):
            continue
        try:
            values[key] = _PARSERS[spec.kind](raw)
        except _BadValue as exc:
            problems.add(f"{key} must be {exc.args[0]}, got {raw!r} (from {source})")
            continue
        sources[key] = source


def _check_ranges(values: Mapping[str, Any], sources: Mapping[str, str], problems: _Problems) -> None:
    for spec in FIELDS:
        value = values[spec.key]
        message = spec.check(value) if spec.check and value is not None else None
        if message:
            problems.add(f"{spec.key} must be {message}, got {value!r} (from {sources[spec.key]})")


def _build(values: Mapping[str, Any], sources: Mapping[str, str], problems: _Problems) -> Settings | None:
    """Typed settings from checked values; SandboxSettings' own check is reported with sources."""
    by_section: dict[str, dict[str, Any]] = {name: {} for name in (*SECTIONS, TOP)}
    for spec in FIELDS:
        by_section[spec.section][spec.key] = values[spec.key]
    try:
        sandbox = SandboxSettings(**by_section["sandbox"])
    except ConfigError as exc:
        named = [f"{spec.key} from {sources[spec.key]}" for spec in FIELDS
                 if spec.section == "sandbox" and spec.key in exc.message
                 and sources[spec.key] != "default"]
        problems.add(exc.message + (f" ({', '.join(named)})" if named else ""), exc.hint)
        return None
    return Settings(model=ModelSettings(**by_section["model"]), run=RunSettings(**by_section["run"]),
                    sandbox=sandbox, **by_section[TOP])


def _finish(values: dict[str, Any], sources: dict[str, str], problems: _Problems) -> Settings:
    _check_ranges(values, sources, problems)
    problems.raise_if_any()
    settings = _build(values, sources, problems)
    problems.raise_if_any()
    assert settings is not None
    return settings


# ---------------------------------------------------------------- public API

def load_settings(*, config_file: str | Path | None = None, cli: dict[str, object] | None = None,
                  environ: Mapping[str, str] | None = None, cwd: Path | None = None,
                  cli_flags: Mapping[str, str] | None = None) -> LoadedSettings:
    """Load settings from every layer; raise ``ConfigError`` listing every problem.

    ``cli`` maps flat keys to values (``None`` = not given); ``cli_flags`` optionally maps a
    key to the flag the user typed (e.g. ``{"root_model": "--model"}``) for source reporting.
    """
    from dotenv import dotenv_values

    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else Path(cwd)
    problems = _Problems()
    values, sources = _defaults(Settings())

    env_file = cwd / ".env"
    dotenv = dotenv_values(env_file) if env_file.is_file() else {}

    path, explicit = _find_config(config_file, environ, dotenv, cwd)
    if path is not None:
        where = _display(path, cwd)
        if explicit and not path.exists():
            problems.add(f"config file {where} does not exist",
                         f"check the path given with --config or {CONFIG_ENV_VAR}")
        else:
            data = _read_yaml(path, where, problems)
            if data is not None:
                _apply(_mapping_layer(data, f"yaml:{where}", where, problems), values, sources, problems)

    _apply(_env_layer(dotenv, lambda name: f".env:{env_file}"), values, sources, problems)
    _apply(_env_layer(environ, lambda name: f"env:{name}"), values, sources, problems)
    _apply(_cli_layer(cli or {}, cli_flags or {}, problems), values, sources, problems)

    settings = _finish(values, sources, problems)
    return LoadedSettings(settings=settings, sources=sources, config_file=path)


def settings_from_mapping(mapping: Mapping[str, Any], base: Settings | None = None,
                          source: str = "spec") -> Settings:
    """Apply flat or sectioned keys over ``base`` (default: built-in defaults), validated."""
    problems = _Problems()
    if not isinstance(mapping, Mapping):
        problems.add(f"settings in {source} must be a mapping, got {type(mapping).__name__}")
        problems.raise_if_any()
    values, sources = _defaults(base or Settings())
    _apply(_mapping_layer(mapping, source, source, problems), values, sources, problems)
    return _finish(values, sources, problems)


def describe_settings(loaded: LoadedSettings) -> list[tuple[str, Any, str, str]]:
    """``(key, value, source, help)`` for every setting, in table order; the API key redacted."""
    flat = loaded.settings.to_flat_dict()
    return [(spec.key, flat[spec.key], loaded.sources.get(spec.key, "default"), spec.help)
            for spec in FIELDS]


def env_table() -> list[tuple[str, str, str]]:
    """``(key, section, env names)`` for documentation and ``.env.example``."""
    return [(spec.key, spec.section or "(top)", ", ".join(spec.env_names)) for spec in FIELDS]

