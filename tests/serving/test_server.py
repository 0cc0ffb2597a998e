"""The model server, run as a real process on a model fetched from a real MLflow server."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Fetched, RegisteredModels, ServerProcess, split

pytestmark = pytest.mark.mlflow

IDS = {"deployment": "fraud", "model_version": "1", "track": "canary"}


def samples(server: ServerProcess) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(server.metrics()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(snapshot: dict, name: str, **labels: str) -> float:
    return snapshot.get((name, tuple(sorted({**IDS, **labels}.items()))), 0.0)


def test_ready_is_503_until_the_model_has_loaded(main_server: ServerProcess):
    assert main_server.first_status == 503
    assert main_server.client.get("/ready").status_code == 200
    assert main_server.client.get("/health").status_code == 200
    assert main_server.client.get("/ping").status_code == 200


def test_predictions_equal_the_models_own(main_server: ServerProcess, registered: RegisteredModels):
    rows = registered.holdout.iloc[:200]
    response = main_server.client.post("/invocations", json=split(rows))
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == registered.holdout_predictions[:200]
    # The other request formats of MLflow's scoring protocol work too.
    records = main_server.client.post("/invocations", json={"dataframe_records": rows.iloc[:10].to_dict("records")})
    assert records.json()["predictions"] == registered.holdout_predictions[:10]
    csv = main_server.client.post(
        "/invocations", content=rows.iloc[:10].to_csv(index=False), headers={"Content-Type": "text/csv"}
    )
    assert csv.json()["predictions"] == registered.holdout_predictions[:10]


def test_answers_name_the_model_version_and_track(main_server: ServerProcess, registered: RegisteredModels):
    rows = registered.holdout.iloc[:5]
    scored = main_server.client.post("/invocations", json=split(rows))
    rejected = main_server.client.post("/invocations", content=b"{not json", headers={"Content-Type": "application/json"})
    probes = [main_server.client.get(path) for path in ("/health", "/ready", "/ping")]
    for response in (scored, rejected, *probes):
        assert response.headers["modelpilot-model-name"] == "serving-clf"
        assert response.headers["modelpilot-model-version"] == "1"
        assert response.headers["modelpilot-track"] == "canary"
    # The bodies are MLflow's own, untouched.
    assert scored.json() == {"predictions": registered.holdout_predictions[:5]}
    assert rejected.status_code == 400 and set(rejected.json()) >= {"error_code", "message"}


def test_metrics_move_with_traffic_and_errors(main_server: ServerProcess, registered: RegisteredModels):
    before = samples(main_server)
    for start in range(0, 50, 10):
        assert main_server.client.post("/invocations", json=split(registered.holdout.iloc[start : start + 10])).is_success
    bad_json = main_server.client.post(
        "/invocations", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400 and "valid JSON" in bad_json.json()["message"]
    wrong_columns = main_server.client.post("/invocations", json={"dataframe_split": {"columns": ["x"], "data": [[1]]}})
    assert wrong_columns.status_code == 400 and "missing inputs" in wrong_columns.json()["message"]
    no_type = main_server.client.post("/invocations", content=b"1,2", headers={"Content-Type": ""})
    assert no_type.status_code == 415 and "Content-Type" in no_type.json()["message"]
    after = samples(main_server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("modelpilot_requests_total", protocol="mlflow", code="200") == 5
    assert delta("modelpilot_requests_total", protocol="mlflow", code="400") == 2
    assert delta("modelpilot_requests_total", protocol="mlflow", code="415") == 1
    assert delta("modelpilot_request_duration_seconds_count", protocol="mlflow") == 8
    assert delta("modelpilot_request_duration_seconds_sum", protocol="mlflow") > 0
    assert delta("modelpilot_request_duration_seconds_bucket", protocol="mlflow", le="+Inf") == 8
    assert delta("modelpilot_prediction_errors_total") == 1  # the schema error; bad JSON never reached predict
    assert value(after, "modelpilot_requests_in_flight") == 0
    assert value(after, "modelpilot_model_load_seconds") > 0
    # Probes and scrapes are not scoring traffic.
    main_server.client.get("/ready")
    assert value(samples(main_server), "modelpilot_request_duration_seconds_count", protocol="mlflow") == value(
        after, "modelpilot_request_duration_seconds_count", protocol="mlflow"
    )


def test_drift_stays_low_on_baseline_like_data_and_rises_on_shifted_data(
    main_server: ServerProcess, registered: RegisteredModels
):
    holdout = registered.holdout
    # Fill the 300-row window with rows drawn like the training data.
    for start in range(0, 600, 50):
        assert main_server.client.post("/invocations", json=split(holdout.iloc[start : start + 50])).is_success
    calm = samples(main_server)
    calm_score = value(calm, "modelpilot_drift_score")
    calm_features = {f"f{i}": value(calm, "modelpilot_feature_drift", feature=f"f{i}") for i in range(5)}
    assert 0 <= calm_score < 0.1, calm_features
    assert max(calm_features.values()) < 0.1, calm_features

    shifted = holdout.iloc[600:900].copy()
    shifted["f0"] = shifted["f0"] + 2 * holdout["f0"].std()
    shifted["f3"] = shifted["f3"] * 3
    for start in range(0, 300, 50):
        assert main_server.client.post("/invocations", json=split(shifted.iloc[start : start + 50])).is_success
    drifted = samples(main_server)
    features = {f"f{i}": value(drifted, "modelpilot_feature_drift", feature=f"f{i}") for i in range(5)}
    assert features["f0"] > 0.25 and features["f3"] > 0.25, features  # 0.25: the usual "significant shift"
    assert max(features["f1"], features["f2"], features["f4"]) < 0.1, features
    assert value(drifted, "modelpilot_drift_score") > calm_score + 0.1
    assert np.isclose(value(drifted, "modelpilot_drift_score"), np.mean(list(features.values())))


# -- answers to broken requests --------------------------------------------------------------------------

SCORING_HEAD = b"POST /invocations HTTP/1.1\r\nHost: model\r\nContent-Type: application/json\r\n"


def raw_request(server: ServerProcess, data: bytes, read_answer: bool) -> bytes:
    """Send `data` on a fresh connection; then the whole answer, or close at once without reading."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(data)
        answer = b""
        while read_answer and (chunk := conn.recv(65536)):
            answer += chunk
        return answer


def counted(server: ServerProcess, before: dict, code: str, expected: int, timeout: float = 30) -> dict:
    """The metrics once `expected` more requests are counted with `code` (the server counts after the socket
    closed, asynchronously), or after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        now = samples(server)
        done = moved(before, now, "modelpilot_requests_total", protocol="mlflow", code=code) >= expected
        if done or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def moved(before: dict, after: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_a_client_that_leaves_mid_body_is_counted_499_not_500(main_server: ServerProcess):
    before = samples(main_server)
    half_body = SCORING_HEAD + b"Content-Length: 200\r\n\r\n" + b'{"dataframe_split": {"col'
    raw_request(main_server, half_body, read_answer=False)
    after = counted(main_server, before, "499", 1)
    assert moved(before, after, "modelpilot_requests_total", protocol="mlflow", code="499") == 1
    assert moved(before, after, "modelpilot_requests_total", protocol="mlflow", code="500") == 0
    assert value(after, "modelpilot_requests_in_flight") == 0
    assert "ClientDisconnect" not in main_server.log  # nobody to answer is not a server error


def test_a_malformed_chunked_body_is_answered_400_and_counted_499(main_server: ServerProcess):
    before = samples(main_server)
    # A good first chunk, then a chunk size that is not hexadecimal.
    broken = SCORING_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"dat\r\nzz\r\nxx\r\n0\r\n\r\n"
    answer = raw_request(main_server, broken, read_answer=True)
    # uvicorn answers it before the application can, and closes the connection: the application never
    # answers, so it counts the request as one whose client it could not answer.
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    after = counted(main_server, before, "499", 1)
    assert moved(before, after, "modelpilot_requests_total", protocol="mlflow", code="499") == 1
    assert moved(before, after, "modelpilot_requests_total", protocol="mlflow", code="500") == 0
    assert main_server.client.get("/ready").status_code == 200


def test_json_nested_too_deeply_is_a_400_with_a_message(main_server: ServerProcess, registered: RegisteredModels):
    before = samples(main_server)
    deep = b'{"dataframe_split": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    answer = main_server.client.post("/invocations", content=deep, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error_code"] == "BAD_REQUEST" and "nested too deeply" in answer.json()["message"]
    after = samples(main_server)
    assert moved(before, after, "modelpilot_requests_total", protocol="mlflow", code="400") == 1
    assert moved(before, after, "modelpilot_requests_total", protocol="mlflow", code="500") == 0
    assert main_server.client.post("/invocations", json=split(registered.holdout.iloc[:3])).status_code == 200


@pytest.fixture(scope="module")
def debug_server(fetched_main: Fetched) -> Iterator[ServerProcess]:
    server = ServerProcess(fetched_main.dest, "--log-level", "debug")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def unparseable_csv(server: ServerProcess):
    return server.client.post("/invocations", content=b'f0,f1\n"1', headers={"Content-Type": "text/csv"})


def test_error_bodies_leave_out_the_stack_trace_unless_debug_logging_is_on(
    main_server: ServerProcess, debug_server: ServerProcess
):
    hidden, shown = unparseable_csv(main_server), unparseable_csv(debug_server)
    assert hidden.status_code == shown.status_code == 400
    # At debug level the body is MLflow's own, stack trace with the server's files included.
    trace = shown.json()["stack_trace"]
    assert "Traceback" in trace and "scoring_server" in trace
    # Otherwise it is the same body without that key, and no file of the server shows.
    assert "stack_trace" not in hidden.json() and ".py" not in hidden.text
    assert hidden.json() == {key: v for key, v in shown.json().items() if key != "stack_trace"}
    assert {"error_code", "message"} <= set(hidden.json())
    assert hidden.text == json.dumps(hidden.json())  # serialised as MLflow does
    assert int(hidden.headers["content-length"]) == len(hidden.content)
