"""The embedded model for real: llama.cpp + Qwen2.5-Coder, the real sandbox, the real loop.

Marked ``slow``: they need ``llama-cpp-python[server]`` (the ``local`` extra) and download
the 1.5B weights (1.12 GB) once (``rlm model install --size 1.5b``).  The 1.5B model, not the
0.5B one, drives the loop here: the 0.5B model does not find the needles as root model (it
repeats its first cell; 0 of 4 in our runs), the 1.5B model found 5 of 5.  A server that already runs is reused and
left running; one started here is stopped at the end.  Without llama_cpp they are skipped
(they fail under CI=true, where the extra must be installed).
"""

from __future__ import annotations

import os
import random
import time

import pytest

from rlm.config import RunSettings, Settings
from rlm.bench.demo import filler
from rlm.llm.base import ModelSettings
from rlm.llm.local.server import adapt_settings, llama_cpp_missing, running_server, start_server, stop_server
from rlm.llm.local.weights import MODELS, install_weights, installed_path

pytestmark = pytest.mark.slow
SIZE = "1.5b"

# (needle sentence, question, expected substring of the answer)
NEEDLES = [
    ("The secret access code is 482913.", "What is the secret access code mentioned in the document?", "482913"),
    ("Remember: the password for the blue vault is tangerine-42.",
     "What is the password for the blue vault?", "tangerine-42"),
    ("Order A7Q-5521 was shipped to Lisbon on 3 May.", "To which city was order A7Q-5521 shipped?", "Lisbon"),
    ("Dr. Imelda Varga was appointed chief engineer of the Orion project.",
     "Who was appointed chief engineer of the Orion project?", "Imelda Varga"),
    ("The launch window opens at 04:17 UTC.", "At what time does the launch window open?", "04:17"),
]


def _skip_or_fail(reason: str):
    pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)


@pytest.fixture(scope="session")
def embedded_server():
    missing = llama_cpp_missing()
    if missing:
        _skip_or_fail(f"llama-cpp-python[server] is not installed (missing {', '.join(missing)}): "
                      "pip install '.[local]'")
    spec = MODELS[SIZE]
    if installed_path(spec) is None:
        install_weights(spec)
    info = running_server()
    if info is not None and info.alias != spec.alias:
        _skip_or_fail(f"the embedded server runs {info.alias}; these tests need {spec.alias}: rlm model stop")
    started_here = False
    if info is None:
        info, reused = start_server(spec)
        started_here = not reused
    yield info
    if started_here:
        stop_server()


@pytest.fixture(scope="session")
def model_settings(embedded_server) -> ModelSettings:
    return ModelSettings(base_url=embedded_server.base_url, root_model=embedded_server.alias,
                         sub_model=embedded_server.alias, temperature=0.0, timeout_s=900.0, max_retries=1)


@pytest.fixture
def client(model_settings):
    from rlm.llm.openai_client import OpenAICompatibleClient

    with OpenAICompatibleClient(model_settings) as c:
        yield c


def _haystack(size: int, needle: str, seed: int) -> str:
    rng = random.Random(seed)
    hay = filler(rng, max(size - len(needle) - 2, 0))
    at = rng.randint(len(hay) // 10, len(hay) * 9 // 10)
    at = hay.rfind(". ", 0, at) + 2
    return hay[:at] + needle + " " + hay[at:]


def test_server_answers_a_chat_completion(client, embedded_server):
    reply = client.complete([{"role": "user", "content": "What is 2 + 3? Reply with the number only."}],
                            model=embedded_server.alias, max_tokens=8)
    assert "5" in reply.text
    assert reply.usage.completion_tokens > 0


@pytest.mark.parametrize("size", [20_000, 200_000], ids=["20k", "200k"])
def test_needles_through_the_real_sandbox(engine, model_settings, client, tmp_path, size):
    from rlm.core.orchestrator import Orchestrator

    settings = adapt_settings(Settings(run=RunSettings(max_iterations=8, trace_dir=str(tmp_path))), model_settings)
    orch = Orchestrator(settings, client)
    found, rows = 0, []
    for seed, (needle, question, expected) in enumerate(NEEDLES):
        doc = tmp_path / f"doc-{seed}.txt"
        doc.write_text(_haystack(size, needle, seed))
        t0 = time.perf_counter()
        result = orch.run(question, doc, trace_path=tmp_path / f"trace-{seed}.jsonl")
        ok = result.answer is not None and expected.lower() in result.answer.lower()
        found += ok
        tokens = sum(u.completion_tokens for u in result.usage.values())
        rows.append(f"{'found' if ok else 'MISSED'} {expected!r}: answer {result.answer!r} "
                    f"({result.iterations} it, {result.sub_calls} sub, {time.perf_counter() - t0:.1f} s, "
                    f"{tokens} completion tokens, status {result.status})")
    print(f"\nneedles at {size:,} characters: {found}/{len(NEEDLES)}\n  " + "\n  ".join(rows))
    assert found >= 4, "\n".join(rows)


def test_llm_query_round_trip(engine, model_settings, client):
    from rlm.sandbox import SandboxSession
    from rlm.sandbox.settings import SandboxSettings
    from rlm.core.subcalls import SubCallHandler

    handler = SubCallHandler(client, sub_model=model_settings.root_model, temperature=0.0, enabled=True,
                             max_calls=5, max_chars=10_000, concurrency=2)
    with SandboxSession(settings=SandboxSettings(cell_timeout_s=300)) as session:
        session.set_handler(handler)
        ex = session.execute(
            "r = llm_query('What is the capital of France? Reply with one word.')\nprint(repr(r))\n"
            "rs = llm_query_batched(['What is 6 times 7? Reply with the number only.', "
            "'Spell the word cat backwards. Reply with the word only.'])\nprint(repr(rs))",
            timeout=300)
    assert ex.error is None, ex.output
    assert "paris" in ex.output.lower()
    assert "42" in ex.output and "tac" in ex.output.lower()
    assert handler.calls == 3
    usage = handler.usage[model_settings.root_model]
    assert usage.calls == 3 and usage.completion_tokens > 0
