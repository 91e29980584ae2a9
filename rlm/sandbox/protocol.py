"""Wire format shared by the host and the sandbox (stdlib only).

This one file is imported by the host (``rlm.sandbox.protocol``) and copied unchanged
into the sandbox image at build time, where the supervisor and the REPL helpers import
it as ``protocol``.  It must therefore depend on nothing but the standard library.

A frame is a 4-byte big-endian unsigned length followed by that many bytes of UTF-8
JSON encoding one object.  Every object carries ``"v": VERSION``.  Frames larger than
the reader's cap, truncated frames, invalid JSON and non-object payloads raise
``ProtocolError``; a server answers those with an error reply and keeps serving.
"""

from __future__ import annotations

import json
import socket
import struct

VERSION = 1
HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 1024 * 1024      # 1 MiB: requests from the REPL (RLM_BRIDGE_MAX_FRAME)
REPLY_MAX_FRAME = 64 * 1024 * 1024   # replies from the host to the REPL

# -- the vocabulary shared by host and guest: every name below is spelled here only --------

# Per-cell state the REPL publishes as one display message of this MIME type.
STATE_MIME = "application/vnd.rlm.state+json"

MAP_CHUNK_CHARS = 4_000  # the REPL's map_chunks piece size unless the code passes another (prompts say so)
# What grep prints for a pattern of several words that matched no line ("grep('a b') matched no
# line; each word alone: grep('a') 3 lines, ..."); the host reads past that line to the cell's result.
NO_MATCH_NOTE = "matched no line; each word alone:"

# Container paths (host folders are bind-mounted there).
CONTAINER_RUN = "/rlm/run"          # read-write: the kernel's sockets and connection file
CONTAINER_BRIDGE = "/rlm/bridge"    # read-only: the sockets the host serves
CONTAINER_CONTEXT = "/rlm/context"  # read-only: the context file or folder
GUEST_DIR = "/opt/rlm"              # the guest code inside the image
SANDBOX_HOME = "/home/sandbox"
CONTROL_SOCKET_NAME = "ctl.sock"    # supervisor <-> host
BRIDGE_SOCKET_NAME = "llm.sock"     # REPL's llm_query family -> host
CONNECTION_FILE_NAME = "kernel.json"
CONTROL_SOCKET = f"{CONTAINER_BRIDGE}/{CONTROL_SOCKET_NAME}"
BRIDGE_SOCKET = f"{CONTAINER_BRIDGE}/{BRIDGE_SOCKET_NAME}"
CONNECTION_FILE = f"{CONTAINER_RUN}/{CONNECTION_FILE_NAME}"
# The later contexts of a session (context_1, ...): [{"name", "path", "format", "source"}], host-written
CONTEXTS_MANIFEST_NAME = "contexts.json"
CONTEXTS_MANIFEST = f"{CONTAINER_BRIDGE}/{CONTEXTS_MANIFEST_NAME}"
SUPERVISOR_COMMAND = ("python3", f"{GUEST_DIR}/supervisor.py")


class Env:
    """Environment variables the host sets for the container."""

    CONTEXT_PATH = "RLM_CONTEXT_PATH"
    CONTEXT_FORMAT = "RLM_CONTEXT_FORMAT"
    AS_LIMIT = "RLM_AS_LIMIT"
    OUTPUT_LIMIT = "RLM_OUTPUT_LIMIT"
    FINAL_LIMIT = "RLM_FINAL_LIMIT"
    BRIDGE_MAX_FRAME = "RLM_BRIDGE_MAX_FRAME"


class ContextFormat:
    """How the REPL loads the context (``Env.CONTEXT_FORMAT``)."""

    TEXT = "text"
    JSON = "json"
    JSONL = "jsonl"
    DIR = "dir"


class Event:
    """What the supervisor reports on the control socket (``{"event": ...}``)."""

    HELLO = "hello"
    KERNEL_READY = "kernel_ready"
    KERNEL_EXIT = "kernel_exit"
    KILLED = "killed"
    ERROR = "error"
    CONTROL_CLOSED = "control_closed"  # made by the host when the control connection closes


class Command:
    """What the host asks of the supervisor (``{"cmd": ...}``)."""

    INTERRUPT = "interrupt"
    KILL = "kill"
    START = "start"
    STOP = "stop"


class Op:
    """Bridge requests from the REPL (``{"op": ...}``)."""

    LLM_QUERY = "llm_query"
    LLM_QUERY_BATCHED = "llm_query_batched"
    RLM_QUERY = "rlm_query"
    WINDOW = "window"  # the sub-model's context window: {"tokens", "source", "prompt_tokens", "chunk_chars"}


class ReplyKind:
    """``kind`` of an error reply on the bridge."""

    ERROR = "error"
    REFUSED = "refused"
    PROTOCOL = "protocol"


class State:
    """Keys of the per-cell state message (``STATE_MIME``)."""

    FINAL = "final"
    CONTEXT_RESTORED = "context_restored"
    OUTPUT_DROPPED = "output_dropped"
    CONTEXT_INFO = "context_info"
    CONTEXT_ERROR = "context_error"  # the context could not be loaded in the kernel (text, with figures)


# A text context at least this large is read straight into its str when it is pure ASCII (about
# once its size in memory instead of twice); the host's memory check counts on it.
ASCII_DIRECT_MIN = 64 * 1024 * 1024

# A bridge request made by the cell's own (main) thread carries WAITING: true.  The host ignores
# it (anything in the sandbox can forge it): it decides itself which requests are in flight.
WAITING = "waiting"


class ProtocolError(Exception):
    """A frame could not be read or is not a valid message."""


class PeerClosed(ProtocolError):
    """The peer closed the connection cleanly between frames."""


def encode(message: dict) -> bytes:
    """Serialise one message (``v`` is added) into a frame."""
    body = dict(message)
    body.setdefault("v", VERSION)
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return HEADER.pack(len(data)) + data


def decode_body(data: bytes) -> dict:
    """Parse a frame body; check it is an object of a version we speak."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"invalid JSON in frame: {exc}") from None
    except RecursionError:
        raise ProtocolError("frame nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError("a frame must hold a JSON object")
    if obj.get("v") != VERSION:
        raise ProtocolError(f"unsupported protocol version {obj.get('v')!r} (this side speaks {VERSION})")
    return obj


def _recv_exact(sock: socket.socket, n: int, *, at_start: bool) -> bytes:
    chunks = []
    remaining = n
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            if at_start and remaining == n:
                raise PeerClosed("connection closed")
            raise ProtocolError(f"truncated frame: {n - remaining} of {n} bytes")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket, max_size: int = DEFAULT_MAX_FRAME) -> dict:
    """Read one message from a blocking socket."""
    (length,) = HEADER.unpack(_recv_exact(sock, HEADER.size, at_start=True))
    if length > max_size:
        raise ProtocolError(f"frame of {length} bytes exceeds the cap of {max_size} bytes")
    return decode_body(_recv_exact(sock, length, at_start=False))


def send_frame(sock: socket.socket, message: dict) -> None:
    sock.sendall(encode(message))


class FrameReader:
    """Incremental decoder for non-blocking sockets.

    ``feed(data)`` returns the messages completed by ``data``.  A frame over the cap
    raises ``ProtocolError`` as soon as its header is seen, before its body is buffered.
    Invalid bodies are returned as ``ProtocolError`` instances in the list so that one
    bad frame does not hide the good ones around it.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME) -> None:
        self.max_size = max_size
        self._buf = bytearray()

    def feed(self, data: bytes) -> list:
        self._buf += data
        out: list = []
        while len(self._buf) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buf)
            if length > self.max_size:
                self._buf.clear()
                raise ProtocolError(f"frame of {length} bytes exceeds the cap of {self.max_size} bytes")
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            body = bytes(self._buf[HEADER.size:end])
            del self._buf[:end]
            try:
                out.append(decode_body(body))
            except ProtocolError as exc:
                out.append(exc)
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


def error_reply(request_id, message: str, *, kind: str = ReplyKind.ERROR) -> dict:
    return {"v": VERSION, "id": request_id, "ok": False, "error": message, "kind": kind}


def ok_reply(request_id, **fields) -> dict:
    return {"v": VERSION, "id": request_id, "ok": True, **fields}
