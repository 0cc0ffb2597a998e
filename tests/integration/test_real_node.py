"""The real node runs real pods: the project's runtime image starts under Pod Security "restricted",
answers through its Service's ClusterIP, reaches servers on this machine's loopback, and `kubectl logs`
and `kubectl exec` work. Starting and stopping a cluster with a real node leaves nothing behind."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.cluster import launcher
from tests.cluster import node as real_node
from tests.cluster.node import NODE_NAME
from tests.support.processes import processes_running
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# A few lines of the standard library, so the test depends on nothing but the runtime image's Python.
ECHO_SERVER = """
import http.server, os
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["HOSTNAME"].encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Echo).serve_forever()
"""


def _apply(kubectl, manifest: dict) -> None:
    kubectl("apply", "-f", "-", input=json.dumps(manifest), check=True)


def _echo_deployment(namespace: str, image: str, replicas: int) -> dict:
    labels = {"app": "echo"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo", "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{
                        "name": "echo", "image": image, "command": ["python", "-c", ECHO_SERVER],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                        "securityContext": RESTRICTED,
                    }],
                },
            },
        },
    }  # fmt: skip


def test_real_pods_answer_through_their_service(kubectl, real_node, images, restricted_namespace, mlflow, host_address):
    ns = restricted_namespace
    _apply(kubectl, _echo_deployment(ns, images["runtime"], replicas=2))
    _apply(kubectl, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": ns},
        "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 8080}]},
    })  # fmt: skip
    kubectl("rollout", "status", "deployment/echo", "-n", ns, "--timeout=120s", check=True, timeout=130)
    pods = json.loads(kubectl("get", "pods", "-n", ns, "-l", "app=echo", "-o", "json", check=True).stdout)["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {NODE_NAME}
    names = {p["metadata"]["name"] for p in pods}

    cluster_ip = json.loads(kubectl("get", "service", "echo", "-n", ns, "-o", "json", check=True).stdout)["spec"]["clusterIP"]
    wait_for(lambda: _answers(f"http://{cluster_ip}/"), "kube-proxy to route the new Service", timeout=30)
    answered = [httpx.get(f"http://{cluster_ip}/", timeout=5).text for _ in range(60)]
    # kube-proxy picks a pod per connection at random: both answer, and nothing else does.
    assert set(answered) == names

    pod = sorted(names)[0]
    assert '"GET / HTTP/1.1" 200' in kubectl("logs", pod, "-n", ns, check=True).stdout
    whoami = kubectl("exec", pod, "-n", ns, "--", "python", "-c", "import os; print(os.getuid())", check=True)
    assert whoami.stdout.strip() == "10001", "the image's own non-root user"
    # Pods reach servers on this machine's loopback through the host address.
    probe = f"import urllib.request; print(urllib.request.urlopen('http://{host_address}:{mlflow.uri.rsplit(':', 1)[1]}/health').status)"
    assert kubectl("exec", pod, "-n", ns, "--", "python", "-c", probe, check=True).stdout.strip() == "200"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.ConnectError:  # not routed yet: the node answers "network unreachable"
        return False


# --------------------------------------------------------------------------------------------------
# Nothing left behind


def _leftovers(slot: int) -> list[str]:
    network = real_node.NodeNetwork(slot)
    found = []
    nat = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True, check=True).stdout
    found += [line for line in nat.splitlines() if network.nat_comment in line]
    found += [str(p) for p in real_node.cgroup_dirs(network) if p.exists()]
    if subprocess.run(["ip", "link", "show", network.host_link], capture_output=True).returncode == 0:
        found.append(f"link {network.host_link}")
    if network.state_dir.exists():
        found.append(str(network.state_dir))
    found += [cmd[:120] for cmd in processes_running(str(network.state_dir)).values()]
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_a_cluster_leaves_nothing_behind(real_node, tmp_path, stop_signal):
    workdir = tmp_path / "cluster"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.launcher", "--no-build", "--nodes=1", f"--workdir={workdir}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        found = [line for line in lines if "real node in slot" in line]
        assert found, "".join(lines)
        slot = int(found[0].split("slot ")[1].split(":")[0])
        assert _leftovers(slot), "the running node has its NAT rules, cgroups and link"
        assert processes_running(str(workdir))
    finally:
        proc.send_signal(stop_signal)
        proc.wait(timeout=60)
    assert proc.returncode in (0, -stop_signal, 128 + stop_signal), "".join(lines)
    wait_for(lambda: not processes_running(str(workdir)) or None, "every process of the stopped cluster to exit", timeout=20)
    assert _leftovers(slot) == []


def test_a_failed_node_start_leaves_nothing_behind(real_node, tmp_path):
    # A kubelet that exits at once: the node never becomes Ready and the start fails.
    bins = tmp_path / "bin"
    bins.mkdir()
    for binary in launcher.default_bin_dir().iterdir():
        if not binary.name.startswith("."):
            (bins / binary.name).symlink_to(binary)
    (bins / "kubelet").unlink()
    (bins / "kubelet").write_text("#!/bin/sh\necho 'kubelet: refusing to start' >&2\nexit 3\n")
    (bins / "kubelet").chmod(0o755)
    cluster = launcher.LocalCluster(bin_dir=bins, nodes=1, real=True, start_timeout=60)
    with pytest.raises(launcher.ClusterStartError, match="kubelet exited with code 3"):
        cluster.start()
    slot = cluster.network.slot
    assert _leftovers(slot) == []
    assert processes_running(str(cluster.workdir)) == {}
    shutil.rmtree(cluster.workdir)  # a failed start keeps its logs for the user; this one was expected
