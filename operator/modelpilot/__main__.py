"""`python -m modelpilot` / `modelpilot-operator`: run the operator."""

from __future__ import annotations

import argparse
import asyncio

import kopf


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="modelpilot-operator", description=__doc__)
    parser.add_argument("--namespace", action="append", help="watch only these namespaces (default: all)")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL; empty disables it")
    args = parser.parse_args(argv)
    kopf.configure(verbose=args.verbose)
    from . import handlers  # noqa: F401  (registers the handlers)

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
