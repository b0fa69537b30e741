"""``serving.tokenizer``: the tokenizer and ensemble configs (golden files, Triton's own parser),
the validation rule and the recipe digest."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from optiserve.api import ServingSpec
from optiserve.digest import spec_recipe_digest
from optiserve.model_io import ModelSignature, TensorSpec
from optiserve.render.text_ensemble import render_ensemble_config, render_tokenizer_config
from optiserve.render.triton import TritonConfigError
from optiserve.validate import validate_object

from .golden_files import check_golden_text
from .specs import minimal
from .test_render_triton import GOLDEN

IDS = [TensorSpec(n, "int64", (-1,)) for n in ("input_ids", "attention_mask", "token_type_ids")]
EMBEDDING = ModelSignature(tuple(IDS), (TensorSpec("embedding", "float32", (384,)),))


def parse(text: str) -> Any:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.mark.parametrize("batch", [8, 0])
def test_tokenizer_config_matches_golden_and_parses(batch: int) -> None:
    text = render_tokenizer_config("minilm", EMBEDDING, batch, 128)
    check_golden_text(GOLDEN / f"tokenizer-batch{batch}.pbtxt", text)
    config = parse(text)
    assert (config.name, config.backend, config.max_batch_size) == (
        "minilm-tokenizer",
        "python",
        batch,
    )
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("TEXT", model_config_pb2.TYPE_STRING, [1] if batch else [-1])
    ]
    leading = [] if batch else [-1]
    assert [(t.name, list(t.dims)) for t in config.output] == [
        (t.name, [*leading, -1]) for t in IDS
    ]
    assert config.parameters["max_length"].string_value == "128"


@pytest.mark.parametrize("batch", [8, 0])
def test_ensemble_config_matches_golden_and_chains_tokenizer_into_model(batch: int) -> None:
    text = render_ensemble_config("minilm", EMBEDDING, batch)
    check_golden_text(GOLDEN / f"ensemble-batch{batch}.pbtxt", text)
    config = parse(text)
    assert (config.name, config.platform, config.max_batch_size) == (
        "minilm-text",
        "ensemble",
        batch,
    )
    assert [t.name for t in config.output] == ["embedding"]
    tokenize, run = config.ensemble_scheduling.step
    assert (tokenize.model_name, run.model_name) == ("minilm-tokenizer", "minilm")
    assert dict(tokenize.input_map) == {"TEXT": "TEXT"}
    names = [t.name for t in IDS]
    assert dict(tokenize.output_map) == dict(run.input_map) == dict(zip(names, names, strict=True))
    assert dict(run.output_map) == {"embedding": "embedding"}


def test_unbatched_model_gets_an_unbatched_ensemble() -> None:
    unbatched = ModelSignature(EMBEDDING.inputs, EMBEDDING.outputs, batched=False)
    assert parse(render_ensemble_config("m", unbatched, 32)).max_batch_size == 0
    assert parse(render_tokenizer_config("m", unbatched, 32, 8)).max_batch_size == 0


def test_zero_max_length_is_refused() -> None:
    with pytest.raises(TritonConfigError, match="max_length"):
        render_tokenizer_config("m", EMBEDDING, 8, 0)


def _huggingface(tokenizer: bool) -> dict[str, Any]:
    obj = minimal()
    obj["spec"]["source"] = {"uri": "pvc://models/minilm/", "format": "huggingface"}
    obj["spec"]["serving"] = {"tokenizer": tokenizer}
    return obj


def test_tokenizer_is_accepted_on_a_huggingface_source_only() -> None:
    model, problems = validate_object(_huggingface(True), "t")
    assert problems == [] and model is not None and model.spec.serving.tokenizer
    onnx = minimal()
    onnx["spec"]["serving"] = {"tokenizer": True}
    model, problems = validate_object(onnx, "t")
    assert model is None
    assert any(
        "serving.tokenizer" in p.path and "format: huggingface" in str(p) for p in problems
    ), [str(p) for p in problems]


def test_tokenizer_is_part_of_the_recipe_and_false_keeps_older_digests() -> None:
    def digest(tokenizer: bool | None) -> str:
        obj = _huggingface(bool(tokenizer))
        if tokenizer is None:
            del obj["spec"]["serving"]
        model, _ = validate_object(obj, "t")
        assert model is not None
        spec = model.spec
        return spec_recipe_digest("m", spec.source, spec.optimization, spec.serving, "1")

    assert digest(False) == digest(None)
    assert digest(True) != digest(False)
    assert ServingSpec().tokenizer is False
