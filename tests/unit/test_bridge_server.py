"""The host end of the bridge, without Docker: frame cap, rate limit, host-decided waiting, deadlines."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from rlm.sandbox import protocol
from rlm.sandbox.bridge import BridgeServer


class Recorder:
    """A handler that echoes, records what it saw, and can hold requests until released."""

    def __init__(self, deadline_s: float | None = None) -> None:
        self.seen: list[dict] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Semaphore(0)
        self.deadline_s = deadline_s

    def __call__(self, request: dict) -> dict:
        self.seen.append(request)
        self.started.release()
        self.release.wait(30)
        return {"text": f"echo:{request.get('prompt')}"}

    def deadline_for(self, request: dict) -> float | None:
        return self.deadline_s


@pytest.fixture
def folder():
    path = Path(f"/tmp/rlm-bt-{os.getpid()}-{threading.get_ident() % 10000}")
    path.mkdir(exist_ok=True)
    yield path
    for name in (protocol.BRIDGE_SOCKET_NAME, protocol.CONTROL_SOCKET_NAME):
        (path / name).unlink(missing_ok=True)
    path.rmdir()


def serve(folder: Path, handler, **kw) -> BridgeServer:
    server = BridgeServer(folder, allowed_uids={os.getuid()}, on_control=lambda e: None, handler=handler, **kw)
    server.start()
    return server


def connect(folder: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(folder / protocol.BRIDGE_SOCKET_NAME))
    return sock


def ask(folder: Path, message: dict) -> dict:
    with connect(folder) as sock:
        protocol.send_frame(sock, {"v": 1, **message})
        return protocol.read_frame(sock, protocol.REPLY_MAX_FRAME)


def test_a_frame_over_the_cap_is_refused_from_its_length_and_the_bridge_keeps_serving(folder):
    handler = Recorder()
    server = serve(folder, handler, max_frame=1 << 20)
    try:
        with connect(folder) as sock:
            body = b'{"v": 1, "op": "llm_query", "prompt": "' + b"p" * (8 << 20) + b'"}'
            sock.sendall(struct.pack(">I", len(body)) + body[:4096])  # the rest is never needed
            reply = protocol.read_frame(sock, protocol.REPLY_MAX_FRAME)
        assert reply["ok"] is False and reply["kind"] == "protocol" and "exceeds the cap" in reply["error"]
        assert handler.seen == []
        assert ask(folder, {"id": 1, "op": "llm_query", "prompt": "hi"})["text"] == "echo:hi"
    finally:
        server.close()


def test_waiting_is_what_the_host_has_in_flight_whatever_the_frame_says(folder):
    handler = Recorder()
    server = serve(folder, handler)
    try:
        ask(folder, {"id": 1, "op": "llm_query", "prompt": "x", "waiting": True})  # forged, answered at once
        assert not server.waiting and server.in_flight == 0
        handler.release.clear()
        sock = connect(folder)
        protocol.send_frame(sock, {"v": 1, "id": 2, "op": "llm_query", "prompt": "y", "waiting": False})
        assert handler.started.acquire(timeout=5) and handler.started.acquire(timeout=5)
        assert server.waiting and server.in_flight == 1  # held by the host: waiting, though it says not
        handler.release.set()
        assert protocol.read_frame(sock)["text"] == "echo:y"
        sock.close()
        assert not server.waiting
    finally:
        server.close()


def test_a_request_past_its_deadline_is_answered_with_a_time_out_and_stops_counting_as_waiting(folder):
    handler = Recorder(deadline_s=0.3)
    handler.release.clear()  # the handler never answers in time
    server = serve(folder, handler)
    try:
        started = time.monotonic()
        reply = ask(folder, {"id": 7, "op": "llm_query", "prompt": "z"})
        took = time.monotonic() - started
        assert reply["ok"] is False and reply["kind"] == "refused" and reply["id"] == 7
        assert "timed out after 0.3 s" in reply["error"]
        assert not server.waiting and server.in_flight == 0
        assert server.waited_seconds() == pytest.approx(0.3, abs=0.25) and took < 5
        handler.release.set()  # the handler's late answer is dropped, nothing breaks
        assert ask(folder, {"id": 8, "op": "llm_query", "prompt": "w"})["text"] == "echo:w"
    finally:
        server.close()


def test_a_flood_of_frames_is_throttled_and_every_frame_still_answered(folder):
    handler = Recorder()
    server = serve(folder, handler, frames_per_s=20, frame_burst=5)
    try:
        replies = []
        with connect(folder) as sock:
            for round_ in range(4):  # each round is read after the bucket was emptied by the one before
                sock.sendall(b"".join(protocol.encode({"id": round_ * 5 + i, "op": "llm_query", "prompt": "f"})
                                      for i in range(5)))
                replies += [protocol.read_frame(sock) for _ in range(5)]
        assert sorted(r["id"] for r in replies) == list(range(20)) and all(r["ok"] for r in replies)
        assert server.throttled >= 1
    finally:
        server.close()


def test_bytes_past_the_bucket_pause_reading(folder):
    handler = Recorder()
    server = serve(folder, handler, bytes_per_s=256 * 1024, byte_burst=64 * 1024)
    try:
        prompt = "b" * 200_000
        with connect(folder) as sock:
            protocol.send_frame(sock, {"v": 1, "id": 1, "op": "llm_query", "prompt": prompt})
            assert protocol.read_frame(sock)["text"] == f"echo:{prompt}"
            protocol.send_frame(sock, {"v": 1, "id": 2, "op": "llm_query", "prompt": "after"})  # the bucket is in debt
            assert protocol.read_frame(sock)["text"] == "echo:after"
        assert server.throttled >= 1
    finally:
        server.close()
