"""What the REPL offers model-written code, installed into the kernel before any cell runs.

Runs inside the sandbox only (stdlib + IPython/ipykernel).  Defines in the user
namespace: ``context`` (loaded lazily from the read-only mount on the first cell),
``llm_query``, ``llm_query_batched``, ``rlm_query``, ``grep``, ``search``, ``map_chunks``, ``FINAL``,
``FINAL_VAR`` and ``SHOW_VARS``.  Per-cell state (a FINAL answer, a restored ``context``, output dropped
by the in-kernel cap) is published after each cell as one display message with the
mimetype ``STATE_MIME``, which the host takes out of the output.
"""

from __future__ import annotations

import collections
import gc
import itertools
import json
import math
import os
import re
import resource
import socket
import sys
import threading
from collections import deque

import helpers
import protocol
from protocol import STATE_MIME, ContextFormat, Env, Op, State


class SubCallError(RuntimeError):
    """A sub-model call was refused (disabled, over budget) or failed on the host."""


# --------------------------------------------------------------------------- context
def _read_text(path: str) -> str:
    with open(path, "rb") as fh:
        data = fh.read()
    return data.decode("utf-8", errors="replace")


ASCII_DIRECT_MIN = protocol.ASCII_DIRECT_MIN  # files at least this large are read straight into their str
_CHUNK = 16 * 1024 * 1024


def _read_ascii_direct(path: str) -> str | None:
    """Read a pure-ASCII file straight into a new ``str``: about once its size in memory, not twice
    (bytes + decoded text).  None when the file is not pure ASCII (the caller decodes instead).

    The str is made with ``PyUnicode_New`` (ASCII kind, one byte per character, not yet hashed or
    shared) and filled chunk by chunk, each chunk checked to be ASCII before it is copied in."""
    import ctypes

    size = os.path.getsize(path)
    new = ctypes.pythonapi.PyUnicode_New
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_ssize_t, ctypes.c_uint32]
    text = new(size, 127)
    data = id(text) + sys.getsizeof("") - 1  # a compact ASCII str's characters follow its header
    chunk = bytearray(_CHUNK)
    view = memoryview(chunk)
    done = 0
    with open(path, "rb", buffering=0) as fh:
        while done < size:
            n = fh.readinto(view[: min(_CHUNK, size - done)])
            if not n:
                return None  # the file shrank while being read
            ascii_only = chunk.isascii() if n == _CHUNK else bytes(view[:n]).isascii()
            if not ascii_only:
                return None
            ctypes.memmove(data + done, ctypes.addressof(ctypes.c_char.from_buffer(chunk)), n)
            done += n
    return text


def _read_big_text(path: str) -> str:
    if os.path.getsize(path) >= ASCII_DIRECT_MIN:
        text = _read_ascii_direct(path)
        if text is not None:
            return text
    return _read_text(path)


def load_context(path: str, fmt: str):
    """Read the context from its read-only mount: str, parsed JSON, JSONL list or a folder's documents."""
    if fmt == ContextFormat.DIR:   # each document a str with .path, relative to the folder
        return helpers.load_folder(path, _read_text)
    if fmt == ContextFormat.JSON:
        return json.loads(_read_text(path))
    if fmt == ContextFormat.JSONL:
        return [json.loads(line) for line in _read_text(path).splitlines() if line.strip()]
    return _read_big_text(path)


def _size(path: str) -> int:
    if not os.path.isdir(path):
        return os.path.getsize(path)
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def _load_failure(path: str, fmt: str, exc: BaseException) -> str:
    """What went wrong loading the context, with the figures the host reports."""
    mib = 1024 * 1024
    try:
        size = f"{_size(path) / mib:.1f} MB"
    except OSError:
        size = "unknown size"
    if isinstance(exc, MemoryError):
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        room = "no limit" if limit == resource.RLIM_INFINITY else f"{limit / mib:.0f} MB"
        why = " (a text that is not pure ASCII takes about twice its size to load)" \
            if fmt == ContextFormat.TEXT else ""
        return (f"the context ({size}, read as {fmt}) does not fit in the sandbox's memory: loading it "
                f"ran out of memory (the kernel's address-space limit is {room}){why}")
    return f"the context ({size}, read as {fmt}) could not be loaded: {exc.__class__.__name__}: {exc}"[:2000]


def _describe(ctx, preview_chars: int = 500) -> dict:
    """A context's type, size, document count and a preview (for the system prompt)."""
    if isinstance(ctx, str):
        return {"kind": "str", "total_chars": len(ctx), "n_documents": 1, "preview": ctx[:preview_chars]}
    if isinstance(ctx, (list, tuple)):
        sizes = [len(d) if isinstance(d, str) else len(json.dumps(d, default=str)) for d in ctx]
        first = ctx[0] if ctx else ""
        preview = first if isinstance(first, str) else json.dumps(first, default=str)
        return {"kind": type(ctx).__name__, "total_chars": sum(sizes), "n_documents": len(ctx),
                "preview": preview[:preview_chars]}
    if ctx is None:
        return {"kind": "none", "total_chars": 0, "n_documents": 0, "preview": ""}
    text = json.dumps(ctx, default=str)
    return {"kind": type(ctx).__name__, "total_chars": len(text),
            "n_documents": len(ctx) if isinstance(ctx, dict) else 1, "preview": text[:preview_chars]}


class Others:
    """The later contexts (``context_1``, ...): listed by the host in its manifest (read-only here),
    loaded before the cell that first follows their listing, restored when a cell overwrites them.
    A kernel that restarts finds them all again in the manifest."""

    def __init__(self, shell) -> None:
        self.shell = shell
        self.listed: dict = {}    # name -> (path, format), in order
        self.values: dict = {}    # name -> the loaded value
        self.errors: dict = {}    # name -> why it could not be loaded
        self.tried: dict = {}     # name -> the (path, format) it was loaded from, or tried
        self._seen = None

    def sync(self) -> None:
        """Read the manifest (a few hundred bytes, there only once a later context came) before each cell."""
        try:
            with open(protocol.CONTEXTS_MANIFEST, "rb") as fh:
                seen = fh.read(1 << 20)
        except OSError:
            seen = b""
        if seen == self._seen:
            return
        try:
            entries = json.loads(seen) if seen else []
        except ValueError:
            return   # read again next cell
        self._seen = seen
        self.listed = {e["name"]: (e["path"], e["format"]) for e in entries}
        for name in [n for n in self.tried if self.listed.get(n) != self.tried[n]]:  # dropped, or listed anew
            del self.tried[name]
            self.errors.pop(name, None)
            if name in self.values and self.shell.user_ns.get(name) is self.values.pop(name):
                self.shell.user_ns.pop(name, None)

    def load(self) -> None:
        for name, (path, fmt) in self.listed.items():
            if name in self.tried:
                continue
            self.tried[name] = (path, fmt)
            try:
                self.values[name] = load_context(path, fmt)
            except Exception as exc:  # noqa: BLE001 - reported by check_added / context_info
                self.errors[name] = _load_failure(path, fmt, exc)
                gc.collect()
                continue
            self.shell.user_ns[name] = self.values[name]

    def restore(self) -> bool:
        restored = False
        for name, value in self.values.items():
            if self.shell.user_ns.get(name) is not value:
                self.shell.user_ns[name] = value
                restored = True
        return restored

    def check_added(self, name) -> None:
        """The host's check that ``name`` was loaded (it was, by this cell's start, or it failed)."""
        if name in self.errors:
            raise RuntimeError(self.errors[name])
        if name not in self.values:
            raise RuntimeError(f"{name} is not listed in the sandbox's manifest")

    def described(self) -> list:
        out = []
        for name in self.listed:
            if name in self.values:
                info = _describe(self.values[name], 0)
                info.pop("preview", None)
                out.append(dict(info, name=name))
            else:
                out.append({"name": name, "kind": "not loaded", "total_chars": 0, "n_documents": 0})
        return out


# --------------------------------------------------------------------------- bridge
class Bridge:
    """Client side of the llm_query bridge: one short connection per call (thread-safe)."""

    def __init__(self, path: str, max_frame: int) -> None:
        self.path = path
        self.max_frame = max_frame
        self._ids = iter(range(1, 1 << 62))
        self._lock = threading.Lock()

    def call(self, message: dict) -> dict:
        # The cell's own thread waits for the answer: that is model time, not code time.
        waiting = threading.current_thread() is threading.main_thread()
        with self._lock:
            message = dict(message, id=next(self._ids), **{protocol.WAITING: waiting})
        frame = protocol.encode(message)
        if len(frame) > self.max_frame:
            raise SubCallError(f"request of {len(frame)} bytes exceeds the bridge's cap of {self.max_frame} bytes")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(self.path)
            except OSError as exc:
                raise SubCallError(f"the llm_query bridge is not available ({exc.strerror})") from None
            sock.sendall(frame)
            try:
                reply = protocol.read_frame(sock, protocol.REPLY_MAX_FRAME)
            except protocol.ProtocolError as exc:
                raise SubCallError(f"bad reply from the host: {exc}") from None
        if not reply.get("ok"):
            raise SubCallError(reply.get("error") or "sub-call failed")
        return reply


class Repl:
    """The functions and per-cell bookkeeping of one kernel."""

    def __init__(self, shell, *, context_path: str | None, context_format: str, final_limit: int,
                 output_limit: int, bridge: Bridge) -> None:
        self.shell = shell
        self.context_path = context_path
        self.context_format = context_format
        self.final_limit = final_limit
        self.bridge = bridge
        self.original_context = None
        self.context_loaded = False
        self.context_error: str | None = None
        self.final: str | None = None
        self.context_restored = False
        self.output_guard = OutputGuard(output_limit)
        self.others = Others(shell)

    # -- names offered to the model ------------------------------------------------------
    def namespace(self) -> dict:
        # keywords, not quoted keys: these are Python names (the bridge ops are spelled in protocol.Op);
        # the modules are there already because small models use them and forget the import
        return dict(  # noqa: C408
            re=re, json=json, math=math, itertools=itertools, collections=collections,
            llm_query=self.llm_query, llm_query_batched=self.llm_query_batched, rlm_query=self.rlm_query,
            grep=self.grep, search=self.search, map_chunks=self.map_chunks,
            FINAL=self.FINAL, FINAL_VAR=self.FINAL_VAR, SHOW_VARS=self.SHOW_VARS, SubCallError=SubCallError,
            _rlm_context_info=self.context_info, _rlm_attach_context=self.attach_context,
            _rlm_add_context=self.others.check_added)

    def llm_query(self, prompt, model=None, *, text=None) -> str:
        """Ask a sub-model one question; returns its answer as text.  ``text``, as grep and map_chunks
        take it (small models pass it so): the text the question is about, put after the prompt."""
        prompt = str(prompt) if text is None else f"{prompt}\n\nText:\n{text}"
        return self.bridge.call({"op": Op.LLM_QUERY, "prompt": prompt, "model": model})["text"]

    def llm_query_batched(self, prompts, model=None) -> list:
        """Ask many questions concurrently; answers come back in order.

        A failed slot holds an error string starting with "Error:" and does not fail the others.
        """
        prompts = [str(p) for p in prompts]
        results: list = []
        for batch in self._split(prompts):
            results.extend(self.bridge.call({"op": Op.LLM_QUERY_BATCHED, "prompts": batch, "model": model})["texts"])
        return results

    def rlm_query(self, prompt, context=None) -> str:
        """Run a child RLM (its own sandbox) on ``context`` (default: no extra context)."""
        payload = None if context is None else (context if isinstance(context, str) else json.dumps(context))
        return self.bridge.call({"op": Op.RLM_QUERY, "prompt": str(prompt), "context": payload})["text"]

    def grep(self, pattern, text=None, width=helpers.DEFAULT_WIDTH) -> list:
        """Every line of ``text`` (default: ``context``) matching the regex ``pattern`` (case ignored),
        as strings with ``.offset`` (for a list of documents, the document's index).  When a pattern
        of several words matches nothing, a line on stdout says what each word alone matches."""
        source = self._text(text)
        hits = helpers.grep(source, pattern, width=width)
        if not hits:
            hint = helpers.no_match_hint(source, pattern)
            if hint:
                print(hint)
        return hits

    def search(self, query, k=5, text=None) -> list:
        """The ``k`` passages of ``text`` (default: ``context``) that rank best by BM25 for ``query``."""
        return helpers.search(self._text(text), query, k)

    def map_chunks(self, instruction, text=None, chunk_chars=None) -> list:
        """Ask the sub-model ``instruction`` about every piece of ``text`` (default: ``context``),
        all at once; the answers, in order.  Pieces fit the sub-model's window unless ``chunk_chars`` says."""
        if chunk_chars is None:
            chunk_chars = self.chunk_chars(len(str(instruction)))
        return helpers.map_chunks(self.llm_query_batched, self._text(text), str(instruction), chunk_chars)

    def chunk_chars(self, overhead: int) -> int:
        """Characters per map_chunks piece that fit the sub-model's window (the host says), less ``overhead``."""
        try:
            size = self.bridge.call({"op": Op.WINDOW, "model": None}).get("chunk_chars")
        except SubCallError:
            size = None
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            return protocol.MAP_CHUNK_CHARS
        return max(500, size - overhead - 100)

    def _text(self, text):
        """``text``, or the original context when none is given."""
        if text is not None:
            return text
        return self.original_context if self.original_context is not None else ""

    def FINAL(self, answer) -> None:
        """End the run with ``answer`` once this cell finishes."""
        text = answer if isinstance(answer, str) else repr(answer) if not isinstance(answer, (int, float)) else str(answer)
        if len(text) > self.final_limit:
            cut = len(text) - self.final_limit
            text = text[: self.final_limit] + f"\n[... answer truncated: {cut} characters dropped ...]"
        self.final = text

    def FINAL_VAR(self, name) -> None:
        """End the run with the value of the variable ``name`` (a name string, or the value itself)."""
        if isinstance(name, str):
            key = name.strip().strip("'\"")
            if key not in self.shell.user_ns:
                raise NameError(f"FINAL_VAR: no variable named {key!r}; define it first, then call FINAL_VAR({key!r})")
            value = self.shell.user_ns[key]
        else:
            value = name
        self.FINAL(value if isinstance(value, str) else str(value))

    def SHOW_VARS(self) -> None:
        """Print the variables defined so far, with their types and sizes."""
        hidden = set(self.namespace()) | {"In", "Out", "get_ipython", "exit", "quit", "open"}
        rows = []
        for key, value in sorted(self.shell.user_ns.items()):
            if key.startswith("_") or key in hidden:
                continue
            size = ""
            try:
                size = f" len={len(value)}"
            except TypeError:
                pass
            rows.append(f"{key}: {type(value).__name__}{size}")
        print("\n".join(rows) if rows else "(no variables)")

    def attach_context(self, path: str, fmt: str) -> None:
        """Use the file placed at ``path`` (a warm session gets its context after start)."""
        self.context_path, self.context_format = path, fmt
        self.context_loaded = False
        self.context_error = None
        self.original_context = None
        self.shell.user_ns.pop("context", None)  # loaded by the next cell, lazily

    def context_info(self, preview_chars: int = 500) -> None:
        """Publish the context's type, size, document count and a preview (for the system prompt)."""
        info = _describe(self.original_context, preview_chars)
        info["others"] = self.others.described()
        from IPython.display import publish_display_data

        state = {State.CONTEXT_INFO: info}
        if self.context_error is not None:
            state[State.CONTEXT_ERROR] = self.context_error
        publish_display_data({STATE_MIME: state})

    def _split(self, prompts: list) -> list:
        """Split a batch so every request frame stays under the bridge cap."""
        budget = max(1024, self.bridge.max_frame // 2)
        batches, current, size = [], [], 0
        for prompt in prompts:
            cost = len(prompt.encode("utf-8")) + 16
            if current and size + cost > budget:
                batches.append(current)
                current, size = [], 0
            current.append(prompt)
            size += cost
        if current or not batches:
            batches.append(current)
        return batches

    # -- per-cell hooks ------------------------------------------------------------------
    def pre_run_cell(self, info=None) -> None:
        self.final = None
        self.context_restored = False
        self.output_guard.reset()
        self.others.sync()
        self.others.load()
        if self.context_path and not self.context_loaded:
            self.context_loaded = True  # tried once: a failure is reported, not retried
            try:
                self.original_context = load_context(self.context_path, self.context_format)
            except Exception as exc:  # noqa: BLE001 - MemoryError, a bad JSON file, an unreadable file...
                self.original_context = None
                self.context_error = _load_failure(self.context_path, self.context_format, exc)
            if self.context_error is not None:
                gc.collect()  # what the failed load held (the traceback is gone by now)
                return
            self.shell.user_ns["context"] = self.original_context

    def post_run_cell(self, result=None) -> None:
        if self.context_loaded and self.shell.user_ns.get("context") is not self.original_context:
            self.shell.user_ns["context"] = self.original_context
            self.context_restored = True
        if self.others.restore():
            self.context_restored = True
        self.output_guard.finish()
        state: dict = {}
        if self.final is not None:
            state[State.FINAL] = self.final
        if self.context_restored:
            state[State.CONTEXT_RESTORED] = True
        if self.output_guard.dropped:
            state[State.OUTPUT_DROPPED] = self.output_guard.dropped
        if self.context_error is not None:
            state[State.CONTEXT_ERROR] = self.context_error
        if state:
            from IPython.display import publish_display_data

            publish_display_data({STATE_MIME: state})


class _StreamState:
    def __init__(self) -> None:
        self.sent = 0
        self.dropped = 0
        self.tail: deque = deque()
        self.tail_size = 0


class OutputGuard:
    """Caps what a cell writes to stdout and stderr, per stream: the head passes, a tail is kept.

    It wraps each stream's ``write`` (so it applies in whatever thread writes, and whatever
    thread later flushes).  Past the head limit, text goes into a bounded tail; at the end
    of the cell the tail is written to its own stream after a marker saying how much was
    dropped.  The limits sit a little under the host's cap so that the marker survives.
    """

    def __init__(self, limit: int) -> None:
        self.head_limit = max(1, limit // 2 - 512)
        self.tail_limit = max(1, limit // 2 - 512)
        self._lock = threading.Lock()
        self._writes: dict = {}
        self._streams: dict = {}
        self.reset()

    def wrap(self, name: str, stream) -> None:
        original = stream.write
        self._writes[name] = original
        self._streams[name] = stream

        def write(text):
            if not isinstance(text, str):
                return original(text)  # let the stream raise its own TypeError
            passed = self._admit(name, text)
            if passed:
                original(passed)
            return len(text)

        stream.write = write

    def reset(self) -> None:
        with self._lock:
            self.state = {name: _StreamState() for name in ("stdout", "stderr")}

    @property
    def dropped(self) -> int:
        return sum(st.dropped for st in self.state.values())

    def _admit(self, name: str, text: str) -> str:
        with self._lock:
            st = self.state[name]
            room = self.head_limit - st.sent
            if room >= len(text):
                st.sent += len(text)
                return text
            head, rest = text[: max(room, 0)], text[max(room, 0):]
            st.sent += len(head)
            if len(rest) >= self.tail_limit:
                st.dropped += st.tail_size + len(rest) - self.tail_limit
                st.tail = deque([rest[-self.tail_limit:]])
                st.tail_size = self.tail_limit
            else:
                st.tail.append(rest)
                st.tail_size += len(rest)
                while st.tail_size - len(st.tail[0]) >= self.tail_limit:
                    piece = st.tail.popleft()
                    st.dropped += len(piece)
                    st.tail_size -= len(piece)
            return head

    def finish(self) -> None:
        """Release each stream's tail (after a marker) at the end of the cell."""
        for name, st in self.state.items():
            with self._lock:
                if not st.tail:
                    continue
                tail = "".join(st.tail)
                if len(tail) > self.tail_limit:
                    st.dropped += len(tail) - self.tail_limit
                    tail = tail[-self.tail_limit:]
                st.tail.clear()
                st.tail_size = 0
                dropped = st.dropped
            self._writes[name](f"\n[... {dropped} characters of output dropped in the sandbox ...]\n" + tail)
            self._streams[name].flush()


def install(shell, *, output_limit: int, final_limit: int) -> Repl:
    """Set up the REPL in ``shell`` (called once by kernel_main before the kernel serves)."""
    import sys

    max_frame = int(os.environ.get(Env.BRIDGE_MAX_FRAME, protocol.DEFAULT_MAX_FRAME))
    repl = Repl(shell,
                context_path=os.environ.get(Env.CONTEXT_PATH) or None,
                context_format=os.environ.get(Env.CONTEXT_FORMAT, ContextFormat.TEXT),
                final_limit=final_limit, output_limit=output_limit,
                bridge=Bridge(protocol.BRIDGE_SOCKET, max_frame))
    shell.push(repl.namespace())
    shell.events.register("pre_run_cell", repl.pre_run_cell)
    shell.events.register("post_run_cell", repl.post_run_cell)
    repl.output_guard.wrap("stdout", sys.stdout)
    repl.output_guard.wrap("stderr", sys.stderr)
    _cap_long_reprs(shell, output_limit)
    _cap_rich_output(shell, output_limit)
    return repl


def _cap_mime(data: dict, limit: int) -> dict:
    """Rich output (HTML, JSON, images...) larger than the limit is cut or dropped, never sent whole."""
    out = {}
    for mime, value in data.items():
        if mime == STATE_MIME:  # our own per-cell state, already bounded (FINAL is capped)
            out[mime] = value
        elif isinstance(value, str) and len(value) > limit:
            keep = limit // 4
            value = value[:keep] + f"\n[... {len(value) - 2 * keep} characters not shown ...]\n" + value[-keep:]
        elif isinstance(value, (bytes, bytearray)) and len(value) > limit:
            continue
        elif not isinstance(value, (str, bytes, bytearray)) and len(repr(value)) > limit:
            value = f"[{mime} output of {len(repr(value))} characters not shown]"
        out[mime] = value
    return out


def _cap_rich_output(shell, limit: int) -> None:
    publisher = shell.display_pub
    publish = publisher.publish

    def capped_publish(data, *args, **kwargs):
        return publish(_cap_mime(data, limit), *args, **kwargs)

    publisher.publish = capped_publish
    hook = shell.displayhook
    write = hook.write_format_data

    def capped_write(format_dict, *args, **kwargs):
        return write(_cap_mime(format_dict, limit), *args, **kwargs)

    hook.write_format_data = capped_write


def _cap_long_reprs(shell, limit: int) -> None:
    """A huge str/bytes as a cell's last expression is shown head and tail, not whole."""
    formatter = shell.display_formatter.formatters["text/plain"]

    def short(obj, printer, cycle):
        keep = limit // 4  # repr may double the size (escapes); stay under the host's cap
        text = repr(obj) if len(obj) <= 2 * keep else (
            repr(obj[:keep]) + f" [... {len(obj) - 2 * keep} characters not shown ...] " + repr(obj[-keep:]))
        printer.text(text)

    formatter.for_type(str, short)
    formatter.for_type(bytes, short)
