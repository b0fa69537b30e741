"""ResNet-18 (torchvision) structured-pruned, distilled and INT8-quantized, against FP32.

Trains ResNet-18 on digits upsampled to ``--size`` pixels, then builds with the optimizer's own
passes: onnxruntime FP32 (graph-optimized, the baseline), INT8 static, structured-pruned FP32
and pruned + INT8 static (types chosen by the quantize pass's measurement). All variants and
the TorchScript source are timed round-robin (``int8_types.time_interleaved``: every round
runs each variant in turn, the first one rotating), at batch 1 and 32; a ratio is the FP32
baseline's time over the variant's in the same round, reported as the median and range over
the rounds. Writes ``benchmarks/results/resnet18.md``.

    OPTISERVE_THREADS=1 python benchmarks/resnet18_bench.py [--size 32] [--rounds 9]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "optimizer")]

from optiserve.api import OptimizationSpec, SourceSpec  # noqa: E402
from optiserve_optimizer.artifact import ModelArtifact, PassContext  # noqa: E402
from optiserve_optimizer.onnx_utils import threads  # noqa: E402
from optiserve_optimizer.passes import int8_types  # noqa: E402
from optiserve_optimizer.progress import Progress  # noqa: E402
from optiserve_optimizer.registry import pass_for  # noqa: E402
from optiserve_optimizer.runners import onnx_runner, run_all, torchscript_runner  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def run_steps(
    ctx: PassContext, start: ModelArtifact | None, steps: list[tuple[str, dict[str, Any]]]
) -> tuple[ModelArtifact, dict[str, Any]]:
    artifact, metrics = start, {}
    for name, config in steps:
        ctx.step_label = f"{artifact.history if artifact else ()}{name}{sorted(config.items())}"
        result = pass_for(name).run(artifact, config, ctx)
        artifact, metrics[name] = result.artifact, dict(result.metrics)
    assert artifact is not None
    return artifact, metrics


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(threads())
    load_before = os.getloadavg()[0]
    from optiserve_optimizer.models.resnet import make_resnet18

    work = Path(tempfile.mkdtemp(prefix="resnet18-bench-"))
    files = make_resnet18(work / "model", size=args.size, epochs=args.epochs)
    spec = OptimizationSpec.model_validate({"accuracy": {"dataset": str(files.eval)}})
    source = SourceSpec(uri=str(files.model), format="torchscript")
    ctx = PassContext(source, spec, work / "passes", Progress())
    original, _ = run_steps(ctx, None, [("load_export", {})])
    ctx.original = original
    static: dict[str, Any] = {
        "precision": "int8",
        "method": "static",
        "calibration": str(files.train),
    }
    static |= {"samples": 256, "calibrate": "minmax"}
    recover: dict[str, Any] = {"method": "distill", "epochs": 2, "learningRate": 1e-3}
    recover |= {"dataset": str(files.train), "keepZeros": False}
    prune = ("prune", {"method": "structured", "sparsity": 0.5})
    fp32, _ = run_steps(ctx, original, [("graph_opt", {"level": "extended"})])
    int8, int8_metrics = run_steps(
        ctx, original, [("graph_opt", {"level": "basic"}), ("quantize", static)]
    )
    recovered, prune_metrics = run_steps(ctx, original, [prune, ("recover", recover)])
    pruned, _ = run_steps(ctx, recovered, [("graph_opt", {"level": "extended"})])
    basic = ("graph_opt", {"level": "basic"})
    pruned_int8, pi8_metrics = run_steps(ctx, recovered, [basic, ("quantize", static)])
    variants = {
        "torchscript-fp32": (files.model, torchscript_runner(files.model, ["x"])),
        "onnxruntime-fp32": (fp32.onnx, onnx_runner(fp32.onnx)),
        "int8-static": (int8.onnx, onnx_runner(int8.onnx)),
        "pruned-fp32": (pruned.onnx, onnx_runner(pruned.onnx)),
        "pruned+int8-static": (pruned_int8.onnx, onnx_runner(pruned_int8.onnx)),
    }
    with np.load(files.eval) as data:
        x, labels = data["x"], data["labels"]
    top1 = {
        name: float((run_all(run, {"x": x}, 64)[0].argmax(1) == labels).mean())
        for name, (_, run) in variants.items()
    }
    timings = {}
    for batch in (1, 32):
        feed = {"x": np.ascontiguousarray(x[:batch])}
        runners = {
            name: (lambda run=run, feed=feed: run(feed)) for name, (_, run) in variants.items()
        }
        timings[batch] = int8_types.time_interleaved(runners, rounds=args.rounds)
    cpu = int8_types.cpu_facts()
    lines = [
        f"# ResNet-18 ({args.size}x{args.size} digits): structured pruning + INT8",
        "",
        f"`OPTISERVE_THREADS={threads()} python benchmarks/resnet18_bench.py --size {args.size}"
        f" --rounds {args.rounds}` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC;"
        f" CPU {cpu['model']} ({cpu['logicalCpus']} logical), ISA {' '.join(cpu['isa'])};"
        f" {threads()} thread(s); load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after.",
        "",
        f"Pruning: {prune_metrics['prune']['paramsBefore']:,} -> "
        f"{prune_metrics['prune']['paramsAfter']:,} parameters "
        f"({prune_metrics['prune']['groups']} channel groups, "
        f"{prune_metrics['prune']['coupledGroups']} coupled by residual joins).",
        f"INT8 types chosen: {int8_metrics['quantize']['int8Types']['chosen']} (unpruned), "
        f"{pi8_metrics['quantize']['int8Types']['chosen']} (pruned); trials: "
        + "; ".join(
            f"{t['types']} {t['speedupVsFp32']}x"
            for t in pi8_metrics["quantize"]["int8Types"]["trials"]
        ),
        "",
        "| variant | size MB | top-1 | top-1 drop | p50 ms b=1 | ratio b=1 (range) "
        "| p50 ms b=32 | ratio b=32 (range) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = "onnxruntime-fp32"
    for name, (path, _) in variants.items():
        cells = [name, f"{path.stat().st_size / 1e6:.2f}", f"{top1[name]:.4f}"]
        cells.append(f"{top1[base] - top1[name]:+.4f}")
        for batch in (1, 32):
            own, ref = np.asarray(timings[batch][name]), np.asarray(timings[batch][base])
            ratio = ref / own
            cells.append(f"{np.median(own):.3f}")
            cells.append(f"{np.median(ratio):.2f}x ({ratio.min():.2f}-{ratio.max():.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Ratios: {base} time / variant time per round, over {args.rounds} rounds."]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "resnet18.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
