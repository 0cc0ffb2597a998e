"""A Prometheus with Kubernetes service discovery, built from the Go module pinned in
``tests/support/go/prometheus``.

Debian's ``prometheus`` package leaves Kubernetes discovery out (its client library pulls in too much for
the archive), so tests that watch pods through the Kubernetes API use this build instead: upstream's own
``cmd/prometheus`` with only the file and Kubernetes discovery plugins. It lands in the suite's cache
(``${MODELPILOT_CACHE:-~/.cache/modelpilot}/bin``) and is rebuilt only when the pinned module, its sums or
its builder (this file and ``go_build.py``) change; a file lock keeps concurrent runs from building it twice.

``python -m tests.support.prometheus_build`` builds it ahead of the tests and prints its path.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.go_build import Go, GoBuildError, ensure_go_binary, go_binary_path

MODULE_DIR = Path(__file__).resolve().parent / "go" / "prometheus"
MODULE = "github.com/prometheus/prometheus"
PACKAGE = f"{MODULE}/cmd/prometheus"
# File discovery is always compiled in; every other discovery plugin but Kubernetes' is left out.
TAGS = "remove_all_sd,enable_kubernetes_sd"
BUILD_TIMEOUT = 1800  # a cold module cache on a shared 2-core machine
NAME = "prometheus-kubernetes"


class PrometheusBuildError(GoBuildError):
    """The build failed; the message ends with the go command's output."""


def binary_path() -> Path:
    return go_binary_path(NAME)


def ensure_prometheus_with_kubernetes_sd() -> Path:
    """The path of the built binary, building it first if its inputs changed since the last build."""
    return ensure_go_binary(
        NAME,
        MODULE_DIR,
        PACKAGE,
        tags=TAGS,
        ldflags="-s -w -X github.com/prometheus/common/version.Version={version}",
        version_note=_prometheus_version,
        what="Prometheus {version} with Kubernetes discovery",
        inputs=[Path(__file__)],
        log="prometheus-build",
        timeout=BUILD_TIMEOUT,
        error=PrometheusBuildError,
    )


def _prometheus_version(go: Go) -> str:
    """Prometheus 3.x is tagged v0.3XX.Y as a Go module: v0.316.0 is release 3.16.0."""
    module_version = go("list", "-m", "-f", "{{.Version}}", MODULE).strip()
    _, minor, patch = module_version.lstrip("v").split(".", 2)
    return f"{int(minor) // 100}.{int(minor) % 100}.{patch}"


if __name__ == "__main__":
    print(ensure_prometheus_with_kubernetes_sd())
