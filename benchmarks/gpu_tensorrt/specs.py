"""The optimization specs bench.py builds TensorRT candidates from, and the pipeline check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.gpu_tensorrt.measure import BATCH


def minilm_variants(files: dict[str, Path], skip: set[str]) -> dict[str, dict[str, Any]]:
    """Optimization specs of the MiniLM TensorRT candidates (profiles: the shapes pass)."""
    base = {
        "target": {"device": "gpu"},
        "accuracy": {"dataset": str(files["eval"]), "metric": "cosine", "maxDrop": 0.01},
        "benchmark": {"batchSizes": [1, BATCH]},
    }
    calibration = {"uri": str(files["calibration"]), "samples": 128}
    variants = {
        "trt-fp16": {**base, "quantization": {"precision": "fp16"}, "tensorrt": {"enabled": True}}
    }
    if "int8" not in skip:
        variants["trt-int8"] = {
            **base,
            "tensorrt": {"enabled": True},
            "quantization": {"precision": "int8", "method": "static", "calibration": calibration},
        }
    if "sparse" not in skip:
        variants["trt-fp16-sparse24"] = {
            **base,
            "quantization": {"precision": "fp16"},
            "pruning": {"method": "2:4"},
            "tensorrt": {"enabled": True, "sparseWeights": True},
        }
    return variants


def digits_variants(digits_dir: Path) -> dict[str, dict[str, Any]]:
    base = {
        "target": {"device": "gpu"},
        "accuracy": {"dataset": str(digits_dir / "eval.npz"), "maxDrop": 0.01},
        "benchmark": {"batchSizes": [1, 256]},
    }
    calibration = {"uri": str(digits_dir / "calibration.npz"), "samples": 512}
    return {
        "trt-fp32": {**base, "tensorrt": {"enabled": True}},
        "trt-fp16": {**base, "quantization": {"precision": "fp16"}, "tensorrt": {"enabled": True}},
        "trt-int8": {
            **base,
            "tensorrt": {"enabled": True},
            "quantization": {"precision": "int8", "method": "static", "calibration": calibration},
        },
    }


def pipeline_choice(digits_dir: Path, out: Path, precision: str) -> dict[str, Any]:
    """The optimizer end to end on digits with TensorRT enabled: which candidate wins."""
    import os

    import yaml

    from optiserve_optimizer.main import run_optimize

    spec = {
        "name": "digits-gpu",
        "source": {"uri": str(digits_dir / "model.pt"), "format": "torchscript"},
        "optimization": {
            "target": {"device": "gpu"},
            "quantization": {"precision": precision},
            "tensorrt": {"enabled": True},
            "accuracy": {"dataset": str(digits_dir / "eval.npz"), "maxDrop": 0.01},
            "benchmark": {"batchSizes": [1, 256], "iterations": 30, "warmup": 5},
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.yaml").write_text(yaml.safe_dump(spec))
    os.environ["OPTISERVE_TERMINATION_LOG"] = str(out / "termination.json")
    code = run_optimize(out / "spec.yaml", out / "repo")
    summary: dict[str, Any] = json.loads((out / "termination.json").read_text())
    return {"precision": precision, "exitCode": code, **summary}
