"""Optimizer benchmark on this machine's CPU: MiniLM and the digits CNN, side by side.

For each model: PyTorch eager FP32, onnxruntime FP32, INT8 dynamic, INT8 static (QDQ), and
pruned + INT8. Reports latency p50 at batch 1, throughput at batch 32, model size and the
accuracy delta against PyTorch eager; writes ``benchmarks/results/optimizer.md`` and a PNG.

    OPTISERVE_THREADS=2 python benchmarks/optimizer_bench.py [--quick]

Targets reported against: MiniLM INT8 >= 2x PyTorch-eager throughput at batch 32 with mean
cosine >= 0.99 and >= 3.5x smaller; structured-pruned + INT8 CNN >= 2x faster than PyTorch
eager with top-1 drop <= 1 point after recovery.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "optimizer")]

from optiserve.api import OptimizationSpec, SourceSpec  # noqa: E402
from optiserve_optimizer.artifact import ModelArtifact, PassContext  # noqa: E402
from optiserve_optimizer.evaluate import mean_cosine  # noqa: E402
from optiserve_optimizer.measure import Conditions, measure  # noqa: E402
from optiserve_optimizer.onnx_utils import threads  # noqa: E402
from optiserve_optimizer.progress import Progress  # noqa: E402
from optiserve_optimizer.registry import pass_for  # noqa: E402
from optiserve_optimizer.runners import onnx_runner, run_all  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MEASURED: list[tuple[str, Conditions]] = []  # each model's measurement conditions


@dataclass
class Row:
    model: str
    variant: str
    p50_ms: float
    throughput: float
    eager_range: str  # per-round range of throughput / eager's
    size_bytes: int
    quality: float  # top-1 accuracy (CNN) or mean cosine vs eager (MiniLM)


def run_steps(
    ctx: PassContext, steps: list[tuple[str, dict[str, Any]]], start: ModelArtifact | None = None
) -> ModelArtifact:
    artifact = start
    for name, config in steps:
        ctx.step_label = f"{name}{sorted(config.items())}"
        with ctx.progress.step("bench", name):
            artifact = pass_for(name).run(artifact, config, ctx).artifact
    assert artifact is not None
    return artifact


def interleaved(
    runners: dict[str, Callable[[Any], Any]],
    arrays: dict[str, Any],
    iterations: int,
    rounds: int = 5,
) -> tuple[dict[str, tuple[float, float, str]], Conditions]:
    """(p50 ms at batch 1, samples/s at batch 32, per-round range vs eager) per variant, and the
    conditions: the optimizer's own measurement (``optiserve_optimizer.measure``), so this
    table and the optimizer's report are measured the same way."""
    result = measure(
        runners, arrays, [1, 32], warmup=3, iterations=iterations, rounds=rounds, threads=threads()
    )
    eager = next(iter(runners))
    return {
        name: (
            result.timings[name].p50_ms,
            result.timings[name].throughput,
            result.speedup(name, eager).range_text(),
        )
        for name in runners
    }, result.conditions


def digits_rows(work: Path, iterations: int) -> list[Row]:
    import torch

    from optiserve_optimizer.models.digits import build_network, make_digits

    files = make_digits(work / "digits", epochs=15, width=64)
    with np.load(files.eval) as data:
        x, labels = data["input"], data["labels"]
    arrays = {"input": x}
    eager = build_network(64)
    scripted = torch.jit.load(str(files.model))  # type: ignore[no-untyped-call]
    eager.load_state_dict(scripted.state_dict())
    eager.eval()

    def eager_run(feed: Any) -> list[Any]:
        with torch.no_grad():
            return [eager(torch.from_numpy(feed["input"])).numpy()]

    def top1(outputs: list[Any]) -> float:
        return float((outputs[0].argmax(axis=1) == labels).mean())

    runners: dict[str, Callable[[Any], Any]] = {"pytorch-eager-fp32": eager_run}
    sizes = {"pytorch-eager-fp32": files.model.stat().st_size}
    spec = OptimizationSpec.model_validate({"accuracy": {"dataset": str(files.eval)}})
    ctx = PassContext(
        SourceSpec(uri=str(files.model), format="torchscript"),
        spec,
        work / "digits-work",
        Progress(),
    )
    original = run_steps(ctx, [("load_export", {})])
    ctx.original = original
    basic = run_steps(ctx, [("graph_opt", {"level": "basic"})], original)
    static = {
        "precision": "int8",
        "method": "static",
        "calibration": str(files.train),
        "samples": 256,
        "calibrate": "minmax",
    }
    pruned = run_steps(
        ctx,
        [
            ("prune", {"method": "structured", "sparsity": 0.5}),
            (
                "recover",
                {
                    "method": "distill",
                    "epochs": 5,
                    "learningRate": 1e-3,
                    "dataset": str(files.train),
                    "keepZeros": False,
                },
            ),
            ("graph_opt", {"level": "basic"}),
        ],
        original,
    )
    variants = {
        "onnxruntime-fp32": run_steps(ctx, [("graph_opt", {"level": "extended"})], original),
        "int8-dynamic": run_steps(
            ctx, [("quantize", {"precision": "int8", "method": "dynamic"})], basic
        ),
        "int8-static": run_steps(ctx, [("quantize", static)], basic),
        "pruned-structured+recovery (fp32)": pruned,
        "pruned-structured+recovery+int8-static": run_steps(ctx, [("quantize", static)], pruned),
    }
    for name, artifact in variants.items():
        runners[name] = onnx_runner(artifact.onnx)
        sizes[name] = artifact.onnx.stat().st_size
    timing, conditions = interleaved(runners, arrays, iterations)
    MEASURED.append(("digits-cnn", conditions))
    return [
        Row("digits-cnn", name, *timing[name], sizes[name], top1(run_all(run, arrays, 64)))
        for name, run in runners.items()
    ]


def minilm_rows(work: Path, iterations: int, eval_count: int) -> list[Row]:
    import torch

    from optiserve_optimizer.models.minilm import INPUTS, make_minilm, pooled_encoder

    files = make_minilm(work / "minilm", eval_count=eval_count, calib_count=128)
    with np.load(files.eval) as data:
        arrays = {name: data[name] for name in INPUTS}
    encoder = pooled_encoder()

    def eager_run(feed: Any) -> list[Any]:
        with torch.no_grad():
            return [encoder(*[torch.from_numpy(feed[n]) for n in INPUTS]).numpy()]

    reference = run_all(eager_run, arrays, 32)[0]
    weights_bytes = sum(p.numel() * p.element_size() for p in encoder.parameters())
    runners: dict[str, Callable[[Any], Any]] = {"pytorch-eager-fp32": eager_run}
    sizes = {"pytorch-eager-fp32": weights_bytes}
    spec = OptimizationSpec.model_validate({"accuracy": {"dataset": str(files.eval)}})
    ctx = PassContext(
        SourceSpec(uri=str(files.model), format="onnx"), spec, work / "minilm-work", Progress()
    )
    original = run_steps(ctx, [("load_export", {})])
    basic = run_steps(ctx, [("graph_opt", {"level": "basic"})], original)
    dynamic = {"precision": "int8", "method": "dynamic"}
    static = {
        "precision": "int8",
        "method": "static",
        "calibration": str(files.calibration),
        "samples": 64,
        "calibrate": "minmax",
    }
    pruned = run_steps(
        ctx,
        [("prune", {"method": "magnitude", "sparsity": 0.3}), ("graph_opt", {"level": "basic"})],
        original,
    )
    variants = {
        "onnxruntime-fp32": run_steps(ctx, [("graph_opt", {"level": "extended"})], original),
        "int8-dynamic": run_steps(ctx, [("quantize", dynamic)], basic),
        "int8-static": run_steps(ctx, [("quantize", static)], basic),
        "pruned-magnitude-30%+int8-dynamic (no recovery: ONNX source)": run_steps(
            ctx, [("quantize", dynamic)], pruned
        ),
    }
    for name, artifact in variants.items():
        runners[name] = onnx_runner(artifact.onnx)
        sizes[name] = artifact.onnx.stat().st_size
    timing, conditions = interleaved(runners, arrays, iterations)
    MEASURED.append(("minilm", conditions))
    return [
        Row(
            "minilm",
            name,
            *timing[name],
            sizes[name],
            mean_cosine(reference, run_all(run, arrays, 32)[0]),
        )
        for name, run in runners.items()
    ]


def table(rows: list[Row]) -> str:
    lines = [
        "| model | variant | p50 ms (b=1) | throughput/s (b=32) | vs eager (per-round range) | "
        "size MB | "
        "size ratio | quality | delta |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = next(r for r in rows if r.model == row.model and r.variant.startswith("pytorch"))
        quality = "top-1" if row.model == "digits-cnn" else "cosine"
        delta = row.quality - base.quality
        lines.append(
            f"| {row.model} | {row.variant} | {row.p50_ms:.3f} | {row.throughput:.1f} | "
            f"{row.throughput / base.throughput:.2f}x ({row.eager_range}) | "
            f"{row.size_bytes / 1e6:.2f} | "
            f"{base.size_bytes / row.size_bytes:.2f}x | {quality} {row.quality:.4f} | "
            f"{delta:+.4f} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[Row]) -> list[str]:
    def find(model: str, variant: str) -> Row:
        return next(r for r in rows if r.model == model and r.variant == variant)

    out = []
    eager = find("minilm", "pytorch-eager-fp32")
    for variant in ("int8-dynamic", "int8-static"):
        r = find("minilm", variant)
        ok = (
            r.throughput >= 2 * eager.throughput
            and r.quality >= 0.99
            and eager.size_bytes / r.size_bytes >= 3.5
        )
        out.append(
            f"- MiniLM {variant}: {r.throughput / eager.throughput:.2f}x eager throughput "
            f"(target >= 2x), mean cosine {r.quality:.4f} (>= 0.99), "
            f"{eager.size_bytes / r.size_bytes:.2f}x smaller (>= 3.5x): "
            f"{'MET' if ok else 'NOT MET'}"
        )
    cnn_eager = find("digits-cnn", "pytorch-eager-fp32")
    r = find("digits-cnn", "pruned-structured+recovery+int8-static")
    drop = (cnn_eager.quality - r.quality) * 100
    ok = r.throughput >= 2 * cnn_eager.throughput and drop <= 1.0
    out.append(
        f"- Digits CNN structured-pruned + recovery + INT8: "
        f"{r.throughput / cnn_eager.throughput:.2f}x eager throughput at batch 32, "
        f"{cnn_eager.p50_ms / r.p50_ms:.2f}x at batch 1 (target >= 2x), top-1 drop "
        f"{drop:.2f} points (<= 1): {'MET' if ok else 'NOT MET'}"
    )
    return out


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r.model for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4.5))
    for ax, model in zip(np.atleast_1d(axes), models, strict=True):
        mine = [r for r in rows if r.model == model]
        ax.barh([r.variant for r in mine], [r.throughput for r in mine], color="tab:blue")
        ax.set_xlabel("samples/s at batch 32 (higher is better)")
        ax.set_title(model)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations and sentences")
    args = parser.parse_args()
    iterations = 10 if args.quick else 40
    import torch

    torch.set_num_threads(threads())
    with tempfile.TemporaryDirectory() as tmp:
        rows = digits_rows(Path(tmp), iterations)
        rows += minilm_rows(Path(tmp), iterations, 64 if args.quick else 256)
    report = "\n".join(
        [
            "# Optimizer benchmark (CPU)",
            "",
            f"`OPTISERVE_THREADS={threads()} python benchmarks/optimizer_bench.py"
            f"{' --quick' if args.quick else ''}`, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Latency: median of "
            "single-sample runs; throughput at batch 32, median of interleaved rounds "
            "(optiserve_optimizer.measure, as in the optimizer's report). Quality: top-1 on the "
            "held-out digits, mean cosine against eager for MiniLM (64-token padded sentences). "
            "Size: model file (eager MiniLM: fp32 weights).",
            "",
            *(f"- {model}: measured on {conditions.line()}" for model, conditions in MEASURED),
            "",
            table(rows),
            "",
            "## Targets",
            "",
            *verdicts(rows),
            "",
        ]
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "optimizer.md").write_text(report)
    plot(rows, RESULTS / "optimizer.png")
    print(report)


if __name__ == "__main__":
    main()
