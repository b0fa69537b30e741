"""Real models for the Triton tests and benchmark, built offline and cached between runs.

The digits CNN and MiniLM come from the optimizer's example models
(``optiserve_optimizer.models``); here they are exported to ONNX once and kept under
``$OPTISERVE_FIXTURE_CACHE`` (default ``~/.cache/optiserve/fixtures``), keyed by their build
parameters, so a test run trains nothing when the cache is warm.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

CACHE_ENV = "OPTISERVE_FIXTURE_CACHE"
DIGITS_INPUT = "input"
DIGITS_OUTPUT = "logits"


def fixture_cache() -> Path:
    path = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "optiserve" / "fixtures"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def digits_onnx(width: int = 32, epochs: int = 10) -> Path:
    """The digits CNN trained on scikit-learn's digits, as ONNX with a dynamic batch axis."""
    path = fixture_cache() / f"digits-w{width}-e{epochs}.onnx"
    if path.is_file():
        return path
    import torch

    from optiserve_optimizer.models.digits import build_network, load_digits, train

    torch.set_num_threads(1)  # the machine is shared; one core trains this in seconds
    images, labels = load_digits()
    network = build_network(width)
    train(network, images[:1280], labels[:1280], epochs)
    sample = torch.from_numpy(images[:2])
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        partial = Path(scratch) / path.name
        torch.onnx.export(
            network,
            (sample,),
            str(partial),
            dynamo=False,
            opset_version=17,
            input_names=[DIGITS_INPUT],
            output_names=[DIGITS_OUTPUT],
            dynamic_axes={DIGITS_INPUT: {0: "batch"}, DIGITS_OUTPUT: {0: "batch"}},
        )
        partial.replace(path)  # atomic: a parallel run never sees half a file
    return path


def digits_eval() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The held-out digits (those the CNN did not train on): images [N, 1, 8, 8], labels."""
    from optiserve_optimizer.models.digits import load_digits

    images, labels = load_digits()
    return images[1280:], labels[1280:]


def digits_samples(count: int) -> list[dict[str, npt.NDArray[Any]]]:
    """``count`` distinct single-image requests (batch 1) from the held-out digits."""
    images, _ = digits_eval()
    return [{DIGITS_INPUT: images[i % len(images)][None]} for i in range(count)]


def minilm_onnx(max_length: int = 64) -> tuple[Path, Path]:
    """all-MiniLM-L6-v2 with pooling as ONNX, and its tokenized eval sentences (.npz)."""
    folder = fixture_cache() / f"minilm-l{max_length}"
    model, data = folder / "minilm.onnx", folder / "minilm-eval.npz"
    if model.is_file() and data.is_file():
        return model, data
    from optiserve_optimizer.models.minilm import make_minilm

    files = make_minilm(folder, max_length=max_length)
    return files.model, files.eval


def minilm_samples(data: Path, count: int) -> list[dict[str, npt.NDArray[Any]]]:
    """``count`` distinct one-sentence requests (batch 1) from the tokenized sentences."""
    arrays = np.load(data)
    names = ("input_ids", "attention_mask", "token_type_ids")
    total = len(arrays[names[0]])
    return [{n: arrays[n][i % total][None] for n in names} for i in range(count)]
