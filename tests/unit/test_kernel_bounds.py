"""What a kernel can make the host hold: the host's own ZMTP reader keeps a message only up to a size cap."""

from __future__ import annotations

import json
import os
import resource
import threading
import time
from pathlib import Path

import zmq

from rlm.sandbox import kernel
from rlm.sandbox.zmtp import ZmtpPeer


def _publisher(path: Path) -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"ipc://{path}")
    return ctx, pub


def _read_until(peer: ZmtpPeer, wanted: int, timeout: float = 10.0) -> list[list[bytes]]:
    got: list[list[bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < wanted and time.monotonic() < deadline:
        got += peer.read()
        time.sleep(0.001)
    return got


def test_a_message_of_many_frames_over_the_cap_is_skipped_unstored(tmp_path: Path) -> None:
    ctx, pub = _publisher(tmp_path / "k-2")
    peer = ZmtpPeer(str(tmp_path / "k-2"), b"SUB", max_message=4 << 20)
    try:
        time.sleep(0.2)                                   # the subscription reaches the publisher
        frame = memoryview(bytearray(3 << 20))            # each frame under the cap, the message far over it
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sender = threading.Thread(target=lambda: [pub.send_multipart([b"t"] + [frame] * 40, copy=False)
                                                  for _ in range(5)])
        sender.start()
        pub.send_multipart([b"t", b"small", b"message"])
        sender.join()
        pub.send_multipart([b"t", b"last"])
        got = _read_until(peer, 2)
        assert [b"t", b"last"] in got
        assert all(sum(len(p) for p in m) <= 4 << 20 for m in got)
        assert peer.dropped >= 1
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert grown_mb < 100, f"the reader held {grown_mb:.0f} MB for 5 messages of 120 MiB"
    finally:
        peer.close()
        pub.close()
        ctx.term()


def test_messages_under_the_cap_arrive_whole_and_in_order(tmp_path: Path) -> None:
    ctx, pub = _publisher(tmp_path / "k-2")
    peer = ZmtpPeer(str(tmp_path / "k-2"), b"SUB", max_message=1 << 20)
    try:
        time.sleep(0.2)
        sent = [[b"topic", os.urandom(n)] for n in (0, 1, 255, 256, 70000, 1 << 19)]
        for message in sent:
            pub.send_multipart(message)
        assert _read_until(peer, len(sent)) == sent
        assert peer.dropped == 0
    finally:
        peer.close()
        pub.close()
        ctx.term()


def test_only_a_small_parent_header_naming_the_request_is_looked_at() -> None:
    mine = json.dumps({"msg_id": "abc", "session": "s"}).encode()
    assert kernel._answers(mine, "abc")
    assert not kernel._answers(json.dumps({"msg_id": "other"}).encode(), "abc")
    assert not kernel._answers(b'{"msg_id": "abc", "pad": "' + b"x" * kernel.MAX_HEADER_BYTES + b'"}', "abc")
    assert not kernel._answers(b"not json abc", "abc")
