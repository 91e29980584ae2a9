"""A real Ray cluster of several nodes on this machine, for the tests: each node is one
``ray start --block`` process (with its own temp folder), stopped by its own pid and the pids
of its descendants; nothing here runs ``ray stop`` (it would touch every cluster of the user)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

READY_TEXT = "block forever"
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ppid_and_start(pid: int) -> tuple[int, str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), fields[19]


def descendants(root: int) -> dict[int, str]:
    """Every live descendant of ``root``: pid -> start time (to tell a reused pid apart)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _ppid_and_start(int(entry.name))
            if info is not None:
                children.setdefault(info[0], []).append(int(entry.name))
                starts[int(entry.name)] = info[1]
    out: dict[int, str] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out[child] = starts[child]
                todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int, start: str) -> bool:
    info = _ppid_and_start(pid)
    return info is not None and info[1] == start


def ray_command() -> list[str]:
    exe = Path(sys.executable).with_name("ray")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ray.scripts.scripts"]


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    log: Path
    temp_dir: Path
    seen: dict[int, str] = field(default_factory=dict)  # every descendant ever seen (for the stop)

    def pids(self) -> dict[int, str]:
        now = descendants(self.proc.pid)
        self.seen.update(now)
        return now

    def raylet_pid(self) -> int | None:
        return next((p for p in self.pids() if "/raylet/raylet" in cmdline(p)), None)

    def node_id(self) -> str | None:
        pid = self.raylet_pid()
        for arg in (cmdline(pid).split() if pid else []):
            if arg.startswith("--node_id="):
                return arg.split("=", 1)[1]
        return None


class RayCluster:
    def __init__(self, base: Path, *, cpus_per_node: int = 1) -> None:
        self.base = base
        self.cpus = cpus_per_node
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[Node] = []
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_health_check_period_ms": "1000",
                    "RAY_health_check_failure_threshold": "5", "RAY_ADDRESS": ""}
        self.env.pop("RAY_ADDRESS")

    def _start(self, name: str, args: list[str]) -> Node:
        temp = Path(f"/tmp/rlmray-{os.getpid()}-{len(self.nodes)}")   # short: Unix socket paths
        temp.mkdir(parents=True, exist_ok=True)
        log = self.base / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*ray_command(), "start", *args, "--node-ip-address", "127.0.0.1", "--num-cpus", str(self.cpus),
                 "--disable-usage-stats", "--temp-dir", str(temp), "--object-store-memory", str(80 * 2**20),
                 "--dashboard-agent-listen-port", str(free_port()), "--block"],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        node = Node(name, proc, log, temp)
        self.nodes.append(node)
        deadline = time.monotonic() + START_TIMEOUT_S
        while READY_TEXT not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray node {name} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        node.pids()
        return node

    def start_head(self) -> Node:
        return self._start("head", ["--head", "--port", str(self.port), "--include-dashboard=false",
                                    "--dashboard-port", str(free_port())])

    def add_node(self) -> Node:
        return self._start(f"node{len(self.nodes)}", ["--address", self.address])

    def alive_nodes(self) -> int:
        code = (f"import ray; ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False); "
                "print(sum(1 for n in ray.nodes() if n['Alive']))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=self.env,
                             timeout=120)
        try:
            return int(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return 0

    def wait_for_nodes(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.alive_nodes() != n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not reach {n} alive nodes")
            time.sleep(0.5)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.pids()
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)      # --block: stops the node's own processes
                try:
                    node.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(timeout=10)
            deadline = time.monotonic() + 10
            while any(_alive(p, s) for p, s in node.seen.items()) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid, start in node.seen.items():            # whatever outlived its node
                if _alive(pid, start):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self.nodes.clear()
