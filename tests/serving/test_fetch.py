"""The fetch init container, run as a real process against a real MLflow server."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.mlflow import ADMIN_USER

from .conftest import RegisteredModels, ServerProcess, run_fetch

pytestmark = pytest.mark.mlflow


def test_fetch_downloads_verifies_and_writes_a_manifest(fetched_main, registered: RegisteredModels):
    dest = fetched_main.dest
    assert (dest / "MLmodel").is_file()
    manifest = fetched_main.manifest
    assert manifest["name"] == registered.main["name"]
    assert manifest["version"] == registered.main["version"]
    assert "sklearn" in manifest["flavors"] and "python_function" in manifest["flavors"]
    assert manifest["baseline"] == "model"
    assert (dest / "modelpilot_baseline.json").is_file()
    sizes = {f["path"]: f["size"] for f in manifest["files"]}
    assert sizes["MLmodel"] == (dest / "MLmodel").stat().st_size
    for path, size in sizes.items():
        assert (dest / path).stat().st_size == size
    assert manifest["total_bytes"] == sum(sizes.values())
    assert not (dest / ".modelpilot-fetching").exists()
    # Credentials are never printed, nor recorded.
    for text in (fetched_main.stdout, fetched_main.stderr, (dest / ".modelpilot-manifest.json").read_text()):
        assert "serving-test-admin-password" not in text
    assert "fetched serving-clf version" in fetched_main.stdout


def test_fetch_from_a_local_file_store_takes_the_baseline_from_the_run(mlflow_server, registered, tmp_path):
    fetched = run_fetch(mlflow_server, registered.uri(registered.filestore), tmp_path / "model")
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.manifest["baseline"] == "run"
    assert (tmp_path / "model" / "modelpilot_baseline.json").is_file()
    assert fetched.manifest["source"].startswith("models:/") or registered.file_store in fetched.manifest["source"]


def test_fetch_by_alias_replaces_what_an_earlier_attempt_left(mlflow_server, registered, tmp_path):
    dest = tmp_path / "model"
    (dest / "lost+found").mkdir(parents=True)
    (dest / "stale.pkl").write_text("from an earlier attempt")
    (dest / ".modelpilot-fetching").mkdir()
    fetched = run_fetch(mlflow_server, f"models:/{registered.main['name']}@champion", dest)
    assert fetched.returncode == 0, fetched.stderr
    assert not (dest / "stale.pkl").exists() and (dest / "lost+found").is_dir()
    assert (dest / "MLmodel").is_file() and not (dest / ".modelpilot-fetching").exists()
    assert fetched.manifest["version"] == registered.main["version"]
    assert fetched.manifest["alias"] == "champion"


def test_a_version_without_mlmodel_fails_verification(mlflow_server, registered, tmp_path):
    location = registered.broken["artifact_location"]
    assert location.startswith("file://")
    mlmodel = Path(urlsplit(location).path) / "MLmodel"
    mlmodel.unlink(missing_ok=True)
    fetched = run_fetch(mlflow_server, registered.uri(registered.broken), tmp_path / "model")
    assert fetched.returncode == 7
    assert "failed verification: no MLmodel file" in fetched.stderr
    assert not (tmp_path / "model" / ".modelpilot-fetching").exists()  # no partial download left behind
    assert not (tmp_path / "model" / ".modelpilot-manifest.json").exists()


def test_large_downloads_show_progress(mlflow_server, registered, tmp_path):
    fetched = run_fetch(
        mlflow_server, registered.uri(registered.large), tmp_path / "model", MODELPILOT_FETCH_PROGRESS_SECONDS="0.01"
    )
    assert fetched.returncode == 0, fetched.stderr
    assert "MiB to download into" in fetched.stdout
    progress = [line for line in fetched.stdout.splitlines() if "downloaded " in line and " of " in line]
    assert progress, fetched.stdout
    assert fetched.manifest["total_bytes"] > 24 * 1024 * 1024


def test_missing_version_fails_with_one_clear_line(mlflow_server, registered, tmp_path):
    fetched = run_fetch(mlflow_server, f"models:/{registered.main['name']}/99", tmp_path / "model")
    assert fetched.returncode == 3
    lines = fetched.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "has no version 99" in lines[0] and registered.main["name"] in lines[0]


def test_missing_model_fails_clearly(mlflow_server, tmp_path):
    fetched = run_fetch(mlflow_server, "models:/no-such-model/1", tmp_path / "model")
    assert fetched.returncode == 3
    assert "no registered model named 'no-such-model'" in fetched.stderr


def test_refused_credentials_fail_clearly_without_printing_them(mlflow_server, registered, tmp_path):
    fetched = run_fetch(
        mlflow_server, registered.uri(registered.main), tmp_path / "model",
        MLFLOW_TRACKING_USERNAME=ADMIN_USER, MLFLOW_TRACKING_PASSWORD="wrong-password-123",
    )  # fmt: skip
    assert fetched.returncode == 4
    assert "refused the credentials" in fetched.stderr and "401" in fetched.stderr
    assert "wrong-password-123" not in fetched.stdout + fetched.stderr


def test_bad_model_uri_is_a_usage_error(mlflow_server, tmp_path):
    fetched = run_fetch(mlflow_server, "runs:/abc/model", tmp_path / "model")
    assert fetched.returncode == 1
    assert "--model-uri must be models:/<name>/<version>" in fetched.stderr


def test_requirements_mismatch_refused(mlflow_server, registered, tmp_path):
    fetched = run_fetch(mlflow_server, registered.uri(registered.mismatch), tmp_path / "model", policy="Refuse")
    assert fetched.returncode == 6
    line = fetched.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "modelpilot-absent-package: wanted ==1.0, found not installed" in line
    assert "httpx: wanted <0.1, found 0." in line


def test_requirements_mismatch_warned_and_served(mlflow_server, registered, tmp_path):
    fetched = run_fetch(mlflow_server, registered.uri(registered.mismatch), tmp_path / "model", policy="Warn")
    assert fetched.returncode == 0, fetched.stderr
    assert "requirements mismatch: modelpilot-absent-package: wanted ==1.0, found not installed" in fetched.stdout
    mismatches = fetched.manifest["requirements"]["mismatches"]
    assert {"package": "modelpilot-absent-package", "wanted": "==1.0", "found": None} in mismatches
    assert fetched.manifest["baseline"] is None

    # It serves, and without a baseline it says so once and exports no drift series.
    server = ServerProcess(tmp_path / "model")
    try:
        server.wait_ready()
        rows = registered.holdout.iloc[:60]
        for start in range(0, 60, 20):
            response = server.client.post(
                "/invocations", json={"dataframe_split": rows.iloc[start : start + 20].to_dict(orient="split")}
            )
            assert response.status_code == 200, response.text
        metrics = server.metrics()
        assert "modelpilot_drift_score" not in metrics
        assert "modelpilot_feature_drift" not in metrics
        assert server.log.count("has no baseline profile") == 1
    finally:
        server.stop()


def test_server_refuses_to_start_without_a_model(tmp_path):
    os.makedirs(tmp_path / "empty")
    server = ServerProcess(tmp_path / "empty")
    try:
        assert server.proc.wait(timeout=120) == 1
        assert "cannot load the model" in server.log and "no MLmodel file" in server.log
    finally:
        server.stop()


def _small_volume_fetch(mlflow_server, model_uri: str, dest: Path, size_kib: int):
    """Run fetch with ``dest`` a tmpfs of ``size_kib`` in a private mount namespace (no root needed)."""
    import shlex
    import shutil
    import subprocess
    import sys

    from .conftest import Fetched

    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare is not available")
    probe = subprocess.run([unshare, "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user and mount namespaces are not permitted here")
    dest.mkdir(parents=True)
    fetch = [sys.executable, "-m", "modelpilot.serving.fetch", "--model-uri", model_uri, "--dest", str(dest)]
    script = f"mount -t tmpfs -o size={size_kib}k tmpfs {shlex.quote(str(dest))} && exec {shlex.join(fetch)}"
    env = {**os.environ, **mlflow_server.env}
    result = subprocess.run(
        [unshare, "--user", "--map-root-user", "--mount", "sh", "-c", script],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return Fetched(result.returncode, result.stdout, result.stderr, dest)


def test_a_volume_too_small_for_the_model_fails_before_downloading(mlflow_server, registered, tmp_path):
    fetched = _small_volume_fetch(mlflow_server, registered.uri(registered.large), tmp_path / "model", 8 * 1024)
    assert fetched.returncode == 5, fetched.stderr
    line = fetched.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "no room for the model" in line and "needs 24.0 MiB" in line


def test_disk_full_during_the_download_fails_clearly(mlflow_server, registered, fetched_main, tmp_path):
    # tmpfs charges whole 4 KiB pages per file: a volume with room for the listed bytes but not for
    # one page per file passes the up-front check and runs out of space while downloading.
    files = fetched_main.manifest["files"]
    listed = sum(f["size"] for f in files)
    pages = sum(max(1, -(-f["size"] // 4096)) for f in files)
    size_kib = -(-listed // 4096) * 4 + 4
    if size_kib >= pages * 4:
        pytest.skip("the model's files fill their pages too well to provoke ENOSPC this way")
    fetched = _small_volume_fetch(mlflow_server, registered.uri(registered.main), tmp_path / "model", size_kib)
    assert fetched.returncode == 5, fetched.stdout + fetched.stderr
    line = fetched.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "disk full while downloading model serving-clf version" in line
    assert "\n" not in line and "#####" not in line
