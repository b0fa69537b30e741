"""``optiserve operator``: kopf run with the operator's settings."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from optiserve_operator.memory import ALLOCATOR_ENV, object_allocator, trim_reaches_objects
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
    if not trim_reaches_objects():
        logging.getLogger("optiserve.operator").info(
            "Python objects come from %s: memory freed after a burst may stay with the process "
            "(the image sets %s; memory.py says why)",
            object_allocator(),
            " ".join(f"{k}={v}" for k, v in ALLOCATOR_ENV.items()),
        )
    memo = kopf.Memo(runtime=handlers.Runtime(settings))
    kopf.run(
        # Never kopf peering, which pauses kopf's watches but not our work queue (docs/scale.md):
        # several replicas take turns with --leader-elect. Without standalone kopf would peer
        # on its own whenever its peering CRDs happen to be installed.
        standalone=True,
        namespaces=settings.namespaces,
        clusterwide=not settings.namespaces,
        liveness_endpoint=settings.liveness,
        memo=memo,
    )
    return 0
