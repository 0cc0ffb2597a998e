"""The resolver's sharing, caching, bounding and deadline, against a stand-in registry."""

from __future__ import annotations

import asyncio

import pytest
from modelpilot.api.spec import ModelRef
from modelpilot.api.status import ResolvedModel
from modelpilot.registry import resolver as resolver_module
from modelpilot.registry.errors import ModelNotFound
from modelpilot.registry.resolver import Resolver

URI = "http://mlflow:5000"


class FakeRegistry:
    """Answers every reference with version 1 after `delay` seconds (None: never), counting requests."""

    delay: float | None = 0.05
    error: Exception | None = None
    requests = 0
    in_flight = 0
    max_in_flight = 0

    def __init__(self, tracking_uri, credentials=None, timeout=10.0):
        pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        pass

    async def resolve(self, ref: ModelRef) -> ResolvedModel:
        cls = type(self)
        cls.requests += 1
        cls.in_flight += 1
        cls.max_in_flight = max(cls.max_in_flight, cls.in_flight)
        try:
            await (asyncio.sleep(cls.delay) if cls.delay is not None else asyncio.Event().wait())
        finally:
            cls.in_flight -= 1
        if cls.error is not None:
            raise cls.error
        return ResolvedModel(name=ref.name, version="1", alias=ref.alias, run_id=None, source="s3://models/1")


@pytest.fixture
def fake(monkeypatch):
    registry = type("Registry", (FakeRegistry,), {})  # fresh counters for each test
    monkeypatch.setattr(resolver_module, "MlflowRegistry", registry)
    return registry


def ref(name: str = "m") -> ModelRef:
    return ModelRef(name=name, alias="champion")


def test_concurrent_asks_of_one_reference_share_one_request_and_one_stamp(fake):
    async def go():
        resolver = Resolver(concurrency=4, ttl_seconds=60, timeout_seconds=5)
        return await asyncio.gather(*(resolver.resolve(URI, None, ref()) for _ in range(5)))

    answers = asyncio.run(go())
    assert fake.requests == 1
    assert {a.model.version for a in answers} == {"1"}
    assert len({a.asked for a in answers}) == 1 and answers[0].asked > 0


def test_cache_hits_keep_the_stamp_and_an_ask_after_the_ttl_gets_a_later_one(fake):
    async def go():
        resolver = Resolver(concurrency=4, ttl_seconds=0.2, timeout_seconds=5)
        first = await resolver.resolve(URI, None, ref())
        hit = await resolver.resolve(URI, None, ref())
        await asyncio.sleep(0.3)
        return first, hit, await resolver.resolve(URI, None, ref())

    first, hit, later = asyncio.run(go())
    assert fake.requests == 2
    assert hit.asked == first.asked
    assert later.asked > first.asked


def test_errors_become_cached_resolutions(fake):
    fake.error = ModelNotFound("no registered model named 'm'")

    async def go():
        resolver = Resolver(concurrency=4, ttl_seconds=60, timeout_seconds=5)
        return await resolver.resolve(URI, None, ref()), await resolver.resolve(URI, None, ref())

    first, again = asyncio.run(go())
    assert (first.model, first.reason, first.message, first.retryable) == (None, "ModelNotFound", "no registered model named 'm'", False)
    assert again == first
    assert fake.requests == 1


def test_concurrency_bounds_the_asks_in_flight(fake):
    async def go():
        resolver = Resolver(concurrency=2, ttl_seconds=60, timeout_seconds=5)
        return await asyncio.gather(*(resolver.resolve(URI, None, ref(f"m{i}")) for i in range(5)))

    answers = asyncio.run(go())
    assert all(a.model is not None for a in answers)
    assert fake.requests == 5
    assert fake.max_in_flight == 2


def test_a_registry_that_never_answers_is_unreachable_after_the_deadline(fake):
    fake.delay = None

    async def go():
        resolver = Resolver(concurrency=2, ttl_seconds=60, timeout_seconds=0.2)
        return await asyncio.wait_for(resolver.resolve(URI + "/", None, ref()), 5)

    answer = asyncio.run(go())
    assert answer.model is None
    assert (answer.reason, answer.retryable) == ("RegistryUnreachable", True)
    assert answer.message == f"MLflow at {URI} did not answer within 0.2 s"
    assert fake.in_flight == 0


def test_a_cancelled_caller_does_not_cancel_the_ask_the_others_share(fake):
    async def go():
        resolver = Resolver(concurrency=2, ttl_seconds=60, timeout_seconds=5)
        impatient = asyncio.create_task(resolver.resolve(URI, None, ref()))
        patient = asyncio.create_task(resolver.resolve(URI, None, ref()))
        await asyncio.sleep(0.01)
        impatient.cancel()
        answer = await patient
        return impatient.cancelled(), answer

    impatient_cancelled, answer = asyncio.run(go())
    assert impatient_cancelled
    assert answer.model is not None and answer.model.version == "1"
    assert fake.requests == 1
