"""Rendered objects: labels, ownership, the restricted pod profile, autoscaling, spec.pod on every track."""

from __future__ import annotations

import json

from modelpilot.api import ModelDeploymentSpec
from modelpilot.api.pod import RESERVED_LABEL_PREFIX, RESERVED_LABELS, PodTemplate
from modelpilot.api.status import ResolvedModel
from modelpilot.render import workload
from modelpilot.render.labels import CANARY, STABLE, label_value, track_selector
from modelpilot.render.pod import template_metadata
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


def test_credentials_secret_reaches_the_fetch_step_only():
    pod = workload.deployment(
        OWNER, spec(mlflow={"trackingUri": "http://m", "credentialsSecret": "creds"}), MODEL, "img"
    )["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "creds"}}]
    # The model's own code runs in the server: no way to the Secret from there, by envFrom or by a single key.
    (server,) = pod["containers"]
    assert "secretRef" not in json.dumps(server) and "secretKeyRef" not in json.dumps(server)
    assert all("secret" not in volume for volume in pod["volumes"])


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


GPU_POD = {
    "nodeSelector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}]
            }
        }
    },
    "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"},
        {
            "maxSkew": 2,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"team": "fraud"}},
            "matchLabelKeys": ["pod-template-hash"],
        },
    ],
    "priorityClassName": "model-serving",
    "serviceAccountName": "fraud-model",
    "imagePullSecrets": [{"name": "regcred"}],
    "labels": {"team": "fraud"},
    "annotations": {"cost-center": "ml-42"},
}


def pod_spec(pod: dict, track: str = STABLE) -> dict:
    return workload.deployment(OWNER, spec(pod=pod), MODEL, "img", track)["spec"]["template"]["spec"]


def test_pod_section_reaches_the_pods_of_every_track():
    for track in (STABLE, CANARY):
        deployment = workload.deployment(OWNER, spec(pod=GPU_POD), MODEL, "img", track)
        template = deployment["spec"]["template"]
        pod = template["spec"]
        assert template["metadata"]["labels"]["team"] == "fraud"
        assert template["metadata"]["labels"]["modelpilot.io/track"] == track
        assert template["metadata"]["annotations"]["cost-center"] == "ml-42"
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert pod["affinity"] == GPU_POD["affinity"]
        assert pod["priorityClassName"] == "model-serving"
        assert pod["serviceAccountName"] == "fraud-model"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["automountServiceAccountToken"] is False  # a ServiceAccount alone does not mount its token
        zone, host = pod["topologySpreadConstraints"]
        # Without a selector a constraint spreads the pods of its own track, with one the user's pods.
        assert zone["labelSelector"] == {"matchLabels": track_selector("fraud", track)}
        assert host["labelSelector"] == {"matchLabels": {"team": "fraud"}}
        assert host["matchLabelKeys"] == ["pod-template-hash"]
        # The Deployment's own labels and selector stay the operator's.
        assert "team" not in deployment["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"] == track_selector("fraud", track)


def test_service_account_token_is_mounted_only_on_request():
    pod = pod_spec({"serviceAccountName": "vault-auth", "automountServiceAccountToken": True})
    assert pod["automountServiceAccountToken"] is True


def test_operators_labels_win_and_cover_every_label_it_sets():
    ours = workload.deployment(OWNER, spec(), MODEL, "img", CANARY)["spec"]["template"]["metadata"]["labels"]
    for key in ours:
        assert key in RESERVED_LABELS or key.startswith(RESERVED_LABEL_PREFIX), f"{key} is not reserved in spec.pod.labels"
    # Were a reserved key to slip past the API server's CEL rule, the operator's value still wins.
    pod = PodTemplate.model_construct(labels={"modelpilot.io/track": "stable", "team": "a"}, annotations={})
    assert template_metadata(pod, ours, {})["labels"]["modelpilot.io/track"] == CANARY


def _empties(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            if v in ({}, []) and k != "emptyDir":
                yield f"{path}.{k}"
            yield from _empties(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _empties(v, f"{path}[{i}]")


def test_nothing_empty_is_rendered_since_the_server_would_drop_it():
    for obj in (
        workload.deployment(OWNER, spec(), MODEL, "img"),
        workload.deployment(OWNER, spec(pod=GPU_POD), MODEL, "img", CANARY),
        workload.service(OWNER, spec()),
    ):
        assert list(_empties(obj)) == []


def test_empty_pod_settings_render_nothing():
    empty = {
        "nodeSelector": {},
        "tolerations": [],
        "affinity": {},
        "topologySpreadConstraints": [],
        "imagePullSecrets": [],
        "labels": {},
        "annotations": {},
    }
    assert workload.deployment(OWNER, spec(pod=empty), MODEL, "img") == workload.deployment(OWNER, spec(), MODEL, "img")
    selector = {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}
    spread = {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": selector}
    assert pod_spec({"topologySpreadConstraints": [spread]})["topologySpreadConstraints"] == [spread]


def test_passed_through_affinity_loses_empty_lists_and_maps_but_keeps_empty_selectors():
    term = {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {}}, "namespaces": []}
    pod = pod_spec({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}})
    # An empty labelSelector selects every pod, a missing one none: it is a struct the server keeps.
    (kept,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert kept == {"topologyKey": "kubernetes.io/hostname", "labelSelector": {}}


def test_pods_announce_their_metrics_to_prometheus_pod_discovery():
    annotations = workload.deployment(OWNER, spec(), MODEL, "img")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}
    # The user's annotations win: a team with its own scrape setup can turn ours off.
    off = spec(pod={"annotations": {"prometheus.io/scrape": "false"}}, runtime={"port": 9000})
    annotations = workload.deployment(OWNER, off, MODEL, "img")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "false" and annotations["prometheus.io/port"] == "9000"


def test_a_stopping_model_server_keeps_serving_until_endpoints_drop_it():
    server = workload.deployment(OWNER, spec(), MODEL, "img")["spec"]["template"]["spec"]["containers"][0]
    assert server["lifecycle"] == {"preStop": {"sleep": {"seconds": workload.PRE_STOP_SECONDS}}}


def test_containers_that_die_without_a_termination_message_report_their_last_log_lines():
    pod = workload.deployment(OWNER, spec(), MODEL, "img")["spec"]["template"]["spec"]
    for container in pod["initContainers"] + pod["containers"]:
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_more_than_one_pod_gets_a_disruption_budget_over_every_track_and_one_pod_none():
    budget = workload.disruption_budget(OWNER, spec(replicas=3))
    assert (budget["apiVersion"], budget["kind"], budget["metadata"]["name"]) == ("policy/v1", "PodDisruptionBudget", "fraud")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == workload.service(OWNER, spec())["spec"]["selector"]
    assert budget["metadata"]["ownerReferences"][0]["uid"] == "1234"
    assert workload.disruption_budget(OWNER, spec(replicas=1)) is None
    # With an autoscaler, its minimum decides.
    assert workload.disruption_budget(OWNER, spec(replicas=1, autoscaling={"minReplicas": 2, "maxReplicas": 4})) is not None
    assert workload.disruption_budget(OWNER, spec(replicas=3, autoscaling={"minReplicas": 1, "maxReplicas": 4})) is None


def test_the_api_layer_knows_the_path_of_every_kind_the_operator_renders():
    from modelpilot.kube.objects import path
    from modelpilot.render.route import HTTP_ROUTE_API
    from modelpilot.traffic import router_for

    gateway = spec(replicas=3, autoscaling={"minReplicas": 2, "maxReplicas": 4},
                   rollout={"trafficRouting": {"gatewayAPI": {"parentRefs": [{"name": "gw"}]}}})  # fmt: skip
    rendered = [
        workload.deployment(OWNER, gateway, MODEL, "img"), workload.service(OWNER, gateway),
        *(workload.track_service(OWNER, gateway, track) for track in workload.TRACKS),
        workload.autoscaler(OWNER, gateway), workload.disruption_budget(OWNER, gateway),
        *router_for(gateway).objects(OWNER, gateway, 10),
    ]  # fmt: skip
    kinds = {(d["apiVersion"], d["kind"]) for d in rendered}
    assert ("policy/v1", "PodDisruptionBudget") in kinds and (HTTP_ROUTE_API, "HTTPRoute") in kinds
    for api_version, kind in kinds:
        assert path(api_version, kind, "ml", "fraud").endswith(f"/namespaces/ml/{kind.lower()}s/fraud"), kind
