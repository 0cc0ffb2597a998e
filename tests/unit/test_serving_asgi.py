"""The server's own ASGI layer (probes, metrics, timeout, identity headers, error answers), in-process.

Most tests use a stand-in scoring app; those about how MLflow's app fails (a client that leaves, deep
JSON, stack traces) use MLflow's own app around a stand-in model. A real model behind a real server
process is exercised in tests/serving/.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from modelpilot.serving.metrics import Identity
from modelpilot.serving import MANIFEST_FILE
from modelpilot.serving.server import ServingApp, identity_headers, serving_identity
from mlflow.models import Model
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.asgi import call, read_body, serving_app


async def scoring_app(scope, receive, send):
    if scope["path"] == "/invocations":
        body = await read_body(receive)
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
    return serving_app()


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
    assert (
        counter(metrics.text, "modelpilot_requests_total", protocol="mlflow", code="503", track="canary", deployment="fraud")
        == 1
    )
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
    assert counter(text, "modelpilot_requests_total", protocol="mlflow", code="200", model_version="7") == 2
    assert counter(text, "modelpilot_requests_total", protocol="mlflow", code="400") == 1
    assert counter(text, "modelpilot_requests_total", protocol="mlflow", code="415") == 1
    assert counter(text, "modelpilot_request_duration_seconds_count", protocol="mlflow") == 4
    assert counter(text, "modelpilot_requests_in_flight") == 0


def test_slow_requests_get_504_and_are_counted(app):
    app.scoring = scoring_app
    app.timeout = 0.05

    async def scenario():
        slow = await call(app, "POST", "/invocations", content=b"slow", headers={"Content-Type": "application/json"})
        assert slow.status_code == 504 and b"exceeded" in slow.content
        return (await call(app, "GET", "/metrics")).text

    text = asyncio.run(scenario())
    assert counter(text, "modelpilot_requests_total", protocol="mlflow", code="504") == 1


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


# -- how MLflow's app fails --------------------------------------------------------------------------


class StandInModel:
    """What MLflow's scoring app needs of a model: metadata (no signature) and a predict that can fail."""

    metadata = Model()

    def predict(self, data, params=None):
        if "boom" in data.columns:
            raise ValueError("the model failed")
        return [0] * len(data)


@pytest.fixture
def mlflow_served(app, monkeypatch) -> ServingApp:
    monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "true")  # init() sets it; restored after the test
    app.scoring = app.mlflow_app(StandInModel())
    return app


def scoring_scope() -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/invocations", "raw_path": b"/invocations",
        "query_string": b"", "root_path": "", "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 50000),
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
    }  # fmt: skip


async def serve_one(app: ServingApp, received: list[dict], send_fails: bool = False) -> list[dict]:
    """One scoring request the way an ASGI server delivers it: `received`, then a disconnect for ever.
    With `send_fails`, sending raises the OSError a server raises once the connection has closed."""
    incoming = iter(received)
    sent: list[dict] = []

    async def receive() -> dict:
        return next(incoming, {"type": "http.disconnect"})

    async def send(message: dict) -> None:
        if send_fails:
            raise ConnectionResetError("the client closed the connection")
        sent.append(message)

    await app(scoring_scope(), receive, send)
    return sent


def test_a_client_that_leaves_mid_body_is_counted_499_not_500(mlflow_served):
    # Half the body, then the client closes the connection (uvicorn reports a malformed chunked body the
    # same way, after answering it 400 itself). MLflow's app raises ClientDisconnect; nobody is left to answer.
    half_body = {"type": "http.request", "body": b'{"dataframe_split": {"col', "more_body": True}

    async def scenario():
        await serve_one(mlflow_served, [half_body])
        return (await call(mlflow_served, "GET", "/metrics")).text

    text = asyncio.run(scenario())
    assert counter(text, "modelpilot_requests_total", protocol="mlflow", code="499") == 1
    assert counter(text, "modelpilot_requests_total", protocol="mlflow", code="500") == 0
    assert counter(text, "modelpilot_request_duration_seconds_count", protocol="mlflow") == 1
    assert counter(text, "modelpilot_requests_in_flight") == 0


def test_an_answer_to_a_closed_connection_is_counted_499(app):
    app.scoring = scoring_app
    whole_body = {"type": "http.request", "body": b"ok", "more_body": False}

    async def scenario():
        await serve_one(app, [whole_body], send_fails=True)
        return (await call(app, "GET", "/metrics")).text

    text = asyncio.run(scenario())
    assert counter(text, "modelpilot_requests_total", protocol="mlflow", code="499") == 1
    assert counter(text, "modelpilot_requests_total", protocol="mlflow", code="200") == 0


def test_json_nested_too_deeply_is_a_400_with_a_message(mlflow_served):
    deep = b"[" * 100_000 + b"]" * 100_000

    async def scenario():
        json_type = {"Content-Type": "application/json"}
        answer = await call(mlflow_served, "POST", "/invocations", content=deep, headers=json_type)
        return answer, (await call(mlflow_served, "GET", "/metrics")).text

    answer, text = asyncio.run(scenario())
    assert answer.status_code == 400
    error = answer.json()
    assert error["error_code"] == "BAD_REQUEST" and "nested too deeply" in error["message"]
    assert counter(text, "modelpilot_requests_total", protocol="mlflow", code="400") == 1
    assert counter(text, "modelpilot_requests_total", protocol="mlflow", code="500") == 0


def failed_prediction(app: ServingApp) -> httpx.Response:
    body = json.dumps({"dataframe_split": {"columns": ["boom"], "data": [[1]]}}).encode()
    return asyncio.run(call(app, "POST", "/invocations", content=body, headers={"Content-Type": "application/json"}))


def test_error_bodies_leave_out_the_stack_trace(mlflow_served):
    answer = failed_prediction(mlflow_served)
    assert answer.status_code == 400
    error = answer.json()
    assert "stack_trace" not in error and ".py" not in answer.text  # no file of the server's
    assert {"error_code", "message"} <= set(error) and "unexpected error" in error["message"]
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert identity_of(answer) == IDENTITY


def test_error_bodies_keep_mlflows_stack_trace_when_debugging(mlflow_served):
    hidden = failed_prediction(mlflow_served).json()
    mlflow_served.stack_traces = True
    shown = failed_prediction(mlflow_served)
    assert "Traceback" in shown.json()["stack_trace"] and "the model failed" in shown.json()["stack_trace"]
    assert {k: v for k, v in shown.json().items() if k != "stack_trace"} == hidden
    assert int(shown.headers["content-length"]) == len(shown.content)
