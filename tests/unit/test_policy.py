"""optiserve.policy: the rules the operator checks before it renders anything (and the chart's
admission policy checks in the API server; tests/chart/test_admission_policy.py runs the same
cases there)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from optiserve.api import OptimizedModelSpec
from optiserve.api.spec import ResourceRequirements
from optiserve.policy import (
    POLICY_KEYS,
    PolicyError,
    Violation,
    describe,
    gpu_count,
    image_allowed,
    parse_policy,
    read_policy_dir,
    structural_violations,
    violations,
)
from tests.unit.policy_cases import ALLOWED, CASES, FORBIDDEN, POLICY_DATA, Case

POLICY = parse_policy(POLICY_DATA)


def spec_of(case: Case) -> OptimizedModelSpec:
    return OptimizedModelSpec.model_validate(case.spec())


@pytest.mark.parametrize("case", ALLOWED, ids=lambda c: c.name)
def test_allowed_specs_pass(case: Case) -> None:
    assert violations(spec_of(case), POLICY) == []


@pytest.mark.parametrize("case", FORBIDDEN, ids=lambda c: c.name)
def test_each_forbidden_spec_is_refused_naming_its_field(case: Case) -> None:
    found = violations(spec_of(case), POLICY)
    assert {v.field for v in found} == {case.field}, found
    assert all(v.message for v in found)  # says why, not only where


def test_the_cases_cover_every_rule() -> None:
    names = {c.name for c in CASES}
    assert len(names) == len(CASES), "case names are model names: unique"
    fields = {c.field for c in FORBIDDEN}
    for expected in (
        "spec.optimization.job.image",
        "spec.serving.image",
        "spec.optimization.job.resources",
        "spec.serving.resources.limits.cpu",
        "spec.optimization.job.nodeSelector",
        "spec.storage.pvc",
        "spec.storage.subPath",
        "spec.source.uri",
    ):
        assert expected in fields


def test_without_a_policy_only_the_structural_rules_apply() -> None:
    by_name = {c.name: c for c in CASES}
    assert violations(spec_of(by_name["other-image"]), None) == []
    assert violations(spec_of(by_name["four-gpus"]), None) == []
    for name in ("reads-the-store", "dot-dot", "nested-subpath", "dot-subpath"):
        spec = spec_of(by_name[name])
        assert {v.field for v in violations(spec, None)} == {by_name[name].field}
        assert violations(spec, None) == structural_violations(spec)


def test_every_violation_is_reported_not_only_the_first() -> None:
    spec = FORBIDDEN[0].spec()
    spec["serving"] = {"image": "evil.io/triton:1", "resources": {"limits": {"cpu": "99"}}}
    spec["storage"]["subPath"] = "a/b"
    found = violations(OptimizedModelSpec.model_validate(spec), POLICY)
    assert [v.field for v in found] == [
        "spec.storage.subPath",
        "spec.optimization.job.image",
        "spec.serving.image",
        "spec.serving.resources.limits.cpu",
    ]
    text = describe(found)
    assert text.startswith("spec.storage.subPath: 'a/b' must be one folder name")
    assert "; spec.optimization.job.image: image 'evil.io/x:1'" in text


def test_image_prefixes_match_at_a_path_boundary_only() -> None:
    prefixes = ["ghcr.io/acme", "registry.local/"]
    assert image_allowed("ghcr.io/acme", prefixes)
    assert image_allowed("ghcr.io/acme:1.0", prefixes)
    assert image_allowed("ghcr.io/acme/x:1", prefixes)
    assert image_allowed("ghcr.io/acme@sha256:" + "0" * 64, prefixes)
    assert image_allowed("registry.local/anything:2", prefixes)
    assert not image_allowed("ghcr.io/acme-evil/x:1", prefixes)
    assert not image_allowed("ghcr.io/acmex", prefixes)
    assert not image_allowed("evil.io/ghcr.io/acme:1", prefixes)
    assert not image_allowed("anything", [])
    assert image_allowed("anything", ["*"])


def test_gpu_count_sums_gpu_resources_and_gives_a_gpu_target_one() -> None:
    none = ResourceRequirements()
    assert gpu_count(none, gpu_target=False) == 0
    assert gpu_count(none, gpu_target=True) == 1
    both = ResourceRequirements(limits={"nvidia.com/gpu": 1, "nvidia.com/mig-1g.10gb": "2"})
    assert gpu_count(both, gpu_target=True) == 3
    assert gpu_count(ResourceRequirements(requests={"nvidia.com/gpu": 2}), gpu_target=False) == 2
    # The schema refuses such a count; were one to get through, it is never within a limit.
    fraction = ResourceRequirements.model_construct(limits={"nvidia.com/gpu": "1.5"}, requests={})
    assert gpu_count(fraction, gpu_target=False) >= 10**6
    assert gpu_count(ResourceRequirements(limits={"cpu": "8"}), gpu_target=False) == 0


def test_parse_policy_reads_every_key_and_trims_lists() -> None:
    policy = parse_policy(POLICY_DATA)
    assert policy.allowed_image_prefixes == (
        "ghcr.io/optiserve/optimizer",
        "nvcr.io/nvidia/tritonserver",
    )
    assert policy.max_gpus == 1
    assert policy.max_cpu == Decimal(16)
    assert policy.max_memory == Decimal(64 * 2**30)
    assert policy.allowed_tolerations == ("dedicated:NoSchedule",)
    empty = parse_policy({**POLICY_DATA, "allowedTolerations": " , "})
    assert empty.allowed_tolerations == ()


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        ({k: v for k, v in POLICY_DATA.items() if k != "maxCpu"}, "missing maxCpu"),
        ({**POLICY_DATA, "maxGPUs": "8"}, "unknown maxGPUs"),
        ({**POLICY_DATA, "maxGpus": "-1"}, "maxGpus: '-1' is not a whole number"),
        ({**POLICY_DATA, "maxMemory": "lots"}, "maxMemory: 'lots' is not a Kubernetes quantity"),
    ],
)
def test_a_misspelt_or_bad_policy_is_an_error_not_a_lifted_limit(
    data: dict[str, str], complaint: str
) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(data)
    assert complaint in str(err.value)


def test_read_policy_dir_reads_a_mounted_config_map(tmp_path: Path) -> None:
    # What the kubelet writes for a ConfigMap volume: a timestamped folder, ..data pointing at
    # it, and one link per key.
    stamped = tmp_path / "..2026_11_27_09_00_00.000000001"
    stamped.mkdir()
    for key, value in POLICY_DATA.items():
        (stamped / key).write_text(value)
        (tmp_path / key).symlink_to(Path("..data") / key)
    (tmp_path / "..data").symlink_to(stamped.name)
    assert read_policy_dir(tmp_path) == POLICY
    assert set(POLICY_DATA) == set(POLICY_KEYS)


def test_read_policy_dir_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="policy folder"):
        read_policy_dir(tmp_path / "absent")
    (tmp_path / "maxGpus").write_text("1")
    with pytest.raises(PolicyError, match="missing allowedImagePrefixes"):
        read_policy_dir(tmp_path)


def test_violation_reads_as_field_then_reason() -> None:
    assert str(Violation("spec.serving.image", "no")) == "spec.serving.image: no"
