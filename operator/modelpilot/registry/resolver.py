"""Shared, cached and coalesced resolution of model references, with a hard deadline on each ask.

Many ModelDeployments often name the same model on the same server (one per region, tenant or
namespace). Each distinct (server, credentials, reference) is asked once per `ttl` however many
ModelDeployments name it, and concurrent askers share one request. At most `concurrency` asks run at
once, and each gives up after `timeout` seconds, so a slow registry never piles up requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from ..api.spec import ModelRef
from ..pools import Slots
from .errors import RegistryError
from .mlflow import Credentials, MlflowRegistry, deadline
from .resolution import Resolution, next_ask


def _key(tracking_uri: str, credentials: Credentials | None, ref: ModelRef) -> tuple:
    # A digest, so that no secret is kept as a dict key longer than needed.
    secret = repr((credentials.token, credentials.username, credentials.password)) if credentials else ""
    return tracking_uri.rstrip("/"), hashlib.sha256(secret.encode()).hexdigest(), ref.name, ref.version, ref.alias


class Resolver:
    def __init__(self, concurrency: int, ttl_seconds: float, timeout_seconds: float):
        self._slots = Slots("registry", concurrency)
        self._ttl = ttl_seconds
        self._timeout = timeout_seconds
        self._cache: dict[tuple, tuple[float, Resolution]] = {}
        self._in_flight: dict[tuple, asyncio.Task[Resolution]] = {}
        self._next_sweep = 0.0

    async def resolve(self, tracking_uri: str, credentials: Credentials | None, ref: ModelRef) -> Resolution:
        key = _key(tracking_uri, credentials, ref)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        pending = self._in_flight.get(key)
        if pending is None:
            pending = asyncio.create_task(self._ask(tracking_uri, credentials, ref, next_ask()))
            self._in_flight[key] = pending
            pending.add_done_callback(lambda done: self._settle(key, done))
        # shield: one caller being cancelled must not cancel the request the others wait on.
        return await asyncio.shield(pending)

    def _settle(self, key: tuple, done: asyncio.Task[Resolution]) -> None:
        self._in_flight.pop(key, None)
        if not done.cancelled() and done.exception() is None:
            self._cache[key] = (time.monotonic() + self._ttl, done.result())
        self._forget_expired()

    def _forget_expired(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._ttl
        for key in [k for k, (expires, _) in self._cache.items() if expires <= now]:
            del self._cache[key]

    async def _ask(self, tracking_uri: str, credentials: Credentials | None, ref: ModelRef, asked: int) -> Resolution:
        async with self._slots.held():
            try:
                # Around the client's lifetime too, so that no ask holds its slot past the deadline.
                async with deadline(tracking_uri.rstrip("/"), self._timeout):
                    async with MlflowRegistry(tracking_uri, credentials, self._timeout) as registry:
                        return Resolution(model=await registry.resolve(ref), asked=asked)
            except RegistryError as exc:
                return Resolution.of_error(exc, asked)
