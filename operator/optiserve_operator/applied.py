"""Server-side apply only when it would change something: a pass that finds every child as
wanted makes no write.

An apply that changes nothing is still a PATCH: admission, a managed-fields merge, an audit
entry and a request against the client's rate limit. At a thousand models each resync and each
operator restart would send thousands. A child is left alone only when both hold:

1. it carries, in ``optiserve.io/applied``, the hash of exactly the manifest we would apply
   now, so the set of fields we own is the one of the last apply (a field we stopped setting
   is removed by an apply, which a value comparison alone would never notice), and
2. every value the manifest sets is what the live object holds, so an edit of a field we own
   (``kubectl scale``, ``kubectl edit``) is put back by the same pass as before.

Quantities in ``requests``, ``limits`` and ``sizeLimit`` compare by value (the API server
stores ``1024Mi`` as ``1Gi``); any other value the API server rewrote fails (2): that costs a
write per pass, never a missed change. Pure: the controller fetches the live child.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from optiserve.render.autoscaling import AutoscalingTargetError, parse_quantity

ANNOTATION_APPLIED = "optiserve.io/applied"


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    """A short digest of the manifest's canonical JSON (our own annotation left out)."""
    body = copy.deepcopy(dict(manifest))
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    annotations.pop(ANNOTATION_APPLIED, None)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


def stamped(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest to apply: a copy carrying its own hash in ``optiserve.io/applied``."""
    body = copy.deepcopy(dict(manifest))
    digest = manifest_hash(body)
    body.setdefault("metadata", {}).setdefault("annotations", {})[ANNOTATION_APPLIED] = digest
    return body


# Keys whose values are quantities the API server stores in canonical form ("1024Mi" is kept
# as "1Gi"): compared by value, so a rewritten spelling is not a change.
QUANTITY_MAPS = frozenset({"requests", "limits"})
QUANTITY_KEYS = frozenset({"sizeLimit"})


def contains(live: Any, wanted: Any, *, quantity: bool = False) -> bool:
    """Whether ``live`` holds every value ``wanted`` sets (maps: a subset of keys; lists: the
    same length, item by item, since the API server adds defaults inside list items)."""
    if isinstance(wanted, Mapping):
        return isinstance(live, Mapping) and all(
            key in live
            and (
                _same_quantities(live[key], value)
                if key in QUANTITY_MAPS
                else contains(live[key], value, quantity=key in QUANTITY_KEYS)
            )
            for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(live) == len(wanted)
            and all(contains(a, b) for a, b in zip(live, wanted, strict=True))
        )
    if quantity and live != wanted:
        return _quantity(live) is not None and _quantity(live) == _quantity(wanted)
    return type(live) is type(wanted) and bool(live == wanted)


def _same_quantities(live: Any, wanted: Any) -> bool:
    if not isinstance(wanted, Mapping) or not isinstance(live, Mapping):
        return contains(live, wanted)
    return all(
        key in live and contains(live[key], value, quantity=True) for key, value in wanted.items()
    )


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    try:
        return parse_quantity(value)
    except AutoscalingTargetError:
        return None


def unchanged(live: Mapping[str, Any] | None, manifest: Mapping[str, Any]) -> bool:
    """True when applying ``manifest`` over ``live`` would change nothing (see the module)."""
    if live is None:
        return False
    wanted = stamped(manifest)
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    if annotations.get(ANNOTATION_APPLIED) != wanted["metadata"]["annotations"][ANNOTATION_APPLIED]:
        return False
    return contains(live, wanted)
