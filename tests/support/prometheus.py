"""A real Prometheus on loopback, scraping targets the tests add while it runs (job ``models``) and
whatever extra scrape configs a test passes (Kubernetes pod discovery, say, with a Prometheus built for
it: tests/support/prometheus_build.py)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from .processes import free_port, start_process, stop_process, wait_http_ok
from .waiting import wait_for

SCRAPE_INTERVAL = "1s"
SCRAPE_CONFIG = Path(__file__).resolve().parents[2] / "manifests" / "monitoring" / "prometheus-scrape-config.yaml"


@dataclass
class Prometheus:
    url: str
    targets_file: Path

    def scrape(self, address: str, **labels: str) -> None:
        """Add a target (host:port serving /metrics); file discovery picks it up without a restart."""
        targets = json.loads(self.targets_file.read_text())
        targets.append({"targets": [address], "labels": labels})
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(targets))
        tmp.replace(self.targets_file)  # atomic: Prometheus never reads half a file

    def query(self, promql: str) -> list[dict]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        response.raise_for_status()
        return response.json()["data"]["result"]

    def active_targets(self, job: str) -> list[dict]:
        """The targets of `job` Prometheus scrapes now, as /api/v1/targets lists them."""
        response = httpx.get(f"{self.url}/api/v1/targets", params={"state": "active", "scrapePool": job}, timeout=10)
        response.raise_for_status()
        return [t for t in response.json()["data"]["activeTargets"] if t["scrapePool"] == job]

    def wait_for_value(self, promql: str, accept, what: str, timeout: float = 60) -> float:
        """Poll `promql` until its single value satisfies `accept`; returns that value."""

        def probe():
            result = self.query(promql)
            if len(result) == 1 and accept(float(result[0]["value"][1])):
                return float(result[0]["value"][1]), result[0]["metric"]
            return None

        return wait_for(probe, f"{what} ({promql})", timeout=timeout)


def recommended_scrape_configs(kubeconfig: Path) -> list[dict]:
    """The documented scrape configs unchanged but for where the cluster is and how often to scrape."""
    configs = yaml.safe_load(SCRAPE_CONFIG.read_text())["scrape_configs"]
    for config in configs:
        config["scrape_interval"] = SCRAPE_INTERVAL
        for discovery in config["kubernetes_sd_configs"]:
            discovery["kubeconfig_file"] = str(kubeconfig)  # Prometheus runs on the host, not in a pod
    return configs


@contextmanager
def pod_discovering_prometheus(kubeconfig: Path):
    """Prometheus on the host, finding the cluster's pods with the documented scrape config (built with
    Kubernetes discovery, or reused); it reaches pod IPs through the real node's routes."""
    from .prometheus_build import ensure_prometheus_with_kubernetes_sd

    with prometheus_server(recommended_scrape_configs(kubeconfig), binary=ensure_prometheus_with_kubernetes_sd()) as server:
        yield server


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


@contextmanager
def prometheus_server(scrape_configs: Sequence[dict] = (), binary: str | Path | None = None):
    """Prometheus scraping every second: the file-discovered `models` job, then `scrape_configs` as given.

    `binary` defaults to the `prometheus` on PATH (Debian's package)."""
    binary = binary or prometheus_binary()
    if binary is None:
        raise RuntimeError("prometheus is not installed: apt-get install prometheus (.ci/run does)")
    with tempfile.TemporaryDirectory(prefix="modelpilot-prometheus-") as tmp:
        root = Path(tmp)
        targets = root / "targets.json"
        targets.write_text("[]")
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "scrape_configs": [
                {"job_name": "models", "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}]},
                *scrape_configs,
            ],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log_path = root / "prometheus.log"
        proc = start_process(
            [str(binary), f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            None, log_path,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http_ok(f"{url}/-/ready", proc, log_path, timeout=60)
            yield Prometheus(url=url, targets_file=targets)
        finally:
            stop_process(proc)
