"""The operator's door to the API server: a few verbs over plain dicts.

Thin on purpose: get, list, create-or-read, server-side apply (one field manager), delete and
events, over the ``kubernetes`` client's REST layer (kube_transport.py: rate limits, 429s,
errors) so objects stay camelCase dicts that the pure modules read and render; paged listings
are kube_paging.py's, what it remembers between requests kube_memo.py's. Reads of the kinds
the watches cache come from the cache (child_cache.py). Synchronous; the controller calls it
from worker threads.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from optiserve.render.kubernetes import FIELD_MANAGER
from optiserve_operator.child_cache import ChildCache
from optiserve_operator.kube_memo import KubeMemo
from optiserve_operator.kube_paging import PagedListings
from optiserve_operator.kube_transport import (
    KubeError,
    Obj,
    api_client_from_environment,
    resource_path,
)
from optiserve_operator.ratelimit import TokenBucket

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
JSON_PATCH_CONTENT_TYPE = "application/json-patch+json"
# Reads of these kinds go to etcd (a quorum read). Others are answered from the API server's
# watch cache (resourceVersion=0: no etcd round trip, a fraction of the cost at a thousand
# models), which may be a moment behind: passes are level-based and every change of a child
# brings another pass. The model itself must not be stale (its status is what a pass builds
# on), nor a finished Job's pods (their termination message carries the result), nor a Lease.
FRESH_READS = frozenset({"OptimizedModel", "Pod", "Lease"})
REPORTING_COMPONENT = "optiserve-operator"
# How much of a running optimizer's log a pass reads for its progress: a bounded tail.
LOG_TAIL_LINES = 200
LOG_LIMIT_BYTES = 32 * 1024


class Kube(PagedListings):
    def __init__(
        self,
        api_client: client.ApiClient,
        limiter: TokenBucket | None = None,
        cache: ChildCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(api_client, limiter)
        self.host = socket.gethostname()
        # Reads of the kinds it covers are answered from the watches (child_cache.py).
        self.cache = cache
        # Unserved resource types and children in flight to the cache (kube_memo.py).
        self.memo = KubeMemo(clock)

    @classmethod
    def from_environment(
        cls,
        kubeconfig: str | None = None,
        limiter: TokenBucket | None = None,
        cache: ChildCache | None = None,
    ) -> Kube:
        """In-cluster credentials when running in a pod, else the kubeconfig (``KUBECONFIG``)."""
        return cls(api_client_from_environment(kubeconfig), limiter, cache)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        """The object, or None when there is none: from the watches' cache for the kinds it
        covers, else from the API server (its watch cache, or etcd for ``FRESH_READS``)."""
        if self.cache is not None and self.cache.covers(kind):
            found = self.cache.get(kind, namespace, name)
            if not self.memo.in_flight((kind, namespace, name), cached=found is not None):
                return found
            # Applied a moment ago and not in the cache yet: its watch event is on the way.
        return self._get_live(api_version, kind, namespace, name)

    def _get_live(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        if self.memo.known_unserved(api_version, kind) is not None:
            return None  # as the API server answers (404) for a type it does not serve
        query = {} if kind in FRESH_READS else {"resourceVersion": "0"}
        try:
            return self._request(
                "GET", resource_path(api_version, kind, namespace, name), query=query
            )
        except KubeError as err:
            self.memo.note_unserved(api_version, kind, err)
            if err.status == 404:
                return None
            raise

    def list(
        self, api_version: str, kind: str, namespace: str, selector: Mapping[str, str]
    ) -> list[Obj]:
        if self.cache is not None and self.cache.covers(kind) and self.cache.lists_by(selector):
            return self.cache.list(kind, namespace, selector)
        unserved = self.memo.known_unserved(api_version, kind)
        if unserved is not None:
            raise unserved
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in sorted(selector.items()))}
        if kind not in FRESH_READS:
            query["resourceVersion"] = "0"
        try:
            found = self._request("GET", resource_path(api_version, kind, namespace), query=query)
        except KubeError as err:
            self.memo.note_unserved(api_version, kind, err)
            raise
        items: list[Obj] = found.get("items") or []
        return items

    def create_or_read(self, manifest: Obj) -> tuple[Obj, bool]:
        """(the object, whether this call created it). An existing object is read, not
        changed: Jobs are immutable, and their deterministic name says they are the same."""
        meta = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], manifest["kind"], meta["namespace"])
        try:
            created = self._request(
                "POST", path, body=manifest, query={"fieldManager": FIELD_MANAGER}
            )
            self._in_flight(manifest)
            return created, True
        except KubeError as err:
            if err.status != 409:
                raise
        # From the API server: an object another pass created a moment ago may not be in the
        # watches' cache yet.
        existing = self._get_live(
            manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
        )
        if existing is None:  # deleted between the two calls; the next pass creates it
            raise KubeError(409, "Conflict", f"{meta['name']} exists and vanished")
        return existing, False

    def create(self, manifest: Obj) -> Obj:
        """POST; a 409 (it exists) is the caller's to handle."""
        meta = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], manifest["kind"], meta["namespace"])
        return self._request("POST", path, body=manifest)

    def replace(self, manifest: Obj) -> Obj:
        """PUT, conditional on ``metadata.resourceVersion`` when given (409 if it moved on)."""
        meta = manifest["metadata"]
        path = resource_path(
            manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
        )
        return self._request("PUT", path, body=manifest)

    def apply(self, manifest: Obj, subresource: str | None = None, *, dry_run: bool = False) -> Obj:
        """Server-side apply with field manager ``optiserve``; takes over conflicting fields.

        ``dry_run``: the API server validates and admits the object (admission policies
        included) and stores nothing, so a child it would refuse is known before it is needed.
        """
        meta = manifest["metadata"]
        path = resource_path(
            manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"], subresource
        )
        query = {"fieldManager": FIELD_MANAGER, "force": "true"}
        if dry_run:
            query["dryRun"] = "All"
        applied = self._request(
            "PATCH", path, body=manifest, query=query, content_type=APPLY_CONTENT_TYPE
        )
        if not dry_run and subresource is None:
            self._in_flight(manifest)
        return applied

    def _in_flight(self, manifest: Obj) -> None:
        """Note a child just written, whose watch event may not have reached the cache."""
        kind, meta = manifest["kind"], manifest["metadata"]
        if self.cache is None or not self.cache.covers(kind):
            return
        self.memo.note_applied((kind, meta["namespace"], meta["name"]))

    def json_patch(
        self, api_version: str, kind: str, namespace: str, name: str, ops: Sequence[Obj]
    ) -> Obj:
        """An RFC 6902 JSON patch (for list entries another field manager owns)."""
        return self._request(
            "PATCH",
            resource_path(api_version, kind, namespace, name),
            body=[*ops],
            query={"fieldManager": FIELD_MANAGER},
            content_type=JSON_PATCH_CONTENT_TYPE,
        )

    def pod_log(self, namespace: str, pod: str, container: str) -> str:
        """The last ``LOG_TAIL_LINES`` lines (at most ``LOG_LIMIT_BYTES``) of a container's log."""
        raw = self._request(
            "GET",
            resource_path("v1", "Pod", namespace, pod, "log"),
            query={
                "container": container,
                "tailLines": str(LOG_TAIL_LINES),
                "limitBytes": str(LOG_LIMIT_BYTES),
            },
            raw=True,
        )
        return raw[-LOG_LIMIT_BYTES:].decode("utf-8", "replace")

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        self.memo.forget_applied((kind, namespace, name))
        try:
            self._request("DELETE", resource_path(api_version, kind, namespace, name), body=body)
        except KubeError as err:
            if err.status != 404:
                raise

    def emit_event(self, involved: Obj, event_type: str, reason: str, message: str) -> None:
        """A core/v1 Event about ``involved`` (apiVersion, kind, name, namespace, uid)."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # The legacy (core/v1) shape: no eventTime, so no series/action/reporting rules apply.
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{involved['name']}.",
                "namespace": involved["namespace"],
            },
            "involvedObject": dict(involved),
            "type": event_type,
            "reason": reason,
            "message": message,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "source": {"component": REPORTING_COMPONENT, "host": self.host[:128]},
        }
        self._request("POST", resource_path("v1", "Event", involved["namespace"]), body=event)


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs: Sequence[Mapping[str, Any]] = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)
