"""A real MLflow tracking server on loopback (SQLite backend, proxied artifact store, basic auth),
and a helper that trains, logs and registers a real scikit-learn model on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from .leaks import basic_auth, secret_value
from .processes import free_port, start_process, stop_process, wait_http_ok

ADMIN_USER = "admin"
ADMIN_PASSWORD = secret_value("mlflow-admin-password")
basic_auth(ADMIN_USER, ADMIN_PASSWORD)
START_TIMEOUT_S = 120


@dataclass
class MlflowServer:
    uri: str
    root: Path
    log_path: Path

    def credentials_env(self) -> dict[str, str]:
        """The keys of a credentials Secret for this server."""
        return {"MLFLOW_TRACKING_USERNAME": ADMIN_USER, "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}

    @property
    def env(self) -> dict[str, str]:
        """What the operator puts in a model's pod: tracking URI plus the Secret's keys."""
        return {"MLFLOW_TRACKING_URI": self.uri, **self.credentials_env()}


@contextmanager
def mlflow_server():
    """Start `mlflow server` with basic auth; stop it (and its workers) on exit."""
    with tempfile.TemporaryDirectory(prefix="modelpilot-mlflow-") as tmp:
        root = Path(tmp)
        port = free_port()
        auth_config = root / "auth.ini"
        auth_config.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{root}/auth.db\n"
            f"admin_username = {ADMIN_USER}\n"
            f"admin_password = {ADMIN_PASSWORD}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        log_path = root / "mlflow.log"
        env = {
            **os.environ,
            "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only",
            # No background job runners: nothing here uses them, and they cost CPU.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--app-name", "basic-auth",
            "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination", str(root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1",
        ]  # fmt: skip
        proc = start_process(cmd, env, log_path)
        uri = f"http://127.0.0.1:{port}"
        try:
            wait_http_ok(f"{uri}/health", proc, log_path, START_TIMEOUT_S)
            yield MlflowServer(uri=uri, root=root, log_path=log_path)
        finally:
            stop_process(proc)


def register_sklearn_model(
    server: MlflowServer, name: str, alias: str | None = None, seed: int = 0, extra_pip_requirements: list[str] = ()
) -> str:
    """Train a small classifier on data made here, log and register it; returns the new version number.

    Runs in a subprocess so MLflow's process-wide tracking settings never leak into the test process.
    """
    script = f"""
import mlflow, numpy as np
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng({seed})
X = rng.normal(size=(200, 4)); y = (X[:, 0] + X[:, 1] > 0).astype(int)
model = LogisticRegression().fit(X, y)
mlflow.set_tracking_uri({server.uri!r})
with mlflow.start_run():
    info = mlflow.sklearn.log_model(model, name="model", signature=infer_signature(X, model.predict(X)),
                                    registered_model_name={name!r}, extra_pip_requirements={list(extra_pip_requirements)!r} or None)
"""
    return _register(server, script, name, alias, what=name)


def predict_in_process(server: MlflowServer, name: str, version: str, rows: list[list[float]]) -> list:
    """What the registered model itself predicts for `rows`, loaded with MLflow in a subprocess."""
    script = f"""
import json, mlflow, numpy as np
mlflow.set_tracking_uri({server.uri!r})
model = mlflow.pyfunc.load_model("models:/{name}/{version}")
print("PREDICTIONS", json.dumps(np.asarray(model.predict(np.array({rows!r}))).tolist()))
"""
    env = {**os.environ, **server.credentials_env(), "MLFLOW_TRACKING_URI": server.uri}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        raise RuntimeError(f"loading {name} {version} failed:\n{result.stderr[-3000:]}")
    line = next(line for line in result.stdout.splitlines() if line.startswith("PREDICTIONS"))
    return json.loads(line.split(" ", 1)[1])


def set_alias(server: MlflowServer, name: str, alias: str, version: str) -> None:
    response = httpx.post(
        f"{server.uri}/api/2.0/mlflow/registered-models/alias",
        json={"name": name, "alias": alias, "version": version},
        auth=(ADMIN_USER, ADMIN_PASSWORD),
        timeout=10,
    )
    response.raise_for_status()


PYFUNC_BEHAVIOURS = {"good": {}, "failing": {"fail_above": 1.0}, "slow": {"sleep_seconds": 0.2}}


def register_pyfunc_model(
    server: MlflowServer,
    name: str,
    behaviour: str,
    alias: str | None = None,
    seed: int = 0,
    *,
    baseline_rows: int | None = None,
    **params: float,
) -> str:
    """Register a model version that misbehaves on its own; returns the new version number.

    The classifier is the one `register_sklearn_model` trains for the same seed, wrapped in an MLflow
    `PythonModel` whose class is defined in the training script, so cloudpickle stores it by value and the
    runtime image (which has no `tests` package) loads it. Behaviours:

    - ``good``: predicts like the scikit-learn model;
    - ``failing``: `predict` raises ValueError when any input row has feature 0 above ``fail_above``
      (default 1.0), so the server answers such requests 400 and counts a prediction error;
    - ``slow``: every `predict` sleeps ``sleep_seconds`` (default 0.2), then predicts.

    ``baseline_rows`` records a drift baseline profile of that many rows drawn like the training data (the
    200 training rows first, then further rows from the same generator) with
    `modelpilot.serving.baseline.log_baseline_profile`, into the model's artifacts and the run, as
    docs/serving.md says. Its features are positional ("0".."3"), like the model's tensor inputs.
    """
    if behaviour not in PYFUNC_BEHAVIOURS:
        raise ValueError(f"unknown behaviour {behaviour!r}: one of {', '.join(PYFUNC_BEHAVIOURS)}")
    unknown = set(params) - set(PYFUNC_BEHAVIOURS[behaviour])
    if unknown:
        raise TypeError(f"behaviour {behaviour!r} takes no parameter {', '.join(sorted(unknown))}")
    if baseline_rows is not None and baseline_rows < 1:
        raise ValueError(f"baseline_rows must be positive, got {baseline_rows}")
    settings = {**PYFUNC_BEHAVIOURS[behaviour], **{key: float(value) for key, value in params.items()}}
    script = f"""
import time
import mlflow, numpy as np
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng({seed})
X = rng.normal(size=(200, 4)); y = (X[:, 0] + X[:, 1] > 0).astype(int)
model = LogisticRegression().fit(X, y)


class Behaving(mlflow.pyfunc.PythonModel):
    def __init__(self, model, behaviour, settings):
        self.model = model
        self.behaviour = behaviour
        self.settings = settings

    def predict(self, context, model_input, params=None):
        rows = np.asarray(model_input, dtype=np.float64)
        if self.behaviour == "failing":
            above = rows[:, 0] > self.settings["fail_above"]
            if above.any():
                raise ValueError(f"{{int(above.sum())}} of {{len(rows)}} rows have feature 0 above "
                                 f"{{self.settings['fail_above']}}")
        elif self.behaviour == "slow":
            time.sleep(self.settings["sleep_seconds"])
        return self.model.predict(rows)


mlflow.set_tracking_uri({server.uri!r})
with mlflow.start_run():
    info = mlflow.pyfunc.log_model(name="model", python_model=Behaving(model, {behaviour!r}, {settings!r}),
                                   signature=infer_signature(X, model.predict(X)),
                                   registered_model_name={name!r})
    if {baseline_rows!r}:
        from modelpilot.serving.baseline import log_baseline_profile
        extra = max(0, {baseline_rows!r} - len(X))
        log_baseline_profile(np.vstack([X, rng.normal(size=(extra, 4))])[:{baseline_rows!r}], model_info=info)
"""
    return _register(server, script, name, alias, what=f"{name} ({behaviour})")


def _register(server: MlflowServer, script: str, name: str, alias: str | None, what: str) -> str:
    """Run a training script that leaves `info` (a logged, registered model) behind, in a subprocess so
    MLflow's process-wide tracking settings never leak into the test process; set the alias; the version."""
    script += f"""
version = info.registered_model_version
if {alias!r}:
    mlflow.MlflowClient().set_registered_model_alias({name!r}, {alias!r}, version)
print("VERSION", version)
"""
    env = {**os.environ, **server.credentials_env(), "MLFLOW_TRACKING_URI": server.uri}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        raise RuntimeError(f"registering {what} failed:\n{result.stderr[-3000:]}")
    return next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("VERSION"))
