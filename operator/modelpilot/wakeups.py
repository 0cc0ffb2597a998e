"""One operator-wide timer for every ModelDeployment whose rollout changes on its own at a known moment (a
timed canary pause ends): a heap of due times and one task. Not a kopf timer per object, which would be a
task and a finalizer each."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable

from .rollout.schedule import Schedule

log = logging.getLogger(__name__)


class Wakeups:
    def __init__(self) -> None:
        self._schedule = Schedule()
        self._changed = asyncio.Event()
        # The event loop holds tasks weakly: a reconcile started here is kept until it ends.
        self._running: set[asyncio.Task] = set()

    def at(self, key: Hashable, after_seconds: float) -> None:
        """Wake `key` in `after_seconds`, instead of any earlier request for it."""
        self._schedule.add(key, time.monotonic() + after_seconds)
        self._changed.set()

    def __len__(self) -> int:
        """Keys waiting to be woken."""
        return len(self._schedule)

    async def forever(self, wake: Callable[[Hashable], Awaitable[None]]) -> None:
        while True:
            self._changed.clear()  # before reading the heap: an entry added meanwhile sets it again
            due = self._schedule.next_due()
            wait = None if due is None else max(0.0, due - time.monotonic())
            try:
                await asyncio.wait_for(self._changed.wait(), wait)
            except TimeoutError:
                pass
            for key in self._schedule.due(time.monotonic()):
                task = asyncio.create_task(self._run(wake, key))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    @staticmethod
    async def _run(wake: Callable[[Hashable], Awaitable[None]], key: Hashable) -> None:
        try:
            await wake(key)
        except Exception as exc:  # one object's failure must not end the timer for all
            log.error("timed reconcile of %s failed: %s: %s", key, type(exc).__name__, exc)
