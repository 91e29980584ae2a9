"""Reading the files settings come from, shared by config files and batch specs: one YAML loader
(bounded in size and nesting, every failure a ``ConfigError`` naming the file), one ``.env``
reader (UTF-8 or a one-line error with the byte offset) and one key-suggestion helper."""

from __future__ import annotations

import difflib
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rlm.errors import ConfigError

MAX_FILE_BYTES = 64 * 1024 * 1024   # a settings file or spec larger than this is refused
MAX_DOTENV_BYTES = 1024 * 1024
MAX_DEPTH = 100                     # nesting levels of mappings/lists a settings file or spec may use

__all__ = ["MAX_DEPTH", "read_bytes", "decode_utf8", "load_yaml", "parse_yaml", "parse_dotenv", "suggest"]


def suggest(key: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or ``""``."""
    match = difflib.get_close_matches(str(key), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _fail(problem: str, hint: str | None = None) -> ConfigError:
    return ConfigError(problems=[problem], hint=hint)


def read_bytes(path: Path, where: str, *, limit: int = MAX_FILE_BYTES, what: str = "config file") -> bytes:
    """The file's bytes; a folder, an unreadable file or one over ``limit`` bytes is a ``ConfigError``."""
    try:
        if path.is_dir():
            raise _fail(f"{what} {where} is a directory", "give the path of a file")
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise _fail(f"cannot read {what} {where}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise _fail(f"{what} {where} is larger than {limit // 1024} KiB", "is it the right file?")
    return data


def decode_utf8(data: bytes, where: str, what: str = "config file") -> str:
    """The text of a UTF-8 file, or a one-line ``ConfigError`` with the first bad byte's offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"{what} {where} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                    "save it as UTF-8") from None


def _too_deep(text: str) -> int | None:
    """The line where nesting first passes ``MAX_DEPTH`` (the event parser is iterative, unlike the
    composer, so a file nested 100,000 levels deep is caught before anything recurses), else None."""
    import yaml

    depth = 0
    for event in yaml.parse(io.StringIO(text), Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                return (mark.line + 1) if mark is not None else 0
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return None


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` of ``text`` with every failure a ``ConfigError`` naming ``where``."""
    import yaml

    try:
        line = _too_deep(text)
        if line is not None:
            raise _fail(f"{where} is nested more than {MAX_DEPTH} levels deep (line {line})",
                        "settings and specs need a few levels; is it the right file?")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc)
        raise _fail(f"malformed YAML in {where}{at}: {what}", "fix the YAML syntax at that line") from None
    except RecursionError:  # not expected after the depth check; never "a bug in rlm"
        raise _fail(f"{where} is nested too deeply to read") from None


def load_yaml(path: Path, where: str, *, what: str = "config file") -> Any:
    """Read, decode and parse one YAML (or JSON) file."""
    return parse_yaml(decode_utf8(read_bytes(path, where, what=what), where, what), where)


def parse_dotenv(text: str, *, interpolate: bool = True) -> dict[str, str | None]:
    """The variables of a ``.env`` text (python-dotenv's syntax); ``os.environ`` is never touched."""
    from dotenv import dotenv_values

    return dict(dotenv_values(stream=io.StringIO(text), interpolate=interpolate))
