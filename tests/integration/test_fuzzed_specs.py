"""Fuzzed ModelDeployment specs (tests/support/spec_fuzz.py) against the real API server and the operator.

Every spec is either refused by the API server with a message that names the field, or accepted; an
accepted one must then be handled by the operator: its spec parsed, its objects rendered, and, for a
sample applied for real, its status written for the generation with conditions, while the operator logs
no traceback and keeps running.

- Default tier: 150 specs, server-side dry run, each accepted one read and rendered in-process by the
  operator's own code; 6 accepted ones applied for real and handled by the running operator.
- Long tier (`make test-long`): 10,000 specs the same way, and 60 applied for real.
"""

from __future__ import annotations

import collections
import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from kubernetes import client
from modelpilot.api import GROUP, PLURAL, VERSION, ResolvedModel
from modelpilot.reconcile import _read_spec
from modelpilot.render import workload
from modelpilot.render.owner import Owner
from modelpilot.settings import Settings

from tests.cluster.launcher import KWOK_TOLERATION
from tests.support.spec_fuzz import specs
from tests.support.waiting import wait_for
from tests.support.figures import report_figure

pytestmark = [pytest.mark.cluster, pytest.mark.mlflow]

# A refusal names the field: spec.replicas, .spec.runtime, spec.model: Required value, unknown field "spec.é"
NAMES_A_FIELD = re.compile(r"\bspec(\.\S|\[|:| in body)")
MODEL = ResolvedModel(name="m", version="1", source="mlflow-artifacts:/1/model")


def draw(count: int) -> list[tuple[str, dict]]:
    drawn: list[tuple[str, dict]] = []

    @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(specs())
    def collect(example):
        drawn.append(example)

    collect()
    return drawn


def body(namespace: str, spec: dict) -> dict:
    name = f"f-{uuid.uuid4().hex[:12]}"
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def dry_run(api: client.CustomObjectsApi, namespace: str, spec: dict) -> tuple[dict | None, str]:
    """(the object as the API server would store it, "") or (None, its refusal)."""
    try:
        return api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body(namespace, spec),
                                                   dry_run="All", field_validation="Strict"), ""  # fmt: skip
    except client.ApiException as exc:
        try:
            return None, f"HTTP {exc.status}: {json.loads(exc.body)['message']}"
        except (TypeError, ValueError, KeyError):
            return None, f"HTTP {exc.status}: {exc.body or exc.reason}"


def handled_in_process(stored: dict) -> str:
    """What the operator makes of a stored object, with its own code: a parsed spec rendered into its
    objects, or the InvalidSpec reason status would show. Anything else raises."""
    spec, failure = _read_spec(stored)
    if spec is None:
        assert failure.reason == "InvalidSpec" and failure.message.startswith("invalid spec: spec."), failure
        return "invalid"
    owner = Owner(stored["metadata"]["name"], stored["metadata"]["namespace"], "uid")
    image = workload.runtime_image(spec, Settings().runtime_image)
    json.dumps(workload.deployment(owner, spec, MODEL, image))
    json.dumps(workload.deployment(owner, spec, MODEL, image, track="canary", replicas=1))
    for rendered in (workload.service(owner, spec), workload.autoscaler(owner, spec), workload.disruption_budget(owner, spec)):
        json.dumps(rendered)
    return "rendered"


def fuzz(kube_api, namespace: str, count: int) -> tuple[collections.Counter, list[dict]]:
    """Dry-run `count` fuzzed specs, four at a time; the accepted objects are returned for real applies."""
    api = client.CustomObjectsApi(kube_api)
    drawn = draw(count)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda example: dry_run(api, namespace, example[1]), drawn))
    tally: collections.Counter = collections.Counter()
    accepted, unclear = [], []
    for (mutation, spec), (stored, refusal) in zip(drawn, answers):
        if stored is None:
            tally["refused"] += 1
            tally[f"refused {mutation}"] += 1
            if not NAMES_A_FIELD.search(refusal):
                unclear.append((refusal[:300], json.dumps(spec)[:300]))
            continue
        tally["accepted"] += 1
        tally[f"accepted {mutation}"] += 1
        tally[handled_in_process(stored)] += 1
        accepted.append(stored)
    assert not unclear, f"{len(unclear)} refusals name no field, such as:\n" + "\n".join(map(str, unclear[:5]))
    assert tally["refused"] + tally["accepted"] == count
    return tally, accepted


def real_applies(kubectl, kube_api, operator, namespace: str, mlflow, model_name: str, accepted: list[dict], count: int) -> int:
    """Apply up to `count` accepted specs for real, pointed at a real model and placed on kwok's nodes, and
    wait for the operator to write each one's status for its generation, with conditions."""
    api = client.CustomObjectsApi(kube_api)
    names = []
    for stored in accepted:
        if len(names) == count:
            break
        spec = dict(stored["spec"])
        spec["model"] = {"name": model_name, "version": "1"}
        spec["mlflow"] = {"trackingUri": mlflow.uri, "credentialsSecret": "mlflow-creds"}
        spec["pod"] = {**spec.get("pod", {}), "tolerations": [KWOK_TOLERATION], "nodeSelector": {"type": "kwok"}}
        document = body(namespace, spec)
        try:
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, document, field_validation="Strict")
        except client.ApiException as exc:
            assert exc.status in (400, 422) and NAMES_A_FIELD.search(exc.body or ""), exc.body
            continue
        names.append(document["metadata"]["name"])

    def reported(name: str) -> bool:
        found = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        status = found.get("status") or {}
        return status.get("observedGeneration") == found["metadata"]["generation"] and bool(status.get("conditions"))

    for name in names:
        try:
            wait_for(lambda: reported(name), f"status of {namespace}/{name}", timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noperator log:\n{operator.tail(40)}") from None
    assert operator.proc.poll() is None, operator.tail()
    log = operator.log_text()
    assert "Traceback" not in log and "failed with an exception" not in log, operator.tail(80)
    return len(names)


def _run(kubectl, kube_api, operator, module_namespace, mlflow, registered_model, count: int, applies: int):
    tally, accepted = fuzz(kube_api, module_namespace, count)
    applied = real_applies(kubectl, kube_api, operator, module_namespace, mlflow, registered_model, accepted, applies)
    report_figure(f"fuzzed specs: {count}, applied for real and handled by the operator: {applied}; " + json.dumps(dict(sorted(tally.items()))))
    assert tally["accepted"] and tally["refused"], tally
    assert applied, "no accepted spec could be applied for real"


def test_fuzzed_specs_are_refused_naming_the_field_or_handled(kubectl, kube_api, operator, module_namespace, mlflow, registered_model):
    _run(kubectl, kube_api, operator, module_namespace, mlflow, registered_model, 150, 6)


@pytest.mark.long
@pytest.mark.timeout(5400)
def test_ten_thousand_fuzzed_specs(kubectl, kube_api, operator, module_namespace, mlflow, registered_model):
    _run(kubectl, kube_api, operator, module_namespace, mlflow, registered_model, 10_000, 60)
