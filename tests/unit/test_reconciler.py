"""The Reconciler's own rules, with the API server and the registry stood in for: one reconcile at a time per
object, stale bodies dropped, answers asked later win, nothing remembered of a deleted object, status
keys that went away cleared, and a refused apply reported instead of escaping."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from kubernetes.client.exceptions import ApiException

from modelpilot import reconcile
from modelpilot.api import ModelDeploymentSpec
from modelpilot.api.status import ModelDeploymentStatus, ResolvedModel, StableTrackStatus
from modelpilot.kube import objects
from modelpilot.registry.resolution import Resolution
from modelpilot.render.labels import LABEL_MODEL_VERSION
from modelpilot.render.owner import Owner
from modelpilot.rollout.conditions import get_condition
from modelpilot.settings import Settings

V1 = ResolvedModel(name="m", version="1", source="s", alias="champion")
V2 = ResolvedModel(name="m", version="2", source="s", alias="champion")


def body(generation: int = 1, uid: str = "u1") -> dict:
    return {
        "metadata": {"name": "m", "namespace": "ns", "uid": uid, "generation": generation},
        "spec": {"model": {"name": "m", "alias": "champion"}, "mlflow": {"trackingUri": "http://mlflow:5000"}},
    }


class NothingLive:
    def get(self, kind, namespace, name):
        return None

    def pods(self, namespace, deployment):
        return []


@pytest.fixture
def api(monkeypatch):
    """Stands in for the API server: no object exists, every apply, status patch and Event is recorded, and
    applies are refused with a 422 when the test sets `refuse`."""
    written = {"applied": [], "status": [], "events": [], "refuse": False}
    lock = threading.Lock()

    def call(method, url, body=None, query=None, content_type=None):
        if method == "GET":
            raise ApiException(status=404, reason="Not Found")
        if content_type == "application/apply-patch+yaml" and written["refuse"]:
            exc = ApiException(status=422, reason="Unprocessable Entity")
            exc.body = json.dumps({"message": 'Deployment.apps "m" is invalid: spec.template...cpu: quantities must match'})
            raise exc
        with lock:
            if url.endswith("/status"):
                written["status"].append(body["status"])
            elif content_type == "application/apply-patch+yaml":
                written["applied"].append(body)
        return {}

    monkeypatch.setattr(objects, "call", call)
    monkeypatch.setattr(reconcile, "post_event", lambda involved, warning, reason, message: written["events"].append((warning, reason)))
    return written


class Registry:
    """Answers each ask with the next scripted Resolution, once the test releases it."""

    def __init__(self):
        self.answers: asyncio.Queue = asyncio.Queue()
        self.asked = 0

    async def resolve(self, tracking_uri, credentials, ref):
        self.asked += 1
        return await self.answers.get()


def reconciler_with(registry: Registry) -> reconcile.Reconciler:
    reconciler = reconcile.Reconciler(Settings())
    reconciler.resolver = registry
    return reconciler


def served_versions(applied: list[dict]) -> list[str]:
    return [b["spec"]["template"]["metadata"]["labels"][LABEL_MODEL_VERSION] for b in applied if b["kind"] == "Deployment"]


def test_reconciles_of_one_object_take_turns_and_each_starts_from_the_last_status(api, monkeypatch):
    inside, most, seen_statuses = 0, 0, []
    real = reconcile._converge

    def counting(body, spec, status, *rest):
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        seen_statuses.append(status.model)
        time.sleep(0.05)  # long enough for the other reconcile to arrive while this one runs
        try:
            return real(body, spec, status, *rest)
        finally:
            inside -= 1

    monkeypatch.setattr(reconcile, "_converge", counting)

    async def run():
        registry = Registry()
        reconciler = reconciler_with(registry)
        for _ in range(2):
            registry.answers.put_nowait(Resolution(model=V1, asked=1))
        return await asyncio.gather(reconciler.reconcile(body(), NothingLive()), reconciler.reconcile(body(), NothingLive()))

    first, second = asyncio.run(run())
    assert most == 1
    # The second started from what the first wrote, not from the (empty) status in its body.
    assert seen_statuses == [None, V1]
    assert first.status.model == second.status.model == V1
    assert len(api["status"]) == 1  # the second found nothing to change


def test_a_body_older_than_the_handled_spec_is_dropped(api):
    async def run():
        registry = Registry()
        reconciler = reconciler_with(registry)
        registry.answers.put_nowait(Resolution(model=V2, asked=1))
        newer = await reconciler.reconcile(body(generation=2), NothingLive())
        registry.answers.put_nowait(Resolution(model=V1, asked=2))
        older = await reconciler.reconcile(body(generation=1), NothingLive())
        return newer, older

    newer, older = asyncio.run(run())
    assert newer.status.observed_generation == 2 and older is None
    assert served_versions(api["applied"]) == ["2"]
    assert len(api["status"]) == 1


def test_an_answer_asked_earlier_never_overrides_one_asked_later(api):
    async def scenario():
        registry = Registry()
        reconciler = reconciler_with(registry)
        early_answer: asyncio.Future = asyncio.get_running_loop().create_future()

        async def resolve(tracking_uri, credentials, ref):
            registry.asked += 1
            if registry.asked == 1:
                return await early_answer  # asked before the alias moved, answered last
            return Resolution(model=V2, asked=9)

        registry.resolve = resolve
        slow = asyncio.create_task(reconciler.reconcile(body(), NothingLive()))
        await asyncio.sleep(0)
        fast = await reconciler.reconcile(body(), NothingLive())
        early_answer.set_result(Resolution(model=V1, asked=8))
        return fast, await slow

    fast, slow = asyncio.run(scenario())
    assert fast.status.model == V2
    assert slow.status.model == V2  # the alias is not flipped back to version 1
    assert "1" not in served_versions(api["applied"])


def test_an_answer_of_another_generation_is_not_carried_over(api):
    async def run():
        registry = Registry()
        reconciler = reconciler_with(registry)
        registry.answers.put_nowait(Resolution(model=V2, asked=9))
        await reconciler.reconcile(body(generation=1), NothingLive())
        # The spec changed; its answer was asked earlier on the counter but is the only one for generation 2.
        registry.answers.put_nowait(Resolution(model=V1, asked=3))
        return await reconciler.reconcile(body(generation=2), NothingLive())

    assert asyncio.run(run()).status.model == V1


@pytest.mark.parametrize("when", ["while resolving", "while applying"])
def test_a_deletion_racing_a_reconcile_leaves_nothing_remembered(api, monkeypatch, when):
    applying = threading.Event()
    go_on = threading.Event()
    real = reconcile._converge

    def held(*args):
        applying.set()
        go_on.wait(5)
        return real(*args)

    monkeypatch.setattr(reconcile, "_converge", held)

    async def run():
        registry = Registry()
        reconciler = reconciler_with(registry)
        running = asyncio.create_task(reconciler.reconcile(body(), NothingLive()))
        await asyncio.sleep(0)
        if when == "while resolving":
            reconciler.forget("u1")
            registry.answers.put_nowait(Resolution(model=V1, asked=1))
        else:
            registry.answers.put_nowait(Resolution(model=V1, asked=1))
            await asyncio.get_running_loop().run_in_executor(None, applying.wait, 5)
            reconciler.forget("u1")
        go_on.set()
        outcome = await running
        return reconciler, outcome

    reconciler, outcome = asyncio.run(run())
    assert reconciler._memory == {}
    if when == "while resolving":
        assert outcome is None and api["status"] == [] and api["applied"] == []


def test_retain_forgets_objects_no_longer_listed(api):
    async def run():
        registry = Registry()
        reconciler = reconciler_with(registry)
        for uid in ("a", "b"):
            registry.answers.put_nowait(Resolution(model=V1, asked=1))
            await reconciler.reconcile(body(uid=uid), NothingLive())
        reconciler.retain({"b"})
        return reconciler

    assert set(asyncio.run(run())._memory) == {"b"}


def test_status_keys_that_went_away_are_cleared(monkeypatch):
    patches = []
    monkeypatch.setattr(objects, "patch_status", lambda api_version, kind, ns, name, patch: patches.append(patch))
    monkeypatch.setattr(reconcile, "post_event", lambda *args: None)
    track = {"deployment": "m", "replicas": 1, "ready_replicas": 1}
    before = ModelDeploymentStatus(
        phase="Progressing", model=V1, stable=StableTrackStatus(version="1", updating_to="2", **track)
    )
    after = ModelDeploymentStatus(phase="Pending", stable=StableTrackStatus(version="2", **track))
    reconcile._write_status(Owner("m", "ns", "u1"), before, after)
    (patch,) = patches
    assert patch["phase"] == "Pending" and patch["stable"]["version"] == "2"
    # A merge patch deletes a key set to null, and keeps one it does not mention, nested ones included.
    assert "model" in patch and patch["model"] is None
    assert "updatingTo" in patch["stable"] and patch["stable"]["updatingTo"] is None


def test_a_refused_apply_is_reported_in_status_and_an_event_and_retried(api):
    api["refuse"] = True
    spec = ModelDeploymentSpec.model_validate(body()["spec"])
    outcome = reconcile._converge(body(), spec, ModelDeploymentStatus(), Resolution(model=V1), Settings(), NothingLive())

    status = outcome.status
    progressing = get_condition(status.conditions, "Progressing")
    assert (progressing.status, progressing.reason) == ("False", "ApplyFailed")
    assert progressing.message.startswith("could not apply Deployment ns/m: HTTP 422: ")
    assert "quantities must match" in progressing.message
    assert status.phase == "Failed" and get_condition(status.conditions, "Ready").reason == "ApplyFailed"
    assert api["status"] and api["status"][-1]["phase"] == "Failed"
    assert (True, "ApplyFailed") in api["events"]
    assert outcome.retry_because == progressing.message


def settled_body(version: str = "7") -> dict:
    settled = body()
    settled["metadata"]["resourceVersion"] = version
    return settled


def counting_converges(monkeypatch) -> list:
    calls = []
    real = reconcile._converge

    def counted(*args):
        calls.append(args[0]["metadata"].get("resourceVersion"))
        return real(*args)

    monkeypatch.setattr(reconcile, "_converge", counted)
    return calls


def test_a_resync_of_a_settled_object_asks_the_registry_and_does_nothing_more_while_the_answer_holds(api, monkeypatch):
    converges = counting_converges(monkeypatch)

    async def run():
        registry = Registry()
        reconciler = reconciler_with(registry)
        registry.answers.put_nowait(Resolution(model=V1, asked=1))
        await reconciler.reconcile(settled_body(), NothingLive())
        registry.answers.put_nowait(Resolution(model=V1, asked=2))
        same = await reconciler.reconcile(settled_body(), NothingLive(), resync=True)
        registry.answers.put_nowait(Resolution(model=V2, asked=3))
        moved = await reconciler.reconcile(settled_body(), NothingLive(), resync=True)
        return registry.asked, same, moved

    asked, same, moved = asyncio.run(run())
    assert asked == 3
    assert same is None and converges == ["7", "7"]
    assert moved.status.model == V2 and served_versions(api["applied"])[-1] == "2"


def test_a_resync_reconciles_in_full_after_a_change_of_the_body_or_a_failure_that_is_retried(api, monkeypatch):
    converges = counting_converges(monkeypatch)

    async def run():
        registry = Registry()
        reconciler = reconciler_with(registry)
        registry.answers.put_nowait(Resolution(model=V1, asked=1))
        await reconciler.reconcile(settled_body("7"), NothingLive())
        registry.answers.put_nowait(Resolution(model=V1, asked=2))
        await reconciler.reconcile(settled_body("8"), NothingLive(), resync=True)  # the body changed since
        outage = Resolution.failed("RegistryUnreachable", "MLflow did not answer", retryable=True, asked=3)
        for asked in range(2):
            registry.answers.put_nowait(outage)
        await reconciler.reconcile(settled_body("8"), NothingLive(), resync=True)  # a new answer
        await reconciler.reconcile(settled_body("8"), NothingLive(), resync=True)  # the same, but retried

    asyncio.run(run())
    assert converges == ["7", "8", "8", "8"]


def test_a_reconcile_that_failed_leaves_the_object_unsettled(api, monkeypatch):
    converges, fail = [], {2}  # the second converge fails
    real = reconcile._converge

    def flaky(*args):
        converges.append(args[0]["metadata"]["resourceVersion"])
        if len(converges) in fail:
            raise ConnectionError("the API server went away")
        return real(*args)

    monkeypatch.setattr(reconcile, "_converge", flaky)

    async def run():
        registry = Registry()
        reconciler = reconciler_with(registry)
        for asked in range(3):
            registry.answers.put_nowait(Resolution(model=V1, asked=asked))
        await reconciler.reconcile(settled_body(), NothingLive())
        with pytest.raises(ConnectionError):
            await reconciler.reconcile(settled_body(), NothingLive())
        return await reconciler.reconcile(settled_body(), NothingLive(), resync=True)

    assert asyncio.run(run()) is not None
    assert converges == ["7", "7", "7"]
