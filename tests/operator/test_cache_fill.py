"""The child cache filled at a start from paged listings (optiserve_operator.cache_fill), and
``Kube.list_pages`` against a small server that pages as the API server does (limit,
continue)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from optiserve_operator import cache_fill
from optiserve_operator.child_cache import ChildCache
from optiserve_operator.kube import Kube

MODEL = "optiserve.io/model"
OURS = "app.kubernetes.io/managed-by=optiserve"


def obj(kind: str, namespace: str, name: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MODEL: name.split("-")[0], "app.kubernetes.io/managed-by": "optiserve"},
            "managedFields": [{"manager": "optiserve"}],
        },
    }


class PagingServer(BaseHTTPRequestHandler):
    """``path`` -> the objects a listing of it answers, ``page`` at a time."""

    listings: dict[str, list[dict[str, Any]]] = {}
    requests: list[tuple[str, dict[str, list[str]]]] = []
    page = 2

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        type(self).requests.append((url.path, query))
        items = self.listings.get(url.path, [])
        start = int(query.get("continue", ["0"])[0])
        limit = int(query.get("limit", [str(len(items))])[0])
        end = start + limit
        meta = {"continue": str(end)} if end < len(items) else {}
        kind = items[0]["kind"] + "List" if items and "kind" in items[0] else "List"
        # As the API server answers: kind and apiVersion on the list, not on its items.
        listed = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
        page = {"kind": kind, "apiVersion": "apps/v1", "metadata": meta, "items": listed[start:end]}
        body = json.dumps(page).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def server() -> Iterator[tuple[Kube, type[PagingServer]]]:
    handler = type("Handler", (PagingServer,), {"listings": {}, "requests": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield Kube(client.ApiClient(configuration)), handler
    httpd.shutdown()


def test_list_pages_follows_continue_tokens_with_the_selector(
    server: tuple[Kube, type[PagingServer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    kube, api = server
    monkeypatch.setattr("optiserve_operator.kube_paging.LIST_PAGE", 2)
    api.listings["/apis/apps/v1/deployments"] = [
        obj("Deployment", "ml", f"m{i}-triton") for i in range(5)
    ]
    pages = list(kube.list_pages("apps/v1", "deployments", None, OURS))
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [d["metadata"]["name"] for p in pages for d in p] == [f"m{i}-triton" for i in range(5)]
    # Each item as a GET would answer it: a child the pass compares with its manifest.
    assert {(d["kind"], d["apiVersion"]) for p in pages for d in p} == {("Deployment", "apps/v1")}
    assert [q.get("continue") for _, q in api.requests] == [None, ["2"], ["4"]]
    assert all(q["labelSelector"] == [OURS] and q["limit"] == ["2"] for _, q in api.requests)
    # A namespace is listed at its own path; the core group under /api/v1.
    list(kube.list_pages("v1", "services", "ml", OURS))
    assert api.requests[-1][0] == "/api/v1/namespaces/ml/services"


def test_fill_stores_every_listed_child_of_every_kind_and_namespace(
    server: tuple[Kube, type[PagingServer]],
) -> None:
    kube, api = server
    api.listings["/apis/apps/v1/namespaces/a/deployments"] = [obj("Deployment", "a", "m1-triton")]
    api.listings["/apis/apps/v1/namespaces/b/deployments"] = [
        obj("Deployment", "b", "m2-triton"),
        obj("Deployment", "b", "m3-triton"),
    ]
    api.listings["/api/v1/namespaces/b/services"] = [obj("Service", "b", "m2-triton")]
    cache = ChildCache(["Deployment", "Service"])
    resources = {"Deployment": ("apps/v1", "deployments"), "Service": ("v1", "services")}
    stored = cache_fill.fill(kube, cache, resources, OURS, ["a", "b"])
    assert stored == {"Deployment": 3, "Service": 1}
    assert len(cache) == 4
    found = cache.get("Deployment", "b", "m3-triton")
    assert found is not None and "managedFields" not in found["metadata"]
    assert [s["metadata"]["name"] for s in cache.list("Service", "b", {MODEL: "m2"})] == [
        "m2-triton"
    ]
    assert cache.get("Service", "a", "m2-triton") is None


def test_the_namespaces_listed_follow_the_operators_patterns() -> None:
    assert cache_fill.namespaces_to_list(()) == [None]  # cluster-wide: one listing a kind
    assert cache_fill.namespaces_to_list(("ml", "ai", "ml")) == ["ai", "ml"]
    existing = ["ml-prod", "ml-dev", "ml-pr-1", "default"]
    assert cache_fill.namespaces_to_list(("ml-*",), existing) == ["ml-dev", "ml-pr-1", "ml-prod"]
    # kopf's pattern syntax: exclusions, several globs in one pattern.
    assert cache_fill.namespaces_to_list(("ml-*,!*-pr-*",), existing) == ["ml-dev", "ml-prod"]
    assert cache_fill.namespaces_to_list(("default", "ml-d?v"), existing) == ["default", "ml-dev"]
    with pytest.raises(ValueError):
        cache_fill.namespaces_to_list(("ml-*",))


def test_namespace_names_for_globs(server: tuple[Kube, type[PagingServer]]) -> None:
    kube, api = server
    api.listings["/api/v1/namespaces"] = [
        {"metadata": {"name": "ml"}},
        {"metadata": {"name": "default"}},
    ]
    assert cache_fill.namespace_names(kube) == ["ml", "default"]
