"""`python -m modelpilot` / `modelpilot-operator`: run the operator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import socket
import sys
import uuid
from collections.abc import Mapping
from urllib.parse import urlparse

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


def namespace_name(value: str) -> str:
    # Names only, not kopf's patterns: what ModelDeployments own is watched in each namespace by name.
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a namespace name")
    return value


def parse_args(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> argparse.Namespace:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="modelpilot-operator", description=__doc__)
    parser.add_argument("--namespace", action="append", type=namespace_name,
                        help="watch only these namespaces, by name (default: all)")
    parser.add_argument("--verbose", action="store_true", help="same as --log-level=debug")
    # The environment too, so the Helm chart's logLevel needs no change to the argument list.
    parser.add_argument(
        "--log-level", type=log_level, default=env.get("MODELPILOT_LOG_LEVEL", "info"),
        help=f"one of {', '.join(LOG_LEVELS)} (default: $MODELPILOT_LOG_LEVEL or info)",
    )  # fmt: skip
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL; empty disables it")
    parser.add_argument("--metrics", default="0.0.0.0:8081", help="host:port serving Prometheus metrics; empty disables them")
    parser.add_argument(
        "--leader-election", action="store_true", default=env.get("MODELPILOT_LEADER_ELECTION", "").lower() == "true",
        help="reconcile only while holding a Lease, so replicas can stand by (default: $MODELPILOT_LEADER_ELECTION)",
    )  # fmt: skip
    parser.add_argument(
        "--leader-election-namespace", default=env.get("POD_NAMESPACE", "default"),
        help="namespace of the Lease (default: $POD_NAMESPACE, else default)",
    )  # fmt: skip
    parser.add_argument(
        "--leader-election-lease", default=env.get("MODELPILOT_LEADER_ELECTION_LEASE", "modelpilot-operator"),
        help="name of the Lease (default: $MODELPILOT_LEADER_ELECTION_LEASE, else modelpilot-operator)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging(args.verbose, args.log_level)
    from . import handlers  # noqa: F401  (registers the handlers)
    from .metrics import serve

    if args.metrics:
        serve(args.metrics)
    asyncio.run(run(args))


async def run(args: argparse.Namespace) -> None:
    namespaces = args.namespace or []
    # The memo tells the informers of owned objects (handlers.py) which namespaces to watch.
    operate = dict(clusterwide=not namespaces, namespaces=namespaces, liveness_endpoint=args.liveness or None,
                   standalone=True, memo=kopf.Memo(namespaces=namespaces))  # fmt: skip
    from .metrics import LEADER

    if not args.leader_election:
        LEADER.set(1)
        await kopf.operator(**operate)
        return
    from .kube.leadership import Lease

    identity = f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    lease = Lease(args.leader_election_namespace, args.leader_election_lease, identity)
    async with _standby_liveness(args.liveness):
        await lease.acquire()
    LEADER.set(1)
    stop = asyncio.Event()
    keeper = asyncio.create_task(lease.keep(stop))
    try:
        await kopf.operator(**operate, stop_flag=stop)
    finally:
        keeper.cancel()
        LEADER.set(0)
        if not lease.lost:
            await asyncio.to_thread(lease.release)
    if lease.lost:
        sys.exit(1)  # a fresh process stands by until the lease is free again


@contextlib.asynccontextmanager
async def _standby_liveness(url: str):
    """Answer the liveness probe while waiting for the lease: a standby is alive, not stuck."""
    if not url:
        yield
        return
    where = urlparse(url)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 21\r\nConnection: close\r\n\r\n"
                     b'{"standby": "lease"}\n')  # fmt: skip
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, where.hostname, where.port, reuse_address=True)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


if __name__ == "__main__":
    main()
