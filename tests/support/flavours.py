"""Models of several MLflow flavours, logged and registered in the tests' MLflow server, and the wheels a
package index needs to serve them to a runtime that has only scikit-learn.

    models = register_flavours(mlflow, work_dir)   # {"sklearn": {...}, "xgboost": {...}, "lightgbm": ..., "pyfunc": ...}
    wheels = flavour_wheels()                                # a folder of wheels, downloaded once and cached

Each entry holds the registered name and version and what the model predicts in-process for ROWS (loaded
back from the registry with mlflow.pyfunc, as a user would check it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from importlib import metadata
from pathlib import Path

from tests.cluster.launcher import cache_dir
from tests.support.mlflow import MlflowServer
from tests.support.package_index import make_wheel
from tests.support.processes import exclusive_lock

COLUMNS = ["f0", "f1", "f2", "f3"]
ROWS = [[0.5, -1.2, 0.3, 2.0], [-0.7, 0.1, 1.5, -0.4], [1.9, 0.8, -0.6, 0.0], [-1.1, -0.9, 0.2, 0.7]]
# The packages the flavours need beyond the runtime, and the runtime's own ones uv resolves against.
INDEX_PACKAGES = ("xgboost-cpu", "lightgbm", "narwhals", "numpy", "scipy")
PRIVATE_PACKAGE = ("modelpilot-rules", "1.3")

_REGISTER = textwrap.dedent(
    """
    import json, os, sys
    import lightgbm, mlflow, numpy as np, pandas as pd, xgboost
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from importlib import metadata
    from mlflow.models import infer_signature

    code_dir, columns, rows = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=columns)
    y = ((X["f0"] + 0.5 * X["f1"] - X["f3"]) > 0).astype(int)
    signature = infer_signature(X, y)
    logged = {}

    with mlflow.start_run():
        model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
        logged["sklearn"] = mlflow.sklearn.log_model(
            model, name="model", signature=signature, registered_model_name="flavour-sklearn",
            # Explicit: inferred ones would list whatever this process imported (pytest, say).
            pip_requirements=[f"{p}=={metadata.version(p)}" for p in ("scikit-learn", "skops", "numpy", "pandas")])

    with mlflow.start_run():
        model = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(X, y)
        logged["xgboost"] = mlflow.xgboost.log_model(
            model, name="model", signature=signature, registered_model_name="flavour-xgboost",
            pip_requirements=[f"xgboost-cpu=={metadata.version('xgboost-cpu')}"])

    with mlflow.start_run():
        model = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, y)
        logged["lightgbm"] = mlflow.lightgbm.log_model(
            model, name="model", signature=signature, registered_model_name="flavour-lightgbm",
            pip_requirements=[f"lightgbm=={metadata.version('lightgbm')}"])

    class Rules(mlflow.pyfunc.PythonModel):
        # rules_lib comes with the model (code_paths); modelpilot_rules from a private index.
        def predict(self, context, model_input):
            import modelpilot_rules
            import rules_lib
            return [rules_lib.score(row) * modelpilot_rules.WEIGHT for row in model_input.itertuples(index=False)]

    with mlflow.start_run():
        logged["pyfunc"] = mlflow.pyfunc.log_model(
            name="model", python_model=Rules(), code_paths=[os.path.join(code_dir, "rules_lib")],
            signature=infer_signature(X, np.zeros(len(X))), registered_model_name="flavour-pyfunc",
            pip_requirements=[sys.argv[4]])

    sys.path.insert(0, sys.argv[5])  # the private package, importable here to check the model in-process
    result = {}
    frame = pd.DataFrame(rows, columns=columns)
    for flavour, info in logged.items():
        name, version = f"flavour-{flavour}", str(info.registered_model_version)
        loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
        result[flavour] = {"name": name, "version": version,
                           "predictions": np.asarray(loaded.predict(frame)).tolist()}
    print("REGISTERED", json.dumps(result))
    """
)


def register_flavours(server: MlflowServer, work: Path) -> dict[str, dict]:
    """Register a scikit-learn, an XGBoost, a LightGBM and a custom pyfunc model (with code_paths and a
    private package)."""
    code = work / "code" / "rules_lib"
    code.mkdir(parents=True, exist_ok=True)
    (code / "__init__.py").write_text("def score(row):\n    return round(row.f0 * 2 - row.f2, 6)\n")
    private = work / "private"
    private.mkdir(exist_ok=True)
    (private / "modelpilot_rules.py").write_text("WEIGHT = 3\n")
    name, version = PRIVATE_PACKAGE
    args = [str(work / "code"), json.dumps(COLUMNS), json.dumps(ROWS), f"{name}=={version}", str(private)]
    env = {**os.environ, **server.env}
    done = subprocess.run([sys.executable, "-c", _REGISTER, *args], env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"registering the flavours failed:\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("REGISTERED "))
    return json.loads(line.split(" ", 1)[1])


def private_wheel(folder: Path) -> Path:
    name, version = PRIVATE_PACKAGE
    return make_wheel(folder, name, version, {"modelpilot_rules.py": "WEIGHT = 3\n"})


def flavour_wheels() -> Path:
    """Wheels of INDEX_PACKAGES at the versions installed here, downloaded from PyPI once and kept."""
    pins = [f"{p}=={metadata.version(p)}" for p in INDEX_PACKAGES]
    folder = cache_dir() / "wheels" / "-".join(pins).replace("==", "")
    cache_dir().mkdir(parents=True, exist_ok=True)
    with exclusive_lock(cache_dir() / "wheels.lock", timeout=900):
        if not folder.is_dir():
            scratch = Path(tempfile.mkdtemp(prefix="wheels-", dir=cache_dir()))
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(scratch), *pins]
            done = subprocess.run(command, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                shutil.rmtree(scratch, ignore_errors=True)
                raise RuntimeError(f"downloading {', '.join(pins)} failed:\n{done.stderr[-2000:]}")
            folder.parent.mkdir(exist_ok=True)
            scratch.rename(folder)
    return folder
