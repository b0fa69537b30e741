"""Pure parts of the local pod runner and of the kwok configuration (no cluster needed)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from optiserve_testing import pod_spec
from optiserve_testing.kwok_config import exclude_runner_pods, render_kwok_config, runner_owns_pod


def make_pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
        "spec": {
            "nodeName": "cpu-0",
            "containers": [{"name": "main", "command": ["true"]}],
            **spec,
        },
    }


MAPPING = {
    "/models": "/tmp/local/models",
    "/models/cache": "/tmp/cache",
    "/dev/termination-log": "/tmp/p/term",
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/models", "/tmp/local/models"),
        ("/models/out/a.onnx", "/tmp/local/models/out/a.onnx"),
        ("/models/cache/x", "/tmp/cache/x"),
        ("--output=/models/out", "--output=/tmp/local/models/out"),
        ("/modelsX", "/modelsX"),
        ("relative/models", "relative/models"),
        ("a=/models", "a=/models"),
    ],
)
def test_rewrite_path_maps_only_mounted_paths(value: str, expected: str) -> None:
    assert pod_spec.rewrite_path(value, MAPPING) == expected


def test_volumes_map_to_local_folders(tmp_path: Path) -> None:
    pod = make_pod(
        volumes=[
            {"name": "host", "hostPath": {"path": "/srv/data"}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "models"}},
            {"name": "scratch", "emptyDir": {}},
        ]
    )
    paths = pod_spec.local_volume_paths(pod, tmp_path / "pod", tmp_path / "pvc")
    assert paths == {
        "host": Path("/srv/data"),
        "claim": tmp_path / "pvc" / "ns" / "models",
        "scratch": tmp_path / "pod" / "volumes" / "scratch",
    }
    bound = pod_spec.local_volume_paths(pod, tmp_path, tmp_path, {"models": "/bound"})
    assert bound["claim"] == Path("/bound")


def test_unsupported_volume_is_a_clear_error(tmp_path: Path) -> None:
    pod = make_pod(volumes=[{"name": "nfs", "nfs": {"server": "x", "path": "/"}}])
    with pytest.raises(pod_spec.PodSpecError, match="nfs"):
        pod_spec.local_volume_paths(pod, tmp_path, tmp_path)


def test_env_values_field_refs_and_sources() -> None:
    container = {
        "name": "main",
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "OUT", "value": "/models/out"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}},
        ],
    }
    data = {("ConfigMap", "ns", "cfg"): {"A": "1"}, ("Secret", "ns", "s"): {"t": "tok"}}
    env = pod_spec.container_env(
        make_pod(),
        container,
        {"PATH": "/bin", "OUT": "old"},
        MAPPING,
        lambda kind, ns, name: data.get((kind, ns, name)),
    )
    assert env["PATH"] == "/bin"
    assert env["OUT"] == "/tmp/local/models/out"
    assert (env["POD"], env["NS"], env["APP"]) == ("p", "ns", "x")
    assert (env["CFG_A"], env["TOKEN"]) == ("1", "tok")
    assert env[pod_spec.TERMINATION_MESSAGE_ENV] == "/tmp/p/term"


def test_missing_config_map_fails_unless_optional() -> None:
    ref = {"name": "absent", "key": "k"}
    container = {"name": "main", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": ref}}]}
    with pytest.raises(pod_spec.PodSpecError, match="absent"):
        pod_spec.container_env(make_pod(), container, {}, MAPPING, lambda *_: None)
    ref["optional"] = True  # type: ignore[assignment]
    env = pod_spec.container_env(make_pod(), container, {}, MAPPING, lambda *_: None)
    assert "X" not in env


def test_command_line_expands_vars_rewrites_paths_and_aliases_python() -> None:
    container = {
        "name": "main",
        "command": ["python", "-m", "tool"],
        "args": ["--out=/models/$(NAME)", "$$(NAME)", "$(MISSING)"],
    }
    argv = pod_spec.command_line(container, {"NAME": "m1"}, MAPPING)
    assert argv == [
        sys.executable,
        "-m",
        "tool",
        "--out=/tmp/local/models/m1",
        "$(NAME)",
        "$(MISSING)",
    ]


def test_container_without_command_cannot_run_locally() -> None:
    with pytest.raises(pod_spec.PodSpecError, match="entrypoint"):
        pod_spec.command_line({"name": "main", "image": "x"}, {}, MAPPING)


def test_terminated_status_phase_follows_exit_codes() -> None:
    pod = make_pod(containers=[{"name": "a"}, {"name": "b"}])
    ok = pod_spec.terminated_status(
        pod, "t0", {"a": (0, "Completed", ""), "b": (0, "Completed", "")}
    )
    failed = pod_spec.terminated_status(
        pod, "t0", {"a": (0, "Completed", ""), "b": (3, "Error", "boom")}
    )
    assert ok["phase"] == "Succeeded"
    assert failed["phase"] == "Failed"
    state = failed["containerStatuses"][1]["state"]["terminated"]
    assert (state["exitCode"], state["reason"], state["message"]) == (3, "Error", "boom")


def test_runner_owns_job_pods_and_opted_in_pods_only() -> None:
    assert runner_owns_pod({"batch.kubernetes.io/job-name": "j"})
    assert runner_owns_pod({"optiserve.io/run-locally": "true"})
    assert not runner_owns_pod({"optiserve.io/run-locally": "false"})
    assert not runner_owns_pod({"app": "triton"})
    assert not runner_owns_pod(None)
    assert runner_owns_pod({"app": "triton"}, "local-pods")
    assert not runner_owns_pod({"app": "triton"}, "default")


def test_kwok_pod_stages_skip_runner_pods(tmp_path: Path) -> None:
    def stage(name: str, kind: str) -> dict[str, Any]:
        return {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "Stage",
            "metadata": {"name": name},
            "spec": {
                "resourceRef": {"apiGroup": "v1", "kind": kind},
                "selector": {
                    "matchExpressions": [
                        {"key": ".status.phase", "operator": "In", "values": ["Pending"]}
                    ]
                },
                "next": {},
            },
        }

    for name in ("node-initialize", "node-heartbeat-with-lease"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(stage(name, "Node")))
    for name in ("pod-ready", "pod-complete", "pod-delete"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(stage(name, "Pod")))
    documents = list(yaml.safe_load_all(render_kwok_config(tmp_path)))
    keys = {
        d["metadata"]["name"]: [e["key"] for e in d["spec"]["selector"]["matchExpressions"]]
        for d in documents
    }
    assert keys["node-initialize"] == [".status.phase"]
    for name in ("pod-ready", "pod-complete", "pod-delete"):
        assert keys[name] == [
            ".status.phase",
            '.metadata.labels["batch.kubernetes.io/job-name"]',
            '.metadata.labels["optiserve.io/run-locally"]',
            ".metadata.namespace",
        ]
    original = stage("pod-ready", "Pod")
    exclude_runner_pods(original)
    assert len(original["spec"]["selector"]["matchExpressions"]) == 1  # input left unchanged


def test_a_named_parent_of_mounts_becomes_a_view_of_them() -> None:
    container = {
        "name": "c",
        "env": [{"name": "OPTISERVE_PVC_ROOT", "value": "/mnt/pvc"}],
        "command": ["python", "-c", "print(1)"],  # "-c" names "" once its value is split off
        "args": ["--config=/etc/optiserve/spec.yaml"],
    }
    mapping = {
        "/models": "/local/top-level-mount",
        "/mnt/pvc/models": "/local/models",
        "/mnt/pvc/model-store": "/local/store",
        "/etc/optiserve": "/local/cm",
        "/dev/termination-log": "/local/term",
    }
    assert pod_spec.parent_views(container, mapping) == {
        "/mnt/pvc": {"models": "/local/models", "model-store": "/local/store"}
    }


def test_an_image_entrypoint_runs_a_container_without_a_command_and_tcp_probes_resolve() -> None:
    """The chart's operator pod: no command (its image's ENTRYPOINT), a tcpSocket readiness
    probe on a named port."""
    container = {
        "name": "operator",
        "image": "ghcr.io/optiserve/operator:1",
        "args": ["--workers=$(WORKERS)"],
        "ports": [{"name": "health", "containerPort": 8081}],
        "readinessProbe": {"tcpSocket": {"port": "health"}},
    }
    argv = pod_spec.command_line(
        container, {"WORKERS": "3"}, {}, entrypoint=("optiserve", "operator")
    )
    assert argv == ["optiserve", "operator", "--workers=3"]
    with pytest.raises(pod_spec.PodSpecError, match=r"ghcr\.io/optiserve/operator:1"):
        pod_spec.command_line(container, {}, {})
    assert pod_spec.readiness_url(container, "127.0.0.9") == "tcp://127.0.0.9:8081"
