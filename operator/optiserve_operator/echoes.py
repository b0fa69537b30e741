"""Which watch events of an OptimizedModel are worth a reconcile, and how soon.

Echoes: every status the operator writes comes back as a MODIFIED event, which would cost
each model one more pass that finds nothing to do (a third of all passes in a burst of
rollouts). The controller records the resourceVersion each status write returned, with a
fingerprint of what the pass read (generation, labels, annotations, finalizers, deletion);
the event that carries exactly that version and fingerprint is our own write coming back and
is dropped. Anything written after it has another version; a change made between the pass's
read and its write (which kopf may fold into the same event) changes the fingerprint: both are
reconciled as usual.

Edits: an event whose generation is ahead of the status' observedGeneration, on a model the
operator has reconciled before, is a user waiting for a change: it goes to the work queue's
urgent lane. New models (no observedGeneration yet) queue normally, so a restart's listing of
a thousand models does not push an edit to the back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

Key = tuple[str, str]


class OwnWrites:
    """resourceVersions of the status writes of the workers (threads) for the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[Key, tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._versions)

    def record(self, key: Key, resource_version: str | None, read: Mapping[str, Any]) -> None:
        """A status write at ``resource_version`` by a pass that had read ``read``."""
        if resource_version:
            with self._lock:
                self._versions[key] = (resource_version, fingerprint(read))

    def is_echo(self, key: Key, body: Mapping[str, Any]) -> bool:
        """Whether the event ``body`` is our own last write, nothing else (then forgotten)."""
        version = (body.get("metadata") or {}).get("resourceVersion")
        with self._lock:
            if version and self._versions.get(key) == (version, fingerprint(body)):
                del self._versions[key]
                return True
            return False

    def forget(self, key: Key) -> None:
        with self._lock:
            self._versions.pop(key, None)


def is_edit(body: Mapping[str, Any]) -> bool:
    """A spec change of a model the operator has already reconciled at an older generation."""
    observed = int((body.get("status") or {}).get("observedGeneration") or 0)
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    # observedGeneration 0 (the CRD's default) is a model no pass has finished yet.
    return observed >= 1 and generation > observed


def fingerprint(obj: Mapping[str, Any]) -> str:
    """What a pass decides from besides status and children: the spec (by generation) and the
    metadata a user may change (the retry annotation, labels) or the API server sets."""
    meta = obj.get("metadata") or {}
    return json.dumps(
        [
            meta.get("generation"),
            meta.get("labels") or {},
            meta.get("annotations") or {},
            meta.get("finalizers") or [],
            meta.get("deletionTimestamp"),
        ],
        sort_keys=True,
        default=str,
    )
