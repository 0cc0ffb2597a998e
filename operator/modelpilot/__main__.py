"""`python -m modelpilot` / `modelpilot-operator`: run the operator."""

from __future__ import annotations

import argparse
import asyncio
import logging

import kopf

# HTTP clients log every request URL at INFO: credentials can hide in a URL, and the registry's requests
# would flood the log besides.
QUIET_LOGGERS = ("httpx", "httpcore", "urllib3")


def configure_logging(verbose: bool) -> None:
    kopf.configure(verbose=verbose)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="modelpilot-operator", description=__doc__)
    parser.add_argument("--namespace", action="append", help="watch only these namespaces (default: all)")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL; empty disables it")
    parser.add_argument("--metrics", default="0.0.0.0:8081", help="host:port serving Prometheus metrics; empty disables them")
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
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
