"""`kubectl apply` a ModelDeployment naming a real MLflow model; the operator serves exactly that version.

Real kube-apiserver (pods placed on kwok's nodes, which make them Ready), real `mlflow server`, the operator as a real process under
the Helm chart's RBAC, in namespaces that enforce Pod Security "restricted".
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import socket
import threading
import time

import pytest
import yaml

from modelpilot.api import ModelDeploymentSpec, ResolvedModel
from modelpilot.kube.diff import difference
from modelpilot.render import workload
from modelpilot.render.owner import Owner

from tests.cluster.launcher import KWOK_TOLERATION
from tests.support.leaks import basic_auth, find, secret_value
from tests.support.mlflow import ADMIN_PASSWORD, ADMIN_USER, register_sklearn_model, set_alias
from tests.support.modeldeployments import condition, plugin
from tests.support.processes import free_port
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.mlflow]


# These tests judge the operator's bookkeeping, not serving: their pods go to kwok's nodes, which make
# them Ready at once. test_serving_on_node.py runs models on the real node.
ON_KWOK = {"tolerations": [KWOK_TOLERATION], "nodeSelector": {"type": "kwok"}}


def manifest(namespace: str, name: str, mlflow_uri: str, model: dict, **spec) -> str:
    spec.setdefault("pod", ON_KWOK)
    body = {
        "apiVersion": "modelpilot.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": model, "mlflow": {"trackingUri": mlflow_uri, "credentialsSecret": "mlflow-creds"}, **spec},
    }
    return yaml.safe_dump(body)


def get(kubectl, *args: str) -> dict | None:
    result = kubectl("get", *args, "-o", "json")
    return json.loads(result.stdout) if result.returncode == 0 else None


def status(kubectl, namespace: str, name: str) -> dict:
    return (get(kubectl, "mdep", name, "-n", namespace) or {}).get("status", {})



def wait_phase(kubectl, operator, namespace, name, phase, timeout=90, **expect) -> dict:
    def probe():
        st = status(kubectl, namespace, name)
        ok = st.get("phase") == phase and all(_dig(st, k) == v for k, v in expect.items())
        return st if ok else None

    try:
        return wait_for(probe, f"{namespace}/{name} phase {phase} {expect}", timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstatus: {status(kubectl, namespace, name)}\noperator log:\n{operator.tail()}")


def _dig(st: dict, dotted: str):
    for part in dotted.split("__"):
        st = (st or {}).get(part) if isinstance(st, dict) else None
    return st


def events(kubectl, namespace: str, name: str) -> list[dict]:
    listed = get(kubectl, "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}") or {}
    return listed.get("items", [])


def test_apply_serves_the_version_and_reports_ready(kubectl, operator, mlflow, registered_model, restricted_namespace):
    ns = restricted_namespace
    kubectl("apply", "-f", "-", input=manifest(ns, "fraud", mlflow.uri, {"name": registered_model, "version": "2"}, replicas=2), check=True)

    st = wait_phase(kubectl, operator, ns, "fraud", "Ready", readyReplicas=2)
    assert st["observedGeneration"] == 1
    # No finalizer: deleting a ModelDeployment or its namespace never waits for the operator.
    assert "finalizers" not in get(kubectl, "mdep", "fraud", "-n", ns)["metadata"]
    assert st["model"]["version"] == "2" and len(st["model"]["runId"]) == 32
    assert condition(st, "Ready")["status"] == "True"
    assert condition(st, "ModelResolved")["reason"] == "Resolved"

    dep = get(kubectl, "deployment", "fraud", "-n", ns, "--show-managed-fields")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["modelpilot.io/model-version"] == "2" and labels["modelpilot.io/track"] == "stable"
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert dep["status"]["availableReplicas"] == 2
    managers = {m["manager"] for m in dep["metadata"]["managedFields"] if m["operation"] == "Apply"}
    assert managers == {"modelpilot.io"}
    # The pods were admitted by Pod Security "restricted" and became Ready.
    pods = get(kubectl, "pods", "-n", ns, "-l", "modelpilot.io/deployment=fraud")["items"]
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)

    svc = get(kubectl, "service", "fraud", "-n", ns)
    assert svc["spec"]["clusterIP"] and svc["spec"]["selector"]["modelpilot.io/deployment"] == "fraud"
    assert "modelpilot.io/track" not in svc["spec"]["selector"]  # every track answers behind it
    for track in ("stable", "canary"):  # and each track on its own
        one = get(kubectl, "service", f"fraud-{track}", "-n", ns)
        assert one["spec"]["selector"]["modelpilot.io/track"] == track
        assert one["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    # The EndpointSlice controller follows the pods a moment later.
    wait_for(lambda: sum(len(s.get("endpoints") or []) for s in get(
        kubectl, "endpointslices", "-n", ns, "-l", "kubernetes.io/service-name=fraud-stable")["items"]) == 2,
        "both pods behind the stable Service", timeout=30)  # fmt: skip

    table = kubectl("get", "mdep", "-n", ns).stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "MODEL", "VERSION", "PHASE", "ROLLOUT", "CANARY", "READY", "AGE"]
    starts = [header.index(column) for column in header.split()]
    cells = [row[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
    assert cells[:7] == ["fraud", registered_model, "2", "Ready", "", "", "2"]  # no rollout steps, no canary
    explained = kubectl("explain", "modeldeployment.spec.model", check=True).stdout
    assert "Registry alias to follow" in explained

    # Two replicas get a budget that lets a drain evict one pod at a time; at one replica it goes.
    budget = get(kubectl, "poddisruptionbudget", "fraud", "-n", ns)
    assert budget["spec"]["maxUnavailable"] == 1 and budget["spec"]["selector"]["matchLabels"]["modelpilot.io/deployment"] == "fraud"
    kubectl("patch", "mdep", "fraud", "-n", ns, "--type=merge", "-p", '{"spec": {"replicas": 1}}', check=True)
    wait_for(lambda: get(kubectl, "poddisruptionbudget", "fraud", "-n", ns) is None, "the budget to go at one replica")


def test_version_change_rolls_out_the_new_version(kubectl, operator, mlflow, registered_model, restricted_namespace):
    ns = restricted_namespace
    kubectl("apply", "-f", "-", input=manifest(ns, "m", mlflow.uri, {"name": registered_model, "version": "1"}), check=True)
    wait_phase(kubectl, operator, ns, "m", "Ready", model__version="1")

    kubectl("apply", "-f", "-", input=manifest(ns, "m", mlflow.uri, {"name": registered_model, "version": "2"}), check=True)
    st = wait_phase(kubectl, operator, ns, "m", "Ready", model__version="2", stable__version="2")
    assert st["observedGeneration"] == 2
    dep = get(kubectl, "deployment", "m", "-n", ns)
    assert dep["spec"]["template"]["metadata"]["labels"]["modelpilot.io/model-version"] == "2"


def test_moving_an_alias_in_mlflow_rolls_out_without_a_spec_change(kubectl, operator, mlflow, restricted_namespace):
    ns = restricted_namespace
    name = "alias-follow"
    v1 = register_sklearn_model(mlflow, name, alias="champion", seed=3)
    v2 = register_sklearn_model(mlflow, name, seed=4)
    kubectl("apply", "-f", "-", input=manifest(ns, "a", mlflow.uri, {"name": name, "alias": "champion"}), check=True)
    wait_phase(kubectl, operator, ns, "a", "Ready", model__version=v1)

    set_alias(mlflow, name, "champion", v2)
    st = wait_phase(kubectl, operator, ns, "a", "Ready", model__version=v2, stable__version=v2)
    assert st["model"]["alias"] == "champion" and st["observedGeneration"] == 1
    # The periodic resync noticed it, and says so where people look.
    (event,) = wait_for(
        lambda: [e for e in events(kubectl, ns, "a") if e["reason"] == "Resolved" and f"-> version {v2}" in e["message"]],
        "a Resolved Event for the new version",
    )
    assert event["type"] == "Normal" and event["source"]["component"] == "modelpilot"


def test_hand_edits_are_put_back_and_no_op_reconciles_write_nothing(
    kubectl, operator, mlflow, registered_model, restricted_namespace
):
    ns = restricted_namespace
    # Quantities written otherwise than the API server stores them (it keeps 500m and 1Gi): still no write.
    resources = {"requests": {"cpu": "0.5", "memory": "1024Mi"}}
    kubectl("apply", "-f", "-", input=manifest(ns, "d", mlflow.uri, {"name": registered_model, "version": "1"}, replicas=1, resources=resources), check=True)
    wait_phase(kubectl, operator, ns, "d", "Ready", readyReplicas=1)
    stored = get(kubectl, "deployment", "d", "-n", ns)["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert stored["requests"] == {"cpu": "500m", "memory": "1Gi"}

    kubectl("scale", "deployment", "d", "-n", ns, "--replicas=3", check=True)
    kubectl("set", "env", "deployment/d", "-n", ns, "-c", "model-server", "MODELPILOT_MODEL_VERSION=9", check=True)
    # Putting an ownerReference back is an update of it: OwnerReferencesPermissionEnforcement asks for
    # delete on the Deployment and update of the owner's finalizers (blockOwnerDeletion).
    unowned = '[{"op": "remove", "path": "/metadata/ownerReferences"}]'
    kubectl("patch", "deployment", "d", "-n", ns, "--type=json", "-p", unowned, check=True)

    def reverted():
        dep = get(kubectl, "deployment", "d", "-n", ns)
        env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        owned = [ref["kind"] for ref in dep["metadata"].get("ownerReferences", [])] == ["ModelDeployment"]
        return dep["spec"]["replicas"] == 1 and env["MODELPILOT_MODEL_VERSION"] == "1" and owned

    wait_for(reverted, "the operator to put back replicas, env and its ownerReference", timeout=60)
    wait_phase(kubectl, operator, ns, "d", "Ready", readyReplicas=1)

    # Several periodic reconciles (every 3s here) of an unchanged object must not write to the API server.
    # Earlier tests' namespaces go first: while one is emptied, the operator rightly re-creates what the
    # namespace controller deleted under a ModelDeployment that still exists, and the apiserver refuses.
    wait_for(lambda: not _terminating_namespaces(kubectl), "earlier tests' namespaces to be gone", timeout=180)
    before = wait_for(lambda: _settled_write_count(kubectl), "API server writes to settle", timeout=60)
    reconciled_before = operator.reconciles("resync")
    time.sleep(12)  # an observation window of four reconcile intervals, not a speed assertion
    after = _write_count(kubectl)
    assert after == before, f"no-op reconciles sent {after - before} writes\n{operator.tail()}"
    # The window saw reconciles that wrote nothing, not a resync loop that stopped.
    assert operator.reconciles("resync") - reconciled_before >= 2, operator.tail()


# The operator writes with server-side apply and status merge patches. DELETE is left out: namespaces of
# earlier tests are still being emptied by the namespace controller while this one runs.
_WRITE_VERBS = {"APPLY", "PATCH"}


def _terminating_namespaces(kubectl) -> list[str]:
    listed = get(kubectl, "namespaces") or {"items": []}
    return [n["metadata"]["name"] for n in listed["items"] if n.get("status", {}).get("phase") == "Terminating"]


def _write_count(kubectl) -> int:
    """Writes the API server counted to ModelDeployments (status included) and to the kinds we own.

    Status writes by the Deployment and HPA controllers (subresource "status") are not ours.
    """
    total = 0
    for line in kubectl("get", "--raw", "/metrics", check=True).stdout.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(
            pair.split("=", 1) for pair in line[line.index("{") + 1 : line.rindex("}")].replace('"', "").split(",")
        )
        resource, subresource = labels.get("resource"), labels.get("subresource", "")
        ours = resource == "modeldeployments" or (
            resource in {"deployments", "services", "horizontalpodautoscalers"} and subresource == ""
        )
        if ours and labels.get("verb") in _WRITE_VERBS:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def _settled_write_count(kubectl) -> int | None:
    first = _write_count(kubectl)
    time.sleep(4)
    return first if _write_count(kubectl) == first else None


def _server_container(kubectl, ns: str, name: str) -> dict:
    dep = get(kubectl, "deployment", name, "-n", ns)
    return next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "model-server")


def test_a_field_removed_from_the_spec_is_removed_from_the_deployment(
    kubectl, operator, mlflow, registered_model, restricted_namespace
):
    ns = restricted_namespace
    model = {"name": registered_model, "version": "1"}
    limited = {"requests": {"cpu": "100m"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    kubectl("apply", "-f", "-", input=manifest(ns, "lim", mlflow.uri, model, resources=limited), check=True)
    wait_phase(kubectl, operator, ns, "lim", "Ready")
    assert _server_container(kubectl, ns, "lim")["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}

    kubectl("apply", "-f", "-", input=manifest(ns, "lim", mlflow.uri, model, resources={"requests": {"cpu": "100m"}}), check=True)
    wait_for(
        lambda: _server_container(kubectl, ns, "lim")["resources"] == {"requests": {"cpu": "100m"}},
        "the limits to be removed from the Deployment",
        timeout=60,
    )


def _owns_replicas(dep: dict, manager: str) -> bool:
    entries = [m for m in dep["metadata"].get("managedFields", []) if m["manager"] == manager and m["operation"] == "Apply"]
    return any("f:replicas" in m.get("fieldsV1", {}).get("f:spec", {}) for m in entries)


def test_turning_autoscaling_on_hands_replicas_over_without_losing_capacity(
    kubectl, operator, mlflow, registered_model, restricted_namespace
):
    ns = restricted_namespace
    model = {"name": registered_model, "version": "1"}
    kubectl("apply", "-f", "-", input=manifest(ns, "hpa", mlflow.uri, model, replicas=3), check=True)
    wait_phase(kubectl, operator, ns, "hpa", "Ready", readyReplicas=3)

    scaling = {"minReplicas": 2, "maxReplicas": 5}
    kubectl("apply", "-f", "-", input=manifest(ns, "hpa", mlflow.uri, model, replicas=3, autoscaling=scaling), check=True)
    seen = []

    def handed_over():
        dep = get(kubectl, "deployment", "hpa", "-n", ns, "--show-managed-fields")
        seen.append((dep["spec"].get("replicas"), (dep.get("status") or {}).get("readyReplicas", 0)))
        has_hpa = get(kubectl, "hpa", "hpa", "-n", ns) is not None
        return has_hpa and not _owns_replicas(dep, "modelpilot.io")

    wait_for(handed_over, "the HPA to exist and the operator to stop applying replicas", timeout=60)
    for _ in range(5):  # a few more looks: a reset to 1 would show within the Deployment controller's next sync
        handed_over()
        time.sleep(1)
    assert all(replicas == 3 and ready == 3 for replicas, ready in seen), seen

    # Autoscaling off again: the HPA goes, and the spec's count is applied and owned by the operator again.
    kubectl("apply", "-f", "-", input=manifest(ns, "hpa", mlflow.uri, model, replicas=2), check=True)

    def taken_back():
        dep = get(kubectl, "deployment", "hpa", "-n", ns, "--show-managed-fields")
        gone = get(kubectl, "hpa", "hpa", "-n", ns) is None
        return gone and dep["spec"]["replicas"] == 2 and _owns_replicas(dep, "modelpilot.io")

    wait_for(taken_back, "the HPA to be deleted and replicas: 2 applied", timeout=60)
    wait_phase(kubectl, operator, ns, "hpa", "Ready", readyReplicas=2)


def test_an_object_of_the_same_name_that_is_not_ours_is_left_alone(
    kubectl, operator, mlflow, registered_model, restricted_namespace
):
    ns = restricted_namespace
    # A user's own Service that happens to have the name the ModelDeployment renders.
    kubectl("create", "service", "clusterip", "taken", "--tcp=80:8080", "-n", ns, check=True)
    theirs = get(kubectl, "service", "taken", "-n", ns)
    kubectl("apply", "-f", "-", input=manifest(ns, "taken", mlflow.uri, {"name": registered_model, "version": "1"}), check=True)
    st = wait_phase(kubectl, operator, ns, "taken", "Failed")
    progressing = condition(st, "Progressing")
    assert progressing["reason"] == "NotOwned"
    assert f"Service {ns}/taken exists and was not made by this ModelDeployment" in progressing["message"]
    wait_for(
        lambda: [e for e in events(kubectl, ns, "taken") if e["reason"] == "NotOwned" and e["type"] == "Warning"],
        "a NotOwned Event",
    )
    # Nothing was touched: their Service keeps its selector and gains no owner; no Deployment was made.
    time.sleep(6)  # two resync intervals, in which a takeover would show
    now = get(kubectl, "service", "taken", "-n", ns)
    assert now["spec"]["selector"] == theirs["spec"]["selector"] == {"app": "taken"}
    assert not now["metadata"].get("ownerReferences")
    assert now["metadata"]["resourceVersion"] == theirs["metadata"]["resourceVersion"]
    assert get(kubectl, "deployment", "taken", "-n", ns) is None

    # Once the name is free, the ModelDeployment goes ahead on its own.
    kubectl("delete", "service", "taken", "-n", ns, check=True)
    wait_phase(kubectl, operator, ns, "taken", "Ready")


def test_an_apply_the_api_server_refuses_is_reported(kubectl, operator, mlflow, registered_model, restricted_namespace):
    ns = restricted_namespace
    # The CRD takes any text as a quantity; the Deployment's validation does not.
    resources = {"requests": {"cpu": "lots"}}
    kubectl("apply", "-f", "-", input=manifest(ns, "refused", mlflow.uri, {"name": registered_model, "version": "1"}, resources=resources), check=True)
    st = wait_phase(kubectl, operator, ns, "refused", "Failed")
    progressing = condition(st, "Progressing")
    assert progressing["reason"] == "ApplyFailed"
    # The API server answers this one with a 500, not a 422: every refusal is reported.
    assert progressing["message"].startswith(f"could not apply Deployment {ns}/refused: HTTP ")
    assert "quantities must match" in progressing["message"]
    wait_for(
        lambda: [e for e in events(kubectl, ns, "refused") if e["reason"] == "ApplyFailed" and e["type"] == "Warning"],
        "an ApplyFailed Event",
    )


def test_delete_cascades_to_owned_objects(kubectl, operator, mlflow, registered_model, restricted_namespace):
    ns = restricted_namespace
    kubectl("apply", "-f", "-", input=manifest(ns, "gone", mlflow.uri, {"name": registered_model, "version": "1"}), check=True)
    wait_phase(kubectl, operator, ns, "gone", "Ready")
    kubectl("delete", "mdep", "gone", "-n", ns, "--wait=true", check=True)
    wait_for(
        lambda: get(kubectl, "deployment", "gone", "-n", ns) is None and get(kubectl, "service", "gone", "-n", ns) is None,
        "the garbage collector to delete the Deployment and Service",
    )


# Secret values as distinctive as real ones, so a leak cannot hide behind a common word.
WRONG_USER = secret_value("nobody")
WRONG_PASSWORD = secret_value("refused-password")
ARTIFACT_KEY = secret_value("artifact-store-key")
KEYSTORE = b"\xff\xfe binary keystore " + secrets.token_bytes(16)
basic_auth(ADMIN_USER, WRONG_PASSWORD)
basic_auth(WRONG_USER, WRONG_PASSWORD)


def create_secret(kubectl, namespace: str, name: str, values: dict[str, str | bytes]) -> None:
    data = {k: base64.b64encode(v if isinstance(v, bytes) else v.encode()).decode() for k, v in values.items()}
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}, "data": data}
    kubectl("apply", "-f", "-", input=json.dumps(body), check=True)


@pytest.mark.parametrize(
    "model, secret, reason, phase",
    [
        ({"name": "no-such-model", "version": "1"}, "mlflow-creds", "ModelNotFound", "Failed"),
        ({"name": "fraud-detector", "version": "99"}, "mlflow-creds", "VersionNotFound", "Failed"),
        ({"name": "fraud-detector", "alias": "nobody"}, "mlflow-creds", "AliasNotFound", "Failed"),
        ({"name": "fraud-detector", "version": "1"}, "wrong-creds", "CredentialsRefused", "Failed"),
        ({"name": "fraud-detector", "version": "1"}, "absent-secret", "CredentialsSecretMissing", "Pending"),
        ({"name": "fraud-detector", "version": "1"}, "binary-creds", "CredentialsSecretInvalid", "Failed"),
    ],
)
def test_bad_references_say_why_in_a_condition_and_an_event(
    kubectl, operator, mlflow, registered_model, restricted_namespace, model, secret, reason, phase
):
    ns = restricted_namespace
    create_secret(kubectl, ns, "wrong-creds", {"MLFLOW_TRACKING_USERNAME": ADMIN_USER, "MLFLOW_TRACKING_PASSWORD": WRONG_PASSWORD})
    create_secret(kubectl, ns, "binary-creds", {"MLFLOW_TRACKING_USERNAME": ADMIN_USER, "MLFLOW_TRACKING_PASSWORD": KEYSTORE})
    body = yaml.safe_load(manifest(ns, "bad", mlflow.uri, model))
    body["spec"]["mlflow"]["credentialsSecret"] = secret
    kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=True)

    st = wait_phase(kubectl, operator, ns, "bad", phase)
    resolved = condition(st, "ModelResolved")
    assert (resolved["status"], resolved["reason"]) == ("False", reason)
    assert st["message"] == resolved["message"] != ""
    warning = wait_for(
        lambda: [e for e in events(kubectl, ns, "bad") if e["reason"] == reason and e["type"] == "Warning"],
        f"a Warning Event with reason {reason}",
    )
    assert not find(json.dumps(st) + json.dumps(warning), [ADMIN_PASSWORD, WRONG_PASSWORD])
    assert get(kubectl, "deployment", "bad", "-n", ns) is None


def test_secrets_never_reach_status_events_logs_pod_specs_or_metrics(
    kubectl, operator, mlflow, registered_model, restricted_namespace
):
    ns = restricted_namespace
    # The real credentials beside an artifact-store key and a binary keystore, which are the fetch step's
    # business only; and credentials MLflow refuses, just as secret.
    create_secret(kubectl, ns, "served-creds", {
        **mlflow.credentials_env(), "AWS_SECRET_ACCESS_KEY": ARTIFACT_KEY, "keystore.p12": KEYSTORE,
    })  # fmt: skip
    create_secret(kubectl, ns, "refused-creds", {"MLFLOW_TRACKING_USERNAME": WRONG_USER, "MLFLOW_TRACKING_PASSWORD": WRONG_PASSWORD})
    for name, secret in (("served", "served-creds"), ("refused", "refused-creds")):
        body = yaml.safe_load(manifest(ns, name, mlflow.uri, {"name": registered_model, "version": "1"}))
        body["spec"]["mlflow"]["credentialsSecret"] = secret
        kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=True)
    # Credentials in the URL are refused at the door, and the refusal does not repeat them.
    uri_with_credentials = mlflow.uri.replace("://", f"://{ADMIN_USER}:{ADMIN_PASSWORD}@")
    in_url = yaml.safe_load(manifest(ns, "in-url", uri_with_credentials, {"name": registered_model, "version": "1"}))
    refusal = kubectl("apply", "-f", "-", input=yaml.safe_dump(in_url))
    assert refusal.returncode != 0 and "must not carry credentials" in refusal.stderr

    wait_phase(kubectl, operator, ns, "served", "Ready")
    wait_phase(kubectl, operator, ns, "refused", "Failed")
    wait_for(lambda: [e for e in events(kubectl, ns, "refused") if e["reason"] == "CredentialsRefused"], "the refusal's Event")
    (pod,) = get(kubectl, "pods", "-n", ns, "-l", "modelpilot.io/deployment=served")["items"]
    # The model's own code runs in the server, which has no way to the Secret; the fetch step has.
    (fetch,), (server,) = pod["spec"]["initContainers"], pod["spec"]["containers"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "served-creds"}}]
    assert "secretRef" not in json.dumps(server) and "secretKeyRef" not in json.dumps(server)

    places = {
        "status": kubectl("get", "mdep", "-n", ns, "-o", "json", check=True).stdout,
        "events": kubectl("get", "events", "-n", ns, "-o", "json", check=True).stdout,
        "operator log": operator.log_text(),
        "pod specs": kubectl("get", "pods,replicasets,deployments", "-n", ns, "-o", "json", check=True).stdout,
        "metrics": kubectl("get", "--raw", "/metrics", check=True).stdout,
        "the refusal": refusal.stdout + refusal.stderr,
    }
    values = [ADMIN_PASSWORD, WRONG_USER, WRONG_PASSWORD, ARTIFACT_KEY]
    found = {where: find(text, values) for where, text in places.items()}
    assert not any(found.values()), found
    # The registry's request URLs stay out of the log too.
    assert "HTTP Request:" not in places["operator log"]


def test_unreachable_registry_is_pending_and_retried(kubectl, operator, restricted_namespace):
    ns = restricted_namespace
    uri = f"http://127.0.0.1:{free_port()}"
    kubectl("apply", "-f", "-", input=manifest(ns, "down", uri, {"name": "m", "version": "1"}, progressDeadline="20s"), check=True)
    st = wait_phase(kubectl, operator, ns, "down", "Pending")
    assert condition(st, "ModelResolved")["reason"] == "RegistryUnreachable"
    assert condition(st, "Progressing")["status"] == "True"
    # Past its progress deadline it is flagged for a person (Argo CD: Degraded), and still retried.
    wait_for(lambda: condition(get(kubectl, "mdep", "down", "-n", ns)["status"], "Progressing").get("reason") == "ProgressDeadlineExceeded",
             "the progress deadline to pass", timeout=60)  # fmt: skip
    st = get(kubectl, "mdep", "down", "-n", ns)["status"]
    assert st["phase"] == "Pending" and condition(st, "Progressing")["status"] == "False"
    assert st["message"].startswith("nothing serves after 20s: ") and "cannot reach MLflow" in st["message"]


def test_bad_spec_change_leaves_the_serving_version_untouched(
    kubectl, operator, mlflow, registered_model, restricted_namespace
):
    ns = restricted_namespace
    kubectl("apply", "-f", "-", input=manifest(ns, "keep", mlflow.uri, {"name": registered_model, "version": "1"}), check=True)
    wait_phase(kubectl, operator, ns, "keep", "Ready")
    before = get(kubectl, "deployment", "keep", "-n", ns)

    kubectl("apply", "-f", "-", input=manifest(ns, "keep", mlflow.uri, {"name": registered_model, "version": "42"}), check=True)
    st = wait_phase(kubectl, operator, ns, "keep", "Degraded", observedGeneration=2)
    assert condition(st, "Degraded")["reason"] == "VersionNotFound"
    assert condition(st, "Ready")["status"] == "True"
    assert "still serving version 1" in st["message"]
    after = get(kubectl, "deployment", "keep", "-n", ns)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["status"]["readyReplicas"] == 1

def test_a_registry_outage_while_serving_stays_ready(kubectl, operator, mlflow, registered_model, restricted_namespace):
    ns = restricted_namespace
    model = {"name": registered_model, "version": "1"}
    kubectl("apply", "-f", "-", input=manifest(ns, "outage", mlflow.uri, model), check=True)
    wait_phase(kubectl, operator, ns, "outage", "Ready")
    before = get(kubectl, "deployment", "outage", "-n", ns)

    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens: the registry cannot be reached
    kubectl("apply", "-f", "-", input=manifest(ns, "outage", nobody, model), check=True)
    st = wait_phase(kubectl, operator, ns, "outage", "Ready", observedGeneration=2)
    resolved = condition(st, "ModelResolved")
    assert (resolved["status"], resolved["reason"]) == ("Unknown", "RegistryUnreachable")
    assert condition(st, "Degraded")["status"] == "False" and condition(st, "Ready")["status"] == "True"
    after = get(kubectl, "deployment", "outage", "-n", ns)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"model": {"name": "m", "version": "1", "alias": "a"}}, "set exactly one of version or alias"),
        ({"model": {"name": "m"}}, "set exactly one of version or alias"),
        ({"replicas": -1}, "spec.replicas"),
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "minReplicas must not exceed maxReplicas"),
        ({"rollout": {"steps": [{"setWeight": 150}]}}, "spec.rollout.steps[0].setWeight"),
        ({"rollout": {"steps": [{"setWeight": 10, "pause": {}}]}}, "exactly one of setWeight, pause or analysis"),
        ({"rollout": {"steps": [{"pause": {}, "canaryReplicas": 1}]}}, "canaryReplicas goes with a setWeight step"),
        ({"rollout": {"steps": [{"pause": {"duration": "soon"}}]}}, "spec.rollout.steps[0].pause.duration"),
        ({"mlflow": {"trackingUri": "mlflow:5000"}}, "spec.mlflow.trackingUri"),
        (
            {"rollout": {"analysis": {"checks": [{"name": "c", "metric": 'up{pod="{{pod}}"}', "max": 1}]}}},
            "a query template may only use the placeholders {{namespace}}, {{deployment}}, {{track}}, {{version}} and {{window}}",
        ),
        ({"rollout": {"analysis": {"onNoData": "Ignore"}}}, "spec.rollout.analysis.onNoData"),
        (
            {"mlflow": {"trackingUri": "https://admin:pa55@mlflow:5000"}},
            "spec.mlflow.trackingUri: Forbidden: must not carry credentials (user:password@host)",
        ),
        ({"pod": {"labels": {"app.kubernetes.io/instance": "x"}}}, "must not set app.kubernetes.io/instance: the operator"),
        ({"pod": {"labels": {"modelpilot.io/track": "canary"}}}, "must not set modelpilot.io/track: the operator"),
        ({"pod": {"labels": {"team/": "a"}}}, "spec.pod.labels: Invalid value: keys must be qualified names"),
        ({"pod": {"nodeSelector": {"pool": "gpu nodes"}}}, "spec.pod.nodeSelector.pool"),
        ({"pod": {"tolerations": [{"effect": "NoSchedule"}]}}, "a toleration without a key must use operator Exists"),
        ({"pod": {"tolerations": [{"key": "gpu", "tolerationSeconds": 5}]}}, "tolerationSeconds needs effect NoExecute"),
        ({"pod": {"affinity": {"nodeAfinity": {}}}}, 'unknown field "spec.pod.affinity.nodeAfinity"'),
        (
            {"pod": {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "Maybe"}]}},
            "spec.pod.topologySpreadConstraints[0].whenUnsatisfiable",
        ),
    ],
)
def test_schema_and_cel_reject_bad_specs_at_apply(kubectl, crds, namespace, spec, message):
    body = yaml.safe_load(manifest(namespace, "rejected", "http://mlflow:5000", {"name": "m", "version": "1"}))
    body["spec"].update(spec)
    result = kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_a_custom_query_template_with_known_placeholders_is_accepted(kubectl, crds, namespace):
    body = yaml.safe_load(manifest(namespace, "custom-check", "http://mlflow:5000", {"name": "m", "version": "1"}))
    template = 'sum(rate(errors{namespace="{{namespace}}",app="{{ deployment }}",track="{{track}}"}[{{window}}])) or vector(0)'
    body["spec"]["rollout"] = {"analysis": {"checks": [{"name": "custom", "metric": template, "max": 1}]}}
    result = kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    assert result.returncode == 0, result.stderr


def test_pod_settings_are_accepted_and_their_deployment_reads_back_unchanged(kubectl, crds, namespace):
    """What the API server keeps of a rendered pod template is what was rendered: no drift forever."""
    empty_selector_term = {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {}}, "namespaces": []}
    pod = {
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "dedicated", "value": "ml", "effect": "NoExecute", "tolerationSeconds": 30},
        ],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": empty_selector_term},
        ]}},
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"},
        ],
        "priorityClassName": "model-serving",
        "serviceAccountName": "fraud-model",
        "imagePullSecrets": [{"name": "regcred"}],
        "labels": {"team": "fraud"},
        "annotations": {"cost-center": "ml-42"},
    }  # fmt: skip
    body = yaml.safe_load(manifest(namespace, "placed", "http://mlflow:5000", {"name": "m", "version": "1"}, pod=pod))
    kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=True)
    stored = ModelDeploymentSpec.model_validate(get(kubectl, "mdep", "placed", "-n", namespace)["spec"])
    model = ResolvedModel(name="m", version="1", run_id="r" * 32, source="models:/m-1")
    for track in ("stable", "canary"):
        # No ownerReference: the ModelDeployment is not the owner here, only the source of the spec.
        rendered = workload.deployment(Owner("placed", namespace, "uid"), stored, model, "img:1", track)
        del rendered["metadata"]["ownerReferences"]
        kubectl("apply", "--server-side", "--field-manager=modelpilot.io", "-f", "-", input=json.dumps(rendered), check=True)
        live = get(kubectl, "deployment", rendered["metadata"]["name"], "-n", namespace)
        assert difference(live, rendered) is None


def test_name_too_long_for_owned_objects_is_rejected(kubectl, crds, namespace):
    result = kubectl("apply", "-f", "-", input=manifest(namespace, "x" * 57, "http://m:5000", {"name": "m", "version": "1"}))
    assert result.returncode != 0 and "at most 56 characters" in result.stderr


class _Trickle:
    """A TCP server that answers every request one byte per second, forever: a per-read timeout never fires."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.uri = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = threading.Event()
        self.released = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.released.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.set()
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    @property
    def open(self) -> int:
        with self._lock:
            return len(self._open)

    def _trickle(self, conn: socket.socket):
        with self._lock:
            self._open.add(conn)
        try:
            conn.recv(65536)
            for byte in itertools.cycle(b"HTTP/1.1 200 OK\r\nX-Slow: "):
                if self.released.is_set():
                    return
                conn.sendall(bytes([byte]))
                time.sleep(1)
        except OSError:
            return  # the client gave up and closed the connection
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def release(self):
        self.released.set()
        self.sock.close()


def test_a_hung_registry_does_not_stall_other_modeldeployments(kubectl, operator, mlflow, restricted_namespace):
    ns = restricted_namespace
    name = "beside-a-hung-registry"
    v1 = register_sklearn_model(mlflow, name, alias="champion", seed=5)
    v2 = register_sklearn_model(mlflow, name, seed=6)
    hung = _Trickle()
    try:
        kubectl("apply", "-f", "-", input=manifest(ns, "stuck", hung.uri, {"name": name, "version": "1"}), check=True)
        assert hung.accepted.wait(60), "the operator never called the hung registry"
        kubectl("apply", "-f", "-", input=manifest(ns, "free", mlflow.uri, {"name": name, "alias": "champion"}), check=True)
        wait_phase(kubectl, operator, ns, "free", "Ready", model__version=v1)
        set_alias(mlflow, name, "champion", v2)
        wait_phase(kubectl, operator, ns, "free", "Ready", model__version=v2, stable__version=v2)
        # The other one followed its alias while an ask of the hung registry was still being answered.
        assert hung.open > 0
        # The hung ask ends at the registry deadline (20 s in these tests), and says so.
        st = wait_phase(kubectl, operator, ns, "stuck", "Pending", timeout=90)
        resolved = condition(st, "ModelResolved")
        assert resolved["reason"] == "RegistryUnreachable"
        assert resolved["message"] == f"MLflow at {hung.uri} did not answer within 20 s"
    finally:
        hung.release()



def test_kubectl_modelpilot_aborts_retries_pauses_resumes_and_promotes(
    kube_cluster, kubectl, operator, mlflow, registered_model, restricted_namespace
):
    ns = restricted_namespace
    steps = {"steps": [{"setWeight": 50}, {"pause": {}}]}
    for version in ("1", "2"):
        body = manifest(ns, "manual", mlflow.uri, {"name": registered_model, "version": version}, replicas=2, rollout=steps)
        kubectl("apply", "-f", "-", input=body, check=True)
        if version == "1":
            wait_phase(kubectl, operator, ns, "manual", "Ready", readyReplicas=2)

    def rollout():
        return status(kubectl, ns, "manual").get("rollout") or {}

    def waiting_for_promote():
        return rollout().get("phase") == "Paused" and rollout().get("stepIndex") == 1

    wait_for(waiting_for_promote, "the canary to wait for a promote", timeout=90)
    shown = plugin(kube_cluster, "status", "manual", "-n", ns)
    assert shown.returncode == 3, shown.stderr  # a rollout is under way
    assert "step     2/2 [##########..........] pause until promoted" in shown.stdout
    assert "canary   version 2  2/2 ready  weight: asked 50%, effective 50%" in shown.stdout

    aborted = plugin(kube_cluster, "abort", "manual", "-n", ns)
    assert aborted.returncode == 0 and "all traffic back to version 1" in aborted.stdout, aborted.stdout + aborted.stderr
    st = wait_phase(kubectl, operator, ns, "manual", "Degraded")
    assert condition(st, "Degraded")["reason"] == "RolloutAborted" and condition(st, "Ready")["status"] == "True"
    assert [r["version"] for r in st["rollout"]["rejected"]] == ["2"]
    wait_for(lambda: get(kubectl, "deployment", "manual-canary", "-n", ns) is None, "the canary Deployment to go")
    time.sleep(7)  # two resync intervals: the rejected version is not tried again on its own
    assert get(kubectl, "deployment", "manual-canary", "-n", ns) is None
    assert status(kubectl, ns, "manual")["phase"] == "Degraded"

    assert plugin(kube_cluster, "retry", "manual", "-n", ns).returncode == 0
    wait_for(waiting_for_promote, "the retried canary to wait for a promote", timeout=90)
    assert plugin(kube_cluster, "pause", "manual", "-n", ns).returncode == 0
    assert rollout()["pausedManually"] is True
    assert plugin(kube_cluster, "resume", "manual", "-n", ns).returncode == 0
    assert not rollout().get("pausedManually") and waiting_for_promote()  # a pause step still waits for promote

    promoted = plugin(kube_cluster, "promote", "manual", "-n", ns)
    assert promoted.returncode == 0, promoted.stderr
    wait_phase(kubectl, operator, ns, "manual", "Ready", stable__version="2", readyReplicas=2)
    wait_for(lambda: get(kubectl, "deployment", "manual-canary", "-n", ns) is None, "the canary Deployment to go")
    assert plugin(kube_cluster, "status", "manual", "-n", ns).returncode == 0
    history = plugin(kube_cluster, "history", "manual", "-n", ns)
    assert history.returncode == 0, history.stderr
    _, promoted_row, aborted_row = history.stdout.splitlines()
    assert promoted_row.split()[:3] == ["2", "1", "Promoted"]
    assert aborted_row.split()[:3] == ["2", "1", "Aborted"] and "aborted by request" in aborted_row
    kubectl("apply", "-f", "-", check=True,
            input=manifest(ns, "plain", mlflow.uri, {"name": registered_model, "version": "1"}, replicas=0))  # fmt: skip
    refused = plugin(kube_cluster, "promote", "plain", "-n", ns)
    assert refused.returncode == 1 and "has no spec.rollout.steps: there is no canary to promote" in refused.stderr
    missing = plugin(kube_cluster, "status", "nobody", "-n", ns)
    assert missing.returncode == 1 and 'modeldeployment "nobody" not found' in missing.stderr
