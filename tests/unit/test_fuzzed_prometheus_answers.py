"""Prometheus answers a canary must never be promoted on, served from a loopback server and read by the real
provider and measurement: NaN, ±Inf, empty results, matrices, strings, samples of the wrong shape, HTML
error pages, 5xx, truncated JSON. The provider returns one number (or None) or raises ProviderError; a
measurement whose request count or canary value is garbage passes no check, and a garbage stable value
passes no check relative to it."""

from __future__ import annotations

import asyncio
import json
import math
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelpilot.analysis import ProviderError
from modelpilot.analysis.measure import take
from modelpilot.analysis.prometheus import PrometheusProvider
from modelpilot.analysis.verdict import PASS
from modelpilot.api.spec import Analysis

from tests.support.canned_http import Answer, canned_server

ANALYSIS = Analysis.model_validate({
    "minSampleSize": 20,
    "checks": [
        {"name": "errors", "metric": "errorRate", "max": 0.05},
        {"name": "p99", "metric": "latencyP99", "maxRelativeToStable": 1.2},
        {"name": "throughput", "metric": "sum(rate(x{track=\"{{track}}\"}[{{window}}]))", "min": 0.5},
    ],
})  # fmt: skip
RELATIVE = {"p99"}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def result(kind: str, items) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": kind, "result": items}}).encode()


def series(value) -> dict:
    return {"metric": {"track": "canary"}, "value": [1700000000.5, value]}


good = st.floats(0, 1e6, allow_nan=False).map(lambda v: Answer(200, result("vector", [series(repr(v))])))


@st.composite
def garbage(draw) -> Answer:
    """An answer that is not one finite number."""
    kind = draw(st.sampled_from(["non-finite", "empty", "matrix", "string", "several", "bad sample", "bad data",
                                 "error", "html", "5xx", "truncated", "json", "bytes"]))  # fmt: skip
    if kind == "non-finite":
        value = draw(st.sampled_from(["NaN", "+Inf", "-Inf", "inf", "nan", "1e400", "-1e400"]))
        return Answer(200, draw(st.sampled_from([result("vector", [series(value)]), result("scalar", [1.5, value])])))
    if kind == "empty":
        return Answer(200, result("vector", []))
    if kind == "matrix":
        return Answer(200, result("matrix", [{"metric": {}, "values": [[1, "1"], [2, "2"]]}]))
    if kind == "string":
        return Answer(200, result("string", [1.5, draw(st.text(max_size=20))]))
    if kind == "several":
        return Answer(200, result("vector", [series("1"), series("2")]))
    if kind == "bad sample":
        sample = draw(st.sampled_from([[1.5], [1.5, 0.5], [1.5, True], [1.5, None], "12", {"1": "2"}, [1.5, "1_000"],
                                       [1.5, " 1 ", "x"], [1.5, []]]))  # fmt: skip
        return Answer(200, json.dumps({"status": "success", "data": {"resultType": "vector", "result": [{"value": sample}]}}).encode())
    if kind == "bad data":
        data = draw(st.sampled_from([None, [], "vector", {"resultType": "vector", "result": {"0": 1}}, {"result": []}]))
        return Answer(200, json.dumps({"status": "success", "data": data}).encode())
    if kind == "error":
        body = {"status": "error", "errorType": draw(st.text(max_size=200)), "error": draw(st.text(max_size=500))}
        return Answer(draw(st.sampled_from([400, 422, 503, 200])), json.dumps(body).encode())
    if kind == "html":
        return Answer(draw(st.sampled_from([200, 502, 504])), b"<html><body>Bad Gateway</body></html>", "text/html")
    if kind == "5xx":
        # A proxy in front of Prometheus answering 5xx with a body that looks like a result.
        return Answer(draw(st.sampled_from([500, 502, 503])), result("vector", [series("0.001")]))
    if kind == "truncated":
        body = result("vector", [series("0.001")])
        cut = draw(st.integers(0, len(body) - 1))
        return Answer(200, body[:cut], missing=len(body) - cut)
    if kind == "json":
        return Answer(200, json.dumps(draw(json_values)).encode())
    return Answer(200, draw(st.binary(max_size=100)))


@pytest.fixture(scope="module")
def server():
    with canned_server() as running:
        yield running


def ask(server, answer: Answer):
    server.answer = answer
    return asyncio.run(PrometheusProvider(server.url, timeout_seconds=10).query("up"))


# Each query builds its own HTTP client (and TLS context), as the provider does: the counts keep this tier brief.
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=garbage() | good)
def test_the_provider_answers_one_number_none_or_a_provider_error(server, answer):
    try:
        value = ask(server, answer)
    except ProviderError as exc:
        assert str(exc).startswith(f"Prometheus at {server.url} "), exc
        return
    assert value is None or isinstance(value, float)


def _routed(sample: Answer, canary: Answer, stable: Answer):
    def route(request: bytes) -> Answer:
        promql = urllib.parse.parse_qs(request.decode())["query"][0]
        if "increase(" in promql:
            return sample
        return stable if 'track="stable"' in promql else canary

    return route


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), on_no_data=st.sampled_from(["Inconclusive", "Fail"]))
def test_no_check_passes_on_garbage(server, data, on_no_data):
    # One of the three is garbage; the others are plausible numbers.
    garbled = data.draw(st.sampled_from(["sample", "canary", "stable"]))
    answers = {part: data.draw(garbage() if part == garbled else good, label=part) for part in ("sample", "canary", "stable")}
    server.answer = _routed(**answers)
    analysis = ANALYSIS.model_copy(update={"on_no_data": on_no_data})
    taken = asyncio.run(take(PrometheusProvider(server.url, 10), analysis, "ns", "md", "2", "1"))
    passed = {m.check for m in taken.measurements if m.verdict == PASS}
    if garbled == "stable":
        assert not passed & RELATIVE, taken
    else:
        assert not passed, taken


@pytest.mark.parametrize("count", ["NaN", "+Inf", "-1"])
def test_a_request_count_that_is_no_count_is_an_error_not_a_sample(server, count):
    """What the fuzzing above found: a NaN count passed the minimum-sample gate, and with onNoData Pass
    every check then passed."""
    server.answer = Answer(200, result("vector", [series(count)]))
    analysis = ANALYSIS.model_copy(update={"on_no_data": "Pass"})
    taken = asyncio.run(take(PrometheusProvider(server.url, 10), analysis, "ns", "md", "2", "1"))
    assert taken.sample is None and not taken.measurements and "is not a count" in taken.error


def test_infinite_values_fail_a_bound_but_pass_none():
    """+Inf latency fails a max; +Inf throughput does not pass a min; an infinite stable value is no yardstick."""
    from modelpilot.analysis.verdict import FAIL, INCONCLUSIVE, Reading, judge
    from modelpilot.api.spec import Check

    p99 = Check(name="p99", metric="latencyP99", max=0.5)
    throughput = Check(name="throughput", metric="x", min=1)
    relative = Check(name="p99", metric="latencyP99", max_relative_to_stable=1.2)
    assert judge(p99, Reading(math.inf), None).verdict == FAIL
    assert judge(throughput, Reading(math.inf), None).verdict == INCONCLUSIVE
    assert judge(p99, Reading(-math.inf), None).verdict == INCONCLUSIVE
    stable_inf = judge(relative, Reading(0.2), Reading(math.inf))
    assert stable_inf.verdict == INCONCLUSIVE and "stable track's value is inf" in stable_inf.reason


def test_a_5xx_with_a_result_in_it_is_not_believed(server):
    with pytest.raises(ProviderError, match=r"refused the query \(HTTP 502\)"):
        ask(server, Answer(502, result("vector", [series("0.001")])))
