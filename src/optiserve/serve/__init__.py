"""Local serving: a real ``tritonserver`` on this machine for a model repository.

The heavy parts (onnxruntime, tritonclient) are imported only where they are used.
"""

from optiserve.serve.errors import (
    ModelLoadError,
    RepositoryError,
    ServeError,
    TritonNotFoundError,
    TritonStartError,
    TritonTimeoutError,
)
from optiserve.serve.local import LocalTriton

__all__ = [
    "LocalTriton",
    "ModelLoadError",
    "RepositoryError",
    "ServeError",
    "TritonNotFoundError",
    "TritonStartError",
    "TritonTimeoutError",
]
