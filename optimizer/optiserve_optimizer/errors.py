"""Typed errors: each names the pass that failed and the cause; only ``main`` maps them to exits."""

from __future__ import annotations


class OptimizerError(Exception):
    """A failure the user can act on. ``str()`` reads ``[pass] cause``."""

    exit_code = 2

    def __init__(self, pass_name: str, cause: str) -> None:
        super().__init__(f"[{pass_name}] {cause}")
        self.pass_name = pass_name
        self.cause = cause


class SpecError(OptimizerError):
    """The spec file is missing, unreadable or invalid."""


class SettingsError(SpecError):
    """A pass was given settings it does not know or cannot use."""


class ModelLoadError(OptimizerError):
    """The model is missing, corrupt or cannot be exported."""


class DigestMismatchError(ModelLoadError):
    """The model's sha256 differs from the pinned one."""


class DataError(OptimizerError):
    """Eval, calibration or training data is missing or has the wrong names, shape or dtype."""


class UnsupportedOpError(OptimizerError):
    """The chosen quantizer or builder cannot handle an op of the model."""


class PassFailedError(OptimizerError):
    """A pass ran but its output is unusable (e.g. outputs differ from the source)."""


class MissingDependencyError(OptimizerError):
    """A library the pass needs (tensorrt, a GPU) is not available here."""

    exit_code = 3
