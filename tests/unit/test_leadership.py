"""Who may take the leader election Lease: pure rules (the Lease round trips are in the HA test)."""

from __future__ import annotations

import pytest

from modelpilot.kube.leadership import Lease, LeaseView, claimable


def test_a_lease_never_held_or_released_is_free():
    assert claimable(None, "a", 100.0)
    assert claimable(LeaseView(holder=None, renewed=None, duration=8), "a", 100.0)


def test_the_holder_keeps_its_own_lease_and_others_wait_until_it_expires():
    held = LeaseView(holder="a", renewed=100.0, duration=8)
    assert claimable(held, "a", 105.0)
    assert not claimable(held, "b", 105.0)
    assert not claimable(held, "b", 108.0)
    assert claimable(held, "b", 108.1)


def test_a_lease_duration_must_leave_room_to_stop_before_another_replica_may_take_it():
    with pytest.raises(ValueError, match="more than twice the renew period"):
        Lease("ns", "l", "a", duration=4, renew_seconds=2)
