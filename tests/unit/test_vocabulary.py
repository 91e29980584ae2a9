"""The host/guest vocabulary is spelled once, in rlm/sandbox/protocol.py (issue 14.4).

Every other guest and host file takes the names from there; this test reads their string
literals (with ``tokenize``) and fails on any that repeats one.  protocol.py itself is
copied into the image, so it must import nothing but the standard library.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

import pytest

from rlm.sandbox import protocol

REPO = Path(__file__).resolve().parents[2]
GUEST = ["sandbox_image/supervisor.py", "sandbox_image/repl.py", "sandbox_image/kernel_main.py"]
HOST = ["rlm/sandbox/provisioner.py", "rlm/sandbox/session.py", "rlm/sandbox/kernel.py", "rlm/sandbox/bridge.py", "rlm/sandbox/rundir.py",
        "rlm/sandbox/image.py", "rlm/sandbox/pool.py", "rlm/core/subcalls.py"]
# Files where the supervisor's short words ("kill", "start", "hello", ...) mean nothing else.
SHORT_WORDS_TOO = {"sandbox_image/supervisor.py", "rlm/sandbox/session.py", "rlm/sandbox/bridge.py"}
SHORT_GROUPS = (protocol.Event, protocol.Command)


def _vocabulary() -> dict[str, str]:
    """value -> the protocol name that spells it."""
    names: dict[str, str] = {}
    short = {v for g in SHORT_GROUPS for k, v in vars(g).items() if not k.startswith("_")}
    for name in ("STATE_MIME", "CONTAINER_RUN", "CONTAINER_BRIDGE", "CONTAINER_CONTEXT", "GUEST_DIR",
                 "SANDBOX_HOME", "CONTROL_SOCKET_NAME", "BRIDGE_SOCKET_NAME", "CONNECTION_FILE_NAME",
                 "CONTROL_SOCKET", "BRIDGE_SOCKET", "CONNECTION_FILE", "WAITING"):
        names[getattr(protocol, name)] = f"protocol.{name}"
    names[protocol.SUPERVISOR_COMMAND[1]] = "protocol.SUPERVISOR_COMMAND"
    for group in (protocol.Env, protocol.ContextFormat, protocol.Event, protocol.Command, protocol.Op,
                  protocol.ReplyKind, protocol.State):
        for key, value in vars(group).items():
            if not key.startswith("_") and isinstance(value, str) and (_distinctive(value) or value in short):
                names[value] = f"protocol.{group.__name__}.{key}"
    return names


def _distinctive(value: str) -> bool:
    """Long enough or shaped enough that it cannot mean anything else."""
    return any(c in value for c in "/._+") or value.isupper()


def _string_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal, f-strings included (their literal parts)."""
    out = []
    with open(path, "rb") as fh:
        for tok in tokenize.tokenize(fh.readline):
            if tok.type == tokenize.STRING:
                out.append((tok.start[0], tok.string))
            elif sys.version_info >= (3, 12) and tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
                out.append((tok.start[0], tok.string))
    return out


def _value(literal: str) -> str | None:
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        return None  # an f-string: checked by substring below
    return value if isinstance(value, str) else None


def _repeats(rel: str) -> list[str]:
    vocabulary = _vocabulary()
    found = []
    for line, literal in _string_literals(REPO / rel):
        if line <= 3 and literal.startswith(('"""', "'''")):
            continue  # the module docstring may name things
        value = _value(literal)
        for word, name in vocabulary.items():
            if value == word and (_distinctive(word) or rel in SHORT_WORDS_TOO):
                found.append(f"{rel}:{line}: {literal[:60]} repeats {name}")
            elif _distinctive(word) and len(word) > 6 and word in literal and value != word \
                    and not literal.startswith(('"""', "'''")) and ("/" in word or word.isupper()):
                found.append(f"{rel}:{line}: {literal[:60]} contains {name}")
    return found


@pytest.mark.parametrize("rel", GUEST + HOST)
def test_no_file_repeats_the_vocabulary(rel: str) -> None:
    assert _repeats(rel) == []


def test_the_check_finds_a_repeated_literal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above is not vacuous: the literals it looks for are found when present."""
    bad = tmp_path / "bad.py"
    bad.write_text('X = "application/vnd.rlm.state+json"\nY = f"{1}/rlm/bridge/llm.sock"\nZ = "RLM_AS_LIMIT"\n'
                   'W = "kill"\n')
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    found = _repeats("bad.py")
    assert any("STATE_MIME" in f for f in found)
    assert any("BRIDGE_SOCKET" in f for f in found)
    assert any("Env.AS_LIMIT" in f for f in found)
    assert not any("Command.KILL" in f for f in found)  # short words count only where they are the protocol's


def test_protocol_is_standard_library_only() -> None:
    tree = ast.parse((REPO / "rlm" / "sandbox" / "protocol.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "protocol.py is copied alone into the image: no relative imports"
            imported.add((node.module or "").split(".")[0])
    assert imported, "the check read no import at all"
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


def test_the_dockerfile_makes_the_protocol_folders() -> None:
    """The Dockerfile cannot import protocol.py: it must at least agree with it."""
    text = (REPO / "Dockerfile.sandbox").read_text()
    for path in (protocol.CONTAINER_RUN, protocol.CONTAINER_BRIDGE, protocol.CONTAINER_CONTEXT,
                 protocol.SANDBOX_HOME, protocol.GUEST_DIR, protocol.SUPERVISOR_COMMAND[1]):
        assert path in text, path
    assert f'CMD {list(protocol.SUPERVISOR_COMMAND)!r}'.replace("'", '"') in text


def test_tokenizer_reads_f_strings() -> None:
    """Sanity of the reader on this Python: an f-string's literal text is seen."""
    src = 'a = f"x{1}/rlm/run/y"\n'
    toks = [t.string for t in tokenize.tokenize(io.BytesIO(src.encode()).readline)
            if t.type in (tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", -1))]
    assert any("/rlm/run" in t for t in toks)
