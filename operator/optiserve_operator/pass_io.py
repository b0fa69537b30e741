"""What one reconcile pass reads and what it decides: the inputs and the output of ``plan``.

Plain frozen dataclasses, no behaviour: the handlers fill ``Observed`` from the API server and
the watches' cache, ``reconcile.plan`` returns a ``Plan``, the controller carries it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from optiserve.api import OptimizedModelSpec
from optiserve.api.status import (
    OptimizedModelStatus,
)
from optiserve.policy import Policy
from optiserve.render.kubernetes import (
    Manifest,
    Owner,
)
from optiserve_operator import exposure as exposing
from optiserve_operator.canary_rollout import (
    CanaryObserved,
)
from optiserve_operator.observe import DeploymentState, JobState
from optiserve_operator.retention import SpecConfigMap
from optiserve_operator.settings import POLL_SECONDS, RESYNC_SECONDS


@dataclass(frozen=True)
class Config:
    optimizer_image: str
    service_account: str | None = None
    poll_seconds: float = POLL_SECONDS
    resync_seconds: float = RESYNC_SECONDS
    policy: Policy | None = None  # the administrator's (optiserve.policy); None: structural only
    prometheus_url: str | None = None  # where canary analysis reads Triton's metrics


@dataclass(frozen=True)
class ModelState:
    owner: Owner
    generation: int
    annotations: Mapping[str, str]
    spec: OptimizedModelSpec
    status: OptimizedModelStatus


AUTOSCALER_KINDS = ("HorizontalPodAutoscaler", "ScaledObject")


@dataclass(frozen=True)
class Observed:
    model: ModelState
    jobs: tuple[JobState, ...] = ()
    deployment: DeploymentState | None = None
    autoscalers: frozenset[str] = frozenset()  # kinds of our autoscalers that exist
    network_policy: bool = False  # our NetworkPolicy exists
    config_maps: tuple[SpecConfigMap, ...] = ()  # the Jobs' spec ConfigMaps
    exposure: exposing.ExposureState = field(default_factory=exposing.ExposureState)
    canary: CanaryObserved = field(default_factory=CanaryObserved)  # the canary Deployment


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    status: OptimizedModelStatus
    create: tuple[Manifest, ...] = ()  # create, or read when it exists (409)
    dry_run: tuple[Manifest, ...] = ()  # checked by the API server (SSA, dryRun=All) first
    apply: tuple[Manifest, ...] = ()  # server-side apply, field manager "optiserve"
    delete_jobs: tuple[str, ...] = ()  # still-running Jobs of a superseded digest
    delete_autoscalers: tuple[str, ...] = ()  # kinds no longer wanted (spec changed)
    delete_network_policy: bool = False  # the spec switched it off
    delete_exposure: tuple[str, ...] = ()  # HTTPRoute / Ingress no longer asked for
    delete_config_maps: tuple[str, ...] = ()  # spec ConfigMaps of superseded Jobs
    delete_canary: bool = False  # the canary Deployment (aborted, promoted, or not wanted)
    delete_canary_service: bool = False  # the canary Service (an HTTPRoute's canary backend)
    events: tuple[Event, ...] = ()
    requeue_after: float | None = 300.0  # None: only a watch event (a spec change) brings it back
