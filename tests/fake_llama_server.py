"""A stand-in for llama.cpp's ``llama-server`` (tests only): the real flags, real HTTP, no model.

Installed by the tests as ``<cache>/llama.cpp/<tag>/llama-server`` (with a shebang line for this
interpreter).  It prints the line ggml prints when it loads a CPU backend, then serves
``/health``, ``/v1/models`` and ``/v1/chat/completions`` (each completion answers "ready").
Environment knobs:

- FAKE_LLAMA_MODE=exit: print an error and exit 3 before listening; =hang: never listen.
- FAKE_LLAMA_DELAY: seconds to wait before listening.
- FAKE_LLAMA_CHAT_DELAY: seconds each completion takes.
- FAKE_LLAMA_CRASH_ON_CHAT=N: the N-th completion request kills the server with SIGSEGV.
- FAKE_LLAMA_SEEN: a file appended with one line per completion request as it arrives.
- FAKE_LLAMA_BUSY_FLAG: while this file exists, GET requests take 6 s (a busy server).
"""

import argparse
import http.server
import json
import os
import signal
import sys
import threading
import time

parser = argparse.ArgumentParser()
for flag in ("--model", "--alias", "--host", "--port", "--ctx-size", "--parallel", "--threads", "--threads-batch",
             "--flash-attn", "--cache-ram", "--n-predict"):
    parser.add_argument(flag)
for flag in ("--kv-unified", "--no-cache-idle-slots", "--no-webui", "--jinja"):
    parser.add_argument(flag, action="store_true")
args = parser.parse_args()
here = os.path.dirname(os.path.abspath(sys.argv[0]))
print("fake llama-server", " ".join(sys.argv[1:]), flush=True)
print(f"load_backend: loaded CPU backend from {here}/libggml-cpu-haswell.so", flush=True)
mode = os.environ.get("FAKE_LLAMA_MODE", "")
if mode == "exit":
    print("error: cannot load model", flush=True)
    sys.exit(3)
if mode == "hang":
    time.sleep(600)
time.sleep(float(os.environ.get("FAKE_LLAMA_DELAY", "0")))
chats = {"n": 0}
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, payload: dict, status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        busy = os.environ.get("FAKE_LLAMA_BUSY_FLAG", "")
        if busy and os.path.exists(busy):
            time.sleep(6)
        if self.path.startswith("/health"):
            self._send({"status": "ok"})
        else:
            self._send({"object": "list", "data": [{"id": args.alias, "object": "model"}]})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with lock:
            chats["n"] += 1
            n = chats["n"]
        seen = os.environ.get("FAKE_LLAMA_SEEN")
        if seen:
            with open(seen, "a") as fh:
                fh.write(f"{n}\n")
        if os.environ.get("FAKE_LLAMA_CRASH_ON_CHAT") == str(n):
            print("fake llama-server: crashing on this completion", flush=True)
            os.kill(os.getpid(), signal.SIGSEGV)
            # the signal may land on another thread: never answer while the process is dying
            while True:
                time.sleep(1)
        time.sleep(float(os.environ.get("FAKE_LLAMA_CHAT_DELAY", "0")))
        self._send({"id": f"c{n}", "object": "chat.completion", "created": int(time.time()), "model": args.alias,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "ready\nFINAL(ready)"}}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})

    def log_message(self, *a: object) -> None:
        pass


http.server.ThreadingHTTPServer((args.host, int(args.port)), Handler).serve_forever()
