"""``optiserve operator``: kopf run with the operator's settings."""

from __future__ import annotations

import os
from collections.abc import Sequence

from optiserve_operator.settings import OperatorSettings, parse_settings


def run_operator(argv: Sequence[str]) -> int:
    """Run until SIGINT/SIGTERM; the exit status for the CLI."""
    settings = parse_settings(argv)
    return run_with(settings)


def run_with(settings: OperatorSettings) -> int:
    if settings.kubeconfig:
        # Before kopf and the kubernetes client are imported: the client reads KUBECONFIG
        # once, at import, and kopf's login goes through it.
        os.environ["KUBECONFIG"] = settings.kubeconfig
    import kopf

    from optiserve_operator import handlers  # registers the handlers with kopf

    log_formats = {
        "plain": kopf.LogFormat.PLAIN,
        "full": kopf.LogFormat.FULL,
        "json": kopf.LogFormat.JSON,
    }
    kopf.configure(verbose=settings.verbose, log_format=log_formats[settings.log_format])
    memo = kopf.Memo(runtime=handlers.Runtime(settings))
    kopf.run(
        standalone=settings.standalone,
        namespaces=settings.namespaces,
        clusterwide=not settings.namespaces,
        liveness_endpoint=settings.liveness,
        # Naming a peering object makes peering mandatory in kopf (it then waits for the
        # peering CRD); without a name kopf peers when its CRDs exist and runs alone if not.
        peering_name=None if settings.standalone else settings.peering,
        priority=settings.priority,
        memo=memo,
    )
    return 0
