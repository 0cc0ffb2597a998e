"""One operator-wide schedule of due times: which keys (ModelDeployments) need a look, and when.

A heap of (due, order, key). Re-adding or cancelling a key does not search the heap: the key's current
entry is remembered, and older entries are dropped when they surface (lazy invalidation). The heap is
rebuilt when dropped entries outnumber live ones, so keys re-added on every reconcile cannot grow it
without bound. Times are plain floats from the caller's clock; nothing here reads a clock or waits.
"""

from __future__ import annotations

import heapq
from itertools import count
from typing import Hashable


class Schedule:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable]] = []
        # key -> the order number of its live entry; an entry whose number differs is stale.
        self._live: dict[Hashable, int] = {}
        # Breaks ties between equal due times (first added, first due) and keeps keys out of comparisons,
        # so keys need only be hashable.
        self._order = count()

    def add(self, key: Hashable, due: float) -> None:
        """Schedule `key` at `due`, replacing any earlier time it had."""
        order = next(self._order)
        self._live[key] = order
        heapq.heappush(self._heap, (due, order, key))
        self._compact()

    def cancel(self, key: Hashable) -> None:
        """Forget `key`; nothing happens if it was not scheduled."""
        self._live.pop(key, None)
        self._compact()

    def due(self, now: float) -> list[Hashable]:
        """Remove and return every key due at or before `now`, earliest first."""
        keys = []
        while self._heap and self._heap[0][0] <= now:
            _, order, key = heapq.heappop(self._heap)
            if self._live.get(key) == order:
                del self._live[key]
                keys.append(key)
        return keys

    def next_due(self) -> float | None:
        """The earliest due time still scheduled, or None when nothing is."""
        while self._heap and self._live.get(self._heap[0][2]) != self._heap[0][1]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._live

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._live) + 16:
            self._heap = [entry for entry in self._heap if self._live.get(entry[2]) == entry[1]]
            heapq.heapify(self._heap)
