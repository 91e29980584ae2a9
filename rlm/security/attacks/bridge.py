"""Bridge attacks: malformed, truncated, oversized and unfinished frames, floods, budget, ctl.sock, escapes."""

from __future__ import annotations

import json
from collections.abc import Callable

from rlm.core.parsing import sanitize_for_terminal
from rlm.sandbox.execution import Execution
from rlm.security.budget import HostBudget
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
    return ok, (f"{data['connections']} connections x {data['kb_each']} kB of unfinished frames: host grew "
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
    report(connections=len(hoard), kb_each=size >> 10)
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


# --------------------------------------------------------------------------- round 2: cost, names, children, waiting
def _host_cpu_s() -> float:
    """CPU seconds this (host) process has used so far, all threads."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


BIG_FRAME_CPU_BUDGET_S = 1.5  # host CPU-seconds the 10 s of big frames may cost (8 before the frame cap)


def _verify_big_frames(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    spent = _host_cpu_s() - ctx.notes["cpu_before"]
    ok = (spent < BIG_FRAME_CPU_BUDGET_S and data["llm_query"].startswith("echo")
          and set(data["over"]) <= {"error:protocol", "closed", "ConnectionResetError", "BrokenPipeError"}
          and ctx.handler.largest_prompt < 16)
    return ok, (f"{data['sent_mb']} MB in {data['over_n']} frames of 8 MiB and {data['under_n']} of just under "
                f"the cap over {data['seconds']:.0f} s cost the host {spent:.2f} CPU-s (budget "
                f"{BIG_FRAME_CPU_BUDGET_S} s); over the cap: {sorted(set(data['over']))}")


def _cpu_before(ctx: CheckContext) -> None:
    ctx.notes["cpu_before"] = _host_cpu_s()


attack("bridge_big_frames_cpu", "bridge",
       f"10 s of 8 MiB frames cost the host < {BIG_FRAME_CPU_BUDGET_S} CPU-s (cap from the length, rate limit)",
       _FRAMES + r"""
    import threading, time
    cap = PROBE["bridge_max_frame"]
    big = json.dumps({"v": 1, "id": 1, "op": "llm_query", "prompt": "x", "pad": "p" * (8 << 20)}).encode()
    near = json.dumps({"v": 1, "id": 2, "op": "llm_query", "prompt": "x", "pad": "q" * (cap - 200)}).encode()
    over, counts, sent = [], {"over": 0, "under": 0}, [0]
    stop = time.monotonic() + 10
    def flood(kind, body):
        while time.monotonic() < stop:
            try:
                s = bridge()
                s.sendall(struct.pack(">I", len(body)) + body)
                reply = outcome(read_reply(s))
                s.close()
            except OSError as exc:
                reply = type(exc).__name__
            counts[kind] += 1
            sent[0] += len(body)
            if kind == "over" and len(over) < 50:
                over.append(reply)
    pool = [threading.Thread(target=flood, args=("over", big)) for _ in range(3)]
    pool += [threading.Thread(target=flood, args=("under", near)) for _ in range(3)]
    t0 = time.monotonic()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    report(over=over, over_n=counts["over"], under_n=counts["under"], sent_mb=sent[0] >> 20,
           seconds=time.monotonic() - t0, llm_query=llm_query("hello"))
""", _verify_big_frames, prepare=_cpu_before, timeout=60, fast=False,
       host_budget=HostBudget(cpu_s=BIG_FRAME_CPU_BUDGET_S, rss_mb=100, seconds=40))


FORGED_CELL_S = 5.0


def _verify_forged_waiting(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    grace = ctx.session.settings.interrupt_grace_s
    limit = FORGED_CELL_S + grace + 1.5
    ok = execution.timed_out and execution.duration_s <= limit
    return ok, (f"a {FORGED_CELL_S:g} s cell with a thread sending forged waiting frames timed out after "
                f"{execution.duration_s:.1f} s (limit {limit:.1f} s; 37 s before the host decided waiting)"
                if execution.timed_out else f"the cell did not time out: {execution.output[:200]!r}")


attack("bridge_forged_waiting", "bridge", "forged \"waiting\": true frames do not extend a cell's timeout",
       _FRAMES + r"""
    import threading
    _rlm_forge_stop = threading.Event()
    def forge():
        n = 0
        while not _rlm_forge_stop.is_set():
            try:
                s = bridge()
                for _ in range(20):
                    n += 1
                    s.sendall(frame({"v": 1, "id": n, "op": "llm_query", "prompt": "w", "waiting": True}))
                    s.sendall(frame({"v": 1, "id": -n, "op": "no_such_op", "waiting": True}))
                for _ in range(40):
                    read_reply(s)
                s.close()
            except OSError:
                pass
    for _ in range(4):
        threading.Thread(target=forge, daemon=True).start()
    while True:
        pass
""", _verify_forged_waiting, timeout=FORGED_CELL_S, cleanup="_rlm_forge_stop.set()\n", fresh=True,
       host_budget=HostBudget(seconds=20))


# The checks below serve the cell with rlm's own sub-call handler (not the check handler), so that
# what is checked is what a run does; ``_own_handler`` puts it in place and the verify puts the
# check handler back.
def _own_handler(make: Callable[[CheckContext], object]) -> Callable[[CheckContext], None]:
    def prepare(ctx: CheckContext) -> None:
        handler = make(ctx)
        ctx.notes["handler"] = handler
        ctx.session.set_handler(handler)  # type: ignore[arg-type]
    return prepare


def _restoring(verify: Callable[[Execution, CheckContext], tuple[bool, str]]):
    def wrapped(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
        try:
            return verify(execution, ctx)
        finally:
            ctx.session.set_handler(ctx.handler)
            for thing in (ctx.notes.get("handler"), ctx.notes.get("client"), ctx.notes.get("server")):
                close = getattr(thing, "close", None)
                if callable(close):
                    close()
    return wrapped


class _LogBytes:
    """Counts the bytes the host's loggers and the run's sub-call events (trace, progress) received."""

    def __init__(self) -> None:
        import logging

        self.bytes = 0
        self.events: list[dict] = []
        self.handler = logging.Handler()
        self.handler.emit = self._emit  # type: ignore[method-assign]
        logging.getLogger("rlm").addHandler(self.handler)

    def _emit(self, record) -> None:
        self.bytes += len(str(record.getMessage()))

    def on_call(self, event: dict) -> None:
        self.events.append(event)
        self.bytes += len(json.dumps(event))

    def close(self) -> None:
        import logging

        logging.getLogger("rlm").removeHandler(self.handler)


def _names_handler(ctx: CheckContext) -> object:
    from rlm.core.subcalls import SubCallHandler
    from rlm.llm.scripted import ScriptedClient

    seen = ctx.notes["seen"] = _LogBytes()
    client = ScriptedClient(lambda messages, model: f"echo:{model}")
    ctx.notes["client"] = client
    return SubCallHandler(client, sub_model="sub", root_model="root", temperature=0.0, enabled=True, max_calls=100,
                          max_chars=500_000, concurrency=4, on_call=seen.on_call, deadline_s=30)


def _verify_names(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    seen: _LogBytes = ctx.notes["seen"]
    seen.close()
    if data is None:
        return _missing(execution)
    sent_models = {call[0] for call in ctx.notes["client"].calls}
    longest = max(len(m) for m in data["messages"])
    ok = (data["errors"] == data["tries"] and sent_models <= {"sub"} and seen.bytes < 64 * 1024
          and longest < 400 and not _CONTROL_CHARS.search("".join(data["messages"])) and data["plain"] == "echo:sub")
    return ok, (f"{data['tries']} calls with model names of 7 MB, 100 kB and escapes: {data['errors']} refused "
                f"(longest message {longest} chars), models sent {sorted(sent_models)}, host logs and sub-call "
                f"events {seen.bytes} bytes")


attack("bridge_model_names", "bridge", "llm_query(model=...) takes only the run's models; long names cost nothing",
       _FRAMES + r"""
    names = ["m" * 7_000_000] * 10 + ["n" * 100_000] * 5 + ["gpt-4o\x1b]52;c;cHduZWQ=\x07\x1b[2J", "other-model"]
    errors, messages = 0, []
    for name in names:
        try:
            llm_query("hi", model=name)
        except SubCallError as exc:
            errors += 1
            messages.append(str(exc))
        try:
            llm_query_batched(["a"], model=name)
        except SubCallError as exc:
            errors += 1
            messages.append(str(exc))
    s = bridge()
    body = json.dumps({"v": 1, "id": 1, "op": "llm_query", "prompt": "x", "model": "z" * 7_000_000}).encode()
    try:
        s.sendall(struct.pack(">I", len(body)) + body)
        raw = outcome(read_reply(s))
    except OSError as exc:
        raw = type(exc).__name__
    s.close()
    report(tries=2 * len(names), errors=errors, messages=messages, raw=raw, plain=llm_query("hi"))
""", _restoring(_verify_names), prepare=_own_handler(_names_handler), timeout=60,
       host_budget=HostBudget(rss_mb=64, cpu_s=5))


def _redaction_handler(ctx: CheckContext) -> object:
    from rlm.core.subcalls import SubCallHandler
    from rlm.llm.base import ModelSettings
    from rlm.llm.fake_server import FakeModelServer
    from rlm.llm.openai_client import OpenAICompatibleClient

    server = ctx.notes["server"] = FakeModelServer(root_model="host-secret-root", models=["host-secret-sub"])
    client = ctx.notes["client"] = OpenAICompatibleClient(ModelSettings(base_url=server.url, root_model="root",
                                                                        max_retries=0, timeout_s=10))
    ctx.notes["port"] = str(server.port)
    return SubCallHandler(client, sub_model="not-offered", root_model="root", temperature=0.0, enabled=True,
                          max_calls=100, max_chars=500_000, concurrency=4, deadline_s=30)


def _verify_redaction(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    shown = " ".join(data["messages"])
    leaks = [w for w in ("127.0.0.1", ctx.notes["port"], "http://", "host-secret") if w in shown]
    ok = not leaks and len(data["messages"]) == 2 and all(m for m in data["messages"])
    return ok, (f"sub-model errors shown to the model: {_short(shown)}" if ok else f"LEAKED {leaks}: {shown[:300]}")


def _short(text: str) -> str:
    text = sanitize_for_terminal(text)
    return text if len(text) <= 120 else text[:117] + "..."


attack("bridge_error_redaction", "bridge", "sub-model errors name no host URL, port or model list",
       r"""
    messages = []
    try:
        llm_query("hi")
    except SubCallError as exc:
        messages.append(str(exc))
    messages.append(llm_query_batched(["a"])[0])
    report(messages=messages)
""", _restoring(_verify_redaction), prepare=_own_handler(_redaction_handler), timeout=60)


def _fanout_handler(ctx: CheckContext) -> object:
    import threading
    import uuid

    from rlm.core.subcalls import SubCallHandler
    from rlm.llm.scripted import ScriptedClient
    from rlm.sandbox.engine import Engine
    from rlm.sandbox.session import SandboxSession

    tag = uuid.uuid4().hex[:8]
    settings = ctx.session.settings.with_(extra_labels=(("rlm.check-fanout", tag),))
    engine = ctx.notes["engine"] = Engine()
    lock = threading.Lock()
    state = ctx.notes["fanout"] = {"open": 0, "peak": 0, "docker_peak": 0, "ran": 0}

    def child(prompt: str, context: str | None) -> tuple[str, dict]:
        with lock:  # from before its container starts until after it is removed
            state["open"] += 1
            state["peak"] = max(state["peak"], state["open"])
        try:
            with SandboxSession(settings=settings, engine=engine) as session:
                running = len(engine.list_labelled(f"rlm.check-fanout={tag}"))
                with lock:
                    state["docker_peak"] = max(state["docker_peak"], running)
                out = session.execute("print(6 * 7)", timeout=30).stdout.strip()
        finally:
            with lock:
                state["open"] -= 1
                state["ran"] += 1
        return out, {}

    client = ctx.notes["client"] = ScriptedClient(lambda messages, model: "unused")
    return SubCallHandler(client, sub_model="sub", temperature=0.0, enabled=True, max_calls=100, max_chars=10_000,
                          concurrency=4, child=child, deadline_s=300)


def _verify_fanout(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    state = ctx.notes["fanout"]
    ctx.notes["engine"].close()
    if data is None:
        return _missing(execution)
    ok = state["peak"] <= 2 and state["docker_peak"] <= 2 and data["answers"] == ["42"] * 10
    return ok, (f"ten threads calling rlm_query: {state['ran']} children, at most {state['peak']} at once "
                f"({state['docker_peak']} containers seen by Docker at once; 11 before the limit), "
                f"in {data['seconds']:.1f} s")


attack("bridge_rlm_query_fanout", "bridge", "rlm_query children: at most 2 containers at once per run", r"""
    import threading, time
    answers, t0 = [], time.monotonic()
    def call():
        try:
            answers.append(rlm_query("q"))
        except SubCallError as exc:
            answers.append("refused: " + str(exc))
    pool = [threading.Thread(target=call) for _ in range(10)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    report(answers=sorted(answers), seconds=time.monotonic() - t0)
""", _restoring(_verify_fanout), prepare=_own_handler(_fanout_handler), timeout=240, fast=False,
       host_budget=HostBudget(seconds=180))


def _hanging_handler(ctx: CheckContext) -> object:
    import asyncio

    from rlm.core.subcalls import SubCallHandler
    from rlm.llm.base import ModelClient

    class Hanging(ModelClient):
        """A model server that never answers (until the request is cancelled)."""

        def complete(self, messages, *, model, temperature=None, max_tokens=None):  # type: ignore[override]
            raise NotImplementedError

        async def acomplete(self, messages, *, model, temperature=None, max_tokens=None):  # type: ignore[override]
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

        def list_models(self) -> list[str]:
            return ["sub"]

    return SubCallHandler(Hanging(), sub_model="sub", temperature=0.0, enabled=True, max_calls=100,
                          max_chars=10_000, concurrency=4, deadline_s=FORGED_CELL_S)


def _verify_computing_while_waiting(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    from rlm.sandbox.cgroup import ContainerCPU

    grace = ctx.session.settings.interrupt_grace_s
    limit = FORGED_CELL_S + grace + 1.5
    readable = ContainerCPU(ctx.session.container_id).seconds() is not None
    ok = execution.timed_out and (execution.duration_s <= limit or not readable)
    how = ("the container's CPU time, read from its cgroup" if readable else
           "the sub-calls' deadlines only (this host's cgroup layout is not readable)")
    return ok, (f"a {FORGED_CELL_S:g} s cell computing while a thread keeps hung sub-calls in flight timed out "
                f"after {execution.duration_s:.1f} s (limit {limit:.1f} s; bounded by {how})")


attack("bridge_computing_while_waiting", "bridge",
       "a cell computing while its thread waits on a hung sub-call still times out", r"""
    import threading
    def ask():
        while True:
            try:
                llm_query("never answered")
            except Exception:
                pass
    threading.Thread(target=ask, daemon=True).start()
    while True:
        pass
""", _restoring(_verify_computing_while_waiting), prepare=_own_handler(_hanging_handler),
       timeout=FORGED_CELL_S, fresh=True, host_budget=HostBudget(seconds=20))
