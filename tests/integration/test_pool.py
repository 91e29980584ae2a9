"""The warm pool: ready sessions, context attached at acquire, never reused, refilled, failures told."""

from __future__ import annotations

import pytest

from rlm.errors import SandboxError
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
