"""`rlm bench viewer`: a synthetic trace of many iterations and megabytes of output, its
page's size and render time, and how long headless Chromium takes to load it."""

from __future__ import annotations

import json
import random
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from rlm.viewer import write_view
from rlm.viewer.browser import dump_dom_timed

_READY = re.compile(r'data-ready-ms="([0-9.]+)"')
_WORDS = ("alpha", "beta", "gamma", "delta", "needle", "haystack", "chapter", "token", "result", "value")


def synthetic_trace(path: Path, *, iterations: int = 1_000, output_bytes: int = 10_000_000, seed: int = 7) -> Path:
    """Write a trace of ``iterations`` iterations whose cell outputs total ``output_bytes``."""
    rng = random.Random(seed)
    per_cell = max(output_bytes // max(iterations, 1), 1)
    t = 1.2
    lines = [_line("run_start", 1.2, question="Which chapter mentions the needle, and how often?",
                   context={"kind": "str", "total_chars": 40_000_000, "n_documents": 1, "source": "corpus.txt"},
                   root_model="root-model", sub_model="sub-model", depth=0,
                   settings={"max_iterations": iterations, "max_output_chars": per_cell * 2})]
    for n in range(1, iterations + 1):
        code = (f"# step {n}: look at chunk {n}\nchunk = context[{n * 40_000}:{(n + 1) * 40_000}]\n"
                f"hits = [m.start() for m in re.finditer(r'needle', chunk)]\nprint(len(hits), hits[:5])")
        model_s = round(rng.uniform(0.3, 2.5), 3)
        t += model_s
        lines.append(_line("model_reply", t, iteration=n, model="root-model", latency_s=model_s,
                           usage={"prompt_tokens": 2_000 + 40 * n, "completion_tokens": rng.randint(40, 300)},
                           text=f"Looking at chunk {n} next.\n```repl\n{code}\n```"))
        for _ in range(n % 3):
            sub_s = round(rng.uniform(0.1, 0.8), 3)
            lines.append(_line("sub_call", t + sub_s, model="sub-model", prompt_chars=rng.randint(500, 40_000),
                               reply_chars=rng.randint(10, 900), latency_s=sub_s, ok=n % 97 != 0,
                               error=None if n % 97 else "HTTP 500 from the model server"))
        cell_s = round(rng.uniform(0.05, 1.5), 4)
        t += cell_s
        output = _output(rng, per_cell)
        lines.append(_line("cell", t, iteration=n, code=code, output=output,
                           error="ZeroDivisionError" if n % 50 == 0 else None, timed_out=n % 211 == 0,
                           duration_s=cell_s, restarted="after a timeout" if n % 211 == 0 else None,
                           truncated_chars=0))
    lines.append(_line("run_end", t + 0.1, answer="Chapter 12 mentions the needle 3 times.",
                       status="ok", iterations=iterations, sub_calls=iterations, duration_s=round(t + 0.1, 3),
                       usage={"root-model": {"prompt_tokens": 1, "completion_tokens": 1}}, error=None))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _line(kind: str, t: float, **data: object) -> str:
    return json.dumps({"t": round(t, 3), "ts": "2026-01-01T00:00:00.000+00:00", "kind": kind, **data})


def _output(rng: random.Random, size: int) -> str:
    parts: list[str] = []
    total = 0
    while total < size:
        line = f"{rng.randint(0, 99_999):>6} " + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14)))
        parts.append(line)
        total += len(line) + 1
    return "\n".join(parts)[:size]


def bench_viewer(*, iterations: int = 1_000, output_mb: float = 10.0, repeats: int = 3,
                 say: Callable[[str], None] = lambda _m: None) -> dict[str, object]:
    """Figures: trace and page size, render time, and Chromium's load time (median of repeats)."""
    with tempfile.TemporaryDirectory(prefix="rlm-viewer-bench-") as tmp:
        trace = synthetic_trace(Path(tmp) / "bench.jsonl", iterations=iterations,
                                output_bytes=int(output_mb * 1_000_000))
        say(f"trace written: {trace.stat().st_size / 1e6:.1f} MB")
        renders = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            page = write_view(trace)
            renders.append(time.perf_counter() - t0)
        say(f"page rendered: {page.stat().st_size / 1e6:.1f} MB; loading it in headless Chromium")
        blank = Path(tmp) / "blank.html"
        blank.write_text('<!doctype html><html data-ready-ms="0"><body></body></html>', encoding="utf-8")
        ready, walls, blank_walls = [], [], []
        for _ in range(repeats):
            blank_walls.append(dump_dom_timed(blank)[1])
            dom, wall = dump_dom_timed(page)
            m = _READY.search(dom)
            if m is None:
                raise RuntimeError("the page's script did not run (no data-ready-ms in the DOM)")
            ready.append(float(m.group(1)) / 1000)
            walls.append(wall)
        return {
            "iterations": iterations,
            "trace_mb": round(trace.stat().st_size / 1e6, 2),
            "page_mb": round(page.stat().st_size / 1e6, 2),
            "render_s": round(statistics.median(renders), 3),
            "browser_ready_s": round(statistics.median(ready), 3),
            "browser_ready_max_s": round(max(ready), 3),
            "chromium_wall_s": round(statistics.median(walls), 3),
            "chromium_blank_wall_s": round(statistics.median(blank_walls), 3),
            "dom_elements": len(re.findall(r"<[a-zA-Z]", dom)),
            "under_2s": max(ready) < 2.0,
        }


__all__ = ["bench_viewer", "synthetic_trace"]
