"""The operator-wide schedule of due times."""

from __future__ import annotations

from modelpilot.rollout.schedule import Schedule


def test_due_pops_everything_due_earliest_first():
    schedule = Schedule()
    schedule.add("b", 20.0)
    schedule.add("a", 10.0)
    schedule.add("c", 30.0)
    assert schedule.due(5.0) == []
    assert schedule.due(20.0) == ["a", "b"]
    assert schedule.due(20.0) == []
    assert schedule.next_due() == 30.0
    assert schedule.due(100.0) == ["c"]
    assert schedule.next_due() is None
    assert len(schedule) == 0


def test_equal_due_times_come_out_in_the_order_added():
    schedule = Schedule()
    for key in ("x", "y", "z"):
        schedule.add(key, 1.0)
    assert schedule.due(1.0) == ["x", "y", "z"]


def test_readding_a_key_replaces_its_earlier_time():
    schedule = Schedule()
    schedule.add("a", 10.0)
    schedule.add("a", 50.0)
    assert schedule.next_due() == 50.0
    assert schedule.due(10.0) == []
    assert schedule.due(50.0) == ["a"]


def test_readding_a_key_earlier_replaces_its_later_time():
    schedule = Schedule()
    schedule.add("a", 50.0)
    schedule.add("a", 10.0)
    assert schedule.due(10.0) == ["a"]
    assert schedule.due(50.0) == []


def test_readding_the_same_time_yields_the_key_once():
    schedule = Schedule()
    schedule.add("a", 10.0)
    schedule.add("a", 10.0)
    assert schedule.due(10.0) == ["a"]


def test_cancel_forgets_a_key_and_ignores_unknown_ones():
    schedule = Schedule()
    schedule.add("a", 10.0)
    schedule.add("b", 20.0)
    schedule.cancel("a")
    schedule.cancel("never-added")
    assert "a" not in schedule and "b" in schedule
    assert schedule.next_due() == 20.0
    assert schedule.due(30.0) == ["b"]


def test_a_key_due_and_popped_can_be_added_again():
    schedule = Schedule()
    schedule.add("a", 1.0)
    assert schedule.due(1.0) == ["a"]
    schedule.add("a", 2.0)
    assert schedule.due(2.0) == ["a"]


def test_keys_need_only_be_hashable():
    schedule = Schedule()
    schedule.add(("ml", "fraud"), 1.0)
    schedule.add("plain", 1.0)
    schedule.add(frozenset({1}), 1.0)
    assert schedule.due(1.0) == [("ml", "fraud"), "plain", frozenset({1})]


def test_keys_readded_on_every_reconcile_do_not_grow_the_heap():
    schedule = Schedule()
    for i in range(10_000):
        schedule.add(f"key-{i % 5}", float(i))
    assert len(schedule) == 5
    assert len(schedule._heap) <= 2 * 5 + 17
    assert schedule.due(9_999.0) == [f"key-{i % 5}" for i in range(9_995, 10_000)]


def test_cancelled_keys_do_not_grow_the_heap():
    schedule = Schedule()
    for i in range(1_000):
        schedule.add(i, float(i))
        schedule.cancel(i)
    assert len(schedule._heap) <= 17
    assert schedule.next_due() is None
