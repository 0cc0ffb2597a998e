"""Records: a sampled exchange as it is handed over, and the JSON line the writer makes of it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .redaction import redact_csv, redact_request, redact_response


@dataclass(slots=True)
class Exchange:
    """One sampled request and its answer, as the scoring side hands it over: bodies not yet parsed.

    A body is bytes or a list of chunks (joined by the writer), or None with the reason it was left out.
    """

    timestamp: float  # seconds since the epoch when the request arrived
    protocol: str
    method: str
    path: str
    status: int
    latency: float
    request_type: str
    request_body: bytes | Sequence[bytes] | None
    response_type: str
    response_body: bytes | Sequence[bytes] | None
    request_omitted: str | None = None
    response_omitted: str | None = None
    request_json_length: int | None = None  # the binary tensor data extension's JSON part, in bytes
    response_json_length: int | None = None


def build_record(exchange: Exchange, identity: Any, fields: frozenset[str]) -> dict[str, Any]:
    """The JSON-ready record of one exchange: who answered, how, and both bodies, redacted."""
    record: dict[str, Any] = {
        "timestamp": datetime.fromtimestamp(exchange.timestamp, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "id": uuid.uuid4().hex,
        "deployment": identity.deployment,
        "model_name": identity.model_name,
        "model_version": identity.model_version,
        "track": identity.track,
        "protocol": exchange.protocol,
        "method": exchange.method,
        "path": exchange.path,
        "status": exchange.status,
        "latency_seconds": round(exchange.latency, 6),
    }
    protocol = exchange.protocol
    record.update(
        _body_fields(
            "request", exchange.request_body, exchange.request_omitted, exchange.request_type, fields,
            lambda value: redact_request(value, fields, protocol), exchange.request_json_length,
        )
    )  # fmt: skip
    record.update(
        _body_fields(
            "response", exchange.response_body, exchange.response_omitted, exchange.response_type, fields,
            lambda value: redact_response(value, fields, protocol), exchange.response_json_length,
        )
    )  # fmt: skip
    return record


def _body_fields(
    side: str,
    body: bytes | Sequence[bytes] | None,
    omitted: str | None,
    content_type: str,
    fields: frozenset[str],
    redact: Callable[[Any], Any],
    json_length: int | None = None,
) -> dict[str, Any]:
    """``{side: value, side_format: ...}``, or ``{side: None, side_omitted: why}``; ``{side: None}`` if empty.

    JSON bodies are logged parsed (``json``), CSV as text (``csv``), other text as text (``text``) when no
    field is redacted. What cannot be redacted for sure (a body that does not parse while fields are
    redacted, other content types then) and binary bodies such as parquet are left out, and the record
    says why. A body of the binary tensor data extension (`json_length` bytes of JSON, then raw tensor
    data) is logged as its JSON part; the tensor data is left out, and ``side_omitted`` says so.
    """
    if omitted is not None:
        return {side: None, f"{side}_omitted": omitted}
    data = body if isinstance(body, (bytes, bytearray)) or body is None else b"".join(body)
    if not data:
        return {side: None}
    if json_length is not None and 0 <= json_length <= len(data):
        binary = len(data) - json_length
        logged = _body_fields(side, data[:json_length], None, "application/json", fields, redact)
        if binary and logged.get(side) is not None:
            logged[f"{side}_omitted"] = f"{binary} bytes of binary tensor data are not logged"
        return logged
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            if fields:
                return {side: None, f"{side}_omitted": "the body is not valid JSON, so it could not be redacted"}
        else:
            return {side: redact(value), f"{side}_format": "json"}
    elif media in ("application/vnd.apache.parquet", "application/x-parquet", "application/parquet"):
        return {side: None, f"{side}_omitted": "parquet bodies are not logged"}
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return {side: None, f"{side}_omitted": f"a binary body ({media or 'no content type'}) is not logged"}
    if media == "text/csv":
        try:
            return {side: redact_csv(text, fields), f"{side}_format": "csv"}
        except ValueError:
            return {side: None, f"{side}_omitted": "the body is not valid CSV, so it could not be redacted"}
    if fields:
        return {side: None, f"{side}_omitted": f"a {media or 'body without content type'} body cannot be redacted"}
    return {side: text, f"{side}_format": "text"}


def encode_record(record: Mapping[str, Any]) -> bytes:
    """One JSON line."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str).encode() + b"\n"


def body_size(body: bytes | Sequence[bytes]) -> int:
    """The size of a body given as bytes or as chunks."""
    return len(body) if isinstance(body, (bytes, bytearray)) else sum(len(chunk) for chunk in body)


def too_large(limit: int) -> str:
    """Why a body above the limit is left out of its record."""
    return f"the body is larger than {limit} bytes (--log-requests-max-body)"
