"""The Argo CD health check of ModelDeployments, shipped as Argo CD ships its own (a
resource_customizations/<group>/<kind> folder: health.lua, health_test.yaml, testdata/), and run in
gopher-lua, the Lua VM Argo CD runs it in, with the libraries Argo CD opens for a check set in argocd-cm.
Also the Argo CD Applications that install the operator and sync ModelDeployments."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import get_args

import pytest
import yaml

from modelpilot.api.base import GROUP, KIND, VERSION
from modelpilot.api.crd import crd
from modelpilot.api.spec import ModelDeploymentSpec
from modelpilot.api.status import ModelDeploymentStatus, Phase, RolloutStatus
from tests.support.lua_health_build import ensure_lua_health

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "manifests" / "argocd"
CHECK = ARGOCD / "resource_customizations" / GROUP / KIND
SCRIPT = CHECK / "health.lua"
CASES = yaml.safe_load((CHECK / "health_test.yaml").read_text())["tests"]
CONFIG_KEY = f"resource.customizations.health.{GROUP}_{KIND}"


def fixture(case: dict) -> dict:
    return yaml.safe_load((CHECK / case["inputPath"]).read_text())


@pytest.fixture(scope="module")
def lua_health() -> Path:
    if shutil.which("go") is None:
        pytest.skip("go is not installed: it builds lua-health, the gopher-lua runner the health check is tested in")
    return ensure_lua_health()


def run_lua(runner: Path, script: Path, obj: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(runner), str(script)], input=json.dumps(obj), capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize("case", CASES, ids=lambda case: Path(case["inputPath"]).stem)
def test_each_case_of_health_test_yaml_in_gopher_lua(lua_health, case):
    done = run_lua(lua_health, SCRIPT, fixture(case))
    assert done.returncode == 0, done.stderr
    expected = case["healthStatus"]
    assert json.loads(done.stdout) == {"status": expected["status"], "message": expected.get("message", "")}


def test_the_runner_opens_only_what_argo_cd_opens_for_a_check_from_argocd_cm(lua_health, tmp_path):
    # Argo CD opens every library only for its built-in checks: ours must do without string and math,
    # and reach os.time and os.date through require("os").
    for script, works in [
        ('local os = require("os"); return {status = "Healthy", message = os.date("!%Y", 0)}', True),
        ('return {status = "Healthy", message = table.concat({"a", "b"})}', True),
        ('return {status = "Healthy", message = string.upper("a")}', False),
        ('return {status = "Healthy", message = tostring(math.floor(1.5))}', False),
        ('return {status = "Healthy", message = tostring(os.time())}', False),
    ]:
        path = tmp_path / "check.lua"
        path.write_text(script)
        assert (run_lua(lua_health, path, {}).returncode == 0) is works, script


def test_every_fixture_has_a_case_and_every_case_a_fixture():
    assert sorted(case["inputPath"] for case in CASES) == sorted(
        str(path.relative_to(CHECK)) for path in (CHECK / "testdata").glob("*.yaml")
    )


def test_every_phase_and_rollout_phase_of_the_api_has_a_fixture():
    statuses = [fixture(case).get("status") or {} for case in CASES]
    assert set(get_args(Phase)) <= {status.get("phase") for status in statuses}
    rollout_phases = get_args(RolloutStatus.model_fields["phase"].annotation)
    assert set(rollout_phases) <= {(status.get("rollout") or {}).get("phase") for status in statuses}


@pytest.mark.parametrize("case", CASES, ids=lambda case: Path(case["inputPath"]).stem)
def test_each_fixture_is_a_modeldeployment_the_api_accepts(case):
    obj = fixture(case)
    assert (obj["apiVersion"], obj["kind"]) == (f"{GROUP}/{VERSION}", KIND)
    ModelDeploymentSpec.model_validate(obj["spec"])
    if "status" in obj:
        ModelDeploymentStatus.model_validate(obj["status"])
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _unknown_fields(obj, schema) == []


def _unknown_fields(value, schema: dict, path: str = "") -> list[str]:
    """Fields of `value` the CRD's schema does not define (pydantic ignores them, the API server drops them)."""
    if isinstance(value, dict) and "properties" in schema:
        unknown = []
        for key, item in value.items():
            if key in schema["properties"]:
                unknown += _unknown_fields(item, schema["properties"][key], f"{path}.{key}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in schema:
                unknown.append(f"{path}.{key}")
        return unknown
    if isinstance(value, list) and "items" in schema:
        return [field for i, item in enumerate(value) for field in _unknown_fields(item, schema["items"], f"{path}[{i}]")]
    return []


def test_the_installable_copies_are_the_tested_check():
    script = SCRIPT.read_text()
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    assert patch["data"][CONFIG_KEY] == script
    values = yaml.safe_load((ARGOCD / "argo-cd-values.yaml").read_text())
    assert values["configs"]["cm"][CONFIG_KEY] == script
    # docs/gitops.md shows the patch as it is.
    assert (ARGOCD / "argocd-cm-patch.yaml").read_text().split("\ndata:\n", 1)[1] in (ROOT / "docs" / "gitops.md").read_text()


def applications() -> dict[str, dict]:
    paths = [*sorted((ARGOCD / "applications").glob("*.yaml")), ARGOCD / "app-of-apps.yaml"]
    return {path.stem: yaml.safe_load(path.read_text()) for path in paths}


def test_the_applications_use_paths_of_this_repository():
    apps = applications()
    assert set(apps) == {"modelpilot", "models", "app-of-apps"}
    for name, app in apps.items():
        assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application"), name
        source = app["spec"]["source"]
        assert (ROOT / source["path"]).is_dir(), f"{name}: {source['path']}"

    chart = ROOT / apps["modelpilot"]["spec"]["source"]["path"]
    assert (chart / "Chart.yaml").is_file() and (chart / "templates" / "crd.yaml").is_file()
    chart_values = yaml.safe_load((chart / "values.yaml").read_text())
    assert set(apps["modelpilot"]["spec"]["source"]["helm"]["valuesObject"]) <= set(chart_values)

    models = apps["models"]["spec"]["source"]
    excluded = ROOT / models["path"] / models["directory"]["exclude"]
    assert excluded.is_file()
    synced = [p for p in (ROOT / models["path"]).glob("*.yaml") if p != excluded]
    kinds = {doc["kind"] for path in synced for doc in yaml.safe_load_all(path.read_text()) if doc}
    assert KIND in kinds and "Secret" not in kinds

    parent = apps["app-of-apps"]["spec"]["source"]["path"]
    assert ROOT / parent == ARGOCD / "applications"


def test_the_operator_syncs_before_the_modeldeployments():
    apps = applications()
    wave = {name: int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for name, app in apps.items()
            if name != "app-of-apps"}  # fmt: skip
    assert wave["modelpilot"] < wave["models"]
    models = apps["models"]["spec"]["syncPolicy"]
    assert "SkipDryRunOnMissingResource=true" in models["syncOptions"] and models["retry"]["limit"] > 0
