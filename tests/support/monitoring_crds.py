"""The Prometheus Operator's CRDs (ServiceMonitor, PodMonitor, PrometheusRule), as its own Go module
publishes them, so the chart's monitoring objects are checked by a real API server against the real
schemas. The module is pinned here by version and checksum, and fetched through the Go module proxy into
the Go module cache (a download of about 4 MB, once)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

MODULE = "github.com/prometheus-operator/prometheus-operator"
VERSION = "v0.85.0"
# go.sum's h1: hash of the module zip; `go mod download` refuses a zip that does not match it.
SUM = "h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s="
GO_MOD_SUM = "h1:nsm9EUSfVNwcdq2v3aOkCYKMqE6dDZVCZ6aFJ1ABXm8="
KINDS = ("servicemonitors", "podmonitors", "prometheusrules")


def monitoring_crd_files() -> list[Path]:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("go is not installed: it fetches the Prometheus Operator's CRDs from their Go module")
    with tempfile.TemporaryDirectory(prefix="modelpilot-monitoring-crds-") as tmp:
        # A module of our own whose go.sum pins the checksum: the download is verified against it.
        Path(tmp, "go.mod").write_text(f"module modelpilot.io/tests/monitoring\n\ngo 1.22\n\nrequire {MODULE} {VERSION}\n")
        Path(tmp, "go.sum").write_text(f"{MODULE} {VERSION} {SUM}\n{MODULE} {VERSION}/go.mod {GO_MOD_SUM}\n")
        env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}
        done = subprocess.run([go, "mod", "download", "-json", MODULE], cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"go mod download {MODULE}@{VERSION} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    info = json.loads(done.stdout)
    if info.get("Sum") != SUM:
        raise RuntimeError(f"{MODULE}@{VERSION} has checksum {info.get('Sum')}, expected {SUM}")
    folder = Path(info["Dir"]) / "example" / "prometheus-operator-crd"
    return [folder / f"monitoring.coreos.com_{kind}.yaml" for kind in KINDS]


if __name__ == "__main__":
    print("\n".join(map(str, monitoring_crd_files())))
