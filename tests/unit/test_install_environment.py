"""Requirements policy Install: what the pod gets (volumes, fetch arguments, index credentials) and the pure
parts of building an environment (what to install, its key, credentials kept out of what is printed)."""

from __future__ import annotations

from modelpilot.api import ModelDeploymentSpec
from modelpilot.api.status import ResolvedModel
from modelpilot.render import workload
from modelpilot.render.owner import Owner
from modelpilot.serving import ENVIRONMENTS_DIR
from modelpilot.serving.environments import PackageIndexes, _reason, environment_key, wanted_requirements
from modelpilot.serving.requirements import Mismatch

OWNER = Owner(name="fraud", namespace="ml", uid="1234")
MODEL = ResolvedModel(name="fraud-detector", version="7")


def pod(runtime: dict, package_index: str | None = None) -> dict:
    spec = ModelDeploymentSpec.model_validate(
        {"model": {"name": "fraud-detector", "version": "7"}, "mlflow": {"trackingUri": "http://mlflow:5000"}, "runtime": runtime}
    )
    return workload.deployment(OWNER, spec, MODEL, "img", package_index=package_index)["spec"]["template"]["spec"]


def test_install_gives_the_fetch_step_the_index_and_credentials_and_both_containers_the_environments():
    rendered = pod({
        "requirementsPolicy": "Install",
        "packageIndex": {"url": "https://mirror/simple", "extraUrls": ["https://extra/simple"],
                         "credentialsSecret": "mirror", "installer": "pip"},
        "environmentCache": {"claimName": "model-envs"},
    })  # fmt: skip
    fetch, server = rendered["initContainers"][0], rendered["containers"][0]
    assert fetch["args"][-10:] == [
        "--requirements-policy", "Install", "--index-url", "https://mirror/simple", "--extra-index-url",
        "https://extra/simple", "--installer", "pip", "--environments", ENVIRONMENTS_DIR,
    ]  # fmt: skip
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in fetch["env"] if "valueFrom" in e}
    assert refs == {
        "MODELPILOT_INDEX_USERNAME": {"name": "mirror", "key": "username", "optional": True},
        "MODELPILOT_INDEX_PASSWORD": {"name": "mirror", "key": "password", "optional": True},
    }
    assert not any("valueFrom" in e for e in server["env"])  # the model's code never sees index credentials
    assert {"name": "environments", "persistentVolumeClaim": {"claimName": "model-envs"}} in rendered["volumes"]
    assert {"name": "environments", "mountPath": ENVIRONMENTS_DIR} in fetch["volumeMounts"]
    assert {"name": "environments", "mountPath": ENVIRONMENTS_DIR, "readOnly": True} in server["volumeMounts"]


def test_install_without_an_index_uses_the_operators_default_and_a_volume_of_the_pod():
    rendered = pod({"requirementsPolicy": "Install"}, package_index="https://default/simple")
    fetch = rendered["initContainers"][0]
    assert fetch["args"][-4:] == ["--index-url", "https://default/simple", "--environments", ENVIRONMENTS_DIR]
    assert {"name": "environments", "emptyDir": {}} in rendered["volumes"]


def test_other_policies_render_no_environment():
    for policy in ("Warn", "Refuse"):
        rendered = pod({"requirementsPolicy": policy, "packageIndex": {"url": "https://mirror/simple"}}, "https://d/simple")
        assert all(v["name"] != "environments" for v in rendered["volumes"])
        assert "--index-url" not in rendered["initContainers"][0]["args"]


def test_only_the_requirements_the_runtime_misses_are_wanted(tmp_path):
    (tmp_path / "requirements.txt").write_text("mlflow==3.17.2\n# a comment\nxgboost-cpu==3.2.0  # pinned\nnumpy==2.4.6\n")
    wanted = wanted_requirements(str(tmp_path), [Mismatch("xgboost_cpu", "==3.2.0", None)])
    assert wanted == ["xgboost-cpu==3.2.0"]


def test_the_key_follows_content_never_credentials():
    runtime = {"numpy": "2.4.6"}
    plain = PackageIndexes("https://mirror/simple")
    with_secret = PackageIndexes("https://mirror/simple", username="u", password="p")
    assert environment_key(["a==1"], runtime, plain) == environment_key(["a==1"], runtime, with_secret)
    assert environment_key(["a==1"], runtime, plain) != environment_key(["a==2"], runtime, plain)
    assert environment_key(["a==1"], runtime, plain) != environment_key(["a==1"], {"numpy": "2.4.7"}, plain)
    assert environment_key(["a==1"], runtime, plain) != environment_key(["a==1"], runtime, PackageIndexes("https://other/simple"))


def test_credentials_go_into_the_url_and_every_form_of_them_is_redacted():
    indexes = PackageIndexes("https://mirror/simple", username="ci@corp", password="p/w:1")
    assert indexes.with_credentials("https://mirror/simple") == "https://ci%40corp:p%2Fw%3A1@mirror/simple"
    assert set(indexes.secrets()) == {"ci@corp", "p/w:1", "ci%40corp", "p%2Fw%3A1"}
    assert PackageIndexes("https://mirror/simple").with_credentials("https://mirror/simple") == "https://mirror/simple"


def test_the_reason_is_the_error_with_its_cause():
    uv = "Resolved 3 packages\nerror: No solution found when resolving dependencies\n  cause: Because a==9 was not found, ...\n"
    assert _reason(uv) == "No solution found when resolving dependencies: Because a==9 was not found, ..."
    pip = "Looking in indexes: https://mirror/simple\nERROR: Could not find a version that satisfies the requirement a==9\n"
    assert _reason(pip) == "Could not find a version that satisfies the requirement a==9"
    assert _reason("something\nlast words\n") == "last words"
