"""Triton's dynamic batcher on the lent GPU: batching on vs off at concurrency 32 (issue 17).

Run by ``benchmarks/gpu_triton/run.sh`` on the device machine (docs/tensorrt.md's sending
recipe; the Triton of the nvidia-pytriton wheel travels as a wheel). One ``tritonserver``
serves two copies of all-MiniLM-L6-v2 (``model.py``: PyTorch FP16 on the GPU inside the python
backend, the only backend that Triton has) whose config.pbtxt the project's own renderer
writes from a ``ServingSpec``: ``minilm_batched`` with the dynamic batcher, ``minilm_single``
without it (every request its own execution). The project's load generator (async gRPC,
closed loop, warm-up excluded) drives each in turn, interleaved over rounds, at the same
concurrency with the same random 128-token requests; Triton's own statistics say what batches
formed. Writes ``triton_gpu.md`` and ``triton_gpu.json`` under --out.

Rehearse on a CPU machine with ``--requests 64 --rounds 1`` (the model falls back to the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1].parent
sys.path[:0] = [str(ROOT / "src")]

import numpy as np  # noqa: E402

from optiserve.api.serving import DynamicBatchingSpec, InstanceGroupSpec, ServingSpec  # noqa: E402
from optiserve.model_io import ModelSignature, TensorSpec  # noqa: E402
from optiserve.render.triton import render_model_config  # noqa: E402
from optiserve.serve import LocalTriton  # noqa: E402
from optiserve.serve.loadgen import LoadResult, Sample, run_load  # noqa: E402

SEQ = 128
MODELS = {"minilm_single": False, "minilm_batched": True}  # name -> dynamic batcher on


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_repository(repo: Path, weights: Path, max_batch: int, delay_us: int) -> None:
    tokens = tuple(
        TensorSpec(n, "int64", (SEQ,)) for n in ("input_ids", "attention_mask", "token_type_ids")
    )
    signature = ModelSignature(inputs=tokens, outputs=(TensorSpec("embedding", "float32", (384,)),))
    for name, batching in MODELS.items():
        serving = ServingSpec(
            max_batch_size=max_batch,
            dynamic_batching=DynamicBatchingSpec(
                enabled=batching, max_queue_delay_microseconds=delay_us
            ),
            instance_group=InstanceGroupSpec(count=1, kind="KIND_CPU"),  # placement: model.py
        )
        config = render_model_config(name, signature, serving, "python")
        config += (
            f'parameters {{\n  key: "model_dir"\n  value {{\n    string_value: "{weights}"\n'
            "  }\n}\n"
        )
        (repo / name / "1").mkdir(parents=True, exist_ok=True)
        (repo / name / "config.pbtxt").write_text(config)
        (repo / name / "1" / "model.py").write_text(
            (Path(__file__).parent / "model.py").read_text()
        )


def samples(count: int) -> list[Sample]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(count, 1, SEQ), dtype=np.int64)
    ids[:, :, 0], ids[:, :, -1] = 101, 102  # [CLS] ... [SEP]
    ones, zeros = np.ones((1, SEQ), np.int64), np.zeros((1, SEQ), np.int64)
    return [{"input_ids": i, "attention_mask": ones, "token_type_ids": zeros} for i in ids]


def row(name: str, runs: list[LoadResult]) -> dict[str, Any]:
    rps = [r.throughput_rps for r in runs]
    return {
        "model": name,
        "batching": MODELS[name],
        "throughputRps": statistics.median(rps),
        "min": min(rps),
        "max": max(rps),
        "p50Ms": statistics.median(r.latency_ms["p50"] for r in runs),
        "p99Ms": statistics.median(r.latency_ms["p99"] for r in runs),
        "meanBatch": statistics.median(r.mean_batch_size for r in runs),
        "errors": sum(r.errors for r in runs),
        "perRequestMs": runs[-1].server.per_request_ms(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm", type=Path, required=True, help="save_pretrained folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu-triton"))
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2000, help="per run and model")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--delay-us", type=int, default=500, help="max queue delay")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    repo = args.work / "repository"
    write_repository(repo, args.minilm.resolve(), args.max_batch, args.delay_us)
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU rehearsal)"
    log(f"GPU {gpu}; torch {torch.__version__}; python {platform.python_version()}")
    data = samples(256)
    runs: dict[str, list[LoadResult]] = {name: [] for name in MODELS}
    ratios = []
    with LocalTriton(repo, startup_timeout_s=300) as server:
        log(f"tritonserver ready at {server.grpc_url}: {server.models}")
        for name in MODELS:  # warm-up: CUDA kernels, the batcher, the client's channel
            run_load(server.grpc_url, name, data, args.concurrency, max(args.concurrency, 256))
        for round_no in range(args.rounds):
            for name in MODELS:
                result = run_load(server.grpc_url, name, data, args.concurrency, args.requests)
                runs[name].append(result)
                log(
                    f"round {round_no} {name}: {result.throughput_rps:,.0f} req/s, p99 "
                    f"{result.latency_ms['p99']:.1f} ms, mean batch {result.mean_batch_size:.1f}"
                )
            ratios.append(
                runs["minilm_batched"][-1].throughput_rps / runs["minilm_single"][-1].throughput_rps
            )
    results = {
        "gpu": gpu,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "logicalCpus": os.cpu_count(),
        "loadAverage": os.getloadavg()[0],
        "concurrency": args.concurrency,
        "requestsPerRun": args.requests,
        "rounds": args.rounds,
        "maxBatch": args.max_batch,
        "maxQueueDelayUs": args.delay_us,
        "rows": [row(name, r) for name, r in runs.items()],
        "batchedVsSingle": {
            "median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
        },
    }
    (args.out / "triton_gpu.json").write_text(json.dumps(results, indent=2))
    (args.out / "triton_gpu.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def markdown(results: dict[str, Any]) -> str:
    ratio = results["batchedVsSingle"]
    lines = [
        f"GPU: {results['gpu']} · torch {results['torch']} · Triton of nvidia-pytriton 0.7.0 "
        f"(python backend, MiniLM FP16 in PyTorch) · seq 128 · concurrency "
        f"{results['concurrency']} · {results['requestsPerRun']} requests per run · "
        f"{results['rounds']} interleaved rounds · max batch {results['maxBatch']}, max queue "
        f"delay {results['maxQueueDelayUs']} us · client and server on {results['logicalCpus']} "
        f"CPUs, load {results['loadAverage']:.2f}",
        "",
        "| model | dynamic batching | req/s median (min-max) | p50 ms | p99 ms | mean batch |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['model']} | {'on' if r['batching'] else 'off'} | {r['throughputRps']:,.0f} "
            f"({r['min']:,.0f}-{r['max']:,.0f}) | {r['p50Ms']:.2f} | {r['p99Ms']:.2f} | "
            f"{r['meanBatch']:.1f} |"
        )
    lines += [
        "",
        f"Batching on vs off, per round: {ratio['median']:.2f}x median "
        f"({ratio['min']:.2f}x-{ratio['max']:.2f}x); target >= 3x at concurrency 32.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
