"""The bridge wire format: framing, caps, versions, partial and bad frames."""

from __future__ import annotations

import socket

import pytest

from rlm.sandbox import protocol


def test_round_trip_over_a_socket_pair():
    a, b = socket.socketpair()
    with a, b:
        protocol.send_frame(a, {"op": "llm_query", "prompt": "héllo"})
        msg = protocol.read_frame(b)
    assert msg == {"op": "llm_query", "prompt": "héllo", "v": protocol.VERSION}


def test_reader_assembles_frames_split_anywhere():
    data = protocol.encode({"id": 1}) + protocol.encode({"id": 2})
    reader = protocol.FrameReader()
    got = []
    for i in range(len(data)):
        got += reader.feed(data[i:i + 1])
    assert [m["id"] for m in got] == [1, 2]
    assert reader.pending == 0


def test_oversized_header_is_refused_before_the_body_arrives():
    reader = protocol.FrameReader(max_size=100)
    with pytest.raises(protocol.ProtocolError, match="exceeds the cap of 100"):
        reader.feed(protocol.HEADER.pack(101))


def test_bad_body_is_reported_without_hiding_good_neighbours():
    bad = b"{not json"
    data = protocol.encode({"id": 1}) + protocol.HEADER.pack(len(bad)) + bad + protocol.encode({"id": 3})
    out = protocol.FrameReader().feed(data)
    assert out[0]["id"] == 1 and isinstance(out[1], protocol.ProtocolError) and out[2]["id"] == 3


@pytest.mark.parametrize("body, message", [
    (b"[1, 2]", "JSON object"),
    (b'{"v": 99}', "unsupported protocol version"),
    (b"\xff\xfe", "invalid JSON"),
])
def test_decode_body_rejects(body, message):
    with pytest.raises(protocol.ProtocolError, match=message):
        protocol.decode_body(body)


def test_truncated_frame_and_clean_close_are_told_apart():
    a, b = socket.socketpair()
    with b:
        a.sendall(protocol.encode({"id": 1})[:-2])
        a.close()
        with pytest.raises(protocol.ProtocolError, match="truncated"):
            protocol.read_frame(b)
    a, b = socket.socketpair()
    with b:
        a.close()
        with pytest.raises(protocol.PeerClosed):
            protocol.read_frame(b)


def test_replies_carry_id_and_status():
    assert protocol.ok_reply(7, text="x") == {"v": 1, "id": 7, "ok": True, "text": "x"}
    err = protocol.error_reply(7, "no", kind="refused")
    assert err["ok"] is False and err["error"] == "no" and err["kind"] == "refused"
