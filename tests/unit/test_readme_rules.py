"""The README's account of the API is the code's: every cross-field rule is listed, and the
``optiserve validate`` example prints what the README says it prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from optiserve.api import OptimizedModel
from optiserve.api.rules import RuledModel
from optiserve.cli import main
from optiserve.crd import models_by_name

README = Path("README.md").read_text()
SECTION = README[README.index("## The API") : README.index("`optiserve validate FILE...` checks")]
SPANS = re.findall(r"`([^`]+)`", SECTION)  # the fields a rule is about are written as code


def test_every_cross_field_rule_is_in_the_readme_list() -> None:
    for name, model in models_by_name(OptimizedModel).items():
        if not issubclass(model, RuledModel):
            continue
        for rule in model.rules:
            field = rule.field.rsplit(".", 1)[-1]
            named = [span for span in SPANS if re.search(rf"\b{field}\b", span)]
            assert named, f"{name}'s rule on {rule.field} is not in the README's list"


def test_the_readme_validate_example_is_what_validate_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = re.search(r"For this `bad.yaml`:\n\n```yaml\n(.*?)```\n\n```\n(.*?)```", README, re.S)
    assert example is not None
    spec, session = example.groups()
    command, *expected = session.strip().splitlines()
    assert command == "$ optiserve validate bad.yaml"
    (tmp_path / "bad.yaml").write_text(spec)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.chdir(tmp_path)
    try:
        assert main(["validate", "bad.yaml"]) == 1
    finally:
        monkeypatch.undo()
    assert capsys.readouterr().err.strip().splitlines() == expected
