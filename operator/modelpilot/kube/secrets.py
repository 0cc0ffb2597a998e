"""A shared, bounded cache of the Secrets ModelDeployments name, so that their number does not multiply
Secret reads.

Many ModelDeployments name one Secret (a credentials Secret per namespace is usual), and every resync would
read it again for each of them. Here each (namespace, name) is read at most once per `ttl` however many
objects name it, and concurrent readers share one GET. Still no list or watch of Secrets: the operator's
right stays `get` of the Secrets it is told about. Only the keys the operator reads are kept, still
encoded, and at most `size` Secrets (the least recently used go first). A Secret that does not exist is
remembered for `miss_ttl` only, so one created after its ModelDeployment is seen on the first retry.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Key = tuple[str, str]  # (namespace, name)
Fields = dict[str, str]  # key -> base64 value, as the API server sends it


@dataclass(frozen=True)
class Cached:
    fields: Fields | None  # None: the Secret did not exist
    expires: float


class SecretStore:
    """Pure: the entries, their expiry and the bound. Times are whatever clock the caller reads."""

    def __init__(self, size: int, ttl: float, miss_ttl: float):
        self.size, self.ttl, self.miss_ttl = size, ttl, min(ttl, miss_ttl)
        self._entries: OrderedDict[Key, Cached] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key, now: float) -> Cached | None:
        """The entry, unless absent or expired (an expired one is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: Key, fields: Fields | None, now: float) -> None:
        self._entries[key] = Cached(fields, now + (self.ttl if fields is not None else self.miss_ttl))
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class SecretCache:
    """Reads through `fetch` (namespace, name) -> the kept fields or None, sharing each read while it runs."""

    def __init__(self, fetch: Callable[[str, str], Awaitable[Fields | None]], store: SecretStore,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self._fetch, self._store, self._clock = fetch, store, clock
        self._in_flight: dict[Key, asyncio.Task[Fields | None]] = {}

    async def read(self, namespace: str, name: str) -> Fields | None:
        key = (namespace, name)
        cached = self._store.get(key, self._clock())
        if cached is not None:
            return cached.fields
        pending = self._in_flight.get(key)
        if pending is None:
            pending = asyncio.create_task(self._fetch(namespace, name))
            self._in_flight[key] = pending
            pending.add_done_callback(lambda done: self._settle(key, done))
        # shield: one reader being cancelled must not cancel the read the others wait on.
        return await asyncio.shield(pending)

    def _settle(self, key: Key, done: asyncio.Task[Fields | None]) -> None:
        self._in_flight.pop(key, None)
        # A failed read (forbidden, a timeout) is not remembered: the next reader asks again.
        if not done.cancelled() and done.exception() is None:
            self._store.put(key, done.result(), self._clock())
