"""spec.runtime.requestLogging: its schema and validation, and how it reaches the model server container."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from modelpilot.api import ModelDeploymentSpec
from modelpilot.api.crd import crd
from modelpilot.api.status import ResolvedModel
from modelpilot.render import workload
from modelpilot.render.labels import CANARY, STABLE
from modelpilot.render.owner import Owner
from modelpilot.serving import request_log

OWNER = Owner(name="fraud", namespace="ml", uid="1234")
MODEL = ResolvedModel(name="fraud-detector", version="7", run_id="r" * 32, source="models:/m-1")


def spec(request_logging: dict | None = None, **runtime) -> ModelDeploymentSpec:
    if request_logging is not None:
        runtime["requestLogging"] = request_logging
    return ModelDeploymentSpec.model_validate(
        {"model": {"name": "fraud-detector", "version": "7"}, "mlflow": {"trackingUri": "http://mlflow:5000"}, "runtime": runtime}
    )


def server(s: ModelDeploymentSpec, track: str = STABLE) -> dict:
    pod = workload.deployment(OWNER, s, MODEL, "runtime:1", track=track)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container


def flags(args: list[str]) -> dict[str, str]:
    return {flag: args[i + 1] for i, flag in enumerate(args) if flag.startswith("--log-requests-")}


# -- render ----------------------------------------------------------------------------------------


def test_without_request_logging_nothing_is_rendered():
    container = server(spec())
    assert flags(container["args"]) == {}
    assert "--log-requests" not in json.dumps(container)
    assert request_log.TOKEN_ENV not in json.dumps(container)


def test_request_logging_becomes_server_flags_on_every_track_before_the_users_args():
    s = spec(
        {"fraction": 0.25, "sink": "https://logs.example/ingest?stream=fraud", "redact": ["email", "card number"], "queueSize": 500},
        args=["--log-level", "debug"],
    )
    for track in (STABLE, CANARY):
        args = server(s, track)["args"]
        assert flags(args) == {
            "--log-requests-fraction": "0.25",
            "--log-requests-sink": "https://logs.example/ingest?stream=fraud",
            "--log-requests-queue": "500",
            "--log-requests-redact": "email,card number",
        }
        assert args[-2:] == ["--log-level", "debug"]  # the user's own args still come last, and win
    # The server parses what the operator renders into the configuration the spec says.
    from modelpilot.serving.server import parse_args

    config = request_log.config_from_args(parse_args(server(s)["args"]))
    assert (config.fraction, config.sink, config.redact, config.queue_size) == (
        0.25, "https://logs.example/ingest?stream=fraud", frozenset({"email", "card number"}), 500,
    )  # fmt: skip


def test_stdout_logging_defaults_and_no_redact_flag_without_fields():
    assert flags(server(spec({"fraction": 1}))["args"]) == {
        "--log-requests-fraction": "1.0",
        "--log-requests-sink": "stdout",
        "--log-requests-queue": "1000",
    }


def test_the_sink_token_reaches_the_server_by_secret_reference_only():
    s = spec({"fraction": 0.1, "sink": "https://logs.example/in", "sinkCredentialsSecret": "log-token"})
    container = server(s)
    token_env = [e for e in container["env"] if e["name"] == request_log.TOKEN_ENV]
    assert token_env == [
        {"name": "MODELPILOT_REQUEST_LOG_TOKEN", "valueFrom": {"secretKeyRef": {"name": "log-token", "key": "token"}}}
    ]
    assert workload.REQUEST_LOG_TOKEN_ENV == request_log.TOKEN_ENV  # the name the server reads
    assert "log-token" not in container["args"] and "envFrom" not in container
    # The fetch step gets nothing of it.
    pod = workload.deployment(OWNER, s, MODEL, "runtime:1")["spec"]["template"]["spec"]
    assert "log-token" not in json.dumps(pod["initContainers"])


# -- schema and validation -------------------------------------------------------------------------


def _schema() -> dict:
    root = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root["properties"]["spec"]["properties"]["runtime"]["properties"]["requestLogging"]


def test_schema_bounds_and_defaults():
    schema = _schema()
    props = schema["properties"]
    assert schema["required"] == ["fraction"]
    assert (props["fraction"]["type"], props["fraction"]["minimum"], props["fraction"]["maximum"]) == ("number", 0, 1)
    assert props["sink"]["default"] == "stdout" and props["sink"]["maxLength"] == 2048
    assert props["queueSize"]["default"] == 1000 and (props["queueSize"]["minimum"], props["queueSize"]["maximum"]) == (1, 100000)
    assert props["redact"]["maxItems"] == 256 and props["redact"]["items"]["pattern"] == "^[^,]+$"
    assert props["sinkCredentialsSecret"]["maxLength"] == 253
    (rule,) = schema["x-kubernetes-validations"]
    assert rule["message"] == "sinkCredentialsSecret goes with an http(s) sink"
    assert all(prop.get("description") for prop in props.values())


SINKS = ["stdout", "http://collector.logging:8080/ingest", "https://logs.example/in?stream=fraud"]
NOT_SINKS = ["", "stderr", "ftp://logs/x", "collector:8080", "https://", "https://logs/ with space"]
CREDENTIAL_SINKS = ["https://user:pa55@logs.example/in", "http://pa55@collector:8080", "https://u:pa55@h/p?q=1"]


def test_sink_pattern_as_the_api_server_applies_it():
    pattern = _schema()["properties"]["sink"]["pattern"]
    assert [sink for sink in SINKS if not re.search(pattern, sink)] == []
    assert [sink for sink in NOT_SINKS if re.search(pattern, sink)] == []
    for sink in NOT_SINKS:
        with pytest.raises(ValidationError):
            spec({"fraction": 1, "sink": sink})


def test_sink_credentials_are_refused_by_cel_and_by_the_operator_without_echoing_them():
    (rule,) = _schema()["properties"]["sink"]["x-kubernetes-validations"]
    assert rule["reason"] == "FieldValueForbidden"  # an Invalid error would echo the URL, password and all
    assert "sinkCredentialsSecret" in rule["message"]
    cel_pattern = re.fullmatch(r"!self\.matches\('(.*)'\)", rule["rule"]).group(1)
    assert [sink for sink in CREDENTIAL_SINKS if not re.search(cel_pattern, sink)] == []
    assert [sink for sink in SINKS if re.search(cel_pattern, sink)] == []
    for sink in CREDENTIAL_SINKS:
        with pytest.raises(ValidationError) as caught:
            spec({"fraction": 1, "sink": sink})
        assert "pa55" not in json.dumps([e["msg"] for e in caught.value.errors()])


@pytest.mark.parametrize(
    "bad",
    [
        {},  # fraction is required
        {"fraction": -0.01},
        {"fraction": 1.01},
        {"fraction": 1, "queueSize": 0},
        {"fraction": 1, "queueSize": 100_001},
        {"fraction": 1, "redact": ["a,b"]},  # the server takes the fields comma-separated
        {"fraction": 1, "redact": [""]},
        {"fraction": 1, "sinkCredentialsSecret": "log-token"},  # a token for stdout goes nowhere
    ],
)
def test_invalid_request_logging_is_refused(bad):
    with pytest.raises(ValidationError):
        spec(bad)


def test_valid_request_logging_round_trips_in_camel_case():
    s = spec({"fraction": 0.5, "sink": "https://logs/in", "redact": ["email"], "sinkCredentialsSecret": "t"})
    wire = s.runtime.to_wire()["requestLogging"]
    assert wire == {"fraction": 0.5, "sink": "https://logs/in", "redact": ["email"], "sinkCredentialsSecret": "t", "queueSize": 1000}
    assert spec().runtime.request_logging is None
