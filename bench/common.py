"""What every benchmark on the local cluster does before it measures: the CRD, and the operator as a
process of this machine."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from tests.support import leaks
from tests.support.processes import start_process

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "crds" / "modelpilot.io_modeldeployments.yaml"


def install_crd(kubectl: list[str]) -> None:
    subprocess.run([*kubectl, "apply", "--server-side", "-f", str(CRD)], check=True, capture_output=True)
    # kubectl's default 30 s is short for an API server that has just started on a busy machine.
    waited = subprocess.run([*kubectl, "wait", "--for=condition=Established", "--timeout=180s",
                             "crd/modeldeployments.modelpilot.io"], capture_output=True, text=True)  # fmt: skip
    if waited.returncode != 0:
        raise RuntimeError(f"the CRD was not established: {waited.stderr.strip()}")


def start_operator(kubeconfig: Path, log_path: Path, **env: str) -> subprocess.Popen:
    """The operator, cluster-wide with the admin kubeconfig, its log in `log_path`; `env` adds settings."""
    environment = {**os.environ, "KUBECONFIG": str(kubeconfig), **env}
    return start_process([sys.executable, "-m", "modelpilot", "--liveness=", "--metrics="], environment, log_path)


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used, from /proc."""
    # The command name may hold spaces: the fields that follow it start after its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def memory_mib(pid: int) -> tuple[float, float]:
    """Resident memory of the process now and at its peak (VmRSS, VmHWM), in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


class _Tee(io.TextIOBase):
    def __init__(self, stream, kept: io.StringIO) -> None:
        self.stream, self.kept = stream, kept

    def write(self, text: str) -> int:
        self.kept.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def leak_checked(main: Callable[[], int]) -> int:
    """Run a benchmark's `main`, its output printed and kept: a secret value in it (the MLflow password,
    index credentials, URL credentials) fails the run, as it fails the test suite."""
    kept = io.StringIO()
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(stdout, kept), _Tee(stderr, kept)
    try:
        code = main()
    finally:
        sys.stdout, sys.stderr = stdout, stderr
    found = leaks.find(kept.getvalue())
    if found:
        print(f"leak scan: {', '.join(found)} in the benchmark's output", file=sys.stderr)
        return code or 1
    return code
