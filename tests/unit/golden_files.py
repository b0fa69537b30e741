"""Golden files: the one comparison every renderer test uses.

``UPDATE_GOLDEN=1`` writes the rendered text as the new golden file. Otherwise a missing golden
file fails like a different one does: a golden file that writes itself would let CI pass on a
fresh clone where somebody forgot to commit it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def check_golden_text(path: Path, text: str) -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}; UPDATE_GOLDEN=1 writes it (then commit it)"
    assert text == path.read_text(), f"{path.name} differs; UPDATE_GOLDEN=1 to accept the change"


def check_golden_manifest(path: Path, manifest: dict[str, Any]) -> None:
    check_golden_text(path, yaml.safe_dump(manifest, sort_keys=True, width=100))
