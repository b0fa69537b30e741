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


class VersionSkewError(SpecError):
    """The operator expects another recipe digest: operator and optimizer images differ in
    version. Nothing is done; running again gives the same answer."""


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


class CorrectnessError(PassFailedError):
    """The source model itself fails a correctness check (reference outputs, padded batch)."""


CAUSE_LIMIT = 600
_CAUSE_PREFIXES = ("RuntimeError:", "ValueError:", "TypeError:", "IndexError:", "KeyError:")


def short_cause(exc: BaseException, limit: int = CAUSE_LIMIT) -> str:
    """The cause of ``exc`` in one short line, without a TorchScript (or any) traceback.

    TorchScript and onnxruntime put the interpreter's traceback in the message and the cause
    last (``...\\nRuntimeError: mat1 and mat2 must have the same dtype``); that last error line
    is kept. Otherwise the first line. Cut to ``limit`` characters at the end, never mid-cause.
    """
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line for line in lines if line.startswith(_CAUSE_PREFIXES)]
    line = causes[-1].split(":", 1)[1].strip() if causes else lines[0]
    if len(line) > limit:
        line = line[: limit - 3].rstrip() + "..."
    return line
