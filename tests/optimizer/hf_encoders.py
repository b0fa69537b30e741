"""Tiny Hugging Face encoders built from a config (no model hub here), saved with
``save_pretrained`` beside MiniLM's real WordPiece tokenizer, and tokenized .npz data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from optiserve_optimizer.models import minilm

TINY = {"hidden": 64, "layers": 2, "heads": 4, "ffn": 128}


def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm.model_dir()))


def tiny_config(kind: str, task: str = "feature-extraction", labels: int = 3) -> Any:
    from transformers import BertConfig, DistilBertConfig, RobertaConfig

    vocab = len(tokenizer())
    common: dict[str, Any] = {"vocab_size": vocab, "pad_token_id": 0}
    if task != "feature-extraction":
        common["num_labels"] = labels
    if kind == "distilbert":
        return DistilBertConfig(
            dim=TINY["hidden"],
            n_layers=TINY["layers"],
            n_heads=TINY["heads"],
            hidden_dim=TINY["ffn"],
            **common,
        )
    cls = RobertaConfig if kind == "roberta" else BertConfig
    return cls(
        hidden_size=TINY["hidden"],
        num_hidden_layers=TINY["layers"],
        num_attention_heads=TINY["heads"],
        intermediate_size=TINY["ffn"],
        max_position_embeddings=130,
        **common,
    )


def save_encoder(
    folder: Path, kind: str = "bert", task: str = "feature-extraction", seed: int = 0
) -> Path:
    """A random-initialised ``kind`` encoder with a ``task`` head, as save_pretrained writes it."""
    import torch

    from optiserve_optimizer.passes import hf_model

    hf_model.quiet_transformers()
    torch.manual_seed(seed)
    model = hf_model.auto_class(task).from_config(tiny_config(kind, task))
    model.save_pretrained(str(folder))
    tokenizer().save_pretrained(str(folder))
    return folder


def save_text_npz(path: Path, count: int, seed: int, kind: str = "bert", length: int = 24) -> Path:
    """``count`` template sentences tokenized (right-padded to ``length``; mixed real lengths)."""
    batch = tokenizer()(
        minilm.sentences(count, seed),
        padding="max_length",
        truncation=True,
        max_length=length,
        return_tensors="np",
    )
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if kind == "bert" else [])
    np.savez(path, **{n: batch[n].astype(np.int64) for n in names})
    return path


# What a huggingface source with pruning, recovery and a shallow student yields, in order.
COMPRESSION_LADDER = [
    "fp32",
    "int8-dynamic",
    "fp32-fused",
    "int8-dynamic-fused",
    "pruned-structured",
    "pruned-structured+int8-dynamic",
    "student-shallow-pruned",
    "student-shallow-pruned+int8-dynamic",
]


def check_compression_report(
    report: dict[str, Any], *, heads: str, ffn: str, layers: str, metric: str, max_drop: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Asserts what every encoder's compression run must show: the candidates in order, the
    heads/FFN pruned and layers dropped as given (``"4->2"``), every candidate gated on
    ``metric`` and passed exactly when its drop is within ``max_drop``, a passing one chosen.
    Returns the candidate rows and details by name, for the caller's own checks."""
    rows = {c["name"]: c for c in report["candidates"]}
    assert list(rows) == COMPRESSION_LADDER
    details: dict[str, Any] = report["candidateDetails"]
    pruned = details["pruned-structured"]["passes"]["prune_transformer"]
    assert (pruned["heads"], pruned["ffn"]) == (heads, ffn)
    assert pruned["paramsAfter"] < pruned["paramsBefore"]
    dropped = details["student-shallow-pruned"]["passes"]["drop_layers"]
    assert dropped["layers"] == layers
    assert dropped["paramsAfter"] < dropped["paramsBefore"]
    for row in rows.values():
        assert details[row["name"]]["accuracy"]["metric"] == metric
        assert row["passed"] == (row["accuracyDrop"] <= max_drop)
    assert rows[report["chosen"]]["passed"]
    return rows, details
