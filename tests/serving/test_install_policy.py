"""Requirements policy Install: the fetch step installs what the model needs and the runtime lacks into an
environment layered over the runtime, from the index it is given, and the model server runs in it.

The model is a pyfunc that imports a package only our own index has (`modelpilot-scale`), pinned at 2.0
while the index also holds 1.0; each version scales by a different factor, so an answer shows which one
the server runs with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.serving.conftest import PYTHON, ServerProcess, run_fetch
from tests.support.leaks import secret_value
from tests.support.package_index import PackageIndex, make_wheel
from tests.support.figures import report_figure

INDEX_USER, INDEX_PASSWORD = "mirror-reader", secret_value("index-password")

_LOG_MODEL = textwrap.dedent(
    """
    import json, sys
    import mlflow

    class Scaled(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            import modelpilot_scale
            return [modelpilot_scale.scale(x) for x in model_input["x"]]

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Scaled(), pip_requirements=sys.argv[1:],
                                       registered_model_name="serving-install")
    print(json.dumps({"name": "serving-install", "version": str(info.registered_model_version)}))
    """
)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    for version, factor in (("1.0", 10), ("2.0", 100)):
        make_wheel(folder, "modelpilot-scale", version, {"modelpilot_scale.py": f"def scale(x):\n    return x * {factor}\n"})
    return folder


@pytest.fixture(scope="module")
def model_uri(mlflow_server) -> str:
    done = subprocess.run([PYTHON, "-c", _LOG_MODEL, "modelpilot-scale==2.0"], env={**os.environ, **mlflow_server.env},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout.strip().splitlines()[-1])
    return f"models:/{model['name']}/{model['version']}"


@pytest.fixture
def index(wheels):
    served = PackageIndex(wheels, username=INDEX_USER, password=INDEX_PASSWORD)
    yield served
    served.stop()


def install(mlflow_server, model_uri: str, dest: Path, envs: Path, index_url: str, installer: str, **env: str):
    args = ["--environments", str(envs), "--index-url", index_url, "--installer", installer]
    credentials = {"MODELPILOT_INDEX_USERNAME": INDEX_USER, "MODELPILOT_INDEX_PASSWORD": INDEX_PASSWORD, **env}
    return run_fetch(mlflow_server, model_uri, dest, "Install", *args, **credentials)


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_the_model_is_served_from_its_environment_and_a_second_pod_installs_nothing(
    mlflow_server, model_uri, index, tmp_path, installer
):
    envs = tmp_path / "envs"
    first = install(mlflow_server, model_uri, tmp_path / "pod-1", envs, index.url, installer)
    assert first.returncode == 0, first.stderr
    environment = first.manifest["environment"]
    assert environment["reused"] is False and environment["installer"] == installer
    assert environment["wanted"] == ["modelpilot-scale==2.0"]
    assert environment["installed"] == ["modelpilot-scale==2.0"]  # nothing the runtime already has
    assert set(index.downloads) == {"modelpilot_scale-2.0-py3-none-any.whl"}
    asked = index.requests
    report_figure(f"{installer}: cold install {environment['seconds']:.2f} s")

    # The second pod finds the environment built: not one request reaches the index.
    second = install(mlflow_server, model_uri, tmp_path / "pod-2", envs, index.url, installer)
    assert second.returncode == 0, second.stderr
    assert second.manifest["environment"]["reused"] is True
    assert second.manifest["environment"]["path"] == environment["path"]
    assert index.requests == asked
    print(f"{installer}: second pod {second.manifest['environment']['seconds']:.3f} s")

    for output in (first.stdout, first.stderr, json.dumps(first.manifest)):
        assert INDEX_PASSWORD not in output
    server = ServerProcess(second.dest)
    try:
        server.wait_ready()
        answer = server.client.post("/invocations", json={"dataframe_split": {"columns": ["x"], "data": [[1], [2]]}})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": [100, 200]}  # version 2.0 of the package, from the environment
        assert "entering the model's environment" in server.log
    finally:
        server.stop()


def test_the_runtime_is_untouched_by_the_install(mlflow_server, model_uri, index, tmp_path):
    fetched = install(mlflow_server, model_uri, tmp_path / "model", tmp_path / "envs", index.url, "uv")
    assert fetched.returncode == 0, fetched.stderr
    probe = subprocess.run([sys.executable, "-c", "import modelpilot_scale"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'modelpilot_scale'" in probe.stderr


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_refused_index_credentials_fail_with_their_own_code_and_never_print_the_password(
    mlflow_server, model_uri, index, tmp_path, installer
):
    fetched = install(mlflow_server, model_uri, tmp_path / "model", tmp_path / "envs", index.url, installer,
                      MODELPILOT_INDEX_PASSWORD="wrong-pw-Zz9")  # fmt: skip
    assert fetched.returncode == 8, fetched.stderr
    last = fetched.stderr.strip().splitlines()[-1]
    assert last.startswith("fetch failed: requirements policy Install: could not "), last
    assert index.refused > 0 and not index.downloads
    for output in (fetched.stdout, fetched.stderr):
        assert "wrong-pw-Zz9" not in output and INDEX_PASSWORD not in output
    assert list((tmp_path / "envs").iterdir()) == []  # no half-built environment is left


def test_a_package_the_index_does_not_have_fails_saying_so(mlflow_server, index, tmp_path):
    done = subprocess.run([PYTHON, "-c", _LOG_MODEL, "modelpilot-scale==9.9"], env={**os.environ, **mlflow_server.env},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout.strip().splitlines()[-1])
    uri = f"models:/{model['name']}/{model['version']}"
    fetched = install(mlflow_server, uri, tmp_path / "model", tmp_path / "envs", index.url, "uv")
    assert fetched.returncode == 8
    last = fetched.stderr.strip().splitlines()[-1]
    assert "modelpilot-scale" in last and "9.9" in last, last
    assert [p.name for p in (tmp_path / "envs").iterdir()] == []  # no half-built environment is left
