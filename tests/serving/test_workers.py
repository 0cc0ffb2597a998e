"""The model server with --workers 2, as real processes on loopback: one port, pooled metrics and drift,
a killed worker replaced, a clean stop.

Which worker answers a request is read from the kernel, not from the server: the test finds the
server-side socket of its own connection in /proc/net/tcp and the worker that holds it in /proc/<pid>/fd.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelpilot.serving.baseline import BASELINE_FILE, DriftMonitor, load_baseline_profile

from .conftest import Fetched, RegisteredModels, ServerProcess, split

pytestmark = pytest.mark.mlflow

IDS = {"deployment": "fraud", "model_version": "1", "track": "canary"}
SCORED = (("protocol", "mlflow"), ("code", "200"))


def process_state(pid: int | str) -> tuple[str, int] | None:
    """A process's state letter and parent pid; None once it is gone."""
    try:
        state, ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    except OSError:
        return None
    return state, int(ppid)


def running(pid: int) -> bool:
    state = process_state(pid)
    return state is not None and state[0] != "Z"


def children(pid: int) -> set[int]:
    """The running child processes of `pid`."""
    found = set()
    for entry in os.listdir("/proc"):
        state = process_state(entry) if entry.isdigit() else None
        if state is not None and state[1] == pid and state[0] != "Z":
            found.add(int(entry))
    return found


def workers_of(server: ServerProcess, count: int = 2, timeout: float = 60) -> set[int]:
    deadline = time.monotonic() + timeout
    while len(pids := children(server.proc.pid)) != count:
        assert time.monotonic() < deadline, f"workers: {pids}\n{server.log[-3000:]}"
        time.sleep(0.1)
    return pids


def shared_directory(tmp: Path) -> Path | None:
    found = list(tmp.glob("modelpilot-workers-*"))
    assert len(found) <= 1, found
    return found[0] if found else None


class Connection:
    """A keep-alive connection to the server, and the worker process that accepted it."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.http = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.http.connect()

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
        self.http.request(method, path, body, headers or {})
        response = self.http.getresponse()
        return response.status, response.read()

    def post(self, rows) -> int:
        return self.request("POST", "/invocations", json.dumps(split(rows)).encode(), {"Content-Type": "application/json"})[0]

    def metrics(self) -> dict[tuple[str, tuple], float]:
        status, body = self.request("GET", "/metrics")
        assert status == 200
        return samples(body.decode())

    def worker(self) -> int | None:
        """The worker holding the server side of this connection (once it has answered on it)."""
        client_port = self.http.sock.getsockname()[1]
        inode = None
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{self.server.port:04X}") and fields[2].endswith(f":{client_port:04X}"):
                inode = fields[9]
        for pid in children(self.server.proc.pid):
            try:
                if any(os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]" for fd in os.listdir(f"/proc/{pid}/fd")):
                    return pid
            except OSError:  # gone meanwhile
                continue
        return None

    def close(self) -> None:
        self.http.close()


def one_connection_per_worker(server: ServerProcess, count: int = 2, timeout: float = 60) -> dict[int, Connection]:
    """A connection accepted by each of the `count` workers: new connections (each asks /health once, which
    is not scoring traffic) until every worker has accepted one."""
    kept: dict[int, Connection] = {}
    deadline = time.monotonic() + timeout
    while len(kept) < count:
        assert time.monotonic() < deadline, f"only workers {sorted(kept)} accepted a connection"
        connection = Connection(server)
        assert connection.request("GET", "/health")[0] == 200
        pid = connection.worker()
        if pid is None or pid in kept:
            connection.close()
        else:
            kept[pid] = connection
    return kept


def resident_bytes(pids) -> int:
    return sum(int(Path(f"/proc/{pid}/statm").read_text().split()[1]) for pid in pids) * os.sysconf("SC_PAGE_SIZE")


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(snapshot: dict, name: str, *labels: tuple[str, str]) -> float | None:
    return snapshot.get((name, tuple(sorted({**IDS, **dict(labels)}.items()))))


@contextmanager
def started(model_dir: Path, tmp: Path, *args: str) -> Iterator[ServerProcess]:
    """The server with two workers and `args`, ready; its temporary files (the shared directory) in `tmp`."""
    server = ServerProcess(model_dir, "--workers", "2", *args, env={"TMPDIR": str(tmp)})
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def workers_server(fetched_main: Fetched, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with started(fetched_main.dest, tmp_path_factory.mktemp("workers"), "--no-drift") as server:
        yield server


def test_requests_spread_over_the_workers_and_every_worker_reports_the_totals(
    workers_server: ServerProcess, registered: RegisteredModels
):
    server, rows = workers_server, registered.holdout.iloc[:10]
    before = samples(server.metrics())
    connections = one_connection_per_worker(server)
    sent = 0
    for connection in connections.values():
        for _ in range(5):
            assert connection.post(rows) == 200
            sent += 1
    for pid, connection in connections.items():  # /metrics answered by each worker in turn
        after = connection.metrics()
        moved = {
            name: value(after, name, *labels) - (value(before, name, *labels) or 0.0)
            for name, labels in (
                ("modelpilot_requests_total", SCORED),
                ("modelpilot_request_duration_seconds_count", SCORED[:1]),
                ("modelpilot_request_duration_seconds_bucket", (*SCORED[:1], ("le", "+Inf"))),
            )
        }
        assert moved == dict.fromkeys(moved, sent), (pid, moved)
        assert value(after, "modelpilot_requests_in_flight") == 0
        assert value(after, "modelpilot_model_load_seconds") > 0
        assert value(after, "modelpilot_worker_restarts_total") == value(before, "modelpilot_worker_restarts_total")
        # The process series are the whole server's: the supervisor and both workers.
        whole = resident_bytes([server.proc.pid, *connections])
        assert 0.8 * whole < after[("process_resident_memory_bytes", ())] < 1.25 * whole
        connection.close()


def test_a_killed_worker_is_replaced_and_the_other_serves_meanwhile(
    workers_server: ServerProcess, registered: RegisteredModels
):
    server, rows = workers_server, registered.holdout.iloc[:10]
    before = samples(server.metrics())
    pids = workers_of(server)
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    statuses = []
    deadline = time.monotonic() + 60
    while True:  # new connections until the replacement takes one: the survivor answers meanwhile
        connection = Connection(server)
        statuses.append(connection.post(rows))
        answered_by = connection.worker()
        connection.close()
        if answered_by is not None and answered_by not in pids:
            break
        assert time.monotonic() < deadline, server.log[-3000:]
    assert set(statuses) == {200}, statuses
    assert workers_of(server) == {*pids - {victim}, answered_by}
    after = samples(server.metrics())
    assert value(after, "modelpilot_worker_restarts_total") == value(before, "modelpilot_worker_restarts_total") + 1
    # The dead worker's counts stay in the totals.
    assert value(after, "modelpilot_requests_total", *SCORED) == value(before, "modelpilot_requests_total", *SCORED) + len(statuses)
    assert value(after, "modelpilot_requests_in_flight") == 0
    assert f"worker {victim} was killed by SIGKILL" in server.log


def test_drift_pools_the_windows_of_the_workers(fetched_main: Fetched, registered: RegisteredModels, tmp_path: Path):
    # Each worker keeps 200 of the window's 400 rows; drift is exported from 100 rows on.
    with started(fetched_main.dest, tmp_path, "--drift-window", "400", "--drift-min-rows", "100") as server:
        first, second = one_connection_per_worker(server).values()
        holdout = registered.holdout
        single = DriftMonitor(load_baseline_profile(str(fetched_main.dest / BASELINE_FILE)), window=400, min_rows=100)
        # 60 rows through the first worker: no drift series yet.
        for start in range(0, 60, 10):
            assert first.post(holdout.iloc[start : start + 10]) == 200
            single.observe(holdout.iloc[start : start + 10])
        time.sleep(1.5)  # the workers publish their windows once a second
        assert value(first.metrics(), "modelpilot_drift_score") is None
        assert value(second.metrics(), "modelpilot_drift_score") is None
        # 60 rows through the second: neither worker's window holds 100 rows, both together do.
        for start in range(60, 120, 10):
            assert second.post(holdout.iloc[start : start + 10]) == 200
            single.observe(holdout.iloc[start : start + 10])
        overall, features = single.scores()
        expected = {"overall": overall, **features}
        deadline = time.monotonic() + 10
        for connection in (first, second):  # the same pooled value whichever worker answers
            while True:
                snapshot = connection.metrics()
                pooled = {"overall": value(snapshot, "modelpilot_drift_score")}
                pooled.update({f: value(snapshot, "modelpilot_feature_drift", ("feature", f)) for f in features})
                if pooled == expected or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert pooled == expected  # exactly: the same bin counts give the same floats


def test_sigterm_stops_every_worker_and_removes_the_shared_directory(fetched_main: Fetched, tmp_path: Path):
    with started(fetched_main.dest, tmp_path, "--no-drift") as server:
        pids = workers_of(server)
        assert shared_directory(tmp_path) is not None
        os.kill(server.proc.pid, signal.SIGTERM)  # the supervisor alone, as the kubelet does
        assert server.proc.wait(timeout=60) == 0
        assert not any(running(pid) for pid in pids)
        assert shared_directory(tmp_path) is None


def test_the_workers_stop_when_their_supervisor_is_killed(fetched_main: Fetched, tmp_path: Path):
    with started(fetched_main.dest, tmp_path, "--no-drift") as server:
        pids = workers_of(server)
        server.proc.kill()
        server.proc.wait(timeout=10)
        deadline = time.monotonic() + 60
        while any(running(pid) for pid in pids):
            assert time.monotonic() < deadline, f"workers still running: {pids}"
            time.sleep(0.2)


def test_a_model_that_fails_to_load_stops_the_server_with_status_1(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    server = ServerProcess(tmp_path / "empty", "--workers", "2", env={"TMPDIR": str(tmp_path)})
    try:
        assert server.proc.wait(timeout=120) == 1
        assert "cannot load the model" in server.log and "no MLmodel file" in server.log
        assert "exited with status 1; stopping the server" in server.log
        assert shared_directory(tmp_path) is None
    finally:
        server.stop()
