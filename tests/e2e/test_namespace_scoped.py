"""The operator watching one namespace (``--namespace``, by name, then after a restart by a glob)
on the real control plane: it reconciles the models there to Ready, and a model in another
namespace stays untouched (no children, no status), as does one created there while the
operator was down. The start's fill of the child cache (cache_fill.py) lists only the watched
namespace, and finds every child there: the restarted operator writes nothing.

The fleet's cluster (tests/e2e/scale.py): models whose artifacts already exist (no Job; kwok
plays Triton's pods), the operator as a user of its own, and the API server's audit log of that
user's requests (tests/e2e/operator_audit.py), from which every request of the operator,
kopf's and the fill's included, is checked to stay inside the watched namespace.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from optiserve.render.kubernetes import FIELD_MANAGER
from optiserve_operator.handlers import CACHED_RESOURCES
from optiserve_testing.waiting import wait_until
from tests.e2e.conftest import prepare_model_namespace
from tests.e2e.scale import Fleet, model_manifest, running_fleet

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(600)]

SIZE = 2
WATCHED = "team-a"
GLOB = "team-*"  # the same namespace, as a pattern (kopf's globs), after the restart
OTHER = "elsewhere"
# What the operator may ask about outside any namespace: kopf's discovery of resources (the
# CRDs) and, with a glob, the namespaces that match it (kopf's watch, the fill's listing).
CLUSTER_SCOPED = {"customresourcedefinitions", "namespaces"}
# Every kind the start's fill lists, by its plural.
FILLED = {plural for _, plural in CACHED_RESOURCES.values()}
# The relist sweep runs 2 s after kopf's listings (relist.QUIET_SECONDS): its listings, which
# must stay in the namespace too, are in the audit log by then.
SWEEP_SETTLED_S = 5.0


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with running_fleet(SIZE, ("--namespace", WATCHED), namespace=WATCHED) as started:
        yield started


def beyond_the_namespace(entries: list[dict[str, Any]]) -> list[str]:
    """``verb resource namespace`` of each request that reached past ``WATCHED``: into another
    namespace, or across all of them for a namespaced kind (a cluster-wide listing)."""
    found = []
    for entry in entries:
        ref = entry.get("objectRef")
        if ref is None:  # discovery (/api, /apis): no object
            continue
        namespace = ref.get("namespace")
        if namespace != WATCHED and not (namespace is None and ref["resource"] in CLUSTER_SCOPED):
            found.append(f"{entry['verb']} {ref['resource']} {namespace or '(all namespaces)'}")
    return found


def filled_kinds(entries: list[dict[str, Any]]) -> set[str]:
    """The kinds the operator's own client (not kopf) listed in ``WATCHED``: the start's fill
    lists every cached kind, the relist sweep only those it holds objects of."""
    return {
        e["objectRef"]["resource"]
        for e in entries
        if e["verb"] == "list"
        and not e.get("userAgent", "").startswith("kopf")
        and (e.get("objectRef") or {}).get("namespace") == WATCHED
    }


def other_model(fleet: Fleet, name: str) -> dict[str, Any]:
    return cast(
        dict[str, Any],
        fleet.custom.get_namespaced_custom_object(
            "optiserve.io", "v1alpha1", OTHER, "optimizedmodels", name
        ),
    )


def created_in_other(fleet: Fleet, name: str) -> str:
    """Create a model in ``OTHER``; its resourceVersion as created."""
    fleet.cluster.apply([model_manifest(name)], namespace=OTHER)
    return str(other_model(fleet, name)["metadata"]["resourceVersion"])


def assert_untouched(fleet: Fleet, name: str, version: str) -> None:
    """Not written since it was created: the status the API server defaults (no conditions,
    generation 0 observed), no field of the operator's, no child in its namespace."""
    obj = other_model(fleet, name)
    assert obj["status"] == {"observedGeneration": 0, "phase": "Pending"}, obj["status"]
    assert obj["metadata"]["resourceVersion"] == version, obj["metadata"]
    managers = {f.get("manager") for f in obj["metadata"].get("managedFields") or []}
    assert FIELD_MANAGER not in managers, managers
    children = fleet.children(OTHER)
    assert not any(children.values()), children


def reconciled(fleet: Fleet) -> float:
    try:
        return fleet.metric("optiserve_reconciles_total")
    except OSError:  # the restarted operator is not serving its metrics yet
        return 0.0


def test_only_the_watched_namespace_is_reconciled_listed_and_filled_across_a_restart(
    fleet: Fleet,
) -> None:
    operator = fleet.operator
    assert operator is not None
    # A namespace like the watched one (claims, a model to optimize): a model there would get
    # a Job and a status within seconds if the operator looked at it.
    prepare_model_namespace(fleet.cluster, OTHER)
    stray = created_in_other(fleet, "stray")
    names = fleet.names()
    fleet.create_seeded(names)
    wait_until("the watched models Ready", lambda: fleet.ready(set(names)) == SIZE, 120)
    time.sleep(SWEEP_SETTLED_S)

    assert_untouched(fleet, "stray", stray)
    since_start = fleet.audit.entries_since(0)
    beyond = beyond_the_namespace(since_start)
    assert beyond == [], f"{beyond}\n{operator.logs()}"
    assert filled_kinds(since_start) >= FILLED, filled_kinds(since_start)
    assert fleet.children()["deployments"] == SIZE

    # Down, a model appears in the other namespace; up again, the operator watches the same
    # namespace by a glob: the fill lists the namespaces matching it, then each kind there.
    mark = fleet.audit.mark()
    operator.stop()
    stray_while_down = created_in_other(fleet, "stray-while-down")
    operator.extra_args[operator.extra_args.index(WATCHED)] = GLOB
    operator.start()
    fleet.wait_operator()
    wait_until("the watched models reconciled again", lambda: reconciled(fleet) >= SIZE, 120)
    time.sleep(SWEEP_SETTLED_S)

    since_restart = fleet.audit.entries_since(mark)
    beyond = beyond_the_namespace(since_restart)
    assert beyond == [], f"{beyond}\n{operator.logs()}"
    assert filled_kinds(since_restart) >= FILLED, filled_kinds(since_restart)
    # The fill found every child of the watched models: none is applied again, no status moves.
    assert fleet.audit.writes_since(mark) == {}, operator.logs()
    assert fleet.ready(set(names)) == SIZE
    assert_untouched(fleet, "stray", stray)
    assert_untouched(fleet, "stray-while-down", stray_while_down)
