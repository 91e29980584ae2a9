"""The page of one trace file: for each run, the question, the context, the result, a
timeline of where the time went and every iteration (reply, cells, sub-calls, notes)."""

from __future__ import annotations

from typing import Any

from rlm.viewer.html import Page, clean, count, esc, plural, seconds, segments
from rlm.viewer.model import Event, Iteration, Run, number, split_runs

PHASES = ("model", "sandbox", "sub-calls", "start-up", "other")
_STATUS_CLASS = {"ok": "ok", "max_iterations": "warn", "incomplete": "warn", "time_limit": "warn",
                 "token_limit": "warn", "cost_limit": "warn"}


def status_class(status: str) -> str:
    return _STATUS_CLASS.get(status, "bad")


def render_trace_page(events: list[Event], *, title: str) -> str:
    """The whole HTML document for the events of one trace file."""
    page = Page(title)
    runs = split_runs(events)
    parts = []
    if len(runs) > 1:
        links = "".join(f'<a href="#run-{k}" class="pill {status_class(r.status)}">run {k + 1}: {esc(r.status)}</a>'
                        for k, r in enumerate(runs))
        parts.append(f'<nav class="runs">{len(runs)} runs in this file: {links}</nav>')
    for k, run in enumerate(runs):
        parts.append(_run(page, run, k, len(runs)))
    return page.finish("".join(parts), subtitle=f"{len(events):,} events")


def _run(page: Page, run: Run, k: int, n_runs: int) -> str:
    head = f"<h1>run {k + 1} of {n_runs}</h1>" if n_runs > 1 else ""
    return (f'<section class="run" id="run-{k}">{head}{_header(page, run)}{_result(page, run)}'
            f"{_timeline(run, k)}{_notes(page, run.notes)}"
            + "".join(_iteration(page, it, k, i) for i, it in enumerate(run.iterations))
            + (_others(run.other) if run.other else "") + "</section>")


def _header(page: Page, run: Run) -> str:
    start = run.start or {}
    given = start.get("context")
    ctx: Event = given if isinstance(given, dict) else {}
    facts = [("context", f"{esc(ctx.get('kind', '?'))} · {count(ctx.get('total_chars'))} characters · "
                         + plural(ctx.get("n_documents"), "document")),
             ("source", esc(ctx.get("source", "?"))),
             *([("files", f"{count(ctx.get('n_files'))} · listed to the model: "
                          + esc(", ".join(str(p) for p in ctx["paths"])))] if isinstance(ctx.get("paths"), list) else []),
             ("root model", esc(start.get("root_model") or "?")),
             ("sub-model", esc(start.get("sub_model") or "same as root")),
             ("started", esc(start.get("ts", "?")))]
    if start.get("depth"):
        facts.append(("depth", esc(start.get("depth"))))
    settings = start.get("settings")
    if isinstance(settings, dict) and settings:
        facts.append(("settings", " · ".join(f"{esc(key)}={esc(v)}" for key, v in settings.items())))
    dl = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    question = page.block(run.question or "(no run_start event)", cls="question", what="question")
    return f'<div class="card head"><div class="label">question</div>{question}<dl class="meta">{dl}</dl></div>'


def _result(page: Page, run: Run) -> str:
    end = run.end or {}
    status = run.status
    if run.end is None:
        last = run.iterations[-1].number if run.iterations else "?"
        answer = f'<p class="muted">no run_end event: the run stopped after iteration {esc(last)}</p>'
    elif end.get("answer") is None:
        answer = '<p class="muted">(no answer)</p>'
    else:
        answer = page.block(end.get("answer"), cls="answer", what="answer")
    facts = [plural(end.get("iterations", len(run.iterations)), "iteration"),
             plural(end.get("sub_calls", sum(len(it.sub_calls) for it in run.iterations)), "sub-call"),
             _tokens(end.get("usage")), seconds(run.duration_s)]
    cost = end.get("cost_usd")
    if isinstance(cost, dict) and cost:
        facts.append(esc(" · ".join(f"{m} {number(c):.4f} USD" for m, c in cost.items())))
    error = f'<pre class="err">{esc(end.get("error"))}</pre>' if end.get("error") else ""
    return (f'<div class="card result {status_class(status)}"><div class="label">answer '
            f'<span class="badge {status_class(status)}">{esc(status)}</span></div>{answer}{error}'
            f'<p class="facts">{" · ".join(f for f in facts if f)}</p></div>')


def _tokens(usage: Any) -> str:
    """"1,200 tokens in / 40 out" summed over models (usage may be per model or flat)."""
    if not isinstance(usage, dict) or not usage:
        return ""
    flat = [usage] if "prompt_tokens" in usage else [u for u in usage.values() if isinstance(u, dict)]
    tokens_in = sum(int(number(u.get("prompt_tokens"))) for u in flat)
    tokens_out = sum(int(number(u.get("completion_tokens"))) for u in flat)
    return f"{tokens_in:,} tokens in / {tokens_out:,} out"


def _timeline(run: Run, k: int) -> str:
    phases = run.phases()
    total = sum(phases.values()) or 1.0
    bar = "".join(f'<span class="seg {_cls(name)}" style="width:{100 * s / total:.3f}%" '
                  f'title="{name} {seconds(s)}"></span>' for name, s in phases.items() if s > 0)
    legend = "".join(f'<span class="key"><i class="{_cls(name)}"></i>{name} {seconds(s)} '
                     f'({100 * s / total:.0f}%)</span>' for name, s in phases.items() if s > 0)
    its = run.iterations
    peak = max((it.total_s for it in its), default=0.0) or 1.0
    cols = []
    for i, it in enumerate(its):
        segs = "".join(f'<span class="{_cls(name)}" style="height:{100 * s / peak:.2f}%"></span>'
                       for name, s in (("sub-calls", it.sub_s), ("sandbox", it.sandbox_s), ("model", it.model_s))
                       if s > 0)
        tip = (f"iteration {esc(it.number)}: model {seconds(it.model_s)}, sandbox {seconds(it.sandbox_s)}, "
               f"sub-calls {seconds(it.sub_s)}")
        bad = " bad" if it.failed else ""
        cols.append(f'<a class="col{bad}" href="#r{k}-i{i}" title="{tip}">{segs}</a>')
    dense = " dense" if len(its) > 150 else ""
    last = f"<span>iteration {esc(its[-1].number)}</span>" if len(its) > 1 else ""
    chart = (f'<div class="axis-note">time per iteration (the tallest bar is {seconds(peak)}; '
             "a bar links to its iteration)</div>"
             f'<div class="chartbox" style="max-width:{max(len(its) * 40, 320)}px">'
             f'<div class="chart{dense}" aria-label="time per iteration">{"".join(cols)}</div>'
             f'<div class="axis"><span>iteration {esc(its[0].number)}</span>{last}</div></div>') if its else ""
    return (f'<div class="card timeline"><div class="label">where the time went <span class="lc">{seconds(run.duration_s)}</span></div>'
            f'<div class="bar">{bar}</div><div class="legend">{legend}</div>{chart}</div>')


def _cls(phase: str) -> str:
    return "p-" + phase.replace("-", "")


def _iteration(page: Page, it: Iteration, k: int, i: int) -> str:
    badges = []
    for cell in it.cells:
        if cell.get("timed_out"):
            badges.append('<span class="badge bad">timed out</span>')
        elif cell.get("error"):
            badges.append(f'<span class="badge bad">{esc(cell.get("error"))}</span>')
        if cell.get("restarted"):
            badges.append(f'<span class="badge warn">restarted: {esc(cell.get("restarted"))}</span>')
    if any(not c.get("ok", True) for c in it.sub_calls):
        badges.append('<span class="badge bad">sub-call failed</span>')
    reply = it.reply or {}
    facts = [f"model {seconds(it.model_s)}", _tokens(reply.get("usage"))]
    if it.cells:
        facts.append(f"sandbox {seconds(it.sandbox_s)}")
    if it.sub_calls:
        facts.append(f"{plural(len(it.sub_calls), 'sub-call')} {seconds(it.sub_s)}")
    name = f"iteration {esc(it.number)}" + (" · final request" if it.final_request else "")
    model = f'<span class="model">{esc(reply.get("model"))}</span>' if reply.get("model") else ""
    head = (f'<h2><a href="#r{k}-i{i}">{name}</a>{model}{"".join(badges)}'
            f'<span class="facts">{" · ".join(f for f in facts if f)}</span></h2>')
    said = clean(reply.get("text"))
    body = _reply(page, reply) + "".join(_cell(page, c, n, len(it.cells), said) for n, c in enumerate(it.cells))
    body += _sub_calls(page, it.sub_calls) + _notes(page, it.notes)
    bad = " bad" if it.failed else ""
    return f'<section class="it{bad}" id="r{k}-i{i}">{head}{body}</section>'


def _reply(page: Page, reply: Event) -> str:
    if not reply:
        return ""
    parts = []
    for kind, part in segments(clean(reply.get("text"))):
        if kind == "code":
            parts.append(page.block(part, cls="code", code=True, what="code"))
        else:
            parts.append(page.block(part, cls="prose", what="reply"))
    return f'<div class="reply"><div class="label">reply</div>{"".join(parts) or "<p class=muted>(empty)</p>"}</div>'


def _cell(page: Page, cell: Event, n: int, total: int, said: str) -> str:
    facts = [seconds(number(cell.get("duration_s")))]
    if cell.get("truncated_chars"):
        facts.append(f"{count(cell.get('truncated_chars'))} characters cut from the output")
    label = f"cell {n + 1} of {total}" if total > 1 else "cell"
    source = clean(cell.get("code"))
    code = page.block(source, cls="code", code=True, what="code")
    shown = "" if source.strip() and source.strip() in said else " open"  # else the reply shows it
    output = clean(cell.get("output")).rstrip("\n")
    out = page.block(output, cls="out", what="output") if output.strip() else '<p class="muted">(no output)</p>'
    flags = ""
    if cell.get("timed_out"):
        flags += '<p class="flag bad">the cell timed out</p>'
    if cell.get("restarted"):
        flags += f'<p class="flag warn">the kernel was restarted ({esc(cell.get("restarted"))})</p>'
    if cell.get("error"):
        flags += f'<p class="flag bad">error: {esc(cell.get("error"))}</p>'
    return (f'<div class="cell"><div class="label">{label} <span class="lc">{" · ".join(facts)}</span></div>'
            f'<details class="code-fold"{shown}><summary>code run</summary>{code}</details>{out}{flags}</div>')


def _sub_calls(page: Page, calls: list[Event]) -> str:
    if not calls:
        return ""
    rows = []
    for n, c in enumerate(calls, 1):
        ok = c.get("ok", True)
        usage = c.get("usage") if isinstance(c.get("usage"), dict) else {}
        tokens = (f"{int(number(usage.get('prompt_tokens'))):,} / {int(number(usage.get('completion_tokens'))):,}"
                  if usage else "")
        rows.append([str(n), clean(c.get("model")), f"{int(number(c.get('prompt_chars'))):,}",
                     f"{int(number(c.get('reply_chars'))):,}", tokens, seconds(number(c.get("latency_s"))),
                     "ok" if ok else "!" + (clean(c.get("error")) or "failed")])
    names = ["#", "model", "prompt chars", "reply chars", "tokens in / out", "time", "result"]
    if not any(r[4] for r in rows):  # the trace records no tokens for sub-calls
        names.pop(4)
        rows = [r[:4] + r[5:] for r in rows]
    head = "<table class=\"subs\"><thead><tr>" + "".join(f"<th>{n}</th>" for n in names) + "</tr></thead>"
    texts = "".join(_sub_text(page, n, c) for n, c in enumerate(calls, 1))
    return (f'<div class="sub-calls"><div class="label">sub-calls</div>{head}'
            f"{page.rows(rows, what='sub-calls')}{texts}</div>")


def _sub_text(page: Page, n: int, call: Event) -> str:
    """The prompt and answer of a sub-call, when the trace records them (newer traces may)."""
    parts = []
    for key, what in (("prompt", "prompt"), ("answer", "answer"), ("reply", "answer")):
        if isinstance(call.get(key), str):
            parts.append(f'<div class="label">sub-call {n} {what}</div>{page.block(call[key], what=what)}')
    return "".join(parts)


def _notes(page: Page, notes: list[Event]) -> str:
    return "".join(f'<p class="note">note: {esc(n.get("text"))}</p>' for n in notes)


def _others(events: list[Event]) -> str:
    kinds = sorted({clean(e.get("kind")) for e in events})
    return f'<p class="muted">{len(events)} other events ({esc(", ".join(kinds))})</p>'


__all__ = ["render_trace_page", "status_class"]
