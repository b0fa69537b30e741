"""What the operator keeps of a model's superseded optimizations. Pure.

The artifact folders themselves are pruned by the optimization Job (the operator never reads
volumes; see optiserve_optimizer/retention.py): the operator only tells it which digests it
serves. Here: the spec ConfigMaps of superseded Jobs, which nothing else removes (a Job goes
after ``ttlSecondsAfterFinished``, its ConfigMap would stay until the model is deleted).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from optiserve.api.status import OptimizedModelStatus


@dataclass(frozen=True)
class SpecConfigMap:
    """A ConfigMap the operator made to hand a Job its spec (same name as the Job)."""

    name: str
    digest: str


def kept_digests(status: OptimizedModelStatus) -> tuple[str, ...]:
    """The served and last good artifacts' digests: never removed from storage."""
    found = {a.digest for a in (status.artifact, status.last_good_artifact) if a is not None}
    return tuple(sorted(found))


def config_maps_to_delete(
    config_maps: Iterable[SpecConfigMap],
    *,
    wanted_job: str,
    keep_digests: Iterable[str],
    active_jobs: Iterable[str],
) -> tuple[str, ...]:
    """Spec ConfigMaps of Jobs that are neither the wanted one nor of a served digest.

    The ConfigMap of a Job still running keeps its place (its pod may not have started yet,
    and would then wait forever for the volume); the plan deletes a superseded running Job
    first, and its ConfigMap goes in a later pass.
    """
    keep = set(keep_digests)
    running = set(active_jobs)
    return tuple(
        sorted(
            cm.name
            for cm in config_maps
            if cm.name != wanted_job and cm.digest not in keep and cm.name not in running
        )
    )
