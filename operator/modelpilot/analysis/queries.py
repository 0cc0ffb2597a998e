"""The PromQL behind each check, pure. Built-in checks use the model server's own metric names
(docs/metrics.md); a custom check is a template with named placeholders."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Scoring requests that reached an answer the model server chose: 499 (the client left) is nobody's fault.
_ANSWERED = 'modelpilot_requests_total{{{sel},code!="499"}}'
BUILT_IN = {
    "errorRate": f'sum(rate(modelpilot_requests_total{{{{{{sel}},code=~"5.."}}}}[{{window}}])) / sum(rate({_ANSWERED}[{{window}}]))',
    "predictionErrorRate": f"sum(rate(modelpilot_prediction_errors_total{{{{{{sel}}}}}}[{{window}}])) / sum(rate({_ANSWERED}[{{window}}]))",
    "latencyP50": "histogram_quantile(0.5, sum by (le) (rate(modelpilot_request_duration_seconds_bucket{{{sel}}}[{window}])))",
    "latencyP99": "histogram_quantile(0.99, sum by (le) (rate(modelpilot_request_duration_seconds_bucket{{{sel}}}[{window}])))",
    "drift": "max(modelpilot_drift_score{{{sel}}})",
}
# Checks whose stable-track value over the same window is a fair yardstick.
RELATIVE = {"errorRate", "predictionErrorRate", "latencyP50", "latencyP99"}
PLACEHOLDERS = ("namespace", "deployment", "track", "version", "window")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z]+)\s*\}\}")


@dataclass(frozen=True)
class Target:
    """One track of one ModelDeployment, over one window."""

    namespace: str
    deployment: str
    track: str
    version: str
    window: str

    def selector(self) -> str:
        return (
            f'namespace="{self.namespace}",deployment="{self.deployment}",'
            f'track="{self.track}",model_version="{_escape(self.version)}"'
        )


def query(metric: str, target: Target) -> str:
    """The PromQL of a check's `metric` (a built-in name or a template) for `target`."""
    if metric in BUILT_IN:
        return BUILT_IN[metric].format(sel=target.selector(), window=target.window)
    values = {"namespace": target.namespace, "deployment": target.deployment, "track": target.track,
              "version": _escape(target.version), "window": target.window}  # fmt: skip
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], metric)


def sample_query(target: Target) -> str:
    """Requests the track answered in the window: a verdict waits until there are enough."""
    return f"sum(increase({_ANSWERED.format(sel=target.selector())}[{target.window}]))"


def unknown_placeholders(metric: str) -> list[str]:
    """Placeholders a template names that no measurement fills in."""
    return sorted({name for name in _PLACEHOLDER.findall(metric) if name not in PLACEHOLDERS})


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
