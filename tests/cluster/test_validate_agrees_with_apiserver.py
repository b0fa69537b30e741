"""``optiserve validate`` and the real API server, case by case, on the same files.

Every file below goes to the local kube-apiserver (1.34, the generated CRD installed) with
``kubectl create --dry-run=server --validate=strict`` (create, not apply: apply would add its
last-applied annotation and measure a different object), and through ``optiserve validate``.
The two must agree on every file: accepted by both or refused by both. Each case also states
the outcome it documents, so a change of behaviour on both sides at once shows up too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from optiserve.cli import main
from optiserve_testing.cluster import LocalCluster, install_crd
from tests.unit.specs import INVALID, minimal

pytestmark = pytest.mark.cluster

ACCEPT, REFUSE = True, False


def spec_with(path: str, value: Any, obj: dict[str, Any] | None = None) -> dict[str, Any]:
    """``obj`` (default: the minimal spec) with the dotted ``path`` from the top set."""
    out = copy.deepcopy(obj or minimal())
    node = out
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return out


def text_of(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, width=1 << 20)


def raw(replace: str, by: str) -> str:
    """The minimal spec's YAML with one line edited by hand (for what dicts cannot spell)."""
    text = text_of(minimal())
    assert replace in text, replace
    return text.replace(replace, by)


SERVING = "spec.serving"
TORCHSCRIPT = spec_with("spec.source.format", "torchscript")

# name -> (file content, expected outcome)
CASES: dict[str, tuple[str | bytes, bool]] = {
    "minimal": (text_of(minimal()), ACCEPT),
    # metadata.name: what the Deployment, Service, Job and labels can carry
    "name with a dot": (text_of(spec_with("metadata.name", "my.model")), REFUSE),
    "name starting with a digit": (text_of(spec_with("metadata.name", "1model")), REFUSE),
    "name of 63": (text_of(spec_with("metadata.name", "m" * 63)), ACCEPT),
    "name of 64": (text_of(spec_with("metadata.name", "m" * 64)), REFUSE),
    "name upper case": (text_of(spec_with("metadata.name", "Model")), REFUSE),
    # metadata as ObjectMeta
    "unknown metadata key": (text_of(spec_with("metadata.colour", "blue")), REFUSE),
    "labels ok": (text_of(spec_with("metadata.labels", {"example.com/team": "a-b_c.d"})), ACCEPT),
    "label value with a space": (text_of(spec_with("metadata.labels", {"t": "a b"})), REFUSE),
    "label key with two slashes": (text_of(spec_with("metadata.labels", {"a/b/c": "x"})), REFUSE),
    "annotation of 200 KiB": (
        text_of(spec_with("metadata.annotations", {"note": "x" * (200 * 1024)})),
        ACCEPT,
    ),
    "annotations of 2 MB": (
        text_of(spec_with("metadata.annotations", {"note": "x" * (2 * 1000 * 1000)})),
        REFUSE,
    ),
    "annotation key upper case": (
        text_of(spec_with("metadata.annotations", {"Example.com/Note": "x"})),
        ACCEPT,
    ),
    "annotation key with a space": (
        text_of(spec_with("metadata.annotations", {"a note": "x"})),
        REFUSE,
    ),
    "creationTimestamp null": (text_of(spec_with("metadata.creationTimestamp", None)), ACCEPT),
    "timestamp-like annotation": (
        raw("  name: m\n", "  name: m\n  annotations:\n    released: 2026-01-01\n"),
        ACCEPT,
    ),
    # status: the status subresource owns it; create ignores it
    "status in the file": (text_of(spec_with("status", {"phase": "Ready"})), ACCEPT),
    "status with a wrong phase": (text_of(spec_with("status", {"phase": "Bogus"})), ACCEPT),
    "status with an unknown field": (text_of(spec_with("status", {"colour": "blue"})), REFUSE),
    "status condition with an unknown field": (
        text_of(spec_with("status", {"conditions": [{"type": "Ready", "colour": "x"}]})),
        REFUSE,
    ),
    # fields the server fills in, and files as a whole
    "uid set": (text_of(spec_with("metadata.uid", "0d9c4a4e-59f5-4a57-9d8e-6a1f8e1c3d2b")), ACCEPT),
    "resourceVersion set": (text_of(spec_with("metadata.resourceVersion", "12")), ACCEPT),
    "generateName without name": (
        text_of({**minimal(), "metadata": {"generateName": "m-"}}),
        ACCEPT,
    ),
    "long generateName": (text_of({**minimal(), "metadata": {"generateName": "g" * 70}}), ACCEPT),
    "upper-case generateName": (
        text_of({**minimal(), "metadata": {"generateName": "Model-"}}),
        REFUSE,
    ),
    "empty file": ("", REFUSE),
    "two documents, the second bad": (
        text_of(minimal()) + "---\n" + text_of(spec_with("metadata.name", "my.model")),
        REFUSE,
    ),
    # numbers as JSON carries them
    "replicas 2^64": (
        raw("  storage:\n", "  serving:\n    replicas: 18446744073709551616\n  storage:\n"),
        REFUSE,
    ),
    "replicas as a string": (
        raw("  storage:\n", '  serving:\n    replicas: "5"\n  storage:\n'),
        REFUSE,
    ),
    "replicas 4.0": (raw("  storage:\n", "  serving:\n    replicas: 4.0\n  storage:\n"), ACCEPT),
    "replicas 2.5": (raw("  storage:\n", "  serving:\n    replicas: 2.5\n  storage:\n"), REFUSE),
    "replicas true": (raw("  storage:\n", "  serving:\n    replicas: true\n  storage:\n"), REFUSE),
    "queue timeout int64 max": (
        text_of(
            spec_with(
                f"{SERVING}.dynamicBatching.defaultQueuePolicy.defaultTimeoutMicroseconds",
                2**63 - 1,
            )
        ),
        ACCEPT,
    ),
    "queue timeout 2^63": (
        raw(
            "  storage:\n",
            "  serving:\n    dynamicBatching:\n      defaultQueuePolicy:\n"
            "        defaultTimeoutMicroseconds: 9223372036854775808\n  storage:\n",
        ),
        REFUSE,
    ),
    "ttl beyond int32": (
        text_of(spec_with("spec.optimization.job.ttlSecondsAfterFinished", 2**31)),
        REFUSE,
    ),
    # quantities
    "cpu 500m": (text_of(spec_with(f"{SERVING}.resources", {"limits": {"cpu": "500m"}})), ACCEPT),
    "cpu garbage": (
        text_of(spec_with(f"{SERVING}.resources", {"limits": {"cpu": "lots"}})),
        REFUSE,
    ),
    "memory -1Gi": (
        text_of(spec_with(f"{SERVING}.resources", {"requests": {"memory": "-1Gi"}})),
        REFUSE,
    ),
    "gpu -1": (
        text_of(spec_with(f"{SERVING}.resources", {"limits": {"nvidia.com/gpu": -1}})),
        REFUSE,
    ),
    "gpu 2": (
        text_of(spec_with(f"{SERVING}.resources", {"limits": {"nvidia.com/gpu": 2}})),
        ACCEPT,
    ),
    "gpu 0.5": (
        text_of(spec_with(f"{SERVING}.resources", {"limits": {"nvidia.com/gpu": "0.5"}})),
        REFUSE,
    ),
    "resource name with a space": (
        text_of(spec_with(f"{SERVING}.resources", {"limits": {"big gpu": 1}})),
        REFUSE,
    ),
    # tolerations and node selectors
    "toleration ok": (
        text_of(
            spec_with(
                f"{SERVING}.tolerations",
                [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            )
        ),
        ACCEPT,
    ),
    "toleration operator Maybe": (
        text_of(spec_with(f"{SERVING}.tolerations", [{"key": "g", "operator": "Maybe"}])),
        REFUSE,
    ),
    "toleration value with Exists": (
        text_of(
            spec_with(f"{SERVING}.tolerations", [{"key": "g", "operator": "Exists", "value": "1"}])
        ),
        REFUSE,
    ),
    "toleration empty key with Equal": (
        text_of(spec_with(f"{SERVING}.tolerations", [{"key": "", "value": "x"}])),
        REFUSE,
    ),
    "toleration seconds without NoExecute": (
        text_of(
            spec_with(
                f"{SERVING}.tolerations",
                [{"key": "g", "operator": "Exists", "tolerationSeconds": 5}],
            )
        ),
        REFUSE,
    ),
    "toleration effect Sometimes": (
        text_of(spec_with(f"{SERVING}.tolerations", [{"key": "g", "effect": "Sometimes"}])),
        REFUSE,
    ),
    "node selector ok": (
        text_of(spec_with(f"{SERVING}.nodeSelector", {"nvidia.com/gpu.product": "NVIDIA-L4"})),
        ACCEPT,
    ),
    "node selector key with a space": (
        text_of(spec_with(f"{SERVING}.nodeSelector", {"gpu type": "l4"})),
        REFUSE,
    ),
    "node selector value too long": (
        text_of(spec_with("spec.optimization.job.nodeSelector", {"disk": "s" * 64})),
        REFUSE,
    ),
    # serving.networkPolicy peers: a selector, with label keys and values
    "network policy peers ok": (
        text_of(
            spec_with(
                f"{SERVING}.networkPolicy",
                {
                    "enabled": True,
                    "ingressFrom": [{"namespaceSelector": {}, "podSelector": {"app": "web"}}],
                    "metricsFrom": [
                        {"namespaceSelector": {"kubernetes.io/metadata.name": "monitoring"}}
                    ],
                },
            )
        ),
        ACCEPT,
    ),
    "network policy peer selecting nothing": (
        text_of(spec_with(f"{SERVING}.networkPolicy", {"enabled": True, "ingressFrom": [{}]})),
        REFUSE,
    ),
    "network policy peer key with a space": (
        text_of(
            spec_with(f"{SERVING}.networkPolicy", {"metricsFrom": [{"podSelector": {"a b": "x"}}]})
        ),
        REFUSE,
    ),
    # batch sizes, images, storage, autoscaling
    "batch sizes 0 and -4": (
        text_of(spec_with("spec.optimization.benchmark.batchSizes", [0, -4])),
        REFUSE,
    ),
    "empty triton image": (text_of(spec_with(f"{SERVING}.image", "")), REFUSE),
    "image with a port and digest": (
        text_of(
            spec_with(
                "spec.optimization.job.image",
                "registry.local:5000/team/optimizer:1.2@sha256:" + "a" * 64,
            )
        ),
        ACCEPT,
    ),
    "image with upper case": (text_of(spec_with(f"{SERVING}.image", "Team/Triton")), REFUSE),
    "subPath ..": (text_of(spec_with("spec.storage.subPath", "a/../../b")), REFUSE),
    "subPath absolute": (text_of(spec_with("spec.storage.subPath", "/etc")), REFUSE),
    "subPath nested": (text_of(spec_with("spec.storage.subPath", "team-a/models")), ACCEPT),
    "target fast": (text_of(spec_with(f"{SERVING}.autoscaling", {"target": "fast"})), REFUSE),
    "target 50ms": (text_of(spec_with(f"{SERVING}.autoscaling", {"target": "50ms"})), ACCEPT),
    "target 0": (text_of(spec_with(f"{SERVING}.autoscaling", {"target": 0})), REFUSE),
    "pendingRequests 50ms": (
        text_of(
            spec_with(f"{SERVING}.autoscaling", {"metric": "pendingRequests", "target": "50ms"})
        ),
        REFUSE,
    ),
    "gpuUtilization 80": (
        text_of(spec_with(f"{SERVING}.autoscaling", {"metric": "gpuUtilization", "target": 80})),
        ACCEPT,
    ),
    "gpuUtilization 150": (
        text_of(spec_with(f"{SERVING}.autoscaling", {"metric": "gpuUtilization", "target": "150"})),
        REFUSE,
    ),
    # combinations that cannot work
    "student on onnx": (
        text_of(spec_with("spec.optimization.student", {"method": "narrow"})),
        REFUSE,
    ),
    "student on torchscript": (
        text_of(spec_with("spec.optimization.student", {"method": "narrow"}, TORCHSCRIPT)),
        ACCEPT,
    ),
    "pruning with recovery on onnx": (
        text_of(spec_with("spec.optimization.pruning", {"method": "structured"})),
        REFUSE,
    ),
    "pruning without recovery on onnx": (
        text_of(
            spec_with(
                "spec.optimization.recovery",
                {"method": "none"},
                spec_with("spec.optimization.pruning", {"method": "structured"}),
            )
        ),
        ACCEPT,
    ),
    "2:4 on cpu": (
        text_of(spec_with("spec.optimization.pruning", {"method": "2:4"}, TORCHSCRIPT)),
        REFUSE,
    ),
    # the shared table of invalid specs (unit tier), here against the real server
    **{f"invalid: {what}": (text_of(obj), REFUSE) for what, obj, _ in INVALID},
}


# Files on which the two differ on purpose: (content, what each does, why).
KNOWN_DIFFERENCES: dict[str, tuple[bytes, bool, bool, str]] = {
    "utf-16 with a byte order mark": (
        text_of(minimal()).encode("utf-16"),
        ACCEPT,  # kubectl decodes UTF-16 and sends JSON
        REFUSE,
        "issue 14: a UTF-16 file ends in one line asking for UTF-8",
    ),
}


@pytest.fixture(scope="module")
def crd_installed(cluster: LocalCluster) -> Iterator[None]:
    install_crd(cluster)
    yield


def test_validate_and_the_api_server_agree_on_every_file(
    cluster: LocalCluster,
    crd_installed: None,
    cluster_namespace: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows, disagreements, surprises = [], [], []
    for index, (name, (text, expected)) in enumerate(CASES.items()):
        path = tmp_path / f"case-{index}.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        server = cluster.kubectl(
            "create", "--dry-run=server", "--validate=strict", "-n", cluster_namespace,
            "-f", str(path),
        )  # fmt: skip
        server_ok = server.returncode == 0
        ours_ok = main(["validate", str(path)]) == 0
        ours = capsys.readouterr().err.strip().splitlines()
        said = (server.stderr.strip().splitlines() or [""])[-1][:140]
        rows.append(f"{name:40} server={'ok' if server_ok else 'refused':8} "
                    f"validate={'ok' if ours_ok else 'refused':8} | {said}")  # fmt: skip
        if server_ok != ours_ok:
            disagreements.append(f"{name}: server {server_ok}, validate {ours_ok}: {said} / {ours}")
        elif server_ok != expected:
            surprises.append(f"{name}: both {'accept' if server_ok else 'refuse'}: {said}")
    for name, (content, server_expected, ours_expected, _why) in KNOWN_DIFFERENCES.items():
        path = tmp_path / "known-difference.yaml"
        path.write_bytes(content)
        server = cluster.kubectl(
            "create", "--dry-run=server", "--validate=strict", "-n", cluster_namespace,
            "-f", str(path),
        )  # fmt: skip
        ours_ok = main(["validate", str(path)]) == 0
        capsys.readouterr()
        if (server.returncode == 0, ours_ok) != (server_expected, ours_expected):
            surprises.append(f"{name}: server {server.returncode == 0}, validate {ours_ok}")
    with capsys.disabled():
        print("\n" + "\n".join(rows))
    assert disagreements == []
    assert surprises == []
