"""MLflow answers no MLflow server gives, served from a loopback server and read by the real resolver: odd
version numbers, unicode, huge tags, wrong types, HTML error pages, truncated JSON. Each ask comes to a
well-formed version or a Resolution that names the reason; never an exception the operator did not expect,
which would end the reconcile with a traceback instead of a condition."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelpilot.api.spec import ModelRef
from modelpilot.registry.errors import RegistryError
from modelpilot.registry.resolver import Resolver

from tests.support.canned_http import Answer, canned_server

VERSION = re.compile(r"[1-9][0-9]*")
REASONS = {cls.reason for cls in (RegistryError, *RegistryError.__subclasses__())}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
huge_text = st.integers(0, 200_000).map(lambda n: "x" * n)
odd_versions = st.one_of(
    st.sampled_from(["7", "1", "007", "7.0", "1e3", " 7", "٣", "-1", "0", "", "99999999999999999999999"]),
    st.integers(-5, 10**25), st.floats(), st.text(max_size=12), json_values,
)  # fmt: skip
model_version = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(),
        "version": odd_versions,
        "status": st.sampled_from(["READY", "PENDING_REGISTRATION", "FAILED_REGISTRATION"]) | st.text(max_size=70) | json_values,
        "run_id": st.text(max_size=40) | json_values,
        "source": st.text() | huge_text | json_values,
        "tags": st.lists(st.fixed_dictionaries({"key": st.text(max_size=30), "value": huge_text}), max_size=3),
    },
)
json_bodies = st.one_of(
    st.builds(lambda mv: {"model_version": mv}, model_version),
    st.builds(lambda v: {"model_version": v}, json_values),
    st.builds(lambda code, message: {"error_code": code, "message": message},
              st.sampled_from(["RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "INTERNAL_ERROR"]) | st.text(max_size=20),
              st.text()),
    json_values,
)  # fmt: skip


@st.composite
def answers(draw) -> Answer:
    status = draw(st.sampled_from([200, 200, 200, 201, 204, 301, 400, 401, 403, 404, 418, 429, 500, 502, 503]))
    kind = draw(st.sampled_from(["json", "json", "json", "truncated", "html", "bytes"]))
    if kind == "html":
        page = f"<html><body><h1>{status} {draw(st.text(max_size=40))}</h1></body></html>"
        return Answer(status, page.encode(), "text/html")
    if kind == "bytes":
        return Answer(status, draw(st.binary(max_size=200)), draw(st.sampled_from(["application/json", "application/octet-stream"])))
    body = json.dumps(draw(json_bodies)).encode()
    if kind == "truncated":
        cut = draw(st.integers(0, max(len(body) - 1, 0)))
        return Answer(status, body[:cut], missing=len(body) - cut or 1)
    return Answer(status, body)


refs = st.one_of(
    st.builds(lambda name, version: ModelRef(name=name, version=version), st.text(min_size=1, max_size=60), st.sampled_from(["1", "7"])),
    st.builds(lambda name, alias: ModelRef(name=name, alias=alias), st.text(min_size=1, max_size=60), st.text(min_size=1, max_size=60)),
)  # fmt: skip


@pytest.fixture(scope="module")
def server():
    with canned_server() as running:
        yield running


async def _resolve(url: str, ref: ModelRef):
    resolver = Resolver(concurrency=2, ttl_seconds=0, timeout_seconds=10)
    return await resolver.resolve(url, None, ref)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(answer=answers(), ref=refs)
def test_every_answer_resolves_to_a_well_formed_version_or_a_named_reason(server, answer, ref):
    server.answer = answer
    resolution = asyncio.run(_resolve(server.url, ref))
    if resolution.model is None:
        assert resolution.reason in REASONS and resolution.message, resolution
        return
    model = resolution.model
    assert VERSION.fullmatch(model.version), model
    assert model.name == ref.name and model.alias == ref.alias
    assert ref.version is None or model.version == ref.version
    assert isinstance(model.source, str) and (model.run_id is None or isinstance(model.run_id, str))
    json.dumps(model.to_wire())  # what status records


def test_a_garbled_version_is_said_to_come_from_the_server(server):
    """What the fuzzing above found: the resolver used to fail with a KeyError or a validation error."""
    for body in ({}, {"model_version": []}, {"model_version": {"version": "../1"}}, {"model_version": {"version": 3, "source": 1}}, [1]):
        server.answer = Answer(200, json.dumps(body).encode())
        resolution = asyncio.run(_resolve(server.url, ModelRef(name="m", alias="champion")))
        assert resolution.reason == "RegistryUnreachable" and resolution.retryable, body
        assert f"{server.url} did not answer like an MLflow server" in resolution.message


def test_a_version_given_as_a_json_number_reads_as_mlflow_writes_it(server):
    server.answer = Answer(200, json.dumps({"model_version": {"version": 12, "source": "s3://m/12", "run_id": "r"}}).encode())
    resolution = asyncio.run(_resolve(server.url, ModelRef(name="m", alias="champion")))
    assert (resolution.model.version, resolution.model.source, resolution.model.run_id) == ("12", "s3://m/12", "r")
