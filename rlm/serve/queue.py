"""A bounded queue of runs: ``workers`` run at once, up to ``max_queue`` more wait their turn, and
any request beyond is turned away at once (429, with a Retry-After estimated from recent runs)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rlm.serve.errors import APIError


class RunQueue:
    def __init__(self, workers: int, max_queue: int) -> None:
        if workers < 1:
            raise ValueError("at least one worker")
        self.workers = workers
        self.max_queue = max(0, max_queue)
        self._slots = asyncio.Semaphore(workers)
        self.running = 0
        self.waiting = 0
        self._mean_s = 10.0  # recent runs' mean duration (exponential average)

    def retry_after(self) -> int:
        """Seconds until a place is likely free."""
        rounds = (self.waiting + 1) / self.workers
        return max(1, min(600, math.ceil(self._mean_s * rounds)))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``workers`` places for a run (waiting in line if need be); 429 when the
        line is full."""
        if self.running >= self.workers and self.waiting >= self.max_queue:
            raise APIError(429, f"the server is busy ({self.running} runs, {self.waiting} waiting); try again later",
                           "queue_full", headers={"Retry-After": str(self.retry_after())})
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
            self._mean_s = 0.8 * self._mean_s + 0.2 * (loop.time() - started)
