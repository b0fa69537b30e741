"""Triton ``config.pbtxt`` and server flags: golden files, and Triton's own parser as the judge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import model_config_pb2

from optiserve.api.serving import (
    DynamicBatchingSpec,
    InstanceGroupSpec,
    QueuePolicy,
    ResponseCacheSpec,
    ServingSpec,
)
from optiserve.model_io import ModelSignature, TensorSpec
from optiserve.render.triton import (
    TRITON_DTYPES,
    TritonConfigError,
    render_model_config,
    triton_server_args,
    wire_dtype,
)

from .golden_files import check_golden_text

GOLDEN = Path(__file__).parent / "golden" / "triton"

DIGITS = ModelSignature(
    inputs=(TensorSpec("input", "float32", (1, 8, 8)),),
    outputs=(TensorSpec("logits", "float32", (10,)),),
)
MINILM = ModelSignature(
    inputs=tuple(
        TensorSpec(name, "int64", (-1,))
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ),
    outputs=(TensorSpec("sentence_embedding", "float32", (384,)),),
)
UNBATCHED = ModelSignature(
    inputs=(TensorSpec("text", "bytes", ()),),
    outputs=(TensorSpec("scores", "float16", (4, -1)),),
    batched=False,
)
FULL_SERVING = ServingSpec(
    max_batch_size=64,
    dynamic_batching=DynamicBatchingSpec(
        max_queue_delay_microseconds=200,
        preferred_batch_sizes=[32, 8, 16],
        priority_levels=2,
        default_queue_policy=QueuePolicy(
            timeout_action="DELAY", default_timeout_microseconds=100_000, max_queue_size=256
        ),
    ),
    response_cache=ResponseCacheSpec(enabled=True),
    instance_group=InstanceGroupSpec(count=2, kind="KIND_GPU"),
    cuda_graphs=True,
)


def parse(text: str) -> Any:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def check_golden(name: str, text: str) -> None:
    check_golden_text(GOLDEN / name, text)


@pytest.mark.parametrize(
    ("golden", "name", "signature", "serving", "platform"),
    [
        ("digits-onnx-cpu.pbtxt", "digits", DIGITS, ServingSpec(), "onnxruntime_onnx"),
        ("minilm-tensorrt-gpu.pbtxt", "minilm", MINILM, FULL_SERVING, "tensorrt_plan"),
        ("unbatched-python.pbtxt", "tagger", UNBATCHED, ServingSpec(), "python"),
    ],
)
def test_config_matches_golden_and_parses(
    golden: str, name: str, signature: ModelSignature, serving: ServingSpec, platform: Any
) -> None:
    text = render_model_config(name, signature, serving, platform)
    check_golden(golden, text)
    assert parse(text).name == name


def test_full_spec_reaches_every_triton_field() -> None:
    config = parse(render_model_config("minilm", MINILM, FULL_SERVING, "tensorrt_plan"))

    assert config.platform == "tensorrt_plan" and config.max_batch_size == 64
    assert config.version_policy.latest.num_versions == 1
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        (n, model_config_pb2.TYPE_INT64, [-1])
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    assert list(config.output[0].dims) == [384]
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) == [8, 16, 32]
    assert batching.max_queue_delay_microseconds == 200
    assert (batching.priority_levels, batching.default_priority_level) == (2, 2)
    policy = batching.default_queue_policy
    assert policy.timeout_action == model_config_pb2.ModelQueuePolicy.DELAY
    assert (policy.default_timeout_microseconds, policy.max_queue_size) == (100_000, 256)
    assert config.response_cache.enable
    assert config.optimization.cuda.graphs
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (2, model_config_pb2.ModelInstanceGroup.KIND_GPU)
    ]
    warmup = config.model_warmup[0]
    assert warmup.batch_size == 1
    assert {k: list(v.dims) for k, v in warmup.inputs.items()} == {
        n: [1] for n in ("input_ids", "attention_mask", "token_type_ids")
    }
    assert all(v.zero_data for v in warmup.inputs.values())


def test_defaults_leave_out_what_is_off() -> None:
    serving = ServingSpec(dynamic_batching=DynamicBatchingSpec(enabled=False), cuda_graphs=True)
    config = parse(render_model_config("digits", DIGITS, serving, "onnxruntime_onnx"))

    assert not config.HasField("dynamic_batching")
    assert not config.HasField("response_cache")
    assert not config.HasField("optimization")  # CUDA graphs are a TensorRT setting
    assert config.max_batch_size == 32


def test_unbatched_model_gets_no_batcher_and_full_dims() -> None:
    config = parse(render_model_config("tagger", UNBATCHED, ServingSpec(), "python"))

    assert config.backend == "python" and not config.platform
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [1]  # a scalar is dims [1]
    assert config.input[0].data_type == model_config_pb2.TYPE_STRING
    assert list(config.output[0].dims) == [4, -1]
    assert list(config.model_warmup[0].inputs["text"].dims) == [1]


def test_batched_model_served_without_server_batch_keeps_batch_axis_as_a_dim() -> None:
    serving = ServingSpec(max_batch_size=0, dynamic_batching=DynamicBatchingSpec(enabled=False))
    config = parse(render_model_config("digits", DIGITS, serving, "onnxruntime_onnx"))

    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [-1, 1, 8, 8]
    assert list(config.model_warmup[0].inputs["input"].dims) == [1, 1, 8, 8]


def test_warmup_shapes_override_dynamic_dims() -> None:
    text = render_model_config(
        "minilm",
        MINILM,
        ServingSpec(),
        "tensorrt_plan",
        warmup_shapes={"input_ids": [16], "attention_mask": [16], "token_type_ids": [16]},
    )
    assert all(list(v.dims) == [16] for v in parse(text).model_warmup[0].inputs.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "a/b"}, "plain directory name"),
        ({"name": ""}, "plain directory name"),
        ({"platform": "pytorch_libtorch"}, "is not one of"),
        (
            {"signature": ModelSignature((TensorSpec("x", "complex64", (2,)),), DIGITS.outputs)},
            "has no Triton type",
        ),
        (
            {"signature": ModelSignature((TensorSpec("x", "float32", (0,)),), DIGITS.outputs)},
            "dim 0",
        ),
        ({"signature": ModelSignature((), DIGITS.outputs)}, "at least one input"),
        (
            {
                "serving": ServingSpec(instance_group=InstanceGroupSpec(kind="KIND_CPU")),
                "platform": "tensorrt_plan",
            },
            "GPU only",
        ),
        ({"warmup_shapes": {"nope": [1]}}, "unknown inputs: nope"),
    ],
)
def test_invalid_input_is_a_typed_error(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {
        "name": "digits",
        "signature": DIGITS,
        "serving": ServingSpec(),
        "platform": "onnxruntime_onnx",
    }
    warmup = kwargs.pop("warmup_shapes", None)
    arguments.update(kwargs)
    with pytest.raises(TritonConfigError, match=message):
        render_model_config(**arguments, warmup_shapes=warmup)


tensor_names = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
dtypes = st.sampled_from(["float32", "float16", "int64", "int32", "bool", "uint8", "bytes"])
shapes = st.lists(st.one_of(st.just(-1), st.integers(1, 512)), max_size=4).map(tuple)
tensors = st.lists(
    st.builds(TensorSpec, tensor_names, dtypes, shapes),
    min_size=1,
    max_size=4,
    unique_by=lambda t: t.name,
)


@st.composite
def servings(draw: st.DrawFn) -> ServingSpec:
    max_batch = draw(st.integers(1, 256))
    return ServingSpec(
        max_batch_size=max_batch,
        dynamic_batching=DynamicBatchingSpec(
            enabled=draw(st.booleans()),
            max_queue_delay_microseconds=draw(st.integers(0, 10_000_000)),
            preferred_batch_sizes=draw(st.lists(st.integers(1, max_batch), max_size=4)),
            priority_levels=draw(st.integers(0, 16)),
            default_queue_policy=draw(
                st.none()
                | st.builds(
                    QueuePolicy,
                    timeout_action=st.sampled_from(["REJECT", "DELAY"]),
                    default_timeout_microseconds=st.integers(0, 10**9),
                    allow_timeout_override=st.booleans(),
                    max_queue_size=st.integers(0, 10**6),
                )
            ),
        ),
        response_cache=ResponseCacheSpec(enabled=draw(st.booleans())),
        instance_group=InstanceGroupSpec(
            count=draw(st.integers(1, 64)), kind=draw(st.sampled_from(["KIND_AUTO", "KIND_GPU"]))
        ),
        cuda_graphs=draw(st.booleans()),
    )


@settings(max_examples=150, deadline=None)
@given(
    inputs=tensors,
    outputs=tensors,
    batched=st.booleans(),
    serving=servings(),
    platform=st.sampled_from(["onnxruntime_onnx", "tensorrt_plan", "python"]),
)
def test_every_rendering_parses_and_keeps_the_spec(
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    batched: bool,
    serving: ServingSpec,
    platform: Any,
) -> None:
    signature = ModelSignature(tuple(inputs), tuple(outputs), batched=batched)
    config = parse(render_model_config("m", signature, serving, platform))

    assert [t.name for t in config.input] == [t.name for t in inputs]
    assert config.max_batch_size == (serving.max_batch_size if batched else 0)
    batching_on = batched and serving.dynamic_batching.enabled
    assert config.HasField("dynamic_batching") == batching_on
    if batching_on:
        assert config.dynamic_batching.max_queue_delay_microseconds == (
            serving.dynamic_batching.max_queue_delay_microseconds
        )
        assert list(config.dynamic_batching.preferred_batch_size) == sorted(
            set(serving.dynamic_batching.preferred_batch_sizes)
        )
    assert config.response_cache.enable == serving.response_cache.enabled
    assert config.optimization.cuda.graphs == (serving.cuda_graphs and platform == "tensorrt_plan")
    assert set(config.model_warmup[0].inputs) == {t.name for t in inputs}
    assert all(d > 0 for v in config.model_warmup[0].inputs.values() for d in v.dims)


def test_server_args_turn_on_the_cache_only_when_asked() -> None:
    cached = ServingSpec(response_cache=ResponseCacheSpec(enabled=True, size_bytes=1 << 20))
    with_cache = triton_server_args(cached, "/models", http_port=1, grpc_port=2, metrics_port=3)
    without = triton_server_args(ServingSpec(), "/models")

    assert "--cache-config=local,size=1048576" in with_cache
    assert not any(a.startswith("--cache-config") for a in without)
    for expected in (
        "--model-repository=/models",
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--allow-metrics=true",
        "--http-port=1",
        "--grpc-port=2",
        "--metrics-port=3",
        "--model-control-mode=none",
    ):
        assert expected in with_cache


def test_server_args_explicit_mode_loads_named_models() -> None:
    args = triton_server_args(None, "/m", model_control_mode="explicit", load_models=["a", "b"])
    assert "--model-control-mode=explicit" in args
    assert [a for a in args if a.startswith("--load-model")] == ["--load-model=a", "--load-model=b"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"http_port": 0}, "outside"),
        ({"http_port": 8001}, "must differ"),
        ({"load_models": ["a"]}, "explicit"),
    ],
)
def test_server_args_refuse_bad_input(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TritonConfigError, match=message):
        triton_server_args(None, "/m", **kwargs)


@pytest.mark.parametrize(
    "numpy_dtype",
    [n for n in TRITON_DTYPES if n not in ("bfloat16", "bytes", "object", "string")],
)
def test_wire_dtype_agrees_with_tritonclient(numpy_dtype: str) -> None:
    """The load generator's request datatypes come from the config.pbtxt table: they must be
    what tritonclient itself would send for that numpy dtype."""
    from tritonclient.utils import np_to_triton_dtype

    assert wire_dtype(numpy_dtype) == np_to_triton_dtype(np.dtype(numpy_dtype))


def test_wire_dtype_spells_strings_as_bytes_and_refuses_unknown() -> None:
    assert wire_dtype("object") == "BYTES"
    assert wire_dtype("complex64") is None
