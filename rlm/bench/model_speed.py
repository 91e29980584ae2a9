"""`rlm bench model`: the embedded server's slot setups side by side, measured in one run.

For each setup the embedded server is started afresh and measured on the same work: the
20,000-character needle demo through the whole RLM loop (the first run reads the shared
prompt, later runs find it cached), eight ~1k-token sub-calls sent at once (what
``llm_query_batched`` does), and the server's resident memory afterwards.  A server that
was running is stopped first; none is left running.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from rlm.bench.generators import generate
from rlm.bench.scorers import score
from rlm.config.settings import Settings
from rlm.errors import ModelUnreachable
from rlm.llm.local.fallback import for_server, pick_spec
from rlm.llm.local.server import prove, rss_bytes, start_server, stop_server
from rlm.llm.local.slots import DEFAULT_PROFILE, ONE_SLOT_PROFILE, SlotProfile

Say = Callable[[str], None]
NEEDLE_CHARS = 20_000
PIECE_CHARS = 4_000  # about 1k tokens of the generated prose


def _needle_runs(settings: Settings, runs: int, say: Say) -> dict[str, Any]:
    from rlm._api import RLM

    item = generate("demo", [NEEDLE_CHARS], 1, 0)[0]
    times, correct = [], 0
    for n in range(1, runs + 1):
        result = RLM(settings=settings).run(item.question, item.context)
        ok = score(item.scorer, result.answer, item.expected) >= 1.0
        correct += ok
        times.append(round(result.duration_s, 2))
        say(f"  needle run {n}/{runs}: {result.duration_s:.1f} s, {result.iterations} turns, "
            f"answer {result.answer!r} ({'right' if ok else 'wrong'})")
    return {"needle_s": times, "needle_median_s": round(statistics.median(times), 2),
            "needle_warm_median_s": round(statistics.median(times[1:] or times), 2),
            "needle_correct": f"{correct}/{runs}"}


def _batched(settings: Settings, prompts: int, say: Say) -> dict[str, Any]:
    from rlm.llm.resolve import make_client

    text = generate("s_niah", [prompts * PIECE_CHARS], 1, 0)[0].context
    pieces = [text[i * PIECE_CHARS:(i + 1) * PIECE_CHARS] for i in range(prompts)]
    messages = [[{"role": "user", "content": f"Summarize this text in one sentence.\n\n{p}"}] for p in pieces]
    client = make_client(settings)
    model = settings.model.root_model

    async def all_at_once() -> list[Any]:
        try:
            return list(await asyncio.gather(*(client.acomplete(m, model=model, max_tokens=24) for m in messages)))
        finally:
            await client.arelease()

    started = time.perf_counter()
    completions = asyncio.run(all_at_once())
    elapsed = time.perf_counter() - started
    client.close()
    tokens = sum(c.usage.prompt_tokens for c in completions)
    say(f"  {prompts} sub-calls at once: {elapsed:.1f} s ({tokens:,} prompt tokens)")
    return {"batched_s": round(elapsed, 2), "batched_prompt_tokens": tokens}


def _one_profile(settings: Settings, profile: SlotProfile, runs: int, prompts: int, cache: Path | None,
                 say: Say) -> dict[str, Any]:
    spec = pick_spec(cache)
    if spec is None:
        raise ModelUnreachable("the embedded model is not installed", hint="rlm model install")
    say(f"{profile.name}: starting the embedded server ({' '.join(profile.flags())})")
    info, _ = start_server(spec, cache=cache, profile=profile)
    try:
        prove(info)
        served = for_server(settings, info)
        figures: dict[str, Any] = {"flags": " ".join(profile.flags())}
        figures.update(_needle_runs(served, runs, say))
        figures.update(_batched(served, prompts, say))
        rss = rss_bytes(info.server_pid or info.pid)
        figures["rss_mb"] = round(rss / 2**20) if rss else None
        say(f"  resident memory: {figures['rss_mb']} MB")
        return figures
    finally:
        stop_server(cache)


def bench_model(settings: Settings, *, runs: int = 3, prompts: int = 8, cache: Path | None = None,
                profiles: tuple[SlotProfile, ...] = (ONE_SLOT_PROFILE, DEFAULT_PROFILE),
                say: Say = lambda _m: None) -> dict[str, Any]:
    """Figures per slot setup: needle query times, the batched sub-calls' time, resident memory."""
    if stop_server(cache) is not None:
        say("stopped the running embedded server (each setup is measured on a fresh one)")
    return {profile.name: _one_profile(settings, profile, runs, prompts, cache, say) for profile in profiles}
