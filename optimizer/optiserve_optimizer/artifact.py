"""The common pass interface: an artifact goes in, a new artifact and some metrics come out."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from optiserve.api import OptimizationSpec, SourceSpec
from optiserve_optimizer.progress import Progress
from optiserve_optimizer.settings import PassConfig, PassSettings


@dataclass(frozen=True)
class ModelArtifact:
    """One model state. ``onnx`` is what runs; ``torch`` (if any) is the trainable twin of it."""

    onnx: Path
    # The source in torch whose export is ``onnx``: TorchScript (``.pt``, trainable by the
    # passes), a huggingface twin (``.safetensors``) or a torch.export program (``.pt2``).
    torch: Path | None = None
    plan: Path | None = None  # serialized TensorRT engine, once built
    precision: str = "fp32"
    history: tuple[str, ...] = ()

    def evolve(self, step: str, **changes: Any) -> ModelArtifact:
        """A copy with ``changes`` and ``step`` appended to the history."""
        return replace(self, history=(*self.history, step), **changes)

    @property
    def torchscript(self) -> Path | None:
        """``torch`` when it is TorchScript (what pruning, recovery and students edit)."""
        return self.torch if self.torch is not None and self.torch.suffix == ".pt" else None

    @property
    def served_file(self) -> Path:
        return self.plan if self.plan is not None else self.onnx


@dataclass(frozen=True)
class PassResult:
    artifact: ModelArtifact
    metrics: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class PassContext:
    """What every pass may read: the spec, a scratch folder, the original model, progress."""

    source: SourceSpec
    spec: OptimizationSpec
    work_dir: Path
    progress: Progress
    original: ModelArtifact | None = None  # the exported, unmodified model (set by the pipeline)
    shared: dict[str, Any] = field(default_factory=dict)  # cache across candidates
    step_label: str = ""  # the running step, e.g. "prune(method=2:4, sparsity=0.5)"

    def scratch(self, candidate: str, name: str) -> Path:
        folder = self.work_dir / safe_name(candidate)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def output(self, artifact: ModelArtifact, name: str) -> Path:
        """A fresh path for what the running step makes from ``artifact``."""
        key = "\n".join((*artifact.history, self.step_label))
        return self.scratch(hashlib.sha1(key.encode()).hexdigest()[:12], name)

    def sample_feed(self, input_names: list[str], rows: int) -> dict[str, Any]:
        """The first ``rows`` eval samples of the named inputs (for output comparisons)."""
        from optiserve.uri import local_path
        from optiserve_optimizer import data

        return data.load(local_path(self.spec.accuracy.dataset), input_names, limit=rows)


class Pass(Protocol):
    """A pass: ``run(artifact, settings, ctx) -> PassResult``; failures raise ``OptimizerError``.

    ``artifact`` is None for ``load_export`` and the previous step's result otherwise;
    ``config`` is the pass's ``settings_type`` or a mapping of it, validated on entry
    (unknown fields refused). The registry's loaders are typed against this protocol.
    """

    @property
    def name(self) -> str: ...

    @property
    def settings_type(self) -> type[PassSettings]: ...

    def run(self, artifact: Any, config: PassConfig, ctx: PassContext) -> PassResult: ...


def safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def path_sha256(path: Path) -> str:
    """A file's sha256; a folder's is the sha256 of its sorted ``relative-path sha256`` lines."""
    if not path.is_dir():
        return file_sha256(path)
    lines = [
        f"{p.relative_to(path).as_posix()} {file_sha256(p)}\n"
        for p in sorted(path.rglob("*"))
        if p.is_file()
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()
