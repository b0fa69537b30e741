"""Kubernetes building blocks shared by the Job and Deployment renderers.

Pure: names, labels, owner references, security contexts and volumes as plain dicts, ready
for server-side apply. Every child of an ``OptimizedModel`` is named deterministically from
the owner's name (and, for Jobs, the recipe digest), so a reconcile that restarts at any line
finds what it already created instead of creating it twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from optiserve.api import API_VERSION, KIND
from optiserve.api.spec import ResourceRequirements, TargetSpec, Toleration
from optiserve.uri import DEFAULT_PVC_ROOT

Manifest = dict[str, Any]

MANAGED_BY = "optiserve"
FIELD_MANAGER = "optiserve"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_RESOURCE_PREFIX = "nvidia.com/"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"

# Labels and annotations (the label values are short: a label value holds at most 63 chars).
LABEL_MODEL = "optiserve.io/model"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_RECIPE = "optiserve.io/recipe"
ANNOTATION_DIGEST = "optiserve.io/recipe-digest"
ANNOTATION_ARTIFACT = "optiserve.io/artifact-digest"
ANNOTATION_RETRY = "optiserve.io/retry"

# A non-root user present in the Triton image (uid 1000, "triton-server") and harmless elsewhere.
RUN_AS_USER = 1000
MAX_NAME = 63


@dataclass(frozen=True)
class Owner:
    """The ``OptimizedModel`` every child points back to (garbage collection, watches)."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def short_digest(digest: str) -> str:
    return digest.removeprefix("sha256:")[:10]


def job_name(model_name: str, digest: str, retry: str = "") -> str:
    """``<name>-opt-<digest[:10]>`` (+ ``-<hash of retry>``); at most 63 characters.

    The retry token is part of the name so that a new ``optiserve.io/retry`` value, and only
    that, makes a new Job for a digest whose Job failed.
    """
    suffix = f"-opt-{short_digest(digest)}"
    if retry:
        suffix += "-" + hashlib.sha256(retry.encode("utf-8")).hexdigest()[:5]
    return model_name[: MAX_NAME - len(suffix)].rstrip("-") + suffix


def serving_name(model_name: str) -> str:
    """The Deployment and Service share the model's name, so the endpoint reads naturally."""
    return model_name


# Triton's own default ports, kept so that its docs and clients apply unchanged.
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002


def endpoint(model_name: str, namespace: str) -> str:
    """Triton's HTTP/REST endpoint (KServe v2 protocol) through the model's Service."""
    return f"http://{serving_name(model_name)}.{namespace}.svc:{HTTP_PORT}"


def grpc_endpoint(model_name: str, namespace: str) -> str:
    """Triton's gRPC endpoint as tritonclient.grpc takes it (host:port, no scheme)."""
    return f"{serving_name(model_name)}.{namespace}.svc:{GRPC_PORT}"


def common_labels(model_name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "optiserve",
        "app.kubernetes.io/instance": model_name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_COMPONENT: component,
        LABEL_MODEL: model_name,
    }


def metadata(
    name: str,
    owner: Owner,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": dict(labels),
        "ownerReferences": [owner.reference()],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def pod_security_context() -> dict[str, Any]:
    """Pod Security Standard "restricted"."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def claim_mount_path(claim: str) -> str:
    return f"{DEFAULT_PVC_ROOT}/{claim}"


def claim_volume_name(claim: str) -> str:
    # Volume names are DNS labels too; claims can be longer, so long ones are hashed.
    name = f"pvc-{claim}"
    if len(name) <= MAX_NAME:
        return name
    return f"pvc-{hashlib.sha256(claim.encode()).hexdigest()[:16]}"


def claim_volumes(
    claims: Iterable[str], writable: Iterable[str] = ()
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts for PVCs at ``/mnt/pvc/<claim>``; read-only unless ``writable``."""
    rw = set(writable)
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for claim in sorted(set(claims) | rw):
        read_only = claim not in rw
        volume = claim_volume_name(claim)
        volumes.append(
            {
                "name": volume,
                "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only},
            }
        )
        mounts.append({"name": volume, "mountPath": claim_mount_path(claim), "readOnly": read_only})
    return volumes, mounts


def folder_volume(
    volume: str, claim: str, folder: str, mount_path: str, *, read_only: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One folder of a claim (``subPath``) at ``mount_path``: the pod sees that folder and
    nothing else of the claim. The kubelet creates the folder when it does not exist yet."""
    return (
        {"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}},
        {"name": volume, "mountPath": mount_path, "subPath": folder, "readOnly": read_only},
    )


def tmp_volume(size_limit: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """An emptyDir at /tmp (the root file system is read-only), bounded by ``size_limit``."""
    empty_dir = {"sizeLimit": size_limit} if size_limit else {}
    return {"name": "tmp", "emptyDir": empty_dir}, {"name": "tmp", "mountPath": "/tmp"}


def is_gpu_resource(name: str) -> bool:
    """A resource of NVIDIA's device plugin: whole GPUs (``nvidia.com/gpu``), MIG slices
    (``nvidia.com/mig-1g.10gb``) or renamed shared GPUs (``nvidia.com/gpu.shared``)."""
    return name.startswith(GPU_RESOURCE_PREFIX)


def _is_extended(name: str) -> bool:
    # Extended resources (a domain other than kubernetes.io) cannot be overcommitted: the API
    # server wants a limit, equal to the request when both are set.
    domain, slash, _ = name.partition("/")
    return bool(slash) and not (domain == "kubernetes.io" or domain.endswith(".kubernetes.io"))


def gpu_resources(resources: ResourceRequirements, target: TargetSpec) -> dict[str, Any]:
    """The container's resources, with only the accelerator the spec asks for.

    An extended resource requested without a limit gets the request as its limit. A gpu
    target that names no NVIDIA resource gets ``nvidia.com/gpu: 1``; one that names a MIG
    slice or a shared GPU gets that alone (a whole GPU besides would never be scheduled
    where the slice is, or would take a GPU it does not use).
    """
    limits: dict[str, Any] = dict(resources.limits)
    requests: dict[str, Any] = dict(resources.requests)
    for name, value in requests.items():
        if _is_extended(name):
            limits.setdefault(name, value)
    if target.device == "gpu" and not any(is_gpu_resource(name) for name in limits):
        limits[GPU_RESOURCE] = 1
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def node_selector(base: Mapping[str, str], target: TargetSpec) -> dict[str, str]:
    selector = dict(base)
    if target.device == "gpu" and target.gpu_product:
        selector.setdefault(GPU_PRODUCT_LABEL, target.gpu_product)
    return selector


def placement(
    selector: Mapping[str, str], tolerated: Iterable[Toleration], target: TargetSpec
) -> dict[str, Any]:
    """The pod-spec fields that put a pod on the target's nodes (empty ones left out)."""
    fields: dict[str, Any] = {
        "nodeSelector": node_selector(selector, target),
        "tolerations": tolerations(tolerated, target),
    }
    return {key: value for key, value in fields.items() if value}


def tolerations(base: Iterable[Toleration], target: TargetSpec) -> list[dict[str, Any]]:
    """The user's tolerations; gpu targets also tolerate the usual ``nvidia.com/gpu`` taint."""
    out = [t.to_wire() for t in base]
    if target.device == "gpu" and not any(t.get("key") == GPU_RESOURCE for t in out):
        out.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return out
