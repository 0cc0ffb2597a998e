"""The Helm chart installs for real with the pinned helm, and its CRD copy is the generated one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cluster.launcher import default_bin_dir

CHART = Path(__file__).resolve().parents[2] / "helm" / "modelpilot"
GENERATED_CRD = CHART.parents[1] / "crds" / "modelpilot.io_modeldeployments.yaml"

pytestmark = pytest.mark.cluster


def helm(kube_cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(default_bin_dir() / "helm"), f"--kubeconfig={kube_cluster.kubeconfig}", *args],
        capture_output=True, text=True, timeout=120,
    )


def test_chart_crd_is_the_generated_one():
    assert (CHART / "crds" / GENERATED_CRD.name).read_text() == GENERATED_CRD.read_text(), "run `make crds`"


def test_chart_lints_and_installs(kube_cluster, kubectl, namespace):
    lint = helm(kube_cluster, "lint", str(CHART), "--strict")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    release = f"mp-{namespace}"
    installed = helm(
        kube_cluster, "install", release, str(CHART), "-n", namespace,
        "--set", "runtimeImage=registry.example/runtime:1", "--set", "watchNamespaces={ml}", "--wait=false",
    )
    assert installed.returncode == 0, installed.stderr
    try:
        dep = json.loads(kubectl("get", "deployment", f"{release}-modelpilot", "-n", namespace, "-o", "json", check=True).stdout)
        container = dep["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["MODELPILOT_RUNTIME_IMAGE"] == "registry.example/runtime:1"
        assert "--namespace=ml" in container["args"]
        kubectl("get", "crd", "modeldeployments.modelpilot.io", check=True)
        # The operator's ServiceAccount may do its job and no more.
        sa = f"system:serviceaccount:{namespace}:{release}-modelpilot"
        for verb, resource, subresource, allowed in [
            ("patch", "modeldeployments.modelpilot.io", "status", "yes"),
            ("patch", "deployments.apps", "", "yes"),
            ("get", "secrets", "", "yes"),
            ("list", "secrets", "", "no"),
            ("update", "modeldeployments.modelpilot.io", "", "no"),
            ("watch", "pods", "", "yes"),
            ("list", "pods", "", "yes"),
            ("create", "pods", "", "no"),
            ("delete", "pods", "", "no"),
            ("get", "pods", "log", "no"),
            ("create", "pods", "exec", "no"),
        ]:
            args = ["auth", "can-i", verb, resource, f"--subresource={subresource}", "--as", sa, "-n", "default"]
            answer = kubectl(*args).stdout.strip()
            assert answer == allowed, f"{sa} can-i {verb} {resource} {subresource}: {answer}"
    finally:
        helm(kube_cluster, "uninstall", release, "-n", namespace)
