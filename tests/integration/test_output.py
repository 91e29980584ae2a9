"""Output capping, stderr, FINAL / FINAL_VAR, context restoring and SHOW_VARS."""

from __future__ import annotations

import re

import pytest

from rlm.sandbox import SandboxSession, SandboxSettings

pytestmark = pytest.mark.docker

CONTEXT_TEXT = "the original context ✓\n" * 50
MARKER = re.compile(r"\[\.\.\. (\d+) (?:bytes|characters) of output dropped")
STATE_MIME = "application/vnd.rlm.state+json"


@pytest.fixture(scope="module")
def out(engine, tmp_path_factory):
    path = tmp_path_factory.mktemp("ctx") / "context.txt"
    path.write_text(CONTEXT_TEXT, encoding="utf-8")
    with SandboxSession(context=path, settings=SandboxSettings(cell_timeout_s=30), engine=engine) as s:
        yield s


def _limit(session: SandboxSession) -> int:
    return session.settings.output_limit_bytes


# ------------------------------------------------------------------------------- capping
def test_20_mb_print_is_capped_with_head_tail_and_marker(out):
    total = 20_000_000
    ex = out.execute(f"print('HEAD' + 'x' * {total} + 'TAIL')")
    assert ex.ok, ex.error
    assert ex.truncated
    assert len(ex.stdout.encode()) <= _limit(out) + 1024
    assert ex.stdout.startswith("HEADxxxx")
    assert ex.stdout.rstrip("\n").endswith("xxxxTAIL")
    dropped = sum(int(n) for n in MARKER.findall(ex.stdout))
    assert dropped >= total - _limit(out) - 1024, "the marker must say how much was dropped"


def test_flood_of_many_lines_is_capped_and_keeps_the_last_lines(out):
    ex = out.execute("for i in range(100000):\n    print('line', i, 'x' * 90)")
    assert ex.ok and ex.truncated
    assert len(ex.stdout.encode()) <= _limit(out) + 1024
    assert ex.stdout.startswith("line 0 ")
    assert ex.stdout.rstrip("\n").splitlines()[-1].startswith("line 99999 ")
    assert MARKER.search(ex.stdout)


def test_stdout_and_stderr_are_captured_separately(out):
    ex = out.execute("import sys\nprint('to-out')\nprint('to-err', file=sys.stderr)\nsys.stdout.write('more-out\\n')")
    assert ex.stdout == "to-out\nmore-out\n"
    assert ex.stderr == "to-err\n"
    assert not ex.truncated


def test_stderr_flood_is_capped(out):
    ex = out.execute("import sys\nsys.stderr.write('E' * 5_000_000)")
    assert ex.truncated
    assert len(ex.stderr.encode()) + len(ex.stdout.encode()) <= _limit(out) + 1024
    assert ex.stderr.startswith("EEEE")


def test_stderr_flood_stays_on_stderr(out):
    """Regression: the in-sandbox cap once kept one tail for both streams and wrote it to stdout."""
    ex = out.execute("import sys\nsys.stderr.write('E' * 5_000_000 + 'END-OF-ERR')\nprint('out-line')")
    assert ex.stderr.rstrip("\n").endswith("END-OF-ERR")
    assert "END-OF-ERR" not in ex.stdout and "EEEE" not in ex.stdout
    assert "out-line" in ex.stdout


def test_huge_string_as_last_expression_is_shortened(out):
    ex = out.execute("'HEAD' + 'y' * 10_000_000 + 'TAIL'")
    assert ex.ok
    assert len(ex.display) == 1
    shown = ex.display[0]
    assert len(shown.encode()) <= _limit(out) + 1024
    assert shown.startswith("'HEADyyy") and shown.endswith("yyyTAIL'")
    assert "not shown" in shown or MARKER.search(shown)


def test_100_mb_print_is_capped_inside_the_sandbox_and_keeps_state(out):
    out.execute("kept_big = 'yes'")
    ex = out.execute("print('z' * 100_000_000)", timeout=10)
    assert not ex.timed_out and ex.restarted is None, ex.notice
    assert ex.truncated and len(ex.stdout.encode()) <= _limit(out) + 1024
    assert out.execute("print(kept_big)").stdout == "yes\n"


def test_100_mb_print_in_a_longer_cell_is_capped_and_keeps_state(engine):
    """Regression: output flushed by ipykernel's IO-thread timer once skipped the in-sandbox cap, and a
    message over the host's 64 MB iopub limit broke the session."""
    with SandboxSession(settings=SandboxSettings(cell_timeout_s=20), engine=engine) as s:  # own session: may break
        s.execute("kept_slow = 'yes'")
        # the pause lets ipykernel's periodic flush (every 0.2 s, on its IO thread) send the buffer
        ex = s.execute("print('z' * 100_000_000)\nimport time\ntime.sleep(0.5)", timeout=10)
        assert not ex.timed_out and ex.restarted is None, ex.notice
        assert ex.truncated and ex.stdout.startswith("zzzz")
        after = s.execute("print(kept_slow)", timeout=5)
        assert after.restarted is None and after.stdout == "yes\n", after.notice


def test_huge_exception_message_is_capped(out):
    """Regression: the error text was once kept whole."""
    ex = out.execute("raise ValueError('E' * 20_000_000)")
    assert ex.error_name == "ValueError"
    assert len(ex.error.encode()) <= _limit(out) + 4096


def test_forged_state_message_cannot_bypass_the_caps(out):
    """Regression: the host once trusted any state message a cell published itself."""
    code = ("from IPython.display import publish_display_data\n"
            f"publish_display_data({{{STATE_MIME!r}: {{'final': 'f' * 20_000_000, 'junk': 'j' * 20_000_000}}}})")
    ex = out.execute(code)
    assert ex.final is None or len(ex.final) <= out.settings.final_limit_chars + 200
    assert len(repr(ex.meta)) <= 4096


def test_huge_rich_display_does_not_cost_the_session_its_state(engine):
    settings = SandboxSettings(cell_timeout_s=20, interrupt_grace_s=1)
    with SandboxSession(settings=settings, engine=engine) as s:  # own session: the bug restarts its kernel
        s.execute("kept_html = 'yes'")
        ex = s.execute("from IPython.display import HTML, display\n"
                       "display(HTML('<p>' + 'x' * 70_000_000 + '</p>'))", timeout=4)
        assert not ex.timed_out and ex.restarted is None and not ex.state_lost, ex.notice
        after = s.execute("print(kept_html)", timeout=4)
        assert after.stdout == "yes\n" and after.restarted is None


# ------------------------------------------------------------------------- FINAL family
def test_final_sets_the_answer(out):
    ex = out.execute("FINAL('the answer is 42')")
    assert ex.ok and ex.final == "the answer is 42"
    assert out.execute("x = 1").final is None  # per cell, not sticky


def test_final_answer_is_capped(out):
    ex = out.execute(f"FINAL('q' * {out.settings.final_limit_chars * 3})")
    assert ex.final is not None
    assert out.settings.final_limit_chars <= len(ex.final) <= out.settings.final_limit_chars + 200
    assert "truncated" in ex.final


def test_final_var_returns_a_variable(out):
    ex = out.execute("answer_var = 'from a variable'\nFINAL_VAR('answer_var')")
    assert ex.ok and ex.final == "from a variable"


def test_final_var_with_a_missing_variable_is_an_error_as_data(out):
    ex = out.execute("FINAL_VAR('never_defined_var')")
    assert ex.error_name == "NameError"
    assert "never_defined_var" in ex.error
    assert ex.final is None
    assert out.execute("1 + 1").display == ["2"]


# ------------------------------------------------------------------------ context, vars
def test_rebinding_context_is_undone(out):
    assert out.execute("print(len(context))").stdout == f"{len(CONTEXT_TEXT)}\n"
    ex = out.execute("context = 'overwritten'\nprint(context)")
    assert ex.stdout == "overwritten\n"
    assert ex.context_restored
    after = out.execute("print(context == " + repr(CONTEXT_TEXT) + ", len(context))")
    assert after.stdout == f"True {len(CONTEXT_TEXT)}\n"
    assert not after.context_restored
    deleted = out.execute("del context")
    assert deleted.context_restored
    assert out.execute("print(len(context))").stdout == f"{len(CONTEXT_TEXT)}\n"


def test_show_vars_prints_defined_variables(out):
    out.execute("alpha_list = [1, 2, 3]\nbeta_text = 'hello'\n_hidden = 5")
    ex = out.execute("SHOW_VARS()")
    assert ex.ok
    lines = ex.stdout.splitlines()
    assert "alpha_list: list len=3" in lines
    assert "beta_text: str len=5" in lines
    assert f"context: str len={len(CONTEXT_TEXT)}" in lines
    assert not any(line.startswith(("_hidden", "llm_query", "FINAL", "re:", "itertools:")) for line in lines)


def test_common_modules_need_no_import(out):
    ex = out.execute("print(len(re.findall('o', 'foo')), list(itertools.combinations('ab', 2)), "
                     "collections.Counter('aab')['a'], math.isqrt(10), json.dumps([1]))")
    assert ex.ok, ex.error
    assert ex.stdout == "2 [('a', 'b')] 2 3 [1]\n"


def test_grep_that_finds_nothing_says_what_each_word_alone_finds(out):
    ex = out.execute("hits = grep(r'original xyzzy context')\nprint(len(hits))")
    assert ex.ok, ex.error
    hint, count = ex.stdout.splitlines()[:2]
    assert count == "0"
    assert hint.startswith("grep('original xyzzy context') matched no line") and "grep('original') 50 lines" in hint


def test_grep_returns_every_matching_line_of_the_context_with_its_offset(out):
    ex = out.execute("hits = grep(r'ORIGINAL')\nprint(len(hits)); print(hits[1]); print(hits[1].offset)")
    assert ex.ok, ex.error
    count, second, offset = ex.stdout.splitlines()[:3]
    line = "the original context ✓"
    assert int(count) == 50
    assert second == line and int(offset) == len(line) + 1
