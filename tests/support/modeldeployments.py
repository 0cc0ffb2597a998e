"""ModelDeployments driven through the real kubectl: apply one, read objects back, wait for a status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.cluster.launcher import default_bin_dir

from .waiting import wait_for

START_TIMEOUT = 240  # image already loaded; fetch, imports and model load on a shared 2-core machine


def apply_model(kubectl, namespace: str, name: str, uri: str, model: dict, **spec) -> None:
    body = {
        "apiVersion": "modelpilot.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": model, "mlflow": {"trackingUri": uri, "credentialsSecret": "mlflow-creds"}, **spec},
    }  # fmt: skip
    kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=True)


def get(kubectl, *args: str) -> dict:
    return json.loads(kubectl("get", *args, "-o", "json", check=True).stdout)


def wait_status(kubectl, operator, namespace: str, name: str, accept, what: str, timeout: float = START_TIMEOUT) -> dict:
    """Poll the ModelDeployment's status until `accept(status)`; on timeout the failure shows the pods and
    the operator's log."""

    seen: dict = {}

    def probe():
        seen["status"] = get(kubectl, "mdep", name, "-n", namespace).get("status", {})
        return seen["status"] if accept(seen["status"]) else None

    try:
        return wait_for(probe, what, timeout=timeout, interval=0.5)
    except AssertionError as exc:
        pods = kubectl("get", "pods", "-n", namespace, "-o", "wide").stdout
        last = {k: seen.get("status", {}).get(k) for k in ("phase", "message")}
        raise AssertionError(f"{exc}\nstatus: {last}\npods:\n{pods}\noperator log:\n{operator.tail(40)}") from None


def serving(version: str):
    """A status check: Ready, serving `version`."""
    return lambda st: st.get("phase") == "Ready" and (st.get("model") or {}).get("version") == version


def cluster_ip(kubectl, namespace: str, name: str) -> str:
    return get(kubectl, "service", name, "-n", namespace)["spec"]["clusterIP"]


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def plugin(kube_cluster, *args: str) -> subprocess.CompletedProcess:
    """`kubectl modelpilot ...`, found by kubectl on PATH as users install it (the package's console script)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    kubectl_binary = default_bin_dir() / "kubectl"
    return subprocess.run(
        [str(kubectl_binary), "modelpilot", *args, f"--kubeconfig={kube_cluster.kubeconfig}"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


# Where a rollout stands, in the order it gets there: its steps by kind, then how it ends.
STEP_KINDS = ("setWeight", "pause", "analysis")
POINTS = (*STEP_KINDS, "promotion", "rollback")


def rollout_point(rollout: dict, version: str, step_kinds: tuple[str, ...]) -> str | None:
    """Where the rollout of `version` is: the kind of its current step (`step_kinds` names the spec's
    steps in order), "promotion" once promoted, "rollback" once an analysis failed; None when it is not
    that version's rollout or not under way."""
    if rollout.get("canaryVersion") != version:
        return None
    measurements = (rollout.get("analysis") or {}).get("measurements") or []
    if any(m.get("verdict") == "Fail" for m in measurements) or rollout.get("phase") == "Aborted":
        return "rollback"
    if rollout.get("phase") in ("Promoting", "Baking", "Completed"):
        return "promotion"
    if rollout.get("phase") in ("Progressing", "Paused"):
        return step_kinds[min(rollout.get("stepIndex", 0), len(step_kinds) - 1)]
    return None
