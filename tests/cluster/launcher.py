"""A real Kubernetes cluster on this machine: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler on loopback, kwok (fake nodes whose pods become Running and Ready without containers,
tainted so that only pods that tolerate it land there) and, when run as root, a real node whose pods run
for real (containerd, kubelet, kube-proxy; see node.py).

    with LocalCluster() as cluster:
        subprocess.run([cluster.bin / "kubectl", "--kubeconfig", cluster.kubeconfig, "get", "nodes"])

``python -m tests.cluster.launcher`` (``make cluster``) builds the binaries if needed, starts a cluster in
the foreground, prints its kubeconfig and runs until interrupted.

Every process runs in its own session and process group, logs to ``<workdir>/logs/<component>.log`` and
is stopped (SIGTERM, then SIGKILL) by ``stop()``, at interpreter exit, on SIGTERM/SIGHUP, and — through
PR_SET_PDEATHSIG — even when the Python process is killed outright.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable


from tests.cluster import node as real_node
from tests.cluster.certs import ClusterPKI
from tests.cluster.component import Component
from tests.cluster.kubeconfig import kubeconfig, write_client_kubeconfig, write_yaml
from tests.support.processes import free_port

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
KWOK_STAGES = HERE / "kwok-stages.yaml"

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# Only pods that tolerate it land on a kwok node: everything else runs for real on the real node.
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
KWOK_TOLERATION = {"key": KWOK_TAINT["key"], "operator": "Equal", "value": KWOK_TAINT["value"], "effect": "NoSchedule"}
NODE_CAPACITY = {"cpu": "32", "memory": "256Gi", "pods": "110"}

# Components in start order; stop() goes in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class ClusterStartError(RuntimeError):
    """The cluster did not come up; the message names the component and ends with its log."""


def cache_dir() -> Path:
    return Path(os.environ.get("MODELPILOT_CACHE") or "~/.cache/modelpilot").expanduser()


def default_bin_dir() -> Path:
    return cache_dir() / "bin"


def missing_binaries(bin_dir: Path) -> list[str]:
    wanted = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl")
    return [name for name in wanted if not os.access(bin_dir / name, os.X_OK)]


def pinned_version(component: str, module: str) -> str:
    """The version of ``module`` pinned in ``tests/cluster/go/<component>/go.mod``."""
    for line in (HERE / "go" / component / "go.mod").read_text().splitlines():
        parts = line.replace("require", " ").split()
        if len(parts) >= 2 and parts[0] == module:
            return parts[1]
    raise LookupError(f"{module} is not pinned in tests/cluster/go/{component}/go.mod")


def build_binaries() -> Path:
    """Runs build.sh (a no-op when the cache is warm), streaming its progress; returns the bin dir."""
    proc = subprocess.run(
        [str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=None, text=True, check=False
    )
    lines = proc.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(line, file=sys.stderr)
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{BUILD_SCRIPT} failed with exit code {proc.returncode}")
    return Path(lines[-1])


# Every started cluster until it is stopped: stopped at exit and on SIGTERM / SIGHUP.
_LIVE: set["LocalCluster"] = set()
_LIVE_LOCK = threading.Lock()
_HANDLERS_INSTALLED = False


def _stop_all_live() -> None:
    with _LIVE_LOCK:
        clusters = list(_LIVE)
    for cluster in clusters:
        cluster.stop()


def _on_fatal_signal(signum: int, frame: Any) -> None:
    _stop_all_live()
    previous = _PREVIOUS_HANDLERS.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


_PREVIOUS_HANDLERS: dict[int, Any] = {}


def _install_cleanup_handlers() -> None:
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(_stop_all_live)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(sig)
        if previous is signal.SIG_IGN:
            continue
        _PREVIOUS_HANDLERS[sig] = previous
        signal.signal(sig, _on_fatal_signal)


# --------------------------------------------------------------------------------------------------
# Kubeconfigs


def mint_service_account_kubeconfig(
    admin_kubeconfig: str | os.PathLike[str],
    namespace: str,
    name: str,
    path: str | os.PathLike[str],
    expiration_seconds: int = 3600,
) -> Path:
    """Requests a token for ServiceAccount ``namespace/name`` through the TokenRequest API (as the
    admin of ``admin_kubeconfig``, any cluster) and writes a kubeconfig that authenticates with it."""
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(admin_kubeconfig))
    try:
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
        )
        response = client.CoreV1Api(api_client).create_namespaced_service_account_token(name, namespace, request)
        token = response.status.token
        conf = api_client.configuration
        cluster: dict[str, Any] = {"server": conf.host}
        if not conf.verify_ssl:
            cluster["insecure-skip-tls-verify"] = True
        elif conf.ssl_ca_cert:
            cluster["certificate-authority-data"] = _b64(Path(conf.ssl_ca_cert).read_bytes())
        if conf.tls_server_name:
            cluster["tls-server-name"] = conf.tls_server_name
    finally:
        api_client.close()
    ctx = f"{namespace}-{name}"
    return write_yaml(
        Path(path),
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": ctx, "cluster": cluster}],
            "users": [{"name": ctx, "user": {"token": token}}],
            "contexts": [{"name": ctx, "context": {"cluster": ctx, "user": ctx, "namespace": namespace}}],
            "current-context": ctx,
        },
    )


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


# --------------------------------------------------------------------------------------------------
# The cluster

_WORKDIR_PREFIX = "modelpilot-cluster-"


def _remove_abandoned_workdirs() -> None:
    """Removes temporary cluster dirs whose owner was killed outright (its processes died with it)."""
    for d in Path(tempfile.gettempdir()).glob(_WORKDIR_PREFIX + "*"):
        try:
            pid = int((d / "owner.pid").read_text())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (OSError, ValueError):
            continue


class LocalCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok, on loopback."""

    def __init__(
        self,
        bin_dir: str | os.PathLike[str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        nodes: int = 3,
        start_timeout: float = 120.0,
        stop_grace: float = 10.0,
        keep_workdir: bool = False,
        real: bool | None = None,
    ) -> None:
        """`real`: also run a real node (None: when this machine can, see node.unavailable_reason)."""
        self.bin = Path(bin_dir) if bin_dir else default_bin_dir()
        self._own_workdir = workdir is None
        if self._own_workdir:
            _remove_abandoned_workdirs()
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=_WORKDIR_PREFIX))
        (self.workdir / "owner.pid").write_text(str(os.getpid()))
        self.node_count = nodes
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.keep_workdir = keep_workdir
        self.components: dict[str, Component] = {}
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.server = ""
        self.startup_seconds: float | None = None
        self.timings: dict[str, float] = {}  # seconds from start until each readiness check passed
        self._t0 = 0.0
        self._ssl: ssl.SSLContext | None = None
        self._stopped = True
        self._sa_counter = 0
        self.real_node_reason = real_node.unavailable_reason() if real is not False else "not asked for"
        if real and self.real_node_reason:
            raise ClusterStartError(self.real_node_reason)
        self._slot = real_node.SlotLock()
        # Addresses of slot 0 unless a real node claims a slot: without routes nothing can collide.
        self.network = real_node.NodeNetwork(0, routed=False)
        self.node: real_node.RealNode | None = None

    @property
    def has_real_node(self) -> bool:
        return self.real_node_reason is None

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> "LocalCluster":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "LocalCluster":
        missing = missing_binaries(self.bin)
        if missing:
            raise ClusterStartError(
                f"missing binaries in {self.bin}: {', '.join(missing)}; run tests/cluster/build.sh first"
            )
        _install_cleanup_handlers()
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._stopped = False
        started = time.monotonic()
        if self.has_real_node:
            try:
                self.network = self._slot.acquire()
            except real_node.NodeStartError as e:
                self.stop()
                raise ClusterStartError(str(e)) from e
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(deadline=time.monotonic() + self.start_timeout)
                break
            except ClusterStartError as e:
                self._stop_processes()
                if attempt < attempts and "address already in use" in str(e):
                    continue  # a free port was taken between probing and binding: new ports, again
                self.keep_workdir = True  # keep the logs of a failed start
                self.stop()
                raise
            except BaseException:
                self.stop()
                raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stop_processes()
        self._slot.release()
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop_processes(self) -> None:
        # Reverse start order: kube-proxy, kubelet and containerd, then the node's namespaces (every pod
        # dies with them), then the control plane.
        for name in reversed(list(self.components)):
            self.components[name].stop(self.stop_grace)
        if self.node is not None:
            try:
                self.node.clean_host()
            except real_node.NodeStartError as e:
                print(f"warning: {e}", file=sys.stderr)
            self.node = None

    # -- public helpers ----------------------------------------------------------------------------

    def kubeconfig_for_service_account(self, namespace: str, name: str, expiration_seconds: int = 3600) -> Path:
        self._sa_counter += 1
        path = self.workdir / "serviceaccounts" / f"{namespace}.{name}.{self._sa_counter}.kubeconfig"
        path.parent.mkdir(exist_ok=True)
        return mint_service_account_kubeconfig(self.kubeconfig, namespace, name, path, expiration_seconds)

    def log(self, component: str) -> Path:
        return self.components[component].log_path

    # -- start -------------------------------------------------------------------------------------

    def _start_once(self, deadline: float) -> None:
        self.components = {}
        self.timings = {}
        self._t0 = time.monotonic()
        run = self.workdir / f"run-{time.monotonic_ns()}"  # fresh dirs on each attempt
        logs = self.workdir / "logs"
        for d in (run, logs):
            d.mkdir(parents=True, exist_ok=True)
        pki = ClusterPKI(run / "pki")
        ports = {name: free_port() for name in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler")}
        self.server = f"https://127.0.0.1:{ports['apiserver']}"

        serving = pki.serving(
            "apiserver",
            ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local"],
            ["127.0.0.1", self.network.kubernetes_service_ip, self.network.host_ip],
        )
        admin = pki.client("admin", "modelpilot-admin", ("system:masters",))
        front_proxy = pki.client("front-proxy", "front-proxy-client")
        kubeconfigs = {
            "kube-controller-manager": pki.client("kcm", "system:kube-controller-manager"),
            "kube-scheduler": pki.client("scheduler", "system:kube-scheduler"),
            # kwok plays the kubelet of every fake node (status, leases, pod status).
            "kwok": pki.client("kwok", "kwok-controller", ("system:masters",)),
        }
        kc_paths = {
            name: write_client_kubeconfig(run / f"{name}.kubeconfig", self.server, pki.ca_cert, kp.cert, kp.key)
            for name, kp in kubeconfigs.items()
        }
        admin_config = kubeconfig(self.server, pki.ca_cert, {})
        admin_config["clusters"][0]["cluster"] = {
            "server": self.server,
            "certificate-authority-data": _b64(pki.ca_cert.read_bytes()),
        }
        admin_config["users"][0]["user"] = {
            "client-certificate-data": _b64(admin.cert.read_bytes()),
            "client-key-data": _b64(admin.key.read_bytes()),
        }
        write_yaml(self.kubeconfig, admin_config)
        self._ssl = ssl.create_default_context(cafile=str(pki.ca_cert))
        self._ssl.load_cert_chain(str(admin.cert), str(admin.key))

        b = self.bin
        env = dict(os.environ, HOME=str(run))  # kwok reads ~/.kwok/kwok.yaml; keep the user's out
        argvs = {
            "etcd": [
                str(b / "etcd"),
                "--name=default",
                f"--data-dir={run / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--advertise-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--listen-peer-urls=http://127.0.0.1:{ports['etcd-peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd-peer']}",
                f"--initial-cluster=default=http://127.0.0.1:{ports['etcd-peer']}",
                "--unsafe-no-fsync",  # throwaway data: no fsync keeps writes fast
                "--log-level=warn",
            ],
            "kube-apiserver": [
                str(b / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--cert-dir={run / 'apiserver-certs'}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=Node,RBAC",
                # Added to the defaults (which include PodSecurity, ServiceAccount, NamespaceLifecycle...).
                "--enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement",
                # Let privileged pods past validation so that PodSecurity is what judges them.
                "--allow-privileged=true",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={self.network.service_cidr}",
                # The `kubernetes` Service keeps its ClusterIP, but Endpoints may not point at loopback.
                "--endpoint-reconciler-type=none",
                # Aggregation layer (extension apiservers authenticate the apiserver by this client cert).
                f"--requestheader-client-ca-file={pki.ca_cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={front_proxy.cert}",
                f"--proxy-client-key-file={front_proxy.key}",
                "--profiling=false",
            ],
            "kube-controller-manager": [
                str(b / "kube-controller-manager"),
                *self._kube_client_flags(kc_paths["kube-controller-manager"]),
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['kcm']}",
                f"--cert-dir={run / 'kcm-certs'}",
                "--leader-elect=false",
                "--controllers=*",
                "--use-service-account-credentials=true",
                # Starting ~40 controllers, each with its own ServiceAccount token, hits the default
                # client rate limit (20 qps) and costs seconds; loopback takes more.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={self.network.service_cidr}",
                "--profiling=false",
            ],
            "kube-scheduler": [
                str(b / "kube-scheduler"),
                *self._kube_client_flags(kc_paths["kube-scheduler"]),
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                f"--cert-dir={run / 'scheduler-certs'}",
                "--leader-elect=false",
                "--profiling=false",
            ],
            "kwok": [
                str(b / "kwok"),
                f"--kubeconfig={kc_paths['kwok']}",
                f"--config={KWOK_STAGES}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={'='.join(KWOK_NODE_ANNOTATION)}",
                f"--cidr={self.network.kwok_cidr}",
                "--node-lease-duration-seconds=40",
            ],
        }
        if self.has_real_node:
            self.node = self._real_node(logs, pki, ports["apiserver"])
            argvs["kube-apiserver"] = self._with_real_node(argvs["kube-apiserver"], pki, run)
        for name in COMPONENTS:
            self.components[name] = Component(name, argvs[name], logs / f"{name}.log", env)

        self._launch("etcd", run)
        self._wait("etcd", deadline, lambda: self._http_ok(f"http://127.0.0.1:{ports['etcd']}/health"))
        self._launch("kube-apiserver", run)
        self._wait("kube-apiserver", deadline, lambda: self._api_ok("/readyz"))
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            self._launch(name, run)
        self._create_nodes()
        if self.node is not None:
            self._start_real_node(deadline)
        self._wait("kube-controller-manager", deadline,
                   lambda: self._http_ok(f"https://127.0.0.1:{ports['kcm']}/healthz", verify=False))
        self._wait("kube-scheduler", deadline,
                   lambda: self._http_ok(f"https://127.0.0.1:{ports['scheduler']}/healthz", verify=False))
        self._wait("kwok", deadline, self._nodes_ready, what="all fake nodes Ready")
        self._wait("kube-controller-manager", deadline,
                   lambda: self._api_ok("/api/v1/namespaces/default/serviceaccounts/default"),
                   what="ServiceAccount default/default")

    # -- the real node -----------------------------------------------------------------------------

    def _real_node(self, logs: Path, pki: ClusterPKI, apiserver_port: int) -> real_node.RealNode:
        from tests.cluster.images import pause_image

        pause = pause_image(self.bin / "pause")
        return real_node.RealNode(self.bin, logs, self.network, pki, apiserver_port, pause.path, pause.name)

    def _with_real_node(self, argv: list[str], pki: ClusterPKI, run: Path) -> list[str]:
        """The apiserver of a cluster with a real node: pods reach it through the `kubernetes` Service, whose
        endpoint is the host's veth address, and it reaches kubelets for logs and exec."""
        kubelet_client = pki.client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",))
        dropped = ("--advertise-address=", "--endpoint-reconciler-type=")
        return [a for a in argv if not a.startswith(dropped)] + [
            f"--advertise-address={self.network.host_ip}",
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            f"--kubelet-certificate-authority={pki.ca_cert}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _start_real_node(self, deadline: float) -> None:
        node = self.node
        assert node is not None
        try:
            self.components["node-namespaces"] = node.start_namespaces()
        except real_node.NodeStartError as e:
            raise ClusterStartError(str(e)) from e
        parts = node.components()
        self.components["containerd"] = parts["containerd"]
        self._launch("containerd", node.dir)
        self._wait("containerd", deadline, node.containerd_ready)
        node.load_image(node.pause_archive)
        for name in ("kubelet", "kube-proxy"):
            self.components[name] = parts[name]
            self._launch(name, node.dir)
        self._wait("kubelet", deadline, lambda: self._node_ready(real_node.NODE_NAME), what="real node Ready")
        self._wait("kube-proxy", deadline,
                   lambda: self._http_ok(f"http://{self.network.node_ip}:10256/healthz"), what="kube-proxy healthy")

    def _node_ready(self, name: str) -> bool:
        status, body = self.request("GET", f"/api/v1/nodes/{name}", timeout=3)
        return status == 200 and _is_ready(body)

    @staticmethod
    def _kube_client_flags(kubeconfig: Path) -> list[str]:
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
        ]

    def _launch(self, name: str, cwd: Path) -> None:
        self.components[name].start(cwd)

    def _wait(self, name: str, deadline: float, ready: Callable[[], bool], what: str | None = None) -> None:
        what = what or f"{name} ready"
        try:
            self._wait_until(name, deadline, ready, what)
        finally:
            self.timings[what] = round(time.monotonic() - self._t0, 2)

    def _wait_until(self, name: str, deadline: float, ready: Callable[[], bool], what: str) -> None:
        delay = 0.05
        while True:
            for component in self.components.values():
                if component.proc is not None and not component.running:
                    raise ClusterStartError(
                        f"{component.name} exited with code {component.proc.returncode} while waiting for {what}; "
                        f"last lines of {component.log_path}:\n{component.tail()}"
                    )
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - not ready yet
                pass
            if time.monotonic() > deadline:
                component = self.components[name]
                raise ClusterStartError(
                    f"timed out after {self.start_timeout:g}s waiting for {what}; "
                    f"last lines of {component.log_path}:\n{component.tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    # -- tiny REST client (stdlib only, so start-up does not import the kubernetes client) ----------

    def _http_ok(self, url: str, verify: bool = True) -> bool:
        ctx = None
        if url.startswith("https"):
            ctx = ssl.create_default_context()
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
        """An admin request to the apiserver: (status code, decoded JSON body or text)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def _api_ok(self, path: str) -> bool:
        try:
            return self.request("GET", path, timeout=3)[0] == 200
        except (urllib.error.URLError, OSError):
            return False

    def _create_nodes(self) -> None:
        zones = "abc"
        for i in range(self.node_count):
            name = f"kwok-node-{i}"
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1],
                                    "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {
                        "type": "kwok",
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "topology.kubernetes.io/zone": f"zone-{zones[i % len(zones)]}",
                    },
                },
                "spec": {"taints": [dict(KWOK_TAINT)]},
                "status": {
                    "capacity": dict(NODE_CAPACITY),
                    "allocatable": dict(NODE_CAPACITY),
                    "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake"},
                },
            }
            status, body = self.request("POST", "/api/v1/nodes", node)
            if status not in (201, 409):
                raise ClusterStartError(f"creating node {name} failed ({status}): {body}")

    def _nodes_ready(self) -> bool:
        status, body = self.request("GET", "/api/v1/nodes", timeout=3)
        if status != 200:
            return False
        return sum(1 for n in body.get("items", []) if _is_ready(n)) >= self.node_count + int(self.node is not None)


def _is_ready(node: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


# --------------------------------------------------------------------------------------------------
# make cluster


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.cluster.launcher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-build", action="store_true", help="do not run build.sh; use the cached binaries")
    parser.add_argument("--nodes", type=int, default=3, help="number of kwok nodes (default 3)")
    parser.add_argument("--workdir", help="directory for state and logs (default: a new temporary directory)")
    args = parser.parse_args(argv)

    # Ctrl-C stops the cluster even when started from a shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    bin_dir = default_bin_dir() if args.no_build else build_binaries()
    workdir = Path(args.workdir) if args.workdir else None
    if workdir:
        workdir.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(bin_dir=bin_dir, workdir=workdir, nodes=args.nodes, keep_workdir=False)
    print("starting local cluster ...", file=sys.stderr, flush=True)
    try:
        cluster.start()
    except ClusterStartError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"cluster ready in {cluster.startup_seconds:.1f}s: {cluster.server}", file=sys.stderr)
    print(f"logs: {cluster.workdir / 'logs'}", file=sys.stderr)
    if cluster.node is not None:
        net = cluster.network
        print(f"real node in slot {net.slot}: pods {net.pod_subnet}, services {net.service_cidr}, "
              f"this machine's loopback at {net.host_ip} for pods", file=sys.stderr)
    else:
        print(f"no real node: {cluster.real_node_reason}", file=sys.stderr)
    print(f"kubeconfig: {cluster.kubeconfig}")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    print(f"export PATH={cluster.bin}:$PATH", flush=True)
    print("press Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        while True:
            for c in cluster.components.values():
                if not c.running:
                    print(f"error: {c.name} exited; last lines of {c.log_path}:\n{c.tail()}", file=sys.stderr)
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping ...", file=sys.stderr)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
