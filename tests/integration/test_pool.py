"""The warm pool: ready sessions, context attached at acquire, never reused, refilled, failures told."""

from __future__ import annotations

import threading

import pytest

from rlm import RLM
from rlm.errors import SandboxError
from rlm.llm.fake_server import FakeModelServer
from rlm.sandbox import SandboxSettings
from rlm.sandbox.pool import SandboxPool

pytestmark = pytest.mark.docker


def test_acquire_attaches_the_context_and_a_fresh_container_replaces_it(engine, text_context):
    with SandboxPool(1, SandboxSettings(), engine=engine) as pool:
        assert pool.wait_ready(60)
        first = pool.acquire(text_context)
        try:
            ex = first.execute("print(len(context)); print('7421' in context)")
            assert ex.stdout.split() == [str(len(text_context.read_text())), "True"]
            ex = first.execute("open('/rlm/context/doc.txt', 'a').write('x')")
            assert ex.error_name in ("OSError", "PermissionError")
        finally:
            first.close()
        assert pool.wait_ready(60)
        second = pool.acquire(None)
        try:
            assert second.container_id != first.container_id
            assert second.execute("print('context' in dir())").stdout.strip() == "False"
        finally:
            second.close()
    assert text_context.read_text().endswith("delta epsilon\n")


def test_attached_context_survives_a_kernel_restart(engine, text_context):
    with SandboxPool(1, SandboxSettings(), engine=engine) as pool:
        session = pool.acquire(text_context)
        try:
            assert session.execute("import os; os._exit(1)").restarted == "kernel"
            assert session.execute("print('7421' in context)").stdout.strip() == "True"
        finally:
            session.close()


def test_a_pool_that_cannot_start_sessions_says_why(engine):
    with SandboxPool(1, SandboxSettings(image="rlm-sandbox:no-such-tag"), engine=engine) as pool:
        with pytest.raises(SandboxError, match="warm pool cannot start sessions.*not built"):
            pool.acquire(None, timeout=30)


def test_runs_take_warm_sessions_from_many_threads_and_never_share_one(engine, tmp_path):
    (tmp_path / "none.yaml").write_text("{}\n")
    model = FakeModelServer(root_model="root-model", models=["sub-model"], root_default=(
        "```repl\nimport socket\nFINAL(socket.gethostname() + ' ' + context.strip())\n```"))
    answers: dict[int, str] = {}
    with model, SandboxPool(2, SandboxSettings(), engine=engine) as pool:
        assert pool.wait_ready(60)
        r = RLM(str(tmp_path / "none.yaml"), base_url=model.url, root_model="root-model", sub_model="sub-model",
                max_retries=0, trace_dir=str(tmp_path / "traces"), sandbox_pool=pool)

        def ask(i: int) -> None:
            answers[i] = r.run("Which host?", f"doc {i}").answer or ""

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert sorted(a.split(" ", 1)[1] for a in answers.values()) == [f"doc {i}" for i in range(4)]
    assert len({a.split(" ", 1)[0] for a in answers.values()}) == 4  # four containers, none reused
