"""Checking the user's context before any container starts (rlm/context.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import rlm.core.context as context_mod
from rlm.core.context import ContextSource, check_file, inline_text
from rlm.errors import ContextError, UsageError

BIG = 10_000_000


def test_a_good_text_file_is_accepted(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("héllo wörld\n" * 10, encoding="utf-8")
    source = check_file(path, max_bytes=BIG)
    assert source.path == path.resolve()
    assert source.size_bytes == path.stat().st_size
    assert not source.temporary
    source.cleanup()
    assert path.exists(), "a user's file is never deleted"


def test_missing_file(tmp_path):
    with pytest.raises(ContextError) as info:
        check_file(tmp_path / "nope.txt", max_bytes=BIG)
    assert "not found" in info.value.message and "nope.txt" in info.value.message
    assert "-f" in info.value.hint
    assert isinstance(info.value, UsageError)


def test_directory_without_allow_dir(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ContextError) as info:
        check_file(tmp_path, max_bytes=BIG)
    assert "is a folder, not a file" in info.value.message
    assert "--context-dir" in info.value.hint


def test_directory_with_allow_dir(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("beta!")
    source = check_file(tmp_path, max_bytes=BIG, allow_dir=True)
    assert source.path == tmp_path.resolve() and source.size_bytes == 10


def test_directory_checks_apply_to_its_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ContextError, match="holds no text"):
        check_file(tmp_path / "empty", max_bytes=BIG, allow_dir=True)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x.bin").write_bytes(b"ab\x00cd")
    with pytest.raises(ContextError, match="NUL bytes"):
        check_file(tmp_path / "bin", max_bytes=BIG, allow_dir=True)
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "a.txt").write_text("x" * 60)
    (tmp_path / "big" / "b.txt").write_text("x" * 60)
    with pytest.raises(ContextError, match="more than the maximum context size"):
        check_file(tmp_path / "big", max_bytes=100, allow_dir=True)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(ContextError) as info:
        check_file(path, max_bytes=BIG)
    assert "empty" in info.value.message and info.value.hint


def test_whitespace_only_file(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("  \n\t\n   \n")
    with pytest.raises(ContextError, match="only whitespace"):
        check_file(path, max_bytes=BIG)


def test_nul_bytes_are_refused_as_binary(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"some text\x00\x01\x02more")
    with pytest.raises(ContextError) as info:
        check_file(path, max_bytes=BIG)
    assert "binary" in info.value.message and "NUL" in info.value.message
    assert "UTF-8" in info.value.hint


def test_invalid_utf8_is_refused_with_the_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf" + b"\xe9 au lait")  # Latin-1 é
    with pytest.raises(ContextError) as info:
        check_file(path, max_bytes=BIG)
    assert "not UTF-8" in info.value.message and "offset 3" in info.value.message
    assert "iconv" in info.value.hint


def test_truncated_multibyte_character_at_the_end_is_refused(tmp_path):
    path = tmp_path / "cut.txt"
    path.write_bytes(b"ok " + "é".encode()[:1])
    with pytest.raises(ContextError, match="not UTF-8"):
        check_file(path, max_bytes=BIG)


def test_too_large_file(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("x" * 101)
    with pytest.raises(ContextError) as info:
        check_file(path, max_bytes=100)
    assert "101 bytes, over the maximum of 100" in info.value.message
    assert "RLM_MAX_CONTEXT_BYTES" in info.value.hint
    assert check_file(path, max_bytes=101).size_bytes == 101


def test_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ContextError, match="not a regular file"):
        check_file(fifo, max_bytes=BIG)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("x")
    path.chmod(0)
    try:
        with pytest.raises(ContextError, match="not readable"):
            check_file(path, max_bytes=BIG)
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_huge_files_are_sampled_head_and_tail(tmp_path, monkeypatch):
    monkeypatch.setattr(context_mod, "_FULL_CHECK_BYTES", 1000)
    monkeypatch.setattr(context_mod, "_SAMPLE", 200)
    body = ("é" * 1500).encode()  # 3000 bytes of two-byte characters
    good = tmp_path / "good.txt"
    good.write_bytes(b"a" + body + b"b")  # the tail sample (from byte 2802) starts inside a character
    assert check_file(good, max_bytes=BIG).size_bytes == 3002
    bad_tail = tmp_path / "bad_tail.txt"
    bad_tail.write_bytes(body + b"\xff" + b"abc")
    with pytest.raises(ContextError, match="not UTF-8"):
        check_file(bad_tail, max_bytes=BIG)
    nul_tail = tmp_path / "nul_tail.txt"
    nul_tail.write_bytes(body + b"\x00")
    with pytest.raises(ContextError, match="NUL"):
        check_file(nul_tail, max_bytes=BIG)


# ------------------------------------------------------------------------------ inline text
def test_inline_text_is_written_to_a_private_temporary_file_and_removed():
    with inline_text("The code is 7421. ünïcode", max_bytes=BIG) as source:
        assert source.temporary
        assert source.path.read_text(encoding="utf-8") == "The code is 7421. ünïcode"
        assert source.size_bytes == len("The code is 7421. ünïcode".encode())
        assert stat.S_IMODE(source.path.stat().st_mode) == 0o644  # the sandbox user must read it
        folder = source.path.parent
    assert not source.path.exists() and not folder.exists()


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_inline_text_empty(text):
    with pytest.raises(ContextError) as info:
        inline_text(text, max_bytes=BIG)
    assert "empty" in info.value.message and "-f" in info.value.hint


def test_inline_text_too_large_counts_bytes_not_characters():
    with pytest.raises(ContextError, match="6 bytes, over the maximum of 5"):
        inline_text("ééé", max_bytes=5)


def test_no_context_source():
    source = ContextSource(None)
    with source:
        assert source.path is None


@pytest.mark.parametrize("name,data", [("bad.json", '{"a": 1,, "b": 2}'), ("bad.jsonl", '{"a": 1}\nnot json\n')])
def test_invalid_json_context_is_refused_before_the_sandbox(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(data)
    with pytest.raises(ContextError, match="JSON"):
        check_file(path, max_bytes=BIG)


# ------------------------------------------------------------------------------ special files and symlinks (issue 19 B, E)
def _check_with_deadline(path, **kwargs):
    """check_file in a thread: a FIFO opened for reading would block it forever, so a writer
    releases it after a deadline and the test fails instead of hanging."""
    import threading

    outcome: dict = {}

    def target():
        try:
            outcome["value"] = check_file(path, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        for fifo in Path(path).rglob("*") if Path(path).is_dir() else [Path(path)]:
            if stat.S_ISFIFO(os.lstat(fifo).st_mode):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail("check_file blocked on a special file")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_a_fifo_in_the_context_folder_is_refused_by_name_without_blocking(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "sub" / "pipe")
    with pytest.raises(ContextError) as info:
        _check_with_deadline(tmp_path, max_bytes=BIG, allow_dir=True)
    assert str(tmp_path / "sub" / "pipe") in info.value.message
    assert "not a regular file" in info.value.message and "FIFO" in info.value.message
    assert isinstance(info.value, UsageError) and "folder" in info.value.hint


def test_a_symlink_to_a_fifo_is_refused_too(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "docs").mkdir()
    os.mkfifo(tmp_path / "docs" / "pipe")
    (tmp_path / "docs" / "link.txt").symlink_to("pipe")
    with pytest.raises(ContextError, match="link.txt is not a regular file"):
        _check_with_deadline(tmp_path / "docs", max_bytes=BIG, allow_dir=True)
    (tmp_path / "outside.txt").symlink_to(tmp_path / "pipe")
    with pytest.raises(ContextError, match="not a regular file"):
        _check_with_deadline(tmp_path / "outside.txt", max_bytes=BIG)


def test_a_fifo_swapped_in_after_the_check_is_not_blocking(tmp_path, monkeypatch):
    """The file is opened with O_NONBLOCK and fstat'ed: even a FIFO that passed as regular is refused."""
    os.mkfifo(tmp_path / "pipe")
    real_stat = os.stat
    regular = real_stat(__file__)

    def lying_stat(path, *args, **kwargs):
        return regular if str(path).endswith("pipe") else real_stat(path, *args, **kwargs)

    monkeypatch.setattr(context_mod.os, "stat", lying_stat)
    monkeypatch.setattr(context_mod.os, "access", lambda *a, **k: True)
    with pytest.raises(ContextError, match="not a regular file"):
        _check_with_deadline(tmp_path / "pipe", max_bytes=BIG)


@pytest.mark.parametrize("allow_dir", [False, True])
def test_a_broken_symlink_is_named(tmp_path, allow_dir):
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    target = tmp_path if allow_dir else tmp_path / "gone.txt"
    with pytest.raises(ContextError) as info:
        check_file(target, max_bytes=BIG, allow_dir=allow_dir)
    assert str(tmp_path / "gone.txt") in info.value.message
    assert "broken symbolic link" in info.value.message and "nowhere.txt" in info.value.message
    assert "not found" not in info.value.message
    assert isinstance(info.value, UsageError) and info.value.hint


@pytest.mark.parametrize("allow_dir", [False, True])
def test_a_symlink_loop_is_named_as_a_loop(tmp_path, allow_dir):
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    target = tmp_path if allow_dir else tmp_path / "loop1"
    with pytest.raises(ContextError) as info:
        check_file(target, max_bytes=BIG, allow_dir=allow_dir)
    assert "symbolic link loop" in info.value.message and "loop" in info.value.message
    assert "not found" not in info.value.message
    assert isinstance(info.value, UsageError)


def test_a_relative_folder_link_back_to_the_root_is_listed_not_entered(tmp_path):
    """As the sandbox's os.walk does: a link to a folder is not entered, so nothing counts twice."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("alpha")
    (tmp_path / "docs" / "again").symlink_to(".")
    assert check_file(tmp_path / "docs", max_bytes=BIG, allow_dir=True).size_bytes == 5


# ------------------------------------------------------------------------------ D8: the sandbox sees what was checked
def test_a_link_that_leaves_the_folder_is_refused_by_name(tmp_path):
    (tmp_path / "secret.txt").write_text("outside")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.txt").write_text("beta")
    (tmp_path / "docs" / "out.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(ContextError) as info:
        check_file(tmp_path / "docs", max_bytes=BIG, allow_dir=True)
    assert str(tmp_path / "docs" / "out.txt") in info.value.message
    assert "leads outside the context folder" in info.value.message and "cp -L" in info.value.hint
    assert isinstance(info.value, UsageError)


@pytest.mark.parametrize("target", ["../secret.txt", "../docs/b.txt", "sub/../../secret.txt"])
def test_a_relative_link_that_climbs_out_of_the_folder_is_refused(tmp_path, target):
    """``../docs/b.txt`` lands inside on the host, but in the sandbox ``..`` of the mount is elsewhere."""
    (tmp_path / "secret.txt").write_text("outside")
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "b.txt").write_text("beta")
    (tmp_path / "docs" / "link.txt").symlink_to(target)
    with pytest.raises(ContextError, match=r"link\.txt .*leads outside the context folder"):
        check_file(tmp_path / "docs", max_bytes=BIG, allow_dir=True)


def test_a_chain_of_links_that_ends_outside_is_refused(tmp_path):
    (tmp_path / "secret.txt").write_text("outside")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").symlink_to("b.txt")
    (tmp_path / "docs" / "b.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(ContextError, match=r"a\.txt .*leads outside"):
        check_file(tmp_path / "docs", max_bytes=BIG, allow_dir=True)


def test_an_absolute_link_inside_the_folder_is_refused_as_absolute(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.txt").write_text("beta")
    (tmp_path / "docs" / "link.txt").symlink_to(tmp_path / "docs" / "b.txt")
    with pytest.raises(ContextError) as info:
        check_file(tmp_path / "docs", max_bytes=BIG, allow_dir=True)
    assert "link.txt" in info.value.message and "is absolute" in info.value.message
    assert "ln -sr" in info.value.hint


def test_relative_links_inside_the_folder_are_counted_as_the_sandbox_loads_them(tmp_path):
    (tmp_path / "docs" / "real").mkdir(parents=True)
    (tmp_path / "docs" / "real" / "a.txt").write_text("alpha")
    (tmp_path / "docs" / "b.txt").write_text("beta!")
    (tmp_path / "docs" / "link.txt").symlink_to("real/a.txt")            # a second document with a's text
    (tmp_path / "docs" / "real" / "up.txt").symlink_to("../b.txt")       # .. inside the folder is fine
    (tmp_path / "docs" / "more").symlink_to("real")                      # listed, not entered
    assert check_file(tmp_path / "docs", max_bytes=BIG, allow_dir=True).size_bytes == 20
    with pytest.raises(ContextError, match="more than the maximum"):
        check_file(tmp_path / "docs", max_bytes=19, allow_dir=True)


def test_a_symlinked_context_folder_is_checked_at_its_real_place(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.txt").write_text("beta")
    (tmp_path / "docs" / "link.txt").symlink_to("b.txt")
    (tmp_path / "alias").symlink_to(tmp_path / "docs")
    source = check_file(tmp_path / "alias", max_bytes=BIG, allow_dir=True)
    assert source.path == (tmp_path / "docs").resolve() and source.size_bytes == 8


# ------------------------------------------------------------------------------ D4: deep JSON
@pytest.mark.parametrize("name,data", [
    ("deep.json", "[" * 100_000 + "]" * 100_000),
    ("deep_obj.json", '{"a":' * 100_000 + "1" + "}" * 100_000),
    ("deep.jsonl", '{"a": 1}\n' + "[" * 100_000 + "]" * 100_000 + "\n"),
])
def test_json_nested_100000_levels_deep_is_a_context_error(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(data)
    with pytest.raises(ContextError) as info:
        check_file(path, max_bytes=BIG)
    assert "nested too deeply" in info.value.message and name in info.value.message
    assert ("line 2" in info.value.message) == name.endswith(".jsonl")
    assert isinstance(info.value, UsageError)


def test_json_nested_a_little_is_fine(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text("[" * 200 + "]" * 200)
    assert check_file(path, max_bytes=BIG).size_bytes == 400


def test_a_deeply_nested_python_value_is_a_context_error():
    value: list = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(ContextError, match="nested too deeply"):
        context_mod.inline_json(value, max_bytes=BIG)
