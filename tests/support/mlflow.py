"""A real MLflow tracking server on loopback (SQLite backend, proxied artifact store, basic auth),
and a helper that trains, logs and registers a real scikit-learn model on it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ADMIN_USER = "admin"
ADMIN_PASSWORD = "modelpilot-test-admin-password"
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MlflowServer:
    uri: str
    root: Path
    log_path: Path

    def credentials_env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": ADMIN_USER, "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}


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
        env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(auth_config), "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only"}
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--app-name", "basic-auth",
            "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination", str(root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1",
        ]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        uri = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(uri, proc, log_path)
            yield MlflowServer(uri=uri, root=root, log_path=log_path)
        finally:
            _stop(proc)


def _wait_healthy(uri: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"mlflow server not healthy after {START_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def register_sklearn_model(server: MlflowServer, name: str, alias: str | None = None, seed: int = 0) -> str:
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
                                    registered_model_name={name!r})
version = info.registered_model_version
if {alias!r}:
    mlflow.MlflowClient().set_registered_model_alias({name!r}, {alias!r}, version)
print("VERSION", version)
"""
    env = {**os.environ, **server.credentials_env(), "MLFLOW_TRACKING_URI": server.uri}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        raise RuntimeError(f"registering {name} failed:\n{result.stderr[-3000:]}")
    return next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("VERSION"))


def set_alias(server: MlflowServer, name: str, alias: str, version: str) -> None:
    response = httpx.post(
        f"{server.uri}/api/2.0/mlflow/registered-models/alias",
        json={"name": name, "alias": alias, "version": version},
        auth=(ADMIN_USER, ADMIN_PASSWORD),
        timeout=10,
    )
    response.raise_for_status()
