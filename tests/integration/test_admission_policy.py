"""The chart's ValidatingAdmissionPolicy on the real API server: what the CRD schema cannot refuse is refused
at `kubectl apply`, with a message naming the field; good specs go through; objects stored before the
policy can still be annotated and deleted (the operator patches their metadata)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.cluster.launcher import default_bin_dir
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

CHART = Path(__file__).resolve().parents[2] / "helm" / "modelpilot"
ALLOWED = ["ghcr.io/modelpilot/runtime:*", "registry.example/ml/*"]
RELEASE = "admission"
POLICY = f"{RELEASE}-modelpilot"


def body(namespace: str, name: str, **spec) -> dict:
    return {
        "apiVersion": "modelpilot.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"name": "m", "version": "1"},
                 "mlflow": {"trackingUri": "http://mlflow.mlflow:5000", "credentialsSecret": "mlflow-creds"}, **spec},
    }  # fmt: skip


def apply(kubectl, document: dict) -> subprocess.CompletedProcess:
    return kubectl("apply", "-f", "-", input=yaml.safe_dump(document))


def rendered_policy(*extra: str) -> str:
    images = "{" + ",".join(ALLOWED) + "}"
    return subprocess.run(
        [str(default_bin_dir() / "helm"), "template", RELEASE, str(CHART), "--kube-version", "v1.35.4",
         "--show-only", "templates/admission-policy.yaml", "--set", "admissionPolicy.enabled=true",
         "--set", f"allowedRuntimeImages={images}", *extra],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip


@pytest.fixture(scope="module")
def stored_before(kube_api, crds, kubectl):
    """A namespace with a ModelDeployment stored before the policy, whose image the policy refuses."""
    from tests.conftest import fresh_namespace

    for namespace in fresh_namespace(kube_api):
        apply(kubectl, body(namespace, "legacy", runtime={"image": "evil.example/miner:1"})).check_returncode()
        yield namespace


@pytest.fixture(scope="module")
def policy(kubectl, stored_before):
    """The policy and its binding, installed for this module only: other modules' specs are not judged."""
    manifest = rendered_policy()
    installed = kubectl("apply", "-f", "-", input=manifest)
    assert installed.returncode == 0, installed.stderr
    try:
        # The API server type-checks every expression against the CRD's schema and reports what fails.
        checked = wait_for(lambda: _type_checked(kubectl), f"type checking of ValidatingAdmissionPolicy {POLICY}", timeout=60)
        assert not checked.get("typeChecking", {}).get("expressionWarnings"), checked["typeChecking"]
        # Enforcement starts once the API server's policy informer has it.
        probe = body(stored_before, "probe", runtime={"image": "evil.example/miner:1"})
        wait_for(lambda: kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(probe)).returncode != 0,
                 "the policy to be enforced", timeout=60)  # fmt: skip
        yield
    finally:
        kubectl("delete", "-f", "-", "--ignore-not-found", input=manifest)


def _type_checked(kubectl) -> dict | None:
    """The policy's status once the API server has type-checked its current generation."""
    found = json.loads(kubectl("get", "validatingadmissionpolicy", POLICY, "-o", "json", check=True).stdout)
    status = found.get("status", {})
    return status if status.get("observedGeneration") == found["metadata"]["generation"] else None


REFUSED = [
    ("image outside the allow-list", {"runtime": {"image": "evil.example/miner:1"}}, "spec.runtime.image: evil.example/miner:1 is not allowed"),
    ("image that only looks allowed", {"runtime": {"image": "ghcr.io/modelpilot/runtime-fork:1"}}, "spec.runtime.image"),
    ("credentials Secret not a DNS name", {"mlflow": {"trackingUri": "http://m:5000", "credentialsSecret": "MLflow_Creds"}},
     "spec.mlflow.credentialsSecret: not a valid Secret name"),
    ("credentials Secret too long", {"mlflow": {"trackingUri": "http://m:5000", "credentialsSecret": "a" * 254}},
     "spec.mlflow.credentialsSecret: not a valid Secret name"),
    ("ServiceAccount token Secret", {"mlflow": {"trackingUri": "http://m:5000", "credentialsSecret": "default-token-x7k2p"}},
     "spec.mlflow.credentialsSecret: default-token-x7k2p looks like"),
    ("Helm release Secret", {"rollout": {"analysis": {"prometheus": {"credentialsSecret": "sh.helm.release.v1.modelpilot.v3"}}}},
     "spec.rollout.analysis.prometheus.credentialsSecret: sh.helm.release.v1.modelpilot.v3 looks like"),
    ("bootstrap token Secret", {"runtime": {"packageIndex": {"url": "https://pypi.example/simple", "credentialsSecret": "bootstrap-token-abcdef"}}},
     "spec.runtime.packageIndex.credentialsSecret: bootstrap-token-abcdef looks like"),
    ("sink Secret not a DNS name", {"runtime": {"requestLogging": {"fraction": 0.1, "sink": "https://sink.example/logs", "sinkCredentialsSecret": "Sink"}}},
     "spec.runtime.requestLogging.sinkCredentialsSecret: not a valid Secret name"),
    ("pull Secret token", {"pod": {"imagePullSecrets": [{"name": "regcred"}, {"name": "builder-token-q9z8w"}]}},
     "spec.pod.imagePullSecrets: builder-token-q9z8w looks like"),
    ("--port in args", {"runtime": {"args": ["--timeout", "30", "--port", "9000"]}}, "spec.runtime.args: --port overrides a flag"),
    ("--port= in args", {"runtime": {"args": ["--port=9000"]}}, "spec.runtime.args: --port overrides a flag"),
    ("abbreviated --model-dir", {"runtime": {"args": ["--model=/tmp/other"]}}, "spec.runtime.args: --model overrides a flag"),
    ("--host in args", {"runtime": {"args": ["--host", "127.0.0.1"]}}, "spec.runtime.args: --host overrides"),
    ("request logging sink in args", {"runtime": {"args": ["--log-requests-sink=https://elsewhere.example"]}},
     "spec.runtime.args: --log-requests-sink overrides"),
    ("model version in env", {"runtime": {"env": [{"name": "MODELPILOT_MODEL_VERSION", "value": "1"}]}},
     "spec.runtime.env: MODELPILOT_MODEL_VERSION is set by the operator"),
    ("tracking URI in env", {"runtime": {"env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://elsewhere"}]}},
     "spec.runtime.env: MLFLOW_TRACKING_URI is set by the operator"),
]


@pytest.mark.parametrize("spec, named", [(s, n) for _, s, n in REFUSED], ids=[i for i, _, _ in REFUSED])
def test_kubectl_apply_refuses_what_the_schema_cannot_with_the_field_named(kubectl, stored_before, policy, spec, named):
    refused = apply(kubectl, body(stored_before, "bad", **spec))
    assert refused.returncode != 0, f"accepted: {spec}"
    assert "denied request" in refused.stderr and named in refused.stderr, refused.stderr
    assert kubectl("get", "mdep", "bad", "-n", stored_before).returncode != 0


ACCEPTED = [
    ("the operator's default image", {}),
    ("an allowed image", {"runtime": {"image": "registry.example/ml/runtime:2@sha256:" + "a" * 64}}),
    ("every Secret field with ordinary names", {
        "mlflow": {"trackingUri": "http://m:5000", "credentialsSecret": "mlflow-creds"},
        "runtime": {"packageIndex": {"url": "https://pypi.example/simple", "credentialsSecret": "pypi.creds"},
                    "requestLogging": {"fraction": 0.1, "sink": "https://sink.example/logs", "sinkCredentialsSecret": "sink-token"}},
        "rollout": {"analysis": {"prometheus": {"credentialsSecret": "prometheus-token-reader"}}},
        "pod": {"imagePullSecrets": [{"name": "regcred"}]},
    }),
    ("the server's own tuning flags", {"runtime": {"args": ["--timeout", "30", "--log-level=debug", "--no-drift",
                                                            "--log-requests-max-body", "65536", "--access-log"]}}),
    ("environment of the model's own", {"runtime": {"env": [{"name": "OMP_NUM_THREADS", "value": "1"}, {"name": "MLFLOW_ENABLE_X", "value": "1"}]}}),
]  # fmt: skip


@pytest.mark.parametrize("spec", [s for _, s in ACCEPTED], ids=[i for i, _ in ACCEPTED])
def test_good_specs_go_through(kubectl, stored_before, policy, spec):
    accepted = apply(kubectl, body(stored_before, "good", **spec))
    assert accepted.returncode == 0, accepted.stderr
    kubectl("delete", "mdep", "good", "-n", stored_before, check=True)


def test_an_object_stored_before_the_policy_can_be_annotated_and_deleted_but_not_respecified(kubectl, stored_before, policy):
    assert kubectl("annotate", "mdep", "legacy", "-n", stored_before, "modelpilot.io/touched=yes").returncode == 0
    changed = kubectl("patch", "mdep", "legacy", "-n", stored_before, "--type=merge", "-p", '{"spec":{"replicas":2}}')
    # A spec write is judged whole: the stored image is still not allowed.
    assert changed.returncode != 0 and "spec.runtime.image" in changed.stderr, changed.stderr
    fixed = kubectl("patch", "mdep", "legacy", "-n", stored_before, "--type=merge",
                    "-p", '{"spec":{"runtime":{"image":"ghcr.io/modelpilot/runtime:0.2.0"}}}')  # fmt: skip
    assert fixed.returncode == 0, fixed.stderr
    assert kubectl("delete", "mdep", "legacy", "-n", stored_before).returncode == 0
