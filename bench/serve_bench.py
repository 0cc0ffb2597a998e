"""Serving benchmark: modelpilot's model server against `mlflow models serve`, same model, same load.

    .venv/bin/python bench/serve_bench.py [--seconds 15] [--concurrency 4] [--rows 10] [--rounds 2]

Starts a throwaway MLflow tracking server on loopback, trains and registers a small scikit-learn model
with a baseline profile, then serves that version twice:

- baseline: ``mlflow models serve -m models:/<name>/<version> --env-manager local`` (MLflow's defaults:
  one uvicorn worker);
- ours: ``python -m modelpilot.serving.server`` on the directory ``modelpilot.serving.fetch`` downloaded,
  with metrics and drift on (the defaults).

Each is loaded in turn by a separate load-generator process on 127.0.0.1 (closed loop: ``concurrency``
keep-alive connections, each sending the next request when the previous answer arrives) for a fixed
time after a warm-up, alternating baseline/ours for ``rounds`` rounds. It prints requests/s and p50/p99
latency of each and the ratios ours/baseline (medians over rounds). Nothing else is contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Run as a script from anywhere: the suite's process helpers live in tests/support.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.processes import free_port, start_process, stop_process, wait_http_ok  # noqa: E402

PYTHON = sys.executable
MODEL_NAME = "bench-clf"


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


def load(url: str, payload: bytes, concurrency: int, warmup: float, seconds: float) -> dict:
    import httpx

    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    start_measure = time.perf_counter() + warmup
    stop_at = start_measure + seconds
    headers = {"Content-Type": "application/json"}

    def worker(i: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                response = client.post("/invocations", content=payload, headers=headers)
                t1 = time.perf_counter()
                if t0 >= start_measure:
                    latencies[i].append(t1 - t0)
                    if response.status_code != 200:
                        errors[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = sorted(x for per in latencies for x in per)
    if not flat:
        return {"requests": 0, "errors": sum(errors), "rps": 0.0, "p50_ms": 0.0, "p99_ms": 0.0}

    def pct(p: float) -> float:
        return flat[min(len(flat) - 1, int(round(p / 100 * (len(flat) - 1))))] * 1000

    return {
        "requests": len(flat),
        "errors": sum(errors),
        "rps": len(flat) / seconds,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "latencies_ms": [round(x * 1000, 3) for x in flat],
    }


def run_load(url: str, payload_file: Path, args: argparse.Namespace) -> dict:
    cmd = [PYTHON, __file__, "_load", url, str(payload_file), str(args.concurrency), str(args.warmup), str(args.seconds)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=args.warmup + args.seconds + 120)
    if result.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each run")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent keep-alive connections")
    parser.add_argument("--rows", type=int, default=10, help="rows per scoring request")
    parser.add_argument("--rounds", type=int, default=2, help="baseline/ours alternations")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument(
        "--also", action="append", default=[], metavar="ARGS",
        help="also measure ours started with these extra server arguments (e.g. --also=--no-drift)",
    )  # fmt: skip
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

        base_port, ours_port = free_port(), free_port()
        baseline = start_process(
            [shutil.which("mlflow", path=os.path.dirname(PYTHON)) or "mlflow", "models", "serve", "-m", model_uri,
             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(base_port)],
            env, tmp / "baseline.log",
        )  # fmt: skip
        procs.append(baseline)
        ours = start_process(
            [PYTHON, "-m", "modelpilot.serving.server", "--model-dir", str(model_dir), "--host", "127.0.0.1",
             "--port", str(ours_port)],
            {**env, "MODELPILOT_DEPLOYMENT": "bench", "MODELPILOT_MODEL_VERSION": version, "MODELPILOT_TRACK": "stable"},
            tmp / "ours.log",
        )  # fmt: skip
        procs.append(ours)
        base_url, ours_url = f"http://127.0.0.1:{base_port}", f"http://127.0.0.1:{ours_port}"
        targets = [("baseline", base_url), ("ours", ours_url)]
        waiting = {"ours": ours}
        for extra in args.also:
            extra_port = free_port()
            procs.append(
                start_process(
                    [PYTHON, "-m", "modelpilot.serving.server", "--model-dir", str(model_dir), "--host", "127.0.0.1",
                     "--port", str(extra_port), *extra.split()],
                    env, tmp / f"ours-{extra_port}.log",
                )  # fmt: skip
            )
            targets.append((f"ours {extra}", f"http://127.0.0.1:{extra_port}"))
            waiting[targets[-1][0]] = procs[-1]
        wait_http_ok(f"{base_url}/ping", baseline, None, 180)
        for name, url in targets[1:]:
            wait_http_ok(f"{url}/ready", waiting[name], None, 180)

        print(
            f"load: {args.concurrency} connections, {args.rows} rows/request, {args.warmup:g}s warm-up + "
            f"{args.seconds:g}s measured, {args.rounds} rounds",
            flush=True,
        )
        results: dict[str, list[dict]] = {name: [] for name, _ in targets}
        for round_no in range(args.rounds):
            # Alternate the order so neither server always runs right after the other's load.
            for name, url in targets if round_no % 2 == 0 else targets[::-1]:
                figures = run_load(url, payload_file, args)
                results[name].append(figures)
                print(
                    f"  round {round_no + 1} {name:20s} {figures['rps']:8.1f} req/s  p50 {figures['p50_ms']:6.2f} ms"
                    f"  p99 {figures['p99_ms']:6.2f} ms  errors {figures['errors']}",
                    flush=True,
                )

        # Proof that ours measured with metrics and drift on.
        import httpx

        scraped = httpx.get(f"{ours_url}/metrics", timeout=10).text
        drift_on = "modelpilot_drift_score{" in scraped

        def median(name: str, key: str) -> float:
            """Throughput: total over all rounds; percentiles: over the latencies of all rounds pooled."""
            runs = results[name]
            if key == "rps":
                return sum(r["requests"] for r in runs) / (args.seconds * len(runs))
            pooled = sorted(x for r in runs for x in r["latencies_ms"])
            q = 0.5 if key == "p50_ms" else 0.99
            return pooled[min(len(pooled) - 1, int(round(q * (len(pooled) - 1))))]

        b_rps, o_rps = median("baseline", "rps"), median("ours", "rps")
        b_p50, o_p50 = median("baseline", "p50_ms"), median("ours", "p50_ms")
        b_p99, o_p99 = median("baseline", "p99_ms"), median("ours", "p99_ms")
        print()
        print(f"{'':28s}{'req/s':>10s}{'p50 ms':>10s}{'p99 ms':>10s}")
        print(f"{'mlflow models serve':28s}{b_rps:10.1f}{b_p50:10.2f}{b_p99:10.2f}")
        print(f"{'modelpilot (metrics+drift)':28s}{o_rps:10.1f}{o_p50:10.2f}{o_p99:10.2f}")
        for name, _ in targets[2:]:
            print(f"{name[:28]:28s}{median(name, 'rps'):10.1f}{median(name, 'p50_ms'):10.2f}{median(name, 'p99_ms'):10.2f}")
        print(
            f"{'ratio ours/baseline':28s}{o_rps / b_rps:10.3f}{o_p50 / b_p50:10.3f}{o_p99 / b_p99:10.3f}"
        )
        print(f"drift exported during the run: {drift_on}")
        target = o_rps >= b_rps and o_p99 <= 1.1 * b_p99
        print(f"target (throughput >= 1.0x, p99 <= 1.1x baseline): {'met' if target else 'MISSED'}")
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
    sys.exit(main())
