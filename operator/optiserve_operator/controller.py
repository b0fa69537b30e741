"""One reconcile pass against the API: observe, ``reconcile.plan``, carry the plan out.

This is the glue between the pure decision and ``kube``; it holds no state of its own
between passes except metrics bookkeeping, so a restart loses nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from optiserve.api import API_VERSION, KIND, OptimizedModelSpec
from optiserve.api.status import STALLED, OptimizedModelStatus
from optiserve.render.autoscaling import KEDA_API_VERSION
from optiserve.render.canary import canary_name
from optiserve.render.job import cleanup_job_name
from optiserve.render.kubernetes import (
    Owner,
    serving_name,
)
from optiserve_operator import conditions as c
from optiserve_operator import metrics
from optiserve_operator.applied import stamped, unchanged
from optiserve_operator.canary_reading import read_canary
from optiserve_operator.deletion import (
    FINALIZER,
    plan_deletion,
    retired_finalizers_patch,
    wants_finalizer,
)
from optiserve_operator.echoes import OwnWrites
from optiserve_operator.exposure import delete_exposure
from optiserve_operator.failures import (
    MESSAGE_LIMIT,
    Failure,
    classify,
    retrying_status,
    stalled_status,
    terminating_namespace,
)
from optiserve_operator.kube import Kube
from optiserve_operator.kube_transport import KubeError, Obj
from optiserve_operator.observe import job_state
from optiserve_operator.phases import PhaseTable
from optiserve_operator.reading import read_observed, status_of
from optiserve_operator.reconcile import (
    Config,
    Event,
    ModelState,
    Observed,
    Plan,
    plan,
    transition_events,
)
from optiserve_operator.summary import redact

LOG = logging.getLogger("optiserve.operator")
# A namespace seen terminating is logged once; remembered this long (a namespace deleted and
# created again under the same name is logged again after it).
TERMINATING_MEMORY_SECONDS = 600.0


class ExecuteError(Exception):
    """An API call of ``Controller.execute`` failed; ``doing`` says which."""

    def __init__(self, doing: str, cause: Exception) -> None:
        super().__init__(f"{doing}: {cause}")
        self.doing = doing
        self.cause = cause


@contextlib.contextmanager
def _doing(what: str) -> Iterator[None]:
    try:
        yield
    except Exception as err:
        raise ExecuteError(what, err) from err


class Controller:
    def __init__(self, kube: Kube, config: Config, own_writes: OwnWrites | None = None) -> None:
        self.kube = kube
        self.config = config
        self.phases = PhaseTable(_publish_phases)
        self.own_writes = own_writes  # status writes whose watch events are echoes
        self.terminating: dict[str, float] = {}  # namespace -> when first refused (monotonic)

    def observe(self, obj: Obj, spec: OptimizedModelSpec) -> Observed:
        observed = read_observed(self.kube, obj, spec)
        canary = read_canary(
            self.kube, observed.model, self.config.prometheus_url, datetime.now(UTC)
        )
        return replace(observed, canary=canary)

    def reconcile(self, namespace: str, name: str) -> float | None:
        """One pass; returns when to look again (seconds), None when the object is gone."""
        started = time.monotonic()
        obj = self.kube.get(API_VERSION, KIND, namespace, name)
        if obj is None:
            self.phases.forget((namespace, name))
            metrics.forget_model(namespace, name)
            return None
        self._drop_retired_finalizers(obj)
        now = c.rfc3339(datetime.now(UTC))
        try:
            spec = OptimizedModelSpec.model_validate(obj.get("spec") or {})
        except ValidationError as err:
            if not obj["metadata"].get("deletionTimestamp"):
                self._write_invalid(obj, str(err), now)
            metrics.RECONCILES.labels("invalid").inc()
            return None
        if obj["metadata"].get("deletionTimestamp"):
            # Children carry ownerReferences: the garbage collector removes them. Only the
            # artifacts (keepArtifactsOnDelete: false) need the operator, under its finalizer.
            self.phases.forget((namespace, name))
            metrics.forget_model(namespace, name)
            return self.finish_deletion(obj, spec)
        generation = int(obj["metadata"].get("generation", 1))
        try:
            observed = self.observe(obj, spec)
            self._sync_finalizer(obj, wants_finalizer(observed.model))
        except Exception as err:
            # Reading is never the user's fault (a 403 here is the operator's own RBAC).
            self._report_transient(obj, classify("read the model's children", err), now)
            raise
        result = plan(observed, now, self.config)
        try:
            self.execute(obj, result)
        except ExecuteError as err:
            if self._namespace_terminating(err.cause, err.doing):
                return None  # the model goes with its namespace: no Stalled, no retry
            failure = classify(err.doing, err.cause)
            if not failure.permanent:
                self._report_transient(obj, failure, now)
                raise err.cause from None
            # Refused by the API server: Stalled with its reason, a Warning event, and no
            # retry until the spec changes (failures.held).
            stalled = stalled_status(result.status, generation, failure, now)
            self._write_status(obj, stalled)
            self._emit(obj, transition_events(status_of(obj), stalled))
            metrics.RECONCILES.labels("stalled").inc()
            LOG.warning("%s/%s stalled: %s", namespace, name, failure.message)
            return None
        said = c.find(result.status.conditions, STALLED)
        if result.status != observed.model.status and said and said.status == "True":
            LOG.warning("%s/%s stalled: %s", namespace, name, said.message)
        metrics.DURATION.observe(time.monotonic() - started)
        metrics.RECONCILES.labels(result.status.phase).inc()
        return result.requeue_after

    def _namespace_terminating(self, err: BaseException, doing: str) -> bool:
        """Whether ``err`` says the namespace is being deleted; logged once per namespace at
        info level (every model and child there gets the same answer until it is gone)."""
        namespace = terminating_namespace(err)
        if namespace is None:
            return False
        now = time.monotonic()
        for seen, when in list(self.terminating.items()):
            if now - when > TERMINATING_MEMORY_SECONDS:
                self.terminating.pop(seen, None)
        if namespace not in self.terminating:
            self.terminating[namespace] = now
            LOG.info(
                "namespace terminating: %s: %s refused, nothing more is created", namespace, doing
            )
        metrics.RECONCILES.labels("namespace-terminating").inc()
        return True

    def _report_transient(self, obj: Obj, failure: Failure, now: str) -> None:
        """The last transient error in ``Reconciling``; best effort (the API may be down)."""
        generation = int(obj["metadata"].get("generation", 1))
        try:
            self._write_status(obj, retrying_status(status_of(obj), generation, failure, now))
        except Exception as err:  # the pass fails anyway and is retried
            LOG.debug("status of %s not written: %s", obj["metadata"]["name"], err)

    def _drop_retired_finalizers(self, obj: Obj) -> None:
        """The migration to one finalizer name: retired names go first, before anything else
        (a model being deleted would otherwise wait on them forever)."""
        meta = obj["metadata"]
        ops = retired_finalizers_patch(meta.get("finalizers") or [])
        if ops is not None:
            updated = self.kube.json_patch(API_VERSION, KIND, meta["namespace"], meta["name"], ops)
            meta["finalizers"] = (updated.get("metadata") or {}).get("finalizers") or []

    def _sync_finalizer(self, obj: Obj, wanted: bool) -> None:
        """Our finalizer present exactly when artifacts must be removed on delete (SSA: the
        finalizer list is a set, so only our own entry is added or dropped)."""
        meta = obj["metadata"]
        if (FINALIZER in (meta.get("finalizers") or [])) == wanted:
            return
        body: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        }
        if wanted:
            body["metadata"]["finalizers"] = [FINALIZER]
        self.kube.apply(body)

    def finish_deletion(self, obj: Obj, spec: OptimizedModelSpec) -> float | None:
        meta = obj["metadata"]
        if FINALIZER not in (meta.get("finalizers") or []):
            return None
        owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
        model = ModelState(
            owner=owner,
            generation=int(meta.get("generation", 1)),
            annotations=meta.get("annotations") or {},
            spec=spec,
            status=status_of(obj),
        )
        name = cleanup_job_name(owner.name, owner.uid)
        raw_job = self.kube.get("batch/v1", "Job", owner.namespace, name)
        cleanup = None
        if raw_job is not None:
            pods = self.kube.list("v1", "Pod", owner.namespace, {"job-name": name})
            cleanup = job_state(raw_job, pods)
        result = plan_deletion(model, cleanup, self._digests_in_use(obj, spec), self.config)
        for manifest in result.create:
            try:
                self.kube.create_or_read(manifest)
            except KubeError as err:
                if not self._namespace_terminating(err, f"create Job {name}"):
                    raise
                # No cleanup Job can start there, and waiting would keep the namespace from
                # going: the finalizer is released and the artifacts are left in storage.
                LOG.warning(
                    "%s/%s: artifacts left in %s: the namespace is being deleted",
                    owner.namespace,
                    owner.name,
                    spec.storage.pvc or spec.storage.s3,
                )
                self._sync_finalizer(obj, wanted=False)
                return None
            metrics.CHILD_OPERATIONS.labels(manifest["kind"], "create").inc()
        involved = self._involved(obj)
        for event in result.events:
            with contextlib.suppress(Exception):
                self.kube.emit_event(involved, event.type, event.reason, event.message)
        if result.release:
            self._sync_finalizer(obj, wanted=False)
            return None
        return self.config.poll_seconds

    def _digests_in_use(self, obj: Obj, spec: OptimizedModelSpec) -> set[str]:
        """Artifact digests other live models on the same storage folder still reference."""
        in_use: set[str] = set()
        meta = obj["metadata"]
        for other in self.kube.list(API_VERSION, KIND, meta["namespace"], {}):
            other_meta = other["metadata"]
            if other_meta["uid"] == meta["uid"] or other_meta.get("deletionTimestamp"):
                continue
            storage = (other.get("spec") or {}).get("storage") or {}
            same_folder = (storage.get("pvc"), storage.get("s3")) == (
                spec.storage.pvc,
                spec.storage.s3,
            ) and (storage.get("subPath", "optiserve") == spec.storage.sub_path)
            if same_folder:
                status = status_of(other)
                in_use |= {
                    a.digest for a in (status.artifact, status.last_good_artifact) if a is not None
                }
        return in_use

    def execute(self, obj: Obj, result: Plan) -> None:
        """Carry out ``result``; a failing API call raises ``ExecuteError`` naming it."""
        meta = obj["metadata"]
        namespace = meta["namespace"]
        for job_name in result.delete_jobs:
            with _doing(f"delete Job {job_name}"):
                self.kube.delete("batch/v1", "Job", namespace, job_name)
            metrics.CHILD_OPERATIONS.labels("Job", "delete").inc()
        for cm_name in result.delete_config_maps:
            with _doing(f"delete ConfigMap {cm_name}"):
                self.kube.delete("v1", "ConfigMap", namespace, cm_name)
            metrics.CHILD_OPERATIONS.labels("ConfigMap", "delete").inc()
        for kind in result.delete_autoscalers:
            with _doing(f"delete {kind} {meta['name']}"):
                if kind == "HorizontalPodAutoscaler":
                    self.kube.delete(
                        "autoscaling/v2", "HorizontalPodAutoscaler", namespace, meta["name"]
                    )
                else:
                    self.kube.delete(KEDA_API_VERSION, "ScaledObject", namespace, meta["name"])
            metrics.CHILD_OPERATIONS.labels(kind, "delete").inc()
        if result.delete_network_policy:
            policy = serving_name(meta["name"])
            with _doing(f"delete NetworkPolicy {policy}"):
                self.kube.delete("networking.k8s.io/v1", "NetworkPolicy", namespace, policy)
            metrics.CHILD_OPERATIONS.labels("NetworkPolicy", "delete").inc()
        for kind in result.delete_exposure:
            with _doing(f"delete {kind} {serving_name(meta['name'])}"):
                delete_exposure(self.kube, namespace, serving_name(meta["name"]), kind)
            metrics.CHILD_OPERATIONS.labels(kind, "delete").inc()
        if result.delete_canary:
            canary = canary_name(meta["name"])
            with _doing(f"delete Deployment {canary}"):
                self.kube.delete("apps/v1", "Deployment", namespace, canary)
            metrics.CHILD_OPERATIONS.labels("Deployment", "delete").inc()
        if result.delete_canary_service:
            canary = canary_name(meta["name"])
            with _doing(f"delete Service {canary}"):
                self.kube.delete("v1", "Service", namespace, canary)
            metrics.CHILD_OPERATIONS.labels("Service", "delete").inc()
        for manifest in result.dry_run:
            with _doing(f"check {manifest['kind']} {manifest['metadata']['name']}"):
                self.kube.apply(manifest, dry_run=True)
            metrics.CHILD_OPERATIONS.labels(manifest["kind"], "dry-run").inc()
        created_job = False
        for manifest in result.create:
            with _doing(f"create {manifest['kind']} {manifest['metadata']['name']}"):
                _, created = self.kube.create_or_read(manifest)
            created_job |= created and manifest["kind"] == "Job"
            metrics.CHILD_OPERATIONS.labels(manifest["kind"], "create" if created else "read").inc()
        for manifest in result.apply:
            with _doing(f"apply {manifest['kind']} {manifest['metadata']['name']}"):
                child = manifest["metadata"]["name"]
                live = self.kube.get(manifest["apiVersion"], manifest["kind"], namespace, child)
                if unchanged(live, manifest):  # as wanted: no write (applied.py says why)
                    continue
                self.kube.apply(stamped(manifest))
            metrics.CHILD_OPERATIONS.labels(manifest["kind"], "apply").inc()
        with _doing("write the status"):
            self._write_status(obj, result.status)
        # A pass that found its Job already there (a restart after create, before the status
        # write) says nothing about creating it.
        self._emit(obj, [e for e in result.events if created_job or e.reason != "JobCreated"])

    def _emit(self, obj: Obj, events: Sequence[Event]) -> None:
        meta = obj["metadata"]
        involved = self._involved(obj)
        for event in events:
            try:
                self.kube.emit_event(involved, event.type, event.reason, event.message)
            except Exception as err:  # an event is a courtesy; losing one must not fail a pass
                if self._namespace_terminating(err, f"post event {event.reason}"):
                    return  # the rest would be refused too
                LOG.warning(
                    "event %s for %s/%s not posted: %s",
                    event.reason,
                    meta["namespace"],
                    meta["name"],
                    err,
                )
        for event in events:
            LOG.info("%s/%s %s: %s", meta["namespace"], meta["name"], event.reason, event.message)

    def _write_status(self, obj: Obj, status: OptimizedModelStatus) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        old = status_of(obj)
        previous = self.phases.set(key, status.phase)
        if old.phase != status.phase and previous is not None:
            since = max((cond.last_transition_time for cond in old.conditions), default=None)
            if since:
                started = datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                elapsed = (datetime.now(UTC) - started).total_seconds()
                metrics.PHASE_SECONDS.labels(old.phase).observe(max(elapsed, 0.0))
        metrics.publish_conditions(*key, {cond.type: cond.status for cond in status.conditions})
        if status.to_wire() == old.to_wire() and obj.get("status"):
            return  # nothing changed: no write, no watch event, no reconcile echo
        body: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "status": status.to_wire(),
        }
        written = self.kube.apply(body, subresource="status")
        if self.own_writes is not None:
            version = (written.get("metadata") or {}).get("resourceVersion")
            self.own_writes.record(key, version, obj)

    def _write_invalid(self, obj: Obj, error: str, now: str) -> None:
        """A spec the API server took but the models refuse (e.g. a CRD older than the
        operator): Stalled, with a Warning event on the transition."""
        old = status_of(obj)
        generation = int(obj["metadata"].get("generation", 1))
        failure = Failure(True, c.REASON_INVALID, redact(error, MESSAGE_LIMIT))
        status = stalled_status(old, generation, failure, now)
        self._write_status(obj, status)
        self._emit(obj, transition_events(old, status))

    @staticmethod
    def _involved(obj: Obj) -> Obj:
        meta = obj["metadata"]
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        }


def _publish_phases(counts: Mapping[str, int]) -> None:
    for phase in ("Pending", "Optimizing", "Deploying", "Ready", "Failed"):
        metrics.MODELS.labels(phase).set(counts.get(phase, 0))
