"""Serving settings apart from the artifact: the digest ignores them, the pod template carries
them, and the served config.pbtxt is the artifact's facts with the spec's settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from optiserve.api import OptimizationSpec, ServingSpec, SourceSpec
from optiserve.api.status import Artifact
from optiserve.digest import spec_recipe_digest
from optiserve.model_io import ModelSignature, TensorSpec
from optiserve.render.deployment import render_deployment
from optiserve.render.serving_config import (
    ANNOTATION_SERVING_CONFIG,
    SERVED_REPOSITORY,
    SERVING_FIELDS,
    ArtifactFactsError,
    facts_json,
    merged_serving,
    served_model_config,
    serving_settings,
)
from optiserve.render.triton import TritonConfigError
from optiserve.serve.assemble import main as assemble_main
from tests.unit.golden_files import check_golden_text
from tests.unit.test_render_kubernetes import CPU_MODEL, CPU_OWNER, spec_of

GOLDEN = Path(__file__).parent / "golden"
SOURCE = SourceSpec(uri="pvc://models/m.onnx")
BASE_OPT = {"accuracy": {"dataset": "pvc://models/eval.npz"}}
SIGNATURE = ModelSignature(
    inputs=(TensorSpec("x", "float32", (4,)),), outputs=(TensorSpec("y", "float32", (3,)),)
)

# One change per serving-only setting: none may make a new artifact.
SERVING_CHANGES: dict[str, dict[str, Any]] = {
    "maxQueueDelayMicroseconds": {"dynamicBatching": {"maxQueueDelayMicroseconds": 9}},
    "preferredBatchSizes": {"dynamicBatching": {"preferredBatchSizes": [4, 8]}},
    "batchingOff": {"dynamicBatching": {"enabled": False}},
    "priorityLevels": {"dynamicBatching": {"priorityLevels": 2}},
    "queuePolicy": {"dynamicBatching": {"defaultQueuePolicy": {"maxQueueSize": 10}}},
    "responseCache": {"responseCache": {"enabled": True}},
    "responseCacheSize": {"responseCache": {"sizeBytes": 4096}},
    "instanceCount": {"instanceGroup": {"count": 3}},
    "instanceKind": {"instanceGroup": {"kind": "KIND_CPU"}},
    "cudaGraphs": {"cudaGraphs": True},
    "replicas": {"replicas": 5},
    "autoscaling": {"autoscaling": {"maxReplicas": 9}},
    "image": {"image": "registry.local/tritonserver:1"},
    "rolloutDeadline": {"rolloutDeadlineSeconds": 60},
    "resources": {"resources": {"requests": {"cpu": "2"}}},
}
# One change per optimization setting (and the artifact's own serving facts): each must.
OPTIMIZATION_CHANGES: dict[str, dict[str, Any]] = {
    "target": {"target": {"device": "gpu", "gpuProduct": "NVIDIA-A10"}},
    "pruning": {"pruning": {"method": "structured"}},
    "recovery": {"recovery": {"epochs": 2}},
    "student": {"student": {"widthFactor": 0.25}},
    "quantization": {"quantization": {"precision": "int8"}},
    "tensorrt": {"target": {"device": "gpu"}, "tensorrt": {"enabled": True}},
    "accuracy": {"accuracy": {"dataset": "pvc://models/other.npz"}},
    "benchmark": {"benchmark": {"batchSizes": [1, 4]}},
}


def digest(optimization: dict[str, Any], serving: dict[str, Any], name: str = "m") -> str:
    opt = OptimizationSpec.model_validate({**BASE_OPT, **optimization})
    return spec_recipe_digest(name, SOURCE, opt, ServingSpec.model_validate(serving), "1")


@pytest.mark.parametrize("change", SERVING_CHANGES.values(), ids=list(SERVING_CHANGES))
def test_a_serving_setting_leaves_the_digest_unchanged(change: dict[str, Any]) -> None:
    assert digest({}, change) == digest({}, {})


@pytest.mark.parametrize("change", OPTIMIZATION_CHANGES.values(), ids=list(OPTIMIZATION_CHANGES))
def test_an_optimization_setting_changes_the_digest(change: dict[str, Any]) -> None:
    assert digest(change, {}) != digest({}, {})


def test_every_optimization_field_is_covered_and_the_artifact_facts_change_the_digest() -> None:
    covered = {key for change in OPTIMIZATION_CHANGES.values() for key in change}
    fields = {f.alias or n for n, f in OptimizationSpec.model_fields.items()} - {"job"}
    assert fields <= covered
    assert digest({}, {"maxBatchSize": 8}) != digest({}, {})
    assert digest({}, {}, name="other") != digest({}, {})


def test_every_serving_field_is_covered() -> None:
    covered = {key for change in SERVING_CHANGES.values() for key in change}
    aliases = {ServingSpec.model_fields[f].alias for f in SERVING_FIELDS}
    assert aliases <= covered


def facts(batched: bool = True, defaults: dict[str, Any] | None = None) -> str:
    signature = ModelSignature(SIGNATURE.inputs, SIGNATURE.outputs, batched=batched)
    return facts_json("m", signature, "onnxruntime_onnx", 16, defaults)


def parsed(config: str) -> Any:
    return text_format.Parse(config, model_config_pb2.ModelConfig())


def test_served_config_is_the_facts_with_the_spec_settings() -> None:
    settings = serving_settings(
        ServingSpec.model_validate(
            {
                "dynamicBatching": {"maxQueueDelayMicroseconds": 2500, "preferredBatchSizes": [8]},
                "instanceGroup": {"count": 2, "kind": "KIND_CPU"},
                "responseCache": {"enabled": True},
            }
        )
    )
    config = served_model_config(facts(), settings)
    check_golden_text(GOLDEN / "served-config.pbtxt", config)
    message = parsed(config)
    assert message.max_batch_size == 16
    assert message.dynamic_batching.max_queue_delay_microseconds == 2500
    assert list(message.dynamic_batching.preferred_batch_size) == [8]
    assert message.instance_group[0].count == 2
    assert message.response_cache.enable
    assert [i.name for i in message.input] == ["x"]


def test_a_model_without_a_batch_dimension_never_batches_on_the_server() -> None:
    settings = {"dynamicBatching": {"enabled": True, "preferredBatchSizes": [4]}}
    message = parsed(served_model_config(facts(batched=False), settings))
    assert message.max_batch_size == 0
    assert not message.HasField("dynamic_batching")


def test_spec_settings_win_over_the_artifacts_tuned_defaults() -> None:
    tuned = {"dynamicBatching": {"maxQueueDelayMicroseconds": 7000}, "instanceGroup": {"count": 3}}
    spec = {"dynamicBatching": {"maxQueueDelayMicroseconds": 100}}
    merged = merged_serving(16, spec, tuned)
    assert merged.dynamic_batching.max_queue_delay_microseconds == 100  # the spec's
    assert merged.instance_group.count == 3  # the tuned default, the spec left it unset
    assert merged.max_batch_size == 16  # the artifact's, whatever either says
    message = parsed(served_model_config(facts(defaults=tuned), spec))
    assert message.dynamic_batching.max_queue_delay_microseconds == 100
    assert message.instance_group[0].count == 3


def test_settings_that_do_not_fit_the_artifact_are_a_typed_error() -> None:
    with pytest.raises(TritonConfigError, match="preferred batch size"):
        merged_serving(4, {"dynamicBatching": {"preferredBatchSizes": [8]}})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        (json.dumps({"version": 99}), "version"),
        (json.dumps({**json.loads(facts()), "inputs": "x"}), "'inputs' must be a list"),
        (json.dumps({**json.loads(facts()), "maxBatchSize": True}), "maxBatchSize"),
        (json.dumps({**json.loads(facts()), "platform": "tf"}), "platform"),
    ],
)
def test_bad_facts_are_a_typed_error(text: str, match: str) -> None:
    with pytest.raises(ArtifactFactsError, match=match):
        served_model_config(text, {})


def artifact_repository(root: Path, with_facts: bool = True) -> Path:
    model = root / "artifact" / "m"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.onnx").write_bytes(b"onnx")
    (model / "config.pbtxt").write_text('name: "m"\nplatform: "onnxruntime_onnx"\n')
    if with_facts:
        (model / "optiserve-artifact.json").write_text(facts())
    return root / "artifact"


def test_assemble_links_the_versions_and_writes_the_served_config(tmp_path: Path) -> None:
    artifact, out = artifact_repository(tmp_path), tmp_path / "served"
    settings = json.dumps({"dynamicBatching": {"maxQueueDelayMicroseconds": 1234}})
    args = [f"--artifact={artifact}", f"--settings={settings}", f"--out={out}"]
    for _ in range(2):  # a restarted pod runs its init container again over the same folder
        assert assemble_main(args) == 0
    assert sorted(p.name for p in (out / "m").iterdir()) == ["1", "config.pbtxt"]
    assert (out / "m" / "1").is_symlink()
    assert (out / "m" / "1" / "model.onnx").read_bytes() == b"onnx"
    served = parsed((out / "m" / "config.pbtxt").read_text())
    assert served.dynamic_batching.max_queue_delay_microseconds == 1234


def test_an_artifact_from_before_the_split_is_served_with_its_own_config(tmp_path: Path) -> None:
    artifact, out = artifact_repository(tmp_path, with_facts=False), tmp_path / "served"
    assert assemble_main([f"--artifact={artifact}", "--settings={}", f"--out={out}"]) == 0
    assert (out / "m" / "config.pbtxt").read_text() == (artifact / "m" / "config.pbtxt").read_text()


@pytest.mark.parametrize(
    "settings", ['{"dynamicBatching": {"preferredBatchSizes": [64]}}', "[1]", "{nope"]
)
def test_assemble_fails_with_one_line_that_says_why(
    tmp_path: Path, settings: str, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact, log = artifact_repository(tmp_path), tmp_path / "termination-log"
    args = [f"--artifact={artifact}", f"--settings={settings}", f"--out={tmp_path / 'o'}"]
    assert assemble_main([*args, f"--termination-log={log}"]) == 1
    message = log.read_text()
    assert message.startswith("cannot assemble the model repository:")
    assert "Traceback" not in capsys.readouterr().err


def served_pod(serving: dict[str, Any]) -> dict[str, Any]:
    obj = json.loads(json.dumps(CPU_MODEL))
    obj["spec"]["serving"] = {**obj["spec"].get("serving", {}), **serving}
    spec = spec_of(obj)
    uri = "pvc://models/optiserve/default/digits/abc/model_repository/"
    deployment = render_deployment(CPU_OWNER, spec, Artifact(digest="abc", uri=uri), image="img")
    template: dict[str, Any] = deployment["spec"]["template"]
    return template


def test_the_pod_template_carries_the_settings_and_rolls_when_they_change() -> None:
    before = served_pod({})
    after = served_pod({"dynamicBatching": {"maxQueueDelayMicroseconds": 777}})
    assert before == served_pod({})  # same spec, byte-identical template: no needless roll
    assert before != after
    annotations = (before["metadata"]["annotations"], after["metadata"]["annotations"])
    assert annotations[0][ANNOTATION_SERVING_CONFIG] != annotations[1][ANNOTATION_SERVING_CONFIG]
    init = after["spec"]["initContainers"][0]
    settings_arg = next(a for a in init["command"] if a.startswith("--settings="))
    assert (
        json.loads(settings_arg.partition("=")[2])["dynamicBatching"]["maxQueueDelayMicroseconds"]
        == 777
    )
    triton = after["spec"]["containers"][0]
    assert f"--model-repository={SERVED_REPOSITORY}" in triton["args"]
    artifact_paths = {
        m["mountPath"] for c in (init, triton) for m in c["volumeMounts"] if m["name"] == "artifact"
    }
    assert len(artifact_paths) == 1  # the same path in both: the links resolve in Triton


def test_settings_the_artifact_cannot_take_are_refused_when_rendering() -> None:
    obj = json.loads(json.dumps(CPU_MODEL))
    obj["spec"]["serving"]["instanceGroup"] = {"kind": "KIND_CPU"}
    uri = "pvc://models/optiserve/default/digits/abc/model_repository/"
    plan = Artifact(digest="abc", uri=uri, format="tensorrt_plan")
    with pytest.raises(TritonConfigError, match="GPU only"):
        render_deployment(CPU_OWNER, spec_of(obj), plan)
    render_deployment(CPU_OWNER, spec_of(obj), plan.model_copy(update={"format": "onnx"}))


def test_the_init_container_is_restricted_and_reads_the_artifact_read_only() -> None:
    init = served_pod({})["spec"]["initContainers"][0]
    assert init["securityContext"]["readOnlyRootFilesystem"]
    assert init["securityContext"]["runAsNonRoot"]
    artifact = next(m for m in init["volumeMounts"] if m["name"] == "artifact")
    assert artifact["readOnly"]
    assert init["resources"]["limits"]["memory"]


def test_a_tuning_request_is_part_of_the_recipe() -> None:
    tuning = {"tuning": {"latencyBudgetMs": 50}}
    assert digest({}, tuning) != digest({}, {})  # the Job runs the search: a new artifact
    assert digest({}, {**tuning, "responseCache": {"enabled": True}}) == digest({}, tuning)


def test_the_pods_get_the_tuned_values_of_the_searched_settings_only() -> None:
    from optiserve.api.tuning import TunedSettings, TuningSummary
    from optiserve.render.serving_config import rollout_settings

    serving = ServingSpec.model_validate(
        {
            "maxBatchSize": 32,
            "dynamicBatching": {"maxQueueDelayMicroseconds": 100, "preferredBatchSizes": [4]},
            "instanceGroup": {"count": 1},
            "tuning": {"latencyBudgetMs": 50, "search": ["maxQueueDelayMicroseconds"]},
        }
    )
    chosen = TunedSettings(
        max_batch_size=8,
        preferred_batch_sizes=[8],
        max_queue_delay_microseconds=2000,
        instance_count=2,
    )

    def summary(outcome: Any) -> TuningSummary:
        return TuningSummary(outcome=outcome, settings=chosen, latency_budget_ms=50)

    tuned = rollout_settings(serving, summary("tuned"))
    assert tuned["dynamicBatching"]["maxQueueDelayMicroseconds"] == 2000  # searched: tuned
    assert tuned["dynamicBatching"]["preferredBatchSizes"] == [4]  # kept out of the search
    assert tuned["instanceGroup"]["count"] == 1
    best_effort = rollout_settings(serving, summary("bestEffort"))
    assert best_effort["dynamicBatching"]["maxQueueDelayMicroseconds"] == 2000
    for untuned in (summary("untuned"), None):
        assert rollout_settings(serving, untuned) == serving_settings(serving)
