"""Property: the Python models and the generated CRD schema accept exactly the same specs."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from optiserve.crd import openapi_schema
from optiserve.validate import validate_object

from .apiserver_model import admit

SCHEMA = openapi_schema()


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A dict holding any subset of ``fields``."""
    return st.fixed_dictionaries({}, optional=fields)


# Integers as JSON has them, and what YAML users write instead: beyond int64, integral
# floats, strings of digits, booleans.
odd_numbers = st.sampled_from([2**63 - 1, 2**64, -(2**64), 4.0, 2.5, "5", True])
# Mostly integers, so that most objects have at most one odd value among many fields.
ints = st.integers(min_value=-3, max_value=70) | st.integers(1, 9) | odd_numbers
sizes = st.lists(st.integers(min_value=-1, max_value=70), max_size=4)
uris = st.sampled_from(["pvc://models/m.onnx", "file:///tmp/x.npz", "/data/x.npz", "m.onnx"])
names = st.sampled_from(["m", "my-model", "a" * 63, "x1", "my.model", "1model", "b" * 64, "Model"])
label_keys = st.sampled_from(
    ["app", "example.com/tier", "a b", "x/y/z", "-bad", "A.b_c", "e" * 64, "EXAMPLE.com/x"]
)
label_values = st.sampled_from(["v", "", "v" * 63, "w" * 64, "bad value", "-v"])
quantities = st.sampled_from(
    ["500m", "2Gi", "1", "garbage", "-1", "1.5", "+2", "1e3", "0.5Ki", 4, -1, 0, 2**64, 1.5]
)
resource_names = st.sampled_from(["cpu", "memory", "nvidia.com/gpu", "bad name!", "hugepages-2Mi"])
images = st.sampled_from(
    ["", "ghcr.io/x/y:1.0", "nvcr.io/nvidia/tritonserver:25.10-py3", "UPPER/x", "x y", "a@sha256:1"]
)
tolerations = st.lists(
    optional(
        key=st.sampled_from(["", "nvidia.com/gpu", "bad key!", "dedicated"]),
        operator=st.sampled_from(["Exists", "Equal", "Maybe"]),
        value=st.sampled_from(["", "true", "bad value"]),
        effect=st.sampled_from(["NoSchedule", "NoExecute", "Sometimes"]),
        tolerationSeconds=st.sampled_from([30, -1, 2**64]),
    ),
    max_size=2,
)
selectors = st.dictionaries(label_keys, label_values, max_size=2)
hosts = st.sampled_from(["m.example.com", "m", "10.0.0.1", "*.example.com", "M.example.com", ""])
resources = optional(
    limits=st.dictionaries(resource_names, quantities, max_size=2),
    requests=st.dictionaries(resource_names, quantities, max_size=2),
)


profile = optional(min=sizes, opt=sizes, max=sizes)
optimization = st.fixed_dictionaries(
    {"accuracy": st.fixed_dictionaries({"dataset": uris}, optional={"maxDrop": st.floats(-1, 2)})},
    optional={
        "recovery": optional(method=st.sampled_from(["none", "distill", "finetune"])),
        "student": optional(method=st.sampled_from(["none", "narrow", "shallow"])),
        "benchmark": optional(batchSizes=st.lists(st.integers(-4, 64), max_size=3)),
        "job": optional(
            image=images,
            resources=resources,
            nodeSelector=selectors,
            tolerations=tolerations,
            ttlSecondsAfterFinished=st.sampled_from([0, 86400, 2**31, 2**64]),
        ),
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
        provider=st.sampled_from(["hpa", "keda"]),
        minReplicas=ints,
        maxReplicas=ints,
        metric=st.sampled_from(["queueTime", "pendingRequests", "gpuUtilization"]),
        target=st.sampled_from(["fast", "50ms", "50", "0", "150", 50, 0, "1.5k", "75.5", "-3"]),
    ),
    image=images,
    resources=resources,
    nodeSelector=selectors,
    tolerations=tolerations,
    networkPolicy=optional(
        enabled=st.booleans(),
        ingressFrom=st.lists(
            optional(namespaceSelector=selectors, podSelector=selectors), max_size=2
        ),
        metricsFrom=st.lists(optional(namespaceSelector=selectors), max_size=1),
    ),
    exposure=optional(
        httpRoute=optional(
            parentRefs=st.lists(
                optional(
                    name=st.sampled_from(["gw", "Bad_Gw"]),
                    namespace=st.sampled_from(["infra", "a.b"]),
                    sectionName=st.sampled_from(["https", "-x"]),
                ),
                max_size=2,
            ),
            hostnames=st.lists(hosts, max_size=2),
            path=st.sampled_from(["/", "/digits", "/a/b", "digits", "/a/", "/a/../b", "/.x"]),
            scheme=st.sampled_from(["http", "https", "ftp"]),
        ),
        ingress=optional(
            host=hosts,
            ingressClassName=st.sampled_from(["nginx", "Nginx"]),
            tlsSecretName=st.sampled_from(["m-tls", "m_tls"]),
        ),
    ),
)
# One unknown key now and then, as a typo would be.
rollout = optional(
    strategy=st.sampled_from(["rolling", "canary", "blue-green"]),
    steps=st.lists(
        optional(weight=st.sampled_from([0, 10, 50, 99, 100]), pauseSeconds=ints), max_size=3
    ),
    analysis=optional(
        maxErrorRate=st.sampled_from([0.0, 0.01, 1.5, -1]),
        maxLatencyP99Ratio=st.sampled_from([0.5, 1.0, 2]),
        minRequests=ints,
        intervalSeconds=ints,
    ),
    maxSurgeGPUs=ints,
)
metadata_extra = st.sampled_from([{}, {}, {}, {}, {"colour": "blue"}])
metadata = st.fixed_dictionaries(
    {"name": names},
    optional={
        "labels": st.dictionaries(label_keys, label_values, max_size=2),
        "annotations": st.sampled_from(
            [{"note": "x"}, {"big": "y" * (256 * 1024)}, {"Bad Key": "x"}, {"Example.com/A": ""}]
        ),
        "namespace": st.sampled_from(["default", "Bad_Namespace"]),
        "creationTimestamp": st.none(),
        "uid": st.just("0d9c4a4e-59f5-4a57-9d8e-6a1f8e1c3d2b"),
    },
)
objects = st.fixed_dictionaries(
    {
        "apiVersion": st.just("optiserve.io/v1alpha1"),
        "kind": st.just("OptimizedModel"),
        "metadata": st.builds(lambda m, extra: {**m, **extra}, metadata, metadata_extra),
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
                "storage": st.fixed_dictionaries(
                    {"pvc": st.just("store")},
                    optional={
                        "subPath": st.sampled_from(["", "a/b", "../x", "/abs", "a/../b", "a//b"])
                    },
                ),
            },
            optional={"serving": serving, "rollout": rollout},
        ),
    },
    optional={
        "status": st.sampled_from(
            [{}, {"phase": "Ready"}, {"phase": "Bogus"}, {"conditions": [{"colour": "x"}]}]
        )
    },
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(objects)
def test_models_and_schema_agree(obj: dict[str, Any]) -> None:
    model, problems = validate_object(obj, "generated")
    refused_by_schema = admit(SCHEMA, obj)
    event("accepted" if model is not None else "refused")
    if model is not None:
        assert refused_by_schema == [], "the models accept a spec the API server would refuse"
    else:
        assert refused_by_schema, f"the API server would store a spec the models refuse: {problems}"
