"""Request logging in the real model server process, to a real HTTP sink on loopback and to stdout."""

from __future__ import annotations

import http.server
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelpilot.serving.request_log import REDACTED, TOKEN_ENV
from tests.support.leaks import secret_value

from .conftest import Fetched, RegisteredModels, ServerProcess, split

pytestmark = pytest.mark.mlflow

TOKEN = secret_value("request-log-token")
COLUMNS = [f"f{i}" for i in range(5)]
REDACT = ("f1", "f3")


class Sink(http.server.ThreadingHTTPServer):
    """Collects what the server POSTs: each body's JSON lines, and the headers of each POST."""

    daemon_threads = True

    def __init__(self, answer: int = 200) -> None:
        self.answer = answer
        self.records: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/ingest"

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.records)


class _SinkHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Sink

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.headers.append(dict(self.headers))
            if self.server.answer == 200:
                self.server.records.extend(json.loads(line) for line in body.splitlines())
        self.send_response(self.server.answer)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink()
    yield server
    server.shutdown()
    server.server_close()


def start_server(fetched: Fetched, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
    server = ServerProcess(fetched.dest, "--no-drift", *args, env=env)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(server.metrics()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def accounted(server: ServerProcess) -> tuple[float, float, float]:
    """(sampled, written, dropped) once every sampled request is written or dropped (or after 60 s)."""
    deadline = time.monotonic() + 60
    while True:
        sampled = metric(server, "modelpilot_request_log_sampled_total")
        written = metric(server, "modelpilot_request_log_written_total")
        dropped = metric(server, "modelpilot_request_log_dropped_total")
        if sampled == written + dropped or time.monotonic() > deadline:
            return sampled, written, dropped
        time.sleep(0.2)


def wait_for(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_every_request_is_logged_with_its_answer_and_named_fields_redacted(
    fetched_main: Fetched, registered: RegisteredModels, sink: Sink
):
    server = start_server(
        fetched_main, "--log-requests-fraction", "1", "--log-requests-sink", sink.url,
        "--log-requests-redact", ",".join(REDACT), env={TOKEN_ENV: TOKEN},
    )  # fmt: skip
    try:
        rows = registered.holdout.iloc[:5]
        scored = server.client.post("/invocations", json=split(rows))
        records = server.client.post("/invocations", json={"dataframe_records": rows.iloc[:2].to_dict("records")})
        csv = server.client.post(
            "/invocations", content=rows.iloc[:3].to_csv(index=False), headers={"Content-Type": "text/csv"}
        )
        bad = server.client.post("/invocations", content=b"{not json", headers={"Content-Type": "application/json"})
        assert [r.status_code for r in (scored, records, csv, bad)] == [200, 200, 200, 400]
        assert scored.json()["predictions"] == registered.holdout_predictions[:5]  # answers untouched
        sampled, written, dropped = accounted(server)
        log = server.log
    finally:
        server.stop()

    assert (sampled, written, dropped) == (4, 4, 0)
    got = sink.snapshot()
    assert len(got) == 4  # nothing lost: every scored request, once, in order
    for record in got:
        assert (record["deployment"], record["model_name"], record["model_version"], record["track"]) == (
            "fraud", "serving-clf", "1", "canary",
        )  # fmt: skip
        assert (record["protocol"], record["method"], record["path"]) == ("mlflow", "POST", "/invocations")
        assert record["latency_seconds"] > 0
        assert datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    split_record, records_record, csv_record, bad_record = got
    assert len({record["id"] for record in got}) == 4

    # dataframe_split: the named columns' cells redacted, the others exactly as sent.
    logged = split_record["request"]["dataframe_split"]
    assert logged["columns"] == COLUMNS
    for sent_row, logged_row in zip(rows.to_numpy().tolist(), logged["data"]):
        assert logged_row == [REDACTED if name in REDACT else value for name, value in zip(COLUMNS, sent_row)]
    assert split_record["status"] == 200 and split_record["response"] == {"predictions": registered.holdout_predictions[:5]}

    # dataframe_records: the named keys redacted in every record.
    assert [set(k for k, v in r.items() if v == REDACTED) for r in records_record["request"]["dataframe_records"]] == [
        set(REDACT)
    ] * 2

    # CSV: logged as CSV text, the named columns' cells redacted.
    assert csv_record["request_format"] == "csv"
    header, *lines = csv_record["request"].splitlines()
    assert header.split(",") == COLUMNS and len(lines) == 3
    assert all(line.split(",")[1] == REDACTED and line.split(",")[3] == REDACTED for line in lines)
    assert csv_record["response"] == {"predictions": registered.holdout_predictions[:3]}

    # Unparseable JSON cannot be redacted: logged without its body, saying why; MLflow's answer is kept.
    assert bad_record["status"] == 400 and bad_record["request"] is None
    assert "not valid JSON" in bad_record["request_omitted"]
    assert bad_record["response"]["error_code"] == "BAD_REQUEST" and "stack_trace" not in bad_record["response"]

    # The sink got the token; the server's log never shows it.
    assert {headers["Authorization"] for headers in sink.headers} == {f"Bearer {TOKEN}"}
    assert {headers["Content-Type"] for headers in sink.headers} == {"application/x-ndjson"}
    assert TOKEN not in log


def test_a_fraction_samples_within_a_binomial_bound(fetched_main: Fetched, registered: RegisteredModels, sink: Sink):
    requests, fraction = 400, 0.5
    server = start_server(fetched_main, "--log-requests-fraction", str(fraction), "--log-requests-sink", sink.url)
    try:
        sent = {}
        for i in range(requests):
            row = registered.holdout.iloc[i : i + 1]
            assert server.client.post("/invocations", json=split(row)).status_code == 200
            sent[float(row["f0"].iloc[0])] = row.to_numpy().tolist()[0]
        sampled, written, dropped = accounted(server)
    finally:
        server.stop()
    logged = sink.snapshot()
    # Each request is logged independently with probability 1/2: within 5 standard deviations of the mean
    # (a false alarm about once in 1.7 million runs).
    mean, sd = requests * fraction, math.sqrt(requests * fraction * (1 - fraction))
    assert mean - 5 * sd <= len(logged) <= mean + 5 * sd, len(logged)
    assert (sampled, written, dropped) == (len(logged), len(logged), 0)
    # Every record is one of the requests sent, each at most once, with its row intact.
    firsts = [record["request"]["dataframe_split"]["data"][0] for record in logged]
    assert len({row[0] for row in firsts}) == len(firsts)
    assert all(sent[row[0]] == row for row in firsts)


@pytest.fixture
def silent_sink() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/ingest"


def test_a_sink_that_never_answers_neither_slows_nor_fails_scoring(
    fetched_main: Fetched, registered: RegisteredModels, silent_sink: str
):
    queue, timeout, requests = 20, 600, 200  # the writer stays on its first batch for the whole test
    server = start_server(
        fetched_main, "--log-requests-fraction", "1", "--log-requests-sink", silent_sink,
        "--log-requests-queue", str(queue), "--log-requests-timeout", str(timeout),
    )  # fmt: skip
    try:
        rows = registered.holdout
        for i in range(requests):
            answer = server.client.post("/invocations", json=split(rows.iloc[i : i + 2]))
            assert answer.status_code == 200
            assert answer.json()["predictions"] == registered.holdout_predictions[i : i + 2]
        wait_for(lambda: metric(server, "modelpilot_request_log_sampled_total") >= requests)
        sampled = metric(server, "modelpilot_request_log_sampled_total")
        queue_full = metric(server, "modelpilot_request_log_dropped_total", reason="queue_full")
        written = metric(server, "modelpilot_request_log_written_total")
        # The server's own latency histogram: no scoring request waited anywhere near the sink's timeout,
        # as every one would have if logging could hold a request up.
        count = metric(server, "modelpilot_request_duration_seconds_count")
        under_10s = metric(server, "modelpilot_request_duration_seconds_bucket", le="10.0")
        assert server.client.get("/ready").status_code == 200
    finally:
        server.stop()
    assert sampled == requests and written == 0
    # The writer holds at most one batch (100 records) waiting on the sink, the queue holds 20: the rest
    # is dropped and counted.
    assert queue_full >= requests - 100 - queue
    assert count == requests and under_10s == count


def test_a_refusing_sink_drops_and_counts_and_never_prints_the_token(fetched_main: Fetched, registered: RegisteredModels):
    refusing = Sink(answer=401)
    try:
        server = start_server(
            fetched_main, "--log-requests-fraction", "1", "--log-requests-sink", f"{refusing.url}?key=q-s3cret",
            env={TOKEN_ENV: TOKEN},
        )  # fmt: skip
        try:
            for i in range(3):
                assert server.client.post("/invocations", json=split(registered.holdout.iloc[i : i + 1])).status_code == 200
            sampled, written, dropped = accounted(server)
            sink_errors = metric(server, "modelpilot_request_log_dropped_total", reason="sink_error")
            log = server.log
        finally:
            server.stop()
    finally:
        refusing.shutdown()
        refusing.server_close()
    assert (sampled, written, dropped, sink_errors) == (3, 0, 3, 3)
    assert {headers["Authorization"] for headers in refusing.headers} == {f"Bearer {TOKEN}"}
    assert "HTTP 401" in log and refusing.url in log  # the failure is reported, with the sink's address
    assert TOKEN not in log and "q-s3cret" not in log  # but not the token, nor the URL's query


def test_stdout_records_are_json_lines_in_the_servers_output(fetched_main: Fetched, registered: RegisteredModels):
    server = start_server(fetched_main, "--log-requests-fraction", "1", "--log-requests-redact", "f0")
    try:
        for i in range(3):
            assert server.client.post("/invocations", json=split(registered.holdout.iloc[i : i + 1])).status_code == 200
        sampled, written, dropped = accounted(server)
        output = server.log
    finally:
        server.stop()
    records = [json.loads(line) for line in output.splitlines() if line.startswith('{"timestamp"')]
    assert (sampled, written, dropped) == (3, 3, 0) and len(records) == 3
    for i, record in enumerate(records):
        assert (record["model_version"], record["track"], record["status"]) == ("1", "canary", 200)
        row = record["request"]["dataframe_split"]["data"][0]
        assert row[0] == REDACTED and row[1:] == registered.holdout.iloc[i].to_numpy().tolist()[1:]
        assert record["response"] == {"predictions": registered.holdout_predictions[i : i + 1]}


def test_open_inference_requests_are_logged_with_named_tensors_redacted(
    fetched_main: Fetched, registered: RegisteredModels, sink: Sink
):
    import numpy as np
    import tritonclient.http as triton

    server = start_server(
        fetched_main, "--log-requests-fraction", "1", "--log-requests-sink", sink.url,
        "--log-requests-redact", ",".join(REDACT),
    )  # fmt: skip
    rows = registered.holdout.iloc[:4]
    try:
        inputs = [{"name": c, "datatype": "FP64", "shape": [4], "data": rows[c].tolist()} for c in COLUMNS]
        answer = server.client.post("/v2/models/serving-clf/infer", json={"id": "req-1", "inputs": inputs})
        assert answer.status_code == 200, answer.text
        # tritonclient's default: the binary tensor data extension (a JSON part, then raw tensors).
        client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=60)
        try:
            tensors = []
            for column in COLUMNS:
                tensor = triton.InferInput(column, [4, 1], "FP64")
                tensor.set_data_from_numpy(rows[column].to_numpy(dtype=np.float64).reshape(-1, 1), binary_data=True)
                tensors.append(tensor)
            binary = client.infer("serving-clf", tensors)
        finally:
            client.close()
        assert binary.as_numpy(binary.get_response()["outputs"][0]["name"]).ravel().tolist() == registered.holdout_predictions[:4]
        sampled, written, dropped = accounted(server)
    finally:
        server.stop()
    assert (sampled, written, dropped) == (2, 2, 0)
    json_record, binary_record = sink.snapshot()
    for record in (json_record, binary_record):
        assert (record["protocol"], record["path"], record["status"]) == ("v2", "/v2/models/serving-clf/infer", 200)
        assert (record["model_version"], record["track"]) == ("1", "canary")
    logged = {tensor["name"]: tensor for tensor in json_record["request"]["inputs"]}
    for column in COLUMNS:
        assert logged[column]["data"] == (REDACTED if column in REDACT else rows[column].tolist())
    assert json_record["request"]["id"] == "req-1"
    assert json_record["response"] == answer.json()
    # Binary tensor data is never logged; its JSON part is, with each tensor's size.
    assert [t["name"] for t in binary_record["request"]["inputs"]] == COLUMNS
    assert all("data" not in tensor for tensor in binary_record["request"]["inputs"])
    assert binary_record["request_omitted"] == f"{5 * 4 * 8} bytes of binary tensor data are not logged"
