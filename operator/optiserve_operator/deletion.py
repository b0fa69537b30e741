"""Deleting an OptimizedModel whose artifacts must go too (``keepArtifactsOnDelete: false``).

Children go by ownerReferences either way. Artifacts live on a PVC the operator cannot read
(or under an S3 prefix whose credentials only pods get), so a small Job removes them (the
S3 objects marker first) while the model waits on the operator's finalizer; the finalizer is
released when that Job has finished (or failed: a deletion must not hang forever on a
cleanup, so a failure is reported as a Warning event instead). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from optiserve.render.job import render_cleanup_job
from optiserve.render.kubernetes import Manifest
from optiserve_operator.observe import JobState
from optiserve_operator.reconcile import Config, Event, ModelState

FINALIZER = "optiserve.io/artifacts"
# Finalizer names optiserve no longer uses. Earlier versions named kopf's finalizer
# "optiserve.io/finalizer"; kopf never wrote it (no handler here needs one), but an object that
# carries it, from whatever source, would wait on it forever: the operator removes it.
RETIRED_FINALIZERS = frozenset({"optiserve.io/finalizer"})


@dataclass(frozen=True)
class DeletionPlan:
    create: tuple[Manifest, ...] = ()
    release: bool = False  # remove the finalizer: the API server then deletes the model
    events: tuple[Event, ...] = ()


def retired_finalizers_patch(finalizers: Sequence[str]) -> list[dict[str, Any]] | None:
    """A JSON patch that drops the retired names, or None when there are none. The list is
    tested as read, so a concurrent change to it fails the patch (and the pass is retried)
    instead of being overwritten; server-side apply could not do this, as the entries belong
    to whichever field manager wrote them."""
    kept = [name for name in finalizers if name not in RETIRED_FINALIZERS]
    if len(kept) == len(finalizers):
        return None
    return [
        {"op": "test", "path": "/metadata/finalizers", "value": list(finalizers)},
        {"op": "replace", "path": "/metadata/finalizers", "value": kept},
    ]


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
        where = model.spec.storage.pvc or model.spec.storage.s3
        message = f"removing {len(digests)} artifact folder(s) from {where}"
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
