"""Pod-level fields shared by the Job and the serving Deployment: tolerations, node selectors,
container resources. Each is checked as the API server checks a Pod's (CEL rules in the CRD,
the same checks in ``optiserve validate``), so a bad value is refused on apply, not by a Pod.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from optiserve.api import formats
from optiserve.api.base import ApiModel, Quantity
from optiserve.api.rules import CelRule


class Toleration(ApiModel):
    """A Kubernetes toleration (GPU nodes are often tainted), checked as a Pod's would be."""

    key: str | None = Field(None, max_length=317, description="Taint key; empty: every key.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Unset: Equal.")
    value: str | None = Field(None, max_length=63, description="Only with operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate; empty: every effect."
    )
    toleration_seconds: int | None = Field(
        None, description="With NoExecute: how long the pod stays after the taint appears."
    )

    rules = (
        CelRule(
            cel="!has(self.key) || self.key == '' || ("
            + formats.cel_qualified_name("self.key")
            + ")",
            message="key must be a qualified name like example.com/gpu (a taint key)",
            field=".key",
            check=lambda t: not t.key or formats.qualified_name_ok(t.key),
        ),
        CelRule(
            cel="(has(self.key) && self.key != '') || "
            "(has(self.operator) && self.operator == 'Exists')",
            message="an empty key tolerates every taint and needs operator: Exists",
            field=".operator",
            check=lambda t: bool(t.key) or t.operator == "Exists",
        ),
        CelRule(
            cel="!has(self.value) || self.value == '' || "
            "!has(self.operator) || self.operator == 'Equal'",
            message="value is only compared with operator: Equal; leave it out with Exists",
            field=".value",
            check=lambda t: not t.value or t.operator in (None, "Equal"),
        ),
        CelRule(
            cel="!has(self.value) || " + formats.cel_label_value("self.value"),
            message="value must be a label value (letters, digits, '-', '_', '.'; 63 at most)",
            field=".value",
            check=lambda t: t.value is None or formats.label_value_ok(t.value),
        ),
        CelRule(
            cel="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            message="tolerationSeconds only applies to effect: NoExecute",
            field=".tolerationSeconds",
            check=lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
        ),
    )


# maxLength (and the maps' maxProperties) bound the API server's estimate of a rule's cost.
LabelValue = Annotated[str, Field(max_length=formats.LABEL_VALUE_MAX)]


def node_selector_rule(wire: str, attr: str) -> CelRule:
    """Every key of the ``wire`` map a label key and every value a label value."""
    key, value = "k", f"self.{wire}[k]"
    return CelRule(
        cel=f"!has(self.{wire}) || self.{wire}.all(k, "
        f"{formats.cel_qualified_name(key)} && {formats.cel_label_value(value)})",
        message="keys must be label keys (example.com/name) and values label values",
        field=f".{wire}",
        check=lambda m: all(
            formats.qualified_name_ok(k) and formats.label_value_ok(v)
            for k, v in getattr(m, attr).items()
        ),
    )


def _quantities_cel(wire: str) -> str:
    # Extended resources (a "/" in the name, like nvidia.com/gpu) only come in whole units.
    return (
        f"!has(self.{wire}) || self.{wire}.all(k, {formats.cel_qualified_name('k')} && "
        f"(!k.contains('/') || k.startsWith('kubernetes.io/') || "
        f"string(self.{wire}[k]).matches('^[+]?[0-9]+$')))"
    )


def _quantities_ok(quantities: dict[str, int | str]) -> bool:
    return all(
        formats.qualified_name_ok(name)
        and (
            "/" not in name
            or name.startswith("kubernetes.io/")
            or formats.matches(r"^[+]?[0-9]+$", str(quantity))
        )
        for name, quantity in quantities.items()
    )


class ResourceRequirements(ApiModel):
    """Container resources, as in a Pod: quantities not negative, GPUs in whole units."""

    limits: dict[str, Quantity] = Field(
        default_factory=dict, max_length=32, description="Most the container may use."
    )
    requests: dict[str, Quantity] = Field(
        default_factory=dict, max_length=32, description="What the scheduler reserves."
    )

    rules = (
        CelRule(
            cel=_quantities_cel("limits"),
            message="resource names are like cpu, memory or nvidia.com/gpu; "
            "extended resources (with a '/') take whole numbers",
            field=".limits",
            check=lambda r: _quantities_ok(r.limits),
        ),
        CelRule(
            cel=_quantities_cel("requests"),
            message="resource names are like cpu, memory or nvidia.com/gpu; "
            "extended resources (with a '/') take whole numbers",
            field=".requests",
            check=lambda r: _quantities_ok(r.requests),
        ),
    )
