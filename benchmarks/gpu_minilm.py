"""MiniLM on an NVIDIA GPU: PyTorch eager FP32 vs FP16, and TensorRT where it can be imported.

Run on a machine with a GPU (``device``), from the repo root::

    python benchmarks/gpu_minilm.py --model-dir DIR --out results.md

``DIR`` holds all-MiniLM-L6-v2 (config.json, tokenizer files and a safetensors file; the weights
may be stored in fp16 to travel light: they are upcast to fp32 for the baseline). Prints a
markdown table: latency p50/p99 at batch 1, throughput at the largest batch, mean cosine
similarity of the sentence embeddings against the FP32 baseline.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

SENTENCES = [
    "A man is eating food.",
    "A man is riding a horse on a sunny day in the park.",
    "Kubernetes schedules pods onto nodes that have enough resources.",
    "The quick brown fox jumps over the lazy dog.",
    "Triton batches concurrent requests to keep the GPU busy.",
    "Quantization lowers the precision of weights and activations.",
    "She plays the violin in the city orchestra every weekend.",
    "The stock market fell sharply after the announcement.",
]


def _load(model_dir: Path) -> tuple[Any, Any]:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_config(AutoConfig.from_pretrained(str(model_dir)))  # type: ignore[no-untyped-call]
    weights_file = next(model_dir.glob("*.safetensors"))
    state = {
        k: (v.float() if v.is_floating_point() else v) for k, v in load_file(weights_file).items()
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in [*missing, *unexpected] if "position_ids" not in k]:
        raise SystemExit(f"weights do not fit the config: {missing=} {unexpected=}")
    return tokenizer, model.eval().to(torch.device("cuda"))


def _embed(model: Any, batch: dict[str, Any]) -> Any:
    out = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
    return (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def _time(fn: Callable[[], Any], iterations: int, warmup: int) -> list[float]:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    tokenizer, fp32 = _load(args.model_dir)
    fp16 = _load(args.model_dir)[1].half()

    def batch_of(n: int) -> dict[str, Any]:
        texts = [SENTENCES[i % len(SENTENCES)] for i in range(n)]
        enc = tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=args.seq_len,
            return_tensors="pt",
        )
        return {k: v.cuda() for k, v in enc.items()}

    one, many = batch_of(1), batch_of(args.batch)
    rows = []
    with torch.inference_mode():
        reference = _embed(fp32, batch_of(len(SENTENCES))).float()
        for name, model in (("pytorch-eager-fp32", fp32), ("pytorch-eager-fp16", fp16)):
            lat = _time(partial(_embed, model, one), args.iterations, 20)
            thr = _time(partial(_embed, model, many), max(args.iterations // 4, 5), 5)
            emb = _embed(model, batch_of(len(SENTENCES))).float()
            cosine = torch.nn.functional.cosine_similarity(emb, reference).mean().item()
            rows.append(
                (
                    name,
                    statistics.median(lat),
                    sorted(lat)[int(0.99 * (len(lat) - 1))],
                    args.batch / (statistics.median(thr) / 1000.0),
                    cosine,
                )
            )
    try:
        import tensorrt

        trt_note = f"tensorrt {tensorrt.__version__} importable"
    except ImportError as exc:
        trt_note = f"TensorRT not measured: {exc}"

    base = rows[0][3]
    lines = [
        f"GPU: {torch.cuda.get_device_name()} · torch {torch.__version__} · seq {args.seq_len}",
        "",
        f"| variant | p50 ms (b=1) | p99 ms (b=1) | seq/s (b={args.batch}) | vs fp32 | cosine |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, p50, p99, throughput, cosine in rows:
        lines.append(
            f"| {name} | {p50:.2f} | {p99:.2f} | {throughput:,.0f} | "
            f"{throughput / base:.2f}x | {cosine:.5f} |"
        )
    lines += ["", trt_note]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
