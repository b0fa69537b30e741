"""Skipping server-side applies that would change nothing (optiserve_operator.applied)."""

from __future__ import annotations

import copy
from typing import Any

from optiserve.api import OptimizedModel
from optiserve.api.status import Artifact
from optiserve.render.deployment import render_deployment
from optiserve.render.kubernetes import Owner
from optiserve_operator.applied import ANNOTATION_APPLIED, contains, stamped, unchanged
from tests.operator.helpers import BASE

OWNER = Owner(name="digits", namespace="ns", uid="u-1")


def deployment() -> dict[str, Any]:
    spec = OptimizedModel.model_validate(BASE).spec
    artifact = Artifact(digest="a" * 64, uri=f"pvc://store/optiserve/ns/digits/{'a' * 64}/repo")
    return render_deployment(OWNER, spec, artifact)


def as_stored(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the API server returns after an apply: our fields plus defaults and bookkeeping."""
    live = stamped(manifest)
    live["metadata"].update({"uid": "d-1", "resourceVersion": "7", "generation": 1})
    live["spec"]["progressDeadlineSeconds"] = live["spec"].get("progressDeadlineSeconds", 600)
    for container in live["spec"]["template"]["spec"]["containers"]:
        container["terminationMessagePath"] = "/dev/termination-log"
        container["imagePullPolicy"] = container.get("imagePullPolicy", "IfNotPresent")
    live["status"] = {"replicas": 1, "readyReplicas": 1}
    return live


def test_a_child_as_last_applied_needs_no_write_despite_server_defaults() -> None:
    manifest = deployment()
    assert unchanged(as_stored(manifest), manifest)


def test_a_missing_child_is_applied() -> None:
    assert not unchanged(None, deployment())


def test_an_edit_of_a_field_we_own_is_put_back() -> None:
    manifest = deployment()
    live = as_stored(manifest)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else:latest"
    assert not unchanged(live, manifest)


def test_a_field_we_stopped_setting_is_applied_so_the_server_removes_it() -> None:
    # Same values everywhere the new manifest looks, but the old apply owned one more field.
    old = deployment()
    old["metadata"]["annotations"]["optiserve.io/failed-rollout"] = "x/"
    live = as_stored(old)
    new = deployment()
    assert contains(live, new)  # a value comparison alone would skip it
    assert not unchanged(live, new)


def test_a_child_applied_before_the_annotation_existed_is_applied_once() -> None:
    manifest = deployment()
    live = as_stored(manifest)
    del live["metadata"]["annotations"][ANNOTATION_APPLIED]
    assert not unchanged(live, manifest)


def test_lists_compare_item_by_item_and_by_length() -> None:
    assert contains([{"a": 1, "b": 2}], [{"a": 1}])
    assert not contains([{"a": 1}, {"a": 2}], [{"a": 1}])
    assert not contains(["x"], ["y"])
    assert not contains({"port": "8000"}, {"port": 8000})


def test_quantities_compare_by_value_as_the_server_stores_them() -> None:
    assert contains({"limits": {"memory": "2Gi", "cpu": "2"}}, {"limits": {"memory": "2048Mi"}})
    assert contains({"requests": {"cpu": "500m"}}, {"requests": {"cpu": "0.5"}})
    assert contains({"emptyDir": {"sizeLimit": "1Gi"}}, {"emptyDir": {"sizeLimit": "1024Mi"}})
    assert not contains({"limits": {"memory": "1Gi"}}, {"limits": {"memory": "2048Mi"}})
    assert not contains({"requests": {"cpu": "1"}}, {"requests": {"cpu": "0.5"}})
    # Only where quantities live: elsewhere another spelling is another value.
    assert not contains({"labels": {"size": "1Gi"}}, {"labels": {"size": "1024Mi"}})


def test_stamping_leaves_the_rendered_manifest_alone() -> None:
    manifest = deployment()
    before = copy.deepcopy(manifest)
    stamped(manifest)
    assert manifest == before
