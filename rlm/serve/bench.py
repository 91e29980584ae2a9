"""Throughput and latency of ``rlm serve`` with the scripted model: 1, 4 and 16 concurrent clients.

The server runs in this process (uvicorn on 127.0.0.1, a free port) over a scripted OpenAI-compatible
model server (``rlm.llm.fake_server``), so the figures are rlm's own cost per request: the queue, a
warm sandbox with its context attached, the cells, the HTTP layers.  Each client sends plain
OpenAI-style chat requests over its own keep-alive connection (``http.client``: the ``openai``
package is imported by one module only).  ``rlm bench serve`` prints them; ``measure`` returns them."""

from __future__ import annotations

import http.client
import json
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT, SUB = "root-model", "sub-model"
SCRIPT = "```repl\nwords = context.split()\nprint(len(words))\nFINAL(str(len(words)) + ' words')\n```"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def measure(levels: tuple[int, ...] = (1, 4, 16), *, workers: int = 4, requests_per_client: int = 2,
            say: Any = print) -> dict[str, Any]:
    import uvicorn

    from rlm.config import load_settings
    from rlm.llm.fake_server import FakeModelServer
    from rlm.serve.http import create_app
    from rlm.serve.service import ServeOptions, Service

    rows: list[dict[str, Any]] = []
    with FakeModelServer(root_model=ROOT, models=[SUB], root_default=SCRIPT) as model, \
            tempfile.TemporaryDirectory(prefix="rlm-bench-serve-") as tmp:
        loaded = load_settings(cli={"base_url": model.url, "root_model": ROOT, "sub_model": SUB,
                                    "max_retries": 0, "max_iterations": 4, "trace_dir": str(Path(tmp) / "t")},
                               environ={}, cwd=Path(tmp))
        port = _free_port()
        service = Service(loaded, ServeOptions(port=port, workers=workers, max_queue=64, data_dir=Path(tmp) / "d"))
        server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, lifespan="on",
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, name="rlm-bench-serve", daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not server.started:
            raise RuntimeError("the server did not start")
        if service.pool is not None:
            service.pool.wait_ready(120)
        local = threading.local()

        def one(i: int) -> tuple[float, bool]:
            body = json.dumps({"model": "rlm", "messages": [{"role": "user", "content": "How many words?"}],
                               "rlm": {"context": {"text": "alpha beta gamma " * (10 + i)}}})
            t0 = time.perf_counter()
            try:
                if getattr(local, "conn", None) is None:
                    local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                local.conn.request("POST", "/v1/chat/completions", body=body,
                                   headers={"Content-Type": "application/json"})
                response = local.conn.getresponse()
                reply = json.loads(response.read())
                ok = response.status == 200 and reply["choices"][0]["message"]["content"] == f"{3 * (10 + i)} words"
            except (OSError, ValueError, KeyError, http.client.HTTPException):
                local.conn = None
                ok = False
            return time.perf_counter() - t0, ok

        say(f"rlm serve, {workers} workers, runtime {_runtime(loaded.settings)}, {_cpus()} CPUs, scripted model")
        try:
            one(0)  # warm-up: the pool's first sessions, the client's connection
            for clients in levels:
                n = max(4, clients * requests_per_client)
                t0 = time.perf_counter()
                with ThreadPoolExecutor(max_workers=clients) as pool:
                    results = list(pool.map(one, range(n)))
                wall = time.perf_counter() - t0
                latencies = [lat for lat, _ok in results]
                row = {"clients": clients, "requests": n, "errors": sum(1 for _l, ok in results if not ok),
                       "throughput_rps": round(n / wall, 3), "p50_s": round(_percentile(latencies, 0.5), 3),
                       "p95_s": round(_percentile(latencies, 0.95), 3), "wall_s": round(wall, 2)}
                rows.append(row)
                say(f"{clients:>3} clients  {n:>3} requests  {row['throughput_rps']:>6.2f} req/s  "
                    f"p50 {row['p50_s']:>6.2f} s  p95 {row['p95_s']:>6.2f} s  errors {row['errors']}")
        finally:
            server.should_exit = True
            thread.join(timeout=120)
    return {"workers": workers, "levels": rows, "cpus": _cpus(), "runtime": _runtime(loaded.settings)}


def _runtime(settings: Any) -> str:
    from rlm.sandbox import runtime

    try:
        return runtime.resolve(settings.sandbox.runtime)
    except Exception:  # noqa: BLE001 - a label for the figures only
        return "unknown"


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


if __name__ == "__main__":
    measure()
