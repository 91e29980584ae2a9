"""Batch spec files: reading and validating them, every problem at once, before any model call.

A spec (YAML; relative paths resolve against the spec file's folder)::

    model:                      # model settings (base_url, root_model, sub_model, api_key, ...)
      base_url: http://localhost:11434/v1
      root_model: qwen3:14b
    settings:                   # any setting, same names as config files (flat or sectioned)
      max_iterations: 15
    concurrency: 2              # queries at once (default: batch_concurrency, 2)
    output: results.jsonl       # default: <spec name>.results.jsonl beside the spec
    context_file: docs/a.txt    # optional default context for queries without their own
    context_root: data          # optional: where context paths may point (default: the spec's folder)
    executor: local             # local (default) | ray, or {kind: ray, address: HOST:PORT}
    match: contains             # optional default scorer for `expected`: contains | exact | numeric
    queries:
      - id: q1
        question: What is the main topic?
        context_file: docs/report.txt     # or context_dir: DIR, or context: inline text
        expected: climate                 # optional: scored
        match: contains                   # optional

Settings precedence: defaults < config file < .env < environment < the spec < command-line flags.

Context paths may not leave the spec's folder (or its ``context_root``, itself inside that
folder; ``--context-root DIR`` on the command line may point anywhere), following symlinks,
so that a spec from someone else cannot send any file the user can read to the model
server.  ``allow_outside_paths=True`` (``--allow-outside-paths``) lifts the rule.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from rlm.config import Settings, settings_from_mapping
from rlm.config.loader import load_yaml, suggest
from rlm.core.context import check_file
from rlm.errors import ConfigError, ContextError

TOP_KEYS = ("model", "settings", "concurrency", "output", "context_file", "context_dir", "context_root", "executor",
            "match", "queries")
EXECUTORS = ("local", "ray")
EXECUTOR_KEYS = ("kind", "address")
OUTSIDE_HINT = "move it inside, or pass --allow-outside-paths if you trust this spec"
QUERY_KEYS = ("id", "question", "context_file", "context_dir", "context", "expected", "match")
MATCH_KINDS = ("contains", "exact", "numeric")
CONTEXT_KEYS = ("context_file", "context_dir", "context")


@dataclass(frozen=True)
class BatchQuery:
    id: str
    question: str
    context_file: Path | None = None
    context_dir: Path | None = None
    context_text: str | None = None
    expected: str | None = None
    match: str = "contains"


@dataclass(frozen=True)
class BatchSpec:
    path: Path
    settings: Settings
    concurrency: int
    output: Path
    queries: tuple[BatchQuery, ...]
    executor: str = "local"
    address: str | None = None

    @property
    def trace_dir(self) -> Path:
        """Per-query traces: ``<output stem>-traces/`` beside the output file."""
        return self.output.parent / f"{self.output.stem}-traces"


def _suggest(key: str, candidates: tuple[str, ...]) -> str:
    return suggest(key, candidates)


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "a boolean", type(None): "nothing"}.get(type(value), type(value).__name__)


def _read(path: Path, problems: list[str]) -> Mapping | None:
    if not path.exists():
        problems.append("the file does not exist")
        return None
    if path.is_dir():
        problems.append("it is a folder; give a YAML file")
        return None
    try:
        data = load_yaml(path, path.name, what="spec")
    except ConfigError as exc:  # unreadable, not UTF-8, malformed, nested too deeply
        problems.extend(exc.problems)
        return None
    if not isinstance(data, Mapping):
        problems.append(f"the top level must be a mapping with 'queries:', got {_type_name(data)}")
        return None
    return data


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def _settings(data: Mapping, base: Settings | None, cli: Mapping[str, Any] | None, where: str,
              problems: list[str]) -> Settings:
    layer: dict[str, Any] = {}
    raw_settings = data.get("settings")
    if raw_settings is not None and not isinstance(raw_settings, Mapping):
        problems.append(f"'settings' must be a mapping of settings, got {_type_name(raw_settings)}")
    elif raw_settings:
        layer.update({str(k): v for k, v in raw_settings.items()})
    model = data.get("model")
    if model is not None and not isinstance(model, Mapping):
        problems.append(f"'model' must be a mapping (base_url, root_model, sub_model, ...), got {_type_name(model)}")
    elif model:
        raw_inner = layer.get("model")
        inner: Mapping = raw_inner if isinstance(raw_inner, Mapping) else {}
        layer["model"] = {**inner, **{str(k): v for k, v in model.items()}}
    settings = base or Settings()
    try:  # a spec may not weaken the sandbox unless the command line said --unsafe-sandbox
        settings = settings_from_mapping(layer, base=settings, source=where)
    except ConfigError as exc:
        problems.extend(exc.problems)
    values = {k: v for k, v in (cli or {}).items() if v is not None}
    if values:
        try:
            settings = settings_from_mapping(values, base=settings, source="the command line", from_file=False)
        except ConfigError as exc:
            problems.extend(exc.problems)
    return settings


@dataclass(frozen=True)
class PathRule:
    """Where context paths may point: inside ``root`` (described as ``what``), unless ``allow_all``."""

    folder: Path          # relative paths resolve against it (the spec's folder)
    root: Path            # resolved
    what: str
    allow_all: bool = False

    def leaves(self, path: Path) -> bool:
        return not self.allow_all and not _inside(path.resolve(), self.root)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _escaping_links(folder: Path, rule: PathRule, limit: int = 3) -> list[str]:
    """Symlinks under ``folder`` whose target leaves the allowed root (the first ``limit``)."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            entry = Path(dirpath) / name
            if entry.is_symlink() and rule.leaves(entry):
                found.append(f"{entry.relative_to(folder)} -> {entry.resolve()}")
                if len(found) >= limit:
                    return found
    return found


def _context_path(raw: Any, key: str, rule: PathRule, label: str, settings: Settings,
                  problems: list[str]) -> Path | None:
    if not isinstance(raw, str) or not raw.strip():
        problems.append(f"{label}: {key} must be a path (a string), got {_type_name(raw)}")
        return None
    path = Path(raw).expanduser()
    path = path if path.is_absolute() else rule.folder / path
    if rule.leaves(path):  # checked before the file is even opened
        shown = f" (it resolves to {path.resolve()})" if path.resolve() != path else ""
        problems.append(f"{label}: {key} {raw} leaves {rule.what} {rule.root}{shown}; {OUTSIDE_HINT}")
        return None
    if key == "context_dir" and not rule.allow_all and path.is_dir():
        links = _escaping_links(path, rule)
        if links:
            problems.append(f"{label}: context_dir {raw} holds symlinks that leave {rule.what} {rule.root}: "
                            f"{'; '.join(links)}; {OUTSIDE_HINT}")
            return None
    try:
        check_file(path, max_bytes=settings.run.max_context_bytes, allow_dir=(key == "context_dir"))
    except ContextError as exc:
        problems.append(f"{label}: {exc.message}")
        return None
    if key == "context_dir" and not path.is_dir():
        problems.append(f"{label}: context_dir {path} is not a folder (use context_file for a file)")
        return None
    return path.resolve()


def _path_rule(data: Mapping, folder: Path, context_root: str | Path | None, allow_outside: bool,
               problems: list[str]) -> PathRule:
    """The spec's folder, or its ``context_root`` (inside that folder), or the command line's."""
    if context_root is not None:  # the user's own choice: may point anywhere
        root = Path(context_root).expanduser().resolve()
        if not root.is_dir():
            problems.append(f"--context-root {context_root} is not a folder")
        return PathRule(folder, root, "--context-root", allow_outside)
    raw = data.get("context_root")
    if raw is None:
        return PathRule(folder, folder, "the spec's folder", allow_outside)
    if not isinstance(raw, str) or not raw.strip():
        problems.append(f"context_root must be a folder path (a string), got {_type_name(raw)}")
        return PathRule(folder, folder, "the spec's folder", allow_outside)
    given = Path(raw).expanduser()
    root = (given if given.is_absolute() else folder / given).resolve()
    if not allow_outside and not _inside(root, folder):
        problems.append(f"context_root {raw} leaves the spec's folder {folder} (it resolves to {root}); a spec "
                        "cannot widen its own reach: pass --context-root DIR, or --allow-outside-paths")
    elif not root.is_dir():
        problems.append(f"context_root {raw} is not a folder ({root})")
    return PathRule(folder, root, "context_root", allow_outside)


def _executor(data: Mapping, kind: str | None, address: str | None,
              problems: list[str]) -> tuple[str, str | None]:
    """``executor: local | ray`` or ``{kind: ray, address: ...}``; the command line wins."""
    raw = data.get("executor")
    spec_kind, spec_address = "local", None
    if isinstance(raw, Mapping):
        for key in raw:
            if str(key) not in EXECUTOR_KEYS:
                problems.append(f"executor: unknown key '{key}'{_suggest(str(key), EXECUTOR_KEYS)}")
        spec_kind = raw.get("kind", "ray" if raw.get("address") is not None else "local")
        spec_address = raw.get("address")
        if spec_address is not None and (not isinstance(spec_address, str) or not spec_address.strip()):
            problems.append(f"executor: address must be HOST:PORT or ray://HOST:PORT (a string), "
                            f"got {_type_name(spec_address)}")
            spec_address = None
    elif raw is not None:
        spec_kind = raw
    if kind is None and spec_kind not in EXECUTORS:
        problems.append(f"executor must be one of {', '.join(EXECUTORS)}, got {spec_kind!r}"
                        f"{_suggest(str(spec_kind), EXECUTORS)}")
        spec_kind = "local"
    final_kind = kind if kind is not None else str(spec_kind)
    if final_kind not in EXECUTORS:
        problems.append(f"--executor must be one of {', '.join(EXECUTORS)}, got {final_kind!r}")
    final_address = address if address is not None else spec_address
    if final_kind == "local" and final_address is not None:
        where = "--address" if address is not None else "executor: address"
        problems.append(f"{where} is for the ray executor; give --executor ray (or executor: ray) or drop it")
    return final_kind, final_address


def _query(raw: Any, i: int, rule: PathRule, defaults: dict, default_match: str, settings: Settings,
           seen: dict[str, int], problems: list[str]) -> BatchQuery | None:
    label = f"queries[{i}]"
    if not isinstance(raw, Mapping):
        problems.append(f"{label} must be a mapping with id and question, got {_type_name(raw)}")
        return None
    rid = raw.get("id")
    if rid is not None and not isinstance(rid, bool) and isinstance(rid, (str, int)) and str(rid).strip():
        qid = str(rid).strip()
        label = f"queries[{i}] (id {qid})"
        if qid in seen:
            problems.append(f"{label}: duplicate id '{qid}' (first used by queries[{seen[qid]}])")
        else:
            seen[qid] = i
    else:
        qid = None
        problems.append(f"{label}: 'id' is missing or empty" if rid is None or str(rid).strip() == ""
                        else f"{label}: id must be a string or an integer, got {_type_name(rid)}")
    for key in raw:
        if str(key) not in QUERY_KEYS:
            problems.append(f"{label}: unknown key '{key}'{_suggest(str(key), QUERY_KEYS)}")
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        problems.append(f"{label}: question must be a non-empty string" +
                        ("" if question is None else f", got {_type_name(question)}"))
    given = [k for k in CONTEXT_KEYS if raw.get(k) is not None]
    ctx: dict[str, Any] = {}
    if len(given) > 1:
        problems.append(f"{label}: give one context, not {' and '.join(given)}")
    elif given:
        key = given[0]
        if key == "context":
            if not isinstance(raw["context"], str) or not raw["context"].strip():
                problems.append(f"{label}: context must be non-empty text, got {_type_name(raw['context'])}")
            else:
                ctx["context_text"] = raw["context"]
        else:
            ctx[key] = _context_path(raw[key], key, rule, label, settings, problems)
    elif defaults:
        ctx.update(defaults)
    else:
        problems.append(f"{label}: no context: give context_file, context_dir or context "
                        "(or a top-level context_file for every query)")
    expected = raw.get("expected")
    if expected is not None and (isinstance(expected, bool) or not isinstance(expected, (str, int, float))):
        problems.append(f"{label}: expected must be text or a number, got {_type_name(expected)}")
        expected = None
    match = raw.get("match") if raw.get("match") is not None else default_match
    if match not in MATCH_KINDS:
        problems.append(f"{label}: match must be one of {', '.join(MATCH_KINDS)}, got {match!r}"
                        f"{_suggest(str(match), MATCH_KINDS)}")
    if qid is None or not isinstance(question, str):
        return None
    return BatchQuery(id=qid, question=question.strip(), expected=None if expected is None else str(expected),
                      match=match if match in MATCH_KINDS else "contains", **ctx)


def load_spec(path: str | Path, *, base: Settings | None = None, cli: Mapping[str, Any] | None = None,
              output: str | Path | None = None, concurrency: int | None = None, executor: str | None = None,
              address: str | None = None, allow_outside_paths: bool = False,
              context_root: str | Path | None = None) -> BatchSpec:
    """Read and validate a batch spec; raise ``ConfigError`` listing every problem.

    ``base``: settings from config files and the environment; ``cli``: flat setting keys from
    command-line flags (win over the spec); ``output`` / ``concurrency``: command-line overrides
    (a relative ``output`` is relative to the working directory); ``executor`` / ``address``:
    the command line's executor; ``allow_outside_paths`` / ``context_root``: see the module doc.
    """
    path = Path(path).expanduser()
    problems: list[str] = []
    read = _read(path, problems)
    if read is None:
        _raise(path, problems)
    data: Mapping = read or {}
    folder = path.resolve().parent
    for key in data:
        if str(key) not in TOP_KEYS:
            problems.append(f"unknown key '{key}' at the top level{_suggest(str(key), TOP_KEYS)}")
    settings = _settings(data, base, cli, f"spec {path.name}", problems)
    rule = _path_rule(data, folder, context_root, allow_outside_paths, problems)
    executor_kind, executor_address = _executor(data, executor, address, problems)

    workers: int | None
    if concurrency is not None:
        if _positive_int(concurrency) is None:
            problems.append(f"--concurrency must be a positive integer, got {concurrency!r}")
        workers = concurrency
    elif data.get("concurrency") is not None:
        workers = _positive_int(data.get("concurrency"))
        if workers is None:
            problems.append(f"concurrency must be a positive integer, got {data.get('concurrency')!r}")
    else:
        workers = settings.batch_concurrency

    if output is not None:
        out_path = Path(output).expanduser()
    elif data.get("output") is not None:
        raw_out = data.get("output")
        if not isinstance(raw_out, str) or not raw_out.strip():
            problems.append(f"output must be a file path (a string), got {_type_name(raw_out)}")
            out_path = folder / f"{path.stem}.results.jsonl"
        else:
            out_path = Path(raw_out).expanduser()
            out_path = out_path if out_path.is_absolute() else folder / out_path
    else:
        out_path = folder / f"{path.stem}.results.jsonl"
    if out_path.exists() and out_path.is_dir():
        problems.append(f"output {out_path} is a folder; give a file path")

    defaults: dict[str, Any] = {}
    top_ctx = [k for k in ("context_file", "context_dir") if data.get(k) is not None]
    if len(top_ctx) > 1:
        problems.append("give one top-level default context, not context_file and context_dir")
    elif top_ctx:
        # kept even when invalid (None): the problem is reported once, not once per query
        defaults[top_ctx[0]] = _context_path(data[top_ctx[0]], top_ctx[0], rule, "top level", settings, problems)
    top_match = data.get("match", "contains")
    if top_match not in MATCH_KINDS:
        problems.append(f"match must be one of {', '.join(MATCH_KINDS)}, got {top_match!r}")
        top_match = "contains"

    raw_queries = data.get("queries")
    queries: list[BatchQuery] = []
    if raw_queries is None:
        problems.append("'queries' is missing: give a list of {id, question, context_file}")
    elif not isinstance(raw_queries, list):
        problems.append(f"'queries' must be a list, got {_type_name(raw_queries)}")
    elif not raw_queries:
        problems.append("'queries' is empty")
    else:
        seen: dict[str, int] = {}
        for i, raw in enumerate(raw_queries):
            q = _query(raw, i, rule, defaults, top_match, settings, seen, problems)
            if q is not None:
                queries.append(q)
    if problems:
        _raise(path, problems)
    assert workers is not None
    return BatchSpec(path=path.resolve(), settings=settings, concurrency=workers, output=out_path.resolve(),
                     queries=tuple(queries), executor=executor_kind, address=executor_address)


def _raise(path: Path, problems: list[str]) -> NoReturn:
    shown = str(path).replace("{", "{{").replace("}", "}}")
    raise ConfigError(problems=problems, one=f"invalid batch spec {path}", many="{n} problems in batch spec " + shown,
                      hint="fix them and run again; nothing was run")
