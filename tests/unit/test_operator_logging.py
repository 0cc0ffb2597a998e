"""The operator's log never carries the URLs its HTTP clients request, and its level is set by flag or environment."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from modelpilot.__main__ import QUIET_LOGGERS, configure_logging, parse_args


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def loopback_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/2.0/mlflow/registered-models/get?name=secret-model"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    root.handlers[:], level, levels = saved
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def test_request_urls_stay_out_of_the_log_even_when_verbose(loopback_url, caplog, restore_logging):
    with caplog.at_level(logging.DEBUG):
        httpx.get(loopback_url)
    assert "secret-model" in caplog.text  # httpx does log it, left alone

    caplog.clear()
    configure_logging(verbose=True)
    with caplog.at_level(logging.DEBUG):
        httpx.get(loopback_url)
    assert "secret-model" not in caplog.text and "127.0.0.1" not in caplog.text


def test_log_level_comes_from_the_environment_and_the_flag_wins():
    assert parse_args([], env={}).log_level == "info"
    assert parse_args([], env={"MODELPILOT_LOG_LEVEL": "WARNING"}).log_level == "warning"
    assert parse_args(["--log-level=debug"], env={"MODELPILOT_LOG_LEVEL": "error"}).log_level == "debug"


@pytest.mark.parametrize("argv, env", [([], {"MODELPILOT_LOG_LEVEL": "loud"}), (["--log-level=loud"], {})])
def test_an_unknown_log_level_is_refused_by_name(argv, env, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv, env=env)
    error = capsys.readouterr().err
    assert "--log-level" in error and "'loud'" in error and "debug, info, warning, error" in error


def test_log_level_filters_the_operator_and_never_lets_request_urls_through(restore_logging):
    ours = logging.getLogger("modelpilot.handlers")
    configure_logging(verbose=False, level="warning")
    assert not ours.isEnabledFor(logging.INFO) and ours.isEnabledFor(logging.WARNING)
    configure_logging(verbose=False, level="debug")
    assert ours.isEnabledFor(logging.DEBUG)
    assert all(not logging.getLogger(name).isEnabledFor(logging.INFO) for name in QUIET_LOGGERS)
    configure_logging(verbose=False, level="error")
    assert all(not logging.getLogger(name).isEnabledFor(logging.WARNING) for name in QUIET_LOGGERS)
