"""End to end from the built images (issue 18): the operator runs from the operator image and the
optimization Job's pod from the optimizer image (optiserve_testing/image_exec.py: the image's root
filesystem, read-only, as UID 10001, with the pod's env and volumes), so what reaches Ready here
is what a cluster would run, serving.tuning included (the search runs in the Job's pod). Triton's
pods still run the local stand-in (its image is NVIDIA's).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from optiserve_testing.cluster import LocalCluster
from optiserve_testing.image_exec import ExecSpec, Mount, launcher_argv, write_spec
from optiserve_testing.image_tuning import SHORT_TUNING, short_search_problems
from optiserve_testing.images import REPO_ROOT, BuiltImage, require_built_images
from optiserve_testing.pod_runner import PodRunner
from optiserve_testing.waiting import wait_until
from tests.e2e.conftest import OperatorProcess, prepare_model_namespace
from tests.e2e.objects import condition, get, items, tiny, wait_ready

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.cluster,
    pytest.mark.images,
    pytest.mark.timeout(900),
]
BROKEN_OPTIMIZER = "ghcr.io/optiserve/optimizer:broken-e2e"


def inline_kubeconfig(path: Path) -> str:
    """The cluster's kubeconfig with its files inlined: the container sees only its mounts."""
    config = yaml.safe_load(path.read_text())
    for entry, key in (("clusters", "cluster"), ("users", "user")):
        for item in config[entry]:
            section = item[key]
            for name in ("certificate-authority", "client-certificate", "client-key"):
                if name in section:
                    data = Path(section.pop(name)).read_bytes()
                    section[f"{name}-data"] = base64.b64encode(data).decode()
    return yaml.safe_dump(config)


class ImageOperator(OperatorProcess):
    """The operator image's entrypoint against the local cluster, as the chart's pod runs it."""

    def __init__(self, cluster: LocalCluster, log_dir: Path, image: BuiltImage, job_image: str):
        super().__init__(cluster, log_dir)
        self.image = image
        self.job_image = job_image

    def start(self) -> None:
        self.starts += 1
        config_dir = self.log_dir / "config"
        config_dir.mkdir(exist_ok=True)
        kubeconfig = config_dir / "kubeconfig"
        kubeconfig.write_text(inline_kubeconfig(self.cluster.kubeconfig))
        kubeconfig.chmod(0o644)  # the image's user reads it, as a mounted Secret
        tmp = self.log_dir / "tmp"
        tmp.mkdir(exist_ok=True)
        tmp.chmod(0o1777)
        uid, gid = self.image.user
        entrypoint = list(self.image.config.get("Entrypoint") or [])
        spec = ExecSpec(
            image=self.image.reference,
            rootfs=str(self.image.rootfs()),
            argv=[
                *entrypoint,
                "--standalone",
                "--kubeconfig=/etc/optiserve/kubeconfig",
                "--poll-seconds=1",
                f"--resync-seconds={self.resync_seconds}",
                "--log-format=full",
                f"--optimizer-image={self.job_image}",
            ],
            env=self.image.env,
            uid=uid,
            gid=gid,
            scratch=str(self.log_dir / f"container-{self.starts}"),
            mounts=[Mount(str(config_dir), "/etc/optiserve", True), Mount(str(tmp), "/tmp")],
        )
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            launcher_argv(write_spec(spec, self.log_dir / f"spec-{self.starts}.json")),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ},
            cwd=REPO_ROOT,
        )


@pytest.fixture(scope="module")
def built() -> dict[str, BuiltImage]:
    return require_built_images()


@pytest.fixture(scope="module")
def runner(cluster: LocalCluster, built: dict[str, BuiltImage]) -> Iterator[PodRunner]:
    """The session's pod runner, running pods that name the optimizer image inside it."""
    pod_runner = cluster.pod_runner
    assert pod_runner is not None
    optimizer = built["optimizer"]
    onnxruntime = f"{optimizer.site_packages()}/onnxruntime"
    pod_runner.images[optimizer.reference] = optimizer
    pod_runner.images[BROKEN_OPTIMIZER] = optimizer.without(onnxruntime)
    yield pod_runner
    pod_runner.images.pop(optimizer.reference, None)
    pod_runner.images.pop(BROKEN_OPTIMIZER, None)


@pytest.fixture(scope="module")
def image_operator(
    cluster: LocalCluster,
    crd: None,
    runner: PodRunner,
    built: dict[str, BuiltImage],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ImageOperator]:
    log_dir = tmp_path_factory.mktemp("image-operator")
    log_dir.chmod(0o755)
    process = ImageOperator(cluster, log_dir, built["operator"], built["optimizer"].reference)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def namespace(cluster: LocalCluster) -> Iterator[str]:
    name = f"img-{uuid.uuid4().hex[:8]}"
    prepare_model_namespace(cluster, name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def test_apply_to_ready_with_the_operator_and_optimizer_images(
    cluster: LocalCluster,
    image_operator: ImageOperator,
    runner: PodRunner,
    built: dict[str, BuiltImage],
    namespace: str,
) -> None:
    cluster.apply([tiny("imaged")], namespace=namespace)
    obj = wait_ready(cluster, image_operator, namespace, "imaged")
    assert obj["status"]["phase"] == "Ready"
    assert obj["status"]["metrics"]["speedup"].endswith("x")
    (job,) = items(cluster, namespace, "jobs", "imaged")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == built["optimizer"].reference
    # The Job ran in the image, as the pod's runAsUser (which wins over the image's USER, as
    # on a kubelet): the launcher's spec is beside the pod's log.
    run_as = job["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    pods = get(cluster, namespace, "pods", "-l", f"job-name={job['metadata']['name']}")
    (pod,) = pods["items"]
    pod_dir = runner.pod_dir(namespace, pod["metadata"]["name"])
    spec = json.loads((pod_dir / "optimizer.image-exec.json").read_text())
    assert spec["image"] == built["optimizer"].reference
    assert spec["rootfs"] == str(built["optimizer"].rootfs())
    assert (spec["uid"], spec["gid"]) == (run_as, run_as)
    # What the Job wrote in the store is its user's, not root's.
    store = cluster.pvc_root / namespace / "model-store"
    written = [p for p in store.rglob("*") if p.is_file()]
    assert written and {p.stat().st_uid for p in written} == {run_as}
    assert "Traceback" not in image_operator.logs()


def test_a_broken_optimizer_image_fails_naming_the_image_and_the_package(
    cluster: LocalCluster, image_operator: ImageOperator, runner: PodRunner, namespace: str
) -> None:
    broken = tiny("broken")
    broken["spec"]["optimization"]["job"] = {"image": BROKEN_OPTIMIZER}
    cluster.apply([broken], namespace=namespace)

    def degraded() -> bool:
        degraded = condition(get(cluster, namespace, "om", "broken"), "Degraded")
        return degraded.get("status") == "True"

    wait_until("Degraded=True", degraded, timeout_s=300)
    message = condition(get(cluster, namespace, "om", "broken"), "Degraded")["message"]
    assert BROKEN_OPTIMIZER in message, message
    assert "onnxruntime" in message, message


def test_the_optimizer_image_tunes_serving_in_the_job(
    cluster: LocalCluster,
    image_operator: ImageOperator,
    runner: PodRunner,
    namespace: str,
) -> None:
    """serving.tuning in the Job's pod from the optimizer image: its own tritonserver, the
    Job's /dev/shm emptyDir, and the verdict on the model (ServingTuned, status.serving)."""
    tuned = tiny("tuned")
    tuned["spec"]["serving"]["tuning"] = SHORT_TUNING
    cluster.apply([tuned], namespace=namespace)
    obj = wait_ready(cluster, image_operator, namespace, "tuned")

    verdict = condition(obj, "ServingTuned")
    assert (verdict["status"], verdict["reason"]) == ("True", "WithinBudget"), verdict
    summary = obj["status"]["serving"]["tuning"]
    assert short_search_problems(summary) == [], summary
    (job,) = items(cluster, namespace, "jobs", "tuned")
    pods = get(cluster, namespace, "pods", "-l", f"job-name={job['metadata']['name']}")
    (pod,) = pods["items"]
    spec = json.loads(
        (
            runner.pod_dir(namespace, pod["metadata"]["name"]) / "optimizer.image-exec.json"
        ).read_text()
    )
    assert "/dev/shm" in {mount["target"] for mount in spec["mounts"]}
