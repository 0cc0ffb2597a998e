from modelpilot.kube.diff import difference


def holds(live, desired) -> bool:
    return difference(live, desired) is None


def test_server_defaults_and_foreign_fields_are_ignored():
    live = {"spec": {"replicas": 2, "progressDeadlineSeconds": 600}, "status": {"x": 1}}
    assert holds(live, {"spec": {"replicas": 2}})


def test_changed_value_or_missing_field_is_a_difference():
    assert not holds({"spec": {"replicas": 3}}, {"spec": {"replicas": 2}})
    assert not holds({"spec": {}}, {"spec": {"replicas": 2}})


def test_lists_are_owned_whole():
    assert not holds({"args": ["a", "b", "c"]}, {"args": ["a", "b"]})
    assert holds({"ports": [{"port": 80, "nodePort": 0}]}, {"ports": [{"port": 80}]})


def test_quantities_compare_as_text_but_booleans_do_not():
    assert holds({"cpu": "1"}, {"cpu": 1})
    assert not holds({"flag": "True"}, {"flag": True})


def test_the_first_difference_is_named_by_its_path():
    assert difference({"spec": {"template": {"args": ["a"]}}}, {"spec": {"template": {"args": ["b"]}}}) == ".spec.template.args[0]"
