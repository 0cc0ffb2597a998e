"""The chart's monitoring add-ons, rendered by the pinned helm, no cluster needed: the operator's metrics
Service and ServiceMonitor, the model servers' PodMonitor (the same targets and labels as the documented
scrape config, replayed through Prometheus' relabeling), the alerting rules (checked and unit-tested by
promtool) and the Grafana dashboard (every query on metrics that exist, parsed by promtool)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import prometheus_client
import pytest
import yaml

from modelpilot import metrics as operator_metrics
from modelpilot.api import ModelDeploymentSpec
from modelpilot.api.status import ResolvedModel
from modelpilot.render import workload
from modelpilot.render.labels import MANAGED_BY
from modelpilot.render.owner import Owner
from tests.unit.test_helm_render import CHART, CI_VALUES, HELM, REPO, helm, only, pod_spec, render

PROMTOOL = Path("/usr/bin/promtool")
OVERRIDES = CHART / "ci" / "overrides.yaml"
SCRAPE_CONFIG = REPO / "manifests" / "monitoring" / "prometheus-scrape-config.yaml"
DASHBOARD = CHART / "files" / "dashboards" / "modelpilot.json"
RULES_TESTS = CHART / "files" / "rules-tests" / "modelpilot.test.yaml"
MONITORING_VALUES = ("metricsService", "serviceMonitor", "podMonitor", "prometheusRule", "grafanaDashboard")
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
ALL_ON = [f"--set={key}.enabled=true" for key in MONITORING_VALUES]

pytestmark = pytest.mark.skipif(not HELM.exists(), reason=f"no pinned helm at {HELM}: `make cluster-bins` builds it")
needs_promtool = pytest.mark.skipif(
    not PROMTOOL.exists(), reason=f"no {PROMTOOL}: Debian's prometheus package ships it (`make system-deps`)"
)


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def monitoring_objects(documents: list[dict]) -> list[dict]:
    return [
        d for d in documents
        if d["apiVersion"].startswith("monitoring.coreos.com/") or d["kind"] == "ConfigMap"
        or (d["kind"] == "Service" and d["metadata"]["name"].endswith("-metrics"))
    ]  # fmt: skip


def test_nothing_for_monitoring_renders_by_default():
    for args in ([], ["-f", str(CHART / "ci" / "namespaced.yaml")]):
        assert not [d for d in render(*args) if d["kind"] in MONITORING_KINDS | {"Service", "ConfigMap"}]


@pytest.mark.parametrize("key", MONITORING_VALUES)
def test_each_switch_renders_its_objects_alone(key):
    kinds = sorted(d["kind"] for d in monitoring_objects(render(f"--set={key}.enabled=true")))
    expected = {
        "metricsService": ["Service"],
        "serviceMonitor": ["Service", "ServiceMonitor"],  # it scrapes through the Service
        "podMonitor": ["PodMonitor"],
        "prometheusRule": ["PrometheusRule"],
        "grafanaDashboard": ["ConfigMap"],
    }
    assert kinds == expected[key]


def test_the_metrics_service_reaches_the_operators_metrics_port():
    documents = render("--set", "metricsService.enabled=true", "--set", "replicas=2")
    service = only(documents, "Service", "mp-modelpilot-metrics")
    deployment = only(documents, "Deployment")
    # Every replica, standbys too: they say modelpilot_leader 0.
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    (port,) = service["spec"]["ports"]
    (container,) = pod_spec(documents)["containers"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["name"] == "metrics" and port["targetPort"] == "metrics" and named["metrics"] == port["port"] == 8081
    assert "--metrics=0.0.0.0:8081" in container["args"]
    assert service["metadata"]["namespace"] == "modelpilot-system"


def test_the_service_monitor_selects_the_metrics_service_only_and_keeps_per_object_namespaces():
    documents = render("--set", "serviceMonitor.enabled=true")
    service = only(documents, "Service", "mp-modelpilot-metrics")
    monitor = only(documents, "ServiceMonitor")
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": ["modelpilot-system"]}
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    # Not the operator's own selector alone, which any later Service of the release would match too.
    assert selector["app.kubernetes.io/component"] == "metrics"
    (endpoint,) = spec["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "30s", "honorLabels": True}
    assert monitor["metadata"]["namespace"] == "modelpilot-system"


def test_monitors_and_rules_carry_their_own_labels_and_the_common_ones():
    documents = render("-f", str(OVERRIDES))
    for kind in MONITORING_KINDS:
        labels = only(documents, kind)["metadata"]["labels"]
        assert labels["release"] == "kube-prometheus-stack" and labels["team"] == "ml-platform", kind
        assert labels["app.kubernetes.io/instance"] == "mp", kind
    assert only(documents, "PrometheusRule")["metadata"]["labels"]["role"] == "alert-rules"
    assert only(documents, "ServiceMonitor")["spec"]["endpoints"][0]["interval"] == "1m"
    assert only(documents, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["interval"] == "10s"
    # The chart's own labels win over a monitor's, so it cannot lose the ServiceMonitor its Service.
    documents = render("--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.labels.app\\.kubernetes\\.io/version=x")
    assert only(documents, "ServiceMonitor")["metadata"]["labels"]["app.kubernetes.io/version"] == "0.1.0"


# The model servers' PodMonitor.

OWNER = Owner(name="fraud", namespace="ml", uid="1234")


def model_deployment(track: str = "stable", version: str = "7", **spec) -> dict:
    """A model Deployment as the operator renders it."""
    body = {"model": {"name": "fraud-detector", "alias": "champion"}, "mlflow": {"trackingUri": "http://mlflow:5000"}, **spec}
    model = ResolvedModel(name="fraud-detector", version=version, run_id="r" * 32, source="models:/m-1")
    return workload.deployment(OWNER, ModelDeploymentSpec.model_validate(body), model, "runtime:1", track=track)


def test_the_pod_monitor_selects_the_model_pods_on_their_http_port():
    monitor = only(render("--set", "podMonitor.enabled=true"), "PodMonitor")
    spec = monitor["spec"]
    assert spec["selector"] == {"matchLabels": {"app.kubernetes.io/managed-by": MANAGED_BY}}
    template = model_deployment()["spec"]["template"]
    assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    (endpoint,) = spec["podMetricsEndpoints"]
    (server,) = template["spec"]["containers"]
    assert [p["name"] for p in server["ports"]] == [endpoint["port"]] == ["http"]
    assert endpoint["path"] == template["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert endpoint["interval"] == "15s"  # the scrape config's
    assert not {"podTargetLabels", "jobLabel", "sampleLimit"} & set(spec)
    assert not endpoint.get("honorLabels")  # a pod cannot pass its series off as another's


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], {"any": True}),
        (["--set", "watchNamespaces={team-a,team-b}"], {"matchNames": ["team-a", "team-b"]}),
        (["--set", "watchNamespaces={team-a}", "--set", "podMonitor.namespaceSelector.matchNames={ml}"], {"matchNames": ["ml"]}),
        (["--set", "podMonitor.namespaceSelector.any=true", "--set", "watchNamespaces={team-a}"], {"any": True}),
    ],
    ids=["every-namespace", "the-watched-ones", "the-value", "any-by-value"],
)
def test_the_pod_monitor_looks_where_the_models_run(args, expected):
    monitor = only(render("--set", "podMonitor.enabled=true", *args), "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == expected


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def discovered_targets(namespace: str, name: str, ip: str, phase: str, template: dict) -> list[dict]:
    """The targets Kubernetes pod discovery yields for one pod: one per container port, one per container
    without any (init containers too), each with the pod's meta labels."""
    metadata, spec = template["metadata"], template["spec"]
    pod = {
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_pod_name": name,
        "__meta_kubernetes_pod_ip": ip,
        "__meta_kubernetes_pod_phase": phase,
        "__meta_kubernetes_pod_ready": str(phase == "Running").lower(),
    }
    for kind, values in (("label", metadata.get("labels", {})), ("annotation", metadata.get("annotations", {}))):
        for key, value in values.items():
            pod[f"__meta_kubernetes_pod_{kind}_{_sanitize(key)}"] = value
            pod[f"__meta_kubernetes_pod_{kind}present_{_sanitize(key)}"] = "true"
    targets = []
    for init, containers in (("true", spec.get("initContainers", [])), ("false", spec["containers"])):
        for container in containers:
            base = {**pod, "__meta_kubernetes_pod_container_name": container["name"], "__meta_kubernetes_pod_container_init": init}
            for port in container.get("ports") or [None]:
                if port is None:
                    targets.append({**base, "__address__": ip})
                    continue
                targets.append({
                    **base,
                    "__address__": f"{ip}:{port['containerPort']}",
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                    "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP"),
                })  # fmt: skip
    return targets


def relabel(labels: dict, rules: list[dict]) -> dict | None:
    """Prometheus' relabeling, the actions used here; None when a rule drops the target."""
    labels = dict(labels)
    for rule in rules:
        rule = {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k): v for k, v in rule.items()}  # CRD camelCase
        action = rule.get("action", "replace").lower()
        regex = re.compile(f"^(?:{rule.get('regex', '(.*)')})$")
        value = rule.get("separator", ";").join(labels.get(s, "") for s in rule.get("source_labels", []))
        target = rule.get("target_label")
        if action == "keep" and not regex.match(value) or action == "drop" and regex.match(value):
            return None
        if action == "keepequal" and labels.get(target, "") != value:
            return None
        if action == "labeldrop":
            labels = {k: v for k, v in labels.items() if not regex.match(k)}
        elif action == "replace" and (match := regex.match(value)):
            replaced = match.expand(re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", rule.get("replacement", "$1")))
            if replaced:
                labels[target] = replaced
            else:
                labels.pop(target, None)
        elif action not in {"keep", "drop", "keepequal", "labeldrop", "replace"}:
            raise NotImplementedError(action)
    return labels


def scraped(labels: dict | None) -> tuple | None:
    """What Prometheus scrapes for a relabeled target: its URL path and its target labels."""
    if labels is None:
        return None
    final = {k: v for k, v in labels.items() if not k.startswith("__")}
    final.setdefault("instance", labels["__address__"])
    return labels["__metrics_path__"], tuple(sorted(final.items()))


def operator_generated(monitor: dict, endpoint: dict) -> list[dict]:
    """The relabelings the Prometheus Operator writes for a PodMonitor endpoint before its own
    (pkg/prometheus/promcfg.go, generatePodMonitorConfig): the job name kept aside, finished pods out,
    the selector's labels, the named port, then the namespace, container, pod, job and endpoint labels."""
    rules = [
        {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
        {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
    ]
    for key, value in sorted(monitor["spec"]["selector"]["matchLabels"].items()):
        rules.append({"action": "keep", "regex": f"({value});true", "source_labels": [
            f"__meta_kubernetes_pod_label_{_sanitize(key)}", f"__meta_kubernetes_pod_labelpresent_{_sanitize(key)}"]})
    rules += [
        {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": endpoint["port"]},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"target_label": "job", "replacement": f"{monitor['metadata']['namespace']}/{monitor['metadata']['name']}"},
        {"target_label": "endpoint", "replacement": endpoint["port"]},
    ]
    return rules + endpoint.get("relabelings", [])


def test_the_pod_monitor_scrapes_what_the_documented_scrape_config_scrapes_with_the_same_labels():
    (job,) = yaml.safe_load(SCRAPE_CONFIG.read_text())["scrape_configs"]
    monitor = only(render("--set", "podMonitor.enabled=true"), "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    stable, canary = model_deployment(), model_deployment("canary", "8", runtime={"port": 9000})
    off = model_deployment(pod={"annotations": {"prometheus.io/scrape": "false"}})
    other = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "someone-else"},
                          "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}},
             "spec": {"containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]}}  # fmt: skip
    pods = [
        ("ml", "fraud-7d9-a", "10.1.0.10", "Running", stable["spec"]["template"]),
        ("ml", "fraud-canary-5c4-b", "10.1.0.11", "Running", canary["spec"]["template"]),
        ("ml", "fraud-7d9-c", "10.1.0.12", "Pending", stable["spec"]["template"]),  # still fetching its model
        ("ml", "fraud-7d9-d", "10.1.0.13", "Succeeded", stable["spec"]["template"]),
        ("ml", "fraud-7d9-e", "10.1.0.14", "Running", off["spec"]["template"]),
        ("web", "shop-1", "10.1.0.20", "Running", other),
    ]
    targets = [t for pod in pods for t in discovered_targets(*pod)]
    assert len(targets) == 11  # the fetch init container and the server of each model pod, the other app

    def by_scrape_config(target):
        start = {**target, "job": job["job_name"], "__metrics_path__": job.get("metrics_path", "/metrics")}
        return scraped(relabel(start, job["relabel_configs"]))

    def by_pod_monitor(target):
        start = {**target, "job": f"podMonitor/{monitor['metadata']['namespace']}/{monitor['metadata']['name']}/0",
                 "__metrics_path__": endpoint["path"]}  # fmt: skip
        return scraped(relabel(start, operator_generated(monitor, endpoint)))

    from_config = sorted(filter(None, map(by_scrape_config, targets)))
    from_monitor = sorted(filter(None, map(by_pod_monitor, targets)))
    assert from_monitor == from_config
    # Each running, scrapable model pod once, on its server's port, labelled where it runs and no more:
    # the server's own deployment, track and model_version labels must not be overwritten or renamed.
    assert from_config == [
        ("/metrics", (("instance", "10.1.0.10:8080"), ("job", "modelpilot-models"), ("namespace", "ml"), ("pod", "fraud-7d9-a"))),
        ("/metrics", (("instance", "10.1.0.11:9000"), ("job", "modelpilot-models"), ("namespace", "ml"), ("pod", "fraud-canary-5c4-b"))),
    ]


# The alerting rules.


def rule_groups(*args: str) -> dict:
    return {"groups": only(render("--set", "prometheusRule.enabled=true", *args), "PrometheusRule")["spec"]["groups"]}


def alerts(groups: dict) -> list[dict]:
    return [rule for group in groups["groups"] for rule in group["rules"]]


def known_metric_names() -> set[str]:
    """Every series name the model server (docs/metrics.md) and the operator (its metrics module) export."""
    suffixes = {"counter": [""], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    names = set()
    for name, kind in re.findall(r"^\| `(modelpilot_\w+)` \| (counter|gauge|histogram) \|", (REPO / "docs" / "metrics.md").read_text(), re.M):
        names |= {name + suffix for suffix in suffixes[kind]}
    for metric in vars(operator_metrics).values():
        if isinstance(metric, prometheus_client.metrics.MetricWrapperBase):
            for family in metric.describe():
                names |= {family.name + s for s in (["_total"] if family.type == "counter" else suffixes[family.type])}
    # Prometheus' own per target, and prometheus_client's process collector, on by default in both.
    return names | {"up", "process_start_time_seconds"}


_KEYWORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads: what is left once strings, matchers, ranges, grouping
    clauses, numbers and durations, function and aggregation names are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w:])\d[\w.]*", " ", text)
    text = re.sub(r"(?<![\w:])[a-zA-Z_][\w:]*\s*\(", "(", text)
    return set(re.findall(r"(?<![\w:$])[a-zA-Z_:][\w:]*", text)) - _KEYWORDS


def test_metric_names_finds_the_series_and_nothing_else():
    expr = ('max by (job, le) (rate(a_total{code=~"5..", x="sum(b)"}[5m] offset 1h)) / on (job) group_left (pod) '
            "histogram_quantile(0.99, b_bucket) > 1e3 and absent(c) or d unless e:rec * 2")  # fmt: skip
    assert metric_names(expr) == {"a_total", "b_bucket", "c", "d", "e:rec"}


@needs_promtool
@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_promtool_checks_the_rendered_rules(values, tmp_path):
    groups = rule_groups(*(["-f", str(values)] if values else []))
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(groups))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    known = known_metric_names()
    for rule in alerts(groups):
        assert metric_names(rule["expr"]) <= known, (rule["alert"], metric_names(rule["expr"]) - known)


@needs_promtool
def test_promtool_unit_tests_of_the_alerts_pass(tmp_path):
    """Input series in files/rules-tests: a rollback fires (the first one of a process too) and an old one
    does not; a 5xx ratio fires per track, 499 left out, and not on too little traffic or a small ratio;
    a stuck canary, the operator down, ModelDeployments Degraded, drift."""
    (tmp_path / "modelpilot-rules.yaml").write_text(yaml.safe_dump(rule_groups()))
    shutil.copy(RULES_TESTS, tmp_path / RULES_TESTS.name)
    result = promtool("test", "rules", RULES_TESTS.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {case["alertname"] for test in yaml.safe_load(RULES_TESTS.read_text())["tests"] for case in test["alert_rule_test"]}
    assert {"ModelPilotRolledBack", "ModelPilotHighErrorRate"} <= tested
    assert tested == {rule["alert"] for rule in alerts(rule_groups())}


def test_every_alert_has_a_severity_and_says_what_happened_and_what_to_do():
    for rule in alerts(rule_groups()):
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > len(rule["annotations"]["summary"])
        assert re.search(r"`(kubectl|topk)[^`]+`", rule["annotations"]["description"]), rule["alert"]  # what to run


def test_the_rules_follow_the_values():
    by_name = {}
    for rule in alerts(rule_groups("-f", str(OVERRIDES))):
        by_name.setdefault(rule["alert"], []).append(rule)
    (down,) = by_name["ModelPilotOperatorDown"]
    assert down["for"] == "3m" and 'modelpilot_leader{job="platform-modelpilot-operator"}' in down["expr"]
    (rolled_back,) = by_name["ModelPilotRolledBack"]
    assert "[1h]" in rolled_back["expr"] and "offset 1h" in rolled_back["expr"] and "time() - 3600" in rolled_back["expr"]
    (stuck,) = by_name["ModelPilotRolloutStuck"]
    assert "[2h]" in stuck["expr"] and "offset 2h" in stuck["expr"]
    assert by_name["ModelPilotModelDeploymentDegraded"][0]["for"] == "10m"
    stable, canary = by_name["ModelPilotHighErrorRate"]
    for rule in (stable, canary):
        assert rule["for"] == "10m" and "[10m]" in rule["expr"] and "> 0.02" in rule["expr"] and ">= 1" in rule["expr"]
    assert (stable["labels"]["severity"], canary["labels"]["severity"]) == ("critical", "warning")
    assert 'track="stable"' in stable["expr"] and 'track!="stable"' in canary["expr"]
    (drift,) = by_name["ModelPilotDriftHigh"]
    assert drift["for"] == "1h" and drift["expr"].endswith("> 0.2")
    # The default job is the one the ServiceMonitor gives the operator's series: its Service's name.
    assert 'job="mp-modelpilot-metrics"' in alerts(rule_groups())[0]["expr"]


def test_the_model_alerts_keep_to_the_watched_namespaces():
    for rule in alerts(rule_groups("-f", str(CHART / "ci" / "namespaced.yaml"))):
        if rule["alert"] in {"ModelPilotHighErrorRate", "ModelPilotDriftHigh"}:
            selectors = re.findall(r"modelpilot_\w+\{([^}]*)\}", rule["expr"])
            assert selectors and all('namespace=~"team-a|team-b"' in s for s in selectors), rule["expr"]


@pytest.mark.parametrize("window, seconds", [("90s", 90), ("45m", 2700), ("2h", 7200), ("1d", 86400)])
def test_the_rollback_window_is_also_counted_in_seconds(window, seconds):
    (rule,) = [r for r in alerts(rule_groups("--set", f"prometheusRule.rolledBack.window={window}")) if r["alert"] == "ModelPilotRolledBack"]
    assert re.findall(r"time\(\) - (\d+)\b", rule["expr"]) == [str(seconds)]
    assert f"[{window}]" in rule["expr"] and f"offset {window}" in rule["expr"]


# The Grafana dashboard.


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def targets(board: dict) -> list[tuple[dict, dict]]:
    return [(panel, target) for panel in board["panels"] for target in panel.get("targets", [])]


def test_the_dashboard_configmap_holds_the_file_for_the_grafana_sidecar():
    documents = render("--set", "grafanaDashboard.enabled=true")
    configmap = only(documents, "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "modelpilot-system"
    assert json.loads(configmap["data"]["modelpilot.json"]) == dashboard()
    configmap = only(render("-f", str(OVERRIDES)), "ConfigMap")
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "MLOps"}
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1" and configmap["metadata"]["labels"]["team"] == "ml-platform"
    # The sidecar's label can be dropped for another.
    configmap = only(render("--set", "grafanaDashboard.enabled=true", "--set", "grafanaDashboard.labels.grafana_dashboard=null",
                            "--set", "grafanaDashboard.labels.dashboards=ml"), "ConfigMap")  # fmt: skip
    assert "grafana_dashboard" not in configmap["metadata"]["labels"] and configmap["metadata"]["labels"]["dashboards"] == "ml"


def test_the_dashboard_is_well_formed():
    board = dashboard()
    assert isinstance(board["schemaVersion"], int) and board["uid"] and board["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), ids
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip(), panel["title"]


def test_the_dashboard_shows_what_it_promises():
    exprs = "\n".join(target["expr"] for _, target in targets(dashboard()))
    for needle in ("modelpilot_requests_total", 'code=~"5.."', 'code!="499"', "modelpilot_prediction_errors_total",
                   "histogram_quantile(0.99", "modelpilot_canary_weight", "modelpilot_drift_score",
                   "sum by (outcome) (increase(modelpilot_rollouts_total"):  # fmt: skip
        assert needle in exprs, needle
    # Traffic, errors and latency by track and version.
    for panel, target in targets(dashboard()):
        if "modelpilot_requests_total" in target["expr"] or "_bucket" in target["expr"]:
            assert "track, model_version" in target["expr"] and "{{track}}" in target["legendFormat"], panel["title"]


def test_the_dashboard_queries_read_only_metrics_that_exist():
    known = known_metric_names()
    for panel, target in targets(dashboard()):
        names = metric_names(target["expr"])
        assert names and names <= known, (panel["title"], names - known)


def test_the_dashboard_variables_exist_and_are_used():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "deployment"):
        variable = variables[name]
        assert variable["type"] == "query" and variable["datasource"]["uid"] == "${datasource}"
        (metric,) = re.findall(r"^label_values\((\w+)", variable["query"]["query"])
        assert metric in known_metric_names(), metric
        assert any(f'=~"${name}"' in target["expr"] for _, target in targets(board)), name
    assert '=~"$namespace"' in variables["deployment"]["query"]["query"]  # deployments of the namespaces picked
    # Every variable an expression names is one of these or Grafana's own.
    used = {m for _, target in targets(board) for m in re.findall(r"\$\{?(\w+)", target["expr"])}
    assert used <= set(variables) | {"__rate_interval", "__range", "__interval"}, used


GRAFANA_VARIABLES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path):
    """promtool has no offline query check, so each query, Grafana's variables filled in, is a recording rule."""
    rules = []
    for panel, target in targets(dashboard()):
        expr = re.sub(r"\$\{?(\w+)\}?", lambda m: GRAFANA_VARIABLES.get(m.group(1), ".*"), target["expr"])
        rules.append({"record": f"dashboard:panel_{panel['id']}_{target['refId'].lower()}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


# Values.


def test_lint_strict_passes_with_every_add_on_on():
    result = helm("lint", "--strict", str(CHART), "-f", str(OVERRIDES), *ALL_ON)
    assert result.returncode == 0, result.stdout + result.stderr


def leaves(values: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        # Maps of labels and the like are values in themselves, as is a namespaceSelector.
        if isinstance(value, dict) and value and key not in {"labels", "annotations", "namespaceSelector"}:
            paths |= leaves(value, path + ".")
        else:
            paths.add(path)
    return paths


def test_the_ci_values_set_every_monitoring_value():
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    wanted = leaves({key: defaults[key] for key in MONITORING_VALUES})
    in_ci = set().union(*(leaves(yaml.safe_load(path.read_text())) for path in CI_VALUES))
    assert wanted <= in_ci, wanted - in_ci


def test_the_schema_types_every_monitoring_value():
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in leaves({key: defaults[key] for key in MONITORING_VALUES}):
        node = schema
        for key in path.split("."):
            assert node.get("additionalProperties") is False, path
            node = node["properties"][key]
        assert "type" in node or "$ref" in node, path


@pytest.mark.parametrize(
    "args, named",
    [
        (["--set", "serviceMonitor.intervall=1m"], "'intervall'"),
        (["--set", "serviceMonitor.interval=often"], "/serviceMonitor/interval"),
        (["--set", "podMonitor.namespaceSelector.matchNamez={ml}"], "'matchNamez'"),
        (["--set", "prometheusRule.errorRate.threshold=5"], "/prometheusRule/errorRate/threshold"),
        (["--set", "prometheusRule.rolledBack.window=30min"], "/prometheusRule/rolledBack/window"),
        (["--set", "prometheusRule.drift.for=0m"], "/prometheusRule/drift/for"),
        (["--set", "prometheusRule.latency.enabled=true"], "'latency'"),
        (["--set-string", "grafanaDashboard.enabled=yes"], "/grafanaDashboard/enabled"),
        (["--set", "grafanaDashboard.namespace=Monitoring"], "/grafanaDashboard/namespace"),
        (["--set", "metricsService.port=9090"], "'port'"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_the_schema_refuses_unknown_and_mistyped_monitoring_values(args, named):
    result = helm("template", str(CHART), *args)
    assert result.returncode != 0, f"{args} rendered"
    assert "schema" in result.stderr and named in result.stderr, result.stderr
