"""Redaction: pure functions that hide the values of named fields in request and response bodies."""

from __future__ import annotations

import csv
import io
from typing import Any

REDACTED = "[REDACTED]"
PROTOCOL_MLFLOW = "mlflow"  # MLflow's scoring protocol: POST /invocations
PROTOCOL_V2 = "v2"  # the Open Inference Protocol (KServe v2): POST /v2/models/<name>/infer


def redact_request(body: Any, fields: frozenset[str], protocol: str = PROTOCOL_MLFLOW) -> Any:
    """`body` (a parsed JSON request) with the values of `fields` replaced by REDACTED; `body` is unchanged.

    MLflow's formats: ``dataframe_split`` (by the position of the named column in each row of ``data``),
    ``dataframe_records``, ``instances`` and ``inputs`` (rows as objects, a list of them, or an object of
    columns or named tensors). The Open Inference Protocol: the ``data`` of each tensor of ``inputs`` and
    ``outputs`` whose ``name`` is a field. Top-level keys named as fields are redacted too.
    """
    if not fields:
        return body
    if protocol == PROTOCOL_V2:
        return _redact_v2(body, fields)
    if isinstance(body, list):  # not a format MLflow takes, but rows all the same
        return _redact_rows(body, fields)
    if not isinstance(body, dict):
        return body
    out = {}
    for key, value in body.items():
        if key == "dataframe_split":
            out[key] = _redact_split(value, fields)
        elif key in ("dataframe_records", "instances", "inputs"):
            out[key] = _redact_rows(value, fields)
        else:
            out[key] = REDACTED if key in fields else value
    return out


def redact_response(body: Any, fields: frozenset[str], protocol: str = PROTOCOL_MLFLOW) -> Any:
    """`body` (a parsed JSON response) with the values of `fields` replaced by REDACTED.

    MLflow: ``predictions`` as rows (objects, or a list of them) or an object of columns, or in the
    ``dataframe_split`` shape ``{"columns", "data"}``. The Open Inference Protocol: ``outputs`` tensors by name.
    """
    if not fields:
        return body
    if protocol == PROTOCOL_V2:
        return _redact_v2(body, fields)
    if isinstance(body, list):
        return _redact_rows(body, fields)
    if not isinstance(body, dict):
        return body
    out = {}
    for key, value in body.items():
        if key == "predictions":
            split = isinstance(value, dict) and "columns" in value and "data" in value
            out[key] = _redact_split(value, fields) if split else _redact_rows(value, fields)
        else:
            out[key] = REDACTED if key in fields else value
    return out


def redact_csv(text: str, fields: frozenset[str]) -> str:
    """CSV text with the cells of the columns named in `fields` (by the header row) replaced by REDACTED.

    ValueError when the text does not parse as CSV: then nobody can say which cells to hide.
    """
    if not fields:
        return text
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise ValueError(f"not CSV: {exc}") from None
    if not rows:
        return text
    hidden = {i for i, name in enumerate(rows[0]) if name.strip() in fields}
    if not hidden:
        return text
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(rows[0])
    for row in rows[1:]:
        writer.writerow([REDACTED if i in hidden else cell for i, cell in enumerate(row)])
    return out.getvalue()


def _redact_keys(value: Any, fields: frozenset[str]) -> Any:
    """A row object (or an object of columns): the values of its keys named in `fields` redacted."""
    if isinstance(value, dict) and not fields.isdisjoint(value):
        return {key: (REDACTED if key in fields else item) for key, item in value.items()}
    return value


def _redact_rows(value: Any, fields: frozenset[str]) -> Any:
    """Records (a list of row objects), one row object, or an object of columns or named tensors."""
    if isinstance(value, list):
        return [_redact_keys(item, fields) for item in value]
    return _redact_keys(value, fields)


def _redact_split(value: Any, fields: frozenset[str]) -> Any:
    """pandas' split orient, ``{"columns": [...], "data": [[...], ...]}``: cells of the named columns."""
    if not isinstance(value, dict):
        return value
    columns = value.get("columns")
    if not isinstance(columns, list):
        return value
    hidden = {i for i, name in enumerate(columns) if str(name) in fields}
    data = value.get("data")
    if not hidden or not isinstance(data, list):
        return value
    # A row that is not a list (a one-column frame written flat, or a malformed one) is hidden whole.
    rows = [[REDACTED if i in hidden else cell for i, cell in enumerate(row)] if isinstance(row, list) else REDACTED for row in data]
    return {**value, "data": rows}


def _redact_v2(body: Any, fields: frozenset[str]) -> Any:
    """Open Inference Protocol request or response: the data of the tensors whose name is a field."""
    if not isinstance(body, dict):
        return body
    out = {}
    for key, value in body.items():
        if key in ("inputs", "outputs") and isinstance(value, list):
            out[key] = [_redact_tensor(tensor, fields) for tensor in value]
        else:
            out[key] = REDACTED if key in fields else value
    return out


def _redact_tensor(tensor: Any, fields: frozenset[str]) -> Any:
    if isinstance(tensor, dict) and str(tensor.get("name")) in fields and "data" in tensor:
        return {**tensor, "data": REDACTED}
    return tensor
