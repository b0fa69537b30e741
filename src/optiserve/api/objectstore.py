"""``spec.objectStore``: how the model's ``s3://`` URIs are reached, and the pin rule for
``https://`` inputs.

The optimization Job (and, with ``storage.s3``, the pods that pull or delete artifacts) reads
these as the standard AWS variables (``AWS_ENDPOINT_URL_S3``,
``AWS_REGION``, and the keys of ``credentialsSecret`` through ``secretKeyRef``), so the same
spec runs on a laptop with the variables set by hand. The operator only names the Secret in the
pods it renders; it never reads it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from optiserve.api import formats
from optiserve.api.base import ApiModel
from optiserve.api.rules import CelRule

ENDPOINT_PATTERN = r"^https?://[^/?#@\s]+(/[^?#@\s]*)?$"
REGION_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
# The keys the credentials Secret must have (the AWS SDKs' variable names).
ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
SESSION_TOKEN = "AWS_SESSION_TOKEN"
PIN_FRAGMENT = "#sha256="
# A ConfigMap data key (k8s.io/apimachinery IsConfigMapKey): [-._a-zA-Z0-9]+, neither "." nor
# ".." nor starting with "..".
CONFIG_MAP_KEY = r"^([-_a-zA-Z0-9]|[.][-_a-zA-Z0-9])[-._a-zA-Z0-9]*$"
DEFAULT_CA_KEY = "ca.crt"


class CaBundleRef(ApiModel):
    """A PEM bundle of CA certificates kept in a ConfigMap of the model's namespace."""

    config_map: str = Field(
        max_length=253, pattern=formats.DNS1123_SUBDOMAIN, description="The ConfigMap's name."
    )
    key: str = Field(
        DEFAULT_CA_KEY,
        min_length=1,
        max_length=253,
        pattern=CONFIG_MAP_KEY,
        description="The ConfigMap key that holds the PEM certificates.",
    )


class ObjectStoreSpec(ApiModel):
    """Where the S3 API of the model's s3:// URIs is, and which credentials read it."""

    endpoint: str | None = Field(
        None,
        max_length=512,
        pattern=ENDPOINT_PATTERN,
        description="The S3 API endpoint (MinIO, Ceph, SeaweedFS, another cloud's S3): "
        "http(s)://host[:port]. Unset: AWS's endpoint of the region.",
    )
    region: str = Field(
        "us-east-1", max_length=64, pattern=REGION_PATTERN, description="The signing region."
    )
    addressing: Literal["auto", "path", "virtual"] = Field(
        "auto",
        description="path: endpoint/bucket/key (most self-hosted servers); virtual: "
        "bucket.endpoint/key (AWS); auto: path with an endpoint, virtual without.",
    )
    credentials_secret: str | None = Field(
        None,
        max_length=253,
        pattern=formats.DNS1123_SUBDOMAIN,
        description=f"A Secret in the model's namespace with the keys {ACCESS_KEY_ID} and "
        f"{SECRET_ACCESS_KEY} ({SESSION_TOKEN} optional). Only the optimization Job gets "
        "it, as environment variables (with storage.s3 also the Triton pod's artifact-pull "
        "init container and the cleanup Job; never Triton); the operator never reads it. "
        "Unset: the pod's own identity (IRSA, EKS Pod Identity) or anonymous access.",
    )
    ca_bundle: CaBundleRef | None = Field(
        None,
        description="Extra CA certificates (PEM) to trust, for a store or file server signed "
        "by a private CA. One trust setting for all of the model's remote inputs: it applies "
        "to the endpoint and to every https:// source, dataset and calibration URI, and is "
        "trusted in addition to the system's roots (public hosts keep working). The "
        "ConfigMap (only this key) is mounted read-only into the optimization Job (with "
        "storage.s3 also the artifact-pull init container and the cleanup Job; never "
        "Triton); the operator never reads it. A missing ConfigMap or key keeps those pods "
        "from starting (FailedMount); a file that holds no certificate fails the fetch.",
    )


def _pinned(uri: str | None, pin: str | None = None) -> bool:
    """An http(s) URI needs a pin; any other scheme does not."""
    return uri is None or not uri.startswith("http") or pin is not None or PIN_FRAGMENT in uri


def _pin_rule(path: str, guards: tuple[str, ...], attr: Any) -> CelRule:
    """``self.<path>``, when present and http(s), carries a ``#sha256=`` pin."""
    terms = [f"!has(self.{g})" for g in guards]
    terms += [f"!self.{path}.startsWith('http')", f"self.{path}.contains('{PIN_FRAGMENT}')"]
    cel = " || ".join(terms)
    return CelRule(
        cel=cel,
        message="an http(s) URI needs a sha256 pin: append #sha256=<64 hex digits> "
        "(a URL has no version; the pin makes sure the data is the data meant)",
        field=f".{path}",
        check=lambda s: _pinned(attr(s)),
    )


def _calibration_uri(spec: Any) -> str | None:
    calibration = spec.optimization.quantization.calibration
    return calibration.uri if calibration is not None else None


# Cross-field rules of OptimizedModelSpec (every URI field of the spec).
PIN_RULES: tuple[CelRule, ...] = (
    CelRule(
        cel="!self.source.uri.startsWith('http') || has(self.source.sha256) || "
        f"self.source.uri.contains('{PIN_FRAGMENT}')",
        message="an https:// source needs a pin: set source.sha256 (or append "
        "#sha256=<64 hex digits> to the URI)",
        field=".source.uri",
        check=lambda s: _pinned(s.source.uri, s.source.sha256),
    ),
    _pin_rule("optimization.accuracy.dataset", (), lambda s: s.optimization.accuracy.dataset),
    _pin_rule(
        "optimization.quantization.calibration.uri",
        ("optimization.quantization", "optimization.quantization.calibration"),
        _calibration_uri,
    ),
    _pin_rule(
        "optimization.recovery.dataset",
        ("optimization.recovery", "optimization.recovery.dataset"),
        lambda s: s.optimization.recovery.dataset,
    ),
    _pin_rule(
        "optimization.student.dataset",
        ("optimization.student", "optimization.student.dataset"),
        lambda s: s.optimization.student.dataset,
    ),
)
