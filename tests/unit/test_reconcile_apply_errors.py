"""An apply the API server refuses reaches status and an Event, and is retried, instead of escaping."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from modelpilot import reconcile
from modelpilot.api import ModelDeploymentSpec
from modelpilot.api.status import ModelDeploymentStatus, ResolvedModel
from modelpilot.kube import objects
from modelpilot.registry.resolution import Resolution
from modelpilot.rollout.conditions import get_condition
from modelpilot.settings import Settings

BODY = {
    "metadata": {"name": "m", "namespace": "ns", "uid": "u1", "generation": 1},
    "spec": {"model": {"name": "m", "version": "1"}, "mlflow": {"trackingUri": "http://mlflow:5000"}},
}
V1 = ResolvedModel(name="m", version="1", source="s")


class NothingLive:
    def get(self, kind, namespace, name):
        return None

    def pods(self, namespace, deployment):
        return []


@pytest.fixture
def api(monkeypatch):
    """Stands in for the API server: refuses every apply with a 422, records status patches and Events."""
    written = {"status": [], "events": []}

    def refuse(method, url, body=None, query=None, content_type=None):
        if method == "GET":
            raise ApiException(status=404, reason="Not Found")  # no object of that name yet
        if content_type == "application/apply-patch+yaml":
            exc = ApiException(status=422, reason="Unprocessable Entity")
            exc.body = json.dumps({"message": 'Deployment.apps "m" is invalid: spec.template...cpu: quantities must match'})
            raise exc
        if url.endswith("/status"):
            written["status"].append(body["status"])
        elif url.endswith("/events"):
            written["events"].append(body)
        return {}

    monkeypatch.setattr(objects, "call", refuse)
    monkeypatch.setattr(reconcile, "post_event", lambda involved, warning, reason, message: written["events"].append((warning, reason)))
    return written


def test_a_refused_apply_is_reported_in_status_and_an_event_and_retried(api):
    spec = ModelDeploymentSpec.model_validate(BODY["spec"])
    outcome = reconcile._converge(BODY, spec, ModelDeploymentStatus(), Resolution(model=V1), Settings(), NothingLive())

    status = outcome.status
    progressing = get_condition(status.conditions, "Progressing")
    assert (progressing.status, progressing.reason) == ("False", "ApplyFailed")
    assert progressing.message.startswith("could not apply Deployment ns/m: HTTP 422: ")
    assert "quantities must match" in progressing.message
    assert status.phase == "Failed" and get_condition(status.conditions, "Ready").reason == "ApplyFailed"
    assert api["status"] and api["status"][-1]["phase"] == "Failed"
    assert (True, "ApplyFailed") in api["events"]
    assert outcome.retry_because == progressing.message
