"""`helm test`: the ModelDeployment CRD is established and served, the operator's Deployment is rolled out,
and each of its pods answers the health endpoint its probes use. Read-only, and every wait is bounded."""

from __future__ import annotations

import os
import sys
import time
import urllib.request

REQUEST_TIMEOUT = 10


def probe_target(container) -> tuple[str, int] | None:
    """(path, port) of the container's HTTP startup or liveness probe, a named port resolved."""
    for probe in (container.startup_probe, container.liveness_probe):
        if probe is not None and probe.http_get is not None:
            port = probe.http_get.port
            if isinstance(port, str) and not port.isdigit():
                port = next((p.container_port for p in container.ports or [] if p.name == port), None)
                if port is None:
                    return None
            return probe.http_get.path or "/", int(port)
    return None


def healthz(ip: str, port: int, path: str) -> str | None:
    """None when the endpoint answers 200, or what it did instead."""
    host = f"[{ip}]" if ":" in ip else ip
    # Straight to the pod: a proxy from the environment could not reach the pod network.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{host}:{port}{path}", timeout=REQUEST_TIMEOUT) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except OSError as exc:
        return f"{host}:{port}{path}: {exc}"


def main() -> None:
    from kubernetes import client, config

    namespace, deployment, crd_name = (os.environ[k] for k in ("RELEASE_NAMESPACE", "OPERATOR_DEPLOYMENT", "CRD_NAME"))
    deadline = time.monotonic() + float(os.environ.get("TIMEOUT_SECONDS", "120"))
    config.load_incluster_config()
    apps, core = client.AppsV1Api(), client.CoreV1Api()

    def wait(what: str, check) -> None:
        """Retries check() (None when satisfied, else why not) until the deadline: the operator may still be starting."""
        while True:
            try:
                why = check()
            except client.ApiException as exc:
                why = f"HTTP {exc.status} {exc.reason}"
                if exc.status == 403:
                    why += " (with rbac.create=false, grant the test's ServiceAccount the rights docs/install.md lists)"
            if why is None:
                print(f"ok: {what}", flush=True)
                return
            if time.monotonic() > deadline:
                sys.exit(f"FAILED: {what}: {why}")
            time.sleep(2)

    served: list[str] = []

    def crd_established():
        crd = client.ApiextensionsV1Api().read_custom_resource_definition(crd_name, _request_timeout=REQUEST_TIMEOUT)
        conditions = {c.type: c.status for c in crd.status.conditions or []} if crd.status else {}
        if conditions.get("Established") != "True" or conditions.get("NamesAccepted") != "True":
            return f"conditions {conditions}"
        served[:] = [crd.spec.group, crd.spec.names.plural, *(v.name for v in crd.spec.versions if v.served)]
        return None

    def crd_served():
        group, plural, *versions = served
        for version in versions:
            resources = client.CustomObjectsApi().get_api_resources(group, version, _request_timeout=REQUEST_TIMEOUT)
            if plural not in {r.name for r in resources.resources}:
                return f"{plural} missing from discovery of {group}/{version}"
        return None if versions else "no version is served"

    selector: dict[str, str] = {}

    def rolled_out():
        dep = apps.read_namespaced_deployment(deployment, namespace, _request_timeout=REQUEST_TIMEOUT)
        status, wanted = dep.status, dep.spec.replicas
        if (status.observed_generation or 0) < dep.metadata.generation:
            return "the Deployment controller has not seen the latest spec yet"
        if (status.updated_replicas or 0) < wanted or (status.available_replicas or 0) < wanted:
            return f"{status.available_replicas or 0} of {wanted} replicas available, {status.updated_replicas or 0} updated"
        selector.update(dep.spec.selector.match_labels or {})
        return None

    def pods_healthy():
        labels = ",".join(f"{k}={v}" for k, v in selector.items())
        pods = core.list_namespaced_pod(namespace, label_selector=labels, _request_timeout=REQUEST_TIMEOUT).items
        # The Deployment's own pods (their ReplicaSet owns them), running and not on their way out.
        pods = [
            p for p in pods
            if p.status.phase == "Running" and p.status.pod_ip and not p.metadata.deletion_timestamp
            and any(o.kind == "ReplicaSet" and o.controller for o in p.metadata.owner_references or [])
        ]  # fmt: skip
        if not pods:
            return "no running operator pod"
        for pod in pods:
            targets = [t for t in map(probe_target, pod.spec.containers) if t is not None]
            if not targets:
                return f"pod {pod.metadata.name} has no HTTP startup or liveness probe to follow"
            for path, port in targets:
                why = healthz(pod.status.pod_ip, port, path)
                if why is not None:
                    return f"pod {pod.metadata.name}: {why}"
        return None

    wait(f"CustomResourceDefinition {crd_name} is established", crd_established)
    wait(f"CustomResourceDefinition {crd_name} is served", crd_served)
    wait(f"Deployment {namespace}/{deployment} is rolled out and available", rolled_out)
    wait("the operator's pods answer their health endpoint", pods_healthy)


if __name__ == "__main__":
    main()
