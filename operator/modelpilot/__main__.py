"""`python -m modelpilot` / `modelpilot-operator`: run the operator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Mapping

import kopf

# HTTP clients log every request URL at INFO: credentials can hide in a URL, and the registry's requests
# would flood the log besides.
QUIET_LOGGERS = ("httpx", "httpcore", "urllib3")
LOG_LEVELS = ("debug", "info", "warning", "error")


def log_level(value: str) -> str:
    level = value.strip().lower()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def configure_logging(verbose: bool, level: str = "info") -> None:
    kopf.configure(verbose=verbose)
    root = logging.getLogger()
    if not verbose:
        root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def parse_args(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> argparse.Namespace:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="modelpilot-operator", description=__doc__)
    parser.add_argument("--namespace", action="append", help="watch only these namespaces (default: all)")
    parser.add_argument("--verbose", action="store_true", help="same as --log-level=debug")
    # The environment too, so the Helm chart's logLevel needs no change to the argument list.
    parser.add_argument(
        "--log-level", type=log_level, default=env.get("MODELPILOT_LOG_LEVEL", "info"),
        help=f"one of {', '.join(LOG_LEVELS)} (default: $MODELPILOT_LOG_LEVEL or info)",
    )  # fmt: skip
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL; empty disables it")
    parser.add_argument("--metrics", default="0.0.0.0:8081", help="host:port serving Prometheus metrics; empty disables them")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging(args.verbose, args.log_level)
    from . import handlers  # noqa: F401  (registers the handlers)
    from .metrics import serve

    if args.metrics:
        serve(args.metrics)

    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace or [],
            liveness_endpoint=args.liveness or None,
            standalone=True,
        )
    )


if __name__ == "__main__":
    main()
