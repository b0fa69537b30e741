"""Fetch every ``s3://`` and ``https://`` input of a run before any pass reads it.

The passes read inputs with :func:`optiserve.uri.local_path`, which maps a remote URI to its
staged copy; this module fills those copies first (the source model with ``source.sha256`` as
its pin; data files with a ``#sha256=`` fragment when they have one), so a missing key, a wrong
credential or a wrong pin fails the run before minutes of work, with the URI in the message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from optiserve.remote.errors import FetchError
from optiserve.remote.fetch import fetch
from optiserve.uri import is_remote
from optiserve_optimizer.errors import OptimizerError
from optiserve_optimizer.pipeline import RunRequest

PASS_NAME = "fetch"


class FetchFailedError(OptimizerError):
    """A remote model or data file could not be fetched (the cause names the URI and why:
    AccessDenied, NotFound, PinMismatch, TransferFailed, Unpinned)."""


def remote_inputs(request: RunRequest) -> list[tuple[str, str | None]]:
    """``(uri, pin)`` of each remote input of the run, each once, in a stable order."""
    opt = request.optimization
    calibration = opt.quantization.calibration
    found: dict[str, str | None] = {}
    if is_remote(request.source.uri):
        found[request.source.uri] = request.source.sha256
    for uri in (
        opt.accuracy.dataset,
        calibration.uri if calibration else None,
        opt.recovery.dataset,
        opt.student.dataset,
    ):
        if uri is not None and is_remote(uri) and uri not in found:
            found[uri] = None
    return list(found.items())


def stage_remote_inputs(
    request: RunRequest, log: Callable[[str], None], env: Mapping[str, str] | None = None
) -> None:
    """Fetches each remote input to its staged path; a failure is a FetchFailedError."""
    for uri, pin in remote_inputs(request):
        try:
            fetch(uri, pin=pin, log=log, env=env if env is not None else os.environ)
        except FetchError as exc:
            raise FetchFailedError(PASS_NAME, f"{exc.reason}: {exc}") from None
