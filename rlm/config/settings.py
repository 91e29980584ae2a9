"""Typed settings, loaded once at the edge from defaults, YAML, ``.env``, environment and CLI.

Precedence (lowest first): built-in defaults < YAML (``config_file``, ``RLM_CONFIG`` or
``configs/default.yaml`` in the working directory) < ``.env`` in the working directory
< environment variables < command-line values.

Files found in the working folder (``.env``, ``configs/default.yaml``) are read only once the
user has trusted them (``rlm config trust``, see :mod:`rlm.config.trust`); an untrusted one is
ignored with a notice.  ``--config FILE`` and ``RLM_CONFIG`` from the real environment are the
user's word.  No layer may weaken the sandbox (:mod:`rlm.config.guard`) unless the caller says
``unsafe_sandbox=True`` (``--unsafe-sandbox``); the weakened keys are then listed.

Environment names carry the ``RLM_`` prefix (``RLM_<KEY>`` for every key).  The seed's unprefixed
names (``OLLAMA_BASE_URL``, ``ROOT_MODEL``, ``MAX_ITERATIONS``, ...) are aliases: read from ``.env``,
or from the real environment with a notice; the generic ``DEBUG`` and ``TEMPERATURE`` only from ``.env``.

One table, :data:`FIELDS`, describes every setting (flat key, section, type, environment
names, help); it drives YAML parsing, environment parsing, validation and ``config show``.
Defaults live in the dataclasses themselves.  Nothing is read at import time.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm.config.guard import UNSAFE_FLAG, weakening
from rlm.config.loader import MAX_DOTENV_BYTES, decode_utf8, load_yaml, parse_dotenv, read_bytes, suggest
from rlm.config.trust import TrustStore, trust_command
from rlm.config.values import (  # noqa: F401
    _PARSERS,
    _PLAIN,
    _BadValue,
    _http_url,
    _non_empty,
    _non_negative,
    _own_labels,
    _positive,
    _temperature,
)
from rlm.errors import ConfigError
from rlm.llm.base import ModelSettings
from rlm.sandbox.settings import SandboxSettings

__all__ = [
    "FIELDS",
    "FieldSpec",
    "LoadedSettings",
    "RLMConfigWarning",
    "RunSettings",
    "Settings",
    "describe_settings",
    "env_table",
    "load_settings",
    "settings_from_mapping",
]

DEFAULT_CONFIG_PATH = Path("configs") / "default.yaml"
DOTENV_NAME = ".env"
CONFIG_ENV_VAR = "RLM_CONFIG"
SECTIONS = ("model", "run", "sandbox")
TOP = ""  # section name of the top-level settings
SECRET_KEYS = frozenset({"api_key"})
REDACTED = "***"
GENERIC_HINT = ("see configs/default.yaml for every key; `rlm config show` prints each "
                "setting and where it came from")
# Aliases other programs set for their own reasons: never read from the process environment.
GENERIC_ALIASES = frozenset({"DEBUG", "TEMPERATURE"})
UNSAFE_KWARG = "unsafe_sandbox"   # RLM(unsafe_sandbox=True): taken out of the keyword settings


class RLMConfigWarning(UserWarning):
    """A notice about the settings (an untrusted file ignored, the sandbox weakened) for library callers;
    the CLI prints :attr:`LoadedSettings.notices` itself instead."""


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
    memo: bool = True                    # identical sub-calls in a run answered from memory
    max_context_bytes: int = 2 * 1024 ** 3
    trace_dir: str = "traces"
    debug: bool = False
    policy: str = "general"              # what the loop says after a turn (rlm/core/policy): general, legacy
    ablate: tuple[str, ...] = ()         # rule ids of the policy turned off
    max_time_s: float = 0.0              # budgets (0: none); reached: asked once more, status time_limit ...
    max_tokens: int = 0                  # root plus sub-calls, prompt plus completion
    max_cost_usd: float = 0.0
    prices: tuple[tuple[str, float, float], ...] = ()   # (model, USD per 1k prompt, per 1k completion tokens)

    @property
    def price_table(self) -> dict[str, dict[str, float]]:
        return {m: {"prompt": p, "completion": c} for m, p, c in self.prices}


@dataclass(frozen=True)
class Settings:
    """Everything rlm can be told, as typed objects."""

    model: ModelSettings = field(default_factory=ModelSettings)
    run: RunSettings = field(default_factory=RunSettings)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    batch_concurrency: int = 2
    pool_size: int = 0
    # The user's word on the command line or in RLM(...), never read from files or the environment:
    unsafe_sandbox: bool = field(default=False, compare=False)
    weakened: tuple[str, ...] = field(default=(), compare=False)   # "key=value (source)" allowed by it

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
    """Settings plus where each flat key's value came from, and what the user should be told."""

    settings: Settings
    sources: dict[str, str]
    config_file: Path | None = None
    notices: tuple[str, ...] = ()          # one line each: untrusted files ignored, aliases read, ...
    ignored_files: tuple[Path, ...] = ()   # files found in the working folder and not read (untrusted)

    @property
    def base_url_configured(self) -> bool:
        """Whether a base URL was given anywhere (flag, environment, ``.env``, YAML); when not,
        rlm uses Ollama at the default URL if it answers, else the embedded model."""
        return self.sources.get("base_url", "default") != "default"

    @property
    def weakened(self) -> tuple[str, ...]:
        """``key=value (source)`` for each setting that weakens the sandbox (allowed by unsafe_sandbox)."""
        return self.settings.weakened

    @property
    def weakened_notice(self) -> str | None:
        return weakened_notice(self.settings.weakened)


def weakened_notice(weakened: tuple[str, ...] | list[str]) -> str | None:
    """The one line every run prints when the sandbox is weakened, or None."""
    if not weakened:
        return None
    return f"the sandbox is weakened ({UNSAFE_FLAG}): " + "; ".join(weakened)


# ---------------------------------------------------------------- the table

@dataclass(frozen=True)
class FieldSpec:
    """One setting: flat key, section (``""`` = top level), kind, help, extra ``RLM_`` names, the seed's
    unprefixed aliases, check."""

    key: str
    section: str
    kind: str
    help: str
    env: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None
    aliases: tuple[str, ...] = ()

    @property
    def rlm_names(self) -> tuple[str, ...]:
        """``RLM_<KEY>`` first, then any other ``RLM_`` name kept for compatibility."""
        primary = f"RLM_{self.key.upper()}"
        return (primary, *(name for name in self.env if name != primary))

    @property
    def env_names(self) -> tuple[str, ...]:
        """Every name read for this setting: the ``RLM_`` names, then the seed's aliases."""
        return (*self.rlm_names, *self.aliases)


def _windows(value: tuple[tuple[str, str], ...]) -> str | None:
    """model_windows: each window a whole number of tokens, at least 256."""
    for _name, tokens in value:
        text = str(tokens).strip()
        if not text.isdigit() or int(text) < 256:
            return "a mapping of model names to context windows in tokens (whole numbers, at least 256)"
    return None


def _f(key: str, section: str, kind: str, help: str, *env: str, aliases: tuple[str, ...] = (),
       check: Callable[[Any], str | None] | None = None) -> FieldSpec:
    return FieldSpec(key, section, kind, help, tuple(env), check, aliases)


FIELDS: tuple[FieldSpec, ...] = (
    # model
    _f("base_url", "model", "str", "OpenAI-compatible server URL (Ollama, vLLM, llama.cpp, OpenAI)",
       aliases=("OLLAMA_BASE_URL",), check=_http_url),
    _f("api_key", "model", "opt_str", "API key sent to the server (never enters the sandbox)",
       aliases=("OPENAI_API_KEY",)),
    _f("root_model", "model", "str", "model that drives the REPL loop", aliases=("ROOT_MODEL",), check=_non_empty),
    _f("sub_model", "model", "opt_str", "model for llm_query sub-calls (empty: same as root_model)",
       aliases=("SUB_MODEL",)),
    _f("temperature", "model", "float", "sampling temperature (0..2)", aliases=("TEMPERATURE",), check=_temperature),
    _f("timeout_s", "model", "float", "seconds per model request", "RLM_REQUEST_TIMEOUT", check=_positive),
    _f("max_retries", "model", "int", "retries on connection errors, 429 and 5xx", check=_non_negative),
    _f("max_wait_s", "model", "float",
       "seconds one model call may wait in total, over all its retries (0: no total limit)",
       "RLM_MAX_WAIT", check=_non_negative),
    _f("model_windows", "model", "labels", "context window in tokens by model, over what the server says "
       "(name=tokens,... in env)", check=_windows),
    # run
    _f("max_iterations", "run", "int", "root-model turns before giving up", aliases=("MAX_ITERATIONS",),
       check=_positive),
    _f("max_output_chars", "run", "int", "cell output characters shown to the model per turn",
       aliases=("MAX_OUTPUT_CHARS",), check=_positive),
    _f("enable_sub_calls", "run", "bool", "allow llm_query from model code", aliases=("ENABLE_SUB_CALLS",)),
    _f("max_sub_calls", "run", "int", "llm_query calls allowed per run", aliases=("MAX_SUB_CALLS",), check=_positive),
    _f("max_sub_call_chars", "run", "int", "largest prompt one llm_query may send", aliases=("MAX_SUB_CALL_CHARS",),
       check=_positive),
    _f("max_depth", "run", "int", "recursion depth of sub-calls (1: sub-calls are plain model calls)",
       check=_positive),
    _f("sub_call_concurrency", "run", "int", "parallel sub-calls in llm_query_batched", check=_positive),
    _f("sub_call_timeout_s", "run", "float", "seconds one sub-call may take (0: the cell's timeout)",
       check=_non_negative),
    _f("max_child_runs", "run", "int", "rlm_query child runs (containers) at once per run", check=_positive),
    _f("allowed_models", "run", "str_list", "models llm_query(model=...) may name besides root_model and sub_model"),
    _f("memo", "run", "bool", "answer an identical sub-call (model, prompt, temperature) in a run from memory"),
    _f("max_context_bytes", "run", "int", "largest context file accepted, in bytes", check=_positive),
    _f("trace_dir", "run", "str", "folder for JSONL traces when no trace path is given", check=_non_empty),
    _f("debug", "run", "bool", "verbose logs and tracebacks", aliases=("DEBUG",)),
    _f("policy", "run", "str", "the loop's rules after a turn: general (default) or legacy", check=_non_empty),
    _f("ablate", "run", "str_list", "rule ids of the policy to turn off (comma-separated in env)"),
    _f("max_time_s", "run", "float", "seconds a run may take before it is asked for its answer (0: no limit)",
       check=_non_negative),
    _f("max_tokens", "run", "int", "tokens (root and sub-calls, prompt and completion) a run may use (0: no limit)",
       check=_non_negative),
    _f("max_cost_usd", "run", "float", "USD a run may spend, from the prices table (0: no limit)",
       check=_non_negative),
    _f("prices", "run", "prices", "USD per 1,000 tokens by model: {model: {prompt: x, completion: y}} "
       "(model=x/y,... in env)"),
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
    _f("cell_timeout_s", "sandbox", "float", "seconds one cell may run", "RLM_EXECUTION_TIMEOUT", aliases=("EXECUTION_TIMEOUT",),
       check=_positive),
    _f("interrupt_grace_s", "sandbox", "float", "seconds after an interrupt before a kernel restart",
       check=_positive),
    _f("start_timeout_s", "sandbox", "float", "seconds for container + kernel to be ready", check=_positive),
    _f("output_limit_bytes", "sandbox", "int", "stdout/stderr bytes kept per cell", check=_positive),
    _f("final_limit_chars", "sandbox", "int", "largest FINAL answer kept (chars)", check=_positive),
    _f("bridge_max_frame", "sandbox", "int", "largest llm_query bridge message (bytes)", check=_positive),
    _f("run_root", "sandbox", "opt_str", "host folder for run directories (empty: /tmp/rlm-<uid>)"),
    _f("extra_labels", "sandbox", "labels", "extra container labels (k=v,k2=v2 in env)", check=_own_labels),
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

    def extend(self, exc: ConfigError) -> None:
        for message in exc.problems:
            self.add(message, exc.hint)

    def raise_if_any(self) -> None:
        if self.messages:
            raise ConfigError(problems=self.messages, hint="; ".join(self.hints) or GENERIC_HINT)


def _suggest(key: str, candidates: list[str]) -> str:
    return suggest(key, candidates)


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


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
            problems.add(f"unknown key {_short(key)} in {where}{_suggest(key, top_candidates)}")
    return layer


def _section_into(layer: Layer, section: str, value: object, source: str, where: str,
                  problems: _Problems) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        problems.add(f"'{section}' in {where} must be a mapping of {section} settings, got {_short(value)}")
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
            problems.add(f"unknown key '{section}.{_short(key)[1:-1]}' in {where}{_suggest(key, own)}")


def _env_layer(env: Mapping[str, str | None], source_of: Callable[[str], str], *,
               aliases: Callable[[str], bool], used: list[str] | None = None) -> Layer:
    """Known variables of an environment-like mapping; empty values count as unset.  ``RLM_`` names
    win over the seed's aliases; ``aliases(name)`` says which aliases this layer may read, and the
    ones read are appended to ``used``."""
    layer: Layer = {}
    for spec in FIELDS:
        for name in (*spec.rlm_names, *(a for a in spec.aliases if aliases(a))):
            value = env.get(name)
            if value is not None and value.strip() != "":
                layer[spec.key] = (value, source_of(name))
                if used is not None and name in spec.aliases:
                    used.append(name)
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
    """Parse one YAML file; report unreadable, malformed, too deep and non-mapping files."""
    try:
        data = load_yaml(path, where)
    except ConfigError as exc:
        problems.extend(exc)
        return None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        problems.add(f"the top level of {where} must be a mapping of settings, got {type(data).__name__}",
                     "write 'key: value' lines, e.g. 'max_iterations: 20'")
        return None
    return data


def read_dotenv(path: Path, where: str | None = None, *, interpolate: bool = True) -> dict[str, str | None]:
    """The variables of a ``.env`` file; unreadable or non-UTF-8 is a one-line ``ConfigError``."""
    where = where or str(path)
    data = read_bytes(path, where, limit=MAX_DOTENV_BYTES, what="the .env file")
    return parse_dotenv(decode_utf8(data, where, "the .env file"), interpolate=interpolate)


def check_file(path: Path) -> None:
    """Read ``path`` as rlm would (``.env`` or YAML settings); a ``ConfigError`` if it cannot be used."""
    if path.name == DOTENV_NAME or path.suffix == ".env":
        read_dotenv(path)
        return
    problems = _Problems()
    data = _read_yaml(path, str(path), problems)
    if data is not None:
        values, sources = _defaults(Settings())
        _apply(_mapping_layer(data, f"yaml:{path}", str(path), problems), values, sources, problems)
    problems.raise_if_any()


# ---------------------------------------------------------------- found files and trust

@dataclass
class _Found:
    """What the working folder holds and what of it may be read."""

    notices: list[str] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)


def _untrusted_notice(path: Path, state: str) -> str:
    why = "changed since it was trusted" if state == "changed" else "not trusted"
    return f"ignoring {path} ({why}); to use it: {trust_command(path)}"


def _trust_state(path: Path, store: TrustStore, found: _Found) -> tuple[str, bytes | None]:
    """``trusted`` / ``changed`` / ``untrusted`` / ``unreadable`` and the file's bytes."""
    if not path.is_file():  # a link to a folder, a FIFO (reading it would block) or nothing
        return "unreadable", None
    try:
        data = read_bytes(path, str(path), limit=max(MAX_DOTENV_BYTES, 16 * 1024 * 1024))
    except ConfigError:
        return "unreadable", None
    try:
        return store.status(path, data), data
    except ConfigError as exc:  # a damaged trust list trusts nothing
        note = exc.problems[0] + "; nothing is trusted"
        if note not in found.notices:
            found.notices.append(note)
        return "untrusted", data


def _dotenv_would_set(dotenv: Mapping[str, str | None]) -> bool:
    names = {n for spec in FIELDS for n in spec.env_names} | {CONFIG_ENV_VAR}
    return any(value is not None and value.strip() for name, value in dotenv.items() if name in names)


def _yaml_would_change(data: bytes, where: str) -> bool:
    """Whether an untrusted YAML file would change any setting (a copy of the defaults does not)."""
    problems = _Problems()
    try:
        parsed = load_yaml_bytes(data, where)
    except ConfigError:
        return True
    if parsed is None:
        return False
    if not isinstance(parsed, Mapping):
        return True
    values, sources = _defaults(Settings())
    _apply(_mapping_layer(parsed, "yaml", where, problems), values, sources, problems)
    return bool(problems.messages) or any(source != "default" and values[key] != getattr(
        Settings()._section(FIELDS_BY_KEY[key].section), key) for key, source in sources.items())


def load_yaml_bytes(data: bytes, where: str) -> Any:
    from rlm.config.loader import parse_yaml

    return parse_yaml(decode_utf8(data, where), where)


def _found_dotenv(cwd: Path, store: TrustStore, found: _Found, problems: _Problems) -> tuple[dict[str, str | None], Path]:
    env_file = cwd / DOTENV_NAME
    if not (env_file.is_file() or env_file.is_symlink()):
        return {}, env_file
    state, data = _trust_state(env_file, store, found)
    if state == "trusted":
        try:
            return read_dotenv(env_file), env_file
        except ConfigError as exc:
            problems.extend(exc)
            return {}, env_file
    if state == "unreadable":
        found.notices.append(f"ignoring {env_file} (cannot read it)")
    else:
        try:
            harmless = not _dotenv_would_set(parse_dotenv(decode_utf8(data or b"", str(env_file)), interpolate=False))
        except ConfigError:
            harmless = False
        if not harmless:
            found.notices.append(_untrusted_notice(env_file, state))
            found.ignored.append(env_file)
    return {}, env_file


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
            problems.add(f"{key} must be {exc.args[0]}, got {_short(raw)} (from {source})")
            continue
        sources[key] = source


def _check_ranges(values: Mapping[str, Any], sources: Mapping[str, str], problems: _Problems) -> None:
    for spec in FIELDS:
        value = values[spec.key]
        message = spec.check(value) if spec.check and value is not None else None
        if message:
            problems.add(f"{spec.key} must be {message}, got {_short(value)} (from {sources[spec.key]})")
    _check_address_space(values, sources, problems)


def _check_address_space(values: Mapping[str, Any], sources: Mapping[str, str], problems: _Problems) -> None:
    """SandboxSettings' own combination check, reported with the sources of the keys involved."""
    keys = ("memory_mb", "tmpfs_mb", "home_tmpfs_mb", "address_space_margin_mb")
    if not all(isinstance(values.get(k), int) for k in keys):
        return
    left = values["memory_mb"] - values["tmpfs_mb"] - values["home_tmpfs_mb"] - values["address_space_margin_mb"]
    if left * 1024 * 1024 <= 64 * 1024 * 1024:
        named = [f"{k} from {sources[k]}" for k in keys if sources[k] != "default"]
        problems.add("memory_mb is too small for the tmpfs sizes and margin" + (f" ({', '.join(named)})" if named else ""),
                     "memory_mb must exceed tmpfs_mb + home_tmpfs_mb + address_space_margin_mb by more than 64")


class _Guard:
    """Sandbox-weakening values: refused, allowed and listed, or (``unsafe=None``) dropped with a notice."""

    def __init__(self, unsafe: bool | None, from_file: Callable[[str], bool]) -> None:
        self.unsafe = unsafe
        self.from_file = from_file
        self.weakened: list[str] = []
        self.notices: list[str] = []

    def check(self, values: dict[str, Any], sources: dict[str, str], problems: _Problems, base: Settings) -> None:
        for spec in FIELDS:
            source = sources[spec.key]
            if source == "default":
                continue
            value = values[spec.key]
            why = weakening(spec.key, value, from_file=self.from_file(source))
            if why is None:
                continue
            shown = ",".join(value) if isinstance(value, tuple) else value
            if self.unsafe:
                self.weakened.append(f"{spec.key}={shown} ({source})")
            elif self.unsafe is None:
                self.notices.append(f"ignoring {spec.key}={shown} from {source}: it {why} (this command runs no sandbox)")
                values[spec.key] = getattr(base._section(spec.section), spec.key)
                sources[spec.key] = "default"
            else:
                problems.add(f"{spec.key}={shown!r} from {source} {why}; only {UNSAFE_FLAG} on the command line "
                             f"(or {UNSAFE_KWARG}=True in RLM(...)) allows that",
                             f"remove it, or pass {UNSAFE_FLAG} if you mean to weaken the sandbox")


def _build(values: Mapping[str, Any], problems: _Problems, *, unsafe: bool, weakened: tuple[str, ...]
           ) -> Settings | None:
    """Typed settings from checked values."""
    by_section: dict[str, dict[str, Any]] = {name: {} for name in (*SECTIONS, TOP)}
    for spec in FIELDS:
        by_section[spec.section][spec.key] = values[spec.key]
    try:
        sandbox = SandboxSettings(**by_section["sandbox"])
    except ConfigError as exc:
        problems.extend(exc)
        return None
    return Settings(model=ModelSettings(**by_section["model"]), run=RunSettings(**by_section["run"]),
                    sandbox=sandbox, unsafe_sandbox=unsafe, weakened=weakened, **by_section[TOP])


def _finish(values: dict[str, Any], sources: dict[str, str], problems: _Problems, guard: _Guard,
            base: Settings) -> Settings:
    _check_ranges(values, sources, problems)
    guard.check(values, sources, problems, base)
    problems.raise_if_any()
    weakened = tuple(dict.fromkeys((*base.weakened, *guard.weakened)))
    settings = _build(values, problems, unsafe=bool(guard.unsafe) or base.unsafe_sandbox, weakened=weakened)
    problems.raise_if_any()
    assert settings is not None
    return settings


def _is_file_source(source: str) -> bool:
    return source.startswith(("yaml:", ".env:"))


# ---------------------------------------------------------------- public API

def load_settings(*, config_file: str | Path | None = None, cli: Mapping[str, object] | None = None,
                  environ: Mapping[str, str] | None = None, cwd: Path | None = None,
                  cli_flags: Mapping[str, str] | None = None, unsafe_sandbox: bool | None = False,
                  warn: bool = True) -> LoadedSettings:
    """Load settings from every layer; raise ``ConfigError`` listing every problem.

    ``cli`` maps flat keys to values (``None`` = not given); ``cli_flags`` optionally maps a
    key to the flag the user typed (e.g. ``{"root_model": "--model"}``) for source reporting.
    ``unsafe_sandbox``: True lets any layer weaken the sandbox (listed in ``settings.weakened``);
    False refuses it (``ConfigError``); None drops such values with a notice (commands that run no
    sandbox).  ``cli`` may also hold ``unsafe_sandbox`` (``RLM(unsafe_sandbox=True)``).  ``warn``:
    the notices are also issued as ``RLMConfigWarning`` (the CLI prints them itself).
    """
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else Path(cwd)
    cli = dict(cli or {})
    if UNSAFE_KWARG in cli:
        unsafe_sandbox = bool(cli.pop(UNSAFE_KWARG)) or bool(unsafe_sandbox)
    problems = _Problems()
    base = Settings()
    values, sources = _defaults(base)
    store = TrustStore.for_environ(environ)
    found = _Found()

    dotenv, env_file = _found_dotenv(cwd, store, found, problems)

    path, explicit = _find_config(config_file, environ, dotenv, cwd)
    if path is not None:
        where = _display(path, cwd)
        if explicit and not path.exists():
            problems.add(f"config file {where} does not exist",
                         f"check the path given with --config or {CONFIG_ENV_VAR}")
            path = None
        elif not explicit:
            state, data = _trust_state(path, store, found)
            if state != "trusted":
                if state == "unreadable" or _yaml_would_change(data or b"", where):
                    found.notices.append(_untrusted_notice(path, state) if state != "unreadable"
                                         else f"ignoring {path} (cannot read it)")
                    found.ignored.append(path)
                path = None
        if path is not None:
            data_map = _read_yaml(path, where, problems)
            if data_map is not None:
                _apply(_mapping_layer(data_map, f"yaml:{where}", where, problems), values, sources, problems)

    _apply(_env_layer(dotenv, lambda name: f".env:{env_file}", aliases=lambda name: True), values, sources, problems)
    used: list[str] = []
    _apply(_env_layer(environ, lambda name: f"env:{name}", aliases=lambda name: name not in GENERIC_ALIASES,
                      used=used), values, sources, problems)
    if used:
        found.notices.append(f"reading {', '.join(used)} from the environment (the seed's names); rlm's own are "
                             + ", ".join(f"RLM_{FIELDS_BY_KEY[_alias_key(n)].key.upper()}" for n in used))
    _apply(_cli_layer(cli, cli_flags or {}, problems), values, sources, problems)

    guard = _Guard(unsafe_sandbox, _is_file_source)
    settings = _finish(values, sources, problems, guard, base)
    loaded = LoadedSettings(settings=settings, sources=sources, config_file=path,
                            notices=tuple(found.notices + guard.notices), ignored_files=tuple(found.ignored))
    if warn:
        for line in (*loaded.notices, *([loaded.weakened_notice] if loaded.weakened_notice else [])):
            warnings.warn(line, RLMConfigWarning, stacklevel=2)
    return loaded


def _alias_key(name: str) -> str:
    return next(spec.key for spec in FIELDS if name in spec.aliases)


def settings_from_mapping(mapping: Mapping[str, Any], base: Settings | None = None,
                          source: str = "spec", *, unsafe_sandbox: bool | None = None,
                          from_file: bool = True) -> Settings:
    """Apply flat or sectioned keys over ``base`` (default: built-in defaults), validated.

    A value that weakens the sandbox is refused unless ``unsafe_sandbox`` (default: the base's own
    ``unsafe_sandbox``, i.e. what the user said on the command line); allowed ones are added to
    ``weakened``.  ``from_file``: the mapping comes from a file (a spec), not from the user's flags.
    """
    problems = _Problems()
    if not isinstance(mapping, Mapping):
        problems.add(f"settings in {source} must be a mapping, got {type(mapping).__name__}")
        problems.raise_if_any()
    base = base or Settings()
    values, sources = _defaults(base)
    _apply(_mapping_layer(mapping, source, source, problems), values, sources, problems)
    unsafe = base.unsafe_sandbox if unsafe_sandbox is None else unsafe_sandbox
    guard = _Guard(unsafe, lambda _source: from_file)
    settings = _finish(values, sources, problems, guard, base)
    notice = weakened_notice(guard.weakened)
    if notice:  # the base's own weakening was reported where it was loaded
        warnings.warn(notice, RLMConfigWarning, stacklevel=2)
    return settings


def describe_settings(loaded: LoadedSettings) -> list[tuple[str, Any, str, str]]:
    """``(key, value, source, help)`` for every setting, in table order; the API key redacted."""
    flat = loaded.settings.to_flat_dict()
    return [(spec.key, flat[spec.key], loaded.sources.get(spec.key, "default"), spec.help)
            for spec in FIELDS]


def env_table() -> list[tuple[str, str, str]]:
    """``(key, section, env names)`` for documentation and ``.env.example``."""
    return [(spec.key, spec.section or "(top)", ", ".join(spec.env_names)) for spec in FIELDS]
