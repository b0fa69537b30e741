"""The child cache filled at a start, from the operator's own paged listings, before any pass.

A pass may trust the cache's "not there" only once every cached kind has been listed since the
start: otherwise a restart would apply again every child not delivered yet (a write per child
of every model). The cache used to be filled by kopf index handlers, since kopf runs no other
handler until every indexed kind is listed. But kopf reaches that point by holding each listed
object, as a full body with its managedFields, in its per-object queue until the last kind is
listed: at a restart with 1,000 models that was all ~4,000 objects at once, most of the
operator's 271 MiB peak, and the heap stayed that size after every model was deleted.

So the startup handler, which kopf runs before it starts any watch, lists each cached kind
itself, a page at a time (``Kube.list_pages``), and keeps each object as the cache keeps
everything (compact JSON without managedFields); kopf's event handlers keep it current from
there (handlers.py), listing included. A child deleted between this listing and kopf's own
one has no DELETED event to drop it: the same gap as a relist after ``410 Gone``, and closed the
same way (kopf's first listing starts a relist sweep, relist.py).

Namespaces as kopf is given them: none is every namespace (one cluster-wide listing a kind);
plain names are listed one by one (a namespaced install may list nothing cluster-wide); with
globs, the namespaces that exist now and match kopf's patterns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from kopf._cogs.structs.references import NamespaceName, match_namespace

from optiserve_operator.child_cache import ChildCache, Obj

# kind -> (apiVersion, plural), e.g. "Deployment" -> ("apps/v1", "deployments").
CachedResources = Mapping[str, tuple[str, str]]


class Lister(Protocol):
    def list_pages(
        self, api_version: str, plural: str, namespace: str | None, label_selector: str
    ) -> Iterable[Sequence[Obj]]: ...


def is_glob(pattern: str) -> bool:
    return any(mark in pattern for mark in "*?!,")


def namespaces_to_list(
    patterns: Sequence[str], existing: Iterable[str] | None = None
) -> Sequence[str | None]:
    """What to list for the operator's namespace patterns: ``[None]`` (cluster-wide) for none,
    else namespace names: the plain ones, or with any glob those of ``existing`` matching."""
    if not patterns:
        return [None]
    if not any(is_glob(p) for p in patterns):
        return sorted(set(patterns))
    if existing is None:
        raise ValueError("namespace globs need the existing namespaces")
    return sorted(
        name
        for name in set(existing)
        if any(match_namespace(NamespaceName(name), pattern) for pattern in patterns)
    )


def fill(
    lister: Lister,
    cache: ChildCache,
    resources: CachedResources,
    label_selector: str,
    namespaces: Sequence[str | None],
) -> dict[str, int]:
    """List every cached kind into ``cache``; how many objects of each kind were stored."""
    stored: dict[str, int] = {}
    for kind, (api_version, plural) in resources.items():
        stored[kind] = 0
        for namespace in namespaces:
            for page in lister.list_pages(api_version, plural, namespace, label_selector):
                for obj in page:
                    cache.store(kind, obj)
                stored[kind] += len(page)
    return stored


def namespace_names(lister: Lister) -> list[str]:
    """The names of the namespaces that exist now (for globs)."""
    return [
        str((obj.get("metadata") or {}).get("name") or "")
        for page in lister.list_pages("v1", "namespaces", None, "")
        for obj in page
    ]
