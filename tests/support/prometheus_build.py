"""A Prometheus with Kubernetes service discovery, built from the Go module pinned in
``tests/support/go/prometheus``.

Debian's ``prometheus`` package leaves Kubernetes discovery out (its client library pulls in too much for
the archive), so tests that watch pods through the Kubernetes API use this build instead: upstream's own
``cmd/prometheus`` with only the file and Kubernetes discovery plugins. It lands in the suite's cache
(``${MODELPILOT_CACHE:-~/.cache/modelpilot}/bin``) and is rebuilt only when the pinned module, its sums or
this file change; a file lock keeps concurrent runs from building it twice.

``python -m tests.support.prometheus_build`` builds it ahead of the tests and prints its path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.cluster.launcher import cache_dir
from tests.support.processes import exclusive_lock

MODULE_DIR = Path(__file__).resolve().parent / "go" / "prometheus"
MODULE = "github.com/prometheus/prometheus"
PACKAGE = f"{MODULE}/cmd/prometheus"
# File discovery is always compiled in; every other discovery plugin but Kubernetes' is left out.
TAGS = "remove_all_sd,enable_kubernetes_sd"
BUILD_TIMEOUT = 1800  # a cold module cache on a shared 2-core machine
LOCK_TIMEOUT = BUILD_TIMEOUT + 60


class PrometheusBuildError(RuntimeError):
    """The build failed; the message ends with the go command's output."""


def binary_path() -> Path:
    return cache_dir() / "bin" / "prometheus-kubernetes"


def ensure_prometheus_with_kubernetes_sd() -> Path:
    """The path of the built binary, building it first if its inputs changed since the last build."""
    binary = binary_path()
    binary.parent.mkdir(parents=True, exist_ok=True)
    stamp_file = binary.with_name(f".{binary.name}.stamp")
    with _build_lock(binary.with_name(f".{binary.name}.lock")):
        if binary.exists() and _read(stamp_file) == _input_stamp():
            return binary
        _build(binary)
        stamp_file.write_text(_input_stamp())
    return binary


def _input_stamp() -> str:
    digest = hashlib.sha256()
    for path in (MODULE_DIR / "go.mod", MODULE_DIR / "go.sum", Path(__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _build(binary: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise PrometheusBuildError("go is not installed: it builds the Prometheus with Kubernetes discovery")
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    version = _prometheus_version(go, env)
    print(f"prometheus-build: building Prometheus {version} with Kubernetes discovery ...", file=sys.stderr)
    started = time.monotonic()
    partial = binary.with_name(f"{binary.name}.tmp")
    ldflags = f"-s -w -X github.com/prometheus/common/version.Version={version}"
    _run([go, "build", "-trimpath", "-tags", TAGS, "-ldflags", ldflags, "-o", str(partial), PACKAGE], env)
    partial.replace(binary)  # atomic: a concurrent reader never runs half a binary
    print(f"prometheus-build: built in {time.monotonic() - started:.0f}s: {binary}", file=sys.stderr)


def _prometheus_version(go: str, env: dict[str, str]) -> str:
    """Prometheus 3.x is tagged v0.3XX.Y as a Go module: v0.316.0 is release 3.16.0."""
    module_version = _run([go, "list", "-m", "-f", "{{.Version}}", MODULE], env).strip()
    _, minor, patch = module_version.lstrip("v").split(".", 2)
    return f"{int(minor) // 100}.{int(minor) % 100}.{patch}"


def _run(command: list[str], env: dict[str, str]) -> str:
    try:
        done = subprocess.run(
            command, cwd=MODULE_DIR, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise PrometheusBuildError(f"{' '.join(command[:3])} did not finish within {BUILD_TIMEOUT}s") from None
    if done.returncode != 0:
        raise PrometheusBuildError(f"{' '.join(command[:3])} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """Another run may be building the same binary."""
    try:
        with exclusive_lock(path, LOCK_TIMEOUT):
            yield
    except TimeoutError as exc:
        raise PrometheusBuildError(str(exc)) from None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


if __name__ == "__main__":
    print(ensure_prometheus_with_kubernetes_sd())
