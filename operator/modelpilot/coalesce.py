"""Reconciles asked for by events of owned objects and pods, folded per ModelDeployment.

kopf runs an event's handler in a worker of the object that changed and holds that object's later events,
whole bodies, until the handler returns. A handler that awaited its owner's reconcile would hold them for as
long as the API server takes to answer: under load that is long, and for thousands of objects at once. So
the handler only asks. Each key has at most one run going and one more asked for, however many events
arrive meanwhile; the one more starts after the last ask, so it sees everything that was asked about.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)


class Coalescer:
    def __init__(self, run: Callable[[Hashable], Awaitable[None]]):
        self._run = run
        self._running: dict[Hashable, asyncio.Task] = {}
        self._again: set[Hashable] = set()

    def ask(self, key: Hashable) -> None:
        if key in self._running:
            self._again.add(key)
        else:
            self._running[key] = asyncio.create_task(self._serve(key))

    def __len__(self) -> int:
        """Keys with a run going."""
        return len(self._running)

    def cancel(self) -> None:
        for task in list(self._running.values()):
            task.cancel()

    async def _serve(self, key: Hashable) -> None:
        try:
            while True:
                self._again.discard(key)
                try:
                    await self._run(key)
                except Exception as exc:  # one object's failure must not stop later asks for it
                    log.error("reconcile of %s after a change of what it owns failed: %s: %s", key, type(exc).__name__, exc)
                if key not in self._again:
                    return
        finally:
            del self._running[key]
            self._again.discard(key)
