"""The API permissions the operator's code needs, derived from the code itself.

Three sources, each read from the real thing rather than from a hand-kept list:

1. kopf's handler registry, after importing ``optiserve_operator.handlers``: every watched
   resource needs ``list`` and ``watch``; handlers that keep state on the object (on.create,
   timers, daemons) would need ``patch`` too.
2. Calls of the ``Kube`` wrapper in the operator's modules (``self.kube.get("apps/v1",
   "Deployment", ...)``), read with ``ast``; ``KUBE_VERBS`` says which RBAC verbs each wrapper
   method uses, and a test checks it covers every public method of ``Kube``.
3. Manifests the operator writes through ``create_or_read``/``apply``: the kinds
   ``reconcile.plan`` and ``deletion.plan_deletion`` put in their plans, over scenarios that
   must exercise every renderer the operator imports (a test checks).

kopf's own needs (CRD discovery, namespaces, Events) are in ``kopf_permissions`` with the
kopf source they come from.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
OPERATOR_PACKAGE = REPO_ROOT / "operator" / "optiserve_operator"
EXAMPLE = REPO_ROOT / "examples" / "minilm-cpu-int8.yaml"


@dataclass(frozen=True, order=True)
class Permission:
    group: str  # "" for the core group
    resource: str  # plural, "/status" appended for the subresource
    verb: str

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}.{self.group or 'core'}"


# The Kube wrapper itself (operator/optiserve_operator/): its calls are its own, not the callers'.
KUBE_MODULES = ("kube.py", "kube_memo.py", "kube_paging.py", "kube_transport.py")
# RBAC verbs of each public Kube method (kube.py, kube_paging.py). apply is
# server-side apply: a PATCH, which the API server also authorizes as create when the object
# does not exist yet; on a subresource (status) the object always exists.
KUBE_VERBS: dict[str, tuple[str, ...]] = {
    "get": ("get",),
    "list": ("list",),
    # The relist sweep's listing of a watched kind (relist.py): kopf's watch of the kind
    # needs list already (kopf_handler_permissions).
    "list_names": ("list",),
    "create_or_read": ("create", "get"),
    "apply": ("patch", "create"),
    "delete": ("delete",),
    "emit_event": ("create",),
    "pod_log": ("get",),
    "json_patch": ("patch",),
    "create": ("create",),
    "replace": ("update",),
    # The start's listing of every watched child kind (cache_fill.py), which the watches'
    # list and watch already cover.
    "list_pages": ("list",),
}
# Methods whose object (and subresource) is fixed by the method itself.
KUBE_FIXED_KIND = {"emit_event": ("v1", "Event"), "pod_log": ("v1", "Pod")}
KUBE_FIXED_SUBRESOURCE = {"pod_log": "log"}
MANIFEST_METHODS = ("create_or_read", "apply", "create", "replace")
# The Lease of --leader-elect lives in the operator's own namespace, not the watched ones.
LEADER_ELECTION_MODULE = "optiserve_operator.leader"


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def plural_of(kind: str) -> str:
    from optiserve_operator.kube_transport import PLURALS

    return PLURALS[kind]


def permissions(
    api_version: str, kind: str, verbs: Iterable[str], sub: str = ""
) -> set[Permission]:
    resource = plural_of(kind) + (f"/{sub}" if sub else "")
    return {Permission(group_of(api_version), resource, verb) for verb in verbs}


# ---- 1. kopf's registry ----------------------------------------------------------------------
def kopf_handler_permissions() -> set[Permission]:
    import kopf

    importlib.import_module("optiserve_operator.handlers")
    registry = kopf.get_default_registry()
    found: set[Permission] = set()
    read_only: list[Any] = [
        *registry._watching.get_all_handlers(),
        *registry._indexing.get_all_handlers(),
    ]
    writing: list[Any] = [
        *registry._changing.get_all_handlers(),
        *registry._spawning.get_all_handlers(),
    ]
    pairs: list[tuple[Any, tuple[str, ...]]] = [(h, ("list", "watch")) for h in read_only]
    pairs += [(h, ("list", "watch", "patch")) for h in writing]
    for handler, verbs in pairs:
        selector = handler.selector
        assert selector is not None and selector.group is not None, handler
        plural = selector.plural or selector.any_name
        assert isinstance(plural, str), f"handler {handler.id}: name the resource by its plural"
        found |= {Permission(selector.group, plural, verb) for verb in verbs}
    return found


# ---- 2. calls of the Kube wrapper ------------------------------------------------------------
@dataclass(frozen=True)
class KubeCall:
    module: str
    line: int
    method: str
    api_version: str | None  # None: a manifest built elsewhere (see rendered_kinds)
    kind: str | None
    subresource: str


def kube_public_methods() -> set[str]:
    from optiserve_operator.kube import Kube

    return {
        name
        for name, member in inspect.getmembers(Kube, inspect.isfunction)
        if not name.startswith("_")
    }


def _resolve(node: ast.expr, module_globals: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in module_globals:
        return module_globals[node.id]
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, module_globals)
        return getattr(base, node.attr, None) if base is not None else None
    return None


def _dict_literal_for(name: str, function: ast.AST) -> ast.Dict | None:
    """The dict literal assigned to ``name`` in ``function`` (``body = {...}``), if any."""
    for node in ast.walk(function):
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if isinstance(value, ast.Dict) and any(
            isinstance(t, ast.Name) and t.id == name for t in targets
        ):
            return value
    return None


def _api_version_and_kind(
    node: ast.Dict, module_globals: dict[str, Any]
) -> tuple[str | None, str | None]:
    fields = {
        key.value: _resolve(value, module_globals)
        for key, value in zip(node.keys, node.values, strict=True)
        if isinstance(key, ast.Constant)
    }
    return fields.get("apiVersion"), fields.get("kind")


def _functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def kube_calls() -> list[KubeCall]:
    """Every call of a Kube method on something named ``kube`` in the operator's modules."""
    methods = kube_public_methods()
    calls: list[KubeCall] = []
    for path in sorted(OPERATOR_PACKAGE.glob("*.py")):
        if path.name in (*KUBE_MODULES, "__main__.py"):
            continue
        module_name = f"optiserve_operator.{path.stem}"
        module_globals = vars(importlib.import_module(module_name))
        tree = ast.parse(path.read_text(), filename=str(path))
        for function in _functions(tree):
            for node in ast.walk(function):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                receiver = node.func.value
                named_kube = (isinstance(receiver, ast.Attribute) and receiver.attr == "kube") or (
                    isinstance(receiver, ast.Name) and receiver.id == "kube"
                )
                if not named_kube or node.func.attr not in methods:
                    continue
                method = node.func.attr
                sub = next(
                    (
                        str(_resolve(k.value, module_globals))
                        for k in node.keywords
                        if k.arg == "subresource"
                    ),
                    KUBE_FIXED_SUBRESOURCE.get(method, ""),
                )
                api_version: str | None = None
                kind: str | None = None
                if method in KUBE_FIXED_KIND:
                    api_version, kind = KUBE_FIXED_KIND[method]
                elif method in MANIFEST_METHODS:
                    first = node.args[0] if node.args else None
                    literal = (
                        first
                        if isinstance(first, ast.Dict)
                        else _dict_literal_for(first.id, function)
                        if isinstance(first, ast.Name)
                        else None
                    )
                    if literal is not None:
                        api_version, kind = _api_version_and_kind(literal, module_globals)
                elif all(isinstance(a, ast.Subscript) for a in node.args[:2]):
                    # kube.get(manifest["apiVersion"], manifest["kind"], ...): a planned
                    # manifest read back (the kinds of planned_manifests()).
                    api_version, kind = None, None
                else:
                    api_version = _resolve(node.args[0], module_globals)
                    kind = _resolve(node.args[1], module_globals)
                    assert isinstance(api_version, str) and isinstance(kind, str), (
                        f"{path.name}:{node.lineno}: kube.{method} with an apiVersion/kind this "
                        "test cannot read; pass literals or module-level constants"
                    )
                calls.append(KubeCall(module_name, node.lineno, method, api_version, kind, sub))
    return calls


# ---- 3. manifests the plans write -----------------------------------------------------------
def _kinds_by_function(module: Any) -> dict[str, set[str]]:
    """{function: kinds of the dict literals it, or a function of the module it calls, returns}."""
    tree = ast.parse(Path(inspect.getfile(module)).read_text())
    functions = {f.name: f for f in _functions(tree)}
    own: dict[str, set[str]] = {}
    calls: dict[str, set[str]] = {}
    for name, function in functions.items():
        # Only the object a function returns counts, not dicts nested in it (scaleTargetRef).
        own[name] = {
            kind
            for node in ast.walk(function)
            if isinstance(node, ast.Return) and isinstance(node.value, ast.Dict)
            for kind in [_api_version_and_kind(node.value, vars(module))[1]]
            if isinstance(kind, str)
        }
        calls[name] = {
            node.func.id
            for node in ast.walk(function)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in functions
        }

    def closure(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        found = set(own[name])
        for callee in calls[name] - seen - {name}:
            found |= closure(callee, seen | {name})
        return found

    return {name: closure(name) for name in functions}


def renderers_used_by_operator() -> dict[str, set[str]]:
    """{renderer: the kinds it can return} for each ``render_*`` the operator imports."""
    found: dict[str, set[str]] = {}
    for path in sorted(OPERATOR_PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if not (node.module or "").startswith("optiserve.render"):
                continue
            kinds = _kinds_by_function(importlib.import_module(node.module or ""))
            for alias in node.names:
                if alias.name.startswith("render_"):
                    assert kinds.get(alias.name), f"{alias.name} renders no literal kind"
                    found[alias.name] = kinds[alias.name]
    return found


def _specs() -> list[Any]:
    """The example spec as it is, autoscaled by an HPA, autoscaled by KEDA, without keeping
    artifacts on delete, with a NetworkPolicy, and exposed by an HTTPRoute or an Ingress."""
    from optiserve.api import OptimizedModel

    document = yaml.safe_load(EXAMPLE.read_text())
    variants = [
        {},
        {"serving": {**document["spec"].get("serving", {}), "autoscaling": {"provider": "hpa"}}},
        {
            "serving": {
                **document["spec"].get("serving", {}),
                "autoscaling": {"provider": "keda", "minReplicas": 0},
            }
        },
        {"storage": {**document["spec"]["storage"], "keepArtifactsOnDelete": False}},
        {"serving": {**document["spec"].get("serving", {}), "networkPolicy": {"enabled": True}}},
        *(
            {"serving": {**document["spec"].get("serving", {}), "exposure": exposure}}
            for exposure in (
                {"httpRoute": {"parentRefs": [{"name": "gw"}], "hostnames": ["m.example.com"]}},
                {"ingress": {"host": "m.example.com"}},
            )
        ),
    ]
    return [
        OptimizedModel.model_validate({**document, "spec": {**document["spec"], **change}}).spec
        for change in variants
    ]


def planned_manifests() -> dict[str, set[tuple[str, str]]]:
    """{"create"|"apply": {(apiVersion, kind)}} the plans hold, over scenarios meant to cover
    every renderer: a new model (its Job), an optimized one (Triton and its autoscaler) and a
    deleted one whose artifacts go too (the cleanup Job)."""
    from optiserve.api.status import Artifact, OptimizedModelStatus
    from optiserve.render.kubernetes import Owner
    from optiserve_operator.deletion import plan_deletion
    from optiserve_operator.reconcile import Config, ModelState, Observed, plan, recipe_digest

    owner = Owner(name="m", namespace="ns", uid="uid")
    config = Config(optimizer_image="optimizer:test")
    found: dict[str, set[tuple[str, str]]] = {"create": set(), "apply": set()}
    for spec in _specs():
        digest = recipe_digest(owner.name, spec)
        artifact = Artifact(
            digest=digest,
            uri=f"pvc://{spec.storage.pvc}/{digest}/model_repository",
            precision="int8",
            format="onnx",
        )
        for status in (OptimizedModelStatus(), OptimizedModelStatus(artifact=artifact)):
            model = ModelState(owner=owner, generation=1, annotations={}, spec=spec, status=status)
            result = plan(Observed(model=model), "2026-01-01T00:00:00Z", config)
            found["create"] |= {(m["apiVersion"], m["kind"]) for m in result.create}
            found["apply"] |= {(m["apiVersion"], m["kind"]) for m in result.apply}
            deletion = plan_deletion(model, None, set(), config)
            found["create"] |= {(m["apiVersion"], m["kind"]) for m in deletion.create}
    return found


# ---- what kopf itself needs ------------------------------------------------------------------
def kopf_permissions(*, namespaced: bool) -> tuple[set[Permission], set[Permission]]:
    """(cluster-scoped, per watched namespace) permissions of the kopf framework itself.

    From kopf's source (kopf/_core/reactor/observation.py, posting.py): it watches CRDs to
    notice served resources change; when given namespaces it lists and watches namespaces to
    match them; it posts core/v1 Events. kopf always runs standalone (main.py): no peering.
    """
    cluster = {
        Permission("apiextensions.k8s.io", "customresourcedefinitions", v)
        for v in ("list", "watch")
    }
    per_namespace = {Permission("", "events", "create")}
    if namespaced:
        cluster |= {Permission("", "namespaces", v) for v in ("list", "watch")}
    return cluster, per_namespace


def owner_reference_permissions() -> set[Permission]:
    """Setting ``blockOwnerDeletion`` on a child needs ``update`` on the owner's finalizers
    where the OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift)."""
    from optiserve.api import API_VERSION, KIND
    from optiserve.render.kubernetes import Owner

    reference = Owner(name="m", namespace="ns", uid="uid").reference()
    if not reference.get("blockOwnerDeletion"):
        return set()
    assert (reference["apiVersion"], reference["kind"]) == (API_VERSION, KIND)
    return permissions(API_VERSION, KIND, ("update",), "finalizers")


def operator_permissions() -> set[Permission]:
    """What the operator's own code needs in every namespace it watches."""
    from optiserve.api import KIND

    needed = kopf_handler_permissions() | owner_reference_permissions()
    planned = planned_manifests()
    for call in kube_calls():
        if call.module == LEADER_ELECTION_MODULE:
            continue
        verbs = KUBE_VERBS[call.method]
        if call.subresource or call.kind == KIND:
            # A status (or finalizer) apply to an OptimizedModel the pass just read: it
            # exists, so the apply never creates; the operator creates no OptimizedModel.
            verbs = tuple(v for v in verbs if v != "create")
        if call.kind is not None and call.api_version is not None:
            needed |= permissions(call.api_version, call.kind, verbs, call.subresource)
        else:
            key = "create" if call.method == "create_or_read" else "apply"
            for api_version, kind in planned[key]:
                needed |= permissions(api_version, kind, verbs)
    return needed


def leader_election_permissions() -> set[Permission]:
    """What ``--leader-elect`` needs in the operator's own namespace (its Lease)."""
    needed: set[Permission] = set()
    for call in kube_calls():
        if call.module == LEADER_ELECTION_MODULE:
            assert call.api_version is not None and call.kind is not None, call
            needed |= permissions(call.api_version, call.kind, KUBE_VERBS[call.method])
    return needed


def rules_to_permissions(rules: Iterable[dict[str, Any]]) -> set[Permission]:
    return {
        Permission(group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }
