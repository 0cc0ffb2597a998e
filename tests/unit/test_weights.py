"""Replica-ratio traffic split: canary pods for a weight, the share they give, and how it is reported."""

from __future__ import annotations

from fractions import Fraction

import pytest

from modelpilot.traffic.replica_ratio import canary_replicas, describe, effective_weight


def closest_by_search(weight: int, stable: int) -> int:
    """The rule spelled out by brute force: among 1..stable canary pods, the share closest to the weight,
    the fewer pods on a tie."""
    target = Fraction(weight, 100)
    return min(range(1, stable + 1), key=lambda c: (abs(Fraction(c, stable + c) - target), c))


@pytest.mark.parametrize("stable", range(1, 21))
def test_every_weight_gets_the_closest_share_whole_pods_allow(stable):
    for weight in range(0, 101):
        canary = canary_replicas(weight, stable, None)
        if weight == 0:
            assert canary == 0
            continue
        assert canary >= 1, (weight, stable)
        # The canary is surge: it never outnumbers the stable track, whose count the caller keeps.
        assert canary <= stable, (weight, stable)
        assert canary == closest_by_search(weight, stable), (weight, stable)


@pytest.mark.parametrize("stable", range(1, 21))
def test_more_weight_never_means_fewer_canary_pods(stable):
    counts = [canary_replicas(weight, stable, None) for weight in range(0, 101)]
    assert counts == sorted(counts)


@pytest.mark.parametrize(
    "weight, stable, expected",
    [(10, 3, 1), (10, 9, 1), (10, 18, 2), (25, 3, 1), (20, 8, 2), (50, 4, 4), (1, 20, 1), (33, 10, 5)],
)
def test_examples(weight, stable, expected):
    assert canary_replicas(weight, stable, None) == expected


def test_weight_100_is_capped_at_as_many_canary_pods_as_stable():
    assert canary_replicas(100, 4, None) == 4
    assert effective_weight(4, 4) == 50.0
    assert canary_replicas(80, 3, None) == 3


def test_canary_replicas_override_is_used_as_given():
    assert canary_replicas(10, 4, 3) == 3
    assert canary_replicas(100, 4, 12) == 12
    assert canary_replicas(50, 4, 0) == 0


def test_no_stable_pods_means_no_canary_pods():
    assert canary_replicas(10, 0, None) == 0
    assert canary_replicas(100, 0, None) == 0


def test_effective_weight():
    assert effective_weight(3, 1) == 25.0
    assert effective_weight(3, 0) == 0.0
    assert effective_weight(0, 0) == 0.0
    assert effective_weight(0, 2) == 100.0


def test_describe_reports_asked_and_effective_weight():
    assert describe(10, 1, 3) == "asked 10%, 25% with 1 of 4 pods"
    assert describe(30, 1, 2) == "asked 30%, 33.3% with 1 of 3 pods"
    assert describe(0, 0, 3) == "asked 0%, 0% with 0 of 3 pods"


def test_describe_explains_the_cap_and_an_empty_stable_track():
    assert describe(100, 4, 4).startswith("asked 100%, 50% with 4 of 8 pods (a replica-ratio split gives")
    assert "no stable pods" in describe(10, 0, 0)
    # An override above the stable count is no cap.
    assert describe(80, 8, 2) == "asked 80%, 80% with 8 of 10 pods"
