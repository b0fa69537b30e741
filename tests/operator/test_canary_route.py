"""A canary behind an HTTPRoute through ``reconcile.plan``: the route's weights per step, the
Services, and the order in which the canary's objects go when it ends."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from optiserve.api import OptimizedModel, OptimizedModelSpec
from optiserve.api.status import OptimizedModelStatus
from optiserve.render.kubernetes import Owner, job_name
from optiserve_operator.canary import Readings
from optiserve_operator.canary_rollout import CanaryObserved
from optiserve_operator.exposure import ExposureState
from optiserve_operator.observe import DeploymentState
from optiserve_operator.reconcile import Config, ModelState, Observed, Plan, plan, recipe_digest

from .helpers import BASE, deployment, job, summary_message

CONFIG = Config(optimizer_image="optimizer:test", poll_seconds=30, resync_seconds=600)
GOOD = Readings(canary_success=400, canary_failure=0, canary_p99_ms=5.0, stable_p99_ms=5.0)
BAD = Readings(canary_success=150, canary_failure=50, canary_p99_ms=5.0, stable_p99_ms=5.0)
ROLLOUT = {
    "strategy": "canary",
    # With 3 CPU replicas (4 pods) the replica counts would give 25% and 50%: the route
    # carries 10% and 40% exactly.
    "steps": [{"weight": 10, "pauseSeconds": 60}, {"weight": 40, "pauseSeconds": 60}],
    "analysis": {"minRequests": 100, "maxErrorRate": 0.02, "intervalSeconds": 10},
}
EXPOSURE = {"httpRoute": {"parentRefs": [{"name": "public"}], "hostnames": ["d.example.com"]}}
LIVE_ROUTE = ExposureState(present=frozenset({"HTTPRoute"}))


def canary_object(precision: str, *, exposed: bool = True, name: str = "digits") -> Any:
    obj: dict[str, Any] = copy.deepcopy(BASE)
    obj["metadata"]["name"] = name
    obj["spec"]["optimization"]["quantization"] = {"precision": precision}
    obj["spec"]["serving"]["replicas"] = 3
    if exposed:
        obj["spec"]["serving"]["exposure"] = EXPOSURE
    obj["spec"]["rollout"] = ROLLOUT
    return obj


def canary_spec(precision: str, *, exposed: bool = True, name: str = "digits") -> Any:
    return OptimizedModel.model_validate(canary_object(precision, exposed=exposed, name=name)).spec


def stable(digest: str, replicas: int = 3, *, labelled: bool = True) -> DeploymentState:
    return replace(deployment(digest, replicas=replicas), revision="stable" if labelled else None)


class Model:
    """One model's passes: each feeds the last pass's status into the next."""

    def __init__(
        self, *, exposed: bool = True, name: str = "digits", owner: Owner | None = None
    ) -> None:
        self.owner = owner or Owner(name=name, namespace="ml", uid="uid-1")
        self.old_spec = canary_spec("int8", exposed=exposed, name=name)
        self.spec = canary_spec("fp32", exposed=exposed, name=name)
        self.old = recipe_digest(name, self.old_spec)
        self.new = recipe_digest(name, self.spec)
        self.status = OptimizedModelStatus()
        self.generation = 1

    def pass_(self, spec: OptimizedModelSpec, now: str, **observed: Any) -> Plan:
        model = ModelState(self.owner, self.generation, {}, spec, self.status)
        result = plan(Observed(model=model, **observed), now, CONFIG)
        self.status = result.status
        return result

    def served(self, live: ExposureState = LIVE_ROUTE) -> Plan:
        """Ready on the int8 artifact; then the fp32 Job has finished."""
        old_summary = _summary(self.owner.name, self.old, "int8")
        done_old = job(job_name(self.owner.name, self.old), self.old, "succeeded", old_summary)
        self.pass_(self.old_spec, "2026-01-01T00:00:00Z")
        self.pass_(self.old_spec, "2026-01-01T00:01:00Z", jobs=(done_old,))
        ready = self.pass_(
            self.old_spec, "2026-01-01T00:02:00Z", deployment=stable(self.old), exposure=live
        )
        assert ready.status.phase == "Ready"
        self.generation = 2
        new_summary = _summary(self.owner.name, self.new, "fp32")
        done_new = job(job_name(self.owner.name, self.new), self.new, "succeeded", new_summary)
        return self.pass_(
            self.spec,
            "2026-01-01T00:03:00Z",
            jobs=(done_new,),
            deployment=stable(self.old),
            exposure=live,
            canary=CanaryObserved(configured=True),
        )

    def canary(
        self, replicas: int, readings: Readings | None = GOOD, *, service: bool = True
    ) -> CanaryObserved:
        """The canary Deployment serving the candidate, its analysis read, its Service."""
        return CanaryObserved(
            deployment=deployment(self.new, replicas=replicas),
            configured=True,
            readings=readings,
            service=service,
        )

    def step(self, now: str, **observed: Any) -> Plan:
        observed.setdefault("exposure", LIVE_ROUTE)
        return self.pass_(self.spec, now, **observed)


def _summary(name: str, digest: str, precision: str) -> str:
    return summary_message(digest, precision).replace("/ml/digits/", f"/ml/{name}/")


def of_kind(result: Plan, kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in result.apply if m["kind"] == kind}


def backends(result: Plan) -> list[tuple[str, int]]:
    route = of_kind(result, "HTTPRoute")["digits"]
    (rule,) = route["spec"]["rules"]
    return [(ref["name"], ref["weight"]) for ref in rule["backendRefs"]]


def weighted(weight: int) -> ExposureState:
    return replace(LIVE_ROUTE, canary_weight=weight)


def selector_revision(result: Plan) -> str | None:
    service = of_kind(result, "Service")["digits"]
    revision: str | None = service["spec"]["selector"].get("optiserve.io/revision")
    return revision


def started() -> tuple[Model, Plan]:
    model = Model()
    return model, model.served()


def test_the_route_carries_each_steps_weight_exactly_then_returns_to_one_backend() -> None:
    model, start = started()
    # The canary starts: its Service and the narrowed stable Service come first; the route
    # keeps one backend until the canary pods serve (no weight on a backend without endpoints).
    assert start.status.rollout is not None and start.status.rollout.weight == 10
    assert "step 1 of 2: canary at 10%" in start.status.rollout.message
    assert backends(start) == [("digits", 1)]
    assert set(of_kind(start, "Service")) == {"digits", "digits-canary"}
    assert selector_revision(start) == "stable"
    kinds = [m["kind"] for m in start.apply]
    assert kinds.index("Service") < kinds.index("HTTPRoute")
    names = [m["metadata"]["name"] for m in start.apply]
    assert names.index("digits-canary") < names.index("digits", kinds.index("HTTPRoute"))
    # The stable pods carry the label the narrowed Service selects.
    stable_dep = of_kind(start, "Deployment")["digits"]
    assert stable_dep["spec"]["template"]["metadata"]["labels"]["optiserve.io/revision"] == (
        "stable"
    )

    serving = model.step(
        "2026-01-01T00:03:30Z", deployment=stable(model.old), canary=model.canary(1)
    )
    assert backends(serving) == [("digits", 90), ("digits-canary", 10)]
    # The replica counts stay what the budget gives; the weight no longer depends on them.
    deployments = of_kind(serving, "Deployment")
    assert (
        deployments["digits"]["spec"]["replicas"],
        deployments["digits-canary"]["spec"]["replicas"],
    ) == (3, 1)

    nxt = model.step(
        "2026-01-01T00:04:01Z",
        deployment=stable(model.old),
        canary=model.canary(1),
        exposure=weighted(10),
    )
    assert nxt.status.rollout is not None and nxt.status.rollout.step == 1
    assert nxt.status.rollout.weight == 40 and "canary at 40%" in nxt.status.rollout.message
    assert backends(nxt) == [("digits", 60), ("digits-canary", 40)]

    promote = model.step(
        "2026-01-01T00:05:05Z",
        deployment=stable(model.old, 2),
        canary=model.canary(2),
        exposure=weighted(40),
    )
    assert promote.status.rollout is not None and promote.status.rollout.phase == "Promoting"
    assert backends(promote) == [("digits", 60), ("digits-canary", 40)]

    # Promoting: the stable is being replaced in place (not rolled out): still weighted.
    replacing = replace(stable(model.new, 2), updated_replicas=1, available_replicas=1)
    held = model.step(
        "2026-01-01T00:06:20Z", deployment=replacing, canary=model.canary(2), exposure=weighted(40)
    )
    assert backends(held) == [("digits", 60), ("digits-canary", 40)]
    assert selector_revision(held) == "stable"

    # Promoted: the route returns to one backend first; the canary's Deployment and Service
    # stay while the live route still sends to them, and the model is looked at again soon.
    finish = model.step(
        "2026-01-01T00:06:30Z",
        deployment=stable(model.new, 2),
        canary=model.canary(2),
        exposure=weighted(40),
    )
    assert backends(finish) == [("digits", 1)]
    assert "digits-canary" not in of_kind(finish, "Service")
    assert not finish.delete_canary and not finish.delete_canary_service
    assert selector_revision(finish) == "stable"  # the canary pods still run
    assert finish.requeue_after == 10.0

    # The live route has one backend: now the canary's objects go.
    gone = model.step(
        "2026-01-01T00:06:40Z", deployment=stable(model.new, 2), canary=model.canary(2)
    )
    assert gone.delete_canary and gone.delete_canary_service
    assert backends(gone) == [("digits", 1)]

    done = model.step(
        "2026-01-01T00:07:00Z",
        deployment=stable(model.new, 3),
        canary=CanaryObserved(configured=True),
    )
    assert done.status.rollout is None and done.status.phase == "Ready"
    assert selector_revision(done) is None  # every serving pod again
    assert backends(done) == [("digits", 1)]
    assert not done.delete_canary and not done.delete_canary_service


def test_an_aborted_canary_leaves_the_route_before_its_pods_go() -> None:
    model, _ = started()
    model.step("2026-01-01T00:04:00Z", deployment=stable(model.old), canary=model.canary(1))
    aborted = model.step(
        "2026-01-01T00:04:30Z",
        deployment=stable(model.old),
        canary=model.canary(1, BAD),
        exposure=weighted(10),
    )
    assert aborted.status.phase == "Failed"
    assert backends(aborted) == [("digits", 1)]
    assert selector_revision(aborted) == "stable"  # in-cluster clients keep off the bad pods
    assert not aborted.delete_canary and not aborted.delete_canary_service
    assert aborted.requeue_after == 10.0  # not the resync of a settled model
    later = model.step(
        "2026-01-01T00:04:40Z", deployment=stable(model.old), canary=model.canary(1, None)
    )
    assert later.delete_canary and later.delete_canary_service
    assert later.requeue_after == 600.0


def test_a_stable_not_yet_rolled_out_with_its_label_keeps_the_replica_weight() -> None:
    model, _ = started()
    unlabelled = stable(model.old, labelled=False)
    result = model.step("2026-01-01T00:04:00Z", deployment=unlabelled, canary=model.canary(1))
    assert backends(result) == [("digits", 1)]
    assert selector_revision(result) is None  # the unlabelled pods must keep serving
    assert "digits-canary" not in of_kind(result, "Service")
    rolling = replace(stable(model.old), updated_replicas=1)  # labelled template, old pods left
    result = model.step("2026-01-01T00:04:10Z", deployment=rolling, canary=model.canary(1))
    assert backends(result) == [("digits", 1)] and selector_revision(result) is None


def test_an_unready_canary_gets_no_weight() -> None:
    model, _ = started()
    unready = CanaryObserved(
        deployment=replace(deployment(model.new, replicas=1, ready=False)),
        configured=True,
        service=True,
    )
    result = model.step("2026-01-01T00:04:00Z", deployment=stable(model.old), canary=unready)
    assert backends(result) == [("digits", 1)]
    assert "digits-canary" in of_kind(result, "Service")  # kept for when it serves


def test_without_an_http_route_nothing_changes() -> None:
    model = Model(exposed=False)
    start = model.served(live=ExposureState())
    assert start.status.rollout is not None and start.status.rollout.weight == 25  # pods
    result = model.step(
        "2026-01-01T00:04:00Z",
        deployment=stable(model.old),
        canary=model.canary(1, service=False),
        exposure=ExposureState(),
    )
    assert set(of_kind(result, "Service")) == {"digits"} and selector_revision(result) is None
    assert not of_kind(result, "HTTPRoute") and not result.delete_canary_service


def test_a_name_without_room_for_the_canary_service_keeps_the_replica_weight() -> None:
    name = "d" * 57  # "-canary" would make 64 characters: no Service can have that name
    model = Model(name=name)
    model.served()
    result = model.step(
        "2026-01-01T00:04:00Z", deployment=stable(model.old), canary=model.canary(1)
    )
    route = of_kind(result, "HTTPRoute")[name]
    assert len(route["spec"]["rules"][0]["backendRefs"]) == 1
    assert set(of_kind(result, "Service")) == {name}
