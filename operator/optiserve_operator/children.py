"""The serving children of a model rendered for a reconcile pass, and how a render failure
becomes the user-facing Failure that stalls the model (``reconcile.plan`` decides, this renders).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from optiserve.api import OptimizedModelSpec
from optiserve.api.status import Artifact
from optiserve.render.autoscaling import render_autoscaler
from optiserve.render.deployment import (
    DEFAULT_ASSEMBLE_IMAGE,
    ArtifactLocationError,
    render_deployment,
    render_disruption_budget,
    render_network_policy,
    render_service,
)
from optiserve.render.kubernetes import Manifest, Owner
from optiserve.render.objectstore import s3_egress
from optiserve_operator.failures import RENDER_ERRORS, Failure, render_failure


class Refused(Exception):
    """A renderer could not turn the spec into a manifest (carries the user-facing failure)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


Rendered = TypeVar("Rendered")


def rendered(doing: str, render: Callable[[], Rendered]) -> Rendered:
    try:
        return render()
    except ArtifactLocationError:
        raise  # not the spec's fault: the Job reported an artifact no pod can mount
    except RENDER_ERRORS as err:
        raise Refused(render_failure(doing, err)) from err


def serving_manifests(
    owner: Owner,
    spec: OptimizedModelSpec,
    artifact: Artifact,
    *,
    image: str = DEFAULT_ASSEMBLE_IMAGE,
) -> list[Manifest]:
    """Deployment, Service, budget and (when asked for) the network policy and the autoscaler
    that serve ``artifact``.

    The autoscaler follows the Deployment it scales; without one the Deployment has no
    replicas field to fight over, so it comes only once something is served.
    """
    manifests = [
        rendered(
            "render the Deployment", lambda: render_deployment(owner, spec, artifact, image=image)
        ),
        rendered("render the Service", lambda: render_service(owner)),
        rendered("render the PodDisruptionBudget", lambda: render_disruption_budget(owner)),
    ]
    policy = rendered(
        "render the NetworkPolicy",
        lambda: render_network_policy(owner, spec.serving.network_policy, s3_egress(spec)),
    )
    autoscaler = rendered(
        "render the autoscaler", lambda: render_autoscaler(owner, spec.serving.autoscaling)
    )
    return manifests + [m for m in (policy, autoscaler) if m is not None]
