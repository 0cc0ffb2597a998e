"""Any MLflow model on the real node, without building an image: XGBoost, LightGBM and a custom pyfunc
(code_paths and a package only a private index has) served by the scikit-learn runtime under the
requirements policy Install, beside a scikit-learn model the runtime serves as it is. The pods install what each model needs from a package index behind basic
auth (credentials from a Secret), into environments on a shared volume; each model answers through its
Service, in MLflow's protocol and in the Open Inference Protocol (a Triton client), what it predicts
in-process. A second pod of the same version installs nothing: it finds the environment built."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.support.flavours import COLUMNS, ROWS, flavour_wheels, private_wheel, register_flavours
from tests.support.leaks import secret_value
from tests.support.load import post_once_routed
from tests.support.modeldeployments import apply_model, cluster_ip, get, serving, wait_status
from tests.support.package_index import PackageIndex
from tests.support.waiting import wait_for
from tests.support.figures import report_figure

pytestmark = [pytest.mark.cluster, pytest.mark.mlflow]

FLAVOURS = ("sklearn", "xgboost", "lightgbm", "pyfunc")
INDEX_USER, INDEX_PASSWORD = "mirror-reader", secret_value("node-index-password")
REFUSED_PASSWORD = secret_value("refused-index-password")


@pytest.fixture(scope="module")
def flavours(mlflow, tmp_path_factory) -> dict[str, dict]:
    return register_flavours(mlflow, tmp_path_factory.mktemp("flavours"))


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("index")
    for wheel in flavour_wheels().glob("*.whl"):
        (folder / wheel.name).symlink_to(wheel)
    private_wheel(folder)
    served = PackageIndex(folder, username=INDEX_USER, password=INDEX_PASSWORD)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def environments_claim(kubectl, module_namespace):
    """A PersistentVolumeClaim bound to a folder of the node: the environments' shared cache."""
    folder = Path(tempfile.mkdtemp(prefix="modelpilot-envs-"))
    os.chmod(folder, 0o777)  # the pods run as 10001; a hostPath volume takes no fsGroup
    name = f"{module_namespace}-envs"
    volume = {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(folder), "type": "Directory"}},
    }  # fmt: skip
    claim = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "envs", "namespace": module_namespace},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": name,
                 "resources": {"requests": {"storage": "2Gi"}}},
    }  # fmt: skip
    for body in (volume, claim):
        kubectl("apply", "-f", "-", input=json.dumps(body), check=True)
    yield "envs"
    kubectl("delete", "pv", name, "--wait=false")


@pytest.fixture(scope="module")
def deployed(kubectl, operator, images, flavours, index, environments_claim, pod_mlflow_uri, host_address, module_namespace):
    ns = module_namespace
    kubectl("create", "secret", "generic", "index-creds", "-n", ns,
            f"--from-literal=username={INDEX_USER}", f"--from-literal=password={INDEX_PASSWORD}", check=True)  # fmt: skip
    runtime = {
        "requirementsPolicy": "Install",
        "packageIndex": {"url": index.url_for(host_address), "credentialsSecret": "index-creds"},
        "environmentCache": {"claimName": environments_claim},
    }
    for flavour in FLAVOURS:
        model = flavours[flavour]
        apply_model(kubectl, ns, flavour, pod_mlflow_uri, {"name": model["name"], "version": model["version"]}, runtime=runtime)
    for flavour in FLAVOURS:
        wait_status(kubectl, operator, ns, flavour, serving(flavours[flavour]["version"]), f"{flavour} Ready", timeout=300)
    return ns


def manifest(kubectl, ns: str, pod: str) -> dict:
    path = "/var/lib/modelpilot/model/.modelpilot-manifest.json"
    return json.loads(kubectl("exec", pod, "-n", ns, "-c", "model-server", "--", "cat", path, check=True).stdout)


def pods_of(kubectl, ns: str, name: str) -> list[dict]:
    return get(kubectl, "pods", "-n", ns, "-l", f"modelpilot.io/deployment={name}")["items"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_each_flavour_answers_through_its_service_what_it_predicts_in_process(kubectl, deployed, flavours, flavour):
    ns, expected = deployed, flavours[flavour]["predictions"]
    address = cluster_ip(kubectl, ns, flavour)
    body = {"dataframe_split": {"columns": COLUMNS, "data": ROWS}}
    answer = post_once_routed(f"http://{address}/invocations", body)
    assert answer.status_code == 200, answer.text
    assert np.allclose(answer.json()["predictions"], expected), (answer.json(), expected)

    # The Open Inference Protocol, from a client written for Triton: one FP64 column per input.
    client = triton.InferenceServerClient(url=f"{address}:80")
    assert client.is_server_ready() and client.is_model_ready(flavours[flavour]["name"])
    metadata = client.get_model_metadata(flavours[flavour]["name"])
    assert [i["name"] for i in metadata["inputs"]] == COLUMNS
    inputs = []
    for at, column in enumerate(COLUMNS):
        tensor = triton.InferInput(column, [len(ROWS)], "FP64")
        tensor.set_data_from_numpy(np.array([row[at] for row in ROWS], dtype=np.float64))
        inputs.append(tensor)
    result = client.infer(flavours[flavour]["name"], inputs)
    output = result.get_response()["outputs"][0]["name"]
    assert np.allclose(result.as_numpy(output).reshape(-1), expected)

    pod = pods_of(kubectl, ns, flavour)[0]["metadata"]["name"]
    environment = manifest(kubectl, ns, pod)["environment"]
    if flavour == "sklearn":
        assert environment is None  # the runtime satisfies it: nothing to build
        return
    log = kubectl("logs", pod, "-n", ns, "-c", "fetch-model", check=True).stdout
    assert INDEX_PASSWORD not in log and INDEX_PASSWORD not in json.dumps(environment)
    report_figure(f"{flavour}: installed {', '.join(environment['installed'])} in {environment['seconds']:.1f} s"
          f" ({'reused' if environment['reused'] else 'built'})")  # fmt: skip


def test_a_second_pod_of_the_same_version_installs_nothing(kubectl, operator, deployed, flavours, index):
    ns = deployed
    asked = index.requests
    kubectl("patch", "mdep", "xgboost", "-n", ns, "--type=merge", "-p", '{"spec": {"replicas": 2}}', check=True)

    def two_ready():
        pods = [p for p in pods_of(kubectl, ns, "xgboost") if not p["metadata"].get("deletionTimestamp")]
        ready = [p for p in pods if all(c.get("ready") for c in p["status"].get("containerStatuses", [{}]))]
        return pods if len(ready) == 2 else None

    pods = wait_for(two_ready, "a second xgboost pod ready", timeout=300)
    manifests = {p["metadata"]["name"]: manifest(kubectl, ns, p["metadata"]["name"])["environment"] for p in pods}
    newest = max(pods, key=lambda p: p["metadata"]["creationTimestamp"])["metadata"]["name"]
    second = manifests[newest]
    assert second["reused"] is True
    assert {m["path"] for m in manifests.values()} == {second["path"]}
    assert index.requests == asked  # the index was not asked for anything
    log = kubectl("logs", newest, "-n", ns, "-c", "fetch-model", check=True).stdout
    assert re.search(r"environment \w+ is already built .*: nothing to install", log), log
    first = next(m for name, m in manifests.items() if name != newest)
    report_figure(f"xgboost environment: first pod {first['seconds']:.1f} s, second pod {second['seconds']:.3f} s")
    answer = httpx.post(f"http://{cluster_ip(kubectl, ns, 'xgboost-stable')}/invocations",
                        json={"dataframe_split": {"columns": COLUMNS, "data": ROWS}}, timeout=30)  # fmt: skip
    assert answer.status_code == 200 and np.allclose(answer.json()["predictions"], flavours["xgboost"]["predictions"])



def test_an_install_the_index_refuses_is_reported_with_its_reason_and_no_secret(
    kubectl, operator, deployed, flavours, index, host_address, pod_mlflow_uri
):
    ns = deployed
    kubectl("create", "secret", "generic", "wrong-index-creds", "-n", ns,
            f"--from-literal=username={INDEX_USER}", f"--from-literal=password={REFUSED_PASSWORD}", check=True)  # fmt: skip
    runtime = {
        "requirementsPolicy": "Install",
        "packageIndex": {"url": index.url_for(host_address), "credentialsSecret": "wrong-index-creds", "installer": "pip"},
    }
    model = flavours["lightgbm"]
    apply_model(kubectl, ns, "refused", pod_mlflow_uri, {"name": model["name"], "version": model["version"]}, runtime=runtime)
    status = wait_status(kubectl, operator, ns, "refused", lambda st: st.get("phase") == "Failed", "refused Failed")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "RequirementsInstallFailed"
    assert "fetch-model exited 8: fetch failed: requirements policy Install: could not" in status["message"]
    events = get(kubectl, "events", "-n", ns, "--field-selector", "involvedObject.name=refused")["items"]
    assert any(e["reason"] == "RequirementsInstallFailed" and e["type"] == "Warning" for e in events)
    for text in (json.dumps(status), json.dumps(events)):
        assert REFUSED_PASSWORD not in text and INDEX_PASSWORD not in text
    kubectl("delete", "mdep", "refused", "-n", ns, "--wait=false")
