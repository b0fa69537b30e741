"""Step name → pass. Each pass module is imported on first use; a name is registered once.

The loaders are typed ``() -> type[Pass]``, so mypy checks every pass against the ``Pass``
protocol (``artifact.py``): a ``name``, a ``settings_type`` and ``run``.
"""

from __future__ import annotations

from collections.abc import Callable

from optiserve_optimizer import plan
from optiserve_optimizer.artifact import Pass

Loader = Callable[[], type[Pass]]
_LOADERS: dict[str, Loader] = {}


def register(name: str, loader: Loader) -> None:
    """Adds a pass; a second pass under a taken name is refused, never silently replaced."""
    if name in _LOADERS:
        raise ValueError(f"a pass named {name!r} is already registered")
    _LOADERS[name] = loader


def registered() -> list[str]:
    return sorted(_LOADERS)


def pass_for(step_name: str) -> Pass:
    """A fresh instance of the pass registered as ``step_name``."""
    try:
        loader = _LOADERS[step_name]
    except KeyError:
        raise KeyError(f"no pass named {step_name!r} (registered: {registered()})") from None
    made = loader()()
    if made.name != step_name:  # a mis-wired table would run the wrong pass under this name
        raise ValueError(f"the pass registered as {step_name!r} calls itself {made.name!r}")
    return made


def _load_export() -> type[Pass]:
    from optiserve_optimizer.passes.load_export import LoadExport

    return LoadExport


def _graph_opt() -> type[Pass]:
    from optiserve_optimizer.passes.graph_opt import GraphOpt

    return GraphOpt


def _prune() -> type[Pass]:
    from optiserve_optimizer.passes.pruning import Prune

    return Prune


def _recover() -> type[Pass]:
    from optiserve_optimizer.passes.recovery import Recover

    return Recover


def _quantize() -> type[Pass]:
    from optiserve_optimizer.passes.quantize import Quantize

    return Quantize


def _shapes() -> type[Pass]:
    from optiserve_optimizer.passes.shapes import Shapes

    return Shapes


def _tensorrt() -> type[Pass]:
    from optiserve_optimizer.passes.tensorrt_build import TensorRTBuild

    return TensorRTBuild


def _prune_transformer() -> type[Pass]:
    from optiserve_optimizer.passes.hf_compress import PruneTransformer

    return PruneTransformer


def _drop_layers() -> type[Pass]:
    from optiserve_optimizer.passes.hf_compress import DropLayers

    return DropLayers


def _distill() -> type[Pass]:
    from optiserve_optimizer.passes.hf_compress import Distill

    return Distill


def _fuse_transformer() -> type[Pass]:
    from optiserve_optimizer.passes.hf_fusion import TransformerFusion

    return TransformerFusion


for _name, _loader in (
    (plan.LOAD_EXPORT, _load_export),
    (plan.GRAPH_OPT, _graph_opt),
    (plan.PRUNE, _prune),
    (plan.RECOVER, _recover),
    (plan.QUANTIZE, _quantize),
    (plan.SHAPES, _shapes),
    (plan.TENSORRT, _tensorrt),
    (plan.PRUNE_TRANSFORMER, _prune_transformer),
    (plan.DROP_LAYERS, _drop_layers),
    (plan.DISTILL, _distill),
    (plan.FUSE_TRANSFORMER, _fuse_transformer),
):
    register(_name, _loader)
