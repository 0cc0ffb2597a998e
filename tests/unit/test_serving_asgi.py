"""The server's own ASGI layer (probes, metrics, timeout, identity headers), in-process with a stand-in scoring app.

The real MLflow scoring app and a real model are exercised in tests/serving/; here only the routing,
timing and counting around it are checked.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from modelpilot.serving.metrics import Identity, ServingMetrics
from modelpilot.serving import MANIFEST_FILE
from modelpilot.serving.server import ServingApp, identity_headers, serving_identity
from prometheus_client.parser import text_string_to_metric_families


async def scoring_app(scope, receive, send):
    if scope["path"] == "/invocations":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if body == b"slow":
            await asyncio.sleep(5)
        status = 200 if body != b"bad" else 400
    else:
        status = 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


def counter(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


@pytest.fixture
def app() -> ServingApp:
    return ServingApp("/nonexistent", ServingMetrics(Identity("fraud", "7", "canary", model_name="fraud-detector")))


async def call(app: ServingApp, method: str, path: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.request(method, path, **kwargs)


def test_probes_before_and_after_load(app):
    async def scenario():
        assert (await call(app, "GET", "/health")).status_code == 200
        assert (await call(app, "GET", "/ready")).status_code == 503
        loading = await call(app, "POST", "/invocations", content=b"{}", headers={"Content-Type": "application/json"})
        assert loading.status_code == 503 and "still loading" in loading.json()["message"]
        app.scoring = scoring_app
        assert (await call(app, "GET", "/ready")).status_code == 200
        assert (await call(app, "GET", "/ping")).status_code == 200
        return await call(app, "GET", "/metrics")

    metrics = asyncio.run(scenario())
    assert counter(metrics.text, "modelpilot_requests_total", code="503", track="canary", deployment="fraud") == 1
    assert metrics.headers["content-type"].startswith("text/plain")


def test_requests_are_counted_by_code_and_timed(app):
    app.scoring = scoring_app

    async def scenario():
        json_type = {"Content-Type": "application/json"}
        for body in (b"ok", b"ok", b"bad"):
            await call(app, "POST", "/invocations", content=body, headers=json_type)
        missing = await call(app, "POST", "/invocations", content=b"ok")
        assert missing.status_code == 415 and "Content-Type" in missing.json()["message"]
        return (await call(app, "GET", "/metrics")).text

    text = asyncio.run(scenario())
    assert counter(text, "modelpilot_requests_total", code="200", model_version="7") == 2
    assert counter(text, "modelpilot_requests_total", code="400") == 1
    assert counter(text, "modelpilot_requests_total", code="415") == 1
    assert counter(text, "modelpilot_request_duration_seconds_count") == 4
    assert counter(text, "modelpilot_requests_in_flight") == 0


def test_slow_requests_get_504_and_are_counted(app):
    app.scoring = scoring_app
    app.timeout = 0.05

    async def scenario():
        slow = await call(app, "POST", "/invocations", content=b"slow", headers={"Content-Type": "application/json"})
        assert slow.status_code == 504 and b"exceeded" in slow.content
        return (await call(app, "GET", "/metrics")).text

    text = asyncio.run(scenario())
    assert counter(text, "modelpilot_requests_total", code="504") == 1


IDENTITY = {"modelpilot-model-name": "fraud-detector", "modelpilot-model-version": "7", "modelpilot-track": "canary"}


def identity_of(response: httpx.Response) -> dict[str, str]:
    return {name: response.headers.get(name) for name in IDENTITY}


def test_every_response_names_the_model_version_and_track(app):
    json_type = {"Content-Type": "application/json"}

    async def scenario():
        answers = {
            "loading": await call(app, "POST", "/invocations", content=b"ok", headers=json_type),
            "not ready": await call(app, "GET", "/ready"),
        }
        app.scoring = scoring_app
        app.timeout = 0.05
        answers |= {
            "scored": await call(app, "POST", "/invocations", content=b"ok", headers=json_type),
            "rejected": await call(app, "POST", "/invocations", content=b"bad", headers=json_type),
            "no content type": await call(app, "POST", "/invocations", content=b"ok"),
            "timed out": await call(app, "POST", "/invocations", content=b"slow", headers=json_type),
            "health": await call(app, "GET", "/health"),
            "ready": await call(app, "GET", "/ready"),
            "ping": await call(app, "GET", "/ping"),
            "metrics": await call(app, "GET", "/metrics"),
        }
        return answers

    answers = asyncio.run(scenario())
    assert [a.status_code for a in answers.values()] == [503, 503, 200, 400, 415, 504, 200, 200, 200, 200]
    for what, answer in answers.items():
        assert identity_of(answer) == IDENTITY, what
    # The scoring app's own headers and body pass through untouched, each header once.
    scored = answers["scored"]
    assert scored.content == b"{}" and scored.headers["content-type"] == "application/json"
    assert scored.headers.get_list("modelpilot-track") == ["canary"]


def test_identity_headers_leave_out_unknown_values_and_stay_ascii():
    assert identity_headers(Identity("", "", "stable")) == [(b"modelpilot-track", b"stable")]
    ((_, name), *_) = identity_headers(Identity("d", "3", "stable", model_name="détecteur de fraude"))
    assert name == b"d%C3%A9tecteur%20de%20fraude"
    assert identity_headers(Identity("d", "3", "canary", model_name="fraud_v2.1-x"))[0] == (
        b"modelpilot-model-name",
        b"fraud_v2.1-x",
    )


def test_the_fetch_manifest_names_the_model_when_the_environment_does_not(tmp_path):
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"name": "fraud-detector", "version": "7"}))
    assert serving_identity(str(tmp_path), {}) == Identity("", "7", "stable", model_name="fraud-detector")
    env = {"MODELPILOT_MODEL_NAME": "from-env", "MODELPILOT_MODEL_VERSION": "8", "MODELPILOT_TRACK": "canary"}
    assert serving_identity(str(tmp_path), env) == Identity("", "8", "canary", model_name="from-env")
    assert serving_identity(str(tmp_path / "missing"), {}) == Identity("", "", "stable")
