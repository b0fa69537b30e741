"""``storage.s3``: artifacts kept under an S3 prefix instead of on a volume claim.

With an S3 prefix no ReadWriteMany volume is needed: the optimization Job builds the artifact
in its own emptyDir and uploads it, and every Triton pod pulls it into its own emptyDir. The
S3 endpoint and credentials are ``spec.objectStore``'s, the same that ``s3://`` sources use.

Layout: ``<prefix>/<namespace>/<name>/<digest>/`` (the model's own folder, as on a claim), a
completion marker written last (``optiserve.remote.artifacts``).
"""

from __future__ import annotations

from typing import Any

from optiserve.api.rules import CelRule

# A bucket name (3-63: lower case, digits, '.', '-'), then an optional key prefix whose
# segments start with a letter or digit (so no '.' or '..' segment) and use the characters S3
# documents as safe. The same expression is RE2 and Python.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9!_.*'()-]*"
S3_PREFIX_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/" + _SEGMENT + r")*/?$"
S3_PREFIX_MAX = 1024
S3_HELP = (
    "s3://BUCKET[/PREFIX]: artifacts are uploaded under <prefix>/<namespace>/<name>/<digest>/ "
    "(endpoint and credentials: spec.objectStore) and pulled by each Triton pod; no shared "
    "volume needed."
)


def split_s3_prefix(uri: str) -> tuple[str, str]:
    """``(bucket, prefix without slashes at either end)`` of an ``s3://`` prefix."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def _one_location(storage: Any) -> bool:
    return (storage.pvc is None) != (storage.s3 is None)


ONE_LOCATION_RULE = CelRule(
    cel="has(self.pvc) != has(self.s3)",
    message="storage needs exactly one place: pvc (a volume claim) or s3 (an s3:// prefix)",
    field=".pvc",
    check=_one_location,
)
