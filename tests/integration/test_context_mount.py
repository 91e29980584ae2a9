"""The ``context`` variable: loaded from a read-only bind mount, typed by the file's kind."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time

import pytest

from rlm.errors import ContextError
from rlm.sandbox import SandboxSession, SandboxSettings

pytestmark = pytest.mark.docker


def _value(session: SandboxSession, expr: str):
    """Evaluate ``expr`` in the sandbox and bring it back as JSON (never eval'd on the host)."""
    ex = session.execute(f"import json as _j\nprint(_j.dumps({expr}))")
    assert ex.ok, ex.output
    return json.loads(ex.stdout)


def _open(engine, path) -> SandboxSession:
    return SandboxSession(context=path, settings=SandboxSettings(cell_timeout_s=30), engine=engine)


def test_text_file_gives_exact_str_with_non_ascii(engine, tmp_path):
    text = "héllo wörld ✓ 日本語 🎉 naïve café\n" * 500 + "The secret code is 7421.\n"
    path = tmp_path / "doc.txt"
    path.write_bytes(text.encode("utf-8"))
    assert len(text) != len(text.encode("utf-8"))  # characters, not bytes, are what must match
    with _open(engine, path) as s:
        got = _value(s, "[type(context).__name__, len(context), "
                        "__import__('hashlib').sha256(context.encode('utf-8')).hexdigest(), context[-25:]]")
    assert got == ["str", len(text), hashlib.sha256(text.encode("utf-8")).hexdigest(), "The secret code is 7421.\n"]


def test_json_file_is_parsed(engine, tmp_path):
    docs = [{"id": i, "title": f"doc {i}", "body": "ünïcödé " * i} for i in range(5)]
    path = tmp_path / "docs.json"
    path.write_text(json.dumps(docs), encoding="utf-8")
    with _open(engine, path) as s:
        assert _value(s, "type(context).__name__") == "list"
        assert _value(s, "context") == docs


def test_jsonl_file_is_a_list(engine, tmp_path):
    rows = [{"n": i, "text": f"row {i} ✓"} for i in range(7)]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    with _open(engine, path) as s:
        assert _value(s, "[type(context).__name__, context]") == ["list", rows]


def test_folder_gives_its_documents_in_sorted_order(engine, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    contents = {"b.txt": "second ✓", "10.txt": "zeroth", "a.md": "first", "2.txt": "one and a half"}
    for name in ["b.txt", "a.md", "2.txt", "10.txt"]:  # created out of order on purpose
        (folder / name).write_text(contents[name], encoding="utf-8")
    with _open(engine, folder) as s:
        got = _value(s, "context")
    assert got == [contents[name] for name in sorted(contents)]


def test_context_mount_is_read_only(engine, tmp_path):
    path = tmp_path / "doc.txt"
    original = "do not change me\n" * 10
    path.write_text(original)
    os.chmod(path, 0o666)  # only the read-only mount may stop the writes, not file permissions
    before = path.stat()
    with _open(engine, path) as s:
        assert _value(s, "len(context)") == len(original)
        code = (
            "import os\n"
            "p = os.environ['RLM_CONTEXT_PATH']\n"
            "results = {}\n"
            "def attempt(name, fn):\n"
            "    try:\n"
            "        fn()\n"
            "        results[name] = 'ok'\n"
            "    except OSError as e:\n"
            "        results[name] = e.errno\n"
            "attempt('append', lambda: open(p, 'a').write('pwned'))\n"
            "attempt('truncate', lambda: os.truncate(p, 0))\n"
            "attempt('chmod', lambda: os.chmod(p, 0o777))\n"
            "attempt('new_file', lambda: open(os.path.join(os.path.dirname(p), 'new.txt'), 'w').write('x'))\n"
        )
        ex = s.execute(code)
        assert ex.ok, ex.output
        results = _value(s, "results")
    assert results["append"] == errno.EROFS
    assert all(v != "ok" for v in results.values()), results
    assert path.read_text() == original
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_size == before.st_size


def test_missing_context_raises_context_error_before_any_container(engine, tmp_path):
    before = {c.id for c in engine.list_labelled("rlm.session")}
    missing = tmp_path / "no-such-file.txt"
    s = SandboxSession(context=missing, settings=SandboxSettings(), engine=engine)
    with pytest.raises(ContextError, match="no-such-file.txt"):
        s.open()
    assert s.container_id is None and s.run_dir is None
    assert {c.id for c in engine.list_labelled("rlm.session")} == before


def test_200_mb_text_file_loads(engine, tmp_path, capsys):
    size = 200 * 1024 * 1024
    path = tmp_path / "big.txt"
    try:
        with open(path, "wb") as fh:  # sparse: only the two ends are written
            fh.write(b"START\n")
            fh.seek(size - 4)
            fh.write(b"END\n")
        assert path.stat().st_size == size
        with _open(engine, path) as s:
            started = time.perf_counter()
            ex = s.execute("print(len(context), context[:6] == 'START\\n', context[-4:] == 'END\\n')", timeout=60)
            elapsed = time.perf_counter() - started
            assert ex.ok, ex.output
            assert ex.stdout == f"{size} True True\n"
            again = s.execute("len(context)")  # loaded once, kept
            assert again.display == [str(size)]
        with capsys.disabled():
            print(f"\n[context] 200 MB text context: first cell (load + len) {elapsed:.2f} s, "
                  f"second cell {again.duration_s * 1000:.1f} ms")
    finally:
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------ D8: a context folder's links
def _linked_folder(tmp_path):
    docs = tmp_path / "docs"
    (docs / "real").mkdir(parents=True)
    (docs / "real" / "a.txt").write_text("alpha ✓", encoding="utf-8")
    (docs / "b.txt").write_text("beta!", encoding="utf-8")
    (docs / "link.txt").symlink_to("real/a.txt")          # a relative link to a file inside
    (docs / "real" / "up.txt").symlink_to("../b.txt")     # .. that stays inside
    (docs / "more").symlink_to("real")                    # a link to a folder inside: listed, not entered
    return docs


def test_a_folder_with_links_inside_loads_exactly_what_the_host_checked(engine, tmp_path):
    from rlm.core.context import check_file

    source = check_file(_linked_folder(tmp_path), max_bytes=10**9, allow_dir=True)
    with _open(engine, source.path) as s:
        docs = _value(s, "context")
    # os.walk order: the root's files sorted, then its folders sorted; the linked folder is not entered
    assert docs == ["beta!", "alpha ✓", "alpha ✓", "beta!"]
    assert sum(len(d.encode("utf-8")) for d in docs) == source.size_bytes


def test_a_link_leaving_the_folder_is_refused_by_name_before_any_container(engine, tmp_path):
    from rlm._api import context_source

    docs = _linked_folder(tmp_path)
    (tmp_path / "secret.txt").write_text("outside the folder")
    (docs / "out.txt").symlink_to(tmp_path / "secret.txt")
    before = {c.id for c in engine.list_labelled("rlm.session")}
    with pytest.raises(ContextError) as info:
        context_source(docs, max_bytes=10**9)
    assert str(docs / "out.txt") in info.value.message and "leads outside the context folder" in info.value.message
    assert {c.id for c in engine.list_labelled("rlm.session")} == before
    # why: mounted as it is, the sandbox cannot follow that link (the failure the check now prevents)
    with pytest.raises(ContextError, match="out.txt"):
        with _open(engine, docs) as s:
            _value(s, "len(context)")
