"""Hugging Face encoders as torch modules: a checked ``save_pretrained`` folder, the task head,
physical structure edits (heads, FFN neurons, layers) and the trainable twin on disk.

Only safetensors weights are read (pickled ``.bin`` files can run code). The twin that passes
hand each other is a folder of ``config.json`` + ``shapes.json`` (per-layer head and FFN
counts, since a pruned encoder is not expressible in a Hugging Face config) +
``model.safetensors``; it is rebuilt from the config, shrunk to those shapes, then loaded
strictly, so a twin that does not match its shapes fails instead of loading half.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optiserve_optimizer.errors import ModelLoadError

SUPPORTED = ("bert", "roberta", "xlm-roberta", "distilbert")  # MiniLM checkpoints are "bert"
FEATURE_EXTRACTION = "feature-extraction"
HEAD_SUFFIX = {
    "sequence-classification": "ForSequenceClassification",
    "token-classification": "ForTokenClassification",
}
OUTPUT_NAME = {FEATURE_EXTRACTION: "sentence_embedding"} | dict.fromkeys(HEAD_SUFFIX, "logits")
WEIGHTS = "model.safetensors"
SHAPES = "shapes.json"
# Paths of the parts of one encoder layer: q, k, v, attention output, FFN in, FFN out, the
# self-attention module (holds the head size).
_BERT_PARTS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
    "attention.self",
)
_DISTILBERT_PARTS = (
    "attention.q_lin",
    "attention.k_lin",
    "attention.v_lin",
    "attention.out_lin",
    "ffn.lin1",
    "ffn.lin2",
    "attention",
)
LAYOUT = {"distilbert": _DISTILBERT_PARTS} | dict.fromkeys(
    ("bert", "roberta", "xlm-roberta"), _BERT_PARTS
)


def quiet_transformers() -> None:
    """No download progress bars or 'weights not initialised' chatter in the optimizer's log."""
    from transformers.utils import logging

    logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def input_names(model_type: str) -> list[str]:
    """BERT-type models (MiniLM included) take segment ids; RoBERTa, XLM-R, DistilBERT do not."""
    names = ["input_ids", "attention_mask"]
    return [*names, "token_type_ids"] if model_type == "bert" else names


def auto_class(task: str) -> Any:
    import transformers

    name = {FEATURE_EXTRACTION: "AutoModel"}.get(task) or f"AutoModel{HEAD_SUFFIX[task]}"
    return getattr(transformers, name)


def make_task_module(model: Any, task: str) -> Any:
    """``model`` wrapped so that ``forward(input_ids, attention_mask[, token_type_ids])`` returns
    the task's one output: sentence embeddings (mean over real tokens, L2-normalised, as
    sentence-transformers computes them) or the classifier's logits."""
    import torch

    class TaskModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.task = task
            self.input_names = input_names(model.config.model_type)

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            out = self.model(**kwargs)
            if self.task != FEATURE_EXTRACTION:
                logits: torch.Tensor = out.logits
                return logits
            hidden = out.last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return TaskModule().eval()


def read_config(folder: Path, pass_name: str) -> Any:
    from transformers import AutoConfig

    if not folder.is_dir():
        raise ModelLoadError(
            pass_name, f"{folder} is not a folder (huggingface needs a save_pretrained folder)"
        )
    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            pass_name, f"{folder} has no config.json (save it with save_pretrained)"
        )
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (ValueError, OSError, KeyError) as exc:
        raise ModelLoadError(pass_name, f"{folder}/config.json cannot be read: {exc}") from exc
    model_type = str(getattr(config, "model_type", ""))
    if model_type not in SUPPORTED:
        archs = ", ".join(getattr(config, "architectures", None) or []) or "none named"
        raise ModelLoadError(
            pass_name,
            f"unsupported architecture {model_type!r} ({archs}); huggingface sources support "
            f"the encoders {', '.join(SUPPORTED)}",
        )
    return config


def load_folder(folder: Path, task: str, pass_name: str) -> Any:
    """The checked task module of a ``save_pretrained`` folder, with eager attention (its trace
    keeps the padding mask as plain tensor ops)."""
    config = read_config(folder, pass_name)
    if not sorted(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        hint = (
            f" (found {pickled}: pickle files are not loaded, they can run code)" if pickled else ""
        )
        raise ModelLoadError(pass_name, f"{folder} has no *.safetensors weights{hint}")
    archs = list(getattr(config, "architectures", None) or [])
    if task in HEAD_SUFFIX and not any(a.endswith(HEAD_SUFFIX[task]) for a in archs):
        raise ModelLoadError(
            pass_name,
            f"task {task} does not fit this checkpoint: its architectures {archs or 'unset'} have "
            f"no *{HEAD_SUFFIX[task]} head (use task: feature-extraction for a bare encoder)",
        )
    quiet_transformers()
    try:
        model, info = auto_class(task).from_pretrained(
            str(folder),
            local_files_only=True,
            use_safetensors=True,
            attn_implementation="eager",
            output_loading_info=True,
        )
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(pass_name, f"{folder} cannot be loaded for {task}: {exc}") from exc
    missing = list(info.get("missing_keys") or []) + [
        str(m[0]) if isinstance(m, tuple) else str(m) for m in info.get("mismatched_keys") or []
    ]
    if missing:
        raise ModelLoadError(
            pass_name,
            f"{folder}'s weights do not cover the {task} model: missing or mismatched "
            f"{sorted(missing)[:5]}{' ...' if len(missing) > 5 else ''}",
        )
    return make_task_module(model, task)


def check_tokenizer(folder: Path, config: Any, pass_name: str) -> str:
    """The tokenizer's class name, '' when the folder has none; fails when it cannot be used
    with these weights (token ids beyond the embedding table)."""
    if not any(
        (folder / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
    ):
        return ""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (ValueError, OSError, KeyError) as exc:
        raise ModelLoadError(pass_name, f"{folder}'s tokenizer cannot be loaded: {exc}") from exc
    if len(tokenizer) > int(config.vocab_size):
        raise ModelLoadError(
            pass_name,
            f"the tokenizer does not match the model: it has {len(tokenizer)} tokens, the "
            f"embedding table {config.vocab_size}",
        )
    return type(tokenizer).__name__


@dataclass(frozen=True)
class LayerParts:
    """The Linear layers of one encoder layer that structure edits change."""

    layer: Any
    paths: tuple[str, ...]

    def get(self, index: int) -> Any:
        module = self.layer
        for part in self.paths[index].split("."):
            module = getattr(module, part)
        return module

    def set(self, index: int, value: Any) -> None:
        *parents, leaf = self.paths[index].split(".")
        module = self.layer
        for part in parents:
            module = getattr(module, part)
        setattr(module, leaf, value)

    @property
    def head_size(self) -> int:
        return int(self.get(6).attention_head_size)

    @property
    def heads(self) -> int:
        return int(self.get(0).out_features) // self.head_size

    @property
    def ffn(self) -> int:
        return int(self.get(4).out_features)


def encoder_layers(model: Any) -> Any:
    """The ModuleList of transformer layers of a (task) model."""
    base = model.base_model
    return base.transformer.layer if base.config.model_type == "distilbert" else base.encoder.layer


def layer_parts(model: Any) -> list[LayerParts]:
    paths = LAYOUT[model.config.model_type]
    return [LayerParts(layer, paths) for layer in encoder_layers(model)]


def _sliced(linear: Any, keep: Any, axis: int) -> Any:
    import torch

    weight = torch.index_select(linear.weight.detach(), axis, keep)
    out = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None)
    with torch.no_grad():
        out.weight.copy_(weight)
        if linear.bias is not None:
            out.bias.copy_(linear.bias.detach()[keep] if axis == 0 else linear.bias.detach())
    return out


def shrink_layer(parts: LayerParts, heads: Sequence[int], neurons: Sequence[int]) -> None:
    """Keeps only attention ``heads`` and FFN ``neurons`` (indices, ascending) of one layer:
    the q/k/v projections lose rows, the output projections the matching columns."""
    import torch

    size = parts.head_size
    rows = torch.tensor([h * size + i for h in heads for i in range(size)], dtype=torch.long)
    for index in (0, 1, 2):
        parts.set(index, _sliced(parts.get(index), rows, 0))
    parts.set(3, _sliced(parts.get(3), rows, 1))
    keep = torch.tensor(list(neurons), dtype=torch.long)
    parts.set(4, _sliced(parts.get(4), keep, 0))
    parts.set(5, _sliced(parts.get(5), keep, 1))
    attention = parts.get(6)
    for attr in ("num_attention_heads", "n_heads"):  # bookkeeping only: forward infers heads
        if hasattr(attention, attr):
            setattr(attention, attr, len(heads))


def keep_layers(model: Any, kept: Sequence[int]) -> None:
    """Drops every encoder layer not in ``kept`` (indices, ascending)."""
    import torch

    layers = encoder_layers(model)
    base = model.base_model
    owner = base.transformer if base.config.model_type == "distilbert" else base.encoder
    owner.layer = torch.nn.ModuleList([layers[i] for i in kept])
    model.config.num_hidden_layers = len(kept)


def parameter_count(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def save_twin(module: Any, folder: Path) -> Path:
    """Writes the task module as a twin folder; returns its weights file (the artifact's torch)."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    model = module.model
    model.config.to_json_file(str(folder / "config.json"))
    shapes = {
        "task": module.task,
        "layers": [{"heads": p.heads, "ffn": p.ffn} for p in layer_parts(model)],
    }
    (folder / SHAPES).write_text(json.dumps(shapes, indent=1))
    save_model(model, str(folder / WEIGHTS))
    return folder / WEIGHTS


def load_twin(weights: Path, pass_name: str) -> Any:
    """The task module a twin folder holds (eager attention, eval mode)."""
    from safetensors.torch import load_model
    from transformers import AutoConfig

    quiet_transformers()
    folder = weights.parent
    try:
        shapes = json.loads((folder / SHAPES).read_text())
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        model = auto_class(shapes["task"]).from_config(config, attn_implementation="eager")
        for parts, shape in zip(layer_parts(model), shapes["layers"], strict=True):
            shrink_layer(parts, range(int(shape["heads"])), range(int(shape["ffn"])))
        load_model(model, str(weights), strict=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(
            pass_name, f"the transformer twin {folder} cannot be loaded: {exc}"
        ) from exc
    return make_task_module(model, shapes["task"])


def is_twin(path: Path | None) -> bool:
    return path is not None and path.name == WEIGHTS and (path.parent / SHAPES).is_file()
