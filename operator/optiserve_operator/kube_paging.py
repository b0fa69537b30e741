"""Paged, consistent listings across a namespace or all of them: the start's fill of the child
cache (cache_fill.py) and the relist sweep's names (relist.py) read through them.

Each page is ``LIST_PAGE`` objects and the continue token the API server hands out, so a
thousand models' children are never in memory at once, and every page is of the same snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from urllib.parse import quote

from optiserve_operator.kube_transport import KubeTransport, Obj, api_prefix

# A listing of metadata only (what controller-runtime's metadata informers ask for): names
# without specs, for the relist sweep (relist.py).
METADATA_LIST_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
# Objects a page of a listing carries (list_pages: the child cache's fill at a start, the relist
# sweep's names; kopf's own listings too, handlers.py).
LIST_PAGE = 500


class PagedListings(KubeTransport):
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
        prefix = api_prefix(api_version)
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
