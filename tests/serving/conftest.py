"""Fixtures for the model-pod tests: a real MLflow server, real registered models, fetch and server
processes.

The MLflow server runs with SQLite, a proxied artifact store (``mlflow-artifacts:``) and basic auth, as a
production registry would, so refused credentials are tested for real. Models are trained and registered
by a subprocess, so MLflow's process-wide client settings never leak into the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import leaks
from tests.support.leak_sources import scan_url
from tests.support.mlflow import MlflowServer
from tests.support.processes import free_port, stop_process, wait_http_ok

PYTHON = sys.executable


@pytest.fixture(scope="session")
def mlflow_server(mlflow: MlflowServer) -> MlflowServer:
    """The suite's MLflow server (tests/conftest.py), under the name these tests use."""
    return mlflow


# --------------------------------------------------------------------------------------------------
# Registered models
# --------------------------------------------------------------------------------------------------

_TRAIN = textwrap.dedent(
    """
    import json, sys
    import mlflow, numpy as np, pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from modelpilot.serving.baseline import build_baseline_profile, log_baseline_profile, save_baseline_profile

    out_dir, file_store = sys.argv[1], sys.argv[2]
    X, y = make_classification(n_samples=3000, n_features=5, n_informative=3, random_state=7)
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    train, holdout = X.iloc[:2000], X.iloc[2000:]
    model = LogisticRegression(max_iter=500).fit(train, y[:2000])
    signature = infer_signature(train, model.predict(train))
    result = {}

    # The main model: proxied artifact store, baseline profile among the model's artifacts.
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", signature=signature, input_example=train.iloc[:3],
                                        registered_model_name="serving-clf")
        log_baseline_profile(train, model_info=info)
    result["main"] = {"name": "serving-clf", "version": str(info.registered_model_version)}

    # Same model, requirements this runtime cannot satisfy, no baseline at all.
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", signature=signature, input_example=train.iloc[:3],
                                        extra_pip_requirements=["modelpilot-absent-package==1.0", "httpx<0.1"],
                                        registered_model_name="serving-mismatch")
    result["mismatch"] = {"name": "serving-mismatch", "version": str(info.registered_model_version)}

    # Same model in an experiment whose artifacts live in a local file store; baseline logged to the run only.
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("file-store", artifact_location=file_store))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", signature=signature, input_example=train.iloc[:3],
                                        registered_model_name="serving-filestore")
        mlflow.log_artifact(save_baseline_profile(build_baseline_profile(train), out_dir), artifact_path="modelpilot")
    result["filestore"] = {"name": "serving-filestore", "version": str(info.registered_model_version)}

    # A version whose MLmodel file the tests remove from the file store, to see verification fail.
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", signature=signature,
                                        registered_model_name="serving-broken")
    result["broken"] = {"name": "serving-broken", "version": str(info.registered_model_version),
                        "artifact_location": mlflow.get_logged_model(info.model_id).artifact_location}

    # A large model (a 24 MiB artifact) to watch download progress on.
    import os as _os
    blob = f"{out_dir}/blob.bin"
    with open(blob, "wb") as handle:
        handle.write(_os.urandom(24 * 1024 * 1024))

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return [0] * len(model_input)

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), artifacts={"blob": blob},
                                       registered_model_name="serving-large")
    result["large"] = {"name": "serving-large", "version": str(info.registered_model_version)}

    mlflow.MlflowClient().set_registered_model_alias("serving-clf", "champion", result["main"]["version"])

    holdout.to_json(f"{out_dir}/holdout.json", orient="split")
    json.dump(model.predict(holdout).tolist(), open(f"{out_dir}/holdout_predictions.json", "w"))
    json.dump(result, open(f"{out_dir}/models.json", "w"))
    """
)


@dataclass
class RegisteredModels:
    """What the training subprocess registered, and data to score with."""

    main: dict[str, str]
    mismatch: dict[str, str]
    filestore: dict[str, str]
    broken: dict[str, str]
    large: dict[str, str]
    holdout: object  # pandas DataFrame of rows drawn like the training data
    holdout_predictions: list[int]
    file_store: str

    @staticmethod
    def uri(model: dict[str, str]) -> str:
        return f"models:/{model['name']}/{model['version']}"


@pytest.fixture(scope="session")
def registered(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> RegisteredModels:
    import pandas as pd

    out = tmp_path_factory.mktemp("training")
    file_store = (out / "file-store").as_uri()
    env = {**os.environ, **mlflow_server.env}
    result = subprocess.run(
        [PYTHON, "-c", _TRAIN, str(out), file_store], env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"training and registering models failed:\n{result.stderr[-4000:]}")
    models = json.loads((out / "models.json").read_text())
    return RegisteredModels(
        main=models["main"],
        mismatch=models["mismatch"],
        filestore=models["filestore"],
        broken=models["broken"],
        large=models["large"],
        holdout=pd.read_json(out / "holdout.json", orient="split"),
        holdout_predictions=json.loads((out / "holdout_predictions.json").read_text()),
        file_store=file_store,
    )


# --------------------------------------------------------------------------------------------------
# Fetch and server processes
# --------------------------------------------------------------------------------------------------


@dataclass
class Fetched:
    returncode: int
    stdout: str
    stderr: str
    dest: Path

    @property
    def manifest(self) -> dict:
        return json.loads((self.dest / ".modelpilot-manifest.json").read_text())


def run_fetch(server: MlflowServer, model_uri: str, dest: Path, policy: str = "Warn", *args: str, **env_overrides: str) -> Fetched:
    env = {**os.environ, **server.env, **env_overrides}
    cmd = [PYTHON, "-m", "modelpilot.serving.fetch", "--model-uri", model_uri, "--dest", str(dest),
           "--requirements-policy", policy, *args]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    return Fetched(result.returncode, result.stdout, result.stderr, dest)


@pytest.fixture(scope="session")
def fetched_main(mlflow_server: MlflowServer, registered: RegisteredModels, tmp_path_factory) -> Fetched:
    fetched = run_fetch(mlflow_server, registered.uri(registered.main), tmp_path_factory.mktemp("main") / "model")
    assert fetched.returncode == 0, fetched.stderr
    return fetched


def split(frame) -> dict:
    """A scoring request body in MLflow's dataframe_split format."""
    return {"dataframe_split": frame.to_dict(orient="split")}


class ServerProcess:
    """`python -m modelpilot.serving.server` on a free loopback port."""

    def __init__(self, model_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="modelpilot-server-", suffix=".log")[1])
        cmd = [PYTHON, "-m", "modelpilot.serving.server", "--model-dir", str(model_dir),
               "--port", str(self.port), "--host", "127.0.0.1", *args]  # fmt: skip
        full_env = {
            **os.environ,
            "MODELPILOT_DEPLOYMENT": "fraud",
            "MODELPILOT_MODEL_NAME": "serving-clf",
            "MODELPILOT_MODEL_VERSION": "1",
            "MODELPILOT_TRACK": "canary",
            **(env or {}),
        }
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def first_ready_answer(self, timeout: float = 60) -> int:
        """Poll /ready until the port answers; the status code of that first answer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log[-3000:]}")
            try:
                return self.client.get("/ready", timeout=2).status_code
            except httpx.TransportError:
                time.sleep(0.05)
        raise TimeoutError(f"server did not open its port in {timeout}s:\n{self.log[-3000:]}")

    def wait_ready(self, timeout: float = 120) -> None:
        wait_http_ok(f"{self.url}/ready", self.proc, self.log_path, timeout)

    def metrics(self) -> str:
        response = self.client.get("/metrics")
        assert response.status_code == 200
        return response.text

    def stop(self) -> None:
        scan_url(f"metrics of the model server on {self.url}", f"{self.url}/metrics")
        self.client.close()
        stop_process(self.proc)
        leaks.scan(f"log of the model server on {self.url}", self.log)
        self.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def main_server(fetched_main: Fetched) -> Iterator[ServerProcess]:
    server = ServerProcess(fetched_main.dest, "--drift-window", "300", "--drift-min-rows", "50")
    try:
        server.first_status = server.first_ready_answer()
        server.wait_ready()
        yield server
    finally:
        server.stop()
