"""The Job's retention pass: which folders of the model's storage folder go (pure plan, plain
asserts), and the listing on a real folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from optiserve.render.job import KEEP_DIGESTS_ENV, KEEP_SUPERSEDED_ENV, STALE_AFTER_ENV
from optiserve_optimizer.errors import SpecError
from optiserve_optimizer.retention import (
    Entry,
    Retention,
    list_folder,
    plan_removals,
    prune,
    retention_from_env,
)

NOW = 1_000_000.0
HOUR = 3600.0
SERVED, LAST_GOOD, BUILDING = "a" * 64, "b" * 64, "f" * 64


def digest(n: int) -> str:
    return f"{n:064x}"


def removed(entries: list[Entry], keep_superseded: int, stale_after: float = HOUR) -> list[str]:
    retention = Retention(frozenset({SERVED, LAST_GOOD, BUILDING}), keep_superseded, stale_after)
    return [r.name for r in plan_removals(entries, retention, NOW)]


def test_served_last_good_and_building_stay_whatever_their_age() -> None:
    entries = [Entry(SERVED, 0.0), Entry(LAST_GOOD, 1.0), Entry(BUILDING, 2.0)]
    assert removed(entries, keep_superseded=0) == []


def test_the_n_most_recent_superseded_stay_and_older_ones_go() -> None:
    entries = [Entry(digest(i), NOW - 100 * i) for i in range(1, 6)] + [Entry(SERVED, 0.0)]
    assert removed(entries, keep_superseded=2) == [digest(3), digest(4), digest(5)]
    assert removed(entries, keep_superseded=0) == [digest(i) for i in range(1, 6)]
    assert removed(entries, keep_superseded=5) == []
    # Listing order does not matter; equal times are broken by name.
    assert removed(list(reversed(entries)), keep_superseded=2) == [digest(3), digest(4), digest(5)]
    tied = [Entry(digest(2), NOW), Entry(digest(1), NOW)]
    assert removed(tied, keep_superseded=1) == [digest(2)]


def test_work_folders_go_only_when_older_than_the_jobs_deadline() -> None:
    entries = [
        Entry(".work-0123456789ab-1", NOW - HOUR - 1),  # a killed Job's
        Entry(f".tmp-{digest(9)}-7", NOW - 2 * HOUR),  # a killed packaging
        Entry(".work-0123456789ab-2", NOW - HOUR + 60),  # maybe a concurrent Job's
        Entry(f".tmp-{digest(8)}-1", NOW),
    ]
    assert removed(entries, keep_superseded=0) == [f".tmp-{digest(9)}-7", ".work-0123456789ab-1"]


def test_names_the_optimizer_does_not_make_are_never_touched() -> None:
    old = NOW - 100 * HOUR
    entries = [
        Entry("notes", old),
        Entry("A" * 64, old),  # not lower-case hex: not ours
        Entry(digest(1) + "x", old),
        Entry(".work-", old),
        Entry(".workshop-0123456789ab-1", old),
        Entry("..", old),
    ]
    assert removed(entries, keep_superseded=0) == []


def test_every_removal_says_why() -> None:
    retention = Retention(frozenset(), 1, HOUR)
    entries = [Entry(digest(1), NOW), Entry(digest(2), NOW - 5), Entry(".work-0123456789ab-1", 0.0)]
    reasons = {r.name: r.reason for r in plan_removals(entries, retention, NOW)}
    assert reasons == {
        digest(2): "superseded artifact; the 1 most recent others are kept",
        ".work-0123456789ab-1": "work folder of an ended Job: untouched for 1000000s (> 3600s)",
    }


def test_retention_from_env() -> None:
    assert retention_from_env({}, BUILDING) is None  # a local run prunes nothing
    env = {
        KEEP_SUPERSEDED_ENV: "3",
        KEEP_DIGESTS_ENV: f"{SERVED},sha256:{LAST_GOOD},",
        STALE_AFTER_ENV: "600",
    }
    assert retention_from_env(env, BUILDING) == Retention(
        frozenset({SERVED, LAST_GOOD, BUILDING}), 3, 600.0
    )
    assert retention_from_env({KEEP_SUPERSEDED_ENV: "0"}, BUILDING) == Retention(
        frozenset({BUILDING}), 0, 3600.0
    )
    for bad in (
        {KEEP_SUPERSEDED_ENV: "two"},
        {KEEP_SUPERSEDED_ENV: "-1"},
        {
            KEEP_SUPERSEDED_ENV: "1",
            STALE_AFTER_ENV: "5",
        },
    ):
        with pytest.raises(SpecError, match="retention"):
            retention_from_env(bad, BUILDING)


def test_listing_and_pruning_a_real_folder(tmp_path: Path) -> None:
    old = NOW - 10 * HOUR
    for name in (SERVED, digest(1), digest(2), ".work-0123456789ab-1"):
        folder = tmp_path / name
        (folder / "inside").mkdir(parents=True)
        os.utime(folder / "inside", (old, old))
        os.utime(folder, (old, old))
    # A folder whose own time is old but whose content was just written is not stale.
    (tmp_path / ".work-0123456789ab-2" / "step").mkdir(parents=True)
    os.utime(tmp_path / ".work-0123456789ab-2", (old, old))
    os.utime(tmp_path / ".work-0123456789ab-2" / "step", (NOW, NOW))
    os.utime(tmp_path / digest(2), (old + 1, old + 1))  # the more recent superseded one
    (tmp_path / "report.json").write_text("{}")  # files are not listed
    (tmp_path / digest(3)).symlink_to(tmp_path / SERVED)  # links are neither listed nor followed

    listed = {e.name: e.modified for e in list_folder(tmp_path)}
    assert set(listed) == {
        SERVED,
        digest(1),
        digest(2),
        ".work-0123456789ab-1",
        ".work-0123456789ab-2",
    }
    assert listed[".work-0123456789ab-2"] == NOW

    logged: list[str] = []
    retention = Retention(frozenset({SERVED}), 1, HOUR)
    assert prune(tmp_path, retention, NOW, logged.append) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [SERVED, digest(2), digest(3), ".work-0123456789ab-2", "report.json"]
    )
    assert (tmp_path / SERVED / "inside").is_dir()  # not through the link either
    assert logged == [
        "retention: removed .work-0123456789ab-1 (work folder of an ended Job: untouched for "
        "36000s (> 3600s))",
        f"retention: removed {digest(1)} (superseded artifact; the 1 most recent others are kept)",
    ]
    assert list_folder(tmp_path / "missing") == []


def test_the_expected_digest_is_honoured() -> None:
    from optiserve_optimizer.errors import VersionSkewError
    from optiserve_optimizer.main import check_expected_digest

    ours, theirs = digest(1), digest(2)
    check_expected_digest(None, ours, "1.0")  # a local run: no expectation
    check_expected_digest("", ours, "1.0")
    check_expected_digest(ours, ours, "1.0")
    check_expected_digest(f"sha256:{ours}", ours, "1.0")
    with pytest.raises(VersionSkewError) as raised:
        check_expected_digest(theirs, ours, "1.0")
    assert raised.value.exit_code == 2  # the user-error code: the Job fails at once
    assert raised.value.cause == (
        f"version skew: the operator expects recipe digest {theirs}, this optimizer "
        f"(optiserve 1.0) computes {ours}; run matching operator and optimizer images"
    )
