"""The trace viewer: one self-contained HTML page for a run's trace or a batch's results.

``write_view(path)`` reads a trace (JSONL events, see ``rlm.core.trace``) or a batch results
file (JSONL records, see ``rlm.jobs.results``; told apart by content) and writes the page
next to it.  The page needs no network, no server and no CDN: it works from ``file://``.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlm.core.text import jsonl_lines
from rlm.errors import UsageError
from rlm.viewer.model import Event
from rlm.viewer.results_page import render_results_page
from rlm.viewer.trace_page import render_trace_page

_HINT = "pass a trace (.jsonl) written by an rlm run, or the results file of rlm batch"


def write_view(trace_path: Path, out: Path | None = None) -> Path:
    """Write the page for ``trace_path`` (a trace or a results file) and return its path.

    By default the page is ``trace_path`` with the suffix ``.html``.  For a results file the
    page of every query's trace is written too (next to that trace) and linked.  Raises
    ``UsageError`` for a missing, empty or unreadable file.
    """
    path = Path(trace_path)
    target = Path(out) if out is not None else path.with_suffix(".html")
    if target.resolve() == path.resolve():
        raise UsageError(f"the page would overwrite its input {path}", hint="give another file with -o")
    kind, items = load(path)
    if kind == "trace":
        page = render_trace_page(items, title=path.name)
    else:
        links = {str(r.get("id")): _linked_page(r, path) for r in items}
        page = render_results_page(items, title=path.name, links=links, page_dir=target.resolve().parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the page {target}: {exc.strerror or exc}",
                         hint="give a writable file with -o") from exc
    return target


def load(path: Path) -> tuple[str, list[Event]]:
    """("trace", events) or ("results", last record per id) for the JSONL file ``path``."""
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise UsageError(f"{path} {what}", hint=_HINT)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}", hint=_HINT) from exc
    objects = [o for o in map(_parse, jsonl_lines(text)) if o is not None]  # split on "\n" only (A9)
    events = [o for o in objects if isinstance(o.get("kind"), str)]
    if events:
        return "trace", events
    latest: dict[str, Event] = {}
    for o in objects:
        if o.get("id") is not None:
            latest[str(o["id"])] = o
    if latest:
        return "results", list(latest.values())
    what = "holds no JSON lines" if not objects else "holds neither trace events nor query results"
    raise UsageError(f"{path} {what}", hint=_HINT)


def _parse(line: str) -> Event | None:
    if not line.strip():
        return None
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None  # a torn last line of a killed run, or JSON nested too deeply to load
    return value if isinstance(value, dict) else None


def _linked_page(record: Event, results: Path) -> Path | str:
    """The written page of a record's trace, or why there is none."""
    name = record.get("trace")
    if not isinstance(name, str) or not name:
        return "no trace"
    given = Path(name)
    candidates = [given] if given.is_absolute() else [Path.cwd() / given, results.parent / given]
    candidates.append(results.parent / given.name)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        return "trace not found"
    try:
        return write_view(found)
    except UsageError:
        return "unreadable trace"


__all__ = ["load", "write_view"]
