"""The Helm chart installs for real with the pinned helm, its CRD copy is the generated one, and its RBAC
lets the operator do its job and no more: cluster-wide by default, in the watched namespaces only when
`watchNamespaces` is set."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from modelpilot.settings import Settings

from tests.cluster.launcher import default_bin_dir
from tests.support.gateway import install_gateway_api_crds

CHART = Path(__file__).resolve().parents[2] / "helm" / "modelpilot"
GENERATED_CRD = CHART.parents[1] / "crds" / "modelpilot.io_modeldeployments.yaml"
KUBE_VERSION = "v1.35.4"

pytestmark = pytest.mark.cluster

# (verb, resource, subresource, allowed) where the operator serves ModelDeployments. HTTPRoutes are asked
# about with the Gateway API CRDs installed (the `gateway_api` fixture): kubectl only resolves served kinds.
SERVING_RIGHTS = [
    ("list", "modeldeployments.modelpilot.io", "", "yes"),
    ("patch", "modeldeployments.modelpilot.io", "", "yes"),  # kopf's annotations
    ("update", "modeldeployments.modelpilot.io", "", "no"),
    ("patch", "modeldeployments.modelpilot.io", "status", "yes"),
    ("update", "modeldeployments.modelpilot.io", "status", "no"),
    # blockOwnerDeletion under OwnerReferencesPermissionEnforcement
    ("update", "modeldeployments.modelpilot.io", "finalizers", "yes"),
    ("create", "deployments.apps", "", "yes"),  # server-side apply of a new object
    ("patch", "deployments.apps", "", "yes"),
    ("update", "deployments.apps", "", "no"),
    # Fetched only when kopf's index lacks the object: a name taken by someone else is not taken over.
    ("get", "deployments.apps", "", "yes"),
    ("get", "services", "", "yes"),
    ("delete", "horizontalpodautoscalers.autoscaling", "", "yes"),
    ("update", "services", "", "no"),
    ("create", "poddisruptionbudgets.policy", "", "yes"),
    ("delete", "poddisruptionbudgets.policy", "", "yes"),
    ("update", "poddisruptionbudgets.policy", "", "no"),
    ("patch", "httproutes.gateway.networking.k8s.io", "", "yes"),
    ("delete", "httproutes.gateway.networking.k8s.io", "", "yes"),
    ("list", "httproutes.gateway.networking.k8s.io", "", "no"),
    ("get", "secrets", "", "yes"),
    ("list", "secrets", "", "no"),
    ("watch", "secrets", "", "no"),
    ("watch", "pods", "", "yes"),
    ("list", "pods", "", "yes"),
    ("get", "pods", "", "no"),
    ("create", "pods", "", "no"),
    ("delete", "pods", "", "no"),
    ("get", "pods", "log", "no"),
    ("create", "pods", "exec", "no"),
    ("create", "events", "", "yes"),
    ("patch", "events", "", "no"),
]
# Cluster-scoped, whatever the mode: kopf discovers CRDs and namespaces.
CLUSTER_RIGHTS = [
    ("list", "namespaces", "", "yes"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", "", "yes"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", "", "no"),
]


def helm(kube_cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(default_bin_dir() / "helm"), f"--kubeconfig={kube_cluster.kubeconfig}", *args],
        capture_output=True, text=True, timeout=120,
    )


def service_account(namespace: str, release: str) -> str:
    return f"system:serviceaccount:{namespace}:{release}-modelpilot"


def assert_rights(kubectl, account: str, rights: list[tuple[str, str, str, str]], namespace: str | None) -> None:
    where = ["-n", namespace] if namespace else ["--all-namespaces"]
    wrong = []
    for verb, resource, subresource, allowed in rights:
        args = ["auth", "can-i", verb, resource, f"--subresource={subresource}", "--as", account, *where]
        answer = kubectl(*args).stdout.strip()
        if answer != allowed:
            wrong.append(f"can-i {verb} {resource} {subresource} in {namespace or 'the cluster'}: {answer}")
    assert not wrong, f"{account}:\n" + "\n".join(wrong)


def denied(rights: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
    return [(verb, resource, sub, "no") for verb, resource, sub, _ in rights]


def test_chart_crd_is_the_generated_one():
    assert (CHART / "files" / "crds" / GENERATED_CRD.name).read_text() == GENERATED_CRD.read_text(), "run `make crds`"


def test_default_runtime_image_is_the_operators_own_default(kube_cluster):
    rendered = helm(kube_cluster, "template", "mp", str(CHART), "--kube-version", "v1.35.4", "--show-only", "templates/deployment.yaml")
    assert rendered.returncode == 0, rendered.stderr
    container = yaml.safe_load(rendered.stdout)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODELPILOT_RUNTIME_IMAGE"] == Settings().runtime_image


@pytest.fixture(scope="module")
def gateway_api(kubectl) -> None:
    install_gateway_api_crds(kubectl)


@pytest.mark.parametrize("values", [None, "namespaced.yaml", "overrides.yaml"], ids=["defaults", "namespaced", "overrides"])
def test_every_object_the_chart_renders_is_valid_for_the_api_server(kube_cluster, kubectl, namespace, monitoring_crds, values):
    """What `kubeconform` would check, with the real schemas: the API server's own validation of every
    object, dry run. Namespaces the values name are made first; the `helm test` hook pod is left out (its
    ServiceAccount would not exist yet in a dry run)."""
    args = ["-f", str(CHART / "ci" / values)] if values else []
    rendered = helm(kube_cluster, "template", f"v-{namespace}", str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION,
                    "--no-hooks", *args)  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    for other in sorted({d["metadata"]["namespace"] for d in documents if d["metadata"].get("namespace", namespace) != namespace}):
        kubectl("create", "namespace", other)  # left in place: other values files name the same ones
    checked = kubectl("apply", "--dry-run=server", "-f", "-", input=rendered.stdout)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "ServiceAccount"} <= kinds
    if values == "overrides.yaml":
        assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "PodDisruptionBudget", "CustomResourceDefinition"} <= kinds


def test_chart_lints_and_installs_cluster_wide(kube_cluster, kubectl, namespace, gateway_api, crds):
    lint = helm(kube_cluster, "lint", str(CHART), "--strict")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    release = f"mp-{namespace}"
    installed = helm(
        kube_cluster, "install", release, str(CHART), "-n", namespace,
        # The suite's own CRD (the `crds` fixture) serves every module; a release may not take it over.
        "--set", "crds.install=false",
        "--set", "runtimeImage=registry.example/runtime:1",
        "--set", "allowedRuntimeImages={registry.example/*,ghcr.io/modelpilot/runtime:*}",
        "--wait=false",
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    try:
        dep = json.loads(kubectl("get", "deployment", f"{release}-modelpilot", "-n", namespace, "-o", "json", check=True).stdout)
        container = dep["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["MODELPILOT_RUNTIME_IMAGE"] == "registry.example/runtime:1"
        assert env["MODELPILOT_ALLOWED_IMAGES"] == "registry.example/*,ghcr.io/modelpilot/runtime:*"
        assert not [arg for arg in container["args"] if arg.startswith("--namespace")]
        kubectl("get", "crd", "modeldeployments.modelpilot.io", check=True)
        # Watching every namespace, the operator may do its job in any of them, and no more.
        account = service_account(namespace, release)
        assert_rights(kubectl, account, SERVING_RIGHTS, "default")
        assert_rights(kubectl, account, CLUSTER_RIGHTS, None)
    finally:
        helm(kube_cluster, "uninstall", release, "-n", namespace)


def test_watched_namespaces_get_roles_and_the_cluster_keeps_only_discovery(kube_cluster, kubectl, namespace, gateway_api):
    release = f"ns-{namespace}"
    rendered = helm(
        kube_cluster, "template", release, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION,
        "--skip-tests", "--set", f"watchNamespaces={{{namespace}}}",
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    (operator,) = [d for d in documents if d["kind"] == "Deployment"]
    assert f"--namespace={namespace}" in operator["spec"]["template"]["spec"]["containers"][0]["args"]
    # The operator's own, not those aggregated into admin, edit and view.
    (cluster_role,) = [d for d in documents if d["kind"] == "ClusterRole" and d["metadata"]["name"] == f"{release}-modelpilot"]
    assert {r for rule in cluster_role["rules"] for r in rule["resources"]} == {"customresourcedefinitions", "namespaces"}
    rbac = yaml.safe_dump_all([d for d in documents if d["kind"] in {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}])
    kubectl("apply", "-f", "-", input=rbac, check=True)
    try:
        account = service_account(namespace, release)
        assert_rights(kubectl, account, SERVING_RIGHTS, namespace)
        # Anywhere else, nothing: no Secret of another namespace can be read.
        assert_rights(kubectl, account, denied(SERVING_RIGHTS), "default")
        assert_rights(kubectl, account, [("get", "secrets", "", "no"), ("list", "modeldeployments.modelpilot.io", "", "no")], None)
        assert_rights(kubectl, account, CLUSTER_RIGHTS, None)
    finally:
        kubectl("delete", "-f", "-", "--ignore-not-found", input=rbac)
