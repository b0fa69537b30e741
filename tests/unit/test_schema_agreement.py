"""Property: the Python models and the generated CRD schema accept exactly the same specs."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from optiserve.crd import openapi_schema
from optiserve.validate import validate_object

from .apiserver_model import admit

SCHEMA = openapi_schema()

ints = st.integers(min_value=-3, max_value=70)
sizes = st.lists(st.integers(min_value=-1, max_value=70), max_size=4)
uris = st.sampled_from(["pvc://models/m.onnx", "file:///tmp/x.npz", "/data/x.npz", "m.onnx"])


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A dict holding any subset of ``fields``."""
    return st.fixed_dictionaries({}, optional=fields)


profile = optional(min=sizes, opt=sizes, max=sizes)
optimization = st.fixed_dictionaries(
    {"accuracy": st.fixed_dictionaries({"dataset": uris}, optional={"maxDrop": st.floats(-1, 2)})},
    optional={
        "target": optional(
            device=st.sampled_from(["cpu", "gpu", "tpu"]),
            gpuProduct=st.sampled_from(["NVIDIA-L4", "NVIDIA-A100-SXM4-80GB"]),
        ),
        "pruning": optional(
            method=st.sampled_from(["none", "magnitude", "structured", "2:4", "random"]),
            sparsity=st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]),
        ),
        "quantization": optional(
            precision=st.sampled_from(["fp32", "fp16", "int8", "int4"]),
            method=st.sampled_from(["dynamic", "static"]),
            calibration=optional(uri=uris, samples=ints),
        ),
        "tensorrt": optional(
            enabled=st.booleans(),
            sparseWeights=st.booleans(),
            profiles=st.dictionaries(st.sampled_from(["a", "b"]), profile, max_size=2),
        ),
    },
)
serving = optional(
    replicas=ints,
    maxBatchSize=ints,
    dynamicBatching=optional(
        enabled=st.booleans(), preferredBatchSizes=sizes, maxQueueDelayMicroseconds=ints
    ),
    responseCache=optional(enabled=st.booleans(), sizeBytes=st.sampled_from([-1, 0, 4096])),
    instanceGroup=optional(count=ints, kind=st.sampled_from(["KIND_GPU", "KIND_TPU"])),
    autoscaling=optional(
        provider=st.sampled_from(["hpa", "keda"]), minReplicas=ints, maxReplicas=ints
    ),
)
objects = st.fixed_dictionaries(
    {
        "apiVersion": st.just("optiserve.io/v1alpha1"),
        "kind": st.just("OptimizedModel"),
        "metadata": st.just({"name": "m"}),
        "spec": st.fixed_dictionaries(
            {
                "source": st.fixed_dictionaries(
                    {"uri": uris},
                    optional={
                        "format": st.sampled_from(["onnx", "torchscript", "huggingface", "tf"]),
                        "task": st.sampled_from(["feature-extraction", "token-classification"]),
                    },
                ),
                "optimization": optimization,
                "storage": st.just({"pvc": "store"}),
            },
            optional={"serving": serving},
        ),
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(objects)
def test_models_and_schema_agree(obj: dict[str, Any]) -> None:
    model, problems = validate_object(obj, "generated")
    refused_by_schema = admit(SCHEMA, obj)
    event("accepted" if model is not None else "refused")
    if model is not None:
        assert refused_by_schema == [], "the models accept a spec the API server would refuse"
    else:
        assert refused_by_schema, f"the API server would store a spec the models refuse: {problems}"
