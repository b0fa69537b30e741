"""The operator image stays small: importing the operator pulls in no ML framework."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("torch", "onnxruntime", "tensorrt", "onnx", "numpy", "sklearn")
MODULES = (
    "handlers",
    "controller",
    "reconcile",
    "conditions",
    "observe",
    "summary",
    "kube",
    "settings",
    "metrics",
    "workqueue",
    "main",
)


def test_operator_imports_no_ml_framework() -> None:
    imports = "; ".join(f"import optiserve_operator.{m}" for m in MODULES)
    probe = (
        f"import sys; {imports}; "
        f"print(','.join(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": ":".join(sys.path)},
    )
    assert result.stdout.strip() == ""
