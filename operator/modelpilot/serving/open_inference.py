"""The Open Inference Protocol (KServe / Triton "v2" REST protocol) beside MLflow's, for the same model.

    GET  /v2                                          server metadata: name, version, extensions
    GET  /v2/health/live                              200 while the process serves HTTP
    GET  /v2/health/ready                             200 once the model has loaded, else 503
    GET  /v2/models/{name}[/versions/{version}]       model metadata from the MLflow signature
    GET  /v2/models/{name}[/versions/{version}]/ready 200 once loaded, 503 while loading
    POST /v2/models/{name}[/versions/{version}]/infer typed tensors in, typed tensors out

`{name}` is the registered model's name and `{version}` its version (``Identity``); other names and
versions are 404. Errors are ``{"error": "<message>"}``. Decoding, the mapping between tensors and what
MLflow's pyfunc ``predict`` takes, encoding and metadata are pure functions below; `OpenInference`
answers the requests and runs ``predict`` (the same instrumented model MLflow's app uses) in a thread.
docs/serving.md describes the mapping and where the answers differ from MLServer's MLflow runtime.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .metrics import Identity

log = logging.getLogger("modelpilot.serving.open_inference")

SERVER_NAME = "modelpilot"
PLATFORM = "mlflow"
# Tensor names MLServer gives to a signature's unnamed inputs and outputs; a single unnamed prediction
# is answered as "output-0", the name the metadata gives it.
INPUT_PREFIX, OUTPUT_PREFIX = "input-", "output-"
# A model metadata shape for one column of a DataFrame: any number of rows, one value each (MLServer's).
COLUMN_SHAPE = [-1, 1]
# Request parameters that belong to the protocol or its clients (tritonclient sets some of them), never
# to the model: they are not passed to `predict` as MLflow params.
PROTOCOL_PARAMETERS = frozenset(
    {"binary_data", "binary_data_output", "binary_data_size", "content_type", "headers", "priority",
     "sequence_id", "sequence_start", "sequence_end", "timeout"}
)  # fmt: skip

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
# MLflow column types (mlflow.types.DataType names) as tensor datatypes; MLServer's mapping.
_COLUMN_DATATYPES = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}
_BINARY_HEADER = "inference-header-content-length"


class ProtocolError(Exception):
    """A request the protocol answers with `status` and ``{"error": message}``."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ProtocolError):
    status = 400


class NotFound(ProtocolError):
    status = 404


# -- requests -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    """One decoded input tensor: `data` is a numpy array of `shape` (object array of str/bytes for BYTES)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InferRequest:
    inputs: list[Tensor]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] | None = None  # the output names asked for; None: all of them


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """An inference request body, JSON (the protocol) or JSON followed by binary tensor data (Triton's
    binary tensor data extension, which tritonclient uses by default): `header_length` is the value of
    the Inference-Header-Content-Length header, the length of the JSON part."""
    binary = b""
    if header_length is not None:
        if not 0 <= header_length <= len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} bytes"
            )
        body, binary = body[:header_length], body[header_length:]
    try:
        request = json.loads(body)
    except RecursionError:
        raise BadRequest("the request body is nested too deeply to be parsed") from None
    except ValueError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest("the request body must be a JSON object with an 'inputs' list")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    parameters = _parameters(request.get("parameters"), "the request")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    offset = 0
    tensors = []
    for index, spec in enumerate(inputs):
        tensor, offset = decode_tensor(spec, index, binary, offset)
        tensors.append(tensor)
    if offset != len(binary):
        raise BadRequest(f"the body has {len(binary) - offset} bytes of binary data that no input claims")
    names = [tensor.name for tensor in tensors]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise BadRequest(f"more than one input named {_names(repeated)}")
    return InferRequest(tensors, request_id, parameters, _requested_outputs(request.get("outputs")))


def decode_tensor(spec: Any, index: int = 0, binary: bytes = b"", offset: int = 0) -> tuple[Tensor, int]:
    """One request input (name, shape, datatype, data or binary data), checked; and where the next
    input's binary data starts in `binary`."""
    if not isinstance(spec, dict):
        raise BadRequest(f"input {index} must be an object with name, shape, datatype and data")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"input {index} has no name")
    datatype = spec.get("datatype")
    if datatype not in DATATYPES:
        raise BadRequest(f"input '{name}' has datatype {json.dumps(datatype)}: one of {', '.join(DATATYPES)}")
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise BadRequest(f"input '{name}' has shape {json.dumps(shape)}: a list of non-negative integers")
    parameters = _parameters(spec.get("parameters"), f"input '{name}'")
    count = math.prod(shape)
    binary_size = parameters.get("binary_data_size")
    if binary_size is not None:
        if not isinstance(binary_size, int) or isinstance(binary_size, bool) or binary_size < 0:
            raise BadRequest(f"input '{name}' has binary_data_size {json.dumps(binary_size)}")
        if offset + binary_size > len(binary):
            raise BadRequest(f"input '{name}' claims {binary_size} bytes of binary data; the body has fewer")
        if "data" in spec:
            raise BadRequest(f"input '{name}' has both data and binary_data_size")
        data = _from_binary(name, datatype, count, binary[offset : offset + binary_size])
        offset += binary_size
    else:
        if "data" not in spec:
            raise BadRequest(f"input '{name}' has no data")
        data = _from_json(name, datatype, spec["data"], count)
    return Tensor(name, datatype, tuple(shape), data.reshape(shape), parameters), offset


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"the parameters of {where} must be an object")
    return value


def _requested_outputs(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in value):
        raise BadRequest("'outputs' must be a list of objects with a name")
    return [o["name"] for o in value]


def flatten(data: Any) -> list[Any]:
    """The elements of `data` (a JSON value: nested lists or a scalar) in row-major order, without recursion."""
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _from_json(name: str, datatype: str, data: Any, count: int) -> np.ndarray:
    values = flatten(data)
    if len(values) != count:
        raise BadRequest(f"input '{name}' has {len(values)} values; its shape holds {count}")
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in values):
            raise BadRequest(f"input '{name}' is BYTES: its data must be strings")
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array
    # Each value's JSON type is checked in Python: numpy would turn [0, 2**64 - 1] into float64 quietly.
    if datatype == "BOOL":
        if not all(type(v) is bool for v in values):
            raise BadRequest(f"input '{name}' is BOOL: its data must be true or false")
        return np.array(values, dtype=dtype)
    if dtype.kind == "f":
        if not all(type(v) in (int, float) for v in values):
            raise BadRequest(f"input '{name}' is {datatype}: its data must be numbers")
        return np.array(values, dtype=dtype)
    if not all(type(v) is int for v in values):
        raise BadRequest(f"input '{name}' is {datatype}: its data must be integers")
    info = np.iinfo(dtype)
    if values and (min(values) < info.min or max(values) > info.max):
        raise BadRequest(f"input '{name}' has values outside the range of {datatype} ({info.min}..{info.max})")
    return np.array(values, dtype=dtype)


def _from_binary(name: str, datatype: str, count: int, raw: bytes) -> np.ndarray:
    """Triton's binary tensor data: little-endian values, or for BYTES each element as a 4-byte
    little-endian length and its bytes (decoded as UTF-8 where they are UTF-8)."""
    if datatype != "BYTES":
        dtype = DATATYPES[datatype].newbyteorder("<")
        if len(raw) != count * dtype.itemsize:
            raise BadRequest(
                f"input '{name}' has {len(raw)} bytes of {datatype} data; its shape holds {count} values "
                f"({count * dtype.itemsize} bytes)"
            )
        return np.frombuffer(raw, dtype=dtype).astype(DATATYPES[datatype])
    values: list[Any] = []
    position = 0
    while position < len(raw):
        if position + 4 > len(raw):
            raise BadRequest(f"input '{name}': truncated BYTES element length")
        (length,) = struct.unpack_from("<I", raw, position)
        position += 4
        if position + length > len(raw):
            raise BadRequest(f"input '{name}': a BYTES element runs past its binary data")
        element = raw[position : position + length]
        position += length
        try:
            values.append(element.decode("utf-8"))
        except UnicodeDecodeError:
            values.append(element)
    if len(values) != count:
        raise BadRequest(f"input '{name}' has {len(values)} BYTES elements; its shape holds {count}")
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


# -- the model's signature as tensors --------------------------------------------------------------------


@dataclass(frozen=True)
class TensorMeta:
    name: str
    datatype: str
    shape: list[int]
    optional: bool = False

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": self.shape}
        if self.optional:
            out["parameters"] = {"optional": True}
        return out


@dataclass(frozen=True)
class ModelIO:
    """How the model's inputs and outputs look as tensors. `kind` says what `predict` is given:

    - ``columns``: a column-based signature with names: one tensor per column, a DataFrame in signature order;
    - ``unnamed-columns``: a column-based signature without names: one [N, k] tensor, a DataFrame;
    - ``tensors``: a tensor-based signature with names: a dict of numpy arrays by name;
    - ``tensor``: a tensor-based signature without names: one numpy array;
    - ``none``: no signature: tensors of shape [N] or [N, 1] as named columns, or one [N, k] array.
    """

    kind: str
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]
    has_params: bool = False

    @property
    def signature(self) -> bool:
        return self.kind != "none"


def describe(mlflow_metadata: Any) -> ModelIO:
    """The model's inputs and outputs as tensors, from an MLflow model's metadata (``model.metadata``)."""
    signature = getattr(mlflow_metadata, "signature", None)
    if signature is None or signature.inputs is None:
        outputs = _tensor_metas(signature.outputs, OUTPUT_PREFIX) if signature is not None and signature.outputs else []
        return ModelIO("none", [], outputs, has_params=bool(signature is not None and signature.params))
    schema = signature.inputs
    if schema.is_tensor_spec():
        kind = "tensors" if schema.has_input_names() else "tensor"
    else:
        kind = "columns" if schema.has_input_names() else "unnamed-columns"
    outputs = _tensor_metas(signature.outputs, OUTPUT_PREFIX) if signature.outputs else []
    return ModelIO(kind, _tensor_metas(schema, INPUT_PREFIX), outputs, has_params=bool(signature.params))


def _tensor_metas(schema: Any, prefix: str) -> list[TensorMeta]:
    from mlflow.types import TensorSpec

    metas = []
    for index, spec in enumerate(schema.inputs):
        name = spec.name or f"{prefix}{index}"
        optional = not getattr(spec, "required", True)
        if isinstance(spec, TensorSpec):
            metas.append(TensorMeta(name, numpy_datatype(spec.type), [int(n) for n in spec.shape], optional))
        else:
            type_name = getattr(spec.type, "name", None)
            metas.append(TensorMeta(name, _COLUMN_DATATYPES.get(type_name, "BYTES"), list(COLUMN_SHAPE), optional))
    return metas


def numpy_datatype(dtype: Any) -> str:
    """The tensor datatype of a numpy dtype: BYTES for strings, bytes, objects and anything else."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return "BOOL"
    if dtype.kind in "iu" and dtype.itemsize in (1, 2, 4, 8):
        return f"{'U' if dtype.kind == 'u' else ''}INT{dtype.itemsize * 8}"
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return f"FP{dtype.itemsize * 8}"
    return "BYTES"


def model_input(io: ModelIO, tensors: list[Tensor]) -> Any:
    """What the model's pyfunc `predict` takes for these input tensors (see `ModelIO`)."""
    import pandas as pd

    if io.kind == "columns":
        known = {meta.name: meta for meta in io.inputs}
        given = {tensor.name: tensor for tensor in tensors}
        unknown = [name for name in given if name not in known]
        if unknown:
            raise BadRequest(
                f"unknown input {_names(unknown)}: the model's inputs are {_names(known)} (one tensor per column)"
            )
        missing = [meta.name for meta in io.inputs if not meta.optional and meta.name not in given]
        if missing:
            raise BadRequest(f"missing input {_names(missing)}: the model's inputs are {_names(known)}")
        columns = _columns([given[meta.name] for meta in io.inputs if meta.name in given])
        return pd.DataFrame(columns)
    if io.kind == "tensors":
        known_names = [meta.name for meta in io.inputs]
        given = {tensor.name: tensor for tensor in tensors}
        unknown = [name for name in given if name not in known_names]
        if unknown:
            raise BadRequest(f"unknown input {_names(unknown)}: the model's inputs are {_names(known_names)}")
        missing = [meta.name for meta in io.inputs if not meta.optional and meta.name not in given]
        if missing:
            raise BadRequest(f"missing input {_names(missing)}: the model's inputs are {_names(known_names)}")
        return {name: given[name].data for name in known_names if name in given}
    if io.kind in ("tensor", "unnamed-columns"):
        if len(tensors) != 1:
            raise BadRequest(
                f"the model takes one tensor (its signature names no inputs); the request has {len(tensors)}"
            )
        data = tensors[0].data
        if io.kind == "tensor":
            return data
        if data.ndim not in (1, 2):
            raise BadRequest(f"input '{tensors[0].name}' has shape {list(data.shape)}: [N, k] rows of k columns")
        return pd.DataFrame(data.reshape(len(data), -1))
    # No signature: one [N, k] (or more dimensions) tensor as an array, else named columns.
    if len(tensors) == 1 and tensors[0].data.ndim >= 2 and tensors[0].data.shape[1:] != (1,):
        return tensors[0].data
    return pd.DataFrame(_columns(tensors))


def _columns(tensors: list[Tensor]) -> dict[str, np.ndarray]:
    columns = {}
    for tensor in tensors:
        if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise BadRequest(
                f"input '{tensor.name}' has shape {list(tensor.shape)}: a column is [N] or [N, 1]"
            )
        columns[tensor.name] = tensor.data.reshape(-1)
    rows = {name: len(values) for name, values in columns.items()}
    if len(set(rows.values())) > 1:
        counts = ", ".join(f"'{name}' {n}" for name, n in rows.items())
        raise BadRequest(f"the input columns have different numbers of rows: {counts}")
    return columns


def model_params(io: ModelIO, parameters: dict[str, Any]) -> dict[str, Any] | None:
    """The request parameters MLflow's `predict` gets as `params`: those that are not the protocol's, and
    only for a model whose signature declares params (others would only log a warning per request)."""
    if not io.has_params:
        return None
    params = {key: value for key, value in parameters.items() if key not in PROTOCOL_PARAMETERS}
    return params or None


# -- responses ------------------------------------------------------------------------------------------


def encode_outputs(prediction: Any, io: ModelIO | None = None) -> list[dict[str, Any]]:
    """Output tensors of a pyfunc prediction: a DataFrame's columns, a dict's entries, or one tensor
    (named as the signature's single output, else ``output-0``)."""
    import pandas as pd

    if isinstance(prediction, pd.DataFrame):
        return [output_tensor(str(column), prediction[column].to_numpy()) for column in prediction.columns]
    if isinstance(prediction, dict):
        return [output_tensor(str(key), value) for key, value in prediction.items()]
    name = io.outputs[0].name if io is not None and len(io.outputs) == 1 else f"{OUTPUT_PREFIX}0"
    if isinstance(prediction, pd.Series):
        prediction = prediction.to_numpy()
    return [output_tensor(name, prediction)]


def output_tensor(name: str, value: Any) -> dict[str, Any]:
    """One response output: name, datatype, shape and flat row-major data. Values that are not one
    rectangular array (lists of different lengths, dicts) are BYTES, one JSON text per element."""
    try:
        array = np.asarray(value)
    except ValueError:  # ragged
        items = list(value)
        array = np.empty(len(items), dtype=object)
        array[:] = items
    if array.dtype.kind == "O" and array.size:
        # Objects that are all numbers or booleans (a pandas object column, a list of ints) stay typed.
        try:
            typed = np.asarray(array.tolist())
        except ValueError:  # ragged
            typed = array
        if typed.dtype.kind in "biuf" and typed.shape == array.shape:
            array = typed
    datatype = numpy_datatype(array.dtype)
    flat = array.reshape(-1)
    if datatype == "BYTES":
        data = [_text(item) for item in flat.tolist()]
    else:
        data = flat.tolist()
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def _text(item: Any) -> str:
    if isinstance(item, bytes):
        return item.decode("utf-8", errors="replace")
    if isinstance(item, (list, tuple, dict)):
        return json.dumps(item, default=str)
    return str(item)


def select_outputs(outputs: list[dict[str, Any]], requested: list[str] | None) -> list[dict[str, Any]]:
    """The outputs the request asked for, in its order; all of them if it named none."""
    if requested is None:
        return outputs
    by_name = {output["name"]: output for output in outputs}
    unknown = [name for name in requested if name not in by_name]
    if unknown:
        raise BadRequest(f"unknown output {_names(unknown)}: the model's outputs are {_names(by_name)}")
    return [by_name[name] for name in requested]


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": version, "extensions": []}


def model_metadata(name: str, version: str, io: ModelIO) -> dict[str, Any]:
    """The protocol's model metadata. Without a signature the model's inputs are unknown: empty lists,
    and a `parameters.signature` of false with a word on what to send."""
    out: dict[str, Any] = {
        "name": name,
        "versions": [version] if version else [],
        "platform": PLATFORM,
        "inputs": [meta.as_json() for meta in io.inputs],
        "outputs": [meta.as_json() for meta in io.outputs],
    }
    if not io.signature:
        out["parameters"] = {
            "signature": False,
            "message": "the model was logged without a signature: send one tensor per column "
            "(shape [N] or [N, 1], named as the model's columns) or a single [N, k] tensor",
        }
    return out


def infer_response(name: str, version: str, request: InferRequest, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"model_name": name}
    if version:
        out["model_version"] = version
    if request.id is not None:
        out["id"] = request.id
    out["outputs"] = outputs
    return out


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


# -- the protocol's endpoints -------------------------------------------------------------------------------

_MODEL_PATH = re.compile(r"^/v2/models/(?P<name>.+?)(?:/versions/(?P<version>[^/]+))?(?:/(?P<action>ready|infer))?$")


def is_infer(path: str) -> bool:
    """Whether `path` is an inference request (timed and counted like /invocations)."""
    return path.startswith("/v2/models/") and path.endswith("/infer")


class ClientLeft(Exception):
    """The client closed the connection before its request body arrived."""


class OpenInference:
    """Answers the /v2 paths for the one model this server serves.

    `model()` gives the loaded model (what MLflow's app scores with) or None while loading; `timeout()`
    the scoring request timeout in seconds, or None.
    """

    def __init__(
        self,
        identity: Identity,
        model: Callable[[], Any],
        timeout: Callable[[], float | None] = lambda: None,
        server_version: str = "",
    ) -> None:
        self.name = identity.model_name or identity.deployment or "model"
        self.version = identity.model_version
        self._model = model
        self._timeout = timeout
        self.server_version = server_version or _modelpilot_version()
        self._io: tuple[Any, ModelIO] | None = None

    def io(self, model: Any) -> ModelIO:
        cached = self._io
        if cached is None or cached[0] is not model:
            cached = (model, describe(model.metadata))
            self._io = cached
        return cached[1]

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[..., Any]) -> None:
        try:
            status, body = await self._answer(scope, receive)
        except ClientLeft:
            return
        except ProtocolError as exc:
            status, body = exc.status, error_body(exc.message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 405:
            headers.append((b"allow", b"POST" if is_infer(scope["path"]) else b"GET, HEAD"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})

    async def _answer(self, scope: dict[str, Any], receive: Callable[[], Any]) -> tuple[int, bytes]:
        path, method = scope["path"].rstrip("/") or "/", scope["method"]
        model = self._model()
        if is_infer(path):
            if method != "POST":
                raise ProtocolError("use POST for inference requests", 405)
        elif method not in ("GET", "HEAD"):
            raise ProtocolError(f"use GET for {path}", 405)
        if path == "/v2":
            return 200, json.dumps(server_metadata(self.server_version)).encode()
        if path == "/v2/health/live":
            return 200, b""
        if path == "/v2/health/ready":
            return (200, b"") if model is not None else (503, error_body("the model is still loading"))
        match = _MODEL_PATH.match(path)
        if match is None:
            raise NotFound(f"no such endpoint: {path}")
        self._check_model(match["name"], match["version"])
        if model is None:
            raise ProtocolError("the model is still loading", 503)
        action = match["action"]
        if action == "ready":
            return 200, b""
        io = self.io(model)
        if action is None:
            return 200, json.dumps(model_metadata(self.name, self.version, io)).encode()
        body = await _read_body(receive)
        header_length = _header_length(scope)
        timeout = self._timeout()
        work = asyncio.to_thread(self._infer, model, io, body, header_length)
        if timeout is None:
            return 200, await work
        try:
            async with asyncio.timeout(timeout):
                return 200, await work
        except TimeoutError:
            raise ProtocolError(f"inference ran longer than the request timeout ({timeout:g} s)", 504) from None

    def _check_model(self, name: str, version: str | None) -> None:
        if name != self.name:
            raise NotFound(f"model '{name}' is not served here: this server serves '{self.name}'")
        if version is not None and version != self.version:
            served = f"version '{self.version}'" if self.version else "an unnamed version"
            raise NotFound(f"model '{name}' has no version '{version}' here: this server serves {served}")

    def _infer(self, model: Any, io: ModelIO, body: bytes, header_length: int | None) -> bytes:
        """Decode, predict, encode: in a worker thread, so probes and scrapes are answered meanwhile."""
        request = decode_request(body, header_length)
        data = model_input(io, request.inputs)
        params = model_params(io, request.parameters)
        prediction = _predict(model, data, params)
        try:
            encoded = encode_outputs(prediction, io)
        except Exception as exc:
            log.debug("v2 infer: cannot encode the prediction", exc_info=True)
            raise ProtocolError(
                f"the prediction ({type(prediction).__name__}) cannot be encoded as tensors: {exc}", 500
            ) from None
        outputs = select_outputs(encoded, request.outputs)
        return json.dumps(infer_response(self.name, self.version, request, outputs)).encode()


def _predict(model: Any, data: Any, params: dict[str, Any] | None) -> Any:
    """The model's prediction; its failures as protocol errors. MLflow's own errors keep their status
    (schema enforcement, the client's input: 400); anything else the model raises is a 500, as MLServer
    answers it, with the exception's type and message."""
    from mlflow.exceptions import MlflowException

    try:
        return model.predict(data, params=params) if params else model.predict(data)
    except MlflowException as exc:
        log.debug("v2 infer: MLflow refused the input", exc_info=True)
        raise ProtocolError(exc.message, exc.get_http_status_code()) from None
    except Exception as exc:
        log.debug("v2 infer: the model's predict raised", exc_info=True)
        raise ProtocolError(f"the model failed to predict: {type(exc).__name__}: {exc}", 500) from None


async def _read_body(receive: Callable[[], Any]) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientLeft()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _header_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.decode("latin-1").lower() == _BINARY_HEADER:
            try:
                return int(value)
            except ValueError:
                raise BadRequest(f"Inference-Header-Content-Length is not a number: {value!r}") from None
    return None


def _modelpilot_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("modelpilot")
    except PackageNotFoundError:
        return "unknown"
