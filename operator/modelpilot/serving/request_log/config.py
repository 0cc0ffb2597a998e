"""Configuration: what to log and where, from the server's --log-requests-* flags."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass

from .redaction import REDACTED
from .sinks import DEFAULT_TIMEOUT, STDOUT, TOKEN_ENV, check_sink

DEFAULT_QUEUE = 1000
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_BATCH = 100
DEFAULT_LINGER = 1.0  # seconds a batch waits for more records once it has one


@dataclass(frozen=True)
class RequestLogConfig:
    """What to log and where; `fraction` 0 turns logging off."""

    fraction: float
    sink: str = STDOUT
    redact: frozenset[str] = frozenset()
    queue_size: int = DEFAULT_QUEUE
    max_body: int = DEFAULT_MAX_BODY
    batch_size: int = DEFAULT_BATCH
    timeout: float = DEFAULT_TIMEOUT
    linger: float = DEFAULT_LINGER

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError("the request log fraction must be between 0 and 1")
        if self.queue_size < 1 or self.batch_size < 1 or self.max_body < 0:
            raise ValueError("the request log queue and batch sizes must be positive, the body limit not negative")
        if self.timeout <= 0 or self.linger < 0:
            raise ValueError("the request log sink timeout must be positive, the linger time not negative")
        check_sink(self.sink)


def parse_fields(text: str | Iterable[str]) -> frozenset[str]:
    """Field names from a comma-separated flag value (or a list), blanks left out."""
    items = text.split(",") if isinstance(text, str) else text
    return frozenset(name.strip() for name in items if name.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's --log-requests-* flags."""
    group = parser.add_argument_group("request logging (off unless --log-requests-fraction is above 0)")
    group.add_argument(
        "--log-requests-fraction", type=float, default=0.0, metavar="F",
        help="share of scoring requests to log with their responses, 0 (default: off) to 1",
    )  # fmt: skip
    group.add_argument(
        "--log-requests-sink", default=STDOUT, metavar="SINK",
        help=f"stdout (default) or an http(s) URL that receives POSTed JSON lines; a bearer token from {TOKEN_ENV}",
    )  # fmt: skip
    group.add_argument(
        "--log-requests-redact", default="", metavar="FIELDS",
        help=f"comma-separated input and output field names whose values are logged as {REDACTED}",
    )  # fmt: skip
    group.add_argument(
        "--log-requests-queue", type=int, default=DEFAULT_QUEUE, metavar="N",
        help=f"records waiting for the sink at most; beyond, records are dropped and counted (default {DEFAULT_QUEUE})",
    )  # fmt: skip
    group.add_argument(
        "--log-requests-max-body", type=int, default=DEFAULT_MAX_BODY, metavar="BYTES",
        help=f"larger request or response bodies are logged without the body (default {DEFAULT_MAX_BODY})",
    )  # fmt: skip
    group.add_argument(
        "--log-requests-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
        help=f"bound on connecting to the HTTP sink and on each read of its answer (default {DEFAULT_TIMEOUT:g})",
    )  # fmt: skip


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error on a bad --log-requests-* value (a sink URL is never echoed)."""
    try:
        config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))


def config_from_args(args: argparse.Namespace) -> RequestLogConfig | None:
    """The configuration the flags ask for, None when logging is off; ValueError on a bad value."""
    if args.log_requests_fraction == 0:
        return None
    return RequestLogConfig(
        fraction=args.log_requests_fraction,
        sink=args.log_requests_sink,
        redact=parse_fields(args.log_requests_redact),
        queue_size=args.log_requests_queue,
        max_body=args.log_requests_max_body,
        timeout=args.log_requests_timeout,
    )
