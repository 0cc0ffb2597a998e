"""What the model server's workers share (serving/workers.py, the WorkersCollector of serving/metrics.py).
The supervisor itself runs for real in tests/serving/test_workers.py."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from prometheus_client import ProcessCollector

from modelpilot.serving.metrics import Identity, WorkersCollector
from modelpilot.serving.server import parse_args
from modelpilot.serving.workers import STATE_FILE, Worker


def test_one_worker_unless_asked_and_never_fewer():
    assert parse_args([]).workers == 1
    assert parse_args(["--workers", "4"]).workers == 4
    with pytest.raises(SystemExit):
        parse_args(["--workers", "0"])


@pytest.mark.parametrize(("workers", "window", "share"), [(1, 1000, 1000), (2, 1000, 500), (3, 1000, 334), (4, 1, 1)])
def test_each_worker_keeps_its_share_of_the_drift_window_rounded_up(tmp_path, workers, window, share):
    assert Worker(str(tmp_path), workers, fd=3, load_first=False).window_share(window) == share


def test_ready_once_every_worker_has_loaded_its_model_and_from_then_on(tmp_path):
    worker = Worker(str(tmp_path), 2, fd=3, load_first=False)
    worker.model_loaded()
    assert not worker.all_loaded()
    (tmp_path / "loaded_99999").touch()  # the other worker
    assert worker.all_loaded()
    (tmp_path / "loaded_99999").unlink()  # it died; its replacement loads before it takes connections
    assert worker.all_loaded()


def collected(collector) -> dict[str, float]:
    return {sample.name: sample.value for family in collector.collect() for sample in family.samples}


def test_process_series_add_up_the_supervisor_and_its_live_workers(tmp_path):
    processes = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    try:
        pids = [p.pid for p in processes]
        state = {"pids": pids, "restarts": 3, "reaped_cpu_seconds": 2.5}
        (tmp_path / STATE_FILE).write_text(json.dumps(state))
        for _ in range(100):  # until the processes have settled (exec done): the same figures before and after
            alone = [collected(ProcessCollector(pid=lambda pid=pid: pid, registry=None)) for pid in pids]
            together = collected(WorkersCollector(str(tmp_path), Identity("fraud", "7", "canary")))
            if alone == [collected(ProcessCollector(pid=lambda pid=pid: pid, registry=None)) for pid in pids]:
                break
            time.sleep(0.05)
    finally:
        for process in processes:
            process.kill()
            process.wait()
    assert together["modelpilot_worker_restarts_total"] == 3
    for name in ("process_resident_memory_bytes", "process_virtual_memory_bytes", "process_open_fds"):
        assert together[name] == sum(one[name] for one in alone), name
    assert together["process_cpu_seconds_total"] == pytest.approx(2.5 + sum(one["process_cpu_seconds_total"] for one in alone))
    assert together["process_start_time_seconds"] == min(one["process_start_time_seconds"] for one in alone)
    assert together["process_max_fds"] == alone[0]["process_max_fds"]


def test_without_the_supervisors_state_the_process_series_are_this_processes(tmp_path):
    together = collected(WorkersCollector(str(tmp_path), Identity("fraud", "7", "canary")))
    assert together["modelpilot_worker_restarts_total"] == 0
    assert together["process_start_time_seconds"] == collected(ProcessCollector(registry=None))["process_start_time_seconds"]
