"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does.

Every replica runs kopf's watches (so its work queue is full and current); only the replica
holding the Lease lets its workers take keys. The Lease is written with optimistic concurrency
(its resourceVersion), so two replicas can never both believe they acquired it. A standby
takes the Lease over when the holder has not renewed it for ``LEASE_SECONDS``, judged on the
standby's own clock from when it last saw the record change (clock skew between nodes does not
matter). A leader that cannot renew for ``RENEW_DEADLINE`` seconds stops (the process exits and
is restarted as a standby), before any standby may take over. A leader shutting down gracefully
releases the Lease, so a rolling update hands over at once.

Why not kopf peering: kopf pauses its watch streams on the standby, but not the work queue's
workers and timers, which would go on reconciling requeued models on a paused replica; and two
peers with equal priority pause each other. A Lease is the API's own primitive for this.

Hand-over bound after the leader is killed: at most LEASE_SECONDS + 2 * RETRY_SECONDS (the
standby sees the last renewal up to one retry late, and tries again one retry after expiry).
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from optiserve_operator.kube import Kube
from optiserve_operator.kube_transport import KubeError, Obj

LOG = logging.getLogger("optiserve.operator")

LEASE_API = "coordination.k8s.io/v1"
LEASE_SECONDS = 8.0
RENEW_DEADLINE = 6.0
RETRY_SECONDS = 1.5
TAKEOVER_BOUND = LEASE_SECONDS + 2 * RETRY_SECONDS


def new_identity() -> str:
    """The pod's name (its hostname) and a random suffix: a restarted pod is a new holder."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _micro_time(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """One replica's view of the Lease; ``step`` is a single try (blocking: run in a thread)."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self._clock = clock
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self.holder = ""  # who held the Lease at the last look
        self.renewed_at: float | None = None  # our clock when we last held it

    def _meta(self, resource_version: str | None = None) -> Obj:
        meta: Obj = {"name": self.name, "namespace": self.namespace}
        if resource_version is not None:
            meta["resourceVersion"] = resource_version
        return meta

    def step(self) -> bool:
        """Acquire or renew the Lease; whether this replica holds it now."""
        now = self._clock()
        stamp = _micro_time(datetime.now(UTC))
        lease = self.kube.get(LEASE_API, "Lease", self.namespace, self.name)
        ours = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": math.ceil(LEASE_SECONDS),
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": 0,
        }
        if lease is None:
            body = {
                "apiVersion": LEASE_API,
                "kind": "Lease",
                "metadata": self._meta(),
                "spec": ours,
            }
            try:
                self.kube.create(body)
            except KubeError as err:
                if err.status == 409:  # another replica created it first
                    return False
                raise
            return self._held(now)
        spec = lease.get("spec") or {}
        self.holder = str(spec.get("holderIdentity") or "")
        record = (self.holder, spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = float(spec.get("leaseDurationSeconds") or LEASE_SECONDS)
        if self.holder and self.holder != self.identity and now < self._observed_at + duration:
            return False  # someone else holds it and has renewed within its duration
        transitions = int(spec.get("leaseTransitions") or 0)
        if self.holder == self.identity:
            ours["acquireTime"] = spec.get("acquireTime") or stamp
            ours["leaseTransitions"] = transitions
        else:
            ours["leaseTransitions"] = transitions + 1
        version = (lease.get("metadata") or {}).get("resourceVersion")
        body = {"apiVersion": LEASE_API, "kind": "Lease", "metadata": self._meta(version)}
        body["spec"] = ours
        try:
            self.kube.replace(body)
        except KubeError as err:
            if err.status == 409:  # someone wrote it since we read it: not ours this time
                return False
            raise
        return self._held(now)

    def _held(self, now: float) -> bool:
        self.holder = self.identity
        self.renewed_at = now
        return True

    def release(self) -> None:
        """Give the Lease up (graceful shutdown): a standby takes it at its next try."""
        lease = self.kube.get(LEASE_API, "Lease", self.namespace, self.name)
        spec = (lease or {}).get("spec") or {}
        if lease is None or spec.get("holderIdentity") != self.identity:
            return
        released = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1}
        version = (lease.get("metadata") or {}).get("resourceVersion")
        body = {"apiVersion": LEASE_API, "kind": "Lease", "metadata": self._meta(version)}
        body["spec"] = released
        try:
            self.kube.replace(body)
        except KubeError as err:
            LOG.warning("lease %s/%s not released: %s", self.namespace, self.name, err)


async def run_election(
    elector: LeaderElector, leading: asyncio.Event, on_lost: Callable[[], None]
) -> None:
    """Try every RETRY_SECONDS; set ``leading`` while held; ``on_lost`` when leadership ends."""
    while True:
        try:
            held = await asyncio.to_thread(elector.step)
        except Exception as err:  # the API server may be away for a moment: renew later
            LOG.warning("leader election: lease %s not renewed: %s", elector.name, err)
            held = False
        if held and not leading.is_set():
            LOG.info("leader election: %s now leads (lease %s)", elector.identity, elector.name)
            leading.set()
        elif not held and leading.is_set():
            since = elector.renewed_at
            taken = elector.holder not in ("", elector.identity)
            if taken or since is None or time.monotonic() - since > RENEW_DEADLINE:
                LOG.error("leader election: lost the lease %s; stopping", elector.name)
                leading.clear()
                on_lost()
                return
        await asyncio.sleep(RETRY_SECONDS)
