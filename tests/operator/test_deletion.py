"""Deleting a model whose artifacts must go: a cleanup Job under the operator's finalizer."""

from __future__ import annotations

from optiserve.api.status import Artifact, OptimizedModelStatus
from optiserve_operator.deletion import plan_deletion, wants_finalizer
from optiserve_operator.reconcile import ModelState
from tests.operator.helpers import CONFIG, job, model, spec

OLD, NEW = "a" * 64, "b" * 64


def doomed(keep: bool = False) -> ModelState:
    the_spec = spec()
    storage = the_spec.storage.model_copy(update={"keep_artifacts_on_delete": keep})
    status = OptimizedModelStatus(
        artifact=Artifact(digest=NEW, uri="pvc://model-store/optiserve/x"),
        last_good_artifact=Artifact(digest=OLD, uri="pvc://model-store/optiserve/y"),
    )
    return model(the_spec.model_copy(update={"storage": storage}), status)


def test_kept_artifacts_need_no_finalizer_and_release_at_once() -> None:
    state = doomed(keep=True)
    assert not wants_finalizer(state)
    assert plan_deletion(state, None, (), CONFIG).release


def test_a_cleanup_job_removes_only_folders_no_other_model_uses() -> None:
    state = doomed()
    assert wants_finalizer(state)
    result = plan_deletion(state, None, in_use=[OLD], config=CONFIG)
    assert not result.release
    (cleanup,) = result.create
    command = cleanup["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[-1] == f"/mnt/pvc/model-store/optiserve/ml/digits/{NEW}"  # its own folder
    assert not any(OLD in arg for arg in command)
    assert "ownerReferences" not in cleanup["metadata"]
    assert cleanup["spec"]["ttlSecondsAfterFinished"] > 0


def test_release_waits_for_the_cleanup_job_and_survives_its_failure() -> None:
    state = doomed()
    running = plan_deletion(state, job("c", "", "active"), (), CONFIG)
    assert not running.release and running.create == ()
    done = plan_deletion(state, job("c", "", "succeeded"), (), CONFIG)
    assert done.release and done.events == ()
    failed = plan_deletion(state, job("c", "", "failed", "no space", "Error"), (), CONFIG)
    assert failed.release and failed.events[0].type == "Warning"


def test_nothing_to_remove_when_every_artifact_is_shared() -> None:
    result = plan_deletion(doomed(), None, in_use=[OLD, NEW], config=CONFIG)
    assert result.release and result.create == ()


def test_with_s3_storage_the_cleanup_job_deletes_the_objects_with_the_store_credentials() -> None:
    state = doomed()
    storage = state.spec.storage.model_copy(update={"pvc": None, "s3": "s3://bucket/optiserve"})
    store = {"endpoint": "http://s3.storage:8333", "credentialsSecret": "writer"}
    the_spec = type(state.spec).model_validate(
        {**state.spec.to_wire(), "storage": storage.to_wire(), "objectStore": store}
    )
    result = plan_deletion(model(the_spec, state.status), None, in_use=[OLD], config=CONFIG)
    (cleanup,) = result.create
    container = cleanup["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-2:] == ["s3://bucket/optiserve/ml/digits", NEW]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert refs == {"writer"}
    assert "s3://bucket/optiserve" in result.events[0].message
