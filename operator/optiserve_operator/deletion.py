"""Deleting an OptimizedModel whose artifacts must go too (``keepArtifactsOnDelete: false``).

Children go by ownerReferences either way. Artifacts live on a PVC the operator cannot read,
so a small Job removes their folders while the model waits on the operator's finalizer; the
finalizer is released when that Job has finished (or failed: a deletion must not hang forever
on a cleanup, so a failure is reported as a Warning event instead). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from optiserve.render.job import render_cleanup_job
from optiserve.render.kubernetes import Manifest
from optiserve_operator.observe import JobState
from optiserve_operator.reconcile import Config, Event, ModelState

FINALIZER = "optiserve.io/artifacts"


@dataclass(frozen=True)
class DeletionPlan:
    create: tuple[Manifest, ...] = ()
    release: bool = False  # remove the finalizer: the API server then deletes the model
    events: tuple[Event, ...] = ()


def wants_finalizer(model: ModelState) -> bool:
    return not model.spec.storage.keep_artifacts_on_delete


def plan_deletion(
    model: ModelState, cleanup: JobState | None, in_use: Iterable[str], config: Config
) -> DeletionPlan:
    """``in_use``: digests other models on the same storage still serve (never removed)."""
    if not wants_finalizer(model):
        return DeletionPlan(release=True)
    status = model.status
    mine = {a.digest for a in (status.artifact, status.last_good_artifact) if a is not None}
    digests = sorted(mine - set(in_use))
    if not digests:
        return DeletionPlan(release=True)
    if cleanup is None:
        job = render_cleanup_job(model.owner, model.spec, digests, image=config.optimizer_image)
        message = f"removing {len(digests)} artifact folder(s) from {model.spec.storage.pvc}"
        return DeletionPlan(create=(job,), events=(Event("Normal", "ArtifactCleanup", message),))
    if cleanup.phase == "succeeded":
        return DeletionPlan(release=True)
    if cleanup.phase == "failed":
        message = (
            f"artifacts were not removed ({cleanup.failure_reason}): {cleanup.failure_message}"
        )
        return DeletionPlan(
            release=True, events=(Event("Warning", "ArtifactCleanupFailed", message),)
        )
    return DeletionPlan()
