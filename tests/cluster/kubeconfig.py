"""Kubeconfig files of the local cluster's components: one server, the cluster CA, one client identity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONTEXT = "modelpilot-local"


def kubeconfig(server: str, ca_file: Path, user: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": CONTEXT, "user": user}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT}}],
        "current-context": CONTEXT,
    }


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    """Written readable by its owner only: kubeconfigs name keys."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)
    return path


def write_client_kubeconfig(path: Path, server: str, ca_file: Path, cert: Path, key: Path) -> Path:
    return write_yaml(path, kubeconfig(server, ca_file, {"client-certificate": str(cert), "client-key": str(key)}))
