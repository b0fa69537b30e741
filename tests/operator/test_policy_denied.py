"""reconcile.plan refuses a spec that breaks optiserve.policy before it renders anything:
Stalled with reason PolicyDenied, one Warning Event, no Job, no Deployment."""

from __future__ import annotations

import copy
from dataclasses import replace

from optiserve.api import OptimizedModel
from optiserve.policy import parse_policy
from optiserve_operator.reconcile import Observed, plan
from tests.operator.helpers import BASE, CONFIG, condition, deployment, model, run
from tests.unit.policy_cases import POLICY_DATA

POLICY_CONFIG = replace(CONFIG, policy=parse_policy(POLICY_DATA))


def _spec(**changes: object) -> OptimizedModel:
    obj = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = obj["spec"]
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return OptimizedModel.model_validate(obj)


def test_a_spec_within_the_policy_gets_its_job() -> None:
    the_spec = _spec().spec  # reads claim "models", stores in "model-store": both allowed
    result = plan(Observed(model(the_spec)), "2026-01-01T00:00:00Z", POLICY_CONFIG)
    assert [m["kind"] for m in result.create] == ["ConfigMap", "Job"]
    assert result.status.phase == "Optimizing"


def test_a_spec_beyond_the_policy_is_stalled_with_policy_denied_and_nothing_is_rendered() -> None:
    the_spec = _spec(optimization__job={"image": "evil.io/miner:1"}).spec
    first = plan(Observed(model(the_spec)), "2026-01-01T00:00:00Z", POLICY_CONFIG)
    assert first.create == () and first.apply == () and first.delete_jobs == ()
    assert first.status.phase == "Failed"
    assert condition(first, "Stalled") == ("True", "PolicyDenied")
    assert condition(first, "Ready") == ("False", "PolicyDenied")
    assert condition(first, "Reconciling")[0] == "False"
    stalled = next(c for c in first.status.conditions if c.type == "Stalled")
    assert stalled.message.startswith("spec.optimization.job.image: image 'evil.io/miner:1'")
    warnings = [e for e in first.events if e.type == "Warning"]
    assert [e.reason for e in warnings] == ["PolicyDenied"]
    assert "spec.optimization.job.image" in warnings[0].message
    assert first.requeue_after is None  # a user error: looked at again when the spec changes

    # The next pass finds the same refusal: no second Event, conditions keep their time.
    again = plan(Observed(model(the_spec, first.status)), "2026-01-01T00:05:00Z", POLICY_CONFIG)
    assert again.events == ()
    assert again.status.conditions == first.status.conditions


def test_structural_rules_hold_without_any_policy() -> None:
    the_spec = _spec(source={"uri": "pvc://model-store/optiserve/ml/other/x/model.onnx"}).spec
    result = run(model(the_spec))  # CONFIG has no policy
    assert result.create == ()
    assert condition(result, "Stalled") == ("True", "PolicyDenied")
    assert "spec.source.uri" in result.status.conditions[0].message


def test_a_denied_update_leaves_what_already_serves_alone() -> None:
    good = _spec().spec
    serving = run(model(good), dep=deployment("d" * 64))
    bad = _spec(storage={"pvc": "model-store", "subPath": "a/b"}).spec
    result = run(model(bad, serving.status, generation=2), dep=deployment("d" * 64))
    assert result.apply == () and result.delete_jobs == () and result.delete_autoscalers == ()
    assert result.status.observed_generation == 2
    assert condition(result, "Stalled") == ("True", "PolicyDenied")
