"""Typed failures of the local Triton runner; each message says what to do next."""

from __future__ import annotations


class ServeError(Exception):
    """Base of every local-serving failure."""


class TritonNotFoundError(ServeError):
    """No usable ``tritonserver`` (or its python backend) on this machine."""


class RepositoryError(ServeError):
    """The model repository is missing, empty or holds something this runner cannot serve."""


class TritonStartError(ServeError):
    """``tritonserver`` exited or never became ready; ``log_tail`` holds the end of its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(
            f"{message}\n--- tritonserver log (tail) ---\n{log_tail}" if log_tail else message
        )
        self.log_tail = log_tail


class ModelLoadError(TritonStartError):
    """A model in the repository failed to load; ``models`` maps its name to Triton's error."""

    def __init__(self, models: dict[str, str], log_tail: str = "") -> None:
        detail = "; ".join(f"{name}: {error}" for name, error in sorted(models.items()))
        super().__init__(f"model(s) failed to load: {detail}", log_tail)
        self.models = models


class TritonTimeoutError(TritonStartError):
    """``tritonserver`` was still not ready when the startup timeout ran out."""
