"""Issue 16 end to end: an OptimizedModel whose model and eval data live in a real S3 server
(SeaweedFS, testing/optiserve_testing/s3server.py) reaches Ready with real Triton pods serving,
reading the bucket with the credentials of the Secret its spec names; wrong credentials give a
Degraded condition naming the URI (never the secret), nothing half-written, and the good version
keeps serving. Likewise a model and data behind HTTPS with sha256 pins, from a local server whose
certificate a private CA signed, trusted through ``spec.objectStore.caBundle`` (a ConfigMap).

Runs in the ``local-pods`` namespace, where the pod runner runs Triton's pods too (their
readiness probe passes only once the model is loaded).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from optiserve.api import OptimizedModel
from optiserve.render.job import artifact_uri
from optiserve_testing.binaries import BinariesUnavailable
from optiserve_testing.cluster import LocalCluster
from optiserve_testing.kwok_config import RUN_LOCALLY_NAMESPACES
from optiserve_testing.s3server import S3Server, start_s3
from optiserve_testing.waiting import wait_until
from tests.e2e.conftest import OperatorProcess, prepare_model_namespace
from tests.e2e.models import write_tiny_classifier
from tests.e2e.objects import condition, get, served_digest, tiny, wait_ready
from tests.remote.http_servers import Behaviour, serve

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.cluster,
    pytest.mark.triton,
    pytest.mark.s3,
    pytest.mark.timeout(900),
]

NAME = "from-s3"
READER_SECRET = "bucket-reader"
WRONG_SECRET = "bucket-wrong-key"


@contextlib.contextmanager
def tiny_model_in_s3(
    tmp_path_factory: pytest.TempPathFactory, buckets: list[str]
) -> Iterator[S3Server]:
    """A real SeaweedFS with ``buckets``; the tiny classifier and its eval data in ``models``
    (``tiny/tiny.onnx``, ``data/eval.npz``)."""
    files = tmp_path_factory.mktemp("tiny")
    write_tiny_classifier(files)
    try:
        with start_s3(tmp_path_factory.mktemp("s3"), buckets=buckets) as server:
            server.put("models", "tiny/tiny.onnx", (files / "tiny.onnx").read_bytes())
            server.put("models", "data/eval.npz", (files / "eval.npz").read_bytes())
            yield server
    except BinariesUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with tiny_model_in_s3(tmp_path_factory, ["models"]) as server:
        yield server


def secret(name: str, access_key: str, secret_key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key},
    }


@pytest.fixture(scope="module")
def namespace(cluster: LocalCluster, s3: S3Server) -> Iterator[str]:
    name = RUN_LOCALLY_NAMESPACES[0]
    # Another module may have just deleted it (without waiting): wait until it is gone.
    wait_until(
        f"namespace {name} gone",
        lambda: cluster.kubectl("get", "namespace", name).returncode != 0,
        timeout_s=120,
    )
    prepare_model_namespace(cluster, name)
    cluster.apply(
        [
            secret(READER_SECRET, s3.reader.access_key, s3.reader.secret_key),
            secret(WRONG_SECRET, s3.wrong.access_key, s3.wrong.secret_key),
        ],
        namespace=name,
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=true", "--timeout=120s")


def model(s3: S3Server, secret_name: str, max_drop: float) -> dict[str, Any]:
    obj = tiny(NAME)
    obj["spec"]["source"] = {"uri": "s3://models/tiny/tiny.onnx"}
    obj["spec"]["optimization"]["accuracy"]["dataset"] = "s3://models/data/eval.npz"
    obj["spec"]["optimization"]["accuracy"]["maxDrop"] = max_drop
    obj["spec"]["serving"] = {"maxBatchSize": 8, "replicas": 1, "rolloutDeadlineSeconds": 60}
    obj["spec"]["objectStore"] = {
        "endpoint": s3.endpoint,
        "addressing": "path",
        "credentialsSecret": secret_name,
    }
    return obj


def everything_the_user_sees(cluster: LocalCluster, ns: str) -> str:
    """The model, its children, events and every pod's log and termination message."""
    texts = [
        json.dumps(get(cluster, ns, "om,job,deploy,configmap,events,pods")),
        cluster.kubectl("describe", "-n", ns, "om,job,pod").stdout,
    ]
    pods = get(cluster, ns, "pods") or {"items": []}
    for pod in pods["items"]:
        texts.append(cluster.kubectl("logs", "-n", ns, pod["metadata"]["name"]).stdout)
    return "\n".join(texts)


def artifact_folder(cluster: LocalCluster, ns: str, obj: dict[str, Any], digest: str) -> Path:
    """The digest's folder in the model's own folder of the storage claim."""
    spec = OptimizedModel.model_validate(obj).spec
    uri = artifact_uri(spec, digest, namespace=ns, name=NAME)
    return cluster.claim_path(ns, uri).parent


def test_a_model_from_s3_is_served_and_wrong_credentials_degrade_without_the_secret(
    cluster: LocalCluster, operator: OperatorProcess, namespace: str, s3: S3Server
) -> None:
    ns = namespace
    good_model = model(s3, READER_SECRET, 0.05)
    cluster.apply([good_model], namespace=ns)
    good = wait_ready(cluster, operator, ns, NAME)
    good_digest = good["status"]["recipeDigest"]
    assert served_digest(cluster, ns, NAME) == good_digest
    assert get(cluster, ns, "deployment", NAME)["status"].get("readyReplicas") == 1
    job = get(cluster, ns, "job", good["status"]["jobName"])
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e}
    assert refs == {READER_SECRET}

    # Wrong credentials (and a new recipe, so a new Job runs).
    cluster.apply([model(s3, WRONG_SECRET, 0.04)], namespace=ns)

    def degraded() -> bool:
        cond = condition(get(cluster, ns, "om", NAME), "Degraded")
        return cond.get("status") == "True" and cond.get("reason") == "OptimizationFailed"

    try:
        wait_until("Degraded=True", degraded, timeout_s=300)
    except AssertionError:
        described = cluster.kubectl("describe", "-n", ns, "om,job,pod").stdout
        pytest.fail(f"never degraded\n{described[-6000:]}\n{operator.logs()[-3000:]}")
    message = condition(get(cluster, ns, "om", NAME), "Degraded")["message"]
    assert "s3://models/tiny/tiny.onnx" in message and "AccessDenied" in message
    assert served_digest(cluster, ns, NAME) == good_digest
    assert get(cluster, ns, "deployment", NAME)["status"].get("readyReplicas") == 1
    # Nothing half-written: the store holds the good artifact and nothing else.
    folder = artifact_folder(cluster, ns, good_model, good_digest)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]
    seen = everything_the_user_sees(cluster, ns)
    for credential in (s3.reader.secret_key, s3.wrong.secret_key):
        assert credential not in seen


def test_a_model_behind_pinned_https_urls_of_a_private_ca_is_served(
    cluster: LocalCluster, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    write_tiny_classifier(tmp_path)
    files = {f"/files/{n}": (tmp_path / n).read_bytes() for n in ("tiny.onnx", "eval.npz")}
    pins = {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}
    behaviour = Behaviour(files=files)
    with serve(behaviour, tmp_path / "tls") as server:
        assert server.url.startswith("https://") and server.ca_file is not None
        bundle = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "private-ca"},
            "data": {"root.pem": server.ca_file.read_text()},
        }
        cluster.apply([bundle], namespace=namespace)

        def https_model(name: str, ca: dict[str, str] | None) -> dict[str, Any]:
            obj = tiny(name)
            if ca is not None:
                obj["spec"]["objectStore"] = {"caBundle": ca}
            obj["spec"]["source"] = {
                "uri": f"{server.url}/files/tiny.onnx",
                "sha256": pins["/files/tiny.onnx"],
            }
            dataset = f"{server.url}/files/eval.npz#sha256={pins['/files/eval.npz']}"
            obj["spec"]["optimization"]["accuracy"]["dataset"] = dataset
            obj["spec"]["serving"] = {"maxBatchSize": 8, "replicas": 1}
            return obj

        # The same inputs without the bundle: the certificate is refused, in one clear line.
        untrusted = https_model("from-https-untrusted", None)
        trusted = https_model("from-http", {"configMap": "private-ca", "key": "root.pem"})
        cluster.apply([untrusted, trusted], namespace=namespace)
        ready = wait_ready(cluster, operator, namespace, "from-http")

        # (while the server is up: a refused connection would read as TransferFailed)
        def refused() -> bool:
            cond = condition(get(cluster, namespace, "om", "from-https-untrusted"), "Degraded")
            return cond.get("status") == "True" and cond.get("reason") == "OptimizationFailed"

        wait_until("the untrusted model Degraded", refused, timeout_s=300)
        message = condition(get(cluster, namespace, "om", "from-https-untrusted"), "Degraded")
        assert "UntrustedCertificate" in message["message"], message
        assert "spec.objectStore.caBundle" in message["message"], message
        assert "Traceback" not in message["message"]
    pod = get(cluster, namespace, "job", ready["status"]["jobName"])["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["ca-bundle"]["configMap"]["items"] == [{"key": "root.pem", "path": "ca.crt"}]
    assert served_digest(cluster, namespace, "from-http") == ready["status"]["recipeDigest"]
    assert get(cluster, namespace, "deployment", "from-http")["status"].get("readyReplicas") == 1
    assert sorted(r["path"] for r in behaviour.requests) == sorted(files)
