"""What an OptimizedModel may ask for: the administrator's policy and the rules that always hold.

Creating an OptimizedModel makes the operator create a Job and a Deployment, so whoever may
create one could otherwise run any image, on any node, with any number of GPUs, mounting any
claim of the namespace. Two layers say no:

- **Structural rules** (always, no policy needed): ``storage.subPath`` is one folder name, so
  each model's artifacts live in a folder of their own, ``<subPath>/<namespace>/<name>``, that
  no other spec can name; no ``pvc://`` path has a ``.`` or ``..`` segment; inputs are never
  read from the model's own storage claim (where every model's artifacts are kept).
- **The administrator's policy** (:class:`Policy`): allowed image prefixes, the most GPUs, CPU
  and memory a container may ask for, allowed node selectors and tolerations, allowed claims.

The same rules run twice: in the API server, as the chart's ValidatingAdmissionPolicy (CEL over
the same ConfigMap keys, ``charts/optiserve/templates/admission-policy.yaml``), and in the
operator before it renders anything (a refusal there is a ``Stalled`` condition with reason
``PolicyDenied``). tests/chart/policy_cases.py runs one table of cases through both. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from optiserve.api import OptimizedModelSpec
from optiserve.api.spec import ResourceRequirements, Toleration
from optiserve.render.autoscaling import parse_quantity

# Every key of the policy ConfigMap (``data``); lists are comma-separated, "*" allows anything.
KEY_IMAGES = "allowedImagePrefixes"
KEY_MAX_GPUS = "maxGpus"
KEY_MAX_CPU = "maxCpu"
KEY_MAX_MEMORY = "maxMemory"
KEY_NODE_SELECTORS = "allowedNodeSelectors"
KEY_TOLERATIONS = "allowedTolerations"
KEY_SOURCE_CLAIMS = "allowedSourceClaims"
KEY_STORAGE_CLAIMS = "allowedStorageClaims"
POLICY_KEYS = (
    KEY_IMAGES,
    KEY_MAX_GPUS,
    KEY_MAX_CPU,
    KEY_MAX_MEMORY,
    KEY_NODE_SELECTORS,
    KEY_TOLERATIONS,
    KEY_SOURCE_CLAIMS,
    KEY_STORAGE_CLAIMS,
)
ANY = "*"
# Extended resources that are (parts of) NVIDIA GPUs: nvidia.com/gpu, MIG slices, shared GPUs.
GPU_RESOURCE_PREFIX = "nvidia.com/"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
# One folder name: no "/", so "<subPath>/<namespace>/<name>" of two models never nest; not
# starting with ".", so never "." or "..".
SUB_PATH = re.compile(r"^[A-Za-z0-9_][-A-Za-z0-9_.]*$")
NON_INTEGER_GPUS = 1_000_000  # a GPU count that is not a whole number can never be allowed


class PolicyError(ValueError):
    """The policy itself is unreadable (a missing or unknown key, a bad number)."""


@dataclass(frozen=True)
class Violation:
    """One thing the spec asks for that it may not, with the field that asks for it."""

    field: str  # "spec.optimization.job.image"
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class Policy:
    allowed_image_prefixes: tuple[str, ...]
    max_gpus: int
    max_cpu: Decimal
    max_memory: Decimal
    allowed_node_selectors: tuple[str, ...]  # "key=value" or "key=*"
    allowed_tolerations: tuple[str, ...]  # "key" (any effect) or "key:Effect"
    allowed_source_claims: tuple[str, ...]
    allowed_storage_claims: tuple[str, ...]
    max_cpu_text: str = ""
    max_memory_text: str = ""


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _quantity(key: str, text: str) -> Decimal:
    try:
        return parse_quantity(text.strip())
    except ValueError as err:
        raise PolicyError(f"policy {key}: {text!r} is not a Kubernetes quantity") from err


def parse_policy(data: Mapping[str, str]) -> Policy:
    """The policy from its ConfigMap's ``data``; every key is required, unknown keys refused
    (a misspelt key must not silently lift a limit)."""
    missing = [k for k in POLICY_KEYS if k not in data]
    unknown = sorted(set(data) - set(POLICY_KEYS))
    if missing or unknown:
        parts = [f"missing {', '.join(missing)}" if missing else "", ""]
        parts[1] = f"unknown {', '.join(unknown)}" if unknown else ""
        raise PolicyError("policy keys: " + "; ".join(p for p in parts if p))
    gpus = data[KEY_MAX_GPUS].strip()
    if not gpus.isdigit():
        raise PolicyError(f"policy {KEY_MAX_GPUS}: {gpus!r} is not a whole number")
    return Policy(
        allowed_image_prefixes=_list(data[KEY_IMAGES]),
        max_gpus=int(gpus),
        max_cpu=_quantity(KEY_MAX_CPU, data[KEY_MAX_CPU]),
        max_memory=_quantity(KEY_MAX_MEMORY, data[KEY_MAX_MEMORY]),
        allowed_node_selectors=_list(data[KEY_NODE_SELECTORS]),
        allowed_tolerations=_list(data[KEY_TOLERATIONS]),
        allowed_source_claims=_list(data[KEY_SOURCE_CLAIMS]),
        allowed_storage_claims=_list(data[KEY_STORAGE_CLAIMS]),
        max_cpu_text=data[KEY_MAX_CPU].strip(),
        max_memory_text=data[KEY_MAX_MEMORY].strip(),
    )


def read_policy_dir(folder: Path) -> Policy:
    """The policy ConfigMap mounted as a volume: one file per key (the kubelet's ``..data``
    links and hidden folders are skipped). The one function here that reads anything."""
    try:
        data = {
            path.name: path.read_text(encoding="utf-8")
            for path in sorted(folder.iterdir())
            if not path.name.startswith(".") and path.is_file()
        }
    except (OSError, UnicodeDecodeError) as err:
        raise PolicyError(f"policy folder {folder}: {err}") from err
    return parse_policy(data)


# ---- the spec's inputs, containers and placement, each with its field path ------------------
def input_uris(spec: OptimizedModelSpec) -> list[tuple[str, str]]:
    """(field, uri) of every model or data location the Job reads."""
    opt = spec.optimization
    calibration = opt.quantization.calibration
    found = [
        ("spec.source.uri", spec.source.uri),
        (
            "spec.optimization.quantization.calibration.uri",
            calibration.uri if calibration else None,
        ),
        ("spec.optimization.accuracy.dataset", opt.accuracy.dataset),
        ("spec.optimization.recovery.dataset", opt.recovery.dataset),
        ("spec.optimization.student.dataset", opt.student.dataset),
    ]
    return [(field, uri) for field, uri in found if uri]


def _pvc(uri: str) -> tuple[str, str] | None:
    """(claim, path) of a pvc:// URI; None for other schemes (and malformed ones, which the
    schema refuses)."""
    if not uri.startswith("pvc://"):
        return None
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    return claim, path


def _containers(spec: OptimizedModelSpec) -> list[tuple[str, ResourceRequirements]]:
    return [
        ("spec.optimization.job.resources", spec.optimization.job.resources),
        ("spec.serving.resources", spec.serving.resources),
    ]


def structural_violations(spec: OptimizedModelSpec) -> list[Violation]:
    """The rules that keep one model's artifacts out of another's reach; no policy needed."""
    found: list[Violation] = []
    sub_path = spec.storage.sub_path
    if not SUB_PATH.match(sub_path):
        found.append(
            Violation(
                "spec.storage.subPath",
                f"{sub_path!r} must be one folder name (letters, digits, '-', '_', '.'; no '/', "
                "not starting with '.'): each model keeps its artifacts in "
                "<subPath>/<namespace>/<name>, out of every other model's reach",
            )
        )
    for field, uri in input_uris(spec):
        parsed = _pvc(uri)
        if parsed is None:
            continue
        claim, path = parsed
        if any(segment in (".", "..") for segment in path.split("/")):
            found.append(Violation(field, f"{uri!r}: a pvc:// path may not hold '.' or '..'"))
        if claim == spec.storage.pvc:
            found.append(
                Violation(
                    field,
                    f"{uri!r} reads claim {claim!r}, which keeps the artifacts "
                    "(spec.storage.pvc): inputs must come from another claim, so no model "
                    "reads another model's artifacts",
                )
            )
    return found


# ---- the administrator's policy ------------------------------------------------------------
def image_allowed(image: str, prefixes: Iterable[str]) -> bool:
    """``image`` lies under one of ``prefixes`` at a path boundary: "ghcr.io/acme" allows
    "ghcr.io/acme/x:1" and "ghcr.io/acme:1", never "ghcr.io/acme-evil/x"."""
    for prefix in prefixes:
        if prefix == ANY or image == prefix:
            return True
        if any(image.startswith(prefix + sep) for sep in ("/", ":", "@")):
            return True
        if prefix.endswith(("/", ":", "@")) and image.startswith(prefix):
            return True
    return False


def gpu_count(resources: ResourceRequirements, gpu_target: bool) -> int:
    """GPUs (or GPU slices) one container asks for; a gpu target asking for none gets one."""
    counts = []
    for stated in (resources.limits, resources.requests):
        total = 0
        for key, value in stated.items():
            if key.startswith(GPU_RESOURCE_PREFIX):
                text = str(value).strip()
                total += int(text) if text.isdigit() else NON_INTEGER_GPUS
        counts.append(total)
    asked = max(counts)
    stated_any = any(
        k.startswith(GPU_RESOURCE_PREFIX) for k in [*resources.limits, *resources.requests]
    )
    return asked + (1 if gpu_target and not stated_any else 0)


def _within(value: int | str, most: Decimal) -> bool:
    try:
        return parse_quantity(str(value).strip()) <= most
    except ValueError:
        return False  # not a quantity at all: never within a limit


def _selector_allowed(key: str, value: str, allowed: Iterable[str]) -> bool:
    return any(entry in (ANY, f"{key}=*", f"{key}={value}") for entry in allowed)


def _toleration_allowed(toleration: Toleration, allowed: Iterable[str]) -> bool:
    key = toleration.key or ""
    # No key tolerates every taint; no effect tolerates every effect of the key.
    effect = toleration.effect or "~"
    return any(entry == ANY or (key and entry in (key, f"{key}:{effect}")) for entry in allowed)


def _claim_allowed(claim: str, allowed: Iterable[str]) -> bool:
    return any(entry in (ANY, claim) for entry in allowed)


def _images(spec: OptimizedModelSpec, policy: Policy) -> Iterator[Violation]:
    images = [("spec.optimization.job.image", spec.optimization.job.image)]
    images.append(("spec.serving.image", spec.serving.image))
    allowed = ", ".join(policy.allowed_image_prefixes) or "none"
    for field, image in images:
        if image is not None and not image_allowed(image, policy.allowed_image_prefixes):
            yield Violation(field, f"image {image!r} is not under an allowed prefix ({allowed})")


def _resources(spec: OptimizedModelSpec, policy: Policy) -> Iterator[Violation]:
    gpu_target = spec.optimization.target.device == "gpu"
    for field, resources in _containers(spec):
        gpus = gpu_count(resources, gpu_target)
        if gpus > policy.max_gpus:
            shown = "a non-integer count" if gpus >= NON_INTEGER_GPUS else str(gpus)
            yield Violation(field, f"asks for {shown} GPUs; the policy allows {policy.max_gpus}")
        for name, most, text in (
            ("cpu", policy.max_cpu, policy.max_cpu_text),
            ("memory", policy.max_memory, policy.max_memory_text),
        ):
            for kind, stated in (("limits", resources.limits), ("requests", resources.requests)):
                if name in stated and not _within(stated[name], most):
                    yield Violation(
                        f"{field}.{kind}.{name}",
                        f"{stated[name]!r} is more than the policy allows ({text or most})",
                    )


def _placement(spec: OptimizedModelSpec, policy: Policy) -> Iterator[Violation]:
    allowed = policy.allowed_node_selectors
    target = spec.optimization.target
    product = target.gpu_product if target.device == "gpu" else None
    if product and not _selector_allowed(GPU_PRODUCT_LABEL, product, allowed):
        yield Violation(
            "spec.optimization.target.gpuProduct",
            f"node selector {GPU_PRODUCT_LABEL}={product} is not allowed",
        )
    pods = [
        ("spec.optimization.job", spec.optimization.job.node_selector),
        ("spec.serving", spec.serving.node_selector),
    ]
    for prefix, selector in pods:
        for key, value in sorted(selector.items()):
            if not _selector_allowed(key, value, allowed):
                yield Violation(
                    f"{prefix}.nodeSelector", f"node selector {key}={value} is not allowed"
                )
    tolerated = [
        ("spec.optimization.job", spec.optimization.job.tolerations),
        ("spec.serving", spec.serving.tolerations),
    ]
    for prefix, tolerations in tolerated:
        for index, toleration in enumerate(tolerations):
            if not _toleration_allowed(toleration, policy.allowed_tolerations):
                what = f"key {toleration.key!r}" if toleration.key else "no key (every taint)"
                yield Violation(
                    f"{prefix}.tolerations[{index}]", f"a toleration with {what} is not allowed"
                )


def _claims(spec: OptimizedModelSpec, policy: Policy) -> Iterator[Violation]:
    for field, uri in input_uris(spec):
        parsed = _pvc(uri)
        if parsed is not None and not _claim_allowed(parsed[0], policy.allowed_source_claims):
            yield Violation(field, f"claim {parsed[0]!r} is not an allowed source claim")
    if spec.storage.pvc is not None and not _claim_allowed(
        spec.storage.pvc, policy.allowed_storage_claims
    ):
        yield Violation(
            "spec.storage.pvc", f"claim {spec.storage.pvc!r} is not an allowed storage claim"
        )


def policy_violations(spec: OptimizedModelSpec, policy: Policy) -> list[Violation]:
    return [
        *_images(spec, policy),
        *_resources(spec, policy),
        *_placement(spec, policy),
        *_claims(spec, policy),
    ]


def violations(spec: OptimizedModelSpec, policy: Policy | None) -> list[Violation]:
    """Everything the spec may not ask for: the structural rules, then the policy's (if any)."""
    found = structural_violations(spec)
    if policy is not None:
        found += policy_violations(spec, policy)
    return found


def describe(found: Iterable[Violation]) -> str:
    """One message for a condition or an Event."""
    return "; ".join(str(v) for v in found)


__all__ = [
    "POLICY_KEYS",
    "Policy",
    "PolicyError",
    "Violation",
    "describe",
    "image_allowed",
    "parse_policy",
    "policy_violations",
    "read_policy_dir",
    "structural_violations",
    "violations",
]
