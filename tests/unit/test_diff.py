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


# --- fields we applied before and no longer want ------------------------------------------------------

from modelpilot.kube.diff import drift, no_longer_desired  # noqa: E402

MANAGER = "modelpilot.io"


def _live(spec: dict, fields: dict, manager: str = MANAGER) -> dict:
    return {
        "metadata": {"managedFields": [{"manager": manager, "operation": "Apply", "fieldsV1": fields}]},
        "spec": spec,
    }


_CONTAINER_FIELDS = {
    "f:spec": {
        "f:containers": {
            'k:{"name":"model-server"}': {
                ".": {},
                "f:name": {},
                "f:resources": {"f:limits": {"f:cpu": {}}, "f:requests": {"f:cpu": {}}},
            }
        }
    }
}


def test_a_removed_field_we_applied_must_be_applied_again():
    live = _live(
        {"containers": [{"name": "model-server", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}}]},
        _CONTAINER_FIELDS,
    )
    desired = {"spec": {"containers": [{"name": "model-server", "resources": {"requests": {"cpu": "1"}}}]}}
    assert drift(live, desired, MANAGER) == ".spec.containers[{\"name\":\"model-server\"}].resources.limits (no longer desired)"
    still = {"spec": {"containers": [{"name": "model-server", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}}]}}
    assert drift(live, still, MANAGER) is None


def test_fields_of_other_managers_and_updates_do_not_count():
    live = _live({"replicas": 3}, {"f:spec": {"f:replicas": {}}}, manager="kube-controller-manager")
    assert drift(live, {"spec": {}}, MANAGER) is None
    live["metadata"]["managedFields"][0].update(manager=MANAGER, operation="Update")
    assert drift(live, {"spec": {}}, MANAGER) is None


def test_replicas_left_out_for_an_autoscaler_is_a_difference():
    live = _live({"replicas": 3, "revisionHistoryLimit": 3}, {"f:spec": {"f:replicas": {}, "f:revisionHistoryLimit": {}}})
    assert drift(live, {"spec": {"revisionHistoryLimit": 3}}, MANAGER) == ".spec.replicas (no longer desired)"


def test_keyed_elements_match_on_the_keys_we_wrote_and_sets_on_their_values():
    fields = {"f:ports": {'k:{"port":80,"protocol":"TCP"}': {"f:name": {}}}, "f:finalizers": {'v:"a"': {}}}
    assert no_longer_desired(fields, {"ports": [{"port": 80, "name": "http"}], "finalizers": ["a"]}) is None
    assert no_longer_desired(fields, {"ports": [{"port": 81, "name": "http"}], "finalizers": ["a"]}) == '.ports[{"port":80,"protocol":"TCP"}]'
    assert no_longer_desired(fields, {"ports": [{"port": 80, "name": "http"}], "finalizers": []}) == '.finalizers["a"]'


def test_an_absent_object_is_applied():
    assert drift(None, {"spec": {}}, MANAGER) == "(absent)"


def test_resource_quantities_compare_by_value():
    assert holds({"resources": {"requests": {"cpu": "500m"}}}, {"resources": {"requests": {"cpu": 0.5}}})
    assert holds({"resources": {"limits": {"memory": "1Gi"}}}, {"resources": {"limits": {"memory": "1024Mi"}}})
    assert not holds({"resources": {"limits": {"memory": "1G"}}}, {"resources": {"limits": {"memory": "1Gi"}}})
    # Only quantities: other text that parses as a number still compares as written.
    assert not holds({"labels": {"version": "1.0"}}, {"labels": {"version": "1"}})
