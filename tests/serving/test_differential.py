"""The model server answers every /invocations request exactly as MLflow's own scoring app does.

Both run in this process over ASGI on the same loaded models: MLflow's app as ``mlflow models serve`` runs
it (``scoring_server.init``), and modelpilot's server with its fast path, metrics and drift. For every
request, hand-picked and generated, the two answers must have the same status, content type and body.
Error bodies are compared without ``stack_trace`` (modelpilot leaves it out; it is a traceback) and with
memory addresses masked (MLflow prints some objects with their ``id``). Whenever the fast path takes a
request, the DataFrame it hands the model must equal the one MLflow's schema enforcement would have.
"""

from __future__ import annotations

import asyncio
import json
import math
import re

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelpilot.serving.baseline import DriftMonitor, build_baseline_profile
from modelpilot.serving.metrics import Identity, ServingMetrics
from modelpilot.serving.server import ServingApp

JSON = "application/json"
COLUMNS = ["f0", "f1", "f2", "f3"]
REQ = ["mlflow"]  # saves MLflow inferring the requirements in a subprocess: these models never leave


class Mixed:
    """A pyfunc model over a double and a long column that fails on a negative count."""

    def predict(self, context, model_input):
        if (model_input["count"] < 0).any():
            raise ValueError("a negative count")
        return model_input["amount"] * 2 + model_input["count"]


def _train(tmp_path_factory):
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.pyfunc import PythonModel
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(200, 4)), columns=COLUMNS)
    y = (X["f0"] + X["f1"] > 0).astype(int)
    clf = LogisticRegression().fit(X, y)
    root = tmp_path_factory.mktemp("differential")
    paths = {}
    paths["double"] = root / "double"
    mlflow.sklearn.save_model(clf, paths["double"], signature=infer_signature(X, clf.predict(X)), pip_requirements=REQ)
    paths["unsigned"] = root / "unsigned"
    mlflow.sklearn.save_model(clf, paths["unsigned"], pip_requirements=REQ)
    paths["tensor"] = root / "tensor"
    mlflow.sklearn.save_model(
        clf, paths["tensor"], signature=infer_signature(X.to_numpy(), clf.predict(X)), pip_requirements=REQ
    )

    class MixedModel(PythonModel):
        def predict(self, context, model_input, params=None):
            return Mixed().predict(context, model_input)

    frame = pd.DataFrame({"amount": [1.5, 2.0], "count": [1, 2]})
    paths["mixed"] = root / "mixed"
    mlflow.pyfunc.save_model(
        paths["mixed"], python_model=MixedModel(), signature=infer_signature(frame, [1.0, 2.0]), pip_requirements=REQ
    )
    frame = pd.DataFrame({"amount": [1.5, 2.0], "kind": ["a", "b"]})
    paths["strings"] = root / "strings"
    mlflow.pyfunc.save_model(
        paths["strings"], python_model=MixedModel(), signature=infer_signature(frame, [1.0]), pip_requirements=REQ
    )
    return {name: mlflow.pyfunc.load_model(str(path)) for name, path in paths.items()}, X


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Per model: (MLflow's scoring app, modelpilot's server) on the same loaded model."""
    from mlflow.pyfunc import scoring_server

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "true")  # init() sets it; undone after the module
        models, X = _train(tmp_path_factory)
        pairs = {}
        for name, model in models.items():
            ours = ServingApp("/nonexistent", ServingMetrics(Identity("diff", "1", "stable")))
            drift = DriftMonitor(build_baseline_profile(X), window=100, min_rows=1) if name == "double" else None
            ours.scoring = ours.mlflow_app(model, drift)
            pairs[name] = (scoring_server.init(model), ours, model)
        yield pairs


def answer(app, body: bytes, content_type: str | None, method: str = "POST") -> httpx.Response:
    async def go():
        # An exception out of the app is the 500 an ASGI server answers for it (MLflow raises on some input).
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = {"Content-Type": content_type} if content_type is not None else {}
            return await client.request(method, "/invocations", content=body, headers=headers)

    return asyncio.run(go())


_ADDRESS = re.compile(r"0x[0-9a-f]{6,}")


def comparable(response: httpx.Response):
    """Status, content type and body; an error body without its traceback and memory addresses."""
    body = response.content
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith(JSON):
        error = json.loads(body)
        error.pop("stack_trace", None)
        body = _ADDRESS.sub("0x?", json.dumps(error, sort_keys=True)).encode()
    return response.status_code, response.headers.get("content-type"), body


def assert_same_answer(served, model: str, body: bytes, content_type: str | None = JSON, method: str = "POST"):
    mlflow_app, ours, loaded = served[model]
    expected = comparable(answer(mlflow_app, body, content_type, method))
    got = comparable(answer(ours, body, content_type, method))
    assert got == expected, f"{model}: {body[:300]!r}"
    if content_type == JSON and method == "POST" and ours.fast_path is not None:
        assert_fast_frame_is_enforced_frame(ours, loaded, body)
    return got


def assert_fast_frame_is_enforced_frame(ours, model, body: bytes) -> None:
    """The fast path's DataFrame, when it takes the request, is the one MLflow's enforcement builds."""
    from mlflow.pyfunc import _validate_prediction_input
    from mlflow.pyfunc.scoring_server import _parse_json_data

    frame = ours.fast_path.frame(body)
    if frame is None:
        return
    meta = model.metadata
    schema = meta.get_input_schema()
    data = _parse_json_data(body, meta, schema).data
    enforced, _ = _validate_prediction_input(data, None, schema, None, model.loader_module)
    pd.testing.assert_frame_equal(frame, enforced, check_exact=True)
    assert frame.columns.dtype == enforced.columns.dtype


def dumps(document) -> bytes:
    return json.dumps(document).encode()


def split(columns, data, **extra) -> bytes:
    return dumps({"dataframe_split": {"columns": columns, "data": data, **extra}})


ROWS = [[0.5, -1.25, 3.0, 0.0], [1.0, 2.0, -0.5, 0.25]]

# Hand-picked requests for the double-signature model: (name, body, content type).
HAND_PICKED = [
    ("split", split(COLUMNS, ROWS), JSON),
    ("split, columns permuted", split(COLUMNS[::-1], [r[::-1] for r in ROWS]), JSON),
    ("split, integers in double columns", split(COLUMNS, [[1, 2, 3, 4]]), JSON),
    ("split, an integer too large for a double", split(COLUMNS, [[2**60 + 1, 2, 3, 4]]), JSON),
    ("split, an integer beyond int64", split(COLUMNS, [[2**70, 2, 3, 4]]), JSON),
    ("split, NaN", b'{"dataframe_split": {"columns": ["f0","f1","f2","f3"], "data": [[NaN, 1, 2, 3]]}}', JSON),
    ("split, Infinity", b'{"dataframe_split": {"columns": ["f0","f1","f2","f3"], "data": [[Infinity, 1, 2, 3]]}}', JSON),
    ("split, with index", split(COLUMNS, ROWS, index=[7, 9]), JSON),
    ("split, no columns", dumps({"dataframe_split": {"data": ROWS}}), JSON),
    ("split, no rows", split(COLUMNS, []), JSON),
    ("split, a missing column", split(COLUMNS[:3], [r[:3] for r in ROWS]), JSON),
    ("split, an extra column", split([*COLUMNS, "extra"], [[*r, 1.0] for r in ROWS]), JSON),
    ("split, a column named by a list", split([["f0"], "f1", "f2", "f3"], ROWS), JSON),
    ("split, a column named by a number", split([0, "f1", "f2", "f3"], ROWS), JSON),
    ("split, rows as objects", split(COLUMNS, [dict(zip(COLUMNS, r)) for r in ROWS]), JSON),
    ("split, a duplicated column", split([*COLUMNS[:3], "f0"], ROWS), JSON),
    ("split, a short row", split(COLUMNS, [ROWS[0], ROWS[1][:3]]), JSON),
    ("split, a string value", split(COLUMNS, [["x", 1.0, 2.0, 3.0]]), JSON),
    ("split, a numeric string", split(COLUMNS, [["1.5", 1.0, 2.0, 3.0]]), JSON),
    ("split, a boolean", split(COLUMNS, [[True, 1.0, 2.0, 3.0]]), JSON),
    ("split, null", split(COLUMNS, [[None, 1.0, 2.0, 3.0]]), JSON),
    ("split, a list value", split(COLUMNS, [[[1.0], 1.0, 2.0, 3.0]]), JSON),
    ("split, data not a list", dumps({"dataframe_split": {"columns": COLUMNS, "data": 3}}), JSON),
    ("split, not a dict", dumps({"dataframe_split": ROWS}), JSON),
    ("split, an unknown key", split(COLUMNS, ROWS, orient="split"), JSON),
    ("split with params", dumps({"dataframe_split": {"columns": COLUMNS, "data": ROWS}, "params": {"a": 1}}), JSON),
    ("split with an unknown top-level key", dumps({"dataframe_split": {"columns": COLUMNS, "data": ROWS}, "x": 1}), JSON),
    ("records", dumps({"dataframe_records": [dict(zip(COLUMNS, r)) for r in ROWS]}), JSON),
    ("records, keys in another order", dumps({"dataframe_records": [dict(zip(COLUMNS[::-1], r[::-1])) for r in ROWS]}), JSON),
    ("records, a missing key", dumps({"dataframe_records": [dict(zip(COLUMNS, ROWS[0])), dict(zip(COLUMNS[:3], ROWS[1]))]}), JSON),
    ("records, an extra key", dumps({"dataframe_records": [{**dict(zip(COLUMNS, r)), "extra": 1} for r in ROWS]}), JSON),
    ("records, empty", dumps({"dataframe_records": []}), JSON),
    ("records, not a list", dumps({"dataframe_records": dict(zip(COLUMNS, ROWS[0]))}), JSON),
    ("instances", dumps({"instances": [dict(zip(COLUMNS, r)) for r in ROWS]}), JSON),
    ("inputs, columns", dumps({"inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(COLUMNS)}}), JSON),
    ("inputs, rows", dumps({"inputs": ROWS}), JSON),
    ("two formats", dumps({"dataframe_split": {"columns": COLUMNS, "data": ROWS}, "inputs": ROWS}), JSON),
    ("no format", dumps({"data": ROWS}), JSON),
    ("a list", dumps(ROWS), JSON),
    ("a number", b"3", JSON),
    ("empty body", b"", JSON),
    ("malformed JSON", b'{"dataframe_split": {"columns": ["f0"', JSON),
    ("not UTF-8", b'{"dataframe_split": "\xff\xfe"}', JSON),
    ("LLM-style input", dumps({"messages": [{"role": "user", "content": "hi"}]}), JSON),
    ("charset utf-8", split(COLUMNS, ROWS), "application/json; charset=utf-8"),
    ("charset latin-1", split(COLUMNS, ROWS), "application/json; charset=latin-1"),
    ("an unknown parameter", split(COLUMNS, ROWS), "application/json; format=pandas-split"),
    ("upper-case type", split(COLUMNS, ROWS), "Application/JSON"),
    ("CSV", pd.DataFrame(ROWS, columns=COLUMNS).to_csv(index=False).encode(), "text/csv"),
    ("CSV, a text value", b"f0,f1,f2,f3\nx,1,2,3\n", "text/csv"),
    ("parquet", pd.DataFrame(ROWS, columns=COLUMNS).to_parquet(), "application/vnd.apache.parquet"),
    ("parquet, broken", b"PAR1 not really", "application/vnd.apache.parquet"),
    ("unsupported type", split(COLUMNS, ROWS), "text/plain"),
]


@pytest.mark.parametrize("model", ["double", "unsigned", "tensor", "mixed", "strings"])
@pytest.mark.parametrize("name,body,content_type", HAND_PICKED, ids=[case[0] for case in HAND_PICKED])
def test_hand_picked_requests_get_mlflow_s_answer(served, model, name, body, content_type):
    assert_same_answer(served, model, body, content_type)


MIXED = [
    ("mixed split", split(["amount", "count"], [[1.5, 2], [0.25, 3]])),
    ("mixed records", dumps({"dataframe_records": [{"count": 2, "amount": 1.5}]})),
    ("a float in a long column", split(["amount", "count"], [[1.5, 2.5]])),
    ("an integer beyond int64 in a long column", split(["amount", "count"], [[1.5, 2**63]])),
    ("the model raises", split(["amount", "count"], [[1.5, -1]])),
    ("the model raises on one row of two", split(["amount", "count"], [[1.5, 1], [1.5, -1]])),
]


@pytest.mark.parametrize("name,body", MIXED, ids=[case[0] for case in MIXED])
def test_hand_picked_requests_to_a_model_with_a_long_column(served, name, body):
    assert_same_answer(served, "mixed", body)


def test_the_common_requests_take_the_fast_path(served):
    # Otherwise the comparisons above would only compare MLflow with itself.
    for model, body in [
        ("double", split(COLUMNS, ROWS)),
        ("double", dumps({"dataframe_records": [dict(zip(COLUMNS, r)) for r in ROWS]})),
        ("unsigned", split(COLUMNS, ROWS)),
        ("mixed", split(["amount", "count"], [[1.5, 2]])),
    ]:
        assert served[model][1].fast_path.frame(body) is not None, model
    assert served["tensor"][1].fast_path is None
    assert served["strings"][1].fast_path is None


def test_a_request_the_model_fails_on_is_counted_once(served):
    _, ours, _ = served["mixed"]
    before = ours.metrics.prediction_errors._value.get()
    status, _, _ = assert_same_answer(served, "mixed", split(["amount", "count"], [[1.5, -1]]))
    assert status == 400
    assert ours.metrics.prediction_errors._value.get() == before + 1


def test_other_methods_get_mlflow_s_answer(served):
    assert_same_answer(served, "double", b"", None, method="GET")
    assert_same_answer(served, "double", split(COLUMNS, ROWS), JSON, method="PUT")


def test_scored_rows_reach_the_drift_window(served):
    _, ours, _ = served["double"]
    monitor = ours.model._drift
    before = monitor.rows
    assert_same_answer(served, "double", split(COLUMNS, ROWS))
    assert monitor.rows == min(monitor.window, before + len(ROWS))


# -- generated requests --------------------------------------------------------------------------------

NAMES = {"double": COLUMNS, "unsigned": COLUMNS, "tensor": COLUMNS, "mixed": ["amount", "count"],
         "strings": ["amount", "kind"]}  # fmt: skip

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(min_value=-1e6, max_value=1e6),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.integers(min_value=-50, max_value=50),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=2),
)
plain = st.floats(min_value=-1e6, max_value=1e6)


def _offset(column: str) -> float:
    return 10.0 * (sum(map(ord, column)) % 17 + 1)


@st.composite
def requests(draw, names: list[str]):
    """A request body: mostly well-formed requests for `names`, with now and then a column, a value, a
    key or a byte out of place. Hypothesis favours the low end of a range, so the rare choices are the
    high ends, and the most common format comes first."""
    columns = list(names)
    if draw(st.booleans()):
        columns = draw(st.permutations(columns))
    if draw(st.integers(0, 4)) == 4:
        odd = st.sampled_from([0, None, ["f0"], {"f0": 1}])
        columns = draw(st.lists(st.sampled_from([*names, "extra", "f9"]) | odd, max_size=len(names) + 1))
    cell = values if draw(st.integers(0, 3)) == 3 else plain
    rows = draw(st.lists(st.lists(cell, min_size=len(columns), max_size=len(columns)), min_size=0, max_size=4))
    # Each column's plain values apart from every other column's, so a value scored under the wrong
    # column changes the answer even when the drawn values are all alike.
    rows = [[v + _offset(str(c)) if type(v) is float and math.isfinite(v) else v for c, v in zip(columns, r)] for r in rows]
    keys = [c if isinstance(c, str) else json.dumps(c) for c in columns]  # JSON object keys are text
    if rows and draw(st.integers(0, 6)) == 6:
        rows[-1] = rows[-1][:-1]
    fmt = draw(st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs", "inputs-columns"]))
    if fmt == "dataframe_split":
        inner = {"columns": columns, "data": rows}
        if draw(st.integers(0, 8)) == 8:
            inner["index"] = list(range(len(rows)))
        document = {"dataframe_split": inner}
    elif fmt == "inputs-columns":
        document = {"inputs": {c: [r[i] for r in rows if i < len(r)] for i, c in enumerate(keys)}}
    else:
        document = {fmt: [dict(zip(keys, r)) for r in rows]}
    if draw(st.integers(0, 10)) == 10:
        document["params"] = {"threshold": 0.5}
    body = json.dumps(document, allow_nan=True).encode()
    if draw(st.integers(0, 15)) == 15:
        body = body[: draw(st.integers(0, len(body)))]
    return body


@pytest.mark.parametrize("model", list(NAMES))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_requests_get_mlflow_s_answer(served, model, data):
    body = data.draw(requests(NAMES[model]))
    assert_same_answer(served, model, body)


@pytest.mark.long
@pytest.mark.parametrize("model", list(NAMES))
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_many_generated_requests_get_mlflow_s_answer(served, model, data):
    body = data.draw(requests(NAMES[model]))
    assert_same_answer(served, model, body)
