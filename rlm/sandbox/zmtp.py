"""A ZeroMQ peer (ZMTP 3.0, NULL security) over a Unix socket, whose reads are bounded by the host.

libzmq cannot bound what a peer makes the receiving process hold: ZMQ_MAXMSGSIZE applies to each
frame, and a multipart message is assembled whole before the reader sees any of it (a kernel thread
sending messages of 24 x 15 MiB frames grew the host by 3.1 GB).  This peer reads the stream itself:
a message is kept only while its frames add up to at most ``max_message`` bytes; the rest of a larger
one is skipped as it arrives, never stored.  What the host has not read yet stays in the kernel's
socket buffer (the sender then waits or, for PUB, drops), so memory held is ``max_message`` plus one
read chunk, whatever the kernel sends.

Only what the kernel client needs: connect to an ``ipc`` path, the NULL handshake as SUB or DEALER,
subscribe to everything, send one multipart message, and read whole messages without blocking.
"""

from __future__ import annotations

import socket
import struct

SIGNATURE = b"\xff" + b"\x00" * 8 + b"\x7f"
GREETING = SIGNATURE + bytes([3, 0]) + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31
MORE, LONG, COMMAND = 0x01, 0x02, 0x04
READ_CHUNK = 1 << 20
READ_PER_CALL = 8 << 20     # at most this much is read per read() call: the caller stays responsive


class ZmtpError(OSError):
    """The peer is not a ZeroMQ socket speaking ZMTP 3 with NULL security, or went away."""


def _command(name: bytes, properties: dict[bytes, bytes]) -> bytes:
    body = bytes([len(name)]) + name
    for key, value in properties.items():
        body += bytes([len(key)]) + key + struct.pack(">I", len(value)) + value
    return _frame(body, COMMAND)


def _frame(body: bytes, flags: int = 0) -> bytes:
    if len(body) > 255:
        return bytes([flags | LONG]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


class ZmtpPeer:
    """One connection to a kernel socket.  ``fileno()`` for poll; ``read()`` returns whole messages."""

    def __init__(self, path: str, socket_type: bytes, max_message: int, timeout: float = 10.0) -> None:
        self.max_message = max_message
        self.dropped = 0                 # messages skipped for their size
        self.closed = False              # the kernel's end went away
        self._buf = bytearray()
        self._parts: list[bytes] = []    # frames of the message being read
        self._size = 0                   # its bytes so far
        self._skipping = False           # the message being read is over max_message: skip its frames
        self._skip_left = 0              # bytes of the current frame still to skip
        self._skip_more = False          # the frame being skipped has MORE set
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
            self._handshake(socket_type)
            if socket_type == b"SUB":
                self.sock.sendall(_frame(b"\x01"))   # subscribe to every topic (ZMTP 3.0 style)
            self.sock.setblocking(False)
        except (OSError, ValueError) as exc:
            self.sock.close()
            raise ZmtpError(f"kernel socket handshake failed: {exc}") from exc

    # -- connection -------------------------------------------------------------------------
    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ZmtpError("the kernel closed the connection during the handshake")
            data += chunk
        return data

    def _handshake(self, socket_type: bytes) -> None:
        self.sock.sendall(GREETING)
        self.sock.sendall(_command(b"READY", {b"Socket-Type": socket_type}))
        greeting = self._read_exact(64)
        if greeting[0] != 0xFF or greeting[9] != 0x7F or greeting[10] < 3 \
                or greeting[12:32].rstrip(b"\x00") != b"NULL":
            raise ZmtpError("the kernel socket does not speak ZMTP 3 with NULL security")
        flags = self._read_exact(1)[0]
        size = struct.unpack(">Q", self._read_exact(8))[0] if flags & LONG else self._read_exact(1)[0]
        if not flags & COMMAND or size > 4096:
            raise ZmtpError("the kernel socket sent no READY command")
        body = self._read_exact(size)
        if not body.startswith(b"\x05READY"):
            raise ZmtpError("the kernel socket sent no READY command")

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.closed = True
        self.sock.close()

    # -- messages -----------------------------------------------------------------------------
    def send(self, frames: list[bytes], timeout: float = 10.0) -> None:
        data = b"".join(_frame(bytes(f), MORE if i < len(frames) - 1 else 0) for i, f in enumerate(frames))
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)

    def read(self) -> list[list[bytes]]:
        """Whole messages that have arrived (none when nothing is there); never blocks."""
        messages: list[list[bytes]] = []
        taken = 0
        while taken < READ_PER_CALL and not self.closed:
            try:
                chunk = self.sock.recv(READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            taken += len(chunk)
            self._buf += chunk
            self._parse(messages)
        return messages

    def _parse(self, messages: list[list[bytes]]) -> None:
        buf = self._buf
        at = 0
        while True:
            if self._skip_left:
                n = min(self._skip_left, len(buf) - at)
                at += n
                self._skip_left -= n
                if self._skip_left:
                    break
                if not self._skip_more:
                    self._skipping = False
                continue
            if len(buf) - at < 2:
                break
            flags = buf[at]
            if flags & LONG:
                if len(buf) - at < 9:
                    break
                size = struct.unpack_from(">Q", buf, at + 1)[0]
                head = 9
            else:
                size = buf[at + 1]
                head = 2
            more = bool(flags & MORE)
            if flags & COMMAND:                      # PING and the like: skipped, never answered
                self._skip_left, self._skip_more = size, self._skipping
                at += head
                continue
            if self._skipping or self._size + size > self.max_message:
                if not self._skipping:
                    self._skipping = True
                    self.dropped += 1
                    self._parts, self._size = [], 0
                at += head
                self._skip_left, self._skip_more = size, more
                if size == 0 and not more:
                    self._skipping = False
                continue
            if len(buf) - at - head < size:
                break                                # the frame is not all here yet (it fits the cap)
            self._parts.append(bytes(buf[at + head: at + head + size]))
            self._size += size
            at += head + size
            if not more:
                messages.append(self._parts)
                self._parts, self._size = [], 0
        del buf[:at]
