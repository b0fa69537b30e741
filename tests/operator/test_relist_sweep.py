"""The relist sweep (optiserve_operator.relist): what a relist after 410 Gone cannot report gone
is dropped from the child cache and its model queued. The real 410s, on the local control
plane, are tests/e2e/test_watch_gone.py."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from optiserve_operator.child_cache import ChildCache
from optiserve_operator.kube import Kube
from optiserve_operator.relist import RelistSweeper

MODEL = "optiserve.io/model"


def child(kind: str, name: str, namespace: str = "ml", owner: str = "digits") -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MODEL: owner},
            "ownerReferences": [
                {
                    "apiVersion": "optiserve.io/v1alpha1",
                    "kind": "OptimizedModel",
                    "name": owner,
                    "controller": True,
                }
            ],
        },
    }


def test_a_sweep_drops_only_what_was_stored_before_the_listing_and_is_absent_from_it() -> None:
    cache = ChildCache(["Deployment", "Service"])
    cache.store("Deployment", child("Deployment", "kept"))
    cache.store("Deployment", child("Deployment", "gone"))
    cache.store("Deployment", child("Deployment", "elsewhere", namespace="other"))
    cache.store("Service", child("Service", "gone"))  # another kind: not this sweep's
    mark = cache.mark()
    # Stored after the listing was asked for: its event is newer than the listing may be.
    cache.store("Deployment", child("Deployment", "new"))

    gone = cache.sweep("Deployment", {("ml", "kept")}, mark, {"ml"})

    assert [g["metadata"]["name"] for g in gone] == ["gone"]
    assert cache.get("Deployment", "ml", "gone") is None
    assert cache.list("Deployment", "ml", {MODEL: "digits"}) == [
        cache.get("Deployment", "ml", "kept"),
        cache.get("Deployment", "ml", "new"),
    ]
    assert cache.get("Deployment", "other", "elsewhere") is not None  # not in the scope listed
    assert cache.get("Service", "ml", "gone") is not None
    # Cluster-wide (scope None): the other namespace's object, absent from the listing, goes.
    swept = cache.sweep("Deployment", {("ml", "kept"), ("ml", "new")}, cache.mark(), None)
    assert [g["metadata"]["name"] for g in swept] == ["elsewhere"]


class Listing:
    """What ``Kube.list_names`` answers: the names the API server holds now."""

    def __init__(self, names: set[tuple[str, str]]) -> None:
        self.names = names
        self.calls: list[tuple[str, str, str | None, str]] = []

    def list_names(
        self, api_version: str, plural: str, namespace: str | None, selector: str
    ) -> set[tuple[str, str]]:
        self.calls.append((api_version, plural, namespace, selector))
        return {n for n in self.names if namespace is None or n[0] == namespace}


def test_a_relist_of_the_models_sweeps_every_kind_once_quiet_and_queues_the_owners() -> None:
    cache = ChildCache(["Deployment", "Service"])
    cache.store("Deployment", child("Deployment", "a", owner="a"))
    cache.store("Deployment", child("Deployment", "b", owner="b"))
    cache.store("Service", child("Service", "a", owner="a"))
    listing = Listing({("ml", "a")})  # Deployment b was deleted in the gap
    queued: list[str] = []
    resources = {"Deployment": ("apps/v1", "deployments"), "Service": ("v1", "services")}

    async def relist() -> RelistSweeper:
        sweeper = RelistSweeper(
            cast(Kube, listing),
            cache,
            resources,
            "managed=ours",
            (),
            gone=lambda obj: queued.append(obj["metadata"]["name"]),
            quiet_seconds=0.05,
        )
        sweeper.listed()  # a model's listing event
        sweeper.listed("Deployment")  # and a child's, in the same burst
        assert sweeper._task is not None
        await sweeper._task
        return sweeper

    sweeper = asyncio.run(relist())
    assert sweeper.sweeps == 2  # one per kind, however many listing events
    assert cache.get("Deployment", "ml", "b") is None
    assert cache.get("Deployment", "ml", "a") is not None
    assert cache.get("Service", "ml", "a") is not None
    assert queued == ["b"]
    assert sorted(listing.calls) == [
        ("apps/v1", "deployments", None, "managed=ours"),
        ("v1", "services", None, "managed=ours"),
    ]


def test_a_namespaced_operator_lists_each_namespace_it_holds_objects_in() -> None:
    cache = ChildCache(["Deployment"])
    cache.store("Deployment", child("Deployment", "a", namespace="team-a"))
    cache.store("Deployment", child("Deployment", "b", namespace="team-b"))
    listing = Listing({("team-a", "a")})
    sweeper = RelistSweeper(
        cast(Kube, listing),
        cache,
        {"Deployment": ("apps/v1", "deployments")},
        "managed=ours",
        ("team-*",),
        gone=lambda obj: None,
    )
    gone = asyncio.run(sweeper.sweep("Deployment"))
    assert [g["metadata"]["name"] for g in gone] == ["b"]
    assert sorted(c[2] or "" for c in listing.calls) == ["team-a", "team-b"]
