"""``storage.s3``: the Job's finished artifact goes to the model's S3 prefix.

The operator names the prefix in ``OPTISERVE_ARTIFACT_STORE`` (``s3://bucket/<prefix>/<ns>/
<name>``) and the store's endpoint and credentials in the standard AWS variables (the
credentials from the Secret ``spec.objectStore.credentialsSecret`` names, through
``secretKeyRef``). The Job builds the artifact in its own emptyDir (``--out``), then uploads
``<out>/<digest>/`` to ``<prefix>/<digest>/``: every file, then the completion marker last
(:mod:`optiserve.remote.artifacts`), so a Job killed mid-upload leaves nothing a pod would
serve. A digest already complete in the store is never uploaded again; it is pulled back
instead, so a retried Job reports the same artifact without optimizing again.

``storage.retention`` applies to the prefix as to a claim's folder (:meth:`ArtifactStore.prune`,
the same :func:`~optiserve_optimizer.retention.plan_removals`): complete superseded artifacts
beyond ``keepSuperseded`` go; a digest folder without its marker is a killed Job's upload and
goes once older than the Job's deadline (a younger one may be a live Job's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from optiserve.remote.artifacts import (
    MARKER,
    delete_folder,
    is_complete,
    pull_folder,
    upload_folder,
)
from optiserve.remote.errors import FetchError, TransferError
from optiserve.remote.fetch import FetchSettings, bucket_key, retrying
from optiserve.remote.s3 import S3Client, TransientError, resolve_credentials
from optiserve.render.objectstore import ARTIFACT_STORE_ENV
from optiserve_optimizer.errors import OptimizerError
from optiserve_optimizer.retention import DIGEST_FOLDER, Entry, Removal, Retention, plan_removals

PASS_NAME = "store"
Log = Callable[[str], None]


class StoreError(OptimizerError):
    """The artifact store refused or kept failing (the cause names the URI and why)."""


class StoreTransferError(StoreError):
    """The store kept failing after the bounded retries: a later try may work, so the Job
    is retried (exit 3) instead of failed."""

    exit_code = 3


def _store_error(err: FetchError) -> StoreError:
    kind = StoreTransferError if isinstance(err, TransferError) else StoreError
    return kind(PASS_NAME, f"{err.reason}: {err}")


@dataclass(frozen=True)
class ArtifactStore:
    client: S3Client
    settings: FetchSettings
    bucket: str
    prefix: str  # the model's own folder, no slashes at either end

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ArtifactStore | None:
        """The store the operator named; None with a claim (the artifact stays on it)."""
        uri = env.get(ARTIFACT_STORE_ENV)
        if not uri:
            return None
        settings = FetchSettings.from_env(env)
        client = S3Client(settings.s3, resolve_credentials(env), settings.timeout_s)
        bucket, prefix = bucket_key(uri)
        return cls(client, settings, bucket, prefix.strip("/"))

    def uri(self, digest: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}/{digest}"

    def _key(self, digest: str) -> str:
        return f"{self.prefix}/{digest}"

    def complete(self, digest: str, log: Log) -> bool:
        try:
            return retrying(
                lambda: is_complete(self.client, self.bucket, self._key(digest)),
                self.uri(digest),
                self.settings,
                log,
            )
        except FetchError as err:
            raise _store_error(err) from None

    def restore(self, out_dir: Path, digest: str, log: Log) -> bool:
        """Pulls a complete artifact of ``digest`` into ``out_dir/<digest>`` (the optimizer
        then reuses it); False when the store has none."""
        if (out_dir / digest).exists() or not self.complete(digest, log):
            return False
        log(f"store: {self.uri(digest)}/ is complete; reusing it")
        try:
            pull_folder(
                self.client, self.bucket, self._key(digest), out_dir / digest, self.settings, log
            )
        except FetchError as err:
            raise _store_error(err) from None
        return True

    def upload(self, folder: Path, digest: str, log: Log) -> None:
        """``folder`` to ``<prefix>/<digest>/``, the marker last; nothing when already there."""
        if self.complete(digest, log):
            log(f"store: {self.uri(digest)}/ is complete already; not uploaded again")
            return
        try:
            upload_folder(self.client, self.bucket, self._key(digest), folder, log, self.settings)
        except FetchError as err:
            raise _store_error(err) from None


def plan_store_removals(
    listing: Iterable[tuple[str, float]], retention: Retention, now: float
) -> list[Removal]:
    """What to remove of the model's prefix, given ``(key relative to it, modified)`` of every
    object. Pure. Only digest folders are considered; a complete one (its marker listed) is a
    superseded artifact as on a claim, an incomplete one a work folder."""
    newest: dict[str, float] = {}
    complete: set[str] = set()
    for key, modified in listing:
        folder, _, rest = key.partition("/")
        if not DIGEST_FOLDER.fullmatch(folder) or not rest:
            continue
        newest[folder] = max(newest.get(folder, 0.0), modified)
        if rest == MARKER:
            complete.add(folder)
    done = [Entry(name, when) for name, when in newest.items() if name in complete]
    removals = plan_removals(done, retention, now)
    for name, when in newest.items():
        age = now - when
        if name not in complete and name not in retention.keep and age > retention.stale_after:
            removals.append(
                Removal(
                    name,
                    f"incomplete upload of an ended Job: untouched for {age:.0f}s "
                    f"(> {retention.stale_after:.0f}s)",
                )
            )
    return sorted(removals, key=lambda r: r.name)


def prune_store(store: ArtifactStore, retention: Retention, now: float, log: Log) -> int:
    """Removes what :func:`plan_store_removals` names (each marker first), logging each;
    returns how many. Housekeeping must not cost the optimization: a failure is logged and
    left for the next Job."""
    base = store.prefix + "/"
    try:
        listing = [(o.key[len(base) :], o.modified) for o in store.client.list(store.bucket, base)]
    except (FetchError, OSError, TransientError) as err:
        log(f"retention: could not list s3://{store.bucket}/{base}: {err}")
        return 0
    removed = 0
    for removal in plan_store_removals(listing, retention, now):
        try:
            delete_folder(store.client, store.bucket, f"{store.prefix}/{removal.name}")
        except (FetchError, OSError, TransientError) as err:
            log(f"retention: could not remove {store.uri(removal.name)}/: {err}")
            continue
        removed += 1
        log(f"retention: removed {store.uri(removal.name)}/ ({removal.reason})")
    return removed
