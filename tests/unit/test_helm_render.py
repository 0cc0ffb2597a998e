"""The Helm chart as rendered by the pinned helm, no cluster needed: it renders with no flags, its schema
refuses what it does not know, it lints strictly, every value lands where it should, its RBAC is the least
asked for, and the `helm test` pod passes Pod Security "restricted"."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from kubernetes.client import V1Container, V1ContainerPort, V1HTTPGetAction, V1Probe

from tests.cluster.launcher import default_bin_dir

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "modelpilot"
HELM = default_bin_dir() / "helm"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
RBAC_KINDS = {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}

pytestmark = pytest.mark.skipif(not HELM.exists(), reason=f"no pinned helm at {HELM}: `make cluster-bins` builds it")


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60)


def render(*args: str, chart: Path = CHART) -> list[dict]:
    result = helm("template", "mp", str(chart), "-n", "modelpilot-system", *args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def only(documents: list[dict], kind: str, name: str | None = None) -> dict:
    (found,) = [d for d in documents if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return found


def pod_spec(documents: list[dict]) -> dict:
    return only(documents, "Deployment")["spec"]["template"]["spec"]


def test_renders_with_no_flags_at_all():
    result = helm("template", str(CHART))
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(result.stdout) if d}
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Pod"} <= kinds


@pytest.mark.parametrize(
    "args, named",
    [
        (["--set", "replicaCount=2"], "'replicaCount'"),
        (["--set", "image.tagg=1.0"], "'tagg'"),
        (["--set", "podSecurityContext.runAsNonroot=true"], "'runAsNonroot'"),
        (["--set", "crds.instal=false"], "'instal'"),
        (["--set", "registryWorkers=many"], "/registryWorkers"),
        (["--set", "logLevel=loud"], "/logLevel"),
        (["--set-string", "crds.keep=yes"], "/crds/keep"),
        (["--set", "image.digest=latest"], "/image/digest"),
        (["--set", "watchNamespaces=Team_A"], "/watchNamespaces"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_the_schema_refuses_unknown_keys_and_mistyped_values_by_name(args, named):
    result = helm("template", str(CHART), *args)
    assert result.returncode != 0, f"{args} rendered"
    assert "schema" in result.stderr and named in result.stderr, result.stderr


def test_the_schema_knows_every_default_value():
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(values) <= set(schema["properties"]), set(values) - set(schema["properties"])


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_lint_strict_passes(values):
    result = helm("lint", "--strict", str(CHART), *(["-f", str(values)] if values else []))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_ci_values_set_every_value():
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    in_ci = {key for path in CI_VALUES for key in yaml.safe_load(path.read_text())}
    assert set(defaults) <= in_ci, set(defaults) - in_ci


def test_names_follow_name_and_fullname_overrides():
    assert only(render(), "Deployment")["metadata"]["name"] == "mp-modelpilot"
    assert only(render("--set", "nameOverride=pilot"), "Deployment")["metadata"]["name"] == "mp-pilot"
    documents = render("--set", "fullnameOverride=ops-pilot")
    assert only(documents, "Deployment")["metadata"]["name"] == "ops-pilot"
    assert only(documents, "ServiceAccount", "ops-pilot")
    assert only(documents, "ClusterRoleBinding", "ops-pilot")["subjects"][0]["name"] == "ops-pilot"
    pod = only(documents, "Pod")
    assert pod["metadata"]["name"] == "ops-pilot-test"
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["OPERATOR_DEPLOYMENT"] == "ops-pilot"


def test_common_labels_land_on_every_object_and_pod_labels_on_the_pod():
    documents = render("-f", str(CHART / "ci" / "overrides.yaml"))
    for document in documents:
        labels = document["metadata"]["labels"]
        assert labels["team"] == "ml-platform" and labels["cost-center"] == "4711", document["metadata"]["name"]
    deployment = only(documents, "Deployment")
    template = deployment["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "ml-platform" and template["labels"]["sidecar.istio.io/inject"] == "false"
    assert template["annotations"] == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}
    # The selector stays the chart's own, and the pods still match it.
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "mp", "app.kubernetes.io/instance": "mp"}
    assert selector.items() <= template["labels"].items()


def test_common_labels_cannot_take_the_selector_labels():
    result = helm("template", str(CHART), "--set", "commonLabels.app\\.kubernetes\\.io/name=other")
    assert result.returncode != 0 and "'app.kubernetes.io/name'" in result.stderr, result.stderr


def test_image_by_tag_by_default_and_by_digest_when_set():
    container = pod_spec(render())["containers"][0]
    assert container["image"] == "ghcr.io/modelpilot/operator:0.1.0"
    digest = "sha256:" + "ab" * 32
    documents = render("--set", f"image.digest={digest}", "--set", "image.tag=9.9")
    assert pod_spec(documents)["containers"][0]["image"] == f"ghcr.io/modelpilot/operator@{digest}"
    assert only(documents, "Pod")["spec"]["containers"][0]["image"] == f"ghcr.io/modelpilot/operator@{digest}"


def test_values_land_in_the_operator_pod():
    spec = pod_spec(render("-f", str(CHART / "ci" / "overrides.yaml")))
    container = spec["containers"][0]
    assert spec["serviceAccountName"] == "modelpilot-operator"
    assert spec["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert spec["priorityClassName"] == "platform-critical"
    assert container["args"][-1] == "--verbose"
    env = {e["name"]: e for e in container["env"]}
    assert env["MODELPILOT_LOG_LEVEL"]["value"] == "debug"
    assert env["HTTPS_PROXY"]["value"] == "http://proxy.example:3128"
    assert env["MLFLOW_TRACKING_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "mlflow-token", "key": "token"}}
    zone, host = spec["topologySpreadConstraints"]
    # A constraint without a labelSelector gets the operator's; one with its own keeps it.
    assert zone["labelSelector"] == {"matchLabels": {"app.kubernetes.io/name": "mp", "app.kubernetes.io/instance": "mp"}}
    assert host["labelSelector"] == {"matchLabels": {"team": "ml-platform"}}
    assert env["MODELPILOT_RUNTIME_IMAGE"]["value"] == "registry.example/mirror/modelpilot-runtime:0.1.0"
    assert env["MODELPILOT_PACKAGE_INDEX"]["value"] == "https://pypi.corp.example/simple"


def test_the_log_level_defaults_to_info():
    env = {e["name"]: e.get("value") for e in pod_spec(render())["containers"][0]["env"]}
    assert env["MODELPILOT_LOG_LEVEL"] == "info"


def test_service_account_annotations_and_an_existing_account():
    documents = render("--set", "serviceAccount.annotations.iam\\.example/role=ops")
    assert only(documents, "ServiceAccount", "mp-modelpilot")["metadata"]["annotations"] == {"iam.example/role": "ops"}
    documents = render("--set", "serviceAccount.create=false", "--set", "serviceAccount.name=platform-sa")
    assert not [d for d in documents if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "mp-modelpilot"]
    assert pod_spec(documents)["serviceAccountName"] == "platform-sa"
    assert only(documents, "ClusterRoleBinding", "mp-modelpilot")["subjects"][0]["name"] == "platform-sa"


def assert_restricted(spec: dict, where: str) -> None:
    """Pod Security "restricted", as far as a pod spec shows it."""
    pod = spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key), f"{where}: {key}"
    assert not [v for v in spec.get("volumes") or [] if "hostPath" in v], f"{where}: hostPath"
    for container in spec["containers"] + spec.get("initContainers", []):
        context = container.get("securityContext") or {}
        name = f"{where}/{container['name']}"
        assert context.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, f"{name}: runAsNonRoot"
        assert context.get("runAsUser", pod.get("runAsUser")) != 0, f"{name}: runAsUser 0"
        seccomp = context.get("seccompProfile") or pod.get("seccompProfile") or {}
        assert seccomp.get("type") in {"RuntimeDefault", "Localhost"}, f"{name}: seccompProfile"
        assert context.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation"
        assert not context.get("privileged"), f"{name}: privileged"
        assert context.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: capabilities.drop"
        assert set(context.get("capabilities", {}).get("add") or []) <= {"NET_BIND_SERVICE"}, f"{name}: capabilities.add"
        assert context.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem"


@pytest.mark.parametrize("values", [None, CHART / "ci" / "overrides.yaml"], ids=["defaults", "openshift-like"])
def test_the_operator_and_the_test_pod_are_restricted(values):
    documents = render(*(["-f", str(values)] if values else []))
    assert_restricted(pod_spec(documents), "operator")
    assert_restricted(only(documents, "Pod")["spec"], "helm test pod")


def test_security_contexts_are_overridable_for_openshift():
    documents = render("--set", "podSecurityContext.runAsUser=null", "--set", "podSecurityContext.runAsGroup=null")
    for spec in (pod_spec(documents), only(documents, "Pod")["spec"]):
        assert spec["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    container = pod_spec(render("--set", "securityContext.runAsUser=2000"))["containers"][0]
    assert container["securityContext"]["runAsUser"] == 2000
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}  # merged into the defaults


def test_the_helm_test_pod_runs_the_script_in_the_operator_image_as_a_test_hook():
    documents = render()
    pod = only(documents, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never" and pod["spec"]["activeDeadlineSeconds"] > 0
    container = pod["spec"]["containers"][0]
    assert container["image"] == pod_spec(documents)["containers"][0]["image"]
    python, flag, script = container["command"]
    assert (python, flag) == ("python", "-c")
    assert script == (CHART / "files" / "helm-test.py").read_text()
    compile(script, "helm-test.py", "exec")
    # Its labels keep it out of the operator Deployment's selector.
    selector = only(documents, "Deployment")["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= pod["metadata"]["labels"].items()
    # Everything it needs exists only while a test runs.
    for document in documents:
        if document["metadata"]["name"] == "mp-modelpilot-test":
            assert document["metadata"]["annotations"]["helm.sh/hook"] == "test", document["kind"]


def test_the_helm_test_rights_are_reads_by_name():
    documents = render()
    assert only(documents, "ClusterRole", "mp-modelpilot-test")["rules"] == [
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "resourceNames": ["modeldeployments.modelpilot.io"], "verbs": ["get"]},
    ]  # fmt: skip
    assert only(documents, "Role", "mp-modelpilot-test")["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["mp-modelpilot"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]
    binding = only(documents, "RoleBinding", "mp-modelpilot-test")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mp-modelpilot-test", "namespace": "modelpilot-system"}]
    assert only(documents, "Pod")["spec"]["serviceAccountName"] == "mp-modelpilot-test"


def test_rbac_create_false_renders_no_rbac():
    documents = render("--set", "rbac.create=false")
    assert not [d for d in documents if d["kind"] in RBAC_KINDS]
    assert only(documents, "ServiceAccount", "mp-modelpilot")  # the identity stays; its rights are granted elsewhere


def test_watched_namespaces_get_roles_and_the_cluster_discovery_only():
    documents = render("-f", str(CHART / "ci" / "namespaced.yaml"))
    roles = [d for d in documents if d["kind"] == "Role" and d["metadata"]["name"] == "mp-modelpilot"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    cluster_role = only(documents, "ClusterRole", "mp-modelpilot")
    assert {r for rule in cluster_role["rules"] for r in rule["resources"]} == {"customresourcedefinitions", "namespaces"}
    assert [a for a in pod_spec(documents)["containers"][0]["args"] if a.startswith("--namespace")] == [
        "--namespace=team-a", "--namespace=team-b",
    ]  # fmt: skip


ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def test_aggregated_roles_let_admin_and_edit_manage_and_view_read_modeldeployments():
    documents = render()
    expected = {"admin": ALL_VERBS, "edit": ALL_VERBS, "view": ["get", "list", "watch"]}
    for role, verbs in expected.items():
        cluster_role = only(documents, "ClusterRole", f"mp-modelpilot-aggregate-to-{role}")
        assert cluster_role["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{role}"] == "true"
        assert [k for k in cluster_role["metadata"]["labels"] if k.startswith("rbac.")] == [f"rbac.authorization.k8s.io/aggregate-to-{role}"]
        # No status, finalizers or other subresource: status is the operator's alone.
        assert cluster_role["rules"] == [{"apiGroups": ["modelpilot.io"], "resources": ["modeldeployments"], "verbs": verbs}]
    assert not [d for d in render("--set", "rbac.aggregateToDefaultRoles=false") if "aggregate" in d["metadata"]["name"]]


def crd_of(documents: list[dict]) -> list[dict]:
    return [d for d in documents if d["kind"] == "CustomResourceDefinition"]


def test_the_crd_is_the_generated_one_kept_on_uninstall_by_default():
    (crd,) = crd_of(render())
    generated = yaml.safe_load((REPO / "crds" / "modelpilot.io_modeldeployments.yaml").read_text())
    assert {k: crd[k] for k in ("apiVersion", "kind", "spec")} == {k: generated[k] for k in ("apiVersion", "kind", "spec")}
    assert crd["metadata"]["name"] == generated["metadata"]["name"] == "modeldeployments.modelpilot.io"
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == "mp"
    assert crd["spec"]["names"]["shortNames"] == ["mdep"]


def test_crds_keep_false_drops_the_policy_and_install_false_the_crd():
    (crd,) = crd_of(render("--set", "crds.keep=false"))
    assert "annotations" not in crd["metadata"]
    assert crd_of(render("--set", "crds.install=false")) == []


def notes(*args: str, tmp_path: Path) -> str:
    """NOTES.txt as `helm install` prints it: `helm template` leaves it out, so a copy of the chart renders
    it into a ConfigMap."""
    chart = tmp_path / "modelpilot"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ include (print .Template.BasePath "/NOTES.txt") . | quote }}}\n'
    )
    (configmap,) = render("--kube-version", "1.35.0", "--show-only", "templates/zz-notes.yaml", *args, chart=chart)
    return configmap["data"]["notes"]


def test_notes_say_what_was_installed_how_to_check_it_and_what_to_do_next(tmp_path):
    text = notes(tmp_path=tmp_path)
    assert 'release "mp" in namespace "modelpilot-system"' in text
    assert "modeldeployments.modelpilot.io" in text and "leaves in place" in text
    assert "kubectl -n modelpilot-system rollout status deployment/mp-modelpilot" in text
    assert "helm test mp -n modelpilot-system" in text
    assert "kind: ModelDeployment" in text and "every namespace" in text
    assert "kubectl -n ml port-forward svc/fraud 8080:80" in text
    assert "WARNING" not in text


def test_notes_name_the_watched_namespaces_and_warn_on_an_old_cluster(tmp_path):
    text = notes("-f", str(CHART / "ci" / "namespaced.yaml"), "--kube-version", "1.29.4", tmp_path=tmp_path)
    assert "these namespaces only: team-a, team-b" in text
    assert "namespace: team-a" in text and "every namespace" not in text
    assert "no CRD (crds.install=false)" in text
    assert "WARNING: this cluster runs Kubernetes v1.29.4" in text


# The `helm test` script's own logic, on real objects and a real HTTP server.


def load_test_script():
    spec = importlib.util.spec_from_file_location("helm_test_script", CHART / "files" / "helm-test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_follows_the_probe_and_resolves_a_named_port():
    script = load_test_script()
    probe = V1Probe(http_get=V1HTTPGetAction(path="/healthz", port="health"))
    container = V1Container(name="operator", ports=[V1ContainerPort(name="health", container_port=8080)], startup_probe=probe)
    assert script.probe_target(container) == ("/healthz", 8080)
    assert script.probe_target(V1Container(name="x", liveness_probe=V1Probe(http_get=V1HTTPGetAction(path="/h", port=9000)))) == ("/h", 9000)
    assert script.probe_target(V1Container(name="x", startup_probe=probe)) is None  # the named port is missing
    assert script.probe_target(V1Container(name="x")) is None


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(200 if self.path == "/healthz" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_script_reads_the_health_endpoint():
    script = load_test_script()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert script.healthz("127.0.0.1", port, "/healthz") is None
        assert "503" in script.healthz("127.0.0.1", port, "/other")
    finally:
        server.shutdown()
        server.server_close()
    assert script.healthz("127.0.0.1", port, "/healthz") is not None  # nobody listens any more


def test_one_replica_runs_alone_without_leader_election_or_disruption_budget():
    documents = render()
    deployment = only(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    env = {e["name"] for e in pod_spec(documents)["containers"][0]["env"]}
    assert "MODELPILOT_LEADER_ELECTION" not in env
    assert not [d for d in documents if d["kind"] == "PodDisruptionBudget" or "leader" in d["metadata"]["name"]]


def test_replicas_elect_a_leader_on_a_lease_only_they_may_update_and_drain_one_at_a_time():
    documents = render("--set", "replicas=3")
    deployment = only(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 3 and deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    container = pod_spec(documents)["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MODELPILOT_LEADER_ELECTION"]["value"] == "true"
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert "--leader-election-lease=mp-modelpilot" in container["args"]
    role = only(documents, "Role", "mp-modelpilot-leader-election")
    assert role["metadata"]["namespace"] == "modelpilot-system"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["mp-modelpilot"], "verbs": ["get", "update"]},
    ]
    binding = only(documents, "RoleBinding", "mp-modelpilot-leader-election")
    assert binding["subjects"][0]["name"] == "mp-modelpilot"
    budget = only(documents, "PodDisruptionBudget")
    assert budget["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}


def test_leader_election_with_one_replica_hands_over_on_upgrade():
    documents = render("--set", "leaderElection.enabled=true", "--set", "leaderElection.leaseName=ops-lease")
    assert only(documents, "Deployment")["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert "--leader-election-lease=ops-lease" in pod_spec(documents)["containers"][0]["args"]
    assert not [d for d in documents if d["kind"] == "PodDisruptionBudget"]
