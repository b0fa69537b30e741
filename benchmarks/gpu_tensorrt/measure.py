"""Measurement helpers of bench.py: device-resident engine runner, interleaved timing, quality,
the markdown table."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BATCH = 32


def engine_runner(plan: Path, feed: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    """The engine with device-resident inputs and outputs (no host copies in the timing)."""
    import numpy as np
    import tensorrt as trt
    import torch

    from optiserve_optimizer.passes.tensorrt_build import _Logger

    logger = _Logger(lambda line: print(line, flush=True))
    runtime = trt.Runtime(logger.trt_logger)
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    keep_alive = (logger, runtime, engine)  # TensorRT holds raw pointers to these
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    dtypes = {
        n: torch.from_numpy(np.empty(0, trt.nptype(engine.get_tensor_dtype(n)))).dtype
        for n in outputs
    }

    def run(batch: dict[str, Any]) -> Any:
        assert keep_alive
        for name in names:
            if name not in outputs:
                context.set_input_shape(name, trt.Dims(tuple(batch[name].shape)))
                context.set_tensor_address(name, batch[name].data_ptr())
        result = {}
        for name in outputs:
            result[name] = torch.empty(
                tuple(context.get_tensor_shape(name)), dtype=dtypes[name], device="cuda"
            )
            context.set_tensor_address(name, result[name].data_ptr())
        # On torch's stream: ordered after the inputs, before whatever reads the output, and
        # timed like eager (no synchronisation per call).
        if not context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError(f"TensorRT failed to run {plan.name}")
        return result[outputs[0]].float()

    del feed
    return run


def interleaved(
    runners: dict[str, Callable[[dict[str, Any]], Any]],
    feed: dict[str, Any],
    rounds: int,
    iters: int,
) -> dict[str, list[float]]:
    """Items per second of each runner, per round; the runners alternate within every round."""
    import torch

    for run in runners.values():
        for _ in range(5):
            run(feed)
    torch.cuda.synchronize()
    batch = next(iter(feed.values())).shape[0]
    per_round: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            for _ in range(iters):
                run(feed)
            torch.cuda.synchronize()
            per_round[name].append(batch * iters / (time.perf_counter() - start))
    return per_round


def to_cuda(arrays: dict[str, Any], rows: slice) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(v[rows]).cuda() for k, v in arrays.items() if k != "labels"}


def quality(
    model: str, runner: Callable[[dict[str, Any]], Any], reference: Any, arrays: dict[str, Any]
) -> float:
    """MiniLM: mean cosine vs eager FP32; digits: top-1 accuracy on the labels."""
    import torch

    total = len(next(iter(arrays.values())))
    outs = torch.cat([runner(to_cuda(arrays, slice(s, s + BATCH))) for s in range(0, total, BATCH)])
    if model == "minilm":
        return float(torch.nn.functional.cosine_similarity(outs, reference).mean())
    labels = torch.from_numpy(arrays["labels"]).cuda()
    return float((outs.argmax(1) == labels).float().mean())


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"GPU: {results['gpu']} (sm {results['computeCapability']}) · torch "
        f"{results['versions']['torch']} · TensorRT {results['versions']['tensorrt']} "
        f"(libraries: {results.get('libraries', 'not recorded')})",
        "",
        "| model | variant | batch | items/s median (min-max of rounds) | vs eager fp32 "
        "| b=1 ms (mean of 50) | cosine / top-1 | build s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["rows"]:
        built = f"{r['buildSeconds']:.1f}" if r["buildSeconds"] else ""
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['batch']} | {r['throughput']:,.0f} "
            f"({r['min']:,.0f}-{r['max']:,.0f}) | {r['vsEagerFp32']:.2f}x | "
            f"{r['latencyMsB1']:.3f} | {r['quality']:.5f} | {built} |"
        )
    cache = results.get("timingCache")
    if cache:
        lines += [
            "",
            f"MiniLM FP16 engine build: cold {cache['coldSeconds']:.1f} s "
            f"({cache['coldStatus']}), warm {cache['warmSeconds']:.1f} s "
            f"({cache['warmStatus']}): {cache['speedup']:.1f}x",
        ]
    for failure in results.get("failures", []):
        lines.append(f"\nFAILED {failure['model']} {failure['variant']}: {failure['error']}")
    for run in results.get("pipeline", []):
        lines += ["", f"Optimizer pipeline on digits, TensorRT enabled: {json.dumps(run)}"]
    return "\n".join(lines) + "\n"
