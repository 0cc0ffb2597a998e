"""Pure parts of the fetch step: URI parsing, error classification, redaction, requirements comparison."""

from __future__ import annotations

import errno
import logging
import time

import pytest
from modelpilot.serving.fetch import (
    CredentialsRefused,
    DiskFull,
    FetchError,
    ModelReference,
    NotFound,
    _download_with_progress,
    classify_error,
    redact_uri,
)
from modelpilot.serving.requirements import Mismatch, check_requirements


def test_model_uri_forms():
    assert ModelReference.parse("models:/fraud/7") == ModelReference("fraud", "7", None)
    assert ModelReference.parse("models:/fraud@champion") == ModelReference("fraud", None, "champion")
    for bad in ("models:/fraud", "models:/fraud/0", "runs:/abc/model", "models:/a/b/c"):
        with pytest.raises(FetchError, match="--model-uri must be"):
            ModelReference.parse(bad)


def test_uris_lose_their_credentials():
    assert redact_uri("https://user:s3cret@mlflow.example.com:5000/x") == "https://mlflow.example.com:5000/x"
    assert redact_uri("http://mlflow:5000") == "http://mlflow:5000"


def test_full_disk_is_recognised_anywhere_in_the_cause_chain():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("download failed") from inner
    except RuntimeError as outer:
        error = classify_error(outer, "model fraud version 7", "/var/lib/modelpilot/model")
    assert isinstance(error, DiskFull) and error.exit_code == 5
    assert "disk full" in str(error) and "/var/lib/modelpilot/model" in str(error)


def test_full_disk_reported_as_text_by_mlflows_parallel_download():
    message = (
        "The following failures occurred while downloading one or more artifacts from http://x/artifacts:\n"
        "##### File MLmodel #####\n[Errno 28] No space left on device: '/d/MLmodel'"
    )
    error = classify_error(RuntimeError(message), "model m version 1", "/d")
    assert isinstance(error, DiskFull) and "\n" not in str(error)


def test_multi_line_errors_become_one_line():
    error = classify_error(RuntimeError("failed:\n##### File a.pkl #####\nboom\n##### File b #####\nbang"), "m", "/d")
    assert str(error) == "cannot download m: RuntimeError: failed: [a.pkl] boom [b] bang"


@pytest.mark.parametrize(
    "message, kind",
    [
        ("API request failed with error code 403 != 200", CredentialsRefused),
        ("An error occurred (AccessDenied) when calling the GetObject operation", CredentialsRefused),
        ("An error occurred (NoSuchKey) when calling the GetObject operation", NotFound),
        ("connection reset by peer", FetchError),
    ],
)
def test_store_errors_are_classified(message, kind):
    error = classify_error(RuntimeError(message), "model m version 1", "/d")
    assert type(error) is kind


def test_error_lines_never_carry_secrets():
    url = "https://bucket.s3.amazonaws.com/m?X-Amz-Signature=abcdef&X-Amz-Credential=AKIA123 and https://u:pw@host/"
    text = str(classify_error(RuntimeError(f"403 Forbidden for url {url}"), "m", "/d"))
    assert "abcdef" not in text and "AKIA123" not in text and "u:pw" not in text


def test_requirements_are_compared_with_installed_versions(tmp_path):
    (tmp_path / "requirements.txt").write_text(
        "# comment\n"
        "-r other.txt\n"
        "mlflow>=2\n"  # satisfied by mlflow or mlflow-skinny
        "numpy<1\n"
        "modelpilot-absent-package==1.0\n"
        "pytest ; python_version < '3'\n"  # marker false: ignored
        "scikit-learn\n"
    )
    (tmp_path / "python_env.yaml").write_text("python: 3.8.10\nbuild_dependencies: [pip]\n")
    mismatches = check_requirements(str(tmp_path), python_version="3.11.7")
    packages = {m.package: m for m in mismatches}
    assert set(packages) == {"python", "numpy", "modelpilot-absent-package"}
    assert str(packages["python"]) == "python: wanted 3.8.10, found 3.11.7"
    assert packages["numpy"].wanted == "<1" and packages["numpy"].found.startswith("2.")
    assert str(packages["modelpilot-absent-package"]) == "modelpilot-absent-package: wanted ==1.0, found not installed"
    assert Mismatch("x", "==1", None).as_dict() == {"package": "x", "wanted": "==1", "found": None}


def test_no_recorded_requirements_means_no_mismatch(tmp_path):
    assert check_requirements(str(tmp_path)) == []


class _SlowRepo:
    """Writes a file in chunks with pauses, like a download over a slow link."""

    def download_artifacts(self, path, dst_path):
        with open(f"{dst_path}/model.bin", "wb") as handle:
            for _ in range(4):
                handle.write(b"x" * 1024 * 1024)
                handle.flush()
                time.sleep(0.1)


def test_download_logs_progress_while_it_runs_and_once_done(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MODELPILOT_FETCH_PROGRESS_SECONDS", "0.02")
    with caplog.at_level(logging.INFO, logger="modelpilot.serving.fetch"):
        _download_with_progress(_SlowRepo(), str(tmp_path), total=4 * 1024 * 1024)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("downloaded ")]
    assert len(lines) >= 3, lines  # periodic lines during the 0.4 s download, then the final one
    assert lines[-1] == "downloaded 4.0 MiB of 4.0 MiB (100%)"


def test_a_usage_error_is_the_whole_termination_message_without_the_usage_text(tmp_path, monkeypatch):
    from modelpilot.serving import server, termination

    (tmp_path / "termination-log").touch()
    monkeypatch.setattr(termination, "TERMINATION_LOG", str(tmp_path / "termination-log"))
    with pytest.raises(SystemExit) as exited:
        server.parse_args(["--no-such-flag"])
    assert exited.value.code == 2
    written = (tmp_path / "termination-log").read_text()
    assert written == "python -m modelpilot.serving.server: error: unrecognized arguments: --no-such-flag"


def test_outside_a_pod_no_termination_log_is_made(tmp_path, monkeypatch):
    from modelpilot.serving import termination

    monkeypatch.setattr(termination, "TERMINATION_LOG", str(tmp_path / "termination-log"))
    termination.write_termination_message("model failed to load")
    assert not (tmp_path / "termination-log").exists()
