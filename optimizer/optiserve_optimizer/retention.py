"""Retention of the model's storage folder: which artifact and work folders the Job removes.

The operator never reads volumes; the optimization Job already mounts the model's own folder
``<subPath>/<namespace>/<name>`` writable, so it is the one place that can list and remove
old folders there. The operator tells it what to keep (environment variables rendered by
``optiserve.render.job``): the served and last good artifacts' digests, how many superseded
artifacts to keep, and after how long a work folder is certainly no live Job's.

``plan_removals`` is the whole decision, pure; ``list_folder`` and ``remove`` are the I/O.
Only names the optimizer itself makes are ever touched (``<64 hex>``, ``.work-*``,
``.tmp-*``); anything else in the folder is left alone, and symbolic links are not followed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from optiserve.render.job import KEEP_DIGESTS_ENV, KEEP_SUPERSEDED_ENV, STALE_AFTER_ENV
from optiserve_optimizer.errors import SpecError

DIGEST_FOLDER = re.compile(r"[a-f0-9]{64}")
# pipeline.py's ``.work-<digest[:12]>-<pid>`` and package.py's ``.tmp-<digest>-<pid>``.
WORK_FOLDER = re.compile(r"\.(work|tmp)-[a-f0-9]{12,64}-[0-9]+")


@dataclass(frozen=True)
class Entry:
    """A folder in the model's storage folder; ``modified``: newest mtime of the folder and
    of its direct entries (seconds since the epoch)."""

    name: str
    modified: float


@dataclass(frozen=True)
class Retention:
    keep: frozenset[str]  # digests never removed: served, last good, the one being built
    keep_superseded: int  # of the others, this many of the most recent stay
    stale_after: float  # seconds a work folder must be untouched before it is removed


@dataclass(frozen=True)
class Removal:
    name: str
    reason: str


def plan_removals(entries: Iterable[Entry], retention: Retention, now: float) -> list[Removal]:
    """The folders to remove, each with why, sorted by name.

    Superseded artifacts: every digest folder not in ``keep`` beyond the ``keep_superseded``
    most recent (newest first, ties by name, so the answer does not depend on listing order).
    Work folders (``.work-*``, ``.tmp-*``) of killed Jobs: untouched for longer than
    ``stale_after``, the Job's ``activeDeadlineSeconds``. A Job cannot outlive that deadline
    and makes its work folder after it starts, so such a folder belongs to no live Job of the
    same deadline; a younger one may be a concurrent Job's and is left alone.
    """
    entries = list(entries)
    superseded = sorted(
        (e for e in entries if DIGEST_FOLDER.fullmatch(e.name) and e.name not in retention.keep),
        key=lambda e: (-e.modified, e.name),
    )
    removals = [
        Removal(
            e.name,
            f"superseded artifact; the {retention.keep_superseded} most recent others are kept",
        )
        for e in superseded[retention.keep_superseded :]
    ]
    for e in entries:
        age = now - e.modified
        if WORK_FOLDER.fullmatch(e.name) and age > retention.stale_after:
            removals.append(
                Removal(
                    e.name,
                    f"work folder of an ended Job: untouched for {age:.0f}s "
                    f"(> {retention.stale_after:.0f}s)",
                )
            )
    return sorted(removals, key=lambda r: r.name)


def retention_from_env(environ: Mapping[str, str], building: str) -> Retention | None:
    """What the operator asked to keep; None when it asked nothing (a local run: the user's
    ``--out`` folder is not pruned). ``building``: the digest this run makes."""
    raw_count = environ.get(KEEP_SUPERSEDED_ENV)
    if raw_count is None:
        return None
    try:
        count = int(raw_count)
        stale_after = float(environ.get(STALE_AFTER_ENV, "3600"))
    except ValueError as err:
        raise SpecError(
            "retention", f"{KEEP_SUPERSEDED_ENV} / {STALE_AFTER_ENV} must be numbers: {err}"
        ) from err
    if count < 0 or stale_after < 60:
        raise SpecError(
            "retention",
            f"{KEEP_SUPERSEDED_ENV} must be >= 0 and {STALE_AFTER_ENV} >= 60 "
            f"(got {count}, {stale_after:g})",
        )
    keep = {d.strip().removeprefix("sha256:") for d in environ.get(KEEP_DIGESTS_ENV, "").split(",")}
    return Retention(frozenset(keep - {""} | {building}), count, stale_after)


def list_folder(folder: Path) -> list[Entry]:
    """The folders directly in ``folder`` (links and files skipped); none if it is missing."""
    if not folder.is_dir():
        return []
    entries = []
    with os.scandir(folder) as found:
        for item in found:
            if not item.is_dir(follow_symlinks=False):
                continue
            newest = item.stat(follow_symlinks=False).st_mtime
            try:
                with os.scandir(item.path) as inside:
                    for child in inside:
                        newest = max(newest, child.stat(follow_symlinks=False).st_mtime)
            except OSError:
                newest = float("inf")  # unreadable: never looks stale
            entries.append(Entry(item.name, newest))
    return entries


def prune(folder: Path, retention: Retention, now: float, log: Callable[[str], None]) -> int:
    """Removes what ``plan_removals`` names, logging each; returns how many were removed.

    Housekeeping must not cost the optimization: a folder that cannot be removed is logged
    and left for the next Job.
    """
    removed = 0
    try:
        entries = list_folder(folder)
    except OSError as err:
        log(f"retention: could not list {folder}: {err}")
        return 0
    for removal in plan_removals(entries, retention, now):
        try:
            shutil.rmtree(folder / removal.name)
        except OSError as err:
            log(f"retention: could not remove {removal.name}: {err}")
            continue
        removed += 1
        log(f"retention: removed {removal.name} ({removal.reason})")
    return removed
