"""Every object the operator creates for one OptimizedModel, in one list. Pure.

``optiserve render`` prints this list so that a reviewer, ``kubectl diff`` or a GitOps preview
sees what a spec turns into before the operator acts on it. The same renderers the operator
calls make each object; this module only gathers them, in a stable order, without anything
the API server fills in (uid, resourceVersion, status, creationTimestamp).
"""

from __future__ import annotations

from collections.abc import Sequence

from optiserve.api import OptimizedModel
from optiserve.api.status import Artifact
from optiserve.render.autoscaling import render_autoscaler
from optiserve.render.deployment import (
    render_deployment,
    render_disruption_budget,
    render_network_policy,
    render_service,
)
from optiserve.render.exposure import render_exposure
from optiserve.render.job import artifact_uri, render_job, render_spec_config_map
from optiserve.render.kubernetes import ANNOTATION_RETRY, Manifest, Owner
from optiserve.render.objectstore import s3_egress

DEFAULT_NAMESPACE = "default"

# Apply order: what a pod mounts comes before the pod's owner; the network policy before the
# pods it guards; the autoscaler comes after the Deployment it scales. Objects of one kind
# keep the order they were rendered in.
KIND_ORDER: Sequence[str] = (
    "ConfigMap",
    "Job",
    "Service",
    "HTTPRoute",
    "Ingress",
    "NetworkPolicy",
    "Deployment",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "ScaledObject",
)


def _order(manifest: Manifest) -> int:
    kind = str(manifest["kind"])
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def _without_owner_references(manifest: Manifest) -> Manifest:
    meta = {k: v for k, v in manifest["metadata"].items() if k != "ownerReferences"}
    return {**manifest, "metadata": meta}


def render_all(
    model: OptimizedModel,
    *,
    digest: str,
    optimizer_image: str,
    namespace: str | None = None,
    owner_uid: str | None = None,
    artifact: Artifact | None = None,
    retry: str = "",
    service_account: str | None = None,
) -> list[Manifest]:
    """The spec ConfigMap, optimization Job, Service, Deployment, PodDisruptionBudget and (when
    asked for) NetworkPolicy, autoscaler and HTTPRoute or Ingress, in apply order.

    ``digest`` is the recipe digest the operator computes
    (``optiserve.digest.spec_recipe_digest``); it names the Job and, unless
    ``artifact`` says otherwise, the artifact the Deployment serves. The OptimizedModel's uid
    exists only once the API server has stored it: without ``owner_uid`` the objects carry no
    ownerReferences (a reference without a uid is invalid), which is what ``kubectl diff``
    against a cluster where the owner does not exist yet wants anyway.
    """
    spec = model.spec
    name = model.metadata.name
    ns = namespace or model.metadata.namespace or DEFAULT_NAMESPACE
    owner = Owner(name=name, namespace=ns, uid=owner_uid or "")
    served = artifact or Artifact(
        digest=digest, uri=artifact_uri(spec, digest, namespace=ns, name=name)
    )
    retry = retry or model.metadata.annotations.get(ANNOTATION_RETRY, "")

    manifests: list[Manifest] = [
        render_spec_config_map(owner, spec, digest, retry),
        render_job(
            owner,
            spec,
            digest,
            image=optimizer_image,
            retry=retry,
            service_account=service_account,
        ),
        render_deployment(owner, spec, served, image=optimizer_image),
        render_service(owner),
        render_disruption_budget(owner),
    ]
    optional = (
        render_network_policy(owner, spec.serving.network_policy, s3_egress(spec)),
        render_autoscaler(owner, spec.serving.autoscaling),
        render_exposure(owner, spec.serving.exposure),
    )
    manifests += [m for m in optional if m is not None]
    manifests.sort(key=_order)  # stable: equal kinds keep their order
    if owner_uid is None:
        manifests = [_without_owner_references(m) for m in manifests]
    return manifests
