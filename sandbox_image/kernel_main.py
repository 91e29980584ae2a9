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
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    app.start()


if __name__ == "__main__":
    main(sys.argv[1:])
