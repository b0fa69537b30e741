"""kopf wiring: watch events feed a work queue; workers run one reconcile function.

Level-based in the controller-runtime manner. Every watch event of an OptimizedModel (the
initial listing after a restart included), of a child it controls (Job, Deployment, Service,
HPA: found by the controller ownerReference) and of an optimizer pod (by the
``optiserve.io/model`` label) adds the model's key to the queue; a worker then reconciles
from scratch. The API server streams only objects labelled ``managed-by: optiserve``.
There are no create/update/delete handlers, so kopf puts no finalizer and no bookkeeping
annotation on the user's objects; deletion is left to ownerReferences.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
from prometheus_client import start_http_server

from optiserve.api import GROUP, KIND, PLURAL, VERSION
from optiserve.policy import read_policy_dir
from optiserve.render.job import COMPONENT as JOB_COMPONENT
from optiserve.render.kubernetes import LABEL_COMPONENT, LABEL_MODEL, MANAGED_BY
from optiserve_operator import cache_fill, metrics
from optiserve_operator.child_cache import ChildCache
from optiserve_operator.controller import Controller
from optiserve_operator.echoes import OwnWrites, is_edit
from optiserve_operator.kube import Kube
from optiserve_operator.kube_paging import LIST_PAGE
from optiserve_operator.leader import LeaderElector, new_identity, run_election
from optiserve_operator.memory import release_memory
from optiserve_operator.ratelimit import TokenBucket
from optiserve_operator.reconcile import Config
from optiserve_operator.relist import RelistSweeper
from optiserve_operator.settings import OperatorSettings
from optiserve_operator.workqueue import WorkQueue

LOG = logging.getLogger("optiserve.operator")
MAX_BACKOFF = 60.0
# Quiet this long after some passes: freed memory goes back to the system (memory.py).
TRIM_AFTER_IDLE_SECONDS = 15.0
Key = tuple[str, str]  # (namespace, name)
# (group, version, plural) of every kind of child the operator writes and watches.
CHILD_RESOURCES = (
    ("batch", "v1", "jobs"),
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
)
OPTIMIZER_PODS = ("", "v1", "pods")
# Children read but not repaired on their events (the next pass puts them back, as before):
# watched only so that reading them costs no request (child_cache.py).
READ_ONLY_CHILD_RESOURCES = (
    ("policy", "v1", "poddisruptionbudgets"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("", "v1", "configmaps"),
    ("networking.k8s.io", "v1", "ingresses"),
)
# What the watches of children select (filter_watches_on_the_server), the start's fill and
# the relist sweep too.
OURS = f"app.kubernetes.io/managed-by={MANAGED_BY}"
# The kind of each cached resource, as ``Kube.get`` / ``Kube.list`` name it.
CACHED_KINDS = {
    "jobs": "Job",
    "deployments": "Deployment",
    "services": "Service",
    "horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "networkpolicies": "NetworkPolicy",
    "configmaps": "ConfigMap",
    "ingresses": "Ingress",
}
# kind -> (apiVersion, plural) of every cached kind: what the start's fill lists
# (cache_fill.py) and the relist sweep lists again (relist.py), both by OURS.
CACHED_RESOURCES: cache_fill.CachedResources = {
    CACHED_KINDS[plural]: (f"{group}/{version}" if group else version, plural)
    for group, version, plural in (*CHILD_RESOURCES, *READ_ONLY_CHILD_RESOURCES)
}


@dataclass
class Runtime:
    """What the handlers share, kept in kopf's memo (no module globals)."""

    settings: OperatorSettings
    queue: WorkQueue[Key] = field(default_factory=WorkQueue)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    failures: dict[Key, int] = field(default_factory=dict)
    own_writes: OwnWrites = field(default_factory=OwnWrites)
    # Set while this replica may reconcile: always alone, while it holds the Lease with
    # --leader-elect (leader.py). Watches fill the queue either way, so a standby is current.
    leading: asyncio.Event = field(default_factory=asyncio.Event)
    elector: LeaderElector | None = None
    passes: int = 0  # reconcile passes so far (when the last burst ended: trim_when_idle)
    # The children as the watches delivered them: what passes read (child_cache.py).
    children: ChildCache = field(default_factory=lambda: ChildCache(CACHED_KINDS.values()))
    # Drops what a relist cannot report gone (relist.py); None until the start has run.
    sweeper: RelistSweeper | None = None


def stop_process() -> None:
    """Leadership lost: stop as client-go does (SIGTERM, kopf's orderly shutdown); the
    Deployment restarts the pod, which comes back as a standby."""
    os.kill(os.getpid(), signal.SIGTERM)


def runtime(memo: Any) -> Runtime:
    found: Runtime = memo.runtime
    return found


async def worker(rt: Runtime, controller: Controller) -> None:
    while True:
        await rt.leading.wait()
        key = await rt.queue.get()
        metrics.QUEUE_DEPTH.set(len(rt.queue))
        try:
            delay = await asyncio.to_thread(controller.reconcile, *key)
        except Exception as err:
            # Rate-limited retry, as client-go's workqueue does: 0.5s, 1s, 2s ... 60s.
            count = rt.failures.get(key, 0) + 1
            rt.failures[key] = count
            backoff = min(0.5 * 2 ** (count - 1), MAX_BACKOFF)
            metrics.ERRORS.labels(type(err).__name__).inc()
            LOG.warning("reconcile %s/%s failed (retry in %.1fs): %s", *key, backoff, err)
            rt.queue.add_after(key, backoff)
        else:
            rt.failures.pop(key, None)
            if delay is not None:
                rt.queue.add_after(key, delay)
        finally:
            rt.queue.done(key)
            rt.passes += 1


async def trim_when_idle(rt: Runtime) -> None:
    """Release freed memory (memory.py) once a burst of passes is over (``BurstEnd``)."""
    burst = BurstEnd(rt.passes)
    while True:
        await asyncio.sleep(TRIM_AFTER_IDLE_SECONDS)
        if burst.over(rt.passes, len(rt.queue)):
            await asyncio.to_thread(release_memory)


@dataclass
class BurstEnd:
    """Checked every interval: true once after passes were made (a thousand models listed,
    rolled out or deleted) when a whole interval then went by with no pass and none queued."""

    seen: int  # passes at the last check
    released_at: int = -1

    def __post_init__(self) -> None:
        self.released_at = self.seen

    def over(self, passes: int, queued: int) -> bool:
        quiet = passes == self.seen and queued == 0
        due = quiet and passes != self.released_at
        if due:
            self.released_at = passes
        self.seen = passes
        return due


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    rt = runtime(memo)
    ops = rt.settings
    filter_watches_on_the_server(settings)
    # Only watch-event handlers are used, so kopf never needs to write to our objects; these
    # names keep it under our own prefix should that ever change. kopf's finalizer keeps its
    # own default name: kopf removes its finalizer from every object no handler needs it for,
    # so it must never be ours (deletion.FINALIZER, the one optiserve uses).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="optiserve.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="optiserve.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    if not ops.verbose:
        # kopf logs every watch-event handler call at INFO; the workers log what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    # Memory at a thousand models: kopf lists a page at a time, and a per-object worker (which
    # holds its object's last body while it idles) exits a second after its last event.
    settings.watching.chunk_size = LIST_PAGE
    settings.queueing.idle_timeout = 1.0
    settings.watching.client_timeout = 330
    limiter = TokenBucket(ops.api_qps, ops.api_burst)
    kube = await asyncio.to_thread(Kube.from_environment, ops.kubeconfig, limiter, rt.children)
    # Before kopf starts any watch, so before any pass (cache_fill.py says why not kopf's).
    await asyncio.to_thread(fill_child_cache, kube, rt.children, ops.namespaces)
    # Read once: the chart restarts the operator when the policy changes (checksum annotation).
    # An unreadable policy stops the start rather than let every spec through.
    policy = read_policy_dir(Path(ops.policy_dir)) if ops.policy_dir else None
    config = Config(
        optimizer_image=ops.optimizer_image,
        service_account=ops.job_service_account,
        poll_seconds=ops.poll_seconds,
        resync_seconds=ops.resync_seconds,
        policy=policy,
        prometheus_url=ops.prometheus_url,
    )
    controller = Controller(kube, config, rt.own_writes)
    rt.sweeper = RelistSweeper(
        kube,
        rt.children,
        CACHED_RESOURCES,
        OURS,
        ops.namespaces,
        gone=lambda obj: _requeue_owner(rt, obj),
    )
    rt.tasks = [
        asyncio.create_task(worker(rt, controller), name=f"optiserve-worker-{i}")
        for i in range(ops.workers)
    ]
    rt.tasks.append(asyncio.create_task(trim_when_idle(rt), name="optiserve-memory"))
    if ops.leader_elect:
        rt.elector = LeaderElector(
            kube, ops.leader_election_namespace, ops.leader_election_id, new_identity()
        )
        rt.tasks.append(
            asyncio.create_task(run_election(rt.elector, rt.leading, stop_process), name="leader")
        )
    else:
        rt.leading.set()
    if ops.metrics_port:
        start_http_server(ops.metrics_port)
    LOG.info(
        "optiserve operator started: %d workers, namespaces %s",
        ops.workers,
        ", ".join(ops.namespaces) or "all",
    )


def fill_child_cache(kube: Kube, cache: ChildCache, patterns: tuple[str, ...]) -> None:
    started = time.monotonic()
    globs = any(cache_fill.is_glob(p) for p in patterns)
    existing = cache_fill.namespace_names(kube) if globs else None
    namespaces = cache_fill.namespaces_to_list(patterns, existing)
    stored = cache_fill.fill(kube, cache, CACHED_RESOURCES, OURS, namespaces)
    LOG.info(
        "child cache filled in %.1fs: %s",
        time.monotonic() - started,
        ", ".join(f"{n} {kind}" for kind, n in stored.items()),
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    rt = runtime(memo)
    if rt.sweeper is not None:
        rt.sweeper.cancel()
    for task in rt.tasks:
        task.cancel()
    for task in rt.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if rt.elector is not None and rt.leading.is_set():
        # Hand over now rather than after the Lease expires (a rolling update, a drain).
        with contextlib.suppress(Exception):
            await asyncio.to_thread(rt.elector.release)


@kopf.on.probe(id="workqueue_depth")
def queue_depth(memo: kopf.Memo, **_: Any) -> int:
    return len(runtime(memo).queue)


# async on purpose: kopf runs sync handlers in threads, and the queue belongs to the loop.
@kopf.on.event(GROUP, VERSION, PLURAL)
async def model_event(
    type: str | None, name: str, namespace: str | None, body: kopf.Body, memo: Any, **_: Any
) -> None:
    rt = runtime(memo)
    key = (namespace or "", name)
    if type is None and rt.sweeper is not None:
        rt.sweeper.listed()  # the models listed: every watch may have been re-listed
    if type == "DELETED":
        rt.queue.forget(key)
        rt.failures.pop(key, None)
        rt.own_writes.forget(key)
    elif type == "MODIFIED" and rt.own_writes.is_echo(key, body):
        return  # our own status write coming back (echoes.py)
    # A pass on a deleted key finds it gone and clears its metrics.
    rt.queue.add(key, urgent=is_edit(body))
    metrics.QUEUE_DEPTH.set(len(rt.queue))


def owner_key(body: Mapping[str, Any]) -> Key | None:
    """The work-queue key of the OptimizedModel that controls ``body``, if one does.

    By the controller ownerReference, not by a label: a child whose labels someone edited or
    removed is still ours, and an object that merely carries our label is not.
    """
    meta = body.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if (
            ref.get("controller")
            and ref.get("kind") == KIND
            and str(ref.get("apiVersion", "")).partition("/")[0] == GROUP
            and ref.get("name")
        ):
            return (str(meta.get("namespace") or ""), str(ref["name"]))
    return None


def _requeue_owner(rt: Runtime, obj: Mapping[str, Any]) -> None:
    key = owner_key(obj)
    if key is not None:
        rt.queue.add(key)


def _cache_child_event(rt: Runtime, event_type: str | None, body: kopf.Body, plural: str) -> None:
    """Keep the child cache as the watch delivers it (cache_fill.py filled it at the start).

    Every object the selection streams, owned or not (the artifact-cleanup Job has no owner
    reference on purpose): readers check ownership themselves, as they did on the API."""
    kind = CACHED_KINDS[plural]
    if event_type is None and rt.sweeper is not None:
        rt.sweeper.listed(kind)  # a listing: a relist after 410 Gone, or kopf's first one
    if event_type == "DELETED":  # deleted, or out of the selection (its label removed)
        meta = body.get("metadata") or {}
        rt.children.drop(kind, meta.get("namespace") or "", meta.get("name", ""))
    else:  # listed (None), ADDED or MODIFIED
        rt.children.store(kind, body)


# Every kind the operator writes is watched, so a deleted or edited child is put back within
# seconds instead of at the next resync. Events of objects no model controls are dropped.
@kopf.on.event(*CHILD_RESOURCES[0])
@kopf.on.event(*CHILD_RESOURCES[1])
@kopf.on.event(*CHILD_RESOURCES[2])
@kopf.on.event(*CHILD_RESOURCES[3])
async def child_event(
    type: str | None, body: kopf.Body, resource: kopf.Resource, memo: Any, **_: Any
) -> None:
    rt = runtime(memo)
    _cache_child_event(rt, type, body, resource.plural)
    key = owner_key(body)
    if key is not None:
        rt.queue.add(key)


@kopf.on.event(*READ_ONLY_CHILD_RESOURCES[0])
@kopf.on.event(*READ_ONLY_CHILD_RESOURCES[1])
@kopf.on.event(*READ_ONLY_CHILD_RESOURCES[2])
@kopf.on.event(*READ_ONLY_CHILD_RESOURCES[3])
async def read_only_child_event(
    type: str | None, body: kopf.Body, resource: kopf.Resource, memo: Any, **_: Any
) -> None:
    _cache_child_event(runtime(memo), type, body, resource.plural)


# A Job's pods are owned by the Job, not the model; they carry the model's label. Watching
# them shows a pod that cannot be scheduled or pulled as soon as the pod says so.
@kopf.on.event(*OPTIMIZER_PODS, labels={LABEL_COMPONENT: JOB_COMPONENT, LABEL_MODEL: kopf.PRESENT})
async def optimizer_pod_event(
    labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any
) -> None:
    runtime(memo).queue.add((namespace or "", labels[LABEL_MODEL]))


def filter_watches_on_the_server(settings: kopf.OperatorSettings) -> None:
    """Only our objects are streamed to the operator (server-side label selectors).

    Without them kopf would stream every Job, Deployment, Service, HPA and pod of the watched
    namespaces and drop most of them here. A child whose ``managed-by`` label someone removes
    leaves the selection, which the API server reports as a deletion: the pass that follows
    puts the label back.
    """
    for resource in (*CHILD_RESOURCES, *READ_ONLY_CHILD_RESOURCES):
        settings.watching.label_selectors[resource] = OURS
    settings.watching.label_selectors[OPTIMIZER_PODS] = (
        f"{OURS},{LABEL_COMPONENT}={JOB_COMPONENT},{LABEL_MODEL}"
    )
