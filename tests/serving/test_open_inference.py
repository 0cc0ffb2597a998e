"""The Open Inference Protocol (v2) of the real model server process, on a model fetched from a real MLflow
server, through tritonclient's HTTP client (a client written against Triton, not against this server)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from mlflow.models import Model
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from .conftest import Fetched, RegisteredModels, ServerProcess, split

pytestmark = pytest.mark.mlflow

MODEL = "serving-clf"  # MODELPILOT_MODEL_NAME and _VERSION of ServerProcess
VERSION = "1"


@pytest.fixture(scope="module")
def v2_server(fetched_main: Fetched) -> Iterator[ServerProcess]:
    """The server, with the status of the first answer of /v2/health/ready (while the model loads)."""
    server = ServerProcess(fetched_main.dest)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.proc.poll() is None, server.log[-3000:]
            assert time.monotonic() < deadline, server.log[-3000:]
            try:
                server.first_v2_ready = server.client.get("/v2/health/ready", timeout=2).status_code
                break
            except httpx.TransportError:
                time.sleep(0.05)
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(v2_server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=f"127.0.0.1:{v2_server.port}", network_timeout=60)
    try:
        yield client
    finally:
        client.close()


def column_inputs(frame, binary_data: bool = False) -> list[triton.InferInput]:
    """One FP64 [N, 1] tensor per column of `frame`, named as the column."""
    inputs = []
    for column in frame.columns:
        values = frame[column].to_numpy(dtype=np.float64).reshape(-1, 1)
        tensor = triton.InferInput(column, list(values.shape), "FP64")
        tensor.set_data_from_numpy(values, binary_data=binary_data)
        inputs.append(tensor)
    return inputs


def samples(server: ServerProcess) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(server.metrics())
        for sample in family.samples
    }


def value(snapshot: dict, name: str, **labels: str) -> float:
    """The sum of the series of `name` that carry `labels`."""
    return sum(v for (n, series), v in snapshot.items() if n == name and labels.items() <= dict(series).items())


def test_health_readiness_and_server_metadata(v2_server: ServerProcess, client: triton.InferenceServerClient):
    assert v2_server.first_v2_ready == 503  # the port opens before the model has loaded
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, VERSION)
    assert not client.is_model_ready("some-other-model")
    assert not client.is_model_ready(MODEL, "2")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "modelpilot" and isinstance(metadata["extensions"], list)
    assert metadata["version"]
    # Answers name who answered, as MLflow's do.
    answer = v2_server.client.get("/v2/health/ready")
    assert answer.headers["modelpilot-model-name"] == MODEL and answer.headers["modelpilot-track"] == "canary"


def test_model_metadata_comes_from_the_signature(fetched_main: Fetched, client: triton.InferenceServerClient):
    signature = Model.load(str(fetched_main.dest / "MLmodel")).signature
    metadata = client.get_model_metadata(MODEL)
    assert metadata["name"] == MODEL and metadata["versions"] == [VERSION] and metadata["platform"] == "mlflow"
    assert [i["name"] for i in metadata["inputs"]] == signature.inputs.input_names()
    assert [spec.type.name for spec in signature.inputs.inputs] == ["double"] * 5
    assert {i["datatype"] for i in metadata["inputs"]} == {"FP64"}
    assert all(i["shape"] == [-1, 1] for i in metadata["inputs"])
    # The output is the classifier's labels, an unnamed int64 tensor in the signature (predict's ndarray).
    (output,) = signature.outputs.inputs
    assert (output.name, output.type, output.shape) == (None, np.dtype("int64"), (-1,))
    assert metadata["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]
    assert client.get_model_metadata(MODEL, VERSION) == metadata


@pytest.mark.parametrize("binary_data", [False, True], ids=["json", "binary"])
def test_infer_predicts_what_invocations_and_the_model_predict(
    v2_server: ServerProcess, client: triton.InferenceServerClient, registered: RegisteredModels, binary_data: bool
):
    rows = registered.holdout.iloc[:200]
    expected = registered.holdout_predictions[:200]  # the model's own predict, in the training process
    assert set(expected) == {0, 1}
    result = client.infer(
        MODEL,
        column_inputs(rows, binary_data),
        request_id="req-7",
        outputs=[triton.InferRequestedOutput("output-0", binary_data=False)],
    )
    predictions = result.as_numpy("output-0")
    assert predictions.dtype == np.int64 and predictions.shape == (200,)
    assert predictions.tolist() == expected
    invocations = v2_server.client.post("/invocations", json=split(rows))
    assert invocations.json()["predictions"] == predictions.tolist()
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (MODEL, VERSION, "req-7")
    # Without a version in the path, and without asking for outputs (tritonclient then asks for binary
    # outputs, an extension this server does not have: it answers JSON, which tritonclient reads too).
    again = client.infer(MODEL, column_inputs(rows.iloc[:20], binary_data), model_version=VERSION)
    assert again.as_numpy("output-0").tolist() == expected[:20]
    assert "id" not in again.get_response()


def test_columns_can_be_sent_flat_and_in_any_order(v2_server: ServerProcess, registered: RegisteredModels):
    rows = registered.holdout.iloc[:30]
    inputs = [
        {"name": column, "datatype": "FP64", "shape": [30], "data": rows[column].tolist()}
        for column in reversed(rows.columns)
    ]
    answer = v2_server.client.post(f"/v2/models/{MODEL}/infer", json={"inputs": inputs})
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["data"] == registered.holdout_predictions[:30] and output["shape"] == [30]


def test_an_unknown_model_or_version_is_a_404(client: triton.InferenceServerClient, registered: RegisteredModels):
    inputs = column_inputs(registered.holdout.iloc[:3])
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("fraud-detector", inputs)
    assert unknown.value.status() == "404"
    assert "'fraud-detector' is not served here" in unknown.value.message()
    assert MODEL in unknown.value.message()
    with pytest.raises(InferenceServerException) as old_version:
        client.infer(MODEL, inputs, model_version="99")
    assert old_version.value.status() == "404" and "no version '99'" in old_version.value.message()
    with pytest.raises(InferenceServerException) as metadata:
        client.get_model_metadata("fraud-detector")
    assert metadata.value.status() == "404"


def test_wrong_datatypes_and_shapes_are_400s_with_a_message(
    v2_server: ServerProcess, client: triton.InferenceServerClient, registered: RegisteredModels
):
    rows = registered.holdout.iloc[:4]
    before = samples(v2_server)

    # Text where the signature has a double: MLflow's schema enforcement refuses it.
    inputs = column_inputs(rows)
    text = triton.InferInput("f0", [4, 1], "BYTES")
    text.set_data_from_numpy(np.array([["a"], ["b"], ["c"], ["d"]], dtype=object), binary_data=False)
    inputs[0] = text
    with pytest.raises(InferenceServerException) as wrong_type:
        client.infer(MODEL, inputs)
    assert wrong_type.value.status() == "400"
    assert "f0" in wrong_type.value.message() and "convert" in wrong_type.value.message()

    # A shape that does not hold the data sent.
    inputs = column_inputs(rows)
    inputs[1].set_shape([4, 2])
    with pytest.raises(InferenceServerException) as wrong_shape:
        client.infer(MODEL, inputs)
    assert wrong_shape.value.status() == "400"
    assert wrong_shape.value.message() == "input 'f1' has 4 values; its shape holds 8"

    # A whole table as one tensor, where the signature wants one tensor per column.
    matrix = triton.InferInput("f0", [4, 5], "FP64")
    matrix.set_data_from_numpy(rows.to_numpy(dtype=np.float64), binary_data=False)
    with pytest.raises(InferenceServerException) as table:
        client.infer(MODEL, [matrix])
    assert table.value.status() == "400" and "missing input 'f1', 'f2', 'f3', 'f4'" in table.value.message()

    # What tritonclient cannot be made to send: an unknown datatype, broken JSON.
    url = f"/v2/models/{MODEL}/infer"
    unknown = {"inputs": [{"name": "f0", "datatype": "FP128", "shape": [1], "data": [1.0]}]}
    answer = v2_server.client.post(url, json=unknown)
    assert answer.status_code == 400 and "datatype \"FP128\"" in answer.json()["error"]
    broken = v2_server.client.post(url, content=b'{"inputs": [', headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]

    after = samples(v2_server)
    assert value(after, "modelpilot_requests_total", protocol="v2", code="400") - value(
        before, "modelpilot_requests_total", protocol="v2", code="400"
    ) == 5
    # Only the wrong type reached the model's predict.
    assert value(after, "modelpilot_prediction_errors_total") - value(before, "modelpilot_prediction_errors_total") == 1
    assert value(after, "modelpilot_requests_total", code="500") == 0


def test_infer_requests_are_counted_with_the_protocol_label(
    v2_server: ServerProcess, client: triton.InferenceServerClient, registered: RegisteredModels
):
    before = samples(v2_server)
    for start in range(0, 30, 10):
        client.infer(MODEL, column_inputs(registered.holdout.iloc[start : start + 10]))
    for start in range(0, 20, 10):
        assert v2_server.client.post("/invocations", json=split(registered.holdout.iloc[start : start + 10])).is_success
    with pytest.raises(InferenceServerException):
        client.infer("nobody", column_inputs(registered.holdout.iloc[:1]))
    # Probes and metadata are not scoring requests.
    client.is_server_ready(), client.is_model_ready(MODEL), client.get_model_metadata(MODEL), client.get_server_metadata()
    after = samples(v2_server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("modelpilot_requests_total", protocol="v2", code="200") == 3
    assert moved("modelpilot_requests_total", protocol="v2", code="404") == 1
    assert moved("modelpilot_requests_total", protocol="mlflow", code="200") == 2
    assert moved("modelpilot_requests_total") == 6  # what a query summing over protocols sees: each once
    assert moved("modelpilot_request_duration_seconds_count", protocol="v2") == 4
    assert moved("modelpilot_request_duration_seconds_count", protocol="mlflow") == 2
    assert moved("modelpilot_request_duration_seconds_bucket", protocol="v2", le="+Inf") == 4
    for (name, labels), _ in after.items():
        if name == "modelpilot_requests_total":
            assert dict(labels)["protocol"] in ("mlflow", "v2")
            assert {"deployment", "model_version", "track", "code"} <= dict(labels).keys()
    assert value(after, "modelpilot_requests_in_flight") == 0


def test_a_client_that_leaves_mid_body_is_counted_499(v2_server: ServerProcess):
    before = samples(v2_server)
    head = (
        f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: model\r\nContent-Type: application/json\r\n"
        "Content-Length: 200\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", v2_server.port), timeout=30) as conn:
        conn.sendall(head + b'{"inputs": [{"na')
    deadline = time.monotonic() + 30
    while True:
        after = samples(v2_server)
        left = value(after, "modelpilot_requests_total", protocol="v2", code="499") - value(
            before, "modelpilot_requests_total", protocol="v2", code="499"
        )
        if left >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left == 1
    assert value(after, "modelpilot_requests_total", code="500") == 0
    assert value(after, "modelpilot_requests_in_flight") == 0
