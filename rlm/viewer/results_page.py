"""The page of a batch results file: one row per query, linking to its trace's page."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from rlm.viewer.html import Page, clean, esc, seconds
from rlm.viewer.model import Event, number
from rlm.viewer.trace_page import status_class

ANSWER_CELL_CHARS = 400


def render_results_page(records: list[Event], *, title: str, links: dict[str, Path | str],
                        page_dir: Path) -> str:
    """The HTML document for a results file.

    ``links`` maps a record's id to its trace page (a Path, linked relative to ``page_dir``)
    or to a reason there is none (a str, shown muted).
    """
    page = Page(title)
    statuses: dict[str, int] = {}
    for r in records:
        statuses[clean(r.get("status") or "unknown")] = statuses.get(clean(r.get("status") or "unknown"), 0) + 1
    scores = [number(r.get("score")) for r in records if r.get("score") is not None]
    summary = " ".join(f'<span class="badge {status_class(s)}">{esc(s)} {n:,}</span>' for s, n in sorted(statuses.items()))
    facts = [f"{len(records):,} queries", seconds(sum(number(r.get("duration_s")) for r in records)) + " in all"]
    if scores:
        facts.append(f"mean score {sum(scores) / len(scores):.3f} over {len(scores):,} scored")
    head = (f'<div class="card"><div class="label">batch results</div><p>{summary}</p>'
            f'<p class="facts">{" · ".join(facts)}</p></div>')
    rows = "".join(_row(page, r, links.get(_key(r)), page_dir) for r in records)
    table = ('<div class="card"><table class="queries"><thead><tr><th>id</th><th>status</th><th>answer</th>'
             '<th>expected</th><th>score</th><th>time</th><th>iterations</th><th>trace</th></tr></thead>'
             f"<tbody>{rows}</tbody></table></div>")
    return page.finish(head + table, subtitle=f"{len(records):,} queries", filter_iterations=False)


def _score_class(record: Event) -> str:
    if record.get("score") is None:
        return ""
    value = number(record.get("score"))
    return " good" if value >= 1.0 else " poor" if value <= 0.0 else ""


def _key(record: Event) -> str:
    return str(record.get("id"))  # as write_view keys its links


def _row(page: Page, r: Event, link: Path | str | None, page_dir: Path) -> str:
    status = clean(r.get("status") or "unknown")
    answer = page.block(r.get("answer"), cls="prose", what="answer") if r.get("answer") is not None \
        else '<span class="muted">(none)</span>'
    if r.get("error"):
        answer += f'<pre class="err">{esc(r.get("error"))}</pre>'
    expected = page.block(r.get("expected"), cls="prose", what="expected answer") \
        if r.get("expected") is not None else ""
    score = f"{number(r.get('score')):.3f}" if r.get("score") is not None else ""
    if isinstance(link, Path):
        href = quote(Path(os.path.relpath(link, page_dir)).as_posix(), safe="/")
        trace = f'<a href="{esc(href)}">view</a>'
    else:
        trace = f'<span class="muted">{esc(link or "none")}</span>'
    return (f"<tr><td>{esc(r.get('id'))}</td><td><span class=\"badge {status_class(status)}\">{esc(status)}</span></td>"
            f"<td>{answer}</td><td>{expected}</td><td class=\"num{_score_class(r)}\">{score}</td>"
            f"<td class=\"num\">{seconds(number(r.get('duration_s')))}</td>"
            f"<td class=\"num\">{esc(r.get('iterations', ''))}</td><td>{trace}</td></tr>")


__all__ = ["render_results_page"]
