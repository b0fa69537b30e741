"""String formats of Kubernetes and OCI, as regular expressions both halves of a rule can use.

The same pattern lands in the CRD (``pattern`` or a CEL ``matches()``, both RE2 on the API
server) and in the Python models (``re``); the expressions below use only syntax RE2 and
Python agree on (no look-around, no backreferences), so one string serves both.
"""

from __future__ import annotations

import functools
import re

# A DNS-1035 label: Service names need it, and every child of an OptimizedModel carries the
# model's name as its own name (Deployment, Service, autoscaler) or as a label value, both at
# most 63 characters. Job names (``<name>-opt-<digest>``) are shortened to fit, so 63 is the
# limit for the model's name.
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1035_LABEL_MAX = 63
# A DNS-1123 label (namespaces, claims' path segments).
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A DNS-1123 subdomain (host names of an Ingress or HTTPRoute).
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

# A qualified name (label and annotation keys, node selector keys, taint keys):
# an optional DNS subdomain prefix and "/", then 1-63 alphanumerics, "-", "_", "." inside.
_NAME_PART = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?" + _NAME_PART + "$"
)
# The prefix length is checked apart: RE2 cannot count across the dotted labels.
LONG_PREFIX = r"^[^/]{254,}/"
# A label value: empty, or up to 63 alphanumerics with "-", "_", "." inside.
LABEL_VALUE = r"^(" + _NAME_PART + ")?$"
LABEL_VALUE_MAX = 63

# A Kubernetes resource.Quantity that is not negative: a decimal number and an optional
# binary (Ki..Ei), decimal SI (n, u, m, k, M..E) or exponent suffix. Negative quantities are
# refused by every Pod, so they are refused here, before any Pod is made.
QUANTITY = r"^[+]?([0-9]+([.][0-9]*)?|[.][0-9]+)(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$"
QUANTITY_MAX_LENGTH = 64

# A strictly positive quantity (a non-zero digit somewhere in the number), or a duration with
# its unit (queueTime targets only; see ``optiserve.render.autoscaling``).
_POSITIVE_NUMBER = r"([0-9]*[1-9][0-9]*([.][0-9]*)?|[0-9]*[.][0-9]*[1-9][0-9]*)"
POSITIVE_QUANTITY_OR_DURATION = (
    r"^[+]?" + _POSITIVE_NUMBER + r"((([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?|(us|µs|ms|s))$"
)
DURATION_SUFFIX = r"[0-9.](us|µs|ms|s)$"
PLAIN_NUMBER = r"^([0-9]+([.][0-9]*)?|[.][0-9]+)$"

# An image reference as the container runtimes parse it (distribution/reference):
# [registry[:port]/]path[:tag][@digest]. The registry is a host name or an IPv4 address, with
# an optional port; path components are lower case.
_PATH_COMPONENT = r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
_HOST = r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?([.][a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
_TAG = r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
_DIGEST = r"(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
IMAGE_REFERENCE = f"^({_HOST}(:[0-9]+)?/)?{_PATH_COMPONENT}(/{_PATH_COMPONENT})*{_TAG}{_DIGEST}$"
IMAGE_REFERENCE_MAX = 512

# A relative folder: no leading "/", no empty segment; ".." segments are refused by a rule.
RELATIVE_PATH = r"^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/?)?$"
PARENT_SEGMENT = r"(^|/)[.][.](/|$)"


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # RE2's "$" is the end of the text; Python's also matches before a final newline.
    return re.compile(pattern.replace("$", r"\Z"))


def matches(pattern: str, text: str) -> bool:
    """``re.search`` with RE2's meaning of ``$``, as CEL's ``matches()`` and ``pattern`` have."""
    return _compiled(pattern).search(text) is not None


def qualified_name_ok(key: str) -> bool:
    """A label, annotation, node selector or taint key, as the API server validates it."""
    return matches(QUALIFIED_NAME, key) and not matches(LONG_PREFIX, key)


def label_value_ok(value: str) -> bool:
    return len(value) <= LABEL_VALUE_MAX and matches(LABEL_VALUE, value)


def cel_qualified_name(var: str) -> str:
    """The CEL twin of :func:`qualified_name_ok` for the string expression ``var``."""
    return f"{var}.matches('{QUALIFIED_NAME}') && !{var}.matches('{LONG_PREFIX}')"


def cel_label_value(var: str) -> str:
    """The CEL twin of :func:`label_value_ok`."""
    return f"size({var}) <= {LABEL_VALUE_MAX} && {var}.matches('{LABEL_VALUE}')"
