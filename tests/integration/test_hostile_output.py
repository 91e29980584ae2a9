"""A8, A9, A12 end to end: model code in a real sandbox raises an exception whose class name holds
16 ESC bytes, prints U+2028 and U+2029, calls llm_query with a hostile model string and answers
with a U+202E bidi override and rich markup.  What `rlm query` prints (progress, answer, --json),
`rlm trace show` and `rlm trace view` hold no escape sequence, control or bidi character, and
every event of the run, its run_end included, is in the trace.  Marker ``docker``."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from rlm.cli import app
from rlm.core.text import unsafe_chars
from rlm.core.trace import read_trace
from rlm.llm.fake_server import FakeModelServer

pytestmark = pytest.mark.docker

ROOT, SUB = "root-model", "sub-model"
CELL_A8 = r'''
E = chr(27)
name = ("Err" + E + "]52;c;cm0gLXJmIH4K" + chr(7) + E + "]0;owned" + chr(7) + E + "[2J" + E + "[H" + E + "[3J"
        + E + "c" + E + "[?1049h" + E + "]2;t" + chr(7) + E + "[31m" + E + "[5m" + E + "[8m" + E + "[0m"
        + E + "7" + E + "8" + E + "(0" + E + "[1;1H")
assert name.count(E) == 16
print("before" + chr(0x2028) + "middle" + chr(0x2029) + "after")
raise type(name, (Exception,), {})("boom" + E + "]0;owned" + chr(7))
'''
CELL_MODEL = r'''
try:
    print(llm_query("hi", model="sub" + chr(27) + "]0;owned" + chr(7) + chr(0x202e) + chr(0x2028) + "x"))
except Exception as exc:
    print("refused:", type(exc).__name__, str(exc)[:300])
'''
CELL_FINAL = 'FINAL("report" + chr(0x202e) + "txt.exe [bold red]MARKUP[/bold red]" + chr(0x2028) + "end")'
SCRIPT = [f"```repl{CELL_A8}```", f"```repl{CELL_MODEL}```", f"```repl\n{CELL_FINAL}\n```"]
SGR = re.compile(r"\x1b\[[0-9;]*m")


def assert_clean(text: str, *, code_shown: bool = False) -> None:
    assert unsafe_chars(SGR.sub("", text).replace("\n", "")) == [], repr(text[:400])
    if not code_shown:  # the sequences' bodies go with them (the cell's code spells them out)
        assert "owned" not in text and "cm0gLXJmIH4K" not in text


@pytest.fixture
def run(tmp_path, monkeypatch, engine, clean_rlm_env):
    with FakeModelServer(root_model=ROOT, models=[SUB], root=list(SCRIPT)) as server:
        env = {"RLM_BASE_URL": server.url, "RLM_ROOT_MODEL": ROOT, "RLM_SUB_MODEL": SUB, "RLM_MAX_RETRIES": "0",
               "COLUMNS": "200"}
        yield lambda *args: CliRunner().invoke(app, list(args), env=env)


@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
def test_hostile_strings_reach_the_terminal_clean_and_the_trace_whole(run, tmp_path, json_out):
    trace = tmp_path / "run.jsonl"
    result = run("query", "-q", "What is the answer?", "-c", "some text", "--trace", str(trace),
                 *(["--json"] if json_out else []))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert_clean(result.stderr)  # progress lines: the exception's name, the sub-call's model
    if json_out:
        assert len(result.stdout.splitlines()) == 1  # one record, whatever the answer holds
        data = json.loads(result.stdout)
        assert data["answer"] == "report\u202etxt.exe [bold red]MARKUP[/bold red]\u2028end"  # exact
        assert unsafe_chars(result.stdout.replace("\n", "")) == []  # escaped as \uXXXX, not raw
    else:
        assert "Err" in result.stderr and "iteration 3" in result.stderr  # progress shown (quiet with --json)
        assert result.stdout == "reporttxt.exe [bold red]MARKUP[/bold red]\nend\n"

    events = read_trace(trace)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end" and kinds.count("cell") == 3
    assert trace.read_bytes().count(b"\n") == len(trace.read_text(encoding="utf-8").splitlines())
    cell = next(e for e in events if e["kind"] == "cell")
    assert "\x1b" in (cell.get("error") or "") or "\x1b" not in json.dumps(cell)  # kept as data or cleaned

    shown = run("trace", "show", str(trace))
    assert shown.exit_code == 0, shown.stderr
    assert_clean(shown.stdout, code_shown=True)
    assert "status: ok" in shown.stdout and "incomplete" not in shown.stdout
    assert "answer: reporttxt.exe [bold red]MARKUP[/bold red]" in shown.stdout

    viewed = run("trace", "view", str(trace))
    assert viewed.exit_code == 0, viewed.stderr
    page = trace.with_suffix(".html").read_text(encoding="utf-8")
    assert "no run_end event" not in page and "reporttxt.exe" in page
    assert not set("\x1b\u202e\u2028\u2029") & set(page)
