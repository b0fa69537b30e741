"""The pods' environment for ``spec.objectStore``, and the pieces of ``storage.s3``. Pure.

The Secret is referenced, never read: its values reach only the containers that talk to the
store (the optimization Job's; with ``storage.s3`` also the Triton pod's ``artifact-pull``
init container and the cleanup Job's, never Triton's), through ``secretKeyRef``, under the
variable names every AWS SDK (and optiserve.remote.s3) reads. The same containers, and only
they, mount ``caBundle``'s ConfigMap key read-only and name the file in ``OPTISERVE_CA_BUNDLE``
(optiserve.remote.tls); the kubelet mounts it, the operator never reads it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from optiserve.api import OptimizedModelSpec
from optiserve.api.artifact_store import split_s3_prefix
from optiserve.api.objectstore import ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN
from optiserve.remote.s3 import ADDRESSING_ENV
from optiserve.remote.tls import CA_BUNDLE_ENV

MODEL_REPOSITORY = "model_repository"
# storage.s3: where the pods keep the artifact locally, and the env var naming the store.
ARTIFACT_STORE_ENV = "OPTISERVE_ARTIFACT_STORE"  # the model's s3:// prefix, for the Job
JOB_ARTIFACTS_PATH = "/mnt/artifacts"  # the Job's emptyDir: artifacts built, then uploaded
PULLED_PATH = "/mnt/artifact-store"  # the Triton pod's emptyDir, as the pull writes it
SERVED_ARTIFACT_PATH = "/mnt/artifact"  # the artifact's model repository, as Triton reads it
# An artifact is at most this large on a pod's disk (the Job's default ephemeral-storage
# limit, which bounds what it can build).
ARTIFACT_SIZE_LIMIT = "20Gi"
# spec.objectStore.caBundle: the ConfigMap key, whatever its name, lands in this one file.
CA_BUNDLE_VOLUME = "ca-bundle"
CA_BUNDLE_DIR = "/etc/optiserve/ca"
CA_BUNDLE_FILE = "ca.crt"
PULL_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi", "ephemeral-storage": "1Gi"},
    "limits": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": ARTIFACT_SIZE_LIMIT},
}


def object_store_env(spec: OptimizedModelSpec) -> list[dict[str, Any]]:
    """Env entries for the Job's container; empty without ``spec.objectStore``."""
    store = spec.object_store
    if store is None:
        return []
    env: list[dict[str, Any]] = []
    if store.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": store.endpoint})
    env += [
        {"name": "AWS_REGION", "value": store.region},
        {"name": ADDRESSING_ENV, "value": store.addressing},
    ]
    if store.credentials_secret:
        for key, optional in (
            (ACCESS_KEY_ID, False),
            (SECRET_ACCESS_KEY, False),
            (SESSION_TOKEN, True),
        ):
            ref: dict[str, Any] = {"name": store.credentials_secret, "key": key}
            if optional:
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    if store.ca_bundle:
        env.append({"name": CA_BUNDLE_ENV, "value": f"{CA_BUNDLE_DIR}/{CA_BUNDLE_FILE}"})
    return env


def ca_bundle_volumes(spec: OptimizedModelSpec) -> list[dict[str, Any]]:
    """The pod volume of ``caBundle``'s ConfigMap, only its key; none without ``caBundle``."""
    ca = spec.object_store.ca_bundle if spec.object_store else None
    if ca is None:
        return []
    source = {
        "name": ca.config_map,
        "items": [{"key": ca.key, "path": CA_BUNDLE_FILE}],
        "defaultMode": 0o444,
    }
    return [{"name": CA_BUNDLE_VOLUME, "configMap": source}]


def ca_bundle_mounts(spec: OptimizedModelSpec) -> list[dict[str, Any]]:
    """Its read-only mount, for the containers that get :func:`object_store_env`."""
    if not ca_bundle_volumes(spec):
        return []
    return [{"name": CA_BUNDLE_VOLUME, "mountPath": CA_BUNDLE_DIR, "readOnly": True}]


def uses_s3(spec: OptimizedModelSpec) -> bool:
    return spec.storage.s3 is not None


def s3_model_prefix(spec: OptimizedModelSpec, namespace: str, name: str) -> str:
    """``s3://bucket/<prefix>/<namespace>/<name>``: the model's own folder of the store."""
    assert spec.storage.s3 is not None
    bucket, prefix = split_s3_prefix(spec.storage.s3)
    path = "/".join(part for part in (prefix, namespace, name) if part)
    return f"s3://{bucket}/{path}"


def s3_artifact_uri(spec: OptimizedModelSpec, digest: str, namespace: str, name: str) -> str:
    """``status.artifact.uri`` of an artifact kept in S3 (its model repository)."""
    return f"{s3_model_prefix(spec, namespace, name)}/{digest}/{MODEL_REPOSITORY}"


def s3_artifact_root(uri: str) -> tuple[str, str]:
    """``(s3://.../<digest>, digest)`` of an artifact URI: the prefix its marker covers."""
    root = uri.removesuffix("/").removesuffix(f"/{MODEL_REPOSITORY}")
    return root, root.rsplit("/", 1)[-1]


def s3_pull(
    spec: OptimizedModelSpec, uri: str, image: str, security_context: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(init container that pulls the artifact, its emptyDir, the read-only mount of the
    artifact's model repository that the assembling init container and Triton share).

    Only the pull container gets the store's credentials and CA bundle (the pod also needs
    :func:`ca_bundle_volumes`); Triton reads a local folder."""
    root, digest = s3_artifact_root(uri)
    volume = {"name": "artifact", "emptyDir": {"sizeLimit": ARTIFACT_SIZE_LIMIT}}
    read_mount = {
        "name": "artifact",
        "mountPath": SERVED_ARTIFACT_PATH,
        "subPath": f"{digest}/{MODEL_REPOSITORY}",
        "readOnly": True,
    }
    init = {
        "name": "artifact-pull",
        "image": image,
        "command": [
            "python",
            "-m",
            "optiserve.remote.artifact_cli",
            "pull",
            root,
            f"{PULLED_PATH}/{digest}",
        ],
        "env": [{"name": "HOME", "value": "/tmp"}, *object_store_env(spec)],
        "workingDir": "/tmp",
        "resources": PULL_RESOURCES,
        "securityContext": dict(security_context),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "artifact", "mountPath": PULLED_PATH},
            {"name": "tmp", "mountPath": "/tmp"},
            *ca_bundle_mounts(spec),
        ],
    }
    return init, volume, read_mount


def s3_egress(spec: OptimizedModelSpec) -> list[dict[str, Any]]:
    """NetworkPolicy egress the Triton pod needs with ``storage.s3``: DNS, and the store's
    port (443 without an endpoint: AWS). The store's address is no pod or namespace, so the
    rule names no peer; none at all with a claim (Triton then calls nothing)."""
    if not uses_s3(spec):
        return []
    endpoint = spec.object_store.endpoint if spec.object_store else None
    parts = urlsplit(endpoint or "https://s3.amazonaws.com")
    port = parts.port or (80 if parts.scheme == "http" else 443)
    dns = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    return [{"ports": dns}, {"ports": [{"protocol": "TCP", "port": port}]}]
