"""The optimization Job's environment for ``spec.objectStore``. Pure.

The Secret is referenced, never read: its values reach only the Job's container, through
``secretKeyRef``, under the variable names every AWS SDK (and optiserve.remote.s3) reads.
"""

from __future__ import annotations

from typing import Any

from optiserve.api import OptimizedModelSpec
from optiserve.api.objectstore import ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN
from optiserve.remote.s3 import ADDRESSING_ENV


def object_store_env(spec: OptimizedModelSpec) -> list[dict[str, Any]]:
    """Env entries for the Job's container; empty without ``spec.objectStore``."""
    store = spec.object_store
    if store is None:
        return []
    env: list[dict[str, Any]] = []
    if store.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": store.endpoint})
    env += [
        {"name": "AWS_REGION", "value": store.region},
        {"name": ADDRESSING_ENV, "value": store.addressing},
    ]
    if store.credentials_secret:
        for key, optional in (
            (ACCESS_KEY_ID, False),
            (SECRET_ACCESS_KEY, False),
            (SESSION_TOKEN, True),
        ):
            ref: dict[str, Any] = {"name": store.credentials_secret, "key": key}
            if optional:
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return env
