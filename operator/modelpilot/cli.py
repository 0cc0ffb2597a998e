"""`kubectl modelpilot`: see and steer canary rollouts without touching the spec.

    kubectl modelpilot status NAME [--watch]
    kubectl modelpilot history NAME
    kubectl modelpilot promote NAME [--full]
    kubectl modelpilot abort|retry|pause|resume NAME

Requests are an annotation (rollout/requests.py), so GitOps tools see no drift. A request waits until the
operator records it as handled and prints what the rollout does then.

Exit codes: 0 done (status: Ready); 1 an error (not found, no access, the operator did not act in time);
2 bad usage; status only: 3 a rollout or start is under way (Pending, Progressing), 4 Degraded or Failed.
`history` exits 0 whenever it can read the object.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import datetime, timezone

import kubernetes

from .api import GROUP, PLURAL, VERSION
from .rollout.requests import ACTIONS, REQUEST_ANNOTATION, encode

EXIT_ERROR, EXIT_USAGE, EXIT_UNDER_WAY, EXIT_UNHEALTHY = 1, 2, 3, 4
_PHASE_EXIT = {"Ready": 0, "Pending": EXIT_UNDER_WAY, "Progressing": EXIT_UNDER_WAY, "Degraded": EXIT_UNHEALTHY, "Failed": EXIT_UNHEALTHY}
BAR_WIDTH = 20


class Failure(Exception):
    """An error for the user, printed without a traceback."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        api, namespace = _connect(args)
        if args.command == "status":
            return _status(api, namespace, args.name, args.watch, args.interval)
        if args.command == "history":
            print(render_history(_get(api, namespace, args.name)))
            return 0
        return _request(api, namespace, args.name, args.command, getattr(args, "full", False), args.timeout)
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    # Accepted before and after the command, as kubectl does; SUPPRESS keeps a subcommand's unset default
    # from overwriting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS, help="namespace (default: the context's)")
    common.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context to use")
    common.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="path to the kubeconfig file")
    parser = argparse.ArgumentParser(prog="kubectl modelpilot", description=__doc__.split("\n\n")[0], parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", parents=[common], help="versions, step, weights, pods and recent Events")
    status.add_argument("name")
    status.add_argument("-w", "--watch", action="store_true", help="print again whenever it changes, until interrupted")
    status.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
    history = commands.add_parser("history", parents=[common], help="past rollouts: version, outcome, reason, duration")
    history.add_argument("name")
    for action in ACTIONS:
        request = commands.add_parser(action, parents=[common], help=f"{action} the rollout")
        request.add_argument("name")
        request.add_argument("--timeout", type=float, default=60, help="seconds to wait for the operator (default 60)")
        if action == "promote":
            request.add_argument("--full", action="store_true", help="skip every remaining step")
    return parser


def _connect(args) -> tuple[kubernetes.client.CustomObjectsApi, str]:
    config_file, context = getattr(args, "kubeconfig", None), getattr(args, "context", None)
    try:
        kubernetes.config.load_kube_config(config_file=config_file, context=context)
        contexts, active = kubernetes.config.list_kube_config_contexts(config_file=config_file)
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise Failure(f"cannot load the kubeconfig: {exc}") from None
    if context:
        active = next((c for c in contexts if c["name"] == context), active)
    namespace = getattr(args, "namespace", None) or (active or {}).get("context", {}).get("namespace") or "default"
    return kubernetes.client.CustomObjectsApi(), namespace


def _get(api, namespace: str, name: str) -> dict:
    try:
        return api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            raise Failure(f'modeldeployment "{name}" not found in namespace "{namespace}"') from None
        raise Failure(f"reading modeldeployment {namespace}/{name}: HTTP {exc.status} {exc.reason}") from None


def _request(api, namespace: str, name: str, action: str, full: bool, timeout: float) -> int:
    body = _get(api, namespace, name)
    if not ((body.get("spec") or {}).get("rollout") or {}).get("steps"):
        # Without steps a new version replaces the old one at once: there is no rollout to steer.
        raise Failure(f'modeldeployment "{name}" has no spec.rollout.steps: there is no canary to {action}')
    request_id = uuid.uuid4().hex[:12]
    patch = {"metadata": {"annotations": {REQUEST_ANNOTATION: encode(request_id, action, full)}}}
    try:
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)
    except kubernetes.client.ApiException as exc:
        raise Failure(f"sending the {action} request: HTTP {exc.status} {exc.reason}") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rollout = (_get(api, namespace, name).get("status") or {}).get("rollout") or {}
        if request_id in (rollout.get("handledRequests") or ()):
            print(f"{action} {request_id}: {rollout.get('message', '')}")
            return 0
        time.sleep(0.5)
    raise Failure(f"the operator did not act on {action} request {request_id} within {timeout:g}s")


def _status(api, namespace: str, name: str, watch: bool, interval: float) -> int:
    shown = None
    while True:
        body = _get(api, namespace, name)
        text = render(body, _events(namespace, name))
        if text != shown:
            print(text, flush=True)
            shown = text
        code = _PHASE_EXIT.get((body.get("status") or {}).get("phase"), EXIT_UNDER_WAY)
        if not watch:
            return code
        time.sleep(interval)


def _events(namespace: str, name: str) -> list[dict]:
    try:
        listed = kubernetes.client.CoreV1Api().list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=ModelDeployment"
        )
    except kubernetes.client.ApiException:
        return []  # Events are a help, not a must: a user may read the object but not Events
    return [kubernetes.client.ApiClient().sanitize_for_serialization(e) for e in listed.items]


def render(body: dict, events: list[dict], now: datetime | None = None) -> str:
    """The status as people read it. Pure: the object and its Events in, text out."""
    meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    lines = [f"{meta['name']} ({meta['namespace']}): {status.get('phase', 'Pending')}  {status.get('message', '')}".rstrip()]
    model = status.get("model") or {}
    if model:
        via = f"alias {model['alias']} -> " if model.get("alias") else ""
        lines.append(f"  model    {model['name']} {via}version {model['version']}")
    stable = status.get("stable") or {}
    if stable:
        updating = f", updating to {stable['updatingTo']}" if stable.get("updatingTo") else ""
        lines.append(f"  stable   version {stable.get('version') or '-'}{updating}  "
                     f"{stable.get('readyReplicas', 0)}/{stable.get('replicas', 0)} ready")  # fmt: skip
    canary, rollout = status.get("canary") or {}, status.get("rollout") or {}
    if canary:
        lines.append(f"  canary   version {canary['version']}  {canary.get('readyReplicas', 0)}/{canary.get('replicas', 0)} ready  "
                     f"weight: asked {rollout.get('requestedWeight', 0)}%, effective {canary.get('weight', 0)}%")  # fmt: skip
    steps = ((spec.get("rollout") or {}).get("steps")) or []
    if rollout and steps and rollout.get("phase") in ("Progressing", "Paused"):
        index = rollout.get("stepIndex", 0)
        done = BAR_WIDTH * index // len(steps)
        bar = "#" * done + "." * (BAR_WIDTH - done)
        lines.append(f"  step     {min(index + 1, len(steps))}/{len(steps)} [{bar}] {_describe(steps[min(index, len(steps) - 1)])}")
    if rollout:
        lines.append(f"  rollout  {rollout.get('phase')}: {rollout.get('message', '')}".rstrip())
    analysis = rollout.get("analysis") or {}
    if analysis and rollout.get("phase") in ("Progressing", "Paused", "Baking"):
        lines.append(f"  analysis {analysis.get('failures', 0)} failed, {analysis.get('inconclusive', 0)} inconclusive, "
                     f"{analysis.get('passed', 0)} passed at this step; next at {analysis.get('nextMeasurementAt', '-')}")  # fmt: skip
        latest = [m for m in analysis.get("measurements") or () if m["at"] == analysis["measurements"][-1]["at"]]
        for m in latest:
            value = "-" if m.get("value") is None else f"{m['value']:.4g}"
            lines.append(f"           {m['check']}: {m['verdict']} {value} ({m['bound']}){'  ' + m['reason'] if m.get('reason') else ''}")
        rejected = ", ".join(f"{r['version']} ({r['reason']})" for r in rollout.get("rejected") or ())
        if rejected:
            lines.append(f"  rejected {rejected}")
    recent = sorted(events, key=_event_time)[-5:]
    if recent:
        lines.append("  events:")
        now = now or datetime.now(timezone.utc)
        for event in recent:
            age = _age(now, _event_time(event))
            lines.append(f"    {age:>5}  {event.get('type', ''):<8} {event.get('reason', ''):<18} {event.get('message', '')}")
    return "\n".join(lines)


def render_history(body: dict) -> str:
    """Past rollouts, newest first, and the one under way. Pure."""
    rollout = (body.get("status") or {}).get("rollout") or {}
    rows = [("VERSION", "FROM", "OUTCOME", "DURATION", "FINISHED", "REASON")]
    if rollout.get("phase") in ("Progressing", "Paused", "Promoting", "Baking"):
        rows.append((rollout.get("canaryVersion") or "-", rollout.get("stableVersion") or "-", rollout["phase"],
                     "-", "-", rollout.get("message", "")))  # fmt: skip
    for entry in reversed(rollout.get("history") or ()):
        rows.append((entry["version"], entry.get("previousVersion") or "-", entry["outcome"],
                     _duration(entry.get("startedAt"), entry["finishedAt"]), entry["finishedAt"], entry.get("reason", "")))  # fmt: skip
    if len(rows) == 1:
        return f"{body['metadata']['name']}: no rollouts yet"
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in rows)


def _duration(start: str | None, end: str) -> str:
    if not start:
        return "-"
    seconds = int((_parse_time(end) - _parse_time(start)).total_seconds())
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m{seconds % 60:02d}s" if seconds < 7200 else f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _parse_time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _describe(step: dict) -> str:
    if "setWeight" in step:
        return f"setWeight {step['setWeight']}%"
    if "pause" in step:
        duration = (step["pause"] or {}).get("duration")
        return f"pause {duration}" if duration else "pause until promoted"
    return "analysis"


def _event_time(event: dict) -> str:
    return event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or ""


def _age(now: datetime, stamp: str) -> str:
    if not stamp:
        return "?"
    seconds = int((now - _parse_time(stamp)).total_seconds())
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m" if seconds < 7200 else f"{seconds // 3600}h"


if __name__ == "__main__":
    sys.exit(main())
