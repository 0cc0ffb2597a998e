"""Request logging (serving/request_log/): redaction of every input format, records, sinks, the bounded
queue, and the hook in the server's ASGI layer. The real server process is exercised in
tests/serving/test_request_log.py."""

from __future__ import annotations

import asyncio
import copy
import fcntl
import http.server
import json
import logging
import threading
from collections.abc import Iterator

import httpx
import pytest

from modelpilot.serving.metrics import Identity, ServingMetrics
from modelpilot.serving.request_log.config import RequestLogConfig, config_from_args
from modelpilot.serving.request_log.log import RequestLog, sampled
from modelpilot.serving.request_log.records import Exchange, build_record, encode_record
from modelpilot.serving.request_log.redaction import PROTOCOL_MLFLOW, PROTOCOL_V2, REDACTED, redact_csv, redact_request, redact_response
from modelpilot.serving.request_log.sinks import HttpSink, SinkError, StdoutSink, check_sink, shown_sink
from modelpilot.serving.server import ServingApp, parse_args
from tests.unit.asgi import read_body

FIELDS = frozenset({"email", "ssn"})
IDENTITY = Identity("fraud", "7", "canary", model_name="fraud-detector")


# -- redaction: every format ---------------------------------------------------------------------


def redacted_request(body, protocol=PROTOCOL_MLFLOW):
    before = copy.deepcopy(body)
    out = redact_request(body, FIELDS, protocol)
    assert body == before  # pure: the caller's body is untouched
    return out


def test_dataframe_split_redacts_the_cells_of_the_named_columns():
    body = {"dataframe_split": {"columns": ["age", "email", "ssn"], "data": [[31, "a@x", "1"], [42, "b@y", "2"]], "index": [0, 1]}}
    assert redacted_request(body) == {
        "dataframe_split": {"columns": ["age", "email", "ssn"], "data": [[31, REDACTED, REDACTED], [42, REDACTED, REDACTED]], "index": [0, 1]}
    }
    # A row that is not a list cannot be matched by position: hidden whole.
    flat = {"dataframe_split": {"columns": ["email"], "data": ["a@x", "b@y"]}}
    assert redacted_request(flat)["dataframe_split"]["data"] == [REDACTED, REDACTED]
    # No named column: nothing changes.
    other = {"dataframe_split": {"columns": ["age"], "data": [[1]]}}
    assert redacted_request(other) == other


def test_dataframe_records_redacts_keys_of_every_record():
    body = {"dataframe_records": [{"age": 31, "email": "a@x"}, {"age": 42, "ssn": "2"}]}
    assert redacted_request(body) == {"dataframe_records": [{"age": 31, "email": REDACTED}, {"age": 42, "ssn": REDACTED}]}


def test_instances_as_records_as_columns_and_as_plain_tensors():
    assert redacted_request({"instances": [{"email": "a@x", "age": 1}]}) == {"instances": [{"email": REDACTED, "age": 1}]}
    assert redacted_request({"instances": {"email": ["a@x", "b@y"], "age": [1, 2]}}) == {
        "instances": {"email": REDACTED, "age": [1, 2]}
    }
    tensor = {"instances": [[1, 2], [3, 4]]}  # no names: nothing to match
    assert redacted_request(tensor) == tensor


def test_inputs_as_an_object_and_as_a_list_of_objects():
    assert redacted_request({"inputs": {"email": ["a@x"], "age": [1]}}) == {"inputs": {"email": REDACTED, "age": [1]}}
    assert redacted_request({"inputs": [{"ssn": "1", "age": 1}, {"age": 2}]}) == {
        "inputs": [{"ssn": REDACTED, "age": 1}, {"age": 2}]
    }
    assert redacted_request({"inputs": [1.0, 2.0], "params": {"k": 1}}) == {"inputs": [1.0, 2.0], "params": {"k": 1}}


def test_open_inference_tensors_are_redacted_by_name():
    request = {
        "id": "r1",
        "inputs": [
            {"name": "age", "shape": [2, 1], "datatype": "INT64", "data": [31, 42]},
            {"name": "email", "shape": [2, 1], "datatype": "BYTES", "data": ["a@x", "b@y"]},
        ],
        "outputs": [{"name": "score"}],
    }
    out = redacted_request(request, PROTOCOL_V2)
    assert out["inputs"][0] == request["inputs"][0]
    assert out["inputs"][1] == {"name": "email", "shape": [2, 1], "datatype": "BYTES", "data": REDACTED}
    assert out["outputs"] == [{"name": "score"}] and out["id"] == "r1"
    response = {"model_name": "m", "outputs": [{"name": "ssn", "shape": [1], "datatype": "BYTES", "data": ["1"]}]}
    assert redact_response(response, FIELDS, PROTOCOL_V2)["outputs"][0]["data"] == REDACTED


def test_responses_are_redacted_in_every_shape_of_predictions():
    assert redact_response({"predictions": [{"label": 1, "email": "a@x"}]}, FIELDS) == {
        "predictions": [{"label": 1, "email": REDACTED}]
    }
    assert redact_response({"predictions": {"email": ["a@x"], "label": [1]}}, FIELDS) == {
        "predictions": {"email": REDACTED, "label": [1]}
    }
    split = {"predictions": {"columns": ["label", "ssn"], "data": [[1, "9"]]}}
    assert redact_response(split, FIELDS) == {"predictions": {"columns": ["label", "ssn"], "data": [[1, REDACTED]]}}
    plain = {"predictions": [0, 1, 1]}
    assert redact_response(plain, FIELDS) == plain


def test_top_level_keys_and_bare_records_are_redacted_and_no_fields_change_nothing():
    assert redacted_request({"email": "a@x", "other": 1}) == {"email": REDACTED, "other": 1}
    assert redacted_request([{"email": "a@x"}]) == [{"email": REDACTED}]
    body = {"dataframe_records": [{"email": "a@x"}]}
    assert redact_request(body, frozenset()) is body


def test_csv_is_redacted_by_its_header_and_unparseable_csv_is_refused():
    assert redact_csv("age,email\n31,a@x\n42,\"b,y\"\n", FIELDS) == f"age,email\n31,{REDACTED}\n42,{REDACTED}\n"
    assert redact_csv("age\n1\n", FIELDS) == "age\n1\n"
    with pytest.raises(ValueError):
        redact_csv('age,email\n"1', FIELDS)


# -- records -------------------------------------------------------------------------------------


def exchange(request: bytes | list[bytes] | None, request_type="application/json", **kw) -> Exchange:
    values = dict(
        timestamp=1_800_000_000.25, protocol=PROTOCOL_MLFLOW, method="POST", path="/invocations", status=200,
        latency=0.0123456789, request_type=request_type, request_body=request, response_type="application/json",
        response_body=b'{"predictions": [1]}',
    )  # fmt: skip
    values.update(kw)
    return Exchange(**values)


def test_a_record_names_who_answered_how_and_when():
    body = [b'{"dataframe_records": [{"age": 1, ', b'"email": "a@x"}]}']  # chunks, as received
    record = build_record(exchange(body), IDENTITY, FIELDS)
    assert record["timestamp"] == "2027-01-15T08:00:00.250000Z"
    assert (record["deployment"], record["model_name"], record["model_version"], record["track"]) == (
        "fraud", "fraud-detector", "7", "canary",
    )  # fmt: skip
    assert (record["protocol"], record["method"], record["path"], record["status"]) == ("mlflow", "POST", "/invocations", 200)
    assert record["latency_seconds"] == 0.012346
    assert record["request"] == {"dataframe_records": [{"age": 1, "email": REDACTED}]}
    assert record["request_format"] == record["response_format"] == "json"
    assert record["response"] == {"predictions": [1]}
    assert len(record["id"]) == 32
    line = encode_record(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and json.loads(line) == record


@pytest.mark.parametrize(
    ("body", "content_type", "fields", "expected"),
    [
        (b"age,email\n1,a@x\n", "text/csv", FIELDS, {"request": f"age,email\n1,{REDACTED}\n", "request_format": "csv"}),
        (b"age,email\n1,a@x\n", "text/csv; charset=utf-8", frozenset(), {"request": "age,email\n1,a@x\n", "request_format": "csv"}),
        (b'age,email\n"1', "text/csv", FIELDS, {"request": None, "request_omitted": "the body is not valid CSV, so it could not be redacted"}),
        (b"{not json", "application/json", FIELDS, {"request": None, "request_omitted": "the body is not valid JSON, so it could not be redacted"}),
        (b"{not json", "application/json", frozenset(), {"request": "{not json", "request_format": "text"}),
        (b"PAR1\x00\x01", "application/vnd.apache.parquet", frozenset(), {"request": None, "request_omitted": "parquet bodies are not logged"}),
        (b"\xff\xfe\x00", "application/octet-stream", frozenset(), {"request": None, "request_omitted": "a binary body (application/octet-stream) is not logged"}),
        (b"hello", "text/plain", FIELDS, {"request": None, "request_omitted": "a text/plain body cannot be redacted"}),
        (b"", "application/json", FIELDS, {"request": None}),
    ],
)
def test_bodies_that_are_not_json(body, content_type, fields, expected):
    record = build_record(exchange(body, content_type), IDENTITY, fields)
    assert {key: value for key, value in record.items() if key.startswith("request")} == expected


def test_binary_tensor_data_is_left_out_and_the_json_part_logged_redacted():
    header = json.dumps({"inputs": [
        {"name": "email", "datatype": "BYTES", "shape": [1], "data": ["a@x"]},
        {"name": "age", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 8}},
    ]}).encode()  # fmt: skip
    binary = exchange(header + bytes(8), "application/octet-stream", protocol=PROTOCOL_V2, request_json_length=len(header))
    record = build_record(binary, IDENTITY, FIELDS)
    assert record["request"]["inputs"][0]["data"] == REDACTED
    assert record["request"]["inputs"][1]["parameters"] == {"binary_data_size": 8}
    assert (record["request_format"], record["request_omitted"]) == ("json", "8 bytes of binary tensor data are not logged")


def test_offer_leaves_out_bodies_above_the_limit():
    sink = ListSink()
    log = started_log(sink, max_body=10)
    assert log.offer(request_body=b'{"a": "0123456789"}', response_body=b"[1]", status=200, latency=0.1)
    log.close()
    (record,) = sink.records()
    assert record["request"] is None and "larger than 10 bytes" in record["request_omitted"]
    assert record["response"] == [1]


# -- sampling ------------------------------------------------------------------------------------


def test_sampling_is_a_single_draw_against_the_fraction():
    draws = iter([0.1, 0.6, 0.49999, 0.5])
    assert [sampled(0.5, lambda: next(draws)) for _ in range(4)] == [True, False, True, False]
    never = lambda: pytest.fail("no draw is needed at 0 or 1")  # noqa: E731
    assert sampled(1.0, never) is True and sampled(0.0, never) is False


# -- the bounded queue -----------------------------------------------------------------------------


class ListSink:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.batches = 0

    def write(self, lines: list[bytes]) -> None:
        self.batches += 1
        self.lines.extend(lines)

    def close(self) -> None:
        pass

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.lines]


class BlockingSink(ListSink):
    """A sink that takes one batch and then holds the writer until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, lines: list[bytes]) -> None:
        self.entered.set()
        assert self.release.wait(60), "never released"
        super().write(lines)


def started_log(sink, metrics: ServingMetrics | None = None, **config) -> RequestLog:
    settings = {"fraction": 1.0, "linger": 0.0, **config}
    log = RequestLog(RequestLogConfig(**settings), metrics or ServingMetrics(IDENTITY), sink=sink)
    log.start()
    return log


def counter(metrics: ServingMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, {"deployment": "fraud", "model_version": "7", "track": "canary", **labels})
    return value or 0.0


def offer(log: RequestLog, n: int) -> list[bool]:
    return [log.offer(request_body=b'{"i": %d}' % i, response_body=b"{}", status=200, latency=0.001) for i in range(n)]


def test_a_blocked_sink_never_blocks_the_scoring_side_and_drops_are_counted():
    sink, metrics = BlockingSink(), ServingMetrics(IDENTITY)
    log = started_log(sink, metrics, queue_size=10, batch_size=4)
    # One record first, so the writer is inside the sink, holding its batch, before the flood.
    assert offer(log, 1) == [True]
    assert sink.entered.wait(30)
    results: list[bool] = []
    flood = threading.Thread(target=lambda: results.extend(offer(log, 500)))
    flood.start()
    flood.join(30)  # a liveness bound: offers that blocked on the full queue would never return
    assert not flood.is_alive(), "offer blocked on a full queue"
    assert results.count(True) == 10 and results.count(False) == 490  # the queue holds 10; the rest is dropped
    assert counter(metrics, "modelpilot_request_log_dropped_total", reason="queue_full") == 490
    assert counter(metrics, "modelpilot_request_log_written_total") == 0
    sink.release.set()
    log.close(timeout=30)
    # Everything that was queued is written once the sink answers again, the first record included.
    assert counter(metrics, "modelpilot_request_log_written_total") == 11 == len(sink.lines)
    assert counter(metrics, "modelpilot_request_log_sampled_total") == 501  # written or dropped, each of them
    assert [record["request"]["i"] for record in sink.records()] == [0, *range(10)]


def test_nothing_is_lost_when_the_sink_keeps_up():
    sink, metrics = ListSink(), ServingMetrics(IDENTITY)
    log = started_log(sink, metrics, queue_size=1000, batch_size=50)
    assert all(offer(log, 600))
    log.close(timeout=30)
    assert [record["request"]["i"] for record in sink.records()] == list(range(600))
    assert counter(metrics, "modelpilot_request_log_written_total") == 600
    assert counter(metrics, "modelpilot_request_log_dropped_total", reason="queue_full") == 0
    assert sink.batches <= 600  # batched (exactly how depends on the writer's pace)


class FailingSink(ListSink):
    def write(self, lines: list[bytes]) -> None:
        raise ConnectionRefusedError("refused while sending Bearer s3cr3t")


def test_a_failing_sink_drops_its_batches_counts_them_and_never_prints_the_token(caplog):
    metrics = ServingMetrics(IDENTITY)
    log = RequestLog(RequestLogConfig(fraction=1.0, linger=0.0, sink="https://logs.example/in?key=k3y"), metrics,
                     token="s3cr3t", sink=FailingSink())  # fmt: skip
    log.start()
    with caplog.at_level(logging.INFO, logger="modelpilot.serving.request_log"):
        assert all(offer(log, 5))
        log.close(timeout=30)
    assert counter(metrics, "modelpilot_request_log_dropped_total", reason="sink_error") == 5
    assert "https://logs.example/in" in caplog.text and "refused" in caplog.text
    assert "s3cr3t" not in caplog.text and "k3y" not in caplog.text
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1  # one warning, not one per batch


# -- the HTTP sink ---------------------------------------------------------------------------------


class Collector(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: int = 200) -> None:
        self.answer = answer
        self.posts: list[tuple[str, dict, bytes]] = []
        super().__init__(("127.0.0.1", 0), CollectorHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class CollectorHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Collector

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append((self.path, dict(self.headers), body))
        if self.server.answer == 302:
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
        else:
            self.send_response(self.server.answer)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    yield server
    server.shutdown()
    server.server_close()


def test_http_sink_posts_json_lines_with_the_bearer_token_on_one_connection(collector):
    sink = HttpSink(f"{collector.url}/ingest?stream=fraud", token="t0ken", timeout=5)
    sink.write([b'{"a":1}\n', b'{"a":2}\n'])
    sink.write([b'{"a":3}\n'])
    sink.close()
    assert [path for path, _, _ in collector.posts] == ["/ingest?stream=fraud"] * 2
    _, headers, body = collector.posts[0]
    assert headers["Authorization"] == "Bearer t0ken"
    assert headers["Content-Type"] == "application/x-ndjson"
    assert body == b'{"a":1}\n{"a":2}\n'


def test_http_sink_raises_on_an_error_answer_and_follows_no_redirect(collector):
    sink = HttpSink(collector.url, token="t0ken", timeout=5)
    for answer in (500, 401, 302):
        collector.answer = answer
        with pytest.raises(SinkError, match=f"HTTP {answer}") as caught:
            sink.write([b"{}\n"])
        assert "t0ken" not in str(caught.value)
    assert len(collector.posts) == 3


def test_sink_urls_with_credentials_or_another_scheme_are_refused_without_echoing_them():
    for bad in ("https://user:pa55@logs/x", "http://pa55@logs", "ftp://logs/x", "logs:9000", "https://"):
        with pytest.raises(ValueError) as caught:
            check_sink(bad)
        assert "pa55" not in str(caught.value)
    assert check_sink("stdout") == "stdout"
    assert shown_sink("https://logs:8443/in?key=k3y#x") == "https://logs:8443/in"


def test_config_bounds():
    for bad in ({"fraction": -0.1}, {"fraction": 1.5}, {"fraction": 1, "queue_size": 0}, {"fraction": 1, "timeout": 0}):
        with pytest.raises(ValueError):
            RequestLogConfig(**bad)


def test_server_flags_are_off_by_default_and_checked(capsys):
    assert config_from_args(parse_args([])) is None
    args = parse_args(["--log-requests-fraction", "0.25", "--log-requests-sink", "https://logs/in",
                       "--log-requests-redact", " email, ssn ,,", "--log-requests-queue", "50"])  # fmt: skip
    config = config_from_args(args)
    assert (config.fraction, config.sink, config.redact, config.queue_size) == (0.25, "https://logs/in", FIELDS, 50)
    for argv in (["--log-requests-fraction", "2"], ["--log-requests-fraction", "1", "--log-requests-sink", "https://u:pa55@l"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert "pa55" not in capsys.readouterr().err


def test_stdout_sink_writes_each_batch_as_lines(capfd):
    StdoutSink().write([b'{"a":1}\n', b'{"a":2}\n'])
    assert capfd.readouterr().out == '{"a":1}\n{"a":2}\n'


def test_stdout_sinks_of_workers_write_their_batches_in_turn(capfd, tmp_path):
    lock = tmp_path / "stdout.lock"
    sink = StdoutSink(str(lock))
    with open(lock, "a") as other_worker:
        fcntl.flock(other_worker, fcntl.LOCK_EX)  # another worker in the middle of a batch
        writer = threading.Thread(target=sink.write, args=([b'{"a":1}\n'],))
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and capfd.readouterr().out == ""
        fcntl.flock(other_worker, fcntl.LOCK_UN)
    writer.join(10)
    assert capfd.readouterr().out == '{"a":1}\n'
    sink.close()


# -- the hook in the ASGI layer ----------------------------------------------------------------------


async def echo_scoring(scope, receive, send):
    """Answers predictions built from the request (its email included), or 400 for a body saying "bad"."""
    if scope["path"] != "/invocations":  # /ping
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = await read_body(receive)
    rows = json.loads(body)["dataframe_records"] if body != b"bad" else None
    status = 200 if rows is not None else 400
    answer = {"predictions": [{"label": 1, "email": row["email"]} for row in rows]} if rows else {"error_code": "BAD_REQUEST"}
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


def test_the_server_logs_sampled_scoring_requests_with_their_answers_and_nothing_else():
    sink, metrics = ListSink(), ServingMetrics(IDENTITY)
    log = RequestLog(RequestLogConfig(fraction=1.0, linger=0.0, redact=FIELDS), metrics, sink=sink)
    app = ServingApp("/nonexistent", metrics, request_log=log)
    app.scoring = echo_scoring
    log.start()

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            scored = await client.post("/invocations", json={"dataframe_records": [{"email": "a@x", "age": 3}]})
            rejected = await client.post("/invocations", content=b"bad", headers={"Content-Type": "application/json"})
            for path in ("/health", "/ready", "/metrics", "/ping"):
                await client.get(path)
            return scored, rejected

    scored, rejected = asyncio.run(scenario())
    log.close(timeout=30)
    # The client's answers are the app's own; the records have them, redacted.
    assert scored.json() == {"predictions": [{"label": 1, "email": "a@x"}]}
    first, second = sink.records()
    assert first["request"] == {"dataframe_records": [{"email": REDACTED, "age": 3}]}
    assert first["response"] == {"predictions": [{"label": 1, "email": REDACTED}]}
    assert (first["status"], first["protocol"], first["path"], first["track"]) == (200, "mlflow", "/invocations", "canary")
    assert second["status"] == 400 and second["request"] is None and "not valid JSON" in second["request_omitted"]
    assert second["response"] == {"error_code": "BAD_REQUEST"}
    assert first["latency_seconds"] >= 0
    assert counter(metrics, "modelpilot_request_log_written_total") == 2


def test_unsampled_requests_are_not_captured(monkeypatch):
    sink, metrics = ListSink(), ServingMetrics(IDENTITY)
    log = RequestLog(RequestLogConfig(fraction=0.5, linger=0.0), metrics, sink=sink)
    monkeypatch.setattr(log, "sample", lambda: False)
    app = ServingApp("/nonexistent", metrics, request_log=log)
    app.scoring = echo_scoring
    log.start()

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/invocations", json={"dataframe_records": [{"email": "a@x"}]})

    assert asyncio.run(scenario()).status_code == 200
    log.close(timeout=30)
    assert sink.lines == [] and log.pending() == 0
    assert counter(metrics, "modelpilot_request_log_written_total") == 0
