"""Micro-batching: requests that arrive together are scored in one predict call, each still gets the
answer MLflow's scoring app gives it alone (compared as in test_differential), and one bad request never
fails its neighbours."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow.pyfunc import PythonModel

from modelpilot.serving.baseline import DriftMonitor, build_baseline_profile
from modelpilot.serving.batching import split_rows
from modelpilot.serving.metrics import Identity, ServingMetrics
from modelpilot.serving.server import ServingApp
from tests.serving.test_differential import comparable

JSON = {"Content-Type": "application/json"}
CALLS: list[int] = []  # rows per predict call of the models below, in this process
GATE = threading.Event()  # predict waits for it, so that requests queue up behind a running batch
ENTERED = threading.Event()  # set by predict when it starts


class RowWise(PythonModel):
    """One prediction per row; refuses a negative count, like a model meeting data it cannot score."""

    def predict(self, context, model_input, params=None):
        ENTERED.set()
        GATE.wait(timeout=30)
        CALLS.append(len(model_input))
        if (model_input["count"] < 0).any():
            raise ValueError("a negative count")
        return model_input["amount"] * 2 + model_input["count"]


class Summary(PythonModel):
    """One prediction for the whole input: its rows do not map to the input's rows."""

    def predict(self, context, model_input, params=None):
        ENTERED.set()
        GATE.wait(timeout=30)
        CALLS.append(len(model_input))
        return [float(model_input["amount"].sum())]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import mlflow
    from mlflow.models import infer_signature

    frame = pd.DataFrame({"amount": [1.5, 2.0], "count": [1, 2]})
    loaded = {}
    for name, model in [("rowwise", RowWise()), ("summary", Summary())]:
        path = tmp_path_factory.mktemp(name) / "model"
        mlflow.pyfunc.save_model(
            path, python_model=model, signature=infer_signature(frame, [1.0, 2.0]), pip_requirements=["mlflow"]
        )
        loaded[name] = mlflow.pyfunc.load_model(str(path))
    return loaded, frame


def servers(models, name: str, monkeypatch):
    from mlflow.pyfunc import scoring_server

    monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "true")
    loaded, frame = models
    model = loaded[name]
    ours = ServingApp(
        "/nonexistent", ServingMetrics(Identity("batch", "1", "stable")), max_batch_size=32, max_batch_wait=0.05
    )
    drift = DriftMonitor(build_baseline_profile(frame), window=1000, min_rows=1)
    ours.scoring = ours.mlflow_app(model, drift)
    return scoring_server.init(model), ours


def body(rows: list[list]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["amount", "count"], "data": rows}}).encode()


def one_by_one(app, bodies: list[bytes]) -> list[tuple]:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return [await client.post("/invocations", content=b, headers=JSON) for b in bodies]

    GATE.set()
    return [comparable(r) for r in asyncio.run(go())]


def together(ours: ServingApp, bodies: list[bytes]) -> list[tuple]:
    """The first of `bodies` alone, then the rest while its predict call is held, so they queue up."""

    async def until(condition) -> None:
        for _ in range(3000):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise TimeoutError("the requests did not reach the batcher")

    async def go():
        GATE.clear()
        ENTERED.clear()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ours), base_url="http://test") as client:
            post = lambda b: asyncio.create_task(client.post("/invocations", content=b, headers=JSON))  # noqa: E731
            sent = [post(bodies[0])]
            await until(ENTERED.is_set)
            sent += [post(b) for b in bodies[1:]]
            await until(lambda: ours.batcher._queue.qsize() == len(bodies) - 1)
            GATE.set()
            return [await task for task in sent]

    return [comparable(r) for r in asyncio.run(go())]


def test_requests_that_arrive_together_share_a_predict_call_and_get_their_own_answers(models, monkeypatch):
    mlflow_app, ours = servers(models, "rowwise", monkeypatch)
    bodies = [body([[float(i), i], [i + 0.5, 2 * i]][: 1 + i % 2]) for i in range(12)]
    expected = one_by_one(mlflow_app, bodies)
    CALLS.clear()
    assert together(ours, bodies) == expected
    # The first request alone, then the eleven queued behind it in one call.
    assert CALLS == [len(json.loads(bodies[0])["dataframe_split"]["data"]), sum(1 + i % 2 for i in range(1, 12))]
    assert ours.model._drift.rows == sum(1 + i % 2 for i in range(12))


def test_one_bad_request_does_not_fail_its_neighbours(models, monkeypatch):
    mlflow_app, ours = servers(models, "rowwise", monkeypatch)
    bodies = [body([[1.0, 1]]), body([[2.0, 2]]), body([[3.0, -3]]), body([[4.0, 4]])]
    expected = one_by_one(mlflow_app, bodies)
    assert [status for status, _, _ in expected] == [200, 200, 400, 200]
    errors = ours.metrics.prediction_errors._value.get()
    assert together(ours, bodies) == expected
    assert ours.metrics.prediction_errors._value.get() == errors + 1  # the bad request, counted once
    assert ours.batcher.enabled


def test_a_model_whose_predictions_do_not_map_to_rows_is_scored_one_request_at_a_time(models, monkeypatch):
    mlflow_app, ours = servers(models, "summary", monkeypatch)
    bodies = [body([[1.0, 1], [2.0, 2]]), body([[3.0, 3]]), body([[4.0, 4], [5.0, 5], [6.0, 6]])]
    expected = one_by_one(mlflow_app, bodies)
    assert together(ours, bodies) == expected
    assert not ours.batcher.enabled
    CALLS.clear()
    assert one_by_one(ours, bodies) == expected
    assert CALLS == [2, 1, 3]


def test_batching_is_off_by_default(models, monkeypatch):
    monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "true")
    ours = ServingApp("/nonexistent", ServingMetrics(Identity("batch", "1", "stable")))
    ours.scoring = ours.mlflow_app(models[0]["rowwise"])
    assert ours.fast_path is not None and ours.batcher is None


@pytest.mark.parametrize(
    "predictions,sizes,expected",
    [
        (np.arange(5), [2, 3], [[0, 1], [2, 3, 4]]),
        (np.arange(10).reshape(5, 2), [4, 1], [[[0, 1], [2, 3], [4, 5], [6, 7]], [[8, 9]]]),
        ([1, 2, 3], [1, 2], [[1], [2, 3]]),
        (np.arange(4), [2, 3], None),  # fewer predictions than rows
        (np.float64(1.0), [1, 1], None),
        ({"a": [1, 2]}, [1, 1], None),
    ],
)
def test_split_rows(predictions, sizes, expected):
    parts = split_rows(predictions, sizes)
    if expected is None:
        assert parts is None
    else:
        assert [np.asarray(p).tolist() for p in parts] == expected


def test_split_rows_gives_pandas_predictions_the_index_of_a_request_alone():
    series = pd.Series([1.0, 2.0, 3.0], name="y")
    first, second = split_rows(series, [1, 2])
    pd.testing.assert_series_equal(second, pd.Series([2.0, 3.0], name="y"))
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6]})
    _, rest = split_rows(frame, [1, 2])
    pd.testing.assert_frame_equal(rest, pd.DataFrame({"a": [2, 3], "b": [5, 6]}))
    assert split_rows(pd.Series([1.0, 2.0], index=[5, 6]), [1, 1]) is None


def test_the_batching_flags(tmp_path, monkeypatch):
    from modelpilot.serving import server, termination

    args = server.parse_args(["--max-batch-size", "64", "--max-batch-wait-ms", "0.5"])
    assert (args.max_batch_size, args.max_batch_wait_ms) == (64, 0.5)
    assert (server.parse_args([]).max_batch_size, server.parse_args([]).max_batch_wait_ms) == (1, 2.0)
    (tmp_path / "termination-log").touch()
    monkeypatch.setattr(termination, "TERMINATION_LOG", str(tmp_path / "termination-log"))
    for wrong in (["--max-batch-size", "0"], ["--max-batch-wait-ms", "-1"], ["--max-batch-wait-ms", "5000"]):
        with pytest.raises(SystemExit) as exited:
            server.parse_args(wrong)
        assert exited.value.code == 2
        assert "--max-batch-size must be positive" in (tmp_path / "termination-log").read_text()
