"""The local control plane itself: real API server, controllers, scheduler, kwok nodes, RBAC and
the local pod runner (testing/optiserve_testing)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from optiserve_testing.cluster import LocalCluster
from optiserve_testing.volume_binder import claim_manifest
from optiserve_testing.waiting import wait_until

pytestmark = pytest.mark.cluster


def wait(
    cluster: LocalCluster, namespace: str, target: str, condition: str, timeout: str = "90s"
) -> None:
    result = cluster.kubectl(
        "wait", "-n", namespace, f"--for={condition}", target, f"--timeout={timeout}"
    )
    if result.returncode != 0:
        described = cluster.kubectl("describe", "-n", namespace, target).stdout
        pytest.fail(f"{target} never got {condition}: {result.stderr}\n{described}")


def get_json(cluster: LocalCluster, namespace: str, *what: str) -> Any:
    return json.loads(
        cluster.kubectl("get", "-n", namespace, *what, "-o", "json", check=True).stdout
    )


def job(name: str, command: list[str], **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "main", "image": "python:3.11", "command": command, **container}
                    ],
                }
            },
        },
    }


def test_api_server_is_ready_and_reports_pinned_version(cluster: LocalCluster) -> None:
    readyz = cluster.kubectl("get", "--raw", "/readyz", check=True)
    assert readyz.stdout.strip() == "ok"
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == cluster.binaries.kubernetes_version


def test_fake_nodes_are_ready_with_gpu_capacity(cluster: LocalCluster) -> None:
    nodes = {n["metadata"]["name"]: n for n in get_json(cluster, "default", "nodes")["items"]}
    assert set(nodes) == {"gpu-a100", "gpu-l4", "cpu-0"}
    assert nodes["gpu-l4"]["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert (
        nodes["gpu-a100"]["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    )
    assert "nvidia.com/gpu" not in nodes["cpu-0"]["status"]["allocatable"]


def deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver"}]
                },
            },
        },
    }


def test_deployment_gets_replicaset_and_ready_pods_on_fake_nodes(
    cluster: LocalCluster, cluster_namespace: str
) -> None:
    cluster.apply([deployment("web")], namespace=cluster_namespace)
    wait(cluster, cluster_namespace, "deployment/web", "condition=Available")
    wait(cluster, cluster_namespace, "deployment/web", "jsonpath={.status.readyReplicas}=2")
    replicasets = get_json(cluster, cluster_namespace, "replicasets")["items"]
    assert [rs["metadata"]["ownerReferences"][0]["name"] for rs in replicasets] == ["web"]
    pods = get_json(cluster, cluster_namespace, "pods", "-l", "app=web")["items"]
    assert len(pods) == 2
    assert {p["spec"]["nodeName"] for p in pods} <= {"gpu-a100", "gpu-l4", "cpu-0"}
    assert all(p["status"]["phase"] == "Running" for p in pods)


def test_deleting_an_owner_garbage_collects_its_children(
    cluster: LocalCluster, cluster_namespace: str
) -> None:
    cluster.apply([deployment("doomed", replicas=1)], namespace=cluster_namespace)
    wait(cluster, cluster_namespace, "deployment/doomed", "condition=Available")
    replicaset = get_json(cluster, cluster_namespace, "replicasets", "-l", "app=doomed")
    pods = get_json(cluster, cluster_namespace, "pods", "-l", "app=doomed")
    children = [f"replicaset/{o['metadata']['name']}" for o in replicaset["items"]]
    children += [f"pod/{o['metadata']['name']}" for o in pods["items"]]
    assert len(children) == 2
    cluster.kubectl(
        "delete", "-n", cluster_namespace, "deployment/doomed", "--cascade=background", check=True
    )
    for child in children:
        wait(cluster, cluster_namespace, child, "delete")
    for kind in ("replicasets", "pods"):
        remaining = get_json(cluster, cluster_namespace, kind, "-l", "app=doomed")["items"]
        live = [o for o in remaining if not o["metadata"].get("deletionTimestamp")]
        assert live == [], f"{kind} survived their owner"


def test_job_pod_really_runs_locally_and_succeeds(
    cluster: LocalCluster, cluster_namespace: str
) -> None:
    cluster.apply([job("hello", ["python", "-c", "print(1)"])], namespace=cluster_namespace)
    wait(cluster, cluster_namespace, "job/hello", "condition=Complete")
    pod = get_json(cluster, cluster_namespace, "pods", "-l", "batch.kubernetes.io/job-name=hello")[
        "items"
    ][0]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (pod["status"]["phase"], terminated["exitCode"]) == ("Succeeded", 0)
    assert cluster.pod_runner is not None
    assert cluster.pod_runner.logs(cluster_namespace, pod["metadata"]["name"], "main") == "1\n"


def test_failing_job_pod_reports_exit_code_and_termination_message(
    cluster: LocalCluster, cluster_namespace: str
) -> None:
    script = (
        "import os, sys\n"
        "open(os.environ['OPTISERVE_TERMINATION_MESSAGE_PATH'], 'w').write('bad input')\n"
        "sys.exit(3)\n"
    )
    cluster.apply([job("fails", ["python", "-c", script])], namespace=cluster_namespace)
    wait(cluster, cluster_namespace, "job/fails", "condition=Failed")
    pod = get_json(cluster, cluster_namespace, "pods", "-l", "batch.kubernetes.io/job-name=fails")[
        "items"
    ][0]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert pod["status"]["phase"] == "Failed"
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (
        3,
        "Error",
        "bad input",
    )


def test_job_pod_gets_env_working_dir_and_claim_folder(
    cluster: LocalCluster, cluster_namespace: str, tmp_path: Path
) -> None:
    claim = claim_manifest("models")
    script = (
        "import os, pathlib\n"
        "pathlib.Path(os.environ['OUT']).write_text(os.environ['POD'] + ' ' + "
        "os.environ['GREETING'] + ' ' + os.getcwd())\n"
    )
    spec = job(
        "writer",
        ["python", "-c", script],
        workingDir=str(tmp_path),
        env=[
            {"name": "GREETING", "value": "hi"},
            {"name": "OUT", "value": "/models/result.txt"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        volumeMounts=[{"name": "models", "mountPath": "/models"}],
    )
    spec["spec"]["template"]["spec"]["volumes"] = [
        {"name": "models", "persistentVolumeClaim": {"claimName": "models"}}
    ]
    cluster.apply([claim, spec], namespace=cluster_namespace)
    wait(cluster, cluster_namespace, "job/writer", "condition=Complete")
    pod_name = get_json(
        cluster, cluster_namespace, "pods", "-l", "batch.kubernetes.io/job-name=writer"
    )["items"][0]["metadata"]["name"]
    result = cluster.pvc_root / cluster_namespace / "models" / "result.txt"
    assert result.read_text() == f"{pod_name} hi {tmp_path}"


def test_gpu_pod_lands_on_the_node_with_the_requested_product(
    cluster: LocalCluster, cluster_namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "needs-l4"},
        "spec": {
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
            "containers": [
                {
                    "name": "triton",
                    "image": "nvcr.io/nvidia/tritonserver",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
    }
    too_big = yaml.safe_load(yaml.safe_dump(pod))
    too_big["metadata"]["name"] = "needs-five"
    too_big["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "5"
    cluster.apply([pod, too_big], namespace=cluster_namespace)
    wait(cluster, cluster_namespace, "pod/needs-l4", "condition=Ready")
    assert get_json(cluster, cluster_namespace, "pod", "needs-l4")["spec"]["nodeName"] == "gpu-l4"
    wait(
        cluster,
        cluster_namespace,
        "pod/needs-five",
        "jsonpath={.status.conditions[?(@.type=='PodScheduled')].reason}=Unschedulable",
    )


def test_restricted_user_is_refused_where_rbac_says_so(cluster: LocalCluster) -> None:
    namespace = cluster.options.restricted_namespace
    allowed = cluster.kubectl(
        "get", "pods", "-n", namespace, kubeconfig=cluster.restricted_kubeconfig
    )
    assert allowed.returncode == 0, allowed.stderr
    for refused in (
        ("create", "deployment", "web", "--image=x", "-n", namespace),
        ("get", "secrets", "-n", namespace),
        ("get", "pods", "-n", "default"),
    ):
        result = cluster.kubectl(*refused, kubeconfig=cluster.restricted_kubeconfig)
        assert result.returncode != 0
        assert "forbidden" in result.stderr.lower(), result.stderr


def test_pod_labelled_run_locally_runs_here_instead_of_in_kwok(
    cluster: LocalCluster, cluster_namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "local", "labels": {"optiserve.io/run-locally": "true"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "x", "command": ["python", "-c", "print(2)"]}],
        },
    }
    cluster.apply([pod], namespace=cluster_namespace)
    wait(cluster, cluster_namespace, "pod/local", "jsonpath={.status.phase}=Succeeded")
    assert cluster.pod_runner is not None
    assert cluster.pod_runner.logs(cluster_namespace, "local", "main") == "2\n"


def test_deleting_a_running_job_kills_its_local_process(
    cluster: LocalCluster, cluster_namespace: str, tmp_path: Path
) -> None:
    script = "import os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(600)\n"
    cluster.apply(
        [job("sleeper", ["python", "-c", script], workingDir=str(tmp_path))],
        namespace=cluster_namespace,
    )
    pid_file = tmp_path / "pid"
    wait_until(
        "the job's process to start",
        lambda: pid_file.exists() and pid_file.read_text(),
        timeout_s=90,
        every_s=0.2,
    )
    pid = int(pid_file.read_text())
    pods = get_json(
        cluster, cluster_namespace, "pods", "-l", "batch.kubernetes.io/job-name=sleeper"
    )
    pod_name = pods["items"][0]["metadata"]["name"]
    wait(cluster, cluster_namespace, f"pod/{pod_name}", "jsonpath={.status.phase}=Running")
    cluster.kubectl(
        "delete", "-n", cluster_namespace, "job/sleeper", "--cascade=foreground", check=True
    )
    wait(cluster, cluster_namespace, f"pod/{pod_name}", "delete")
    wait_until(f"process {pid} to end with its pod", lambda: not _alive(pid), 30, every_s=0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child the runner has not reaped yet is a zombie, i.e. no longer running.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.split(")")[-1].split()[0] != "Z"
