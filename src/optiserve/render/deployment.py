"""The Triton Deployment, its Service, disruption budget and network policy. Pure.

The model repository is chosen by artifact digest and the digest is a pod-template annotation,
so a new artifact rolls the Deployment and the same artifact renders byte-identical objects
(server-side apply then changes nothing). With autoscaling set, ``replicas`` is left out so
the operator never fights the autoscaler for the field.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from optiserve.api import OptimizedModelSpec
from optiserve.api.network import NetworkPeer, NetworkPolicySpec
from optiserve.api.spec import ResourceRequirements
from optiserve.api.status import AppliedResources, Artifact, ServingStatus
from optiserve.digest import optiserve_version
from optiserve.render.kubernetes import (
    ANNOTATION_ARTIFACT,
    GRPC_PORT,
    HTTP_PORT,
    LABEL_COMPONENT,
    LABEL_MODEL,
    METRICS_PORT,
    Manifest,
    Owner,
    common_labels,
    container_security_context,
    folder_volume,
    gpu_resources,
    metadata,
    placement,
    pod_security_context,
    serving_name,
    tmp_volume,
)
from optiserve.render.objectstore import ca_bundle_volumes, s3_artifact_root, s3_pull
from optiserve.render.serving_config import (
    ANNOTATION_SERVING_CONFIG,
    SERVED_REPOSITORY,
    check_fits_artifact,
    rollout_settings,
    served_repository,
    settings_fingerprint,
)
from optiserve.render.sizing import SIZED, Sizing, triton_sizing, with_spec
from optiserve.render.triton import triton_server_args
from optiserve.uri import DEFAULT_PVC_ROOT, parse_uri

COMPONENT = "server"
# Triton's python backend passes tensors through shared memory; the default 64Mi is too small.
SHM_SIZE = "1Gi"
# Runs the init container that assembles the served repository (it has Python and optiserve);
# the operator passes its --optimizer-image, a spec's optimization.job.image wins over both.
DEFAULT_ASSEMBLE_IMAGE = f"ghcr.io/optiserve/optimizer:{optiserve_version()}"


class ArtifactLocationError(ValueError):
    """The artifact is not somewhere a pod can read it (a pvc:// folder or an s3:// prefix)."""


def selector_labels(model_name: str) -> dict[str, str]:
    """Stable forever: a Deployment's selector is immutable."""
    return {LABEL_MODEL: model_name, LABEL_COMPONENT: COMPONENT}


def selector_string(model_name: str) -> str:
    """``status.selector`` for the scale subresource."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(model_name).items()))


def model_repository(artifact: Artifact) -> tuple[str, str, str]:
    """(claim, folder inside the claim, path inside the pod) of the artifact's Triton model
    repository."""
    parsed = parse_uri(artifact.uri)
    if parsed.scheme != "pvc" or parsed.claim is None:
        raise ArtifactLocationError(
            f"artifact {artifact.uri!r} must be a pvc:// or s3:// URI to be served"
        )
    folder = parsed.path.strip("/")
    if any(segment in ("", ".", "..") for segment in folder.split("/")):
        raise ArtifactLocationError(f"artifact {artifact.uri!r}: a folder path, without . or ..")
    path = PurePosixPath(DEFAULT_PVC_ROOT, parsed.claim, folder)
    return parsed.claim, folder, str(path)


def _artifact_source(
    spec: OptimizedModelSpec, artifact: Artifact, image: str
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """(init containers that fetch it, the artifact's volume, its read-only mount): a claim's
    folder mounted as is, or (``storage.s3``) an emptyDir an init container pulls into."""
    if artifact.uri.startswith("s3://"):
        if s3_artifact_root(artifact.uri)[1] != artifact.digest:
            raise ArtifactLocationError(
                f"artifact {artifact.uri!r}: expected s3://.../{artifact.digest}/model_repository"
            )
        pull, volume, mount = s3_pull(spec, artifact.uri, image, container_security_context())
        return [pull], volume, mount
    claim, folder, repository = model_repository(artifact)
    # Only the artifact's own model repository, read-only: Triton sees nothing else of the claim.
    volume, mount = folder_volume("artifact", claim, folder, repository, read_only=True)
    return [], volume, mount


def triton_resources(spec: OptimizedModelSpec, artifact: Artifact) -> Sizing:
    """The Triton container's cpu, memory and ephemeral-storage requests and limits: the
    spec's own (``serving.resources``) for each resource it names, the rule of
    ``optiserve.render.sizing`` over the Job's measurement (``artifact.servingCost``) for the
    others, its defaults while no measurement exists."""
    serving = spec.serving
    cache = serving.response_cache.size_bytes if serving.response_cache.enabled else 0
    sized = triton_sizing(artifact.serving_cost, serving.instance_group.count, cache)
    return with_spec(sized, serving.resources.requests, serving.resources.limits)


def serving_status(spec: OptimizedModelSpec, artifact: Artifact) -> ServingStatus:
    """``status.serving``: the Triton container's cpu, memory and ephemeral-storage requests
    and limits as rendered, and why (extended resources such as GPUs are left out)."""
    sized = triton_resources(spec, artifact)

    def pick(values: dict[str, int | str]) -> dict[str, str]:
        return {k: str(values[k]) for k in SIZED if k in values}

    return ServingStatus(
        resources=AppliedResources(
            requests=pick(sized.requests), limits=pick(sized.limits), basis=sized.basis
        ),
        tuning=artifact.tuning,  # what the Job's search chose for the config served
    )


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def render_deployment(
    owner: Owner,
    spec: OptimizedModelSpec,
    artifact: Artifact,
    *,
    image: str = DEFAULT_ASSEMBLE_IMAGE,
) -> Manifest:
    """Triton serves the repository the init container assembles from the artifact and the
    spec's serving settings (``render.serving_config``): a change of those settings changes the
    pod template, so it rolls the Deployment without a new artifact."""
    serving = spec.serving
    target = spec.optimization.target
    name = serving_name(owner.name)
    image = spec.optimization.job.image or image
    fetch, artifact_vol, artifact_mount = _artifact_source(spec, artifact, image)
    labels = {**common_labels(owner.name, COMPONENT), **selector_labels(owner.name)}
    check_fits_artifact(artifact.format, serving)
    settings = rollout_settings(serving, artifact.tuning)  # the spec's, tuned where searched
    template_annotations = {
        ANNOTATION_ARTIFACT: artifact.digest,
        ANNOTATION_SERVING_CONFIG: settings_fingerprint(settings),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }

    init, served_vol, served_mount = served_repository(
        image,
        artifact_mount,
        settings,
        container_security_context(),
    )
    sizing = triton_resources(spec, artifact)
    tmp_limit = sizing.limits.get("ephemeral-storage")
    tmp_vol, tmp_mount = tmp_volume(str(tmp_limit) if tmp_limit is not None else None)
    shm_vol = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}}
    shm_mount = {"name": "dshm", "mountPath": "/dev/shm"}

    container: dict[str, Any] = {
        "name": "triton",
        "image": serving.image,
        "command": ["tritonserver"],
        "args": triton_server_args(
            serving,
            SERVED_REPOSITORY,
            http_port=HTTP_PORT,
            grpc_port=GRPC_PORT,
            metrics_port=METRICS_PORT,
            gpu_metrics=target.device == "gpu",
        ),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": _probe("/v2/health/ready", period=5, failures=3),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=3),
        # Loading a large engine can take minutes; liveness waits until the server is up once.
        "startupProbe": _probe("/v2/health/live", period=5, failures=120),
        "resources": gpu_resources(
            ResourceRequirements(requests=sizing.requests, limits=sizing.limits), target
        ),
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount, shm_mount, artifact_mount, served_mount],
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "initContainers": [*fetch, init],
        "containers": [container],
        # The CA bundle only for the artifact-pull init container (never mounted in Triton).
        "volumes": [tmp_vol, shm_vol, artifact_vol, served_vol]
        + (ca_bundle_volumes(spec) if fetch else []),
    }
    pod_spec.update(placement(serving.node_selector, serving.tolerations, target))

    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(owner.name)},
        "progressDeadlineSeconds": serving.rollout_deadline_seconds,
        "revisionHistoryLimit": 3,
        # Keep serving during a rollout: a new pod comes up before an old one goes.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": {
            "metadata": {"labels": labels, "annotations": template_annotations},
            "spec": pod_spec,
        },
    }
    if serving.autoscaling is None:
        deployment_spec["replicas"] = serving.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name, owner, labels, {ANNOTATION_ARTIFACT: artifact.digest}),
        "spec": deployment_spec,
    }


def render_service(owner: Owner) -> Manifest:
    name = serving_name(owner.name)
    labels = {**common_labels(owner.name, COMPONENT), **selector_labels(owner.name)}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, owner, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner.name),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def render_disruption_budget(owner: Owner) -> Manifest:
    """At most one Triton pod of the model evicted at a time (a node drain, a cluster upgrade).

    Rendered for every served model, whatever its replica count: with one replica
    ``maxUnavailable: 1`` still lets a drain proceed (nothing is blocked), and once the spec or
    an autoscaler adds replicas the budget is already there, so the operator never has to
    notice the replica count change and create or delete it.
    """
    name = serving_name(owner.name)
    labels = {**common_labels(owner.name, COMPONENT), **selector_labels(owner.name)}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(name, owner, labels),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(owner.name)},
            # A pod that is not Ready yet (a crash-looping rollout) may be evicted regardless.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def _peers(peers: list[NetworkPeer]) -> list[dict[str, Any]]:
    """NetworkPolicy peers; none named: every pod of the policy's own namespace."""
    if not peers:
        return [{"podSelector": {}}]
    out: list[dict[str, Any]] = []
    for peer in peers:
        rendered: dict[str, Any] = {}
        for key, labels in (
            ("namespaceSelector", peer.namespace_selector),
            ("podSelector", peer.pod_selector),
        ):
            if labels is not None:  # {} is "all", unlike unset
                rendered[key] = {"matchLabels": dict(sorted(labels.items()))} if labels else {}
        out.append(rendered)
    return out


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def render_network_policy(
    owner: Owner, policy: NetworkPolicySpec, egress: list[dict[str, Any]] | None = None
) -> Manifest | None:
    """Inference (HTTP, gRPC) only from ``ingressFrom``, metrics only from ``metricsFrom``, and
    no egress at all; None when the spec does not ask for a policy.

    Triton serves a model repository mounted from a volume and calls nothing, so it needs no
    egress (not even DNS); ``egress``: the rules the artifact's pull from S3 needs
    (``render.objectstore.s3_egress``), the only ones then. Kubelet probes come from the
    node, which NetworkPolicy implementations allow regardless.
    """
    if not policy.enabled:
        return None
    name = serving_name(owner.name)
    labels = {**common_labels(owner.name, COMPONENT), **selector_labels(owner.name)}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(name, owner, labels),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(owner.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": _peers(policy.ingress_from), "ports": _tcp(HTTP_PORT, GRPC_PORT)},
                {"from": _peers(policy.metrics_from), "ports": _tcp(METRICS_PORT)},
            ],
            # Egress in policyTypes with no egress rule: no outgoing connection at all.
            **({"egress": egress} if egress else {}),
        },
    }
