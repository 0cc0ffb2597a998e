"""Model versions that misbehave on their own (tests/support/mlflow.py `register_pyfunc_model`), served by
our model server in-process on loopback: what the server answers and what its metrics show for each."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.mlflow import MlflowServer, predict_in_process, register_pyfunc_model

from .conftest import Fetched, ServerProcess, run_fetch

pytestmark = pytest.mark.mlflow

FAIL_ABOVE = 1.0
SLEEP_SECONDS = 0.2
DRIFT_WINDOW, DRIFT_MIN_ROWS = 300, 100
# name suffix -> register_pyfunc_model arguments; one seed, so all three wrap the same classifier.
MODELS = {
    "good": {"behaviour": "good", "baseline_rows": 2000},
    "failing": {"behaviour": "failing", "fail_above": FAIL_ABOVE},
    "slow": {"behaviour": "slow", "sleep_seconds": SLEEP_SECONDS},
}


@dataclass
class Served:
    name: str
    version: str
    fetched: Fetched
    server: ServerProcess


def rows(seed: int, n: int, shift: float = 0.0) -> list[list[float]]:
    """`n` rows drawn like the training data (standard normal), every feature moved by `shift`."""
    return (np.random.default_rng(seed).normal(size=(n, 4)) + shift).round(6).tolist()


def below_threshold(seed: int, n: int) -> list[list[float]]:
    out = rows(seed, n)
    for row in out:
        row[0] = min(row[0], FAIL_ABOVE - 0.1)
    return out


@pytest.fixture(scope="module")
def served(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    """Each behaviour registered once, fetched and served, plus a second server of the good model that
    only the drift test talks to, so its window holds nothing else."""

    def prepare(key: str) -> tuple[str, str, Fetched]:
        name = f"pyfunc-{key}"
        version = register_pyfunc_model(mlflow_server, name, **MODELS[key])
        fetched = run_fetch(mlflow_server, f"models:/{name}/{version}", tmp_path_factory.mktemp(key) / "model")
        assert fetched.returncode == 0, fetched.stderr
        return name, version, fetched

    with ThreadPoolExecutor(len(MODELS)) as pool:
        prepared = dict(zip(MODELS, pool.map(prepare, MODELS)))

    def start(key: str, *args: str) -> ServerProcess:
        name, version, fetched = prepared[key]
        env = {"MODELPILOT_MODEL_NAME": name, "MODELPILOT_MODEL_VERSION": version}
        return ServerProcess(fetched.dest, *args, env=env)

    servers = {key: start(key) for key in MODELS}
    servers["drift"] = start("good", "--drift-window", str(DRIFT_WINDOW), "--drift-min-rows", str(DRIFT_MIN_ROWS))
    try:
        for server in servers.values():
            server.wait_ready()
        yield {key: Served(*prepared[key if key in MODELS else "good"], server) for key, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()


def metric(server: ServerProcess, name: str, **labels: str) -> float | None:
    """The value of the one series `name` with `labels` (besides the common ones) the server exports now."""
    found = [
        sample.value
        for family in text_string_to_metric_families(server.metrics())
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def snapshot(server: ServerProcess) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(server.metrics())
        for sample in family.samples
    }


def score(served: Served, body_rows: list[list[float]]):
    return served.server.client.post("/invocations", json={"inputs": body_rows})


def test_a_good_version_answers_what_it_predicts_in_process(served: dict[str, Served], mlflow_server: MlflowServer):
    good = served["good"]
    assert good.fetched.manifest["baseline"] == "model"  # baseline_rows put the profile among the model's files
    inputs = rows(seed=1, n=40)
    response = score(good, inputs)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert predictions == predict_in_process(mlflow_server, good.name, good.version, inputs)
    assert set(predictions) == {0, 1}  # both classes, so the equality says something
    assert response.headers["modelpilot-model-name"] == good.name
    assert response.headers["modelpilot-model-version"] == good.version
    assert metric(good.server, "modelpilot_prediction_errors_total") == 0


def test_a_failing_version_fails_the_requests_with_a_row_above_the_threshold(served: dict[str, Served]):
    failing, good = served["failing"], served["good"]
    assert failing.fetched.manifest["baseline"] is None
    errors_before = metric(failing.server, "modelpilot_prediction_errors_total")
    ok_before = metric(failing.server, "modelpilot_requests_total", protocol="mlflow", code="200")
    rejected_before = metric(failing.server, "modelpilot_requests_total", protocol="mlflow", code="400")

    below = [below_threshold(seed, 10) for seed in (2, 3)]
    for inputs in below:
        answer = score(failing, inputs)
        assert answer.status_code == 200, answer.text
        # Below the threshold it is the good model: same classifier, same answers.
        assert answer.json()["predictions"] == score(good, inputs).json()["predictions"]

    failed = 3
    for seed in range(4, 4 + failed):
        inputs = below_threshold(seed, 10)
        inputs[seed % 10][0] = FAIL_ABOVE + 0.5  # one row of ten above the threshold
        answer = score(failing, inputs)
        assert answer.status_code == 400, answer.text
        body = answer.json()
        assert body["error_code"] == "BAD_REQUEST" and "error while evaluating the model" in body["message"], body
        assert "stack_trace" not in body
        # The same rows are fine for the same classifier without the failing wrapper: the model fails, not
        # the request or the server.
        assert score(good, inputs).status_code == 200

    assert metric(failing.server, "modelpilot_prediction_errors_total") - errors_before == failed
    assert metric(failing.server, "modelpilot_requests_total", protocol="mlflow", code="400") - rejected_before == failed
    assert metric(failing.server, "modelpilot_requests_total", protocol="mlflow", code="200") - ok_before == len(below)
    assert metric(failing.server, "modelpilot_requests_total", protocol="mlflow", code="500") == 0


def test_a_slow_version_puts_every_request_above_its_sleep_in_the_latency_histogram(served: dict[str, Served]):
    slow, good = served["slow"], served["good"]
    assert slow.fetched.manifest["baseline"] is None
    before = snapshot(slow.server)
    requests = 4
    for seed in range(10, 10 + requests):
        inputs = rows(seed, 5)
        answer = score(slow, inputs)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == score(good, inputs).json()["predictions"]
    after = snapshot(slow.server)

    buckets: dict[float, float] = {}
    for (name, labels), value in after.items():
        if name == "modelpilot_request_duration_seconds_bucket" and dict(labels)["protocol"] == "mlflow":
            buckets[float(dict(labels)["le"])] = value - before.get((name, labels), 0.0)
    assert math.inf in buckets and any(le < SLEEP_SECONDS for le in buckets), sorted(buckets)
    # Cumulative buckets: none of the requests is in a bucket below the sleep, all of them in +Inf.
    assert {le: n for le, n in buckets.items() if le < SLEEP_SECONDS} == {
        le: 0.0 for le in buckets if le < SLEEP_SECONDS
    }, sorted(buckets.items())
    assert buckets[math.inf] == requests, sorted(buckets.items())

    def moved(name: str) -> float:
        key = next(key for key in after if key[0] == name and ("protocol", "mlflow") in key[1])
        return after[key] - before.get(key, 0.0)

    assert moved("modelpilot_request_duration_seconds_count") == requests
    assert moved("modelpilot_request_duration_seconds_sum") >= requests * SLEEP_SECONDS


def test_inputs_far_from_the_training_data_raise_the_drift_score_once_enough_rows_arrived(served: dict[str, Served]):
    drift = served["drift"]
    assert metric(drift.server, "modelpilot_drift_score") is None

    # Rows drawn like the training data: nothing exported below --drift-min-rows, then a low score.
    calm = rows(seed=20, n=DRIFT_WINDOW)
    assert score(drift, calm[: DRIFT_MIN_ROWS - 10]).status_code == 200
    assert metric(drift.server, "modelpilot_drift_score") is None
    for start in range(DRIFT_MIN_ROWS - 10, DRIFT_WINDOW, 50):
        assert score(drift, calm[start : start + 50]).status_code == 200
    calm_score = metric(drift.server, "modelpilot_drift_score")
    assert calm_score is not None and 0 <= calm_score < 0.1, calm_score

    # Rows four standard deviations away in every feature, until they fill the window.
    far = rows(seed=21, n=DRIFT_WINDOW, shift=4.0)
    for start in range(0, DRIFT_WINDOW, 50):
        assert score(drift, far[start : start + 50]).status_code == 200
    drifted = metric(drift.server, "modelpilot_drift_score")
    features = {str(i): metric(drift.server, "modelpilot_feature_drift", feature=str(i)) for i in range(4)}
    assert drifted > 0.25, (drifted, features)  # 0.25: the usual "significant shift"
    assert all(value > 0.25 for value in features.values()), features
    assert np.isclose(drifted, np.mean(list(features.values())))


# -- the same versions through the Open Inference Protocol (v2) --------------------------------------------


def infer_v2(served: Served, body_rows: list[list[float]]):
    """One [N, 4] FP64 tensor: the models' signature is an unnamed tensor (infer_signature of an array)."""
    body = {"inputs": [{"name": "rows", "datatype": "FP64", "shape": [len(body_rows), 4], "data": body_rows}]}
    return served.server.client.post(f"/v2/models/{served.name}/versions/{served.version}/infer", json=body)


def test_a_tensor_signature_takes_one_tensor_through_v2(served: dict[str, Served], mlflow_server: MlflowServer):
    good = served["good"]
    metadata = good.server.client.get(f"/v2/models/{good.name}").json()
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    inputs = rows(seed=30, n=40)
    answer = infer_v2(good, inputs)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["shape"] == [40]
    assert output["data"] == predict_in_process(mlflow_server, good.name, good.version, inputs)
    assert output["data"] == score(good, inputs).json()["predictions"]
    assert set(output["data"]) == {0, 1}


def test_a_model_that_fails_is_a_500_through_v2_and_a_prediction_error(served: dict[str, Served]):
    failing = served["failing"]
    errors_before = metric(failing.server, "modelpilot_prediction_errors_total")
    failed_before = metric(failing.server, "modelpilot_requests_total", protocol="v2", code="500")
    inputs = below_threshold(40, 10)
    assert infer_v2(failing, inputs).status_code == 200
    inputs[3][0] = FAIL_ABOVE + 0.5
    answer = infer_v2(failing, inputs)
    # MLServer answers a model that raises 500 with the exception in `error`; /invocations (MLflow's) says 400.
    assert answer.status_code == 500, answer.text
    assert answer.json() == {
        "error": f"the model failed to predict: ValueError: 1 of 10 rows have feature 0 above {FAIL_ABOVE}"
    }
    assert score(failing, inputs).status_code == 400
    assert metric(failing.server, "modelpilot_prediction_errors_total") - errors_before == 2  # v2 and /invocations
    assert metric(failing.server, "modelpilot_requests_total", protocol="v2", code="500") - failed_before == 1
