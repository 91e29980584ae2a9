"""Start the IPython kernel inside the sandbox (spawned by supervisor.py).

Order matters for surviving hostile cells: the address-space limit is set first (a
memory bomb then raises MemoryError instead of a silent OOM kill), every thread the
kernel needs is started before any user code, history is off (a full /tmp must not
break the kernel), and only then does the kernel serve.  The supervisor learns the
kernel is ready through the pipe given as ``--ready-fd``.
"""

from __future__ import annotations

import os
import resource
import sys

from protocol import Env


def _limit_address_space() -> None:
    limit = int(os.environ.get(Env.AS_LIMIT, "0") or 0)
    if limit > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _tune(kernel) -> None:
    """Speed: no per-cell sleep, no re-broadcast of the input, no flush when nothing was written."""
    from ipykernel.iostream import OutStream

    kernel._execute_sleep = 0
    kernel._publish_execute_input = lambda *args, **kwargs: None

    def flush(self):
        # Stock flush hands the work to the IO thread and waits for it: a round trip per stream
        # per cell.  Building the messages here only queues their sends on the IO thread, in order,
        # so they still reach the host before the cell's final "idle" status.
        if self._buffers:
            self._flush()

    OutStream.flush = flush


def _cap_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    keep = limit // 2
    return text[:keep] + f"\n[... {len(text) - 2 * keep} characters not shown ...]\n" + text[-keep:]


def _cap_errors(kernel, limit: int) -> None:
    """An exception's name, message and traceback reach the host capped (a cell may raise one of any
    size, and the host drops a ZeroMQ frame over its size limit: the cell's reply would be lost)."""
    import inspect

    shell = kernel.shell
    show = shell._showtraceback

    class _Capped:
        def __init__(self, value) -> None:
            self.text = _cap_text(str(value), limit)

        def __str__(self) -> str:
            return self.text

    def capped_show(etype, evalue, stb):
        lines = [str(line) for line in (stb or [])]
        if sum(len(line) for line in lines) > limit:
            lines = [_cap_text("\n".join(lines), limit)]
        name = type("_", (), {})
        name.__name__ = _cap_text(str(getattr(etype, "__name__", "Error")), 200)
        return show(name, _Capped(evalue), lines)

    shell._showtraceback = capped_show
    execute = kernel.do_execute

    def cap_reply(reply):
        if isinstance(reply, dict) and reply.get("status") == "error":
            reply["ename"] = _cap_text(str(reply.get("ename", "")), 200)
            reply["evalue"] = _cap_text(str(reply.get("evalue", "")), limit)
            lines = [str(line) for line in (reply.get("traceback") or [])]
            if sum(len(line) for line in lines) > limit:
                reply["traceback"] = [_cap_text("\n".join(lines), limit)]
        return reply

    if inspect.iscoroutinefunction(execute):
        async def capped_execute(*args, **kwargs):
            return cap_reply(await execute(*args, **kwargs))
    else:
        def capped_execute(*args, **kwargs):
            return cap_reply(execute(*args, **kwargs))

    kernel.do_execute = capped_execute


def main(argv: list[str]) -> None:
    conn_file = argv[argv.index("-f") + 1]
    ready_fd = int(argv[argv.index("--ready-fd") + 1])
    _limit_address_space()

    import repl
    from ipykernel.kernelapp import IPKernelApp
    from zmq.utils.garbage import gc as zmq_gc

    app = IPKernelApp.instance()
    app.initialize([
        "-f", conn_file,
        "--HistoryManager.enabled=False",
        "--InteractiveShell.colors=nocolor",
        "--InteractiveShell.xmode=Plain",
        "--IPKernelApp.quiet=True",
        "--IPKernelApp.capture_fd_output=False",
    ])
    _tune(app.kernel)
    zmq_gc.start()
    output_limit = int(os.environ.get(Env.OUTPUT_LIMIT, str(1 << 20)))
    final_limit = int(os.environ.get(Env.FINAL_LIMIT, str(1 << 20)))
    repl.install(app.shell, output_limit=output_limit, final_limit=final_limit)
    _cap_errors(app.kernel, output_limit // 2)
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    app.start()


if __name__ == "__main__":
    main(sys.argv[1:])
