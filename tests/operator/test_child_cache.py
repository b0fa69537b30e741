"""Reads from the watches' cache (optiserve_operator.child_cache) and how ``Kube`` uses it.

``Kube`` talks HTTP to a small local server that answers as the API server does: a Status of
reason NotFound for a missing object, a bare "404 page not found" for a resource type it does
not serve (a CRD not installed). The whole path on the real control plane is in
tests/e2e/test_scale.py (and benchmarks/scale_bench.py counts the requests).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from optiserve_operator import handlers
from optiserve_operator.child_cache import ChildCache
from optiserve_operator.kube import Kube
from optiserve_operator.kube_memo import IN_FLIGHT_SECONDS, UNSERVED_TTL
from optiserve_operator.kube_transport import KubeError

MODEL = "optiserve.io/model"


def child(kind: str, name: str, model: str = "digits", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": {MODEL: model, "app.kubernetes.io/component": "serving"},
            "managedFields": [{"manager": "optiserve", "fieldsV1": {"f:spec": {}}}],
        },
        **extra,
    }


def test_stored_objects_read_back_without_managed_fields() -> None:
    cache = ChildCache(["Service", "Deployment"])
    cache.store("Service", child("Service", "digits-triton", spec={"ports": [{"port": 8000}]}))
    found = cache.get("Service", "ml", "digits-triton")
    assert found is not None
    assert found["spec"] == {"ports": [{"port": 8000}]}
    assert "managedFields" not in found["metadata"]
    assert found["metadata"]["labels"][MODEL] == "digits"
    # Another kind, namespace or name is not it.
    assert cache.get("Deployment", "ml", "digits-triton") is None
    assert cache.get("Service", "other", "digits-triton") is None
    # A reader's copy is its own: changing it changes nothing stored.
    found["spec"]["ports"] = []
    assert cache.get("Service", "ml", "digits-triton")["spec"]["ports"] == [{"port": 8000}]  # type: ignore[index]


def test_a_newer_event_replaces_and_a_deletion_removes() -> None:
    cache = ChildCache(["Deployment"])
    cache.store("Deployment", child("Deployment", "d", status={"readyReplicas": 0}))
    cache.store("Deployment", child("Deployment", "d", status={"readyReplicas": 1}))
    assert cache.get("Deployment", "ml", "d")["status"] == {"readyReplicas": 1}  # type: ignore[index]
    assert len(cache) == 1
    cache.drop("Deployment", "ml", "d")
    assert cache.get("Deployment", "ml", "d") is None
    assert cache.list("Deployment", "ml", {MODEL: "digits"}) == []
    assert len(cache) == 0
    cache.drop("Deployment", "ml", "d")  # a second deletion event is harmless


def test_lists_by_the_model_label_and_the_rest_of_the_selector() -> None:
    cache = ChildCache(["Job"])
    cache.store("Job", child("Job", "digits-a"))
    cache.store("Job", child("Job", "digits-b"))
    cache.store("Job", child("Job", "other-a", model="other"))
    job = child("Job", "digits-cleanup")
    job["metadata"]["labels"]["app.kubernetes.io/component"] = "cleanup"
    cache.store("Job", job)
    names = [j["metadata"]["name"] for j in cache.list("Job", "ml", {MODEL: "digits"})]
    assert names == ["digits-a", "digits-b", "digits-cleanup"]
    selector = {MODEL: "digits", "app.kubernetes.io/component": "serving"}
    assert [j["metadata"]["name"] for j in cache.list("Job", "ml", selector)] == [
        "digits-a",
        "digits-b",
    ]
    # A relabelled object moves to its new model's list.
    cache.store("Job", child("Job", "digits-b", model="other"))
    assert [j["metadata"]["name"] for j in cache.list("Job", "ml", {MODEL: "other"})] == [
        "digits-b",
        "other-a",
    ]
    assert not cache.lists_by({"job-name": "x"}) and cache.lists_by({MODEL: "digits"})


class ApiServer(BaseHTTPRequestHandler):
    """Serves Services by name; ``keda.sh`` is not served at all (no CRD)."""

    objects: dict[str, dict[str, Any]] = {}
    paths: list[str] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        path = self.path.split("?")[0]
        if path.startswith("/apis/keda.sh/"):
            self._send(404, b"404 page not found", "text/plain")
        elif path.endswith("/services"):  # a list
            self._send(200, json.dumps({"kind": "ServiceList", "items": []}).encode())
        elif path in self.objects:
            self._send(200, json.dumps(self.objects[path]).encode())
        else:
            status = {"kind": "Status", "code": 404, "reason": "NotFound", "message": "nope"}
            self._send(404, json.dumps(status).encode())

    def do_PATCH(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._send(200, self.rfile.read(length))

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def api() -> Iterator[tuple[str, type[ApiServer]]]:
    handler = type("Handler", (ApiServer,), {"objects": {}, "paths": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def kube_for(url: str, cache: ChildCache | None = None, clock: Clock | None = None) -> Kube:
    configuration = client.Configuration()
    configuration.host = url
    return Kube(client.ApiClient(configuration), cache=cache, clock=clock or Clock())


def test_covered_kinds_are_read_from_the_cache_others_from_the_api_server(
    api: tuple[str, type[ApiServer]],
) -> None:
    url, server = api
    server.objects["/api/v1/namespaces/ml/services/live"] = child("Service", "live")
    cache = ChildCache(["Service"])
    cache.store("Service", child("Service", "cached"))
    kube = kube_for(url, cache)
    assert kube.get("v1", "Service", "ml", "cached") is not None
    # Absent from the cache: absent, without asking (the watch would have delivered it).
    assert kube.get("v1", "Service", "ml", "live") is None
    assert [s["metadata"]["name"] for s in kube.list("v1", "Service", "ml", {MODEL: "digits"})] == [
        "cached"
    ]
    assert server.paths == []
    # A kind the cache does not cover, and a selector it cannot answer, go to the server.
    assert kube.get("v1", "ConfigMap", "ml", "x") is None
    kube.list("v1", "Service", "ml", {"job-name": "x"})
    assert len(server.paths) == 2


def test_a_child_applied_a_moment_ago_is_asked_for_until_the_cache_has_it(
    api: tuple[str, type[ApiServer]],
) -> None:
    url, server = api
    live = child("Service", "live")
    server.objects["/api/v1/namespaces/ml/services/live"] = live
    clock = Clock()
    cache = ChildCache(["Service"])
    kube = kube_for(url, cache, clock)
    kube.apply(live)
    server.paths.clear()
    # Its watch event is on the way: the API server says it exists (no second apply).
    assert kube.get("v1", "Service", "ml", "live") is not None
    assert len(server.paths) == 1
    # Once the cache has it, the cache answers, and keeps answering after a deletion.
    cache.store("Service", live)
    assert kube.get("v1", "Service", "ml", "live") is not None
    cache.drop("Service", "ml", "live")
    assert kube.get("v1", "Service", "ml", "live") is None
    assert len(server.paths) == 1
    # An event that never comes (the watch was re-listed) is waited for a bounded time.
    kube.apply(live)
    clock.now += IN_FLIGHT_SECONDS + 1
    server.paths.clear()
    assert kube.get("v1", "Service", "ml", "live") is None
    assert server.paths == []
    # Neither a dry run nor a status write is a child in flight.
    kube.apply(live, dry_run=True)
    kube.apply(live, subresource="status")
    assert kube.get("v1", "Service", "ml", "live") is None
    assert server.paths == []


def test_an_unserved_resource_type_is_asked_about_once_per_ttl(
    api: tuple[str, type[ApiServer]],
) -> None:
    url, server = api
    clock = Clock()
    kube = kube_for(url, clock=clock)
    for _ in range(5):
        assert kube.get("keda.sh/v1alpha1", "ScaledObject", "ml", "digits") is None
        with pytest.raises(KubeError) as raised:
            kube.list("keda.sh/v1alpha1", "ScaledObject", "ml", {MODEL: "digits"})
        assert raised.value.status == 404
    assert len(server.paths) == 1
    # A missing object of a served type is not remembered: asked every time.
    for _ in range(3):
        assert kube.get("v1", "ConfigMap", "ml", "x") is None
    assert len(server.paths) == 4
    # What is remembered keeps no pass's frames: no traceback, and each raise is a new error
    # (one instance raised again and again chains every raise's traceback onto it).
    remembered = kube.memo.unserved[("keda.sh/v1alpha1", "ScaledObject")][1]
    assert remembered.__traceback__ is None
    raised_twice = []
    for _ in range(2):
        with pytest.raises(KubeError) as again:
            kube.list("keda.sh/v1alpha1", "ScaledObject", "ml", {MODEL: "digits"})
        raised_twice.append(again.value)
    assert raised_twice[0] is not raised_twice[1] and remembered.__traceback__ is None
    # Once the time is up the server is asked again (a CRD installed meanwhile is seen).
    clock.now += UNSERVED_TTL + 1
    assert kube.get("keda.sh/v1alpha1", "ScaledObject", "ml", "digits") is None
    assert len(server.paths) == 5


def test_what_kube_remembers_per_child_and_type_is_forgotten_once_expired(
    api: tuple[str, type[ApiServer]],
) -> None:
    url, server = api
    clock = Clock()
    kube = kube_for(url, ChildCache(["Service"]), clock)
    # Children of models deleted since (their watch events never read back), and a type
    # found unserved once and never asked about again.
    for index in range(300):
        kube.apply(child("Service", f"gone-{index}", model=f"gone-{index}"))
    assert kube.get("keda.sh/v1alpha1", "ScaledObject", "ml", "digits") is None
    assert (len(kube.memo.applied), len(kube.memo.unserved)) == (300, 1)
    # Within the in-flight window nothing is dropped, however many there are.
    clock.now += IN_FLIGHT_SECONDS / 2
    kube.apply(child("Service", "fresh"))
    assert len(kube.memo.applied) == 301
    # Past it, the next write sweeps: only what is still in flight stays.
    clock.now += IN_FLIGHT_SECONDS / 2 + 1
    kube.apply(child("Service", "newest"))
    assert set(kube.memo.applied) == {("Service", "ml", "fresh"), ("Service", "ml", "newest")}
    assert kube.memo.unserved == {}
    # The fresh child is still looked up on the server (its event may be on the way).
    server.paths.clear()
    assert kube.get("v1", "Service", "ml", "fresh") is None
    assert len(server.paths) == 1


def test_the_cached_kinds_are_the_watched_children_and_all_are_server_side_selected() -> None:
    plurals = {p for _, _, p in (*handlers.CHILD_RESOURCES, *handlers.READ_ONLY_CHILD_RESOURCES)}
    assert plurals == set(handlers.CACHED_KINDS)
    assert set(handlers.Runtime(settings=None).children.kinds) == set(  # type: ignore[arg-type]
        handlers.CACHED_KINDS.values()
    )


def test_freed_memory_is_released_once_after_each_burst() -> None:
    from optiserve_operator import memory

    burst = handlers.BurstEnd(0)
    # Checked every interval with (passes so far, keys queued).
    assert [burst.over(0, 0), burst.over(0, 0)] == [False, False]  # idle from the start
    assert burst.over(40, 60) is False  # a burst ...
    assert burst.over(90, 10) is False  # ... still going
    assert burst.over(100, 0) is False  # the last passes in this interval
    assert burst.over(100, 0) is True  # a whole quiet interval: released
    assert [burst.over(100, 0), burst.over(100, 0)] == [False, False]  # once
    assert burst.over(100, 3) is False  # keys queued, no pass yet (a worker will come)
    assert burst.over(101, 0) is False
    assert burst.over(101, 0) is True  # one more pass is a (small) burst too
    # The real release runs here (glibc): it collects and trims without error.
    assert isinstance(memory.release_memory(), bool)
