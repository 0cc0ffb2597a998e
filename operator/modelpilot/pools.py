"""Bounded worker pools that report their depth: work waiting for a worker, and workers busy.

Both pools bound what one slow server can hold up: the thread pool that calls the Kubernetes API (its
client is synchronous) and the slots of MLflow asks. Their depth is what an operator under load shows
first, so it is exported as `modelpilot_pool_waiting` and `modelpilot_pool_busy`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TypeVar

from .metrics import POOL_BUSY, POOL_SIZE, POOL_WAITING

T = TypeVar("T")


class _Once:
    """True for the first caller of take() only, across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken = False

    def take(self) -> bool:
        with self._lock:
            taken, self._taken = self._taken, True
            return not taken


class ThreadPool:
    """A fixed number of threads for blocking calls, awaited from the event loop."""

    def __init__(self, name: str, workers: int):
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._waiting, self._busy = POOL_WAITING.labels(pool=name), POOL_BUSY.labels(pool=name)
        POOL_SIZE.labels(pool=name).set(workers)

    async def run(self, call: Callable[..., T], *args) -> T:
        queued = _Once()  # the waiting count drops once: when a worker starts, or when the wait is cancelled

        def work() -> T:
            if queued.take():
                self._waiting.dec()
            self._busy.inc()
            try:
                return call(*args)
            finally:
                self._busy.dec()

        self._waiting.inc()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        finally:
            if queued.take():
                self._waiting.dec()


class Slots:
    """At most `size` holders at once, for async work such as MLflow asks."""

    def __init__(self, name: str, size: int):
        self._semaphore = asyncio.Semaphore(size)
        self._waiting, self._busy = POOL_WAITING.labels(pool=name), POOL_BUSY.labels(pool=name)
        POOL_SIZE.labels(pool=name).set(size)

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        self._waiting.inc()
        try:
            await self._semaphore.acquire()
        finally:
            self._waiting.dec()
        self._busy.inc()
        try:
            yield
        finally:
            self._busy.dec()
            self._semaphore.release()
