"""Retention on the operator's side: the digests a new Job must keep, and the spec ConfigMaps
of superseded Jobs (pure, plain asserts)."""

from __future__ import annotations

from optiserve.api.status import Artifact, OptimizedModelStatus
from optiserve.render.job import KEEP_DIGESTS_ENV, KEEP_SUPERSEDED_ENV, STALE_AFTER_ENV
from optiserve.render.kubernetes import job_name
from optiserve_operator.reconcile import Observed, plan, recipe_digest
from optiserve_operator.retention import SpecConfigMap, config_maps_to_delete, kept_digests
from tests.operator.helpers import CONFIG, OWNER, job, model, spec

NOW = "2026-01-01T00:00:00Z"
SERVED, LAST_GOOD, OLD = "a" * 64, "b" * 64, "c" * 64


def artifact(digest: str) -> Artifact:
    return Artifact(digest=digest, uri=f"pvc://model-store/optiserve/ml/digits/{digest}/")


def test_kept_digests_are_the_served_and_last_good_ones() -> None:
    assert kept_digests(OptimizedModelStatus()) == ()
    status = OptimizedModelStatus(artifact=artifact(SERVED), last_good_artifact=artifact(SERVED))
    assert kept_digests(status) == (SERVED,)
    status = OptimizedModelStatus(artifact=artifact(SERVED), last_good_artifact=artifact(LAST_GOOD))
    assert kept_digests(status) == (SERVED, LAST_GOOD)


def test_only_config_maps_of_superseded_finished_jobs_are_deleted() -> None:
    maps = [
        SpecConfigMap("digits-opt-wanted", "d" * 64),
        SpecConfigMap("digits-opt-served", SERVED),
        SpecConfigMap("digits-opt-old", OLD),
        SpecConfigMap("digits-opt-running", OLD),
        SpecConfigMap("digits-opt-earlier-retry", "d" * 64),
    ]
    deleted = config_maps_to_delete(
        maps,
        wanted_job="digits-opt-wanted",
        keep_digests=[SERVED],
        active_jobs=["digits-opt-running"],
    )
    assert deleted == ("digits-opt-earlier-retry", "digits-opt-old")


def env_of(manifest: dict[str, object]) -> dict[str, str]:
    container = manifest["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    return {e["name"]: e["value"] for e in container["env"]}


def test_a_new_job_is_told_what_to_keep_and_old_config_maps_go() -> None:
    the_spec = spec(precision="int8", method="dynamic")
    digest = recipe_digest(OWNER.name, the_spec)
    wanted = job_name(OWNER.name, digest)
    status = OptimizedModelStatus(artifact=artifact(SERVED), last_good_artifact=artifact(LAST_GOOD))
    observed = Observed(
        model=model(the_spec, status),
        jobs=(job("digits-opt-cccccccccc", OLD, "succeeded"),),
        config_maps=(
            SpecConfigMap("digits-opt-cccccccccc", OLD),
            SpecConfigMap("digits-opt-aaaaaaaaaa", SERVED),
        ),
    )
    result = plan(observed, NOW, CONFIG)
    jobs = [m for m in result.create if m["kind"] == "Job"]
    assert [j["metadata"]["name"] for j in jobs] == [wanted]
    env = env_of(jobs[0])
    assert env[KEEP_DIGESTS_ENV] == f"{SERVED},{LAST_GOOD}"
    assert env[KEEP_SUPERSEDED_ENV] == "2"  # storage.retention's default
    assert env[STALE_AFTER_ENV] == "3600"  # the Job's activeDeadlineSeconds
    assert result.delete_config_maps == ("digits-opt-cccccccccc",)


def test_a_running_superseded_job_keeps_its_config_map_while_it_is_deleted() -> None:
    the_spec = spec()
    observed = Observed(
        model=model(the_spec),
        jobs=(job("digits-opt-cccccccccc", OLD, "active"),),
        config_maps=(SpecConfigMap("digits-opt-cccccccccc", OLD),),
    )
    result = plan(observed, NOW, CONFIG)
    assert result.delete_jobs == ("digits-opt-cccccccccc",)
    assert result.delete_config_maps == ()


def test_the_summary_carries_the_optimized_sources_hash() -> None:
    from optiserve_operator.summary import parse_summary

    source = "e" * 64
    message = (
        f'{{"digest": "sha256:{OLD}", "artifact": {{"uri": "pvc://store/x/", '
        f'"sourceSha256": "{source}"}}}}'
    )
    assert parse_summary(message, OLD, "pvc://store/d/").artifact.source_sha256 == source
    # A value that is no sha256 is dropped, not fatal; an older optimizer sends none.
    garbage = message.replace(source, "not-a-hash")
    assert parse_summary(garbage, OLD, "pvc://store/d/").artifact.source_sha256 is None
    assert parse_summary(f'{{"digest": "{OLD}"}}', OLD, "pvc://d/").artifact.source_sha256 is None
