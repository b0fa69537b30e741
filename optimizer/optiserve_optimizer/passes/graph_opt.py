"""onnxruntime offline graph optimization, outputs compared with the input model.

``basic`` (constant folding, redundant nodes) keeps standard ops, so quantizers and TensorRT
still recognise every node; ``extended`` adds onnxruntime's fused contrib ops (faster on
onnxruntime, but only onnxruntime can run them) and is used when nothing follows.
"""

from __future__ import annotations

from optiserve_optimizer.artifact import ModelArtifact, PassContext, PassResult
from optiserve_optimizer.errors import PassFailedError
from optiserve_optimizer.onnx_utils import compare_outputs, providers_for, session
from optiserve_optimizer.settings import GraphOptSettings, PassConfig

NAME = "graph_opt"
TOLERANCE = 1e-3


class GraphOpt:
    name = NAME
    settings_type = GraphOptSettings

    def run(self, artifact: ModelArtifact, config: PassConfig, ctx: PassContext) -> PassResult:
        import onnxruntime as ort

        settings = GraphOptSettings.of(config, NAME)
        level = settings.level
        out = ctx.output(artifact, f"graph-opt-{level}.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            if level == "extended"
            else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        )
        options.optimized_model_filepath = str(out)
        options.log_severity_level = 3
        providers = list(providers_for(settings.device))
        available = set(ort.get_available_providers())
        ort.InferenceSession(
            str(artifact.onnx), options, providers=[p for p in providers if p in available]
        )
        before_sess = session(artifact.onnx, level="disable")
        feed = ctx.sample_feed([i.name for i in before_sess.get_inputs()], rows=8)
        diff = compare_outputs(
            before_sess.run(None, feed), session(out, level="disable").run(None, feed)
        )
        if diff > TOLERANCE:
            raise PassFailedError(NAME, f"optimized graph differs by {diff:.3g} (> {TOLERANCE})")
        before = artifact.onnx.stat().st_size
        return PassResult(
            artifact.evolve(ctx.step_label or NAME, onnx=out),
            {
                "level": level,
                "maxRelDiff": diff,
                "bytes": out.stat().st_size,
                "bytesBefore": before,
            },
        )
