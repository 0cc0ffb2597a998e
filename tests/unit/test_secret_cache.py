"""The shared Secret cache: expiry, the bound, short memory of missing Secrets, and shared reads."""

from __future__ import annotations

import asyncio

import pytest
from modelpilot.kube.secrets import SecretCache, SecretStore

CREDS = {"MLFLOW_TRACKING_PASSWORD": "cw=="}


def test_an_entry_is_kept_until_its_ttl_passes():
    store = SecretStore(size=10, ttl=30, miss_ttl=5)
    store.put(("ml", "creds"), CREDS, now=100)
    assert store.get(("ml", "creds"), now=129.9).fields == CREDS
    assert store.get(("ml", "creds"), now=130) is None
    assert len(store) == 0  # an expired entry is dropped when found


def test_a_missing_secret_is_remembered_for_the_shorter_miss_ttl():
    store = SecretStore(size=10, ttl=30, miss_ttl=5)
    store.put(("ml", "absent"), None, now=100)
    cached = store.get(("ml", "absent"), now=104)
    assert cached is not None and cached.fields is None
    assert store.get(("ml", "absent"), now=105) is None


def test_the_miss_ttl_never_outlasts_the_ttl():
    store = SecretStore(size=10, ttl=2, miss_ttl=5)
    store.put(("ml", "absent"), None, now=0)
    assert store.get(("ml", "absent"), now=2) is None


def test_the_least_recently_used_entry_goes_first_past_the_bound():
    store = SecretStore(size=2, ttl=30, miss_ttl=5)
    store.put(("a", "s"), CREDS, now=0)
    store.put(("b", "s"), CREDS, now=0)
    assert store.get(("a", "s"), now=1) is not None  # a is now the most recently used
    store.put(("c", "s"), CREDS, now=1)
    assert len(store) == 2
    assert store.get(("b", "s"), now=1) is None
    assert store.get(("a", "s"), now=1) is not None and store.get(("c", "s"), now=1) is not None


class Reads:
    """A stand-in for the API server's Secrets: counts GETs, each taking a moment."""

    def __init__(self, secrets: dict, error: Exception | None = None):
        self.secrets, self.error, self.count = secrets, error, 0

    async def __call__(self, namespace: str, name: str):
        self.count += 1
        await asyncio.sleep(0.01)
        if self.error is not None:
            raise self.error
        return self.secrets.get((namespace, name))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def cache(reads: Reads, clock: Clock, size: int = 10) -> SecretCache:
    return SecretCache(reads, SecretStore(size=size, ttl=30, miss_ttl=5), clock)


def test_concurrent_readers_of_one_secret_share_one_read_and_later_ones_none_until_it_expires():
    reads, clock = Reads({("ml", "creds"): CREDS}), Clock()
    secrets = cache(reads, clock)

    async def scenario():
        first = await asyncio.gather(*(secrets.read("ml", "creds") for _ in range(500)))
        clock.now = 29
        again = await secrets.read("ml", "creds")
        clock.now = 30
        expired = await secrets.read("ml", "creds")
        return first, again, expired

    first, again, expired = asyncio.run(scenario())
    assert first == [CREDS] * 500 and again == expired == CREDS
    assert reads.count == 2


def test_each_secret_is_read_on_its_own():
    reads, clock = Reads({("a", "creds"): CREDS, ("b", "creds"): {"MLFLOW_TRACKING_TOKEN": "dA=="}}), Clock()
    secrets = cache(reads, clock)

    async def scenario():
        return await asyncio.gather(secrets.read("a", "creds"), secrets.read("b", "creds"), secrets.read("a", "other"))

    assert asyncio.run(scenario()) == [CREDS, {"MLFLOW_TRACKING_TOKEN": "dA=="}, None]
    assert reads.count == 3


def test_a_secret_created_after_it_was_missed_is_read_once_the_miss_ttl_passes():
    reads, clock = Reads({}), Clock()
    secrets = cache(reads, clock)

    async def scenario():
        missed = await secrets.read("ml", "creds")
        reads.secrets[("ml", "creds")] = CREDS
        still_missed = await secrets.read("ml", "creds")
        clock.now = 5
        return missed, still_missed, await secrets.read("ml", "creds")

    assert asyncio.run(scenario()) == (None, None, CREDS)
    assert reads.count == 2


def test_a_failed_read_reaches_every_waiting_reader_and_is_not_remembered():
    reads, clock = Reads({("ml", "creds"): CREDS}, error=PermissionError("forbidden")), Clock()
    secrets = cache(reads, clock)

    async def scenario():
        results = await asyncio.gather(*(secrets.read("ml", "creds") for _ in range(3)), return_exceptions=True)
        reads.error = None
        return results, await secrets.read("ml", "creds")

    results, after = asyncio.run(scenario())
    assert all(isinstance(r, PermissionError) for r in results)
    assert after == CREDS
    assert reads.count == 2


def test_a_cancelled_reader_does_not_cancel_the_read_others_wait_on():
    reads, clock = Reads({("ml", "creds"): CREDS}), Clock()
    secrets = cache(reads, clock)

    async def scenario():
        impatient = asyncio.create_task(secrets.read("ml", "creds"))
        patient = asyncio.create_task(secrets.read("ml", "creds"))
        await asyncio.sleep(0)
        impatient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await impatient
        return await patient

    assert asyncio.run(scenario()) == CREDS
    assert reads.count == 1
