"""A real run (scripted model server over HTTP, the real sandbox) rendered and looked at in
headless Chromium; its screenshot is kept as artifacts/trace-view.png.  Marker ``docker``."""

from __future__ import annotations

from pathlib import Path

import pytest

import rlm
from rlm.config import settings_from_mapping
from rlm.core.orchestrator import Orchestrator
from rlm.llm.fake_server import FakeModelServer
from rlm.llm.openai_client import OpenAICompatibleClient
from rlm.sandbox import SandboxSession
from rlm.viewer import write_view
from rlm.viewer.browser import screenshot

pytestmark = pytest.mark.docker

ARTIFACT = Path(rlm.__file__).resolve().parent.parent / "artifacts" / "trace-view.png"


def repl(text: str, code: str) -> str:
    return f"{text}\n```repl\n{code}\n```"


ROOT_SCRIPT = [
    repl("Let me look at the context first.",
         "print(type(context).__name__, len(context))\nprint(context[:120])"),
    repl("I will ask a sub-model to read the lines around the code.",
         "import re\nlines = [l for l in context.splitlines() if 'code' in l]\n"
         "summary = llm_query('Which number is the secret code? ' + lines[0])\nprint('sub-model says:', summary)"),
    repl("Now parse it.", "value = int(summary.split()[-1]) / 0  # oops"),
    repl("Try again with a regex.",
         "m = re.search(r'secret code is (\\d+)', context)\nanswer = m.group(1)\nprint(answer)"),
    "The answer is in `answer`.\nFINAL_VAR(answer)",
]


@pytest.fixture
def real_trace(engine, tmp_path) -> Path:
    context = tmp_path / "report.txt"
    context.write_text("Quarterly report\n" + "Revenue grew in every region.\n" * 300
                       + "The secret code is 7421.\n" + "Appendix line.\n" * 100)
    server = FakeModelServer(root_model="root-model", models=["sub-model"], root=ROOT_SCRIPT,
                             sub={"secret code": "The code is 7421", "default": "no idea"})
    settings = settings_from_mapping({"base_url": server.url, "root_model": "root-model", "sub_model": "sub-model",
                                      "trace_dir": str(tmp_path / "traces"), "max_retries": 1,
                                      "cell_timeout_s": 20})
    trace = tmp_path / "run.jsonl"
    try:
        with OpenAICompatibleClient(settings.model, backoff_base_s=0.01) as client:
            orch = Orchestrator(settings, client, session_factory=lambda path: SandboxSession(
                context=path, settings=settings.sandbox, engine=engine))
            result = orch.run("What is the secret code in the report?", context, trace_path=trace)
    finally:
        server.close()
    assert (result.answer, result.status) == ("7421", "ok")
    return trace


def test_a_real_run_renders_and_is_kept_as_a_screenshot(real_trace, browse):
    page = write_view(real_trace)
    dom = browse(page)
    text = dom.text
    assert "What is the secret code in the report?" in text and "report.txt" in text
    assert "sub-model says: The code is 7421" in text
    assert "ZeroDivisionError" in text
    assert [t for t, a in dom.with_class("it")].count("section") == 5
    assert any("ok" in a["class"].split() for _, a in dom.with_class("result"))
    assert "data-ready-ms" in dom.root_attrs
    if ARTIFACT.exists():
        ARTIFACT.unlink()
    screenshot(page, ARTIFACT, width=1280, height=2000)
    assert ARTIFACT.stat().st_size > 20_000  # a picture of a page, not a blank one
