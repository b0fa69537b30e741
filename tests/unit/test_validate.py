from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from optiserve.cli import main
from optiserve.validate import validate_object, validate_text

from .specs import INVALID, minimal

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
