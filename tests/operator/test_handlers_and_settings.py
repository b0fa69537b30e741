"""The kopf wiring keeps its promises, and the command line parses into settings."""

from __future__ import annotations

import kopf
import pytest

from optiserve_operator import handlers
from optiserve_operator.settings import parse_settings


def test_only_watch_handlers_so_kopf_never_writes_to_user_objects() -> None:
    registry = kopf.get_default_registry()
    assert handlers.model_event is not None  # imported: the decorators have run
    # No create/update/delete handlers, timers or daemons: nothing that needs kopf's finalizer
    # or its bookkeeping annotations on the OptimizedModel.
    assert registry._changing.get_all_handlers() == []
    assert registry._spawning.get_all_handlers() == []
    watched = {
        (h.selector.group, h.selector.any_name)
        for h in registry._watching.get_all_handlers()
        if h.selector is not None
    }
    # The model, every kind of child it writes (a deleted or edited one is repaired at once),
    # the optimizer's pods (one that cannot start is reported at once), and the children a
    # pass only reads (their watches fill the cache passes read from: child_cache.py).
    assert watched == {
        ("optiserve.io", "optimizedmodels"),
        ("batch", "jobs"),
        ("apps", "deployments"),
        ("", "services"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("", "pods"),
        ("policy", "poddisruptionbudgets"),
        ("networking.k8s.io", "networkpolicies"),
        ("", "configmaps"),
        ("networking.k8s.io", "ingresses"),
    }
    indexed = {
        (h.selector.group, h.selector.any_name)
        for h in registry._indexing.get_all_handlers()
        if h.selector is not None
    }
    # No kopf index: kopf would hold every listed object until every indexed kind is listed
    # (the cache is filled by the start's own listings instead: cache_fill.py).
    assert indexed == set()


def test_the_api_server_streams_only_our_children_and_optimizer_pods() -> None:
    from kopf._cogs.structs.references import Resource  # kopf's own type for a watched kind

    settings = kopf.OperatorSettings()
    handlers.filter_watches_on_the_server(settings)
    selectors = settings.watching.label_selectors
    ours = "app.kubernetes.io/managed-by=optiserve"
    for group, version, plural in (
        *handlers.CHILD_RESOURCES,
        *handlers.READ_ONLY_CHILD_RESOURCES,
    ):
        assert selectors.collect(Resource(group, version, plural)) == [ours]
    assert selectors.collect(Resource("", "v1", "pods")) == [
        f"{ours},app.kubernetes.io/component=optimizer,optiserve.io/model"
    ]
    # The models themselves are not filtered: every OptimizedModel is ours.
    assert selectors.collect(Resource("optiserve.io", "v1alpha1", "optimizedmodels")) == []
    assert selectors.collect(Resource("", "v1", "secrets")) == []


def _child(*refs: dict[str, object]) -> dict[str, object]:
    return {"metadata": {"name": "svc", "namespace": "ml", "ownerReferences": list(refs)}}


MODEL_REF = {
    "apiVersion": "optiserve.io/v1alpha1",
    "kind": "OptimizedModel",
    "name": "digits",
    "uid": "u1",
    "controller": True,
}


def test_a_child_event_maps_to_its_controlling_model_by_owner_reference() -> None:
    assert handlers.owner_key(_child(MODEL_REF)) == ("ml", "digits")
    # Another controller's object, a non-controller reference, or no reference: not ours.
    other = {**MODEL_REF, "apiVersion": "apps/v1", "kind": "ReplicaSet"}
    assert handlers.owner_key(_child(other)) is None
    assert handlers.owner_key(_child({**MODEL_REF, "controller": False})) is None
    assert handlers.owner_key(_child()) is None
    assert handlers.owner_key({}) is None
    # A kind of the same name from another group is not ours either.
    assert handlers.owner_key(_child({**MODEL_REF, "apiVersion": "example.com/v1"})) is None
    assert handlers.owner_key(_child(other, MODEL_REF)) == ("ml", "digits")


def test_settings_from_the_command_line() -> None:
    settings = parse_settings(
        [
            "--namespace",
            "a",
            "-n",
            "b",
            "--standalone",
            "--liveness",
            "http://0.0.0.0:8080/healthz",
            "--metrics-port",
            "9090",
            "--log-format",
            "json",
            "--workers",
            "2",
        ]
    )
    assert settings.namespaces == ("a", "b")
    assert settings.metrics_port == 9090  # --standalone is accepted (and ignored)
    assert settings.liveness == "http://0.0.0.0:8080/healthz"
    assert (settings.log_format, settings.workers) == ("json", 2)
    assert parse_settings([]).namespaces == ()


def test_bad_flags_are_refused() -> None:
    with pytest.raises(SystemExit):
        parse_settings(["--workers", "0"])
    with pytest.raises(SystemExit):
        parse_settings(["--log-format", "xml"])


def test_parsing_the_flags_imports_no_kubernetes_client() -> None:
    """main.run_with sets KUBECONFIG from --kubeconfig after parsing the flags and before the
    kubernetes client is imported (it reads KUBECONFIG once, at import, and kopf logs in
    through it): the settings module must not pull the client in."""
    import subprocess
    import sys

    probe = (
        "import sys; from optiserve_operator.settings import parse_settings; "
        "parse_settings(['--kubeconfig', '/k']); print('kubernetes' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": ":".join(sys.path)},
    )
    assert result.stdout.strip() == "False"
