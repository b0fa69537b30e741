"""``OptimizedModel.spec.serving.networkPolicy``: who may reach the Triton pods."""

from __future__ import annotations

from pydantic import Field

from optiserve.api import formats
from optiserve.api.base import ApiModel
from optiserve.api.rules import CelRule
from optiserve.api.spec import LabelValue


def _label_map_rule(wire: str, attr: str) -> CelRule:
    """Every key of the optional ``wire`` map a label key and every value a label value."""
    key, value = "k", f"self.{wire}[k]"
    return CelRule(
        cel=f"!has(self.{wire}) || self.{wire}.all(k, "
        f"{formats.cel_qualified_name(key)} && {formats.cel_label_value(value)})",
        message="selector keys must be label keys (example.com/name) and values label values",
        field=f".{wire}",
        check=lambda m: all(
            formats.qualified_name_ok(k) and formats.label_value_ok(v)
            for k, v in (getattr(m, attr) or {}).items()
        ),
    )


# As a NetworkPolicy peer reads them: both set, the pods matching podSelector in the namespaces
# matching namespaceSelector; only namespaceSelector, every pod of those namespaces; only
# podSelector, those pods of the model's own namespace. An empty map selects all.
class NetworkPeer(ApiModel):
    """Pods allowed to connect, by the labels of their namespace and/or their own."""

    namespace_selector: dict[str, LabelValue] | None = Field(
        None,
        max_length=32,
        description="Labels of the namespaces (kubernetes.io/metadata.name: NAME names one); "
        "{}: every namespace.",
    )
    pod_selector: dict[str, LabelValue] | None = Field(
        None, max_length=32, description="Labels of the pods; {}: every pod."
    )

    rules = (
        CelRule(
            cel="has(self.namespaceSelector) || has(self.podSelector)",
            message="a peer names namespaceSelector, podSelector or both",
            field=".namespaceSelector",
            check=lambda p: p.namespace_selector is not None or p.pod_selector is not None,
        ),
        _label_map_rule("namespaceSelector", "namespace_selector"),
        _label_map_rule("podSelector", "pod_selector"),
    )


# Off by default: a policy makes its pods refuse every connection it does not allow, so turning
# it on for existing models would cut off their clients in other namespaces (an ingress
# controller, Prometheus) and the operator cannot know who they are. Once on, an empty list
# allows the model's own namespace only (least privilege), never the whole cluster.
class NetworkPolicySpec(ApiModel):
    """A NetworkPolicy for the Triton pods: inference and metrics only from the named peers."""

    enabled: bool = Field(False, description="Render and apply the NetworkPolicy.")
    ingress_from: list[NetworkPeer] = Field(
        default_factory=list,
        max_length=16,
        description="Who may call HTTP (8000) and gRPC (8001); empty: the model's namespace.",
    )
    metrics_from: list[NetworkPeer] = Field(
        default_factory=list,
        max_length=16,
        description="Who may scrape metrics (8002), e.g. {namespaceSelector: "
        "{kubernetes.io/metadata.name: monitoring}}; empty: the model's namespace.",
    )
