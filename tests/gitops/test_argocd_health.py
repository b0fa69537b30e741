"""docs/argocd/health.lua, run by a real Lua interpreter on the statuses the operator writes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.gitops.lua_runner import LuaUnavailable, lua_binary, run_health_check, to_lua
from tests.gitops.status_objects import CASES, Case, model_object

HEALTH_LUA = Path(__file__).resolve().parents[2] / "docs" / "argocd" / "health.lua"
README = HEALTH_LUA.parent / "README.md"
HEALTH_KEY = "resource.customizations.health.optiserve.io_OptimizedModel"

try:
    lua_binary()
    _NO_LUA = ""
except LuaUnavailable as err:
    _NO_LUA = str(err)

needs_lua = pytest.mark.skipif(bool(_NO_LUA), reason=_NO_LUA)


@needs_lua
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_health_of_every_phase(case: Case) -> None:
    obj = model_object(case)
    status, message = run_health_check(HEALTH_LUA, obj)
    assert status == case.argo, message
    assert message  # Argo CD shows it next to the status; an empty one helps nobody


@needs_lua
def test_degraded_says_why() -> None:
    case = next(c for c in CASES if c.name == "job failed")
    _, message = run_health_check(HEALTH_LUA, model_object(case))
    assert "accuracy drop 0.04 > 0.01" in message


@needs_lua
def test_healthy_names_the_endpoint() -> None:
    case = next(c for c in CASES if c.name == "ready")
    _, message = run_health_check(HEALTH_LUA, model_object(case))
    assert "http://minilm.ml.svc:8000" in message


@needs_lua
def test_stale_message_names_both_generations() -> None:
    case = next(c for c in CASES if c.name == "ready but stale")
    _, message = run_health_check(HEALTH_LUA, model_object(case))
    assert "generation 4" in message and "3" in message


@needs_lua
def test_no_status_yet_is_progressing() -> None:
    obj = model_object(CASES[0])
    del obj["status"]
    assert run_health_check(HEALTH_LUA, obj)[0] == "Progressing"


@needs_lua
def test_ready_condition_of_an_older_generation_is_not_healthy() -> None:
    """status.observedGeneration moved on but Ready still speaks of the previous spec."""
    obj = model_object(next(c for c in CASES if c.name == "ready"))
    obj = copy.deepcopy(obj)
    obj["metadata"]["generation"] = 4
    obj["status"]["observedGeneration"] = 4
    assert run_health_check(HEALTH_LUA, obj)[0] == "Progressing"


@needs_lua
def test_unicode_and_quotes_survive_the_trip_to_lua() -> None:
    obj = model_object(next(c for c in CASES if c.name == "job failed"))
    for condition in obj["status"]["conditions"]:
        if condition["type"] == "Degraded":
            condition["message"] = 'quote " backslash \\ newline\nµs'
    _, message = run_health_check(HEALTH_LUA, obj)
    assert message == 'quote " backslash \\ newline\nµs'


def test_script_uses_only_what_argo_cd_sandbox_offers() -> None:
    text = HEALTH_LUA.read_text()
    for forbidden in ("os.", "io.", "require", "dofile", "loadfile"):
        assert forbidden not in text, forbidden


def test_readme_embeds_the_script_verbatim() -> None:
    """Users paste the README's argocd-cm snippet; its value must be the tested script."""
    readme = README.read_text()
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    config_map = yaml.safe_load(block)
    assert config_map["metadata"]["name"] == "argocd-cm"
    assert config_map["data"][HEALTH_KEY] == HEALTH_LUA.read_text()


def test_lua_literals() -> None:
    assert to_lua({"a": [1, 2.5, True, None], "b": None}) == '{["a"] = {1, 2.5, true, nil}}'
