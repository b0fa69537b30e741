"""The operator's children as its watches last delivered them: reads without a request.

A reconcile pass reads a model's Deployment, Service, budget, autoscaler, NetworkPolicy, Jobs,
spec ConfigMaps and Ingress. Asked of the API server, that was about a dozen requests a pass,
most answering "not found", and at a thousand models the requests (and the client-side rate
limit they share) were what a burst waited on. kopf already watches these kinds (only objects
labelled ``managed-by: optiserve``, handlers.py); what each watch event carries is kept here, as
an informer's store does in controller-runtime, and ``Kube.get`` / ``Kube.list`` answer from it.

Why absence can be trusted: the start lists every cached kind into the store before kopf
starts any watch, so before any model is queued (cache_fill.py). A child written a moment ago
may not be here yet: a pass then sees it missing or older, and its watch event brings another
pass (level-based, as before); an apply is never skipped on a miss (the controller reads the
live object then).

A relist (a watch closed with 410 Gone, listed afresh) reports what is there, never what went:
an object deleted in the gap (or between the start's listing and kopf's) has no DELETED event.
``sweep`` drops it against a listing of the operator's own (relist.py), as an informer replaces
its store with each listing.

Memory: each object is kept as its compact JSON without ``managedFields`` (a few KiB), not as
Python dicts (ten times that), and decoded on each read.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from optiserve.render.kubernetes import LABEL_MODEL

Obj = dict[str, Any]
# (kind, namespace, name)
Ref = tuple[str, str, str]


class ChildCache:
    """Thread-safe: kopf's event loop stores, the workers' threads read."""

    def __init__(self, kinds: Iterable[str]) -> None:
        self.kinds = frozenset(kinds)
        self._lock = threading.Lock()
        self._objects: dict[Ref, bytes] = {}
        # (kind, namespace, model label) -> names: what a pass lists by the model's label.
        self._by_model: dict[tuple[str, str, str], set[str]] = {}
        self._model_of: dict[Ref, str] = {}
        # When each object was stored (a counter): what a sweep may judge by an older listing.
        self._stamps: dict[Ref, int] = {}
        self._stores = 0

    def __len__(self) -> int:
        return len(self._objects)

    def covers(self, kind: str) -> bool:
        return kind in self.kinds

    def store(self, kind: str, body: Mapping[str, Any]) -> None:
        """The object as a watch event delivered it (ADDED, MODIFIED, or listed)."""
        meta = body.get("metadata") or {}
        ref = (kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        slim = {key: value for key, value in body.items() if key != "metadata"}
        slim["metadata"] = {key: value for key, value in meta.items() if key != "managedFields"}
        raw = json.dumps(slim, separators=(",", ":")).encode()
        model = str((meta.get("labels") or {}).get(LABEL_MODEL) or "")
        with self._lock:
            self._unindex(ref)
            self._objects[ref] = raw
            self._stores += 1
            self._stamps[ref] = self._stores
            if model:
                self._model_of[ref] = model
                self._by_model.setdefault((kind, ref[1], model), set()).add(ref[2])

    def drop(self, kind: str, namespace: str, name: str) -> None:
        """Deleted, or no longer selected (its ``managed-by`` label removed)."""
        ref = (kind, namespace, name)
        with self._lock:
            self._unindex(ref)
            self._objects.pop(ref, None)
            self._stamps.pop(ref, None)

    def mark(self) -> int:
        """Taken before a listing is requested: ``sweep`` judges only what was stored before."""
        with self._lock:
            return self._stores

    def namespaces(self, kind: str) -> set[str]:
        """The namespaces that hold cached objects of ``kind``."""
        with self._lock:
            return {ns for k, ns, _ in self._objects if k == kind}

    def sweep(
        self, kind: str, listed: set[tuple[str, str]], mark: int, namespaces: set[str] | None
    ) -> list[Obj]:
        """Drop each object of ``kind`` (in ``namespaces``; None: all) stored before ``mark``
        and absent from ``listed`` ((namespace, name) of a consistent listing requested after
        ``mark``): it was deleted, or left the selection, since it was stored. Returns them.

        An object stored after the mark is kept whatever the listing says: its event is newer
        than the listing may be."""
        gone: list[Obj] = []
        with self._lock:
            stale = [
                ref
                for ref, stamp in self._stamps.items()
                if ref[0] == kind
                and stamp <= mark
                and (namespaces is None or ref[1] in namespaces)
                and (ref[1], ref[2]) not in listed
            ]
            for ref in stale:
                gone.append(json.loads(self._objects.pop(ref)))
                self._stamps.pop(ref, None)
                self._unindex(ref)
        return gone

    def _unindex(self, ref: Ref) -> None:
        model = self._model_of.pop(ref, None)
        if model is None:
            return
        key = (ref[0], ref[1], model)
        names = self._by_model.get(key)
        if names is not None:
            names.discard(ref[2])
            if not names:
                del self._by_model[key]

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        with self._lock:
            raw = self._objects.get((kind, namespace, name))
        if raw is None:
            return None
        found: Obj = json.loads(raw)
        return found

    def lists_by(self, selector: Mapping[str, str]) -> bool:
        """Whether ``list`` can answer this selector (it must name the model)."""
        return bool(selector.get(LABEL_MODEL))

    def list(self, kind: str, namespace: str, selector: Mapping[str, str]) -> list[Obj]:
        """The objects of ``kind`` whose labels include ``selector`` (which names the model)."""
        model = selector[LABEL_MODEL]
        with self._lock:
            names = sorted(self._by_model.get((kind, namespace, model), ()))
            raws = [self._objects[(kind, namespace, n)] for n in names]
        found = []
        for raw in raws:
            obj: Obj = json.loads(raw)
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if all(labels.get(k) == v for k, v in selector.items()):
                found.append(obj)
        return found
