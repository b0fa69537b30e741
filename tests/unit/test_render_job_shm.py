"""The optimization Job's /dev/shm: a memory-backed emptyDir exactly when serving.tuning is on.

The tuning search runs a local tritonserver whose python backend moves every batch through
/dev/shm; a runtime's default 64 MiB cannot hold a batch of 64 ResNet-sized inputs
(docs/serving.md), so the Job brings its own. Without tuning nothing in the Job uses it.
"""

from __future__ import annotations

import copy
from typing import Any

from optiserve.api import OptimizedModelSpec
from optiserve.render.autoscaling import parse_quantity
from optiserve.render.job import TUNING_SHM_SIZE, render_job
from optiserve.render.sizing import JOB_LIMITS

from .test_render_kubernetes import CPU_MODEL, CPU_OWNER, DIGEST, IMAGE, pod_spec, spec_of


def with_tuning(model: dict[str, Any]) -> OptimizedModelSpec:
    tuned = copy.deepcopy(model)
    tuned["spec"]["serving"]["tuning"] = {"latencyBudgetMs": 50}
    return spec_of(tuned)


def shm_of(pod: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    names = {m["name"] for m in mounts}
    return [v for v in pod["volumes"] if v["name"] in names], mounts


def test_a_tuning_job_mounts_a_memory_backed_dev_shm() -> None:
    pod = pod_spec(render_job(CPU_OWNER, with_tuning(CPU_MODEL), DIGEST, image=IMAGE))
    volumes, mounts = shm_of(pod)
    assert len(mounts) == 1 and not mounts[0].get("readOnly")
    assert volumes == [
        {"name": mounts[0]["name"], "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}
    ]
    # The restricted pod stays restricted: an emptyDir is an allowed volume type.
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert len({v["name"] for v in pod["volumes"]}) == len(pod["volumes"])


def test_a_job_without_tuning_has_no_dev_shm_volume() -> None:
    pod = pod_spec(render_job(CPU_OWNER, spec_of(CPU_MODEL), DIGEST, image=IMAGE))
    assert shm_of(pod) == ([], [])
    assert all("emptyDir" not in v or "medium" not in v["emptyDir"] for v in pod["volumes"])


def test_the_shm_fits_well_inside_the_jobs_default_memory_limit() -> None:
    """Pages in a Memory emptyDir count against the container's memory limit."""
    assert parse_quantity(TUNING_SHM_SIZE) * 8 <= parse_quantity(JOB_LIMITS["memory"])
