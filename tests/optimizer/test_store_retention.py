"""``storage.retention`` on an S3 prefix: which digest folders the Job removes (pure plan)."""

from __future__ import annotations

from optiserve.remote.artifacts import MARKER
from optiserve_optimizer.artifact_store import plan_store_removals
from optiserve_optimizer.retention import Retention

NOW = 1_000_000.0
HOUR = 3600.0
SERVED, BUILDING = "a" * 64, "f" * 64


def digest(n: int) -> str:
    return f"{n:064x}"


def complete(name: str, modified: float) -> list[tuple[str, float]]:
    return [(f"{name}/model_repository/m/1/model.onnx", modified), (f"{name}/{MARKER}", modified)]


def test_superseded_complete_artifacts_beyond_the_count_go_newest_kept() -> None:
    listing = [
        *complete(SERVED, NOW - 10 * HOUR),  # oldest, but served
        *complete(digest(1), NOW - 3 * HOUR),
        *complete(digest(2), NOW - 2 * HOUR),
        *complete(digest(3), NOW - 1 * HOUR),
    ]
    retention = Retention(frozenset({SERVED, BUILDING}), keep_superseded=1, stale_after=HOUR)
    assert [r.name for r in plan_store_removals(listing, retention, NOW)] == [digest(1), digest(2)]


def test_an_incomplete_upload_goes_only_once_older_than_the_deadline() -> None:
    young = [(f"{digest(5)}/report.json", NOW - 60)]  # maybe a live Job's upload
    old = [(f"{digest(6)}/report.json", NOW - 2 * HOUR)]  # a killed Job's
    building = [(f"{BUILDING}/report.json", NOW - 5 * HOUR)]  # this Job's own: never
    retention = Retention(frozenset({BUILDING}), keep_superseded=5, stale_after=HOUR)
    removals = plan_store_removals([*young, *old, *building], retention, NOW)
    assert [r.name for r in removals] == [digest(6)]
    assert "incomplete upload" in removals[0].reason


def test_objects_that_are_no_digest_folder_are_left_alone() -> None:
    listing = [("notes.txt", 0.0), ("other/x", 0.0), (f"{digest(7)}", 0.0), ("ABC/" + MARKER, 0.0)]
    retention = Retention(frozenset(), keep_superseded=0, stale_after=HOUR)
    assert plan_store_removals(listing, retention, NOW) == []
