"""The optimization Job (and the ConfigMap that hands it the spec). Pure.

The Job runs ``optiserve optimize /etc/optiserve/spec.yaml --out /mnt/pvc/<storage>/<folder>``,
the model's own folder ``<subPath>/<namespace>/<name>`` of the storage claim (the only part of
that claim the Job mounts). The optimizer writes ``<out>/<digest>/model_repository`` plus
``report.json`` and leaves a compact JSON summary in the termination message, which the
operator reads from the pod.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from optiserve.api import API_VERSION, KIND, OptimizedModelSpec
from optiserve.api.spec import ResourceRequirements
from optiserve.render.kubernetes import (
    ANNOTATION_DIGEST,
    ANNOTATION_RETRY,
    LABEL_RECIPE,
    Manifest,
    Owner,
    claim_mount_path,
    claim_volumes,
    common_labels,
    container_security_context,
    folder_volume,
    gpu_resources,
    job_name,
    metadata,
    placement,
    pod_security_context,
    short_digest,
    tmp_volume,
)
from optiserve.render.objectstore import (
    ARTIFACT_SIZE_LIMIT,
    ARTIFACT_STORE_ENV,
    JOB_ARTIFACTS_PATH,
    ca_bundle_mounts,
    ca_bundle_volumes,
    object_store_env,
    s3_artifact_uri,
    s3_model_prefix,
    uses_s3,
)
from optiserve.render.sizing import CLEANUP_RESOURCES, job_sizing
from optiserve.uri import DEFAULT_PVC_ROOT, PVC_ROOT_ENV, claims_in

SPEC_DIR = "/etc/optiserve"
SPEC_FILE = "spec.yaml"
TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LOG_ENV = "OPTISERVE_TERMINATION_LOG"
# The recipe digest the operator expects: an optimizer computing another one (a different
# optiserve version) refuses to run ("version skew") instead of building an unusable artifact.
EXPECTED_DIGEST_ENV = "OPTISERVE_EXPECTED_DIGEST"
# storage.retention, carried out by the Job (optimizer/optiserve_optimizer/retention.py): the
# digests it must keep (served and last good), how many superseded artifacts stay, and after
# how long a .work-*/.tmp-* folder is certainly no live Job's.
KEEP_DIGESTS_ENV = "OPTISERVE_KEEP_DIGESTS"
KEEP_SUPERSEDED_ENV = "OPTISERVE_KEEP_SUPERSEDED"
STALE_AFTER_ENV = "OPTISERVE_STALE_WORK_SECONDS"
COMPONENT = "optimizer"
# The optimizer's exit code for a failure of the spec, model or data (OptimizerError in
# optimizer/optiserve_optimizer/errors.py; a test keeps the two equal). Running it again
# gives the same answer, so the Job fails at once instead of using up backoffLimit. Exit 1 (a
# bug) and 3 (a missing GPU or library, which can depend on the node) are retried.
USER_ERROR_EXIT_CODE = 2


def pod_failure_policy() -> dict[str, Any]:
    """Fail the Job on a deterministic failure; an evicted or preempted pod (node drain,
    priority preemption) does not count against ``backoffLimit``."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": COMPONENT,
                    "operator": "In",
                    "values": [USER_ERROR_EXIT_CODE],
                },
            },
            {
                "action": "Ignore",
                # status defaults to "True".
                "onPodConditions": [{"type": "DisruptionTarget"}],
            },
        ]
    }


ARTIFACTS_VOLUME = "artifacts"
# serving.tuning runs a local tritonserver in the Job, whose python backend passes each batch's
# tensors through /dev/shm. A runtime's default /dev/shm (64 MiB in Docker and containerd)
# cannot hold one batch of 64 ResNet-sized inputs (38.5 MB in, as much out: the stub's pool
# fails with ENOSPC, measured), so with tuning on the Job mounts a memory-backed emptyDir there,
# as Triton's own pods have. Its pages count against the container's memory limit.
TUNING_SHM_SIZE = "1Gi"


def tuning_shm_volume(spec: OptimizedModelSpec) -> tuple[list[Manifest], list[Manifest]]:
    """(volumes, mounts): a /dev/shm emptyDir when ``serving.tuning`` is set, else none."""
    if spec.serving.tuning is None:
        return [], []
    volume = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": TUNING_SHM_SIZE}}
    return [volume], [{"name": "dshm", "mountPath": "/dev/shm"}]


def model_folder(spec: OptimizedModelSpec, namespace: str, name: str) -> str:
    """The model's own folder inside the storage claim: ``<subPath>/<namespace>/<name>``.

    Every artifact of the model, and the optimizer's ``.work-*`` folders, live under it. The
    Job mounts only this folder, so it can neither read nor overwrite another model's
    artifacts; ``storage.subPath`` is one folder name (optiserve.policy refuses others), so two
    models' folders never nest.
    """
    return f"{spec.storage.sub_path.strip('/')}/{namespace}/{name}".lstrip("/")


def storage_root(spec: OptimizedModelSpec, namespace: str, name: str) -> str:
    """Where the Job writes artifacts: ``/mnt/pvc/<claim>/<model folder>`` (the optimizer
    reports paths under ``/mnt/pvc/<claim>/`` as ``pvc://<claim>/...``); with ``storage.s3``
    the Job's own emptyDir, uploaded from when the artifact is finished."""
    if spec.storage.pvc is None:
        return JOB_ARTIFACTS_PATH
    return f"{claim_mount_path(spec.storage.pvc)}/{model_folder(spec, namespace, name)}"


def artifact_uri(spec: OptimizedModelSpec, digest: str, *, namespace: str, name: str) -> str:
    """The Triton model repository the optimizer writes for ``digest``, as a pvc:// URI (an
    s3:// one with ``storage.s3``)."""
    if uses_s3(spec):
        return s3_artifact_uri(spec, digest, namespace, name)
    folder = model_folder(spec, namespace, name)
    return f"pvc://{spec.storage.pvc}/{folder}/{digest}/model_repository"


def input_claims(spec: OptimizedModelSpec) -> list[str]:
    """Every claim a pvc:// source or data URI of the spec names (mounted read-only)."""
    opt = spec.optimization
    calibration = opt.quantization.calibration
    return claims_in(
        spec.source.uri,
        calibration.uri if calibration else None,
        opt.accuracy.dataset,
        opt.recovery.dataset,
        opt.student.dataset,
    )


def artifacts_volume(
    owner: Owner, spec: OptimizedModelSpec, size_limit: str = ARTIFACT_SIZE_LIMIT
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's own folder of the storage claim, writable, at :func:`storage_root` (an
    emptyDir there with ``storage.s3``)."""
    if spec.storage.pvc is None:
        return (
            {"name": ARTIFACTS_VOLUME, "emptyDir": {"sizeLimit": size_limit}},
            {"name": ARTIFACTS_VOLUME, "mountPath": JOB_ARTIFACTS_PATH},
        )
    return folder_volume(
        ARTIFACTS_VOLUME,
        spec.storage.pvc,
        model_folder(spec, owner.namespace, owner.name),
        storage_root(spec, owner.namespace, owner.name),
        read_only=False,
    )


def spec_document(name: str, namespace: str, spec: OptimizedModelSpec) -> str:
    """The OptimizedModel as the optimizer's ``SPEC`` file reads it (no status, no noise)."""
    doc = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec.to_wire(),
    }
    # The C emitter when present: the same YAML, ten times faster (a pass renders this often).
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(doc, Dumper=dumper, sort_keys=True)


def render_spec_config_map(
    owner: Owner, spec: OptimizedModelSpec, digest: str, retry: str = ""
) -> Manifest:
    name = job_name(owner.name, digest, retry)
    labels = {**common_labels(owner.name, COMPONENT), LABEL_RECIPE: short_digest(digest)}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(name, owner, labels, {ANNOTATION_DIGEST: digest}),
        "data": {SPEC_FILE: spec_document(owner.name, owner.namespace, spec)},
    }


def render_job(
    owner: Owner,
    spec: OptimizedModelSpec,
    digest: str,
    *,
    image: str,
    retry: str = "",
    service_account: str | None = None,
    keep: Sequence[str] = (),
) -> Manifest:
    """The one Job that builds the artifact for ``digest``.

    ``image`` is the operator's default optimizer image, used when the spec names none.
    ``keep``: the digests of the served and last good artifacts, which the Job's retention
    pass (``storage.retention``) never removes.
    """
    name = job_name(owner.name, digest, retry)
    job_spec = spec.optimization.job
    target = spec.optimization.target
    labels = {**common_labels(owner.name, COMPONENT), LABEL_RECIPE: short_digest(digest)}
    annotations = {ANNOTATION_DIGEST: digest}
    if retry:
        annotations[ANNOTATION_RETRY] = retry

    # Inputs read-only, whole claims; of the storage claim only the model's own folder.
    claim_vols, claim_mounts = claim_volumes(input_claims(spec))
    sizing = job_sizing(job_spec.resources.requests, job_spec.resources.limits)
    tmp_limit = sizing.limits.get("ephemeral-storage")
    # storage.s3: the artifact is built on the pod's disk, bounded as the pod is.
    store_vol, store_mount = artifacts_volume(owner, spec, str(tmp_limit or ARTIFACT_SIZE_LIMIT))
    tmp_vol, tmp_mount = tmp_volume(str(tmp_limit) if tmp_limit is not None else None)
    spec_vol = {"name": "spec", "configMap": {"name": name}}
    spec_mount = {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True}
    shm_vols, shm_mounts = tuning_shm_volume(spec)

    container: dict[str, Any] = {
        "name": COMPONENT,
        "image": job_spec.image or image,
        "command": [
            "optiserve",
            "optimize",
            f"{SPEC_DIR}/{SPEC_FILE}",
            "--out",
            storage_root(spec, owner.namespace, owner.name),
        ],
        "env": [
            {"name": PVC_ROOT_ENV, "value": DEFAULT_PVC_ROOT},
            {"name": TERMINATION_LOG_ENV, "value": TERMINATION_LOG},
            {"name": EXPECTED_DIGEST_ENV, "value": digest},
            {"name": KEEP_DIGESTS_ENV, "value": ",".join(sorted(set(keep)))},
            {"name": KEEP_SUPERSEDED_ENV, "value": str(spec.storage.retention.keep_superseded)},
            {"name": STALE_AFTER_ENV, "value": str(job_spec.active_deadline_seconds)},
            {"name": "HOME", "value": "/tmp"},
            *object_store_env(spec),
            *_artifact_store_env(owner, spec),
        ],
        # The root file system is read-only: anything written relative to the working
        # directory lands in the /tmp emptyDir instead of failing.
        "workingDir": "/tmp",
        "resources": gpu_resources(
            ResourceRequirements(requests=sizing.requests, limits=sizing.limits), target
        ),
        "securityContext": container_security_context(),
        "volumeMounts": [
            *(spec_mount, tmp_mount, *shm_mounts, *claim_mounts, store_mount),
            *ca_bundle_mounts(spec),
        ],
        "terminationMessagePath": TERMINATION_LOG,
        # A crash before the summary is written still leaves the log's tail as the reason.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [
            *(spec_vol, tmp_vol, *shm_vols, *claim_vols, store_vol),
            *ca_bundle_volumes(spec),
        ],
    }
    pod_spec.update(placement(job_spec.node_selector, job_spec.tolerations, target))
    if service_account:
        pod_spec["serviceAccountName"] = service_account

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(name, owner, labels, annotations),
        "spec": {
            "backoffLimit": job_spec.backoff_limit,
            "activeDeadlineSeconds": job_spec.active_deadline_seconds,
            "ttlSecondsAfterFinished": job_spec.ttl_seconds_after_finished,
            # Needs the pod's restartPolicy Never (below).
            "podFailurePolicy": pod_failure_policy(),
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }


def _artifact_store_env(owner: Owner, spec: OptimizedModelSpec) -> list[dict[str, Any]]:
    """With ``storage.s3``: where the Job uploads the finished artifact."""
    if not uses_s3(spec):
        return []
    return [
        {"name": ARTIFACT_STORE_ENV, "value": s3_model_prefix(spec, owner.namespace, owner.name)}
    ]


CLEANUP_COMPONENT = "artifact-cleanup"
# The optimizer image has Python, not necessarily a shell: remove the folders with it.
_REMOVE_FOLDERS = (
    "import shutil, sys\nfor path in sys.argv[1:]:\n    shutil.rmtree(path, ignore_errors=True)\n"
)


def cleanup_job_name(model_name: str, uid: str) -> str:
    """Per incarnation of the model (a model re-created under the same name gets its own)."""
    suffix = f"-cleanup-{uid.replace('-', '')[:8]}"
    return model_name[: 63 - len(suffix)].rstrip("-") + suffix


def render_cleanup_job(
    owner: Owner, spec: OptimizedModelSpec, digests: list[str], *, image: str
) -> Manifest:
    """A Job that deletes the artifact folders of ``digests`` from the storage claim.

    Used only when ``storage.keepArtifactsOnDelete`` is false, while the model waits on the
    operator's finalizer; the model stays until this Job has finished. It has no owner
    reference on purpose: a foreground deletion of the model would otherwise garbage-collect
    the Job that the deletion waits for. ``ttlSecondsAfterFinished`` removes it instead.
    """
    root = storage_root(spec, owner.namespace, owner.name)
    labels = common_labels(owner.name, CLEANUP_COMPONENT)
    tmp_vol, tmp_mount = tmp_volume(CLEANUP_RESOURCES["limits"]["ephemeral-storage"])
    container: dict[str, Any] = {
        "name": "cleanup",
        "resources": CLEANUP_RESOURCES,
        "image": spec.optimization.job.image or image,
        "command": ["python", "-c", _REMOVE_FOLDERS, *(f"{root}/{d}" for d in sorted(digests))],
        "workingDir": "/tmp",
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount],
    }
    volumes = [tmp_vol]
    if uses_s3(spec):
        # Each digest's objects, marker first (optiserve.remote.artifact_cli).
        prefix = s3_model_prefix(spec, owner.namespace, owner.name)
        container["command"] = [
            *("python", "-m", "optiserve.remote.artifact_cli", "delete", prefix),
            *sorted(digests),
        ]
        container["env"] = [{"name": "HOME", "value": "/tmp"}, *object_store_env(spec)]
        container["volumeMounts"] += ca_bundle_mounts(spec)
        volumes += ca_bundle_volumes(spec)
    else:
        store_vol, store_mount = artifacts_volume(owner, spec)
        container["volumeMounts"].append(store_mount)
        volumes.append(store_vol)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": cleanup_job_name(owner.name, owner.uid),
            "namespace": owner.namespace,
            "labels": labels,
        },
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
