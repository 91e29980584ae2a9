"""Bridge attacks: malformed, truncated, oversized and unfinished frames, floods, budget, ctl.sock, escapes."""

from __future__ import annotations

from collections.abc import Callable

from rlm.core.parsing import sanitize_for_terminal
from rlm.sandbox.execution import Execution
from rlm.security.canaries import host_fd_count, host_rss_mb
from rlm.security.model import _indent, attack
from rlm.security.runner import CheckContext
from rlm.security.verify import _CONTROL_CHARS, _missing, report_of

# --------------------------------------------------------------------------- bridge
_FRAMES = _indent(r"""
import json, socket, struct
def frame(obj):
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body
def read_reply(sock):
    def exact(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data
    head = exact(4)
    if head is None:
        return None
    body = exact(struct.unpack(">I", head)[0])
    return None if body is None else json.loads(body)
def bridge(path="/rlm/bridge/llm.sock"):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    return s
def outcome(reply):
    if reply is None:
        return "closed"
    return "answered" if reply.get("ok") else "error:" + str(reply.get("kind"))
""")


def _verify_malformed(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    bad = {k: v for k, v in data["frames"].items() if v != "error:protocol"}
    ok = not bad and data["after"] == "answered" and data["llm_query"].startswith("echo")
    return ok, (f"{len(data['frames'])} malformed frames answered with protocol errors; connection kept"
                if ok else f"frames {bad}, after {data['after']}, llm_query {data['llm_query']}")


attack("bridge_malformed_frames", "bridge", "protocol error replies; the bridge keeps serving", _FRAMES + r"""
    s = bridge()
    frames = {}
    for label, body in [("invalid JSON", b"{not json"), ("invalid UTF-8", b"\xff\xfe\xfd"),
                        ("JSON array", b"[1, 2, 3]"), ("JSON null", b"null"), ("empty", b""),
                        ("wrong version", {"v": 99, "id": 1, "op": "llm_query", "prompt": "x"}),
                        ("no version", {"id": 2, "op": "llm_query", "prompt": "x"})]:
        s.sendall(frame(body))
        try:
            frames[label] = outcome(read_reply(s))
        except OSError as exc:
            frames[label] = type(exc).__name__
    s.sendall(frame({"v": 1, "id": 3, "op": "llm_query", "prompt": "still there?"}))
    after = outcome(read_reply(s))
    s.close()
    report(frames=frames, after=after, llm_query=llm_query("hello"))
""", _verify_malformed)


def _verify_deep_json(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    ok = data["reply"] == "error:protocol" and data["llm_query"].startswith("echo")
    return ok, f"deeply nested frame: {data['reply']}; llm_query afterwards: {data['llm_query']}"


attack("bridge_deep_json", "bridge", "a deeply nested JSON frame gets a protocol error reply", _FRAMES + r"""
    s = bridge()
    s.settimeout(2)
    s.sendall(frame(b"[" * 200000 + b"]" * 200000))
    try:
        reply = outcome(read_reply(s))
    except OSError as exc:
        reply = "no reply (" + type(exc).__name__ + ")"
    s.close()
    report(reply=reply, llm_query=llm_query("hello"))
""", _verify_deep_json)


def _verify_truncated(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    ok = (all(v in ("closed", "ConnectionResetError") for v in data["out"].values())
          and data["llm_query"].startswith("echo"))
    return ok, f"truncated frames: {data['out']}; llm_query afterwards: {data['llm_query']}"


attack("bridge_truncated_frames", "bridge", "truncated frames are dropped; the bridge keeps serving", _FRAMES + r"""
    out = {}
    for label, data in [("half a header", b"\x00\x00"), ("header only", struct.pack(">I", 100)),
                        ("half a body", struct.pack(">I", 1000) + b'{"v": 1, "op": "llm_query"')]:
        s = bridge()
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        try:
            out[label] = outcome(read_reply(s))
        except OSError as exc:
            out[label] = type(exc).__name__
        s.close()
    report(out=out, llm_query=llm_query("hello"))
""", _verify_truncated)


def _verify_oversized(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    cap = ctx.probe["bridge_max_frame"]
    ok = (data["huge header"] in ("error:protocol", "closed", "ConnectionResetError", "BrokenPipeError")
          and data["huge body"] in ("error:protocol", "closed", "ConnectionResetError", "BrokenPipeError")
          and data["client"].startswith("SubCallError") and ctx.handler.largest_prompt < cap
          and data["llm_query"].startswith("echo"))
    return ok, (f"4 GiB header: {data['huge header']}; {cap + 1024} B body: {data['huge body']}; "
                f"client: {data['client']}; the handler never saw it")


attack("bridge_oversized_frames", "bridge", "frames over bridge_max_frame refused before buffering", _FRAMES + r"""
    cap = PROBE["bridge_max_frame"]
    res = {}
    s = bridge()
    s.sendall(struct.pack(">I", 0xFFFFFFFF))
    try:
        res["huge header"] = outcome(read_reply(s))
    except OSError as exc:
        res["huge header"] = type(exc).__name__
    s.close()
    s = bridge()
    body = json.dumps({"v": 1, "id": 1, "op": "llm_query", "prompt": "p" * (cap + 1024)}).encode()
    try:
        s.sendall(struct.pack(">I", len(body)) + body)
        res["huge body"] = outcome(read_reply(s))
    except OSError as exc:
        res["huge body"] = type(exc).__name__
    s.close()
    res["client"] = attempt(llm_query, "q" * (cap + 1024))
    res["llm_query"] = llm_query("hello")
    report(**res)
""", _verify_oversized)


def _verify_flood(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    ok = (data["errors"] == 0 and data["answered"] == data["calls"] and data["batched"] == data["batch_size"]
          and ctx.handler.calls >= data["calls"])
    return ok, (f"{data['calls']} calls from {data['threads']} threads + a batch of {data['batch_size']} "
                f"answered in {data['seconds']:.1f} s" if ok else f"flood: {data}")


attack("bridge_flood", "bridge", "a flood of concurrent calls is served (or refused) cleanly", r"""
    import threading, time
    threads, per_thread = 16, 60
    answered, errors = [], []
    def worker():
        for i in range(per_thread):
            try:
                answered.append(llm_query(f"flood {i}"))
            except Exception as exc:
                errors.append(type(exc).__name__)
    t0 = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    batch = llm_query_batched([f"b{i}" for i in range(2000)])
    report(calls=threads * per_thread, threads=threads, answered=len(answered), errors=len(errors),
           batch_size=2000, batched=len(batch), seconds=time.monotonic() - t0)
""", _verify_flood, timeout=60)


def _verify_budget(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    budget = 5
    ok = (data["ok"] == budget and data["refused"] == data["calls"] - budget and ctx.handler.served == budget
          and "budget" in data["message"])
    return ok, (f"{data['ok']} served, {data['refused']} refused with SubCallError ('{data['message'][:40]}')"
                if ok else f"budget {budget}: {data}; handler served {ctx.handler.served}")


attack("bridge_past_budget", "bridge", "calls past the budget are refused as SubCallError", r"""
    ok = refused_calls = 0
    message = ""
    for i in range(40):
        try:
            llm_query(f"call {i}")
            ok += 1
        except SubCallError as exc:
            refused_calls += 1
            message = str(exc)
    report(calls=40, ok=ok, refused=refused_calls, message=message)
""", _verify_budget, budget=5)


def _measured_before(measure: Callable[[], float | None]) -> Callable[[CheckContext], None]:
    """A ``prepare`` step keeping a host figure (memory, descriptors) to compare with afterwards."""
    def prepare(ctx: CheckContext) -> None:
        ctx.notes[measure.__name__] = measure()
    return prepare


def _growth(ctx: CheckContext, measure: Callable[[], float | None]) -> float | None:
    """How much the figure kept by ``_measured_before(measure)`` grew; None where /proc is absent."""
    before, after = ctx.notes.get(measure.__name__), measure()
    return None if before is None or after is None else after - before


def _verify_rss(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    grew = _growth(ctx, host_rss_mb)
    if grew is None:
        return True, "host memory not measurable here (no /proc)"
    ok = grew < 64
    return ok, (f"{data['connections']} connections x {data['mb_each']} MB of unfinished frames: host grew "
                f"{grew:.0f} MB")


attack("bridge_partial_frames", "bridge", "unfinished frames cannot pile up in host memory (< 64 MB)",
       r"""
    import socket, struct
    size = PROBE["bridge_max_frame"] - 1
    filler = b"x" * (size - 1)
    hoard = []
    for _ in range(24):
        s = socket.socket(socket.AF_UNIX)
        s.connect("/rlm/bridge/llm.sock")
        try:
            s.sendall(struct.pack(">I", size) + filler)   # one byte short of a complete frame
        except OSError:
            break
        hoard.append(s)
    report(connections=len(hoard), mb_each=size >> 20)
""", _verify_rss, prepare=_measured_before(host_rss_mb), cleanup="""
    for s in hoard:
        s.close()
    hoard.clear()
""")


def _verify_fds_host(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    grew = _growth(ctx, host_fd_count)
    if grew is None:
        return True, "host descriptors not measurable here (no /proc)"
    return grew <= 64, f"{data['connections']} idle connections held: host holds {grew} more descriptors"


attack("bridge_connection_hoard", "bridge", "idle connections cannot exhaust host descriptors (<= 64 held)",
       r"""
    import socket
    hoard, stopped = [], None
    try:
        for _ in range(PROBE["nofile"]):
            s = socket.socket(socket.AF_UNIX)
            s.connect("/rlm/bridge/llm.sock")
            hoard.append(s)
    except OSError as exc:
        stopped = type(exc).__name__
    report(connections=len(hoard), stopped=stopped)
""", _verify_fds_host, prepare=_measured_before(host_fd_count), cleanup="""
    for s in hoard:
        s.close()
    hoard.clear()
""")


def _verify_ctl(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    accepted = [o for o in data["tries"] if o not in ("closed", "BrokenPipeError", "ConnectionResetError")]
    if accepted:
        return False, f"CONTROL SOCKET ACCEPTED A SECOND CLIENT: {accepted[:3]}"
    hang = ctx.run("while True:\n    pass", timeout=1)
    after = ctx.run("print(1+1)")
    ok = hang.timed_out and after.stdout.strip() == "2" and not after.state_lost and not after.notice
    return ok, (f"{len(data['tries'])} connections closed at once, forged events ignored; a hang is still "
                f"interrupted ({hang.restarted or 'interrupt'})" if ok else
                f"after forged events: hang timed_out={hang.timed_out}, next cell {after.output[:60]!r} "
                f"notice={after.notice}")


attack("bridge_ctl_second_client", "bridge", "ctl.sock refuses a second client; the host keeps control",
       _FRAMES + r"""
    tries = []
    for i in range(20):
        try:
            s = bridge("/rlm/bridge/ctl.sock")
            s.sendall(frame({"v": 1, "event": "kernel_exit", "code": -9}) + frame({"v": 1, "event": "hello"})
                      + frame({"v": 1, "event": "kernel_ready", "generation": 99}))
            data = s.recv(100)
            tries.append("closed" if data == b"" else "got " + repr(data[:30]))
            s.close()
        except OSError as exc:
            tries.append(type(exc).__name__)
    report(tries=tries)
""", _verify_ctl)


def _verify_frozen_supervisor(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    if ctx.probe.get("gvisor") and execution.timed_out and execution.restarted == "container":
        return True, ("gVisor's kernel (20221219) lets SIGSTOP reach pid 1 (Linux shields init): the host timed the "
                      f"cell out after {execution.duration_s:.1f} s and recreated the container")
    ok = execution.timed_out and not execution.state_lost
    return ok, (f"SIGSTOP to pid 1 ignored; the host interrupted the cell after {execution.duration_s:.1f} s, "
                "variables kept" if ok else f"timed_out={execution.timed_out} restarted={execution.restarted}")


attack("bridge_frozen_supervisor", "bridge", "a cell cannot freeze the supervisor; the host still interrupts", r"""
    import os, signal
    os.kill(os.getppid(), signal.SIGSTOP)   # the supervisor no longer obeys interrupt/restart
    while True:
        pass
""", _verify_frozen_supervisor, timeout=1, settings={"start_timeout_s": 5.0}, fast=False)


def _verify_escape_prompt(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    sent = data["prompt"]
    got = [p for p in ctx.handler.prompts if "pwned" in p]
    if not got:
        return False, "the handler never received the prompt"
    clean = sanitize_for_terminal(got[-1])
    ok = got[-1] == sent and not _CONTROL_CHARS.search(clean) and "tell me" in clean
    return ok, (f"handler got the {len(sent)} characters unchanged (data); sanitised for the terminal: {clean!r}"
                if ok else f"received {got[-1]!r}, sanitised {clean!r}")


attack("bridge_escape_prompt", "bridge", "escape sequences reach the handler as data; sanitised to print",
       r"""
    E = "\x1b"
    prompt = (E + "]0;pwned title\x07" + E + "[2J" + E + "[31mtell me\r" + E + "[1A\x9b31m" + E + "P+q\x9c"
              + E + "]52;c;cHduZWQ=\x07" + "\x08\x08\x00 everything")
    llm_query(prompt)
    report(prompt=prompt)
""", _verify_escape_prompt)
