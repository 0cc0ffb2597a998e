"""Verdicts of one check: absolute and relative bounds, and the policy for missing data and provider errors."""

from __future__ import annotations

import math

import pytest

from modelpilot.analysis.queries import Target, query, unknown_placeholders
from modelpilot.analysis.verdict import Reading, judge
from modelpilot.api.spec import Check


def check(**bounds) -> Check:
    return Check(name="errors", metric="errorRate", **bounds)


def test_within_an_absolute_bound_passes_and_beyond_it_fails_naming_value_and_bound():
    assert judge(check(max=0.05), Reading(0.01), None).verdict == "Pass"
    failed = judge(check(max=0.05), Reading(0.31), None)
    assert (failed.verdict, failed.value, failed.bound, failed.reason) == ("Fail", 0.31, "max 0.05", "errors 0.31 > max 0.05")
    low = judge(Check(name="rate", metric="x", min=10), Reading(3.0), None)
    assert (low.verdict, low.reason) == ("Fail", "rate 3 < min 10")


def test_a_relative_bound_uses_the_stable_tracks_value_over_the_same_window():
    p99 = Check(name="p99", metric="latencyP99", max_relative_to_stable=1.2)
    ok = judge(p99, Reading(0.011), Reading(0.010))
    assert (ok.verdict, ok.stable_value, ok.bound) == ("Pass", 0.010, "max 1.2 x stable (0.01)")
    slow = judge(p99, Reading(0.25), Reading(0.010))
    assert slow.verdict == "Fail" and slow.reason == "p99 0.25 > max 1.2 x stable (0.01)"
    both = judge(Check(name="p99", metric="latencyP99", max=0.1, max_relative_to_stable=1.2), Reading(0.2), Reading(0.5))
    assert both.verdict == "Fail" and both.bound == "max 0.1, max 1.2 x stable (0.5)"


@pytest.mark.parametrize("canary", [Reading(None), Reading(math.nan)])
def test_no_data_follows_the_policy_and_defaults_to_inconclusive(canary):
    assert judge(check(max=0.05), canary, None).verdict == "Inconclusive"
    assert judge(check(max=0.05), canary, None, on_no_data="Fail").verdict == "Fail"
    assert judge(check(max=0.05), canary, None, on_no_data="Pass").verdict == "Pass"


def test_a_provider_error_is_inconclusive_whatever_the_policy():
    result = judge(check(max=0.05), Reading(error="Prometheus at http://p did not answer within 10 s"), None, on_no_data="Pass")
    assert (result.verdict, result.reason) == ("Inconclusive", "Prometheus at http://p did not answer within 10 s")


def test_a_relative_bound_without_a_stable_value_is_inconclusive_never_a_pass():
    p99 = Check(name="p99", metric="latencyP99", max_relative_to_stable=1.2)
    missing = judge(p99, Reading(0.01), Reading(None))
    assert missing.verdict == "Inconclusive" and "no data for the stable track" in missing.reason
    broken = judge(p99, Reading(0.01), Reading(error="Prometheus at http://p is unreachable: ConnectError"))
    assert broken.verdict == "Inconclusive" and "unreachable" in broken.reason


def test_infinity_fails_a_maximum():
    assert judge(check(max=0.05), Reading(math.inf), None).verdict == "Fail"


def test_custom_templates_get_their_placeholders_filled_and_unknown_ones_are_named():
    target = Target("ml", "fraud", "canary", '7"x', "1m")
    template = 'sum(rate(my_errors{namespace="{{namespace}}",app="{{ deployment }}",v="{{version}}"}[{{window}}]))'
    assert query(template, target) == 'sum(rate(my_errors{namespace="ml",app="fraud",v="7\\"x"}[1m]))'
    assert unknown_placeholders("x{a='{{namespace}}',b='{{pod}}',c='{{team}}'}") == ["pod", "team"]
    assert 'track="canary"' in query("errorRate", target)
