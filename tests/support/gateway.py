"""A real Gateway API implementation for the Gateway API router: Traefik v3, built from its pinned Go module
by tests/cluster/build.sh, run on loopback against the suite's cluster with the Gateway API CRDs of the
version it is built with. It proxies to the pods' addresses from EndpointSlices, as it would in a cluster.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.launcher import default_bin_dir

from .processes import free_port, start_process, stop_process, wait_http_ok
from .waiting import wait_for

GATEWAY_CLASS = "modelpilot-traefik"
CONTROLLER = "traefik.io/gateway-controller"
LISTENER = "web"


@dataclass(frozen=True)
class Gateway:
    name: str
    namespace: str
    # Where clients send requests: the Gateway's HTTP listener.
    url: str
    log_path: Path


def traefik_binary() -> Path:
    return default_bin_dir() / "traefik"


def gateway_api_crds() -> Path:
    return default_bin_dir() / "gateway-api-crds"


@contextmanager
def traefik_gateway(kubeconfig: Path, kubectl: Callable, namespace: str, name: str = "edge") -> Iterator[Gateway]:
    """The Gateway API CRDs installed, Traefik serving GatewayClass `modelpilot-traefik`, and Gateway `name`
    in `namespace` with one HTTP listener that admits routes from every namespace, Programmed."""
    binary = traefik_binary()
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: run `MODELPILOT_GATEWAY=1 make cluster-bins` (`make test-long` does)")
    install_gateway_api_crds(kubectl)
    port, ping_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="modelpilot-traefik-") as tmp:
        log_path = Path(tmp) / "traefik.log"
        proc = start_process(
            [str(binary), f"--entryPoints.{LISTENER}.address=127.0.0.1:{port}",
             f"--entryPoints.ping.address=127.0.0.1:{ping_port}", "--ping.entryPoint=ping",
             "--providers.kubernetesGateway=true", "--providers.kubernetesGateway.statusAddress.ip=127.0.0.1",
             "--global.checkNewVersion=false", "--global.sendAnonymousUsage=false", "--log.level=INFO"],
            {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin"}, log_path,
        )  # fmt: skip
        try:
            wait_http_ok(f"http://127.0.0.1:{ping_port}/ping", proc, log_path, timeout=60)
            kubectl("apply", "-f", "-", input=_manifests(name, namespace, port), check=True)
            wait_for(
                lambda: _programmed(kubectl, name, namespace), f"Gateway {namespace}/{name} to be Programmed", timeout=60
            )
            yield Gateway(name=name, namespace=namespace, url=f"http://127.0.0.1:{port}", log_path=log_path)
        finally:
            stop_process(proc)
            kubectl("delete", "gateway", name, "-n", namespace, "--ignore-not-found", "--wait=false")
            kubectl("delete", "gatewayclass", GATEWAY_CLASS, "--ignore-not-found", "--wait=false")


def install_gateway_api_crds(kubectl: Callable) -> None:
    """The Gateway API CRDs of the version Traefik is built with, established."""
    kubectl("apply", "--server-side", "-f", str(gateway_api_crds()), check=True)
    for crd in ("gatewayclasses", "gateways", "httproutes"):
        kubectl("wait", "--for=condition=Established", f"crd/{crd}.gateway.networking.k8s.io", "--timeout=60s", check=True)


def _manifests(name: str, namespace: str, port: int) -> str:
    gateway_class = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": GATEWAY_CLASS}, "spec": {"controllerName": CONTROLLER},
    }  # fmt: skip
    # Traefik serves a listener on the entry point with the same port.
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "gatewayClassName": GATEWAY_CLASS,
            "listeners": [{"name": LISTENER, "port": port, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}],
        },
    }  # fmt: skip
    return "\n---\n".join(json.dumps(body) for body in (gateway_class, gateway))


def _programmed(kubectl: Callable, name: str, namespace: str) -> bool:
    found = kubectl("get", "gateway", name, "-n", namespace, "-o", "json")
    if found.returncode != 0:
        return False
    conditions = json.loads(found.stdout).get("status", {}).get("conditions", [])
    return any(c["type"] == "Programmed" and c["status"] == "True" for c in conditions)


def route_accepted(route: dict) -> bool:
    """Every parent the HTTPRoute names has accepted it and resolved its backends, as the Gateway says."""
    parents = route.get("status", {}).get("parents", [])
    wanted = {"Accepted", "ResolvedRefs"}
    return bool(parents) and all(
        wanted <= {c["type"] for c in p.get("conditions", []) if c["status"] == "True"} for p in parents
    )
