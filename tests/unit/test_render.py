"""Rendered objects: labels, ownership, the restricted pod profile, autoscaling."""

from __future__ import annotations

from modelpilot.api import ModelDeploymentSpec
from modelpilot.api.status import ResolvedModel
from modelpilot.render import workload
from modelpilot.render.labels import label_value
from modelpilot.render.owner import Owner

OWNER = Owner(name="fraud", namespace="ml", uid="1234")
MODEL = ResolvedModel(name="fraud-detector", version="7", run_id="r" * 32, source="models:/m-1")


def spec(**extra) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {"model": {"name": "fraud-detector", "alias": "champion"}, "mlflow": {"trackingUri": "http://mlflow:5000"}, **extra}
    )


def test_deployment_serves_exactly_the_resolved_version():
    dep = workload.deployment(OWNER, spec(replicas=3), MODEL, "runtime:1")
    labels = dep["metadata"]["labels"]
    assert labels["modelpilot.io/model-version"] == "7"
    assert labels["modelpilot.io/track"] == "stable"
    assert labels["app.kubernetes.io/managed-by"] == "modelpilot"
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    fetch = pod["initContainers"][0]
    assert fetch["args"][fetch["args"].index("--model-uri") + 1] == "models:/fraud-detector/7"
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["MODELPILOT_MODEL_VERSION"] == "7" and env["MODELPILOT_TRACK"] == "stable"
    assert dep["spec"]["template"]["metadata"]["labels"] == labels
    # The selector must not mention the version, or a version change would orphan the old pods.
    assert "modelpilot.io/model-version" not in dep["spec"]["selector"]["matchLabels"]


def test_owned_by_the_modeldeployment():
    for obj in (workload.deployment(OWNER, spec(), MODEL, "img"), workload.service(OWNER, spec())):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("ModelDeployment", "fraud", "1234", True)


def test_pod_meets_the_restricted_profile():
    pod = workload.deployment(OWNER, spec(), MODEL, "img")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["initContainers"] + pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
    assert all("hostPath" not in v for v in pod["volumes"])


def test_credentials_secret_reaches_both_containers_as_env():
    pod = workload.deployment(
        OWNER, spec(mlflow={"trackingUri": "http://m", "credentialsSecret": "creds"}), MODEL, "img"
    )["spec"]["template"]["spec"]
    for container in pod["initContainers"] + pod["containers"]:
        assert container["envFrom"] == [{"secretRef": {"name": "creds"}}]


def test_runtime_overrides_image_port_args_and_env():
    s = spec(runtime={"image": "mine:2", "port": 9000, "args": ["--workers", "4"], "env": [{"name": "A", "value": "b"}]})
    container = workload.deployment(OWNER, s, MODEL, "default:1")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "mine:2"
    assert container["ports"][0]["containerPort"] == 9000
    assert container["args"][-2:] == ["--workers", "4"]
    assert {"name": "A", "value": "b"} in container["env"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 9000}


def test_autoscaling_renders_an_hpa_and_leaves_replicas_to_it():
    s = spec(autoscaling={"minReplicas": 2, "maxReplicas": 5, "targetCpuUtilization": 70})
    assert "replicas" not in workload.deployment(OWNER, s, MODEL, "img")["spec"]
    hpa = workload.autoscaler(OWNER, s)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert workload.autoscaler(OWNER, spec()) is None


def test_service_selects_every_track():
    svc = workload.service(OWNER, spec())
    assert "modelpilot.io/track" not in svc["spec"]["selector"]
    assert svc["spec"]["selector"]["modelpilot.io/deployment"] == "fraud"


def test_label_value_is_always_valid():
    assert label_value("My Model/v2 (prod)") == "My-Model-v2--prod"
    assert len(label_value("x" * 100)) == 63
    assert label_value("--a--") == "a"


def test_nothing_empty_is_rendered_since_the_server_would_drop_it():
    def empties(node, path=""):
        if isinstance(node, dict):
            for k, v in node.items():
                if v in ({}, []) and k != "emptyDir":
                    yield f"{path}.{k}"
                yield from empties(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from empties(v, f"{path}[{i}]")

    for obj in (workload.deployment(OWNER, spec(), MODEL, "img"), workload.service(OWNER, spec())):
        assert list(empties(obj)) == []
