"""The Open Inference Protocol's pure parts (tensor decoding and encoding, signatures as tensors, metadata)
and its endpoints in-process, on MLflow's real signature types and a stand-in model. The real server on a
real registered model, through tritonclient, is in tests/serving/test_open_inference.py."""

from __future__ import annotations

import asyncio
import json
import threading
import warnings

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.models import infer_signature as mlflow_infer_signature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.http._utils import _get_inference_request

from modelpilot.serving import open_inference as oi
from modelpilot.serving.metrics import Identity
from modelpilot.serving.server import ServingApp
from tests.unit.asgi import call, serving_app


def tensor(name="x", datatype="FP64", shape=(2,), data=(1.0, 2.0), **extra) -> dict:
    """A request input as JSON gives it: Python lists of Python values (numpy values, ranges and Series
    are converted as json.loads would have them)."""
    values = data if isinstance(data, list) else np.asarray(list(data), dtype=object).tolist()
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    return {"name": name, "datatype": datatype, "shape": list(shape), "data": values, **extra}


def decoded(spec: dict) -> oi.Tensor:
    return oi.decode_tensor(spec)[0]


def bad(spec: dict) -> str:
    with pytest.raises(oi.BadRequest) as error:
        oi.decode_tensor(spec)
    return error.value.message


# -- decoding ------------------------------------------------------------------------------------------


def test_flatten_is_row_major_and_needs_no_recursion():
    assert oi.flatten([[1, 2], [3, [4, 5]], [], 6]) == [1, 2, 3, 4, 5, 6]
    assert oi.flatten(7) == [7]
    deep: list = [1]
    for _ in range(50_000):
        deep = [deep]
    assert oi.flatten(deep) == [1]


@pytest.mark.parametrize(
    "datatype, data, dtype",
    [
        ("BOOL", [True, False], np.bool_),
        ("INT8", [-128, 127], np.int8),
        ("INT16", [-32768, 32767], np.int16),
        ("INT32", [-(2**31), 2**31 - 1], np.int32),
        ("INT64", [-(2**63), 2**63 - 1], np.int64),
        ("UINT8", [0, 255], np.uint8),
        ("UINT16", [0, 65535], np.uint16),
        ("UINT32", [0, 2**32 - 1], np.uint32),
        ("UINT64", [0, 2**64 - 1], np.uint64),
        ("FP16", [0.5, -2], np.float16),
        ("FP32", [0.25, 3], np.float32),
        ("FP64", [0.1, 1e300], np.float64),
    ],
)
def test_every_numeric_datatype_decodes_to_its_numpy_type(datatype, data, dtype):
    result = decoded(tensor(datatype=datatype, shape=(2,), data=data))
    assert result.data.dtype == np.dtype(dtype)
    assert result.data.tolist() == [dtype(v).item() for v in data]


def test_bytes_are_strings_in_an_object_array():
    result = decoded(tensor(datatype="BYTES", shape=(1, 2), data=[["a", "é"]]))
    assert result.data.dtype == object and result.data.shape == (1, 2) and result.data.tolist() == [["a", "é"]]
    assert "must be strings" in bad(tensor(datatype="BYTES", shape=(1,), data=[1]))


def test_nested_and_flat_data_decode_alike_in_row_major_order():
    flat = decoded(tensor(shape=(2, 3), data=[1, 2, 3, 4, 5, 6]))
    nested = decoded(tensor(shape=(2, 3), data=[[1, 2, 3], [4, 5, 6]]))
    assert flat.data.shape == nested.data.shape == (2, 3)
    assert flat.data.tolist() == nested.data.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert decoded(tensor(shape=(0, 3), data=[])).data.shape == (0, 3)


def test_values_that_do_not_fit_their_datatype_are_refused():
    assert "outside the range of INT8 (-128..127)" in bad(tensor(datatype="INT8", data=[1, 128]))
    assert "outside the range of UINT16" in bad(tensor(datatype="UINT16", data=[-1, 2]))
    assert "must be integers" in bad(tensor(datatype="INT32", data=[1.5, 2]))
    assert "must be integers" in bad(tensor(datatype="INT64", data=[True, False]))
    assert "must be numbers" in bad(tensor(datatype="FP32", data=["1", "2"]))
    assert "must be numbers" in bad(tensor(datatype="FP64", data=[None, 1.0]))
    assert "must be true or false" in bad(tensor(datatype="BOOL", data=[0, 1]))
    # Integers are numbers: an FP tensor may carry them.
    assert decoded(tensor(datatype="FP32", data=[1, 2])).data.tolist() == [1.0, 2.0]


def test_malformed_tensors_are_refused_with_what_is_wrong():
    assert bad(tensor(shape=(2, 2))) == "input 'x' has 2 values; its shape holds 4"
    assert 'has datatype "FP128"' in bad(tensor(datatype="FP128"))
    assert "has datatype null" in bad({"name": "x", "shape": [1], "data": [1]})
    assert "non-negative integers" in bad(tensor(shape=(-1,)))
    assert "non-negative integers" in bad({**tensor(), "shape": "2"})
    assert "has no data" in bad({"name": "x", "datatype": "FP64", "shape": [1]})
    assert "has no name" in bad({"datatype": "FP64", "shape": [1], "data": [1]})


def test_requests_are_checked_as_a_whole():
    def refused(body: bytes) -> str:
        with pytest.raises(oi.BadRequest) as error:
            oi.decode_request(body)
        return error.value.message

    assert "not valid JSON" in refused(b'{"inputs": [')
    assert "nested too deeply" in refused(b"[" * 100_000 + b"]" * 100_000)
    assert "JSON object" in refused(b"[1]")
    assert "non-empty list" in refused(b'{"inputs": []}')
    assert "'id' must be a string" in refused(json.dumps({"id": 7, "inputs": [tensor()]}).encode())
    assert "more than one input named 'x'" in refused(json.dumps({"inputs": [tensor(), tensor()]}).encode())
    assert "'outputs' must be" in refused(json.dumps({"inputs": [tensor()], "outputs": ["y"]}).encode())
    request = oi.decode_request(
        json.dumps(
            {"id": "r", "parameters": {"a": 1}, "inputs": [tensor()], "outputs": [{"name": "y"}]}
        ).encode()
    )
    assert (request.id, request.parameters, request.outputs) == ("r", {"a": 1}, ["y"])


def test_tritonclients_binary_tensor_data_decodes_like_its_json():
    """The bytes tritonclient sends (its binary tensor data extension, on by default) for each datatype."""
    values = {
        "BOOL": np.array([[True], [False]]),
        "INT8": np.array([[-5], [7]], dtype=np.int8),
        "UINT32": np.array([[1], [2**32 - 1]], dtype=np.uint32),
        "INT64": np.array([[-(2**40)], [3]], dtype=np.int64),
        "FP16": np.array([[0.5], [1.5]], dtype=np.float16),
        "FP32": np.array([[0.25], [-3.5]], dtype=np.float32),
        "FP64": np.array([[0.1], [2.2]], dtype=np.float64),
        "BYTES": np.array([["fraud"], ["légitime"]], dtype=object),
    }
    inputs = []
    for name, array in values.items():
        infer_input = triton.InferInput(name.lower(), list(array.shape), name)
        infer_input.set_data_from_numpy(array, binary_data=True)
        inputs.append(infer_input)
    body, json_size = _get_inference_request(inputs, "r1", None, 0, False, False, 0, None, None)
    assert json_size is not None  # binary data follows the JSON
    request = oi.decode_request(body, json_size)
    assert request.id == "r1" and request.parameters == {"binary_data_output": True}
    for name, array in values.items():
        (got,) = [t for t in request.inputs if t.name == name.lower()]
        assert got.data.dtype == (np.dtype(object) if name == "BYTES" else array.dtype), name
        assert got.data.shape == array.shape and got.data.tolist() == array.tolist(), name
    with pytest.raises(oi.BadRequest, match="no input claims"):
        oi.decode_request(body + b"\0", json_size)
    with pytest.raises(oi.BadRequest, match="body has fewer"):
        oi.decode_request(body[:-1], json_size)


# -- signatures as tensors, and what predict gets ------------------------------------------------------------

def infer_signature(*args) -> ModelSignature:
    """MLflow's, without its hint about integer columns and missing values (FRAME has one on purpose)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        return mlflow_infer_signature(*args)


FRAME = pd.DataFrame({"age": [31, 45, 27], "income": [2.5, 4.0, 3.1], "city": ["Lyon", "Nantes", "Lille"]})


def io_of(signature: ModelSignature | None) -> oi.ModelIO:
    return oi.describe(Model(signature=signature))


def test_a_column_signature_is_one_tensor_per_column():
    io = io_of(infer_signature(FRAME, np.array([0, 1, 0])))
    assert io.kind == "columns"
    assert [m.as_json() for m in io.inputs] == [
        {"name": "age", "datatype": "INT64", "shape": [-1, 1]},
        {"name": "income", "datatype": "FP64", "shape": [-1, 1]},
        {"name": "city", "datatype": "BYTES", "shape": [-1, 1]},
    ]
    assert [m.as_json() for m in io.outputs] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]
    # Columns sent in any order and shape [N] or [N, 1] make the signature's DataFrame.
    tensors = [
        decoded(tensor("city", "BYTES", (3,), FRAME["city"])),
        decoded(tensor("income", "FP64", (3, 1), FRAME["income"])),
        decoded(tensor("age", "INT64", (3, 1), FRAME["age"])),
    ]
    frame = oi.model_input(io, tensors)
    assert list(frame.columns) == ["age", "income", "city"]
    pd.testing.assert_frame_equal(frame, FRAME)


def test_column_requests_that_do_not_fit_the_signature_are_refused():
    io = io_of(infer_signature(FRAME))
    age, income, city = (decoded(tensor(c, "FP64" if c != "city" else "BYTES", (3,), FRAME[c])) for c in FRAME)

    def refused(*tensors: oi.Tensor) -> str:
        with pytest.raises(oi.BadRequest) as error:
            oi.model_input(io, list(tensors))
        return error.value.message

    assert refused(age, income) == "missing input 'city': the model's inputs are 'age', 'income', 'city'"
    assert refused(age, income, city, decoded(tensor("zip", data=[1, 2, 3], shape=(3,)))).startswith(
        "unknown input 'zip'"
    )
    two_rows = decoded(tensor("age", data=[1, 2], shape=(2,)))
    assert "different numbers of rows: 'age' 2, 'income' 3" in refused(two_rows, income, city)
    wide = decoded(tensor("age", data=range(6), shape=(3, 2)))
    assert refused(wide, income, city) == "input 'age' has shape [3, 2]: a column is [N] or [N, 1]"


def test_optional_columns_may_be_left_out():
    schema = Schema([ColSpec("double", "a"), ColSpec("string", "note", required=False)])
    io = io_of(ModelSignature(inputs=schema))
    assert io.inputs[1].as_json() == {
        "name": "note", "datatype": "BYTES", "shape": [-1, 1], "parameters": {"optional": True}
    }  # fmt: skip
    frame = oi.model_input(io, [decoded(tensor("a", data=[1.0], shape=(1,)))])
    assert list(frame.columns) == ["a"]


def test_a_tensor_signature_takes_one_array_and_named_tensors_a_dict():
    matrix = np.arange(6, dtype=np.float32).reshape(3, 2)
    io = io_of(infer_signature(matrix, np.array([1, 0, 1])))
    assert io.kind == "tensor"
    assert [m.as_json() for m in io.inputs] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 2]}]
    given = decoded(tensor("anything", "FP32", (3, 2), matrix.reshape(-1)))
    result = oi.model_input(io, [given])
    assert isinstance(result, np.ndarray) and result.dtype == np.float32 and result.tolist() == matrix.tolist()
    with pytest.raises(oi.BadRequest, match="one tensor"):
        oi.model_input(io, [given, decoded(tensor("other"))])

    named = io_of(ModelSignature(inputs=Schema([TensorSpec(np.dtype("int32"), (-1,), "ids"),
                                                TensorSpec(np.dtype("float64"), (-1, 3), "emb")])))  # fmt: skip
    assert named.kind == "tensors"
    assert [m.datatype for m in named.inputs] == ["INT32", "FP64"]
    ids = decoded(tensor("ids", "INT32", (2,), [4, 5]))
    emb = decoded(tensor("emb", "FP64", (2, 3), range(6)))
    result = oi.model_input(named, [emb, ids])
    assert list(result) == ["ids", "emb"] and result["emb"].shape == (2, 3)
    with pytest.raises(oi.BadRequest, match="missing input 'emb'"):
        oi.model_input(named, [ids])


def test_unnamed_columns_take_one_table_tensor():
    io = io_of(ModelSignature(inputs=Schema([ColSpec("double"), ColSpec("double")])))
    assert io.kind == "unnamed-columns"
    assert [m.name for m in io.inputs] == ["input-0", "input-1"]
    frame = oi.model_input(io, [decoded(tensor("t", shape=(2, 2), data=[1, 2, 3, 4]))])
    assert isinstance(frame, pd.DataFrame) and frame.to_numpy().tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_without_a_signature_columns_or_one_table_and_metadata_says_so():
    io = io_of(None)
    assert io.kind == "none" and io.inputs == [] and not io.signature
    metadata = oi.model_metadata("fraud", "7", io)
    assert metadata["inputs"] == [] and metadata["parameters"]["signature"] is False
    assert "without a signature" in metadata["parameters"]["message"]
    table = oi.model_input(io, [decoded(tensor("t", shape=(2, 3), data=range(6)))])
    assert isinstance(table, np.ndarray) and table.shape == (2, 3)
    frame = oi.model_input(io, [decoded(tensor("a", shape=(2, 1), data=[1, 2])), decoded(tensor("b"))])
    assert list(frame.columns) == ["a", "b"] and frame["a"].tolist() == [1.0, 2.0]


def test_parameters_reach_predict_only_when_the_signature_declares_params():
    parameters = {"temperature": 0.5, "binary_data_output": True, "content_type": "pd"}
    without = io_of(infer_signature(FRAME))
    assert oi.model_params(without, parameters) is None
    declared = io_of(ModelSignature(inputs=infer_signature(FRAME).inputs,
                                    params=ParamSchema([ParamSpec("temperature", "double", 1.0)])))  # fmt: skip
    assert oi.model_params(declared, parameters) == {"temperature": 0.5}


# -- encoding ------------------------------------------------------------------------------------------------


def test_predictions_encode_as_typed_tensors():
    (labels,) = oi.encode_outputs(np.array([1, 0, 1]))
    assert labels == {"name": "output-0", "datatype": "INT64", "shape": [3], "data": [1, 0, 1]}
    (probabilities,) = oi.encode_outputs(np.array([[0.25, 0.75]], dtype=np.float32))
    assert probabilities == {"name": "output-0", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}
    frame = oi.encode_outputs(pd.DataFrame({"label": ["a", "b"], "score": [0.5, 1.0], "ok": [True, False]}))
    assert frame == [
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
        {"name": "score", "datatype": "FP64", "shape": [2], "data": [0.5, 1.0]},
        {"name": "ok", "datatype": "BOOL", "shape": [2], "data": [True, False]},
    ]
    by_key = oi.encode_outputs({"ids": np.array([1, 2], dtype=np.uint8), "names": ["x", "y"]})
    assert [(o["name"], o["datatype"]) for o in by_key] == [("ids", "UINT8"), ("names", "BYTES")]
    (listed,) = oi.encode_outputs([3, 4])
    assert (listed["datatype"], listed["data"]) == ("INT64", [3, 4])
    (objects,) = oi.encode_outputs(pd.Series([1, 2], dtype=object))
    assert (objects["datatype"], objects["data"]) == ("INT64", [1, 2])
    # What is not one rectangular array is text: each element as JSON.
    (ragged,) = oi.encode_outputs([[1, 2], [3]])
    assert ragged == {"name": "output-0", "datatype": "BYTES", "shape": [2], "data": ["[1, 2]", "[3]"]}
    (records,) = oi.encode_outputs([{"label": "a"}, {"label": "b"}])
    assert records["datatype"] == "BYTES"
    assert [json.loads(x) for x in records["data"]] == [{"label": "a"}, {"label": "b"}]


def test_a_single_output_is_named_as_the_signature_names_it():
    io = io_of(ModelSignature(inputs=infer_signature(FRAME).inputs, outputs=Schema([ColSpec("long", "label")])))
    (output,) = oi.encode_outputs(np.array([1]), io)
    assert output["name"] == "label" and io.outputs[0].name == "label"


def test_requested_outputs_are_selected_and_unknown_ones_refused():
    outputs = oi.encode_outputs(pd.DataFrame({"a": [1], "b": [2]}))
    assert [o["name"] for o in oi.select_outputs(outputs, ["b"])] == ["b"]
    assert oi.select_outputs(outputs, None) == outputs
    with pytest.raises(oi.BadRequest, match="unknown output 'c': the model's outputs are 'a', 'b'"):
        oi.select_outputs(outputs, ["c"])


# -- the endpoints, in-process -------------------------------------------------------------------------------


class StandIn:
    """A pyfunc-like model on a real column signature: predicts `income > 3`, fails as told."""

    metadata = Model(signature=infer_signature(FRAME, np.array([0, 1, 0])))

    def __init__(self) -> None:
        self.seen: list = []
        self.release = threading.Event()
        self.release.set()

    def predict(self, data, params=None):
        self.release.wait(10)
        self.seen.append(data)
        if (data["city"] == "boom").any():
            raise ValueError("the model failed")
        if (data["city"] == "enforce").any():
            raise MlflowException("Incompatible input types for column city", INVALID_PARAMETER_VALUE)
        return (data["income"] > 3).astype(np.int64).to_numpy()


def frame_request(frame: pd.DataFrame, **extra) -> dict:
    types = {"age": "INT64", "income": "FP64", "city": "BYTES"}
    inputs = [tensor(c, types[c], (len(frame), 1), frame[c].tolist()) for c in frame]
    return {"inputs": inputs, **extra}


@pytest.fixture
def app() -> ServingApp:
    return serving_app()


def counter(text: str, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@pytest.fixture
def load(app, monkeypatch):
    """Load a model into `app` as the server does: MLflow's app around the instrumented model."""
    monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "true")  # init() sets it; restored after the test

    def loaded(model) -> None:
        app.scoring = app.mlflow_app(model)
        app.timeout = None

    return loaded


def test_while_loading_only_liveness_and_server_metadata_answer(app):
    async def scenario():
        paths = ["/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/fraud-detector",
                 "/v2/models/fraud-detector/ready", "/v2/models/other/ready"]  # fmt: skip
        answers = {path: await call(app, "GET", path) for path in paths}
        answers["infer"] = await call(app, "POST", "/v2/models/fraud-detector/infer", json=frame_request(FRAME))
        return answers

    answers = asyncio.run(scenario())
    assert {path: a.status_code for path, a in answers.items()} == {
        "/v2": 200, "/v2/health/live": 200, "/v2/health/ready": 503, "/v2/models/fraud-detector": 503,
        "/v2/models/fraud-detector/ready": 503, "/v2/models/other/ready": 404, "infer": 503,
    }  # fmt: skip
    assert answers["infer"].json() == {"error": "the model is still loading"}
    assert answers["/v2"].json()["name"] == "modelpilot"
    assert answers["/v2/health/ready"].headers["modelpilot-track"] == "canary"


def test_infer_answers_and_counts_with_the_v2_protocol_label(app, load):
    model = StandIn()
    load(model)

    async def scenario():
        ok = await call(app, "POST", "/v2/models/fraud-detector/versions/7/infer", json=frame_request(FRAME, id="a1"))
        failed = await call(app, "POST", "/v2/models/fraud-detector/infer",
                            json=frame_request(FRAME.assign(city="boom")))  # fmt: skip
        refused = await call(app, "POST", "/v2/models/fraud-detector/infer",
                             json=frame_request(FRAME.assign(city="enforce")))  # fmt: skip
        metadata = await call(app, "GET", "/v2/models/fraud-detector/versions/7")
        return ok, failed, refused, metadata, (await call(app, "GET", "/metrics")).text

    ok, failed, refused, metadata, text = asyncio.run(scenario())
    assert ok.status_code == 200, ok.text
    assert ok.json() == {
        "model_name": "fraud-detector", "model_version": "7", "id": "a1",
        "outputs": [{"name": "output-0", "datatype": "INT64", "shape": [3], "data": [0, 1, 1]}],
    }  # fmt: skip
    pd.testing.assert_frame_equal(model.seen[0], FRAME)
    # The model failing is the server's error, as MLServer answers it; MLflow refusing the input is the client's.
    assert failed.status_code == 500
    assert failed.json() == {"error": "the model failed to predict: ValueError: the model failed"}
    assert refused.status_code == 400 and refused.json() == {"error": "Incompatible input types for column city"}
    assert metadata.json()["inputs"][2] == {"name": "city", "datatype": "BYTES", "shape": [-1, 1]}
    assert counter(text, "modelpilot_requests_total", protocol="v2", code="200") == 1
    assert counter(text, "modelpilot_requests_total", protocol="v2", code="500") == 1
    assert counter(text, "modelpilot_requests_total", protocol="v2", code="400") == 1
    assert counter(text, "modelpilot_requests_total", protocol="mlflow") == 0
    assert counter(text, "modelpilot_request_duration_seconds_count", protocol="v2") == 3
    assert counter(text, "modelpilot_prediction_errors_total") == 2  # the same instrumented predict as /invocations


def test_predict_runs_off_the_event_loop_and_the_timeout_answers_504(app, load):
    model = StandIn()
    model.release.clear()  # predict blocks until released
    load(model)
    app.timeout = 0.5

    async def scenario():
        infer = asyncio.create_task(call(app, "POST", "/v2/models/fraud-detector/infer", json=frame_request(FRAME)))
        await asyncio.sleep(0.1)
        probe = await asyncio.wait_for(call(app, "GET", "/v2/health/ready"), 2)  # answered while predict blocks
        answer = await infer
        model.release.set()
        return probe, answer

    probe, answer = asyncio.run(scenario())
    assert probe.status_code == 200
    assert answer.status_code == 504 and "request timeout (0.5 s)" in answer.json()["error"]


def test_wrong_methods_and_paths(app, load):
    load(StandIn())

    async def scenario():
        return (
            await call(app, "GET", "/v2/models/fraud-detector/infer"),
            await call(app, "POST", "/v2/models/fraud-detector"),
            await call(app, "GET", "/v2/repository/index"),
            await call(app, "HEAD", "/v2/health/live"),
        )

    get_infer, post_metadata, unknown, head = asyncio.run(scenario())
    assert get_infer.status_code == 405 and get_infer.headers["allow"] == "POST"
    assert post_metadata.status_code == 405 and "GET" in post_metadata.headers["allow"]
    assert unknown.status_code == 404 and unknown.json() == {"error": "no such endpoint: /v2/repository/index"}
    assert head.status_code == 200 and head.content == b""


def test_the_model_is_named_after_the_deployment_when_its_registered_name_is_unknown():
    served = oi.OpenInference(Identity("fraud", "", "stable"), lambda: None)
    assert (served.name, served.version) == ("fraud", "")
    with pytest.raises(oi.NotFound, match="serves an unnamed version"):
        served._check_model("fraud", "3")
    assert oi.OpenInference(Identity("", "", "stable"), lambda: None).name == "model"
