from modelpilot.kube.handover import replicas_handover

MANAGER = "modelpilot.io"
DESIRED = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "m", "namespace": "ns"}, "spec": {}}


def _live(replicas: int, fields: dict, manager: str = MANAGER) -> dict:
    return {
        "metadata": {"managedFields": [{"manager": manager, "operation": "Apply", "fieldsV1": fields}]},
        "spec": {"replicas": replicas},
    }


def test_the_live_count_we_own_gets_a_second_owner_before_we_leave_it_out():
    live = _live(3, {"f:spec": {"f:replicas": {}}})
    assert replicas_handover(DESIRED, live, MANAGER) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {"replicas": 3},
    }


def test_nothing_to_hand_over_when_we_keep_the_count_or_do_not_own_it():
    assert replicas_handover({**DESIRED, "spec": {"replicas": 2}}, _live(3, {"f:spec": {"f:replicas": {}}}), MANAGER) is None
    assert replicas_handover(DESIRED, _live(4, {"f:spec": {"f:replicas": {}}}, manager="kube-controller-manager"), MANAGER) is None
    assert replicas_handover(DESIRED, None, MANAGER) is None
