"""The operator image stays small: importing the operator pulls in no ML framework."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

FORBIDDEN = ("torch", "onnxruntime", "tensorrt", "onnx", "numpy", "sklearn")


def operator_modules() -> list[str]:
    """Every module of the operator package, found on disk, so a new module is checked too."""
    import optiserve_operator

    return sorted(
        info.name
        for info in pkgutil.walk_packages(optiserve_operator.__path__, "optiserve_operator.")
        if not info.name.endswith(".__main__")  # importing it would start the operator
    )


def test_operator_imports_no_ml_framework() -> None:
    modules = operator_modules()
    assert "optiserve_operator.reconcile" in modules  # the walk found the package
    imports = "; ".join(f"import {m}" for m in modules)
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
