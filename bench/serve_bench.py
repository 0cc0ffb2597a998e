"""Serving benchmark: modelpilot's model server against `mlflow models serve`, same model, same load.

    .venv/bin/python bench/serve_bench.py [--seconds 10] [--rounds 3] [--rows 10] [--batch-size 32] [--workers 1]

Starts a throwaway MLflow tracking server on loopback, trains and registers a small scikit-learn model
with a baseline profile, then serves that version three times, each with ``--workers`` worker processes
(default 1; both servers take ``--workers N``: MLflow's runs N uvicorn workers, ours N workers under its
supervisor, metrics and drift pooled):

- baseline: ``mlflow models serve -m models:/<name>/<version> --env-manager local`` (MLflow's defaults);
- ours: ``python -m modelpilot.serving.server`` on the directory ``modelpilot.serving.fetch`` downloaded,
  with metrics and drift on (the defaults);
- ours, batching: the same with ``--max-batch-size <batch-size>``.

Two scenarios, each a closed loop of keep-alive connections from a separate load-generator process on
127.0.0.1 (each connection sends the next request when the previous answer arrives), after a warm-up:

- 4 connections: baseline against ours (target: throughput >= 1.5x, p99 <= 1.0x);
- 32 connections: baseline against ours with batching (target: throughput >= 3x, p99 <= 1.0x);
- with ``--workers N`` above 1, a third, threads against processes: ours as one process scoring on its
  thread pool against ours with N worker processes, at 4 connections (no target: it measures which is
  faster).

Servers alternate within each scenario and round. It also measures the physical bound: the same
model's predict function, in a process of its own, on the same rows (one request's rows per call, and
a batch's rows per call), scored back to back. It prints every round, then per server the throughput
(all rounds' requests over their measured time) and p50/p99 latency (all rounds' latencies pooled), the
ratios to the baseline with their range over rounds, the gap to the bound, and whether the targets were
met. Nothing else is contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Run as a script from anywhere: the suite's process helpers live in tests/support.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import leak_checked  # noqa: E402
from tests.support.processes import free_port, start_process, stop_process, wait_http_ok  # noqa: E402

PYTHON = sys.executable
MODEL_NAME = "bench-clf"
BASELINE = "mlflow models serve"
ONE_PROCESS = "modelpilot, 1 process"


TRAIN = """
import json, sys
import mlflow, pandas as pd
from mlflow.models import infer_signature
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from modelpilot.serving.baseline import log_baseline_profile
X, y = make_classification(n_samples=3000, n_features=8, n_informative=4, random_state=1)
X = pd.DataFrame(X, columns=[f"f{i}" for i in range(8)])
model = LogisticRegression(max_iter=500).fit(X, y)
with mlflow.start_run():
    info = mlflow.sklearn.log_model(model, name="model", signature=infer_signature(X, model.predict(X)),
                                    input_example=X.iloc[:3], registered_model_name=sys.argv[1])
    log_baseline_profile(X, model_info=info)
X.iloc[2000:].to_json(sys.argv[2], orient="split")
print(info.registered_model_version)
"""


# --------------------------------------------------------------------------------------------------
# Load generator (runs in its own process)
# --------------------------------------------------------------------------------------------------


def _exchange(sock: socket.socket, request: bytes, pending: bytearray) -> int:
    """Send one request on a keep-alive connection and read its whole answer; the status code."""
    sock.sendall(request)
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        pending += chunk
    head, _, _ = bytes(pending).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    end = len(head) + 4 + length
    while len(pending) < end:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        pending += chunk
    del pending[:end]
    return status


def load(url: str, payload: bytes, concurrency: int, warmup: float, seconds: float) -> dict:
    """Closed-loop load on raw keep-alive sockets: the client's own cost per request stays a few tens of
    microseconds, so 32 connections measure the server rather than an HTTP client library."""
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"POST /invocations HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    start_measure = time.perf_counter() + warmup
    stop_at = start_measure + seconds

    def worker(i: int) -> None:
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pending = bytearray()
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                status = _exchange(sock, request, pending)
                t1 = time.perf_counter()
                if t0 >= start_measure:
                    latencies[i].append(t1 - t0)
                    if status != 200:
                        errors[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = sorted(x for per in latencies for x in per)
    if not flat:
        return {"requests": 0, "errors": sum(errors), "rps": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "latencies_ms": []}
    return {
        "requests": len(flat),
        "errors": sum(errors),
        "rps": len(flat) / seconds,
        "p50_ms": percentile(flat, 0.5) * 1000,
        "p99_ms": percentile(flat, 0.99) * 1000,
        "latencies_ms": [round(x * 1000, 3) for x in flat],
    }


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_load(url: str, payload_file: Path, concurrency: int, args: argparse.Namespace) -> dict:
    cmd = [PYTHON, __file__, "_load", url, str(payload_file), str(concurrency), str(args.warmup), str(args.seconds)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=args.warmup + args.seconds + 120)
    if result.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# The physical bound (runs in its own process)
# --------------------------------------------------------------------------------------------------


def bound(model_dir: str, payload: bytes, batch: int, seconds: float) -> dict:
    """Requests per second the model's own predict function sustains on the request's rows, called back
    to back in one thread: one request's rows per call, and `batch` requests' rows per call."""
    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(model_dir)
    split = json.loads(payload)["dataframe_split"]
    frame = pd.DataFrame(split["data"], columns=split["columns"], dtype="float64")
    batched = pd.concat([frame] * batch, ignore_index=True)

    def rate(data, requests_per_call: int) -> float:
        for _ in range(50):
            model._predict_fn(data)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            model._predict_fn(data)
            calls += 1
        return calls * requests_per_call / (time.perf_counter() - started)

    return {"one": rate(frame, 1), "batched": rate(batched, batch)}


def run_bound(model_dir: Path, payload_file: Path, args: argparse.Namespace) -> dict:
    cmd = [PYTHON, __file__, "_bound", str(model_dir), str(payload_file), str(args.batch_size), str(args.seconds / 2)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 120)
    if result.returncode != 0:
        raise RuntimeError(f"bound measurement failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------


Scenario = tuple[int, list[str], float | None]  # connections, (baseline, measured), throughput target


def report(results: dict[tuple[int, str], list[dict]], scenarios: list[Scenario], seconds: float,
           limit: dict | None, batch_size: int) -> bool:
    """Per scenario: each server's pooled throughput and latency, the ratios to the baseline (the first
    name) with their range over rounds, the target, and the gap to the bound when it was measured.
    Whether every target was met."""

    def pooled(key: tuple[int, str]) -> tuple[float, float, float]:
        runs = results[key]
        latencies = sorted(x for r in runs for x in r["latencies_ms"])
        rps = sum(r["requests"] for r in runs) / (seconds * len(runs))
        return rps, percentile(latencies, 0.5), percentile(latencies, 0.99)

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    print()
    met_all = True
    for index, (concurrency, (base, ours), target) in enumerate(scenarios):
        b, o = pooled((index, base)), pooled((index, ours))
        pairs = list(zip(results[(index, ours)], results[(index, base)]))
        rps_ratios = [r["rps"] / rb["rps"] for r, rb in pairs]
        p99_ratios = [r["p99_ms"] / rb["p99_ms"] for r, rb in pairs]
        print(f"{concurrency} connections{'':16s}{'req/s':>10s}{'p50 ms':>10s}{'p99 ms':>10s}")
        print(f"  {base:26s}{b[0]:10.1f}{b[1]:10.2f}{b[2]:10.2f}")
        print(f"  {ours:26s}{o[0]:10.1f}{o[1]:10.2f}{o[2]:10.2f}")
        print(f"  {'ratio (pooled)':26s}{o[0] / b[0]:10.2f}{o[1] / b[1]:10.2f}{o[2] / b[2]:10.2f}")
        print(f"  per-round ratios, median (min-max): throughput {spread(rps_ratios)}, p99 {spread(p99_ratios)}")
        if target is None:
            print("  no target: which of the two is faster is what this scenario measures")
        else:
            met = o[0] >= target * b[0] and o[2] <= b[2]
            met_all = met_all and met
            print(f"  target (throughput >= {target:g}x, p99 <= 1.0x): {'met' if met else 'MISSED'}")
        if limit is not None and base == BASELINE:
            bound_rps = limit["one"] if concurrency == 4 else limit["batched"]
            what = "one request's rows" if concurrency == 4 else f"{batch_size} requests' rows"
            print(f"  bound: in-process predict on {what} per call {bound_rps:10.1f} req/s; ours at {o[0] / bound_rps:.2f} of it")
        print()
    return met_all


def run_rounds(urls: dict[str, str], scenarios: list[Scenario], payload_file: Path,
               args: argparse.Namespace) -> dict[tuple[int, str], list[dict]]:  # fmt: skip
    """Every scenario's servers under the same load, `args.rounds` times, printing each run; the runs
    are keyed by (scenario index, server), so a server in two scenarios keeps them apart."""
    results: dict[tuple[int, str], list[dict]] = {}
    for round_no in range(args.rounds):
        for index, (concurrency, names, _) in enumerate(scenarios):
            # Alternate the order so neither server always runs right after the other's load.
            for name in names if round_no % 2 == 0 else names[::-1]:
                figures = run_load(urls[name], payload_file, concurrency, args)
                results.setdefault((index, name), []).append(figures)
                print(
                    f"  round {round_no + 1} {concurrency:2d} conn {name:22s} {figures['rps']:8.1f} req/s"
                    f"  p50 {figures['p50_ms']:6.2f} ms  p99 {figures['p99_ms']:6.2f} ms"
                    f"  errors {figures['errors']}",
                    flush=True,
                )
    return results


def load_arguments(description: str) -> argparse.ArgumentParser:
    """The load and the servers' shape, the same wherever the servers run."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each run")
    parser.add_argument("--rows", type=int, default=10, help="rows per scoring request")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every scenario")
    parser.add_argument("--batch-size", type=int, default=32, help="--max-batch-size of the batching server")
    parser.add_argument("--workers", type=int, default=1, help="--workers of every server (worker processes)")
    return parser


def main() -> int:
    parser = load_arguments(__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="modelpilot-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        port = free_port()
        tracking = f"http://127.0.0.1:{port}"
        # `mlflow models serve` runs `uvicorn` from PATH: put this interpreter's scripts first.
        path = os.pathsep.join([os.path.dirname(PYTHON), os.environ.get("PATH", "")])
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "PATH": path}
        print(f"starting MLflow tracking server on {tracking}", flush=True)
        # No background job runners in the tracking server: the benchmark does not use them.
        mlflow_server = start_process(
            [PYTHON, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
             "--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, tmp / "mlflow-server.log",
        )  # fmt: skip
        procs.append(mlflow_server)
        wait_http_ok(f"{tracking}/health", mlflow_server, None, 120)

        print("training and registering the model", flush=True)
        rows_file = tmp / "rows.json"
        trained = subprocess.run(
            [PYTHON, "-c", TRAIN, MODEL_NAME, str(rows_file)], env=env, capture_output=True, text=True, timeout=300
        )
        if trained.returncode != 0:
            raise RuntimeError(trained.stderr[-3000:])
        version = trained.stdout.strip().splitlines()[-1]
        model_uri = f"models:/{MODEL_NAME}/{version}"
        rows = json.loads(rows_file.read_text())
        payload = json.dumps(
            {"dataframe_split": {"columns": rows["columns"], "data": rows["data"][: args.rows]}}
        ).encode()
        payload_file = tmp / "payload.json"
        payload_file.write_bytes(payload)

        model_dir = tmp / "model"
        fetched = subprocess.run(
            [PYTHON, "-m", "modelpilot.serving.fetch", "--model-uri", model_uri, "--dest", str(model_dir)],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if fetched.returncode != 0:
            raise RuntimeError(fetched.stderr)

        labels = {"MODELPILOT_DEPLOYMENT": "bench", "MODELPILOT_MODEL_VERSION": version, "MODELPILOT_TRACK": "stable"}
        servers = {
            BASELINE: [shutil.which("mlflow", path=os.path.dirname(PYTHON)) or "mlflow", "models",
                                    "serve", "-m", model_uri, "--env-manager", "local", "--host", "127.0.0.1"],
            "modelpilot": [PYTHON, "-m", "modelpilot.serving.server", "--model-dir", str(model_dir),
                           "--host", "127.0.0.1"],
            "modelpilot, batching": [PYTHON, "-m", "modelpilot.serving.server", "--model-dir", str(model_dir),
                                     "--host", "127.0.0.1", "--max-batch-size", str(args.batch_size)],
        }  # fmt: skip
        workers = {}  # a server's --workers where it is not args.workers
        if args.workers > 1:
            # Threads against processes: one process scores on its thread pool, the other has N workers.
            servers[ONE_PROCESS], workers[ONE_PROCESS] = servers["modelpilot"], 1
        urls = {}
        for name, cmd in servers.items():
            port = free_port()
            cmd = [*cmd, "--workers", str(workers.get(name, args.workers)), "--port", str(port)]
            procs.append(start_process(cmd, {**env, **labels}, tmp / f"{port}.log"))
            urls[name] = f"http://127.0.0.1:{port}"
            probe = "/ping" if name == BASELINE else "/ready"
            wait_http_ok(f"{urls[name]}{probe}", procs[-1], tmp / f"{port}.log", 180)

        scenarios = [(4, [BASELINE, "modelpilot"], 1.5), (32, [BASELINE, "modelpilot, batching"], 3.0)]
        if ONE_PROCESS in servers:
            scenarios.append((4, [ONE_PROCESS, "modelpilot"], None))
        print(
            f"{args.rows} rows/request, {args.warmup:g}s warm-up + {args.seconds:g}s measured per run, "
            f"{args.rounds} rounds, batching server: --max-batch-size {args.batch_size}, "
            f"--workers {args.workers} for every server",
            flush=True,
        )
        results = run_rounds(urls, scenarios, payload_file, args)
        limit = run_bound(model_dir, payload_file, args)

        # Proof that the servers measured had metrics and drift on.
        import httpx

        drift_on = all(
            "modelpilot_drift_score{" in httpx.get(f"{urls[name]}/metrics", timeout=10).text
            for name in ("modelpilot", "modelpilot, batching")
        )

        met_all = report(results, scenarios, args.seconds, limit, args.batch_size)
        print(f"drift exported by both modelpilot servers during the run: {drift_on}")
        print(f"all targets: {'met' if met_all else 'MISSED'}")
        return 0
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        if args.keep:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_load":
        url, payload_path, concurrency, warmup, seconds = sys.argv[2:7]
        figures = load(url, Path(payload_path).read_bytes(), int(concurrency), float(warmup), float(seconds))
        print(json.dumps(figures))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "_bound":
        model_dir, payload_path, batch, seconds = sys.argv[2:6]
        print(json.dumps(bound(model_dir, Path(payload_path).read_bytes(), int(batch), float(seconds))))
        sys.exit(0)
    sys.exit(leak_checked(main))
