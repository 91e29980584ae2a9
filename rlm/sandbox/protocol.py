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
DEFAULT_MAX_FRAME = 8 * 1024 * 1024  # 8 MiB


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


def error_reply(request_id, message: str, *, kind: str = "error") -> dict:
    return {"v": VERSION, "id": request_id, "ok": False, "error": message, "kind": kind}


def ok_reply(request_id, **fields) -> dict:
    return {"v": VERSION, "id": request_id, "ok": True, **fields}
