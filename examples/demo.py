"""`make demo`: optimize a real model, serve it on a real local Triton, load it, report.

    python examples/demo.py [--spec examples/digits-pruned-int8.yaml] [--workdir DIR]
    python examples/demo.py --spec examples/minilm-text.yaml   # strings in, embeddings out

1. builds the example models and data (examples/make_models.py) into WORKDIR/pvc/models,
   which is where the spec's ``pvc://models/...`` URIs resolve on a laptop;
2. runs the optimizer on the spec (every candidate checked against the original and timed;
   the fastest that passes is packaged as a Triton model repository; a finished artifact for
   the same recipe is reused);
3. assembles the served repository as a Triton pod's init container does (the artifact with
   the spec's serving settings: dynamic batching, response cache), starts a real
   ``tritonserver`` on it, sends concurrent gRPC traffic, and stops the server;
4. prints the named baseline, baseline vs optimized latency and throughput, the speedup with
   its per-round range and the conditions it was measured under (optiserve_optimizer.measure:
   interleaved rounds, fixed threads, CPU, instruction sets, load), the accuracy delta, the
   batch sizes Triton formed, and the cache's hit rate and hit vs miss latency;
5. with ``serving.tokenizer`` (examples/minilm-text.yaml), sends plain strings to the text
   ensemble over HTTP and prints what came back, and the curl line to try it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORKDIR = Path.home() / ".cache" / "optiserve" / "demo"


def _make_models(models_dir: Path, only: str) -> None:
    # What make_models writes last (hf/ is renamed into place whole; a folder built before
    # hf/ existed is built again).
    marker = models_dir / only / ("hf/config.json" if only == "minilm" else "eval.npz")
    if marker.exists():
        print(f"[1/4] example models: reusing {models_dir / only}")
        return
    print(f"[1/4] example models: building {only} into {models_dir}")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "make_models.py"),
            "--out",
            str(models_dir),
            "--only",
            only,
        ],
        check=True,
    )


def _samples(eval_npz: Path, inputs: list[str], count: int) -> list[dict[str, Any]]:
    """Up to ``count`` distinct one-row requests: distinct, so the load measures batching
    rather than the response cache."""
    import numpy as np

    data = np.load(eval_npz)
    count = min(count, len(data[inputs[0]]))
    return [{name: data[name][i : i + 1] for name in inputs} for i in range(count)]


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


def _print_report(summary: dict[str, Any], traffic: dict[str, Any]) -> None:
    m = summary["metrics"]
    load, cache = traffic["load"], traffic["cache"]
    print("\n== optiserve demo report")
    print(
        f"model            {traffic['model']} ({summary['artifact'].get('candidate', '?')}, "
        f"{summary['artifact'].get('precision', '?')})"
    )
    measured = m.get("measured", {})
    print(f"baseline         {m.get('baseline', '?')} (the source model in its own framework)")
    print(
        f"latency b=1      baseline {_fmt(m.get('baselineLatencyMs'), ' ms', 3)} -> "
        f"optimized {_fmt(m.get('optimizedLatencyMs'), ' ms', 3)}"
    )
    print(
        f"throughput b={measured.get('batch', '?'):<3} baseline "
        f"{_fmt(m.get('baselineThroughput'), '/s', 0)} -> optimized "
        f"{_fmt(m.get('optimizedThroughput'), '/s', 0)}"
    )
    print(
        f"speedup          {m.get('speedup', '-')} (per-round range {m.get('speedupRange', '-')}"
        f" over {measured.get('rounds', '?')} interleaved rounds); against onnxruntime-fp32 "
        f"{m.get('speedupVsOnnxruntime') or '(it is the baseline)'}"
    )
    print(
        f"measured on      {measured.get('cpu', '?')}, {measured.get('logicalCpus', '?')} CPUs "
        f"({' '.join(measured.get('instructionSets', [])) or '-'}), "
        f"{measured.get('threads', '?')} thread(s), {measured.get('clock', '?')} clock, "
        f"load {measured.get('loadAverage', '?')}"
    )
    print(
        f"accuracy drop    {_fmt(m.get('accuracyDrop'), '', 4)}  size ratio "
        f"{_fmt(m.get('sizeRatio'), 'x')}"
    )
    if summary.get("fallbackReason"):
        print(f"fallback         {summary['fallbackReason']}")
    print("-- served by Triton under concurrent load")
    latency = load["latency_ms"]
    print(
        f"requests         {load['requests']} at concurrency {load['concurrency']}: "
        f"{_fmt(load['throughput_rps'], ' req/s', 0)}, p50 {_fmt(latency['p50'], ' ms')}, "
        f"p99 {_fmt(latency['p99'], ' ms')}, errors {load['errors']}"
    )
    batches = ", ".join(
        f"{size}x{n}"
        for size, n in sorted(traffic["batch_sizes"].items(), key=lambda kv: int(kv[0]))
    )
    print(f"batches formed   {batches}  (batch size x executions; mean {load['mean_batch_size']})")
    print(
        f"response cache   {cache['cache_hits']} hits / {cache['cache_misses']} misses "
        f"(hit rate {cache['hit_rate']:.2f}), p50 hit {cache['hit_latency_ms']['p50']:.3f} ms "
        f"vs miss {cache['miss_latency_ms']['p50']:.3f} ms ({cache['speedup_p50']:.1f}x), "
        f"answers identical: {cache['identical_answers']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "examples" / "digits-pruned-int8.yaml")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=512)
    args = parser.parse_args()

    from optiserve.validate import load_one

    model = load_one(args.spec)
    pvc_root = args.workdir / "pvc"
    os.environ["OPTISERVE_PVC_ROOT"] = str(pvc_root)
    only = "minilm" if "minilm" in model.spec.source.uri else "digits"
    _make_models(pvc_root / "models", only)

    print(f"[2/4] optimizing {args.spec.name}")
    from optiserve_optimizer.main import run_optimize, termination_path

    summary_file = args.workdir / "summary.json"
    os.environ["OPTISERVE_TERMINATION_LOG"] = str(summary_file)
    assert termination_path() == summary_file
    code = run_optimize(args.spec, args.workdir / "artifacts")
    if code != 0:
        print(f"optimizer failed (exit {code}); see above", file=sys.stderr)
        return code
    summary = json.loads(summary_file.read_text())

    print("[3/4] serving on a local tritonserver")
    from optiserve.api.tuning import TuningSummary
    from optiserve.render.serving_config import rollout_settings
    from optiserve.serve import LocalTriton
    from optiserve.serve.assemble import assemble
    from optiserve.serve.command import (
        find_repository,
        infer_text,
        text_models,
        text_request_example,
    )
    from optiserve.serve.loadgen import traffic_report
    from optiserve.uri import local_path

    # Served as a pod serves it: the artifact's facts with the spec's serving settings (and
    # what serving.tuning chose), assembled as the pod's init container does.
    tuning = (summary["artifact"].get("tuning") or summary.get("tuning")) or None
    settings = rollout_settings(
        model.spec.serving, TuningSummary.model_validate(tuning) if tuning else None
    )
    repository = args.workdir / "served"
    shutil.rmtree(repository, ignore_errors=True)
    assemble(find_repository(Path(summary["folder"])), settings, repository)
    eval_npz = local_path(model.spec.optimization.accuracy.dataset)
    with LocalTriton(repository) as triton:
        import numpy as np

        name = model.metadata.name if model.metadata.name in triton.models else triton.models[0]
        # Model inputs only: labels and expected_* references are for the optimizer's gate.
        names = [
            k for k in np.load(eval_npz).files if k != "labels" and not k.startswith("expected")
        ]
        print(f"[4/4] {args.requests} requests at concurrency {args.concurrency}")
        traffic = traffic_report(
            triton.grpc_url,
            name,
            _samples(eval_npz, names, args.requests + 8),
            concurrency=args.concurrency,
            requests=args.requests,
        )
        # serving.tokenizer: the text ensemble answers plain strings over HTTP.
        texts = [
            (text, batched, infer_text(triton.http_url, text, DEMO_TEXTS, batched))
            for text, batched in text_models(repository)
        ]
        examples = [text_request_example(triton.http_url, t, b) for t, b, _ in texts]
    _print_report(summary, traffic)
    for (text, _, outputs), example in zip(texts, examples, strict=True):
        _print_text(text, outputs, example)
    return 0


DEMO_TEXTS = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stock prices fell sharply."]


def _print_text(model: str, outputs: dict[str, Any], example: str) -> None:
    import numpy as np

    print(f"-- plain strings to {model} (serving.tokenizer: the model's own tokenizer in Triton)")
    (name, values), *_ = outputs.items()
    for text, row in zip(DEMO_TEXTS, values, strict=True):
        head = " ".join(f"{v:+.3f}" for v in np.ravel(row)[:4])
        print(f"{text!r:30} -> {name} {list(np.shape(row))}: {head} ...")
    if name == "sentence_embedding":
        a, b, c = (np.ravel(v) / np.linalg.norm(v) for v in values)
        print(f"cosine: first two {float(a @ b):.3f}, first and third {float(a @ c):.3f}")
    print(f"try it  {example}")


if __name__ == "__main__":
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "optimizer")]
    raise SystemExit(main())
