"""What a kernel can make the host hold: size and queue limits on the sockets the host reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import zmq

from rlm.sandbox import kernel
from rlm.sandbox.kernel import KernelClient


def _kernel_sockets(run: Path) -> tuple[zmq.Context, list[zmq.Socket]]:
    ctx = zmq.Context()
    socks = []
    for port, kind in ((1, zmq.ROUTER), (2, zmq.PUB)):
        sock = ctx.socket(kind)
        sock.bind(f"ipc://{run}/k-{port}")
        socks.append(sock)
    return ctx, socks


def test_the_host_bounds_frame_size_and_queue_of_shell_and_iopub(tmp_path: Path) -> None:
    ctx, socks = _kernel_sockets(tmp_path)
    connection = {"key": "k", "signature_scheme": "hmac-sha256", "shell_port": 1, "iopub_port": 2}
    client = KernelClient(connection, tmp_path, {os.getuid()})
    try:
        for sock, hwm in ((client.shell, kernel.SHELL_RCVHWM), (client.iopub, kernel.IOPUB_RCVHWM)):
            assert sock.getsockopt(zmq.MAXMSGSIZE) == kernel.MAX_MESSAGE_BYTES <= 16 * 1024 * 1024
            assert sock.getsockopt(zmq.RCVHWM) == hwm <= 8
        assert kernel.IOPUB_RCVHWM * kernel.MAX_MESSAGE_BYTES <= 128 * 1024 * 1024
    finally:
        client.close()
        for sock in socks:
            sock.close(linger=0)
        ctx.term()


def test_only_a_small_parent_header_naming_the_request_is_looked_at() -> None:
    mine = json.dumps({"msg_id": "abc", "session": "s"}).encode()
    assert kernel._answers(mine, "abc")
    assert not kernel._answers(json.dumps({"msg_id": "other"}).encode(), "abc")
    assert not kernel._answers(b'{"msg_id": "abc", "pad": "' + b"x" * kernel.MAX_HEADER_BYTES + b'"}', "abc")
    assert not kernel._answers(b"not json abc", "abc")
