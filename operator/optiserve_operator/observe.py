"""What the operator saw of its children, distilled from the raw API objects. Pure.

Only the few facts a decision needs are kept, so ``reconcile.plan`` can be tested with small
hand-written states instead of whole Kubernetes objects.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from optiserve.render.canary import LABEL_REVISION
from optiserve.render.kubernetes import ANNOTATION_ARTIFACT, ANNOTATION_DIGEST, ANNOTATION_RETRY
from optiserve.render.serving_config import ANNOTATION_SERVING_CONFIG
from optiserve_operator.summary import failure_text, redact

# Set on the Deployment when a rollout of that artifact missed its deadline and was rolled
# back; level-based memory, so the next pass does not roll forward into the same failure.
ANNOTATION_FAILED_ROLLOUT = "optiserve.io/failed-rollout"
OPTIMIZER_CONTAINER = "optimizer"

Obj = Mapping[str, Any]
JobPhase = Literal["active", "succeeded", "failed"]


@dataclass(frozen=True)
class JobState:
    name: str
    digest: str
    retry: str
    phase: JobPhase
    message: str = ""  # termination message of the decisive pod (the summary on success)
    failure_reason: str = ""
    failure_message: str = ""
    # An active Job whose pod cannot start: the scheduler's or kubelet's reason and message.
    blocked_reason: str = ""
    blocked_message: str = ""
    progress: str = ""  # what the running optimizer last reported (see progress.py)


@dataclass(frozen=True)
class DeploymentState:
    artifact_digest: str | None
    failed_rollout: str | None
    generation: int
    observed_generation: int
    desired_replicas: int
    replicas: int
    updated_replicas: int
    ready_replicas: int
    available_replicas: int
    deadline_exceeded: bool
    serving_config: str | None = None  # the template's serving settings (their fingerprint)
    revision: str | None = None  # the template's optiserve.io/revision label (canary_route)

    @property
    def observed(self) -> bool:
        """The Deployment controller has seen the latest spec."""
        return self.observed_generation >= self.generation

    @property
    def rolled_out(self) -> bool:
        """Every desired pod runs the latest template and is available; no old pod is left."""
        return (
            self.observed
            and self.updated_replicas >= self.desired_replicas
            and self.available_replicas >= self.desired_replicas
            and self.replicas == self.updated_replicas
        )


def _conditions(obj: Obj) -> dict[str, Obj]:
    return {c.get("type", ""): c for c in (obj.get("status") or {}).get("conditions") or []}


def _terminated(pod: Obj) -> Obj | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == OPTIMIZER_CONTAINER:
            state = status.get("state") or {}
            last = status.get("lastState") or {}
            found = state.get("terminated") or last.get("terminated")
            return found if isinstance(found, Mapping) else None
    return None


def _optimizer_image(pod: Obj | None) -> str:
    for container in ((pod or {}).get("spec") or {}).get("containers") or []:
        if container.get("name") == OPTIMIZER_CONTAINER:
            return str(container.get("image") or "")
    return ""


def _latest(pods: Sequence[Obj], phase: str) -> Obj | None:
    matching = [p for p in pods if (p.get("status") or {}).get("phase") == phase]
    # The most recently finished pod decides (Job retries leave older failed pods behind).
    return max(
        matching, key=lambda p: str((_terminated(p) or {}).get("finishedAt", "")), default=None
    )


# Waiting reasons of a container that will not start until someone changes something. The
# kubelet alternates ErrImagePull and ImagePullBackOff; both read as one reason, so the
# condition (and its Warning event) does not flap between them.
_BLOCKING_WAIT_REASONS = {
    "ErrImagePull": "ImagePullBackOff",
    "ImagePullBackOff": "ImagePullBackOff",
    "InvalidImageName": "InvalidImageName",
    "ErrImageNeverPull": "ErrImageNeverPull",
    "CreateContainerConfigError": "CreateContainerConfigError",
    "CreateContainerError": "CreateContainerError",
}
REASON_UNSCHEDULABLE = "Unschedulable"
MAX_BLOCKED_MESSAGE = 512
# A failed mount (a ConfigMap, Secret or key that does not exist, e.g. spec.objectStore.caBundle)
# leaves no reason in the pod's status, only FailedMount events, which the operator does not
# read. The kubelet mounts volumes before it makes the pod's sandbox and pulls images after it,
# so a scheduled pod whose PodReadyToStartContainers (Kubernetes 1.29+) stays False this long
# is stuck on a mount (or on the network plugin) rather than on a slow image pull.
REASON_NOT_STARTING = "ContainersNotStarting"
NOT_STARTING_AFTER_S = 120


def _since(condition: Obj, now: dt.datetime) -> float | None:
    """Seconds since the condition's lastTransitionTime (None when it has none)."""
    stamp = str(condition.get("lastTransitionTime") or "")
    try:
        return (now - dt.datetime.fromisoformat(stamp)).total_seconds()
    except (ValueError, TypeError):
        return None


def _not_starting(pod: Obj, now: dt.datetime) -> str:
    """The detail of a scheduled pod stuck before its sandbox for too long, else ""."""
    conditions = _conditions(pod)
    scheduled = conditions.get("PodScheduled") or {}
    ready = conditions.get("PodReadyToStartContainers") or {}
    if scheduled.get("status") != "True" or ready.get("status") != "False":
        return ""
    waited = _since(ready, now)
    if waited is None or waited < NOT_STARTING_AFTER_S:
        return ""
    return (
        f"its volumes or sandbox are not ready after {int(waited)}s: usually a ConfigMap, "
        "Secret or key it mounts does not exist (spec.objectStore.caBundle, "
        "objectStore.credentialsSecret); its FailedMount or FailedCreatePodSandBox events "
        "say which"
    )


def blocked(pods: Sequence[Obj], now: dt.datetime | None = None) -> tuple[str, str]:
    """(reason, message) when the newest live pod of a Job cannot start, else ("", "").

    The scheduler's verdict (``PodScheduled=False``, reason ``Unschedulable``: no node with
    the GPU, a node selector nothing matches, a claim that does not exist) or the kubelet's
    (an image that cannot be pulled, a missing ConfigMap or Secret), as the pod shows it.
    With ``now``, also a pod stuck before its containers can start (see NOT_STARTING_AFTER_S).
    """
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    if not live:
        return "", ""
    pod = max(live, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp", "")))
    status = pod.get("status") or {}
    if status.get("phase") not in (None, "Pending"):
        return "", ""
    pod_name = (pod.get("metadata") or {}).get("name", "")
    scheduled = _conditions(pod).get("PodScheduled") or {}
    if scheduled.get("status") == "False" and scheduled.get("reason") == REASON_UNSCHEDULABLE:
        detail = str(scheduled.get("message") or "no node fits the pod")
        return REASON_UNSCHEDULABLE, _blocked_message(pod_name, "", detail)
    statuses = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    for container in statuses:
        waiting = (container.get("state") or {}).get("waiting") or {}
        kubelet_reason = str(waiting.get("reason") or "")
        if kubelet_reason in _BLOCKING_WAIT_REASONS:
            detail = str(waiting.get("message") or "")
            return _BLOCKING_WAIT_REASONS[kubelet_reason], _blocked_message(
                pod_name, kubelet_reason, detail
            )
    stuck = _not_starting(pod, now) if now is not None else ""
    if stuck:
        return REASON_NOT_STARTING, _blocked_message(pod_name, "", stuck)
    return "", ""


def _blocked_message(pod: str, kubelet_reason: str, detail: str) -> str:
    said = f"{kubelet_reason}: {detail}" if kubelet_reason else detail
    return redact(f"pod {pod} cannot start: {said}".rstrip(": "), MAX_BLOCKED_MESSAGE)


def job_state(
    job: Obj, pods: Sequence[Obj], progress: str = "", now: dt.datetime | None = None
) -> JobState:
    meta = job.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    conditions = _conditions(job)
    base = {
        "name": str(meta.get("name", "")),
        "digest": str(annotations.get(ANNOTATION_DIGEST, "")),
        "retry": str(annotations.get(ANNOTATION_RETRY, "")),
    }
    if (conditions.get("Complete") or {}).get("status") == "True":
        pod = _latest(pods, "Succeeded")
        message = str((_terminated(pod) or {}).get("message", "")) if pod else ""
        return JobState(**base, phase="succeeded", message=message)
    failed = conditions.get("Failed") or {}
    if failed.get("status") == "True":
        pod = _latest(pods, "Failed")
        terminated = _terminated(pod) if pod else None
        # The pod's reason (Error, OOMKilled) says more than the Job's (BackoffLimitExceeded);
        # the Job's own reason stays when no pod ran to the end (DeadlineExceeded).
        reason = str(failed.get("reason") or "Failed")
        message = str(failed.get("message") or "")
        if terminated:
            reason = str(terminated.get("reason") or "Error")
            detail = failure_text(str(terminated.get("message") or ""))
            image = _optimizer_image(pod)
            # The image that ran: a broken or mismatched image (a missing package) shows here.
            message = f"exit code {terminated.get('exitCode')}"
            message += (f" in image {image}" if image else "") + (f": {detail}" if detail else "")
        return JobState(
            **base, phase="failed", failure_reason=reason, failure_message=redact(message)
        )
    reason, message = blocked(pods, now)
    return JobState(
        **base,
        phase="active",
        blocked_reason=reason,
        blocked_message=message,
        progress="" if reason else progress,
    )


def deployment_state(deployment: Obj) -> DeploymentState:
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    template_meta = (spec.get("template") or {}).get("metadata") or {}
    template_annotations = template_meta.get("annotations") or {}
    progressing = _conditions(deployment).get("Progressing") or {}
    return DeploymentState(
        artifact_digest=template_annotations.get(ANNOTATION_ARTIFACT),
        failed_rollout=(meta.get("annotations") or {}).get(ANNOTATION_FAILED_ROLLOUT),
        generation=int(meta.get("generation", 0)),
        observed_generation=int(status.get("observedGeneration", 0)),
        desired_replicas=int(spec.get("replicas", 1)),
        replicas=int(status.get("replicas", 0)),
        updated_replicas=int(status.get("updatedReplicas", 0)),
        ready_replicas=int(status.get("readyReplicas", 0)),
        available_replicas=int(status.get("availableReplicas", 0)),
        deadline_exceeded=progressing.get("status") == "False"
        and progressing.get("reason") == "ProgressDeadlineExceeded",
        serving_config=template_annotations.get(ANNOTATION_SERVING_CONFIG),
        revision=(template_meta.get("labels") or {}).get(LABEL_REVISION),
    )
