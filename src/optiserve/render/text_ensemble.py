"""``serving.tokenizer``: the configs of the tokenizer model and the text ensemble.

Pure: names, the served model's signature and the batch size in, ``config.pbtxt`` text out.
The served model keeps its name ``<name>`` (token ids in, as without the tokenizer: probes,
clients and the load generator are unchanged); beside it the artifact holds

- ``<name>-tokenizer``: Triton's python backend running the source's own tokenizer
  (``tokenizer_model.py.tmpl``): ``TEXT`` (TYPE_STRING, one string per batch row) in, the
  model's input tensors out, padded to the longest string of the request (attention mask 0 on
  padding, as the export was checked on) and truncated at ``max_length``;
- ``<name>-text``: an ensemble, ``TEXT`` -> tokenizer -> model, whose outputs are the model's.
"""

from __future__ import annotations

from collections.abc import Sequence

from optiserve.model_io import ModelSignature, TensorSpec
from optiserve.render.triton import TritonConfigError, triton_dtype

TEXT_INPUT = "TEXT"
TOKENIZER_SUFFIX = "-tokenizer"
ENSEMBLE_SUFFIX = "-text"
TOKENIZER_FOLDER = "tokenizer"  # inside the tokenizer model's version folder
MAX_LENGTH_PARAMETER = "max_length"


def tokenizer_model_name(name: str) -> str:
    return name + TOKENIZER_SUFFIX


def ensemble_model_name(name: str) -> str:
    return name + ENSEMBLE_SUFFIX


def batch_size(signature: ModelSignature, max_batch_size: int) -> int:
    """The served model's ``max_batch_size`` (as ``render_model_config`` writes it)."""
    return max_batch_size if signature.batched else 0


def render_tokenizer_config(
    name: str, signature: ModelSignature, max_batch_size: int, max_length: int
) -> str:
    """``<name>-tokenizer/config.pbtxt``: strings in, ``signature``'s inputs out."""
    if max_length < 1:
        raise TritonConfigError(f"tokenizer max_length {max_length} must be at least 1")
    batch = batch_size(signature, max_batch_size)
    lines = [
        f"name: {_quote(tokenizer_model_name(name))}",
        f"backend: {_quote('python')}",
        f"max_batch_size: {batch}",
        *_tensors("input", [_text_input(batch)], ()),
        *_tensors("output", signature.inputs, _leading(signature, batch)),
        "instance_group [",
        "  {",
        "    count: 1",
        "    kind: KIND_CPU",
        "  }",
        "]",
        "parameters {",
        f"  key: {_quote(MAX_LENGTH_PARAMETER)}",
        "  value {",
        f"    string_value: {_quote(str(max_length))}",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def render_ensemble_config(name: str, signature: ModelSignature, max_batch_size: int) -> str:
    """``<name>-text/config.pbtxt``: ``TEXT`` through the tokenizer into model ``name``."""
    batch = batch_size(signature, max_batch_size)
    leading = _leading(signature, batch)
    lines = [
        f"name: {_quote(ensemble_model_name(name))}",
        f"platform: {_quote('ensemble')}",
        f"max_batch_size: {batch}",
        *_tensors("input", [_text_input(batch)], ()),
        *_tensors("output", signature.outputs, leading),
        "ensemble_scheduling {",
        "  step [",
        *_step(tokenizer_model_name(name), [TEXT_INPUT], [t.name for t in signature.inputs]),
        "    },",
        *_step(name, [t.name for t in signature.inputs], [t.name for t in signature.outputs]),
        "    }",
        "  ]",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _text_input(batch: int) -> TensorSpec:
    # Batched: one string per batch row (the row's output is that string's). Unbatched: a
    # list of strings, the outputs' first axis runs over them.
    return TensorSpec(TEXT_INPUT, "bytes", (1,) if batch > 0 else (-1,))


def _leading(signature: ModelSignature, batch: int) -> tuple[int, ...]:
    # As render_model_config: a batched model served with max_batch_size 0 shows its batch
    # axis as an ordinary dynamic dimension.
    return (-1,) if signature.batched and batch == 0 else ()


def _step(model: str, inputs: Sequence[str], outputs: Sequence[str]) -> list[str]:
    """One step of the ensemble, without its closing brace (steps are comma-separated)."""
    lines = ["    {", f"      model_name: {_quote(model)}", "      model_version: -1"]
    for kind, names in (("input_map", inputs), ("output_map", outputs)):
        for tensor in names:
            lines += [
                f"      {kind} {{",
                f"        key: {_quote(tensor)}",
                f"        value: {_quote(tensor)}",
                "      }",
            ]
    return lines


def _tensors(kind: str, tensors: Sequence[TensorSpec], leading: tuple[int, ...]) -> list[str]:
    lines = [f"{kind} ["]
    for index, tensor in enumerate(tensors):
        dims = leading + tensor.shape or (1,)
        lines += [
            "  {",
            f"    name: {_quote(tensor.name)}",
            f"    data_type: {triton_dtype(tensor.dtype)}",
            "    dims: [ " + ", ".join(str(d) for d in dims) + " ]",
            "  }" + ("," if index < len(tensors) - 1 else ""),
        ]
    return [*lines, "]"]


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
