"""The operator's only door to the API server: a few verbs over plain dicts.

Thin on purpose: get, list, create-or-read, server-side apply (one field manager), delete and
events, built on the ``kubernetes`` client's REST layer so objects stay camelCase dicts that
the pure modules read and render. Synchronous; the controller calls it from worker threads.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, overload
from urllib.parse import quote, urlencode

from kubernetes import client, config

from optiserve.render.kubernetes import FIELD_MANAGER
from optiserve_operator import metrics
from optiserve_operator.child_cache import ChildCache
from optiserve_operator.ratelimit import (
    MAX_THROTTLE_RETRIES,
    TokenBucket,
    throttle_delay,
    transport_retries,
)

Obj = dict[str, Any]

PLURALS = {
    "ConfigMap": "configmaps",
    "Deployment": "deployments",
    "Event": "events",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "HTTPRoute": "httproutes",
    "Ingress": "ingresses",
    "Job": "jobs",
    "Lease": "leases",
    "NetworkPolicy": "networkpolicies",
    "OptimizedModel": "optimizedmodels",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Pod": "pods",
    "ScaledObject": "scaledobjects",
    "Service": "services",
}
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
JSON_PATCH_CONTENT_TYPE = "application/json-patch+json"
# A listing of metadata only (what controller-runtime's metadata informers ask for): names
# without specs, for the relist sweep (relist.py).
METADATA_LIST_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
# Objects a page of a listing carries (list_pages: the child cache's fill at a start, the relist
# sweep's names; kopf's own listings too, handlers.py).
LIST_PAGE = 500

# Reads of these kinds go to etcd (a quorum read). Others are answered from the API server's
# watch cache (resourceVersion=0: no etcd round trip, a fraction of the cost at a thousand
# models), which may be a moment behind: passes are level-based and every change of a child
# brings another pass. The model itself must not be stale (its status is what a pass builds
# on), nor a finished Job's pods (their termination message carries the result), nor a Lease.
FRESH_READS = frozenset({"OptimizedModel", "Pod", "Lease"})
REPORTING_COMPONENT = "optiserve-operator"
# (connect, read) seconds: a hung API server is a transient error, not a hung worker.
REQUEST_TIMEOUT = (10.0, 60.0)
# A resource type the API server does not serve (a CRD not installed: KEDA's ScaledObject, the
# Gateway API's HTTPRoute) is remembered as such this long, instead of asked about in every pass
# of every model; a CRD installed later is seen within this time.
UNSERVED_TTL = 30.0
# A child this operator applied is in flight to the watches' cache for a moment: missing from
# the cache that soon after, it is looked up on the API server instead (not applied again).
IN_FLIGHT_SECONDS = 60.0
# How much of a running optimizer's log a pass reads for its progress: a bounded tail.
LOG_TAIL_LINES = 200
LOG_LIMIT_BYTES = 32 * 1024


class KubeError(RuntimeError):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def resource_path(
    api_version: str, kind: str, namespace: str, name: str | None = None, sub: str | None = None
) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{quote(namespace)}/{PLURALS[kind]}"
    if name is not None:
        path += f"/{quote(name)}"
    if sub is not None:
        path += f"/{sub}"
    return path


class Kube:
    def __init__(
        self,
        api_client: client.ApiClient,
        limiter: TokenBucket | None = None,
        cache: ChildCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api_client
        self.host = socket.gethostname()
        self.limiter = limiter  # every request takes a token (ratelimit.py); None: no limit
        # Reads of the kinds it covers are answered from the watches (child_cache.py).
        self.cache = cache
        self._clock = clock
        # (apiVersion, kind) of a resource type found unserved -> (until when, its 404).
        self._unserved: dict[tuple[str, str], tuple[float, KubeError]] = {}
        # (kind, namespace, name) of cached kinds applied lately -> when (monotonic seconds).
        self._applied: dict[tuple[str, str, str], float] = {}
        self._swept = clock()  # when _sweep last ran

    @classmethod
    def from_environment(
        cls,
        kubeconfig: str | None = None,
        limiter: TokenBucket | None = None,
        cache: ChildCache | None = None,
    ) -> Kube:
        """In-cluster credentials when running in a pod, else the kubeconfig (``KUBECONFIG``)."""
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        configuration = client.Configuration.get_default_copy()
        configuration.retries = transport_retries()
        return cls(client.ApiClient(configuration), limiter, cache)

    @overload
    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        raw: Literal[False] = False,
        accept: str = "application/json",
    ) -> Obj: ...

    @overload
    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        raw: Literal[True],
        accept: str = "application/json",
    ) -> bytes: ...

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        raw: bool = False,
        accept: str = "application/json",
    ) -> Obj | bytes:
        """Every call to the API server. The answer as a JSON object (a bare list as
        ``{"items": [...]}``), or with ``raw`` its bytes as sent (pods/log is text); an error
        status raises ``KubeError`` with the server's reason and message."""
        url = self.api.configuration.host + path
        if query:
            url += "?" + urlencode(dict(query))
        # Also for pods/log, whose text the API server sends under any of its media types but
        # refuses to negotiate as text/plain (406).
        headers = {"Accept": accept, "Content-Type": content_type}
        # Authentication headers (token, refreshed exec credentials) the client would add.
        self.api.update_params_for_auth(headers, [], ["BearerToken"], url, method, body)
        for attempt in range(MAX_THROTTLE_RETRIES + 1):
            if self.limiter is not None:
                metrics.CLIENT_WAIT.inc(self.limiter.acquire())
            response = self.api.call_api(
                method, url, header_params=headers, body=body, _request_timeout=REQUEST_TIMEOUT
            )
            metrics.API_REQUESTS.labels(method, str(response.status)).inc()
            if response.status != 429 or attempt == MAX_THROTTLE_RETRIES:
                break
            # Throttled by the API server: wait as it asks, then again (ratelimit.py).
            retry_after = response.getheader("Retry-After")  # type: ignore[no-untyped-call]
            time.sleep(throttle_delay(retry_after, attempt))
        content: bytes = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status < 300:
            try:
                error: Any = json.loads(content) if content else {}
            except ValueError:  # e.g. "404 page not found" for a resource type with no CRD
                error = {"message": content.decode("utf-8", "replace")[:200]}
            message = error.get("message", "") if isinstance(error, dict) else str(error)
            reason = error.get("reason", "") if isinstance(error, dict) else ""
            raise KubeError(response.status, reason or str(response.reason), str(message))
        if raw:
            return content
        try:
            data: Any = json.loads(content) if content else {}
        except ValueError as err:
            raise KubeError(502, "BadGateway", f"the API server answered no JSON: {err}") from err
        return data if isinstance(data, dict) else {"items": data}

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        """The object, or None when there is none: from the watches' cache for the kinds it
        covers, else from the API server (its watch cache, or etcd for ``FRESH_READS``)."""
        if self.cache is not None and self.cache.covers(kind):
            ref = (kind, namespace, name)
            found = self.cache.get(kind, namespace, name)
            applied = self._applied.get(ref)
            if found is not None or applied is None:
                self._applied.pop(ref, None)  # there (the cache has caught up), or not ours
                return found
            if self._clock() - applied > IN_FLIGHT_SECONDS:
                self._applied.pop(ref, None)
                return None
            # Applied a moment ago and not in the cache yet: its watch event is on the way.
        return self._get_live(api_version, kind, namespace, name)

    def _get_live(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        if self._known_unserved(api_version, kind) is not None:
            return None  # as the API server answers (404) for a type it does not serve
        query = {} if kind in FRESH_READS else {"resourceVersion": "0"}
        try:
            return self._request(
                "GET", resource_path(api_version, kind, namespace, name), query=query
            )
        except KubeError as err:
            self._note_unserved(api_version, kind, err)
            if err.status == 404:
                return None
            raise

    def list(
        self, api_version: str, kind: str, namespace: str, selector: Mapping[str, str]
    ) -> list[Obj]:
        if self.cache is not None and self.cache.covers(kind) and self.cache.lists_by(selector):
            return self.cache.list(kind, namespace, selector)
        unserved = self._known_unserved(api_version, kind)
        if unserved is not None:
            raise unserved
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in sorted(selector.items()))}
        if kind not in FRESH_READS:
            query["resourceVersion"] = "0"
        try:
            found = self._request("GET", resource_path(api_version, kind, namespace), query=query)
        except KubeError as err:
            self._note_unserved(api_version, kind, err)
            raise
        items: list[Obj] = found.get("items") or []
        return items

    def list_names(
        self, api_version: str, plural: str, namespace: str | None, label_selector: str
    ) -> set[tuple[str, str]]:
        """(namespace, name) of every object of ``plural`` (in ``namespace``; None: all) that
        ``label_selector`` selects: a consistent read (from etcd's latest revision, not a watch
        cache's past), metadata only, in pages."""
        pages = self.list_pages(
            api_version, plural, namespace, label_selector, accept=METADATA_LIST_ACCEPT
        )
        return {
            (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            for page in pages
            for meta in (item.get("metadata") or {} for item in page)
        }

    def _known_unserved(self, api_version: str, kind: str) -> KubeError | None:
        """The remembered 404 of a resource type found unserved less than UNSERVED_TTL ago."""
        known = self._unserved.get((api_version, kind))
        if known is None:
            return None
        if self._clock() < known[0]:
            # A new error each time: raising one instance again and again would chain every
            # raise's traceback onto it, and with them every pass's frames and what they held
            # (the model, its spec and status), for as long as the type stays unserved.
            error = known[1]
            return KubeError(error.status, error.reason, error.message)
        self._unserved.pop((api_version, kind), None)
        return None

    def _note_unserved(self, api_version: str, kind: str, err: KubeError) -> None:
        # A missing object is a 404 with a Status of reason NotFound; a missing resource type
        # is a bare "404 page not found" from the API server's router.
        if err.status == 404 and err.reason != "NotFound":
            now = self._clock()
            self._sweep(now)
            # A copy never raised: no traceback, so no pass's frames are kept.
            copy = KubeError(err.status, err.reason, err.message)
            self._unserved[(api_version, kind)] = (now + UNSERVED_TTL, copy)

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
        now = self._clock()
        self._sweep(now)
        self._applied[(kind, meta["namespace"], meta["name"])] = now

    def _sweep(self, now: float) -> None:
        """Forgets what expired (a child never read back: its model went; an unserved type
        not asked about again), at most once per IN_FLIGHT_SECONDS: both maps hold only what
        the last two minutes wrote, however many models came and went."""
        if now - self._swept < IN_FLIGHT_SECONDS:
            return
        self._swept = now
        for ref, when in list(self._applied.items()):
            if now - when > IN_FLIGHT_SECONDS:
                self._applied.pop(ref, None)
        for key, (until, _) in list(self._unserved.items()):
            if now >= until:
                self._unserved.pop(key, None)

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
        self._applied.pop((kind, namespace, name), None)
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

    def list_pages(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        label_selector: str,
        accept: str = "application/json",
    ) -> Iterator[Sequence[Obj]]:
        """Every object of ``plural`` (in ``namespace``; None: all namespaces) that
        ``label_selector`` selects, ``LIST_PAGE`` at a time: a consistent listing (one
        snapshot across pages), never all of it in memory at once; each item with its kind and
        apiVersion, as a GET answers it. ``accept``: another representation (metadata only)."""
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        scope = "" if namespace is None else f"/namespaces/{quote(namespace)}"
        query = {"labelSelector": label_selector, "limit": str(LIST_PAGE)}
        while True:
            page = self._request("GET", f"{prefix}{scope}/{plural}", query=query, accept=accept)
            items: list[Obj] = page.get("items") or []
            # A list's items carry no kind and apiVersion (the list does): as a GET's would.
            kind = str(page.get("kind") or "").removesuffix("List")
            for item in items:
                item.setdefault("apiVersion", page.get("apiVersion") or api_version)
                if kind:
                    item.setdefault("kind", kind)
            yield items
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return
            query["continue"] = token


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs: Sequence[Mapping[str, Any]] = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)
