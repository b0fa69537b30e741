from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from optiserve.cli import main
from optiserve.validate import validate_object, validate_text

from .specs import INVALID, minimal, with_change

EXAMPLES = sorted(Path("examples").glob("*.yaml"))


def test_minimal_spec_is_valid_and_defaulted() -> None:
    model, problems = validate_object(minimal(), "t")
    assert problems == []
    assert model is not None
    assert model.spec.serving.max_batch_size == 32
    assert model.spec.optimization.quantization.precision == "fp32"


@pytest.mark.parametrize(("what", "obj", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_spec_is_refused_naming_the_field(
    what: str, obj: dict[str, object], field: str
) -> None:
    model, problems = validate_object(obj, "t")
    assert model is None, what
    assert any(field in p.path for p in problems), [str(p) for p in problems]


def test_examples_are_valid() -> None:
    assert len(EXAMPLES) >= 3
    assert main(["validate", *map(str, EXAMPLES)]) == 0


def test_multi_document_file_reports_each_document(tmp_path: Path) -> None:
    bad = INVALID[0][1]
    text = yaml.safe_dump_all([minimal(), bad, ["not", "a", "mapping"]])
    models, problems = validate_text(text, "multi.yaml")
    assert len(models) == 1
    assert {p.source for p in problems} == {"multi.yaml#2", "multi.yaml#3"}


def test_cli_prints_every_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump_all([c[1] for c in INVALID[:3]]))
    assert main(["validate", str(spec)]) == 1
    err = capsys.readouterr().err
    for _, _, field in INVALID[:3]:
        assert field in err
    assert "Traceback" not in err


def test_cli_reports_unreadable_and_broken_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    assert main(["validate", str(broken), str(tmp_path / "missing.yaml")]) == 1
    err = capsys.readouterr().err
    assert "not valid YAML" in err
    assert "cannot read" in err


def test_every_problem_of_a_spec_is_reported_at_once() -> None:
    obj = minimal()
    obj["metadata"]["colour"] = "blue"
    spec = obj["spec"]
    spec["source"]["format"] = "onnx"
    spec["optimization"] |= {
        "pruning": {"method": "2:4", "sparsity": 0.7},  # two rules of two objects
        "student": {"method": "narrow"},  # a rule of the whole spec
        "quantization": {"precision": "int4"},  # a field error in the same object
        "benchmark": {"batchSizes": [0, -4]},
    }
    spec["serving"] = {"image": "", "autoscaling": {"minReplicas": 0, "target": "fast"}}
    model, problems = validate_object(obj, "t")
    assert model is None
    found = {(p.path, p.message.split(":")[0][:30]) for p in problems}
    paths = {p.path for p in problems}
    assert {
        "metadata.colour",
        "spec.optimization.quantization.precision",
        "spec.optimization.benchmark.batchSizes[0]",
        "spec.optimization.benchmark.batchSizes[1]",
        "spec.optimization.pruning.sparsity",  # 2:4 removes exactly half
        "spec.optimization.pruning.method",  # 2:4 on cpu, and recovery on ONNX
        "spec.optimization.student.method",
        "spec.serving.image",
        "spec.serving.autoscaling.target",
        "spec.serving.autoscaling.minReplicas",
    } <= paths, found
    assert len([p for p in problems if p.path == "spec.optimization.pruning.method"]) == 2
    assert len(problems) == len({(p.path, p.message) for p in problems}), "no duplicates"


def test_a_rule_that_reads_an_invalid_field_is_not_guessed() -> None:
    """device "tpu" is wrong; whether TensorRT fits depends on the fix, so it is not reported."""
    obj = with_change("optimization.target", {"device": "tpu"})
    obj["spec"]["optimization"]["tensorrt"] = {"enabled": True}
    obj["spec"]["serving"] = {"image": ""}
    _, problems = validate_object(obj, "t")
    assert {p.path for p in problems} == {"spec.optimization.target.device", "spec.serving.image"}


def test_status_in_a_submitted_file_is_ignored_as_the_api_server_does() -> None:
    obj = minimal() | {"status": {"phase": "Bogus", "conditions": [{"type": "Ready"}]}}
    model, problems = validate_object(obj, "t")
    assert problems == [] and model is not None and model.status is None
    # ... but strict decoding refuses unknown keys there first, on the server as here
    obj = minimal() | {"status": {"conditions": [{"type": "Ready", "colour": "blue"}]}}
    _, problems = validate_object(obj, "t")
    assert [(p.path, p.message) for p in problems] == [
        ("status.conditions[0].colour", "unknown field")
    ]


def test_generate_name_alone_is_checked_as_the_name_the_server_makes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = minimal()
    obj["metadata"] = {"generateName": "m-"}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(obj))
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out == "ok: m-<generated>\n"
    assert main(["render", str(path)]) == 1
    assert "render needs a name" in capsys.readouterr().err
    obj["metadata"] = {"generateName": "Model-"}
    assert validate_object(obj, "t")[0] is None


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(2**63 - 1, True), (2**63, False), (2**64, False), (-(2**64), False), (4.0, True)],
)
def test_integers_are_what_json_and_int64_hold(value: object, accepted: bool) -> None:
    policy = {"defaultTimeoutMicroseconds": value}
    obj = with_change("serving.dynamicBatching.defaultQueuePolicy", policy)
    model, problems = validate_object(obj, "t")
    assert (model is not None) is accepted, problems


def test_yaml_timestamps_and_integer_keys_read_as_kubectl_reads_them(tmp_path: Path) -> None:
    text = yaml.safe_dump(minimal()).replace(
        "metadata:\n", "metadata:\n  annotations:\n    released: 2026-01-01\n    7: seven\n"
    )
    models, problems = validate_text(text, "t.yaml")
    assert problems == []
    assert models[0].metadata.annotations == {"released": "2026-01-01", "7": "seven"}


def test_messages_never_echo_a_huge_value() -> None:
    obj = with_change("serving.autoscaling", {"target": "f" * 100_000})
    _, problems = validate_object(obj, "t")
    assert problems and all(len(str(p)) < 400 for p in problems)
