"""Reading a model's children from the API server into ``reconcile.Observed``.

The read half of a reconcile pass (``controller`` carries out what ``reconcile.plan`` decides
from it): Jobs and their pods (the termination message, why a pod cannot start, the running
optimizer's progress), the Deployment, the autoscaler, the NetworkPolicy and the Jobs' spec
ConfigMaps. Only what the model owns counts.
"""

from __future__ import annotations

import datetime as dt
import logging

from pydantic import ValidationError

from optiserve.api import OptimizedModelSpec
from optiserve.api.status import OptimizedModelStatus
from optiserve.render.autoscaling import KEDA_API_VERSION
from optiserve.render.job import COMPONENT as JOB_COMPONENT
from optiserve.render.kubernetes import (
    ANNOTATION_DIGEST,
    LABEL_COMPONENT,
    LABEL_MODEL,
    Owner,
    serving_name,
)
from optiserve_operator.exposure import ExposureState, read_exposure
from optiserve_operator.failures import name_problem
from optiserve_operator.kube import Kube, owned_by
from optiserve_operator.kube_transport import KubeError, Obj
from optiserve_operator.observe import OPTIMIZER_CONTAINER, deployment_state, job_state
from optiserve_operator.progress import parse_progress
from optiserve_operator.reconcile import ModelState, Observed, recipe_digest
from optiserve_operator.retention import SpecConfigMap

LOG = logging.getLogger("optiserve.operator")


def _finished(job: Obj) -> bool:
    return any(
        cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True"
        for cond in (job.get("status") or {}).get("conditions") or []
    )


def status_of(obj: Obj) -> OptimizedModelStatus:
    try:
        return OptimizedModelStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        # A status written by an older operator: start afresh rather than stall.
        return OptimizedModelStatus()


def read_observed(kube: Kube, obj: Obj, spec: OptimizedModelSpec) -> Observed:
    """The model and its children as the API server has them now: what ``reconcile.plan``
    decides from. Only reads; a name no label can carry has no children to look for."""
    meta = obj["metadata"]
    owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    status = status_of(obj)
    model = ModelState(
        owner=owner,
        generation=int(meta.get("generation", 1)),
        annotations=meta.get("annotations") or {},
        spec=spec,
        status=status,
    )
    digest = recipe_digest(owner.name, spec)
    need_result = status.artifact is None or status.artifact.digest != digest
    # A name that cannot be a label value cannot be selected by (plan refuses it, and
    # the API server would answer the list with a 400): no children to look for.
    raw_jobs = (
        kube.list(
            "batch/v1",
            "Job",
            owner.namespace,
            {LABEL_MODEL: owner.name, LABEL_COMPONENT: JOB_COMPONENT},
        )
        if name_problem(owner.name) is None
        else []
    )
    jobs = []
    for raw in raw_jobs:
        if not owned_by(raw, owner.uid):
            continue
        relevant = (raw["metadata"].get("annotations") or {}).get("optiserve.io/recipe-digest")
        pods: list[Obj] = []
        progress = ""
        if need_result and relevant == digest:
            # The wanted Job's pods: the termination message once it has finished; while
            # it runs, why its pod cannot start, or how far the optimizer has got.
            pods = kube.list("v1", "Pod", owner.namespace, {"job-name": raw["metadata"]["name"]})
            if not _finished(raw):
                progress = _progress(kube, owner.namespace, pods)
        jobs.append(job_state(raw, pods, progress, dt.datetime.now(dt.UTC)))
    raw_deployment = kube.get("apps/v1", "Deployment", owner.namespace, serving_name(owner.name))
    deployment = (
        deployment_state(raw_deployment)
        if raw_deployment is not None and owned_by(raw_deployment, owner.uid)
        else None
    )
    autoscalers = frozenset(
        kind
        for kind, found in (
            (
                "HorizontalPodAutoscaler",
                kube.get("autoscaling/v2", "HorizontalPodAutoscaler", owner.namespace, owner.name),
            ),
            ("ScaledObject", _scaled_object(kube, owner)),
        )
        if found is not None and owned_by(found, owner.uid)
    )
    policy = kube.get(
        "networking.k8s.io/v1", "NetworkPolicy", owner.namespace, serving_name(owner.name)
    )
    return Observed(
        model=model,
        jobs=tuple(jobs),
        deployment=deployment,
        autoscalers=autoscalers,
        network_policy=policy is not None and owned_by(policy, owner.uid),
        config_maps=_spec_config_maps(kube, owner) if name_problem(owner.name) is None else (),
        exposure=read_exposure(kube, owner)
        if name_problem(owner.name) is None
        else ExposureState(),
    )


def _spec_config_maps(kube: Kube, owner: Owner) -> tuple[SpecConfigMap, ...]:
    """The model's Job spec ConfigMaps (to remove those of superseded Jobs)."""
    found = kube.list(
        "v1",
        "ConfigMap",
        owner.namespace,
        {LABEL_MODEL: owner.name, LABEL_COMPONENT: JOB_COMPONENT},
    )
    return tuple(
        SpecConfigMap(
            raw["metadata"]["name"],
            (raw["metadata"].get("annotations") or {}).get(ANNOTATION_DIGEST, ""),
        )
        for raw in found
        if owned_by(raw, owner.uid)
    )


def _progress(kube: Kube, namespace: str, pods: list[Obj]) -> str:
    """The running optimizer's progress from its log tail; "" when there is none to read.

    A courtesy: a log that cannot be read (no permission, a node without a kubelet API)
    costs the progress line only, never the pass.
    """
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    if not running:
        return ""
    pod = max(running, key=lambda p: str(p["metadata"].get("creationTimestamp", "")))
    try:
        log = kube.pod_log(namespace, pod["metadata"]["name"], OPTIMIZER_CONTAINER)
    except Exception as err:  # any failure costs the progress line only
        LOG.debug("no progress for pod %s/%s: %s", namespace, pod["metadata"]["name"], err)
        return ""
    found = parse_progress(log)
    return found.describe() if found is not None else ""


def _scaled_object(kube: Kube, owner: Owner) -> Obj | None:
    try:
        return kube.get(KEDA_API_VERSION, "ScaledObject", owner.namespace, owner.name)
    except KubeError as err:
        # Without KEDA's CRD the whole resource type is unknown to the API server.
        if err.status == 404:
            return None
        raise
