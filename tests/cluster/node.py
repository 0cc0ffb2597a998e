"""A real Kubernetes node beside the kwok ones: containerd, kubelet and kube-proxy with CNI, running real
pods on this machine.

The node lives in namespaces of its own, held open by one process (the pause binary as PID 1 of a new
PID namespace, in new network and mount namespaces). containerd, the kubelet and kube-proxy join them
with nsenter. Killing that one process ends every pod, shim and mount of the node at once (the kernel
kills a PID namespace with its first process and drops a mount namespace with its last), and the network
namespace takes its bridge and veth with it; so even `kill -9` of the test run leaves only what lives
outside the namespaces: the host's NAT rules and empty cgroup directories, which the next start of the
same slot removes.

Addresses come from a slot (0-15), claimed with a lock file, so that two clusters on one machine (a
`make dev` beside a `make test`) never share routes, NAT rules or cgroups:

    pods of the real node    10.(128+slot).0.0/24   on the bridge `cni0`, gateway .1
    pods of kwok nodes       10.(128+slot).128.0/17 (never routed anywhere: kwok pods serve nothing)
    services                 10.96.(16*slot).0/20   (a cluster without a real node: 10.96.0.0/16)
    host <-> node veth       10.(128+slot).255.1 (host) / .2 (node IP)

The host routes the slot's pod and service ranges into the node's namespace, which has no default route:
all traffic stays on this machine. Pods reach servers that listen on the host's loopback (MLflow,
Prometheus, the apiserver) at the host's veth address: a NAT rule on the host maps it to 127.0.0.1.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

from tests.cluster.certs import ClusterPKI
from tests.cluster.component import Component
from tests.cluster.kubeconfig import write_client_kubeconfig

NODE_NAME = "real-node"
NODE_LABELS = {"type": "real"}
SLOTS = 16
LOCK_DIR = Path("/run/modelpilot")
# Per-slot state (configs, containerd's root, the kubelet's root): under a short path, because sockets
# inside it must fit in 108 bytes, and on disk, because models are downloaded into pods' emptyDirs.
STATE_DIR = Path("/var/lib/modelpilot")
CGROUP_MOUNTS = Path("/sys/fs/cgroup")
CNI_BIN_DIR = Path("/usr/lib/cni")
# Host paths the node's processes write to that have no flag: each gets a tmpfs inside the node's own
# mount namespace, so nothing lands on the host and nothing is left when the node stops.
PRIVATE_TMPFS = ("/run/netns", "/run/containerd", "/var/log/pods", "/var/log/containers", "/var/lib/cni")
# Debian packages the node runs; `make system-deps` installs them.
PACKAGES = {"containerd": "containerd", "runc": "runc", "iptables": "iptables", "nsenter": "util-linux",
            "ip": "iproute2"}


class NodeStartError(RuntimeError):
    """The real node did not come up; the message says which step failed and why."""


def unavailable_reason() -> str | None:
    """Why this machine cannot run a real node, or None when it can."""
    if os.geteuid() != 0:
        return "a real node needs root (network namespaces, cgroups, mounts); only kwok nodes run"
    missing = [pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None]
    if missing or not (CNI_BIN_DIR / "bridge").exists():
        missing += [] if (CNI_BIN_DIR / "bridge").exists() else ["containernetworking-plugins"]
        return f"a real node needs Debian packages {', '.join(sorted(set(missing)))} (make system-deps)"
    return None


@dataclass(frozen=True)
class NodeNetwork:
    """The addresses of one slot (see the module docstring). Unrouted (no real node) the Service range
    is a /16: nothing routes it, so it cannot collide, and a /20 runs out at about 1,360 ModelDeployments
    of three Services each."""

    slot: int
    routed: bool = True

    def _ip(self, third: int, fourth: int) -> str:
        return f"10.{128 + self.slot}.{third}.{fourth}"

    @property
    def pod_subnet(self) -> str:
        return self._ip(0, 0) + "/24"

    @property
    def pod_gateway(self) -> str:
        return self._ip(0, 1)

    @property
    def pods_route(self) -> str:
        """Every pod address of the slot, real and kwok."""
        return self._ip(0, 0) + "/16"

    @property
    def kwok_cidr(self) -> str:
        return self._ip(128, 0) + "/17"

    @property
    def service_cidr(self) -> str:
        return f"10.96.{16 * self.slot}.0/20" if self.routed else "10.96.0.0/16"

    @property
    def kubernetes_service_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))

    @property
    def host_ip(self) -> str:
        return self._ip(255, 1)

    @property
    def node_ip(self) -> str:
        return self._ip(255, 2)

    @property
    def host_link(self) -> str:
        return f"mpnode{self.slot}"

    @property
    def nat_comment(self) -> str:
        return f"modelpilot-node-{self.slot}"

    @property
    def state_dir(self) -> Path:
        return STATE_DIR / f"node-{self.slot}"

    @property
    def cgroup_root(self) -> str:
        return f"/modelpilot-node-{self.slot}"

    def nat_rules(self) -> list[tuple[str, list[str]]]:
        """(chain, rule) of the host NAT rules that map the host's veth address to its loopback."""
        tag = ["-m", "comment", "--comment", self.nat_comment]
        to_loopback = ["-d", f"{self.host_ip}/32", "-p", "tcp", *tag, "-j", "DNAT", "--to-destination", "127.0.0.1"]
        return [("PREROUTING", ["-i", self.host_link, *to_loopback]), ("OUTPUT", to_loopback)]


class SlotLock:
    """An exclusive claim on one slot for the life of this process (the kernel drops it if we die)."""

    def __init__(self) -> None:
        self.network: NodeNetwork | None = None
        self._file: IO[str] | None = None

    def acquire(self) -> NodeNetwork:
        """Claims the first free slot. Every other free slot is swept on the way: whatever a killed run
        left there (NAT rules, empty cgroups) belongs to nobody."""
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        for slot in range(SLOTS):
            handle = open(LOCK_DIR / f"node-{slot}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            remove_leftovers(NodeNetwork(slot))
            if self._file is None:
                self._file, self.network = handle, NodeNetwork(slot)
            else:
                handle.close()
        if self.network is None:
            raise NodeStartError(f"all {SLOTS} node slots are in use by other local clusters")
        return self.network

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def run(argv: list[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise NodeStartError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


# --------------------------------------------------------------------------------------------------
# What a stale run of the same slot can leave behind, and its removal


def remove_nat_rules(network: NodeNetwork) -> None:
    """Deletes every host NAT rule tagged with the slot's comment (also those of a killed run)."""
    listing = run(["iptables", "-t", "nat", "-S"], check=False).stdout
    for line in listing.splitlines():
        if f"--comment {network.nat_comment} " not in line + " " or not line.startswith("-A "):
            continue
        run(["iptables", "-t", "nat", "-D", *line.split()[1:]], check=False)


def remove_leftovers(network: NodeNetwork) -> None:
    """Removes what a node of this slot leaves outside its namespaces; raises if its cgroups stay busy."""
    remove_nat_rules(network)
    run(["ip", "link", "delete", network.host_link], check=False)
    shutil.rmtree(network.state_dir, ignore_errors=True)
    left = remove_cgroups(network)
    if left:
        raise NodeStartError(f"cgroups of an earlier node in slot {network.slot} cannot be removed: {left[:3]}")


def cgroup_dirs(network: NodeNetwork) -> list[Path]:
    """The slot's cgroup root in every mounted hierarchy."""
    return [h / network.cgroup_root.lstrip("/") for h in sorted(CGROUP_MOUNTS.iterdir()) if h.is_dir()]


def remove_cgroups(network: NodeNetwork, timeout: float = 20) -> list[Path]:
    """Kills whatever still runs in the slot's cgroups and removes them, deepest first; returns what
    could not be removed in time."""
    deadline = time.monotonic() + timeout
    while True:
        left: list[Path] = []
        for root in cgroup_dirs(network):
            if not root.exists():
                continue
            for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [root]:
                _kill_members(path)
                try:
                    path.rmdir()
                except OSError:
                    left.append(path)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _kill_members(cgroup: Path) -> None:
    try:
        pids = (cgroup / "cgroup.procs").read_text().split()
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass


def create_cgroups(network: NodeNetwork) -> None:
    """The kubelet wants its cgroup root to exist; a v1 cpuset child starts empty, so copy the parent's."""
    for root in cgroup_dirs(network):
        root.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (root / knob).exists() and not (root / knob).read_text().strip():
                (root / knob).write_text((root.parent / knob).read_text())


# --------------------------------------------------------------------------------------------------
# The node


class RealNode:
    """Builds the node's namespaces and network, then its components (started by the launcher)."""

    def __init__(self, bin_dir: Path, log_dir: Path, network: NodeNetwork, pki: ClusterPKI,
                 apiserver_port: int, pause_archive: Path, pause_image: str) -> None:
        self.bin = bin_dir
        self.dir = network.state_dir
        self.log_dir = log_dir
        self.network = network
        self.pki = pki
        self.server = f"https://{network.host_ip}:{apiserver_port}"
        self.pause_archive = pause_archive
        self.pause_image = pause_image
        self.holder: Component | None = None
        self.holder_pid = 0  # PID 1 of the node's PID namespace, as the host sees it
        self.containerd_socket = self.dir / "containerd.sock"

    # -- namespaces and network ------------------------------------------------------------------

    def start_namespaces(self) -> Component:
        """Starts the namespace holder and wires its network; returns it to be stopped last."""
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc",
                "--propagation", "private", str(self.bin / "pause")]
        self.holder = Component("node-namespaces", argv, self.log_dir / "node-namespaces.log")
        self.holder.start(self.dir)
        self.holder_pid = self._child_of(self.holder)
        self._mount_private_dirs()
        self._wire_network()
        create_cgroups(self.network)
        self._write_cni_config()
        return self.holder

    def _child_of(self, holder: Component, timeout: float = 5) -> int:
        assert holder.proc is not None
        deadline = time.monotonic() + timeout
        path = Path(f"/proc/{holder.proc.pid}/task/{holder.proc.pid}/children")
        while time.monotonic() < deadline:
            children = path.read_text().split() if path.exists() else []
            if children:
                return int(children[0])
            if not holder.running:
                break
            time.sleep(0.02)
        raise NodeStartError(f"the node's namespaces did not come up; last lines of {holder.log_path}:\n{holder.tail()}")

    def enter(self, *namespaces: str) -> list[str]:
        """The nsenter prefix that runs a command inside the node's namespaces."""
        return ["nsenter", f"--target={self.holder_pid}", *(f"--{ns}" for ns in namespaces), "--"]

    def in_node(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run([*self.enter("net", "mount"), *argv], timeout=timeout)

    def _mount_private_dirs(self) -> None:
        for path in PRIVATE_TMPFS:
            Path(path).mkdir(parents=True, exist_ok=True)  # the mount point (an empty directory) on the host
            self.in_node("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", path)

    def _wire_network(self) -> None:
        net, link = self.network, self.network.host_link
        run(["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", str(self.holder_pid)])
        run(["ip", "addr", "add", f"{net.host_ip}/30", "dev", link])
        run(["ip", "link", "set", link, "up"])
        for cidr in (net.pods_route, net.service_cidr):
            run(["ip", "route", "replace", cidr, "via", net.node_ip, "dev", link])
        # Pods reach the host's loopback servers at the host's veth address.
        self._sysctl(f"net/ipv4/conf/{link}/route_localnet", "1")
        for chain, rule in net.nat_rules():
            run(["iptables", "-t", "nat", "-A", chain, *rule])
        # Inside: the veth, a bridge for the pods whose gateway the CNI bridge plugin reuses, no default route.
        for argv in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", f"{net.node_ip}/30", "dev", "eth0"],
            ["ip", "link", "set", "eth0", "up"],
            ["ip", "link", "add", "cni0", "type", "bridge"],
            ["ip", "addr", "add", f"{net.pod_gateway}/24", "dev", "cni0"],
            ["ip", "link", "set", "cni0", "up"],
            # Pod -> Service -> pod on the same bridge must pass conntrack, or replies skip the reverse NAT.
            ["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"],
        ):
            self.in_node(*argv)

    @staticmethod
    def _sysctl(key: str, value: str) -> None:
        Path("/proc/sys", key).write_text(value)

    def _write_cni_config(self) -> None:
        conf_dir = self.dir / "cni"
        conf_dir.mkdir(exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "modelpilot",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,  # nothing leaves the machine; pods keep their own source address
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.network.pod_subnet, "gateway": self.network.pod_gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.dir / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (conf_dir / "10-modelpilot.conflist").write_text(json.dumps(conflist, indent=2))

    # -- components ------------------------------------------------------------------------------

    def components(self) -> dict[str, Component]:
        """containerd, kubelet and kube-proxy, ready to start in the node's namespaces (in this order)."""
        certs = self._certificates()
        return {
            "containerd": Component(
                "containerd", [*self.enter("net", "mount", "pid"), "containerd", "--config", str(self._containerd_config())],
                self.log_dir / "containerd.log"),
            "kubelet": Component(
                "kubelet", [*self.enter("net", "mount", "pid"), str(self.bin / "kubelet"), *self._kubelet_flags(certs)],
                self.log_dir / "kubelet.log"),
            "kube-proxy": Component(
                "kube-proxy", [*self.enter("net", "mount", "pid"), str(self.bin / "kube-proxy"),
                               f"--config={self._kube_proxy_config(certs['kube-proxy'])}"],
                self.log_dir / "kube-proxy.log"),
        }

    def _certificates(self) -> dict[str, Path]:
        """Kubeconfigs of the kubelet (as system:node:<name>, so NodeRestriction applies) and kube-proxy."""
        kubelet = self.pki.client("kubelet-client", f"system:node:{NODE_NAME}", ("system:nodes",))
        proxy = self.pki.client("kube-proxy", "system:kube-proxy")
        return {
            "kubelet": self._kubeconfig("kubelet", kubelet.cert, kubelet.key),
            "kube-proxy": self._kubeconfig("kube-proxy", proxy.cert, proxy.key),
        }

    def _kubeconfig(self, name: str, cert: Path, key: Path) -> Path:
        return write_client_kubeconfig(self.dir / f"{name}.kubeconfig", self.server, self.pki.ca_cert, cert, key)

    def _containerd_config(self) -> Path:
        root = self.dir / "containerd"
        root.mkdir(exist_ok=True)
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        text = f"""version = 2
root = "{root / 'root'}"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.containerd_socket}"

[{cri}]
  sandbox_image = "{self.pause_image}"
  # This machine refuses to lower a process's oom_score_adj; without this every sandbox fails in runc.
  restrict_oom_score_adj = true
  enable_selinux = false

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{self.dir / 'cni'}"
"""
        path = root / "config.toml"
        path.write_text(text)
        return path

    def _kubelet_flags(self, certs: dict[str, Path]) -> list[str]:
        serving = self.pki.serving("kubelet", [NODE_NAME], [self.network.node_ip])
        (self.dir / "resolv.conf").write_text("")  # pods need no DNS here, and get none of the host's
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.network.cgroup_root,
            "failCgroupV1": False,
            "failSwapOn": False,
            "resolvConf": str(self.dir / "resolv.conf"),
            "clusterDomain": "cluster.local",
            "serializeImagePulls": False,
            # Images are imported, never pulled: nothing may garbage-collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # A busy shared disk must not evict the suite's pods.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
            "maxPods": 110,
        }
        path = self.dir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return [
            f"--config={path}",
            f"--kubeconfig={certs['kubelet']}",
            f"--root-dir={self.dir / 'kubelet'}",
            f"--cert-dir={self.dir / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={self.network.node_ip}",
            f"--node-labels={','.join(f'{k}={v}' for k, v in NODE_LABELS.items())}",
        ]

    def _kube_proxy_config(self, kubeconfig: Path) -> Path:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": self.network.pods_route,
            "healthzBindAddress": f"{self.network.node_ip}:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # Zero leaves the host-wide conntrack sysctls alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "oomScoreAdj": 0,
        }
        path = self.dir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # -- images ----------------------------------------------------------------------------------

    def ctr(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(["ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", *argv], timeout=timeout)

    def containerd_ready(self) -> bool:
        return self.containerd_socket.exists() and run(
            ["ctr", f"--address={self.containerd_socket}", "version"], timeout=5, check=False).returncode == 0

    def load_image(self, archive: Path, timeout: float = 600) -> None:
        """Imports a docker-archive tarball into the node's containerd (no registry is reachable)."""
        self.ctr("images", "import", str(archive), timeout=timeout)

    # -- stop ------------------------------------------------------------------------------------

    def clean_host(self) -> None:
        """After the namespace holder is gone (and every pod with it): the host NAT rules and cgroups go too."""
        remove_leftovers(self.network)
