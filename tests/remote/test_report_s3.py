"""``optiserve report s3://...``: the report of an artifact in S3 (``storage.s3``), read
through its completion marker from a real SeaweedFS, as a user runs it on a laptop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from optiserve.remote.artifacts import MARKER, upload_folder
from optiserve.remote.report_object import artifact_folder
from optiserve_testing.binaries import BinariesUnavailable
from optiserve_testing.cluster import LocalCluster, install_crd
from optiserve_testing.s3server import S3Server, start_s3
from tests.e2e.objects import tiny
from tests.report.sample_report import sample_report

pytestmark = pytest.mark.s3

PREFIX = "prod/ml/digits"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    try:
        with start_s3(tmp_path_factory.mktemp("s3"), buckets=["artifacts"]) as server:
            yield server
    except BinariesUnavailable as exc:
        pytest.skip(str(exc))


def upload_artifact(s3: S3Server, tmp_path: Path, digest: str) -> str:
    """An artifact folder as the Job uploads it; returns status.artifact.uri."""
    folder = tmp_path / digest
    (folder / "model_repository" / "digits" / "1").mkdir(parents=True)
    (folder / "model_repository" / "digits" / "1" / "model.onnx").write_bytes(os.urandom(4096))
    (folder / "report.json").write_text(json.dumps(sample_report()))
    (folder / "report.html").write_text("<html>the Job's page</html>")
    upload_folder(s3.client(), "artifacts", f"{PREFIX}/{digest}", folder, print)
    return f"s3://artifacts/{PREFIX}/{digest}/model_repository"


def report_cli(
    s3: S3Server, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "optiserve.cli", "report", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, **(env if env is not None else s3.env())},
        check=False,
        timeout=120,
    )


def test_the_folder_the_repository_the_page_and_the_report_name_the_same_artifact() -> None:
    for tail in ("", "/", "/model_repository", "/model_repository/", "/report.html"):
        assert artifact_folder(f"s3://b/p/ns/m/d1{tail}") == ("b", "p/ns/m/d1")
    assert artifact_folder("s3://b/p/ns/m/d1/report.json") == ("b", "p/ns/m/d1")


def test_the_report_of_an_s3_artifact_is_rendered_with_read_only_credentials(
    s3: S3Server, tmp_path: Path
) -> None:
    uri = upload_artifact(s3, tmp_path, "d1")
    done = report_cli(s3, uri, "--out", "page.html", cwd=tmp_path)  # the reader's key
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "page.html").read_text()
    assert "int8-dynamic" in page  # rendered afresh from report.json, not the Job's page
    # status.artifact.report names the page; it leads to the same report.
    page_uri = uri.removesuffix("model_repository") + "report.html"
    again = report_cli(s3, page_uri, "--out", "-", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout == page


def test_an_upload_without_its_marker_has_no_report(s3: S3Server, tmp_path: Path) -> None:
    uri = upload_artifact(s3, tmp_path, "d2")
    s3.client().delete("artifacts", f"{PREFIX}/d2/{MARKER}")  # the Job died before it
    done = report_cli(s3, uri, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"optiserve report: IncompleteArtifact: s3://artifacts/{PREFIX}/d2/: no completion marker"
    )
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert list(tmp_path.glob("*.html")) == []


def test_a_report_replaced_after_the_upload_is_refused(s3: S3Server, tmp_path: Path) -> None:
    uri = upload_artifact(s3, tmp_path, "d3")
    forged = json.dumps(sample_report(name="forged")).encode()
    s3.put("artifacts", f"{PREFIX}/d3/report.json", forged)
    done = report_cli(s3, uri, cwd=tmp_path)
    assert done.returncode == 2
    last = done.stderr.splitlines()[-1]
    assert last.startswith(
        f"optiserve report: PinMismatch: s3://artifacts/{PREFIX}/d3/report.json: sha256"
    ), done.stderr
    assert list(tmp_path.glob("*.html")) == []


def test_refused_credentials_fail_in_one_line_without_the_key(s3: S3Server, tmp_path: Path) -> None:
    uri = upload_artifact(s3, tmp_path, "d4")
    done = report_cli(s3, uri, cwd=tmp_path, env=s3.env(s3.wrong))
    assert done.returncode == 2
    assert done.stderr.startswith("optiserve report: AccessDenied: s3://artifacts/"), done.stderr
    assert s3.wrong.secret_key not in done.stderr + done.stdout
    assert s3.wrong.access_key not in done.stderr + done.stdout


@pytest.mark.cluster
def test_om_name_finds_the_report_through_the_callers_kubeconfig(
    s3: S3Server, cluster: LocalCluster, cluster_namespace: str, tmp_path: Path
) -> None:
    """``optiserve report om/NAME -n NS``: the model read with kubectl in the caller's context,
    its status.artifact.report read from the bucket with the caller's key, at the endpoint the
    caller sets (never one only the model names), in the region and addressing of the model's
    spec.objectStore (the caller's environment sets neither here)."""
    install_crd(cluster)
    digest = "e" * 64
    uri = upload_artifact(s3, tmp_path, digest)
    model = tiny("digits", storage={"s3": "s3://artifacts/prod"})
    model["spec"]["objectStore"] = {
        "endpoint": s3.endpoint,
        "region": s3.region,
        "addressing": "path",
        "credentialsSecret": "artifact-writer",
    }
    cluster.apply([model], namespace=cluster_namespace)
    report_uri = uri.removesuffix("model_repository") + "report.html"
    artifact = {"digest": digest, "uri": uri, "report": report_uri}
    cluster.kubectl(
        *("patch", "-n", cluster_namespace, "om", "digits", "--subresource=status"),
        *("--type=merge", "-p", json.dumps({"status": {"artifact": artifact}})),
        check=True,
    )
    caller = {
        "PATH": f"{cluster.binaries.kubectl().parent}:{os.environ['PATH']}",
        "KUBECONFIG": str(cluster.kubeconfig),
        "AWS_ACCESS_KEY_ID": s3.reader.access_key,  # the caller's own read-only key
        "AWS_SECRET_ACCESS_KEY": s3.reader.secret_key,
    }
    # The model names its endpoint; the caller's credentials do not go there unasked.
    unset = report_cli(s3, "om/digits", "-n", cluster_namespace, cwd=tmp_path, env=caller)
    assert unset.returncode == 2
    assert unset.stderr == (
        f"optiserve report: the model's store is at {s3.endpoint}: set AWS_ENDPOINT_URL_S3 to "
        "the address you reach it at (your credentials go only where your environment says)\n"
    )
    caller["AWS_ENDPOINT_URL_S3"] = s3.endpoint
    done = report_cli(
        s3, "om/digits", "-n", cluster_namespace, "-o", "page.html", cwd=tmp_path, env=caller
    )
    assert done.returncode == 0, done.stderr
    assert "int8-dynamic" in (tmp_path / "page.html").read_text()

    missing = report_cli(s3, "om/nope", "-n", cluster_namespace, cwd=tmp_path, env=caller)
    assert missing.returncode == 2
    assert missing.stderr.startswith("optiserve report: kubectl: "), missing.stderr
    assert "NotFound" in missing.stderr and missing.stderr.count("\n") == 1
    cluster.apply([tiny("fresh")], namespace=cluster_namespace)  # no artifact yet
    fresh = report_cli(s3, "om/fresh", "-n", cluster_namespace, cwd=tmp_path, env=caller)
    assert fresh.returncode == 2
    assert fresh.stderr == (
        "optiserve report: fresh has no artifact yet (status.artifact is not set)\n"
    )
