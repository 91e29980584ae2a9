"""A folder keeps its file names (issue 36, item 5): through the real sandbox, ``context`` is a list of
documents that are the files' texts with ``.path`` (relative to the folder); grep lines and search passages
say which file they come from; the system prompt lists the count and the first paths, and the trace keeps
that listing.  A folder of 30,000 files opens and its listing prints within the sandbox's memory.
Marker ``docker``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlm.cli import app
from rlm.core.context import check_file, folder_paths
from rlm.llm.fake_server import repl
from rlm.sandbox import SandboxSession

pytestmark = pytest.mark.docker



def tree(root: Path) -> Path:
    """A small source tree: files at the top and in nested folders (sorted order differs from depth order)."""
    files = {
        "README.md": "Lighthouse keeper's log.\nSee src/lamp/wick.py for the wick.\n",
        "src/lamp/wick.py": "def trim_wick(length):\n    return length - 2\n",
        "src/lamp/oil.py": "def refill(level):\n    # see trim_wick in the other file\n    return 100\n",
        "src/bell.py": "def ring(times):\n    return 'dong' * times\n",
        "z_notes.txt": "The keeper trims the wick at dusk.\n\nThe bell rings in fog.\n",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_documents_grep_lines_and_search_passages_carry_their_paths(engine, sandbox_settings, tmp_path):
    folder = tree(tmp_path / "code")
    with SandboxSession(context=folder, settings=sandbox_settings, engine=engine) as s:
        ex = s.execute("print(len(context), type(context[0]).__name__, isinstance(context[0], str))\n"
                       "print([d.path for d in context])\n"
                       "print(context[2].path, context[2].splitlines()[0])")
        assert ex.error_name is None, ex.output
        lines = ex.output.splitlines()
        assert lines[0] == "5 Document True"
        listing = ["README.md", "z_notes.txt", "src/bell.py", "src/lamp/oil.py", "src/lamp/wick.py"]
        assert lines[1] == repr(listing)
        assert listing == folder_paths(folder)   # the host lists the files in the sandbox's order
        assert lines[2] == "src/bell.py def ring(times):"
        ex = s.execute("hits = grep(r'^def trim_wick')\n"
                       "print([(h.path, str(h)) for h in hits])\n"
                       "print([h.path for h in grep('wick')])\n"
                       "print(grep('return 100')[0].before('^def ').path)\n"
                       "print([(p.path, p.index) for p in search('bell fog', k=2)])\n"
                       "import copy; print(copy.deepcopy(hits)[0].path)")
        assert ex.error_name is None, ex.output
        out = ex.output.splitlines()
        assert out[0] == "[('src/lamp/wick.py', 'def trim_wick(length):')]"
        assert out[1] == "['README.md', 'z_notes.txt', 'src/lamp/oil.py', 'src/lamp/wick.py']"
        assert out[2] == "src/lamp/oil.py"
        assert out[3].startswith("[('z_notes.txt', 1)")
        assert out[4] == "src/lamp/wick.py"


def test_the_system_prompt_lists_the_files_and_the_trace_keeps_the_listing(scripted_cli, tmp_path):
    folder = tree(tmp_path / "code")
    trace = tmp_path / "run.jsonl"
    result, server = scripted_cli([repl("print(grep(r'def trim_wick')[0].path)"), "FINAL(src/lamp/wick.py)"],
                         "query", "-q", "In which file is trim_wick defined?", "--context-dir", str(folder),
                         "--json", "--trace", str(trace))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["answer"] == "src/lamp/wick.py"
    system = server.requests[0]["messages"][0]["content"]
    assert "- files: 5; the paths of the first 5:" in system
    assert "README.md\nz_notes.txt\nsrc/bell.py\nsrc/lamp/oil.py\nsrc/lamp/wick.py" in system
    assert "`context[i].path`" in system
    user = [m for m in server.requests[1]["messages"] if m["role"] == "user"][-1]["content"]
    assert "src/lamp/wick.py" in user   # the grep line's path reached the model
    start = json.loads(trace.read_text().splitlines()[0])
    assert start["kind"] == "run_start"
    assert start["context"]["n_files"] == 5 and start["context"]["paths"][-1] == "src/lamp/wick.py"
    shown = CliRunner().invoke(app, ["trace", "show", str(trace)])
    assert "files: 5; listed: README.md" in shown.stdout
    from rlm.viewer import write_view

    page = Path(write_view(trace)).read_text()
    assert "listed to the model: README.md, z_notes.txt, src/bell.py" in page


def test_a_folder_of_30000_files_opens_and_its_listing_prints(engine, sandbox_settings, tmp_path):
    folder = tmp_path / "many"
    body = ("lorem ipsum dolor sit amet " * 50)[:1300]   # ~1.3 KB: 30,000 files hold about 10M tokens
    for d in range(30):
        sub = folder / f"part{d:02d}"
        sub.mkdir(parents=True)
        for f in range(1000):
            (sub / f"doc{f:04d}.txt").write_text(f"{body}\nfile {d}-{f}\n")
    t0 = time.perf_counter()
    source = check_file(folder, max_bytes=2 * 1024 ** 3, allow_dir=True)
    checked = time.perf_counter() - t0
    assert source.size_bytes > 30_000 * 1300
    with SandboxSession(context=folder, settings=sandbox_settings, engine=engine) as s:
        t1 = time.perf_counter()
        ex = s.execute("import resource\n"
                       "print(len(context), sum(map(len, context)), context[12345].path)\n"
                       "listing = '\\n'.join(d.path for d in context)\n"
                       "print(len(listing.splitlines()), listing.splitlines()[-1])\n"
                       "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, 'MB')", timeout=120)
        loaded = time.perf_counter() - t1
        assert ex.error_name is None and not ex.timed_out, ex.output
        first, second, rss = ex.output.splitlines()[:3]
        count, chars, path = first.split()
        assert (int(count), path) == (30_000, "part12/doc0345.txt") and int(chars) > 39_000_000
        assert second == "30000 part29/doc0999.txt"
        ex = s.execute("print(len(grep(r'^file 7-12$')), grep(r'^file 7-12$')[0].path)", timeout=60)
        assert ex.output.split() == ["1", "part07/doc0012.txt"], ex.output
    print(f"\n30,000 files: host check {checked:.1f} s, sandbox load + listing {loaded:.1f} s, kernel {rss}")
