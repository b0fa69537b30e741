"""A second encoder the code was not tuned for: a DistilBERT sequence classifier (built from a
config, 6 layers as the real one has) through ``examples/distilbert-sst2-cpu.yaml`` as written
(only the benchmark's repetitions cut), every candidate gated; the report states the optimizer's
peak resident memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from optiserve.validate import validate_text
from optiserve_optimizer.main import run_optimize
from tests.optimizer import hf_encoders

pytestmark = pytest.mark.models

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "distilbert-sst2-cpu.yaml"


def save_distilbert(folder: Path) -> None:
    import torch

    from optiserve_optimizer.passes import hf_model

    hf_model.quiet_transformers()
    torch.manual_seed(0)
    config = hf_encoders.tiny_config("distilbert", "sequence-classification")
    config.n_layers = 6
    model = hf_model.auto_class("sequence-classification").from_config(config)
    model.save_pretrained(str(folder))
    hf_encoders.tokenizer().save_pretrained(str(folder))


def memory_kib(field: str) -> int:
    """A ``/proc/self/status`` line in KiB (VmRSS: now, VmHWM: the peak so far)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def test_the_example_validates() -> None:
    models, problems = validate_text(EXAMPLE.read_text(), EXAMPLE.name)
    assert problems == [] and len(models) == 1
    source = models[0].spec.source
    assert (source.format, source.task) == ("huggingface", "sequence-classification")


def test_distilbert_goes_through_the_example_and_the_report_states_peak_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTISERVE_PVC_ROOT", str(tmp_path / "pvc"))
    termination = tmp_path / "termination-log"
    monkeypatch.setenv("OPTISERVE_TERMINATION_LOG", str(termination))
    folder = tmp_path / "pvc" / "models" / "distilbert-sst2"
    save_distilbert(folder)
    hf_encoders.save_text_npz(folder / "eval.npz", 48, seed=1, kind="distilbert")
    hf_encoders.save_text_npz(folder / "train.npz", 64, seed=2, kind="distilbert")
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["optimization"]["benchmark"] |= {"iterations": 2, "warmup": 1}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    rss_before = memory_kib("VmRSS") * 1024
    assert run_optimize(spec, tmp_path / "out") == 0
    report = json.loads(
        (Path(json.loads(termination.read_text())["folder"]) / "report.json").read_text()
    )
    _, details = hf_encoders.check_compression_report(
        report, heads="4->3", ffn="128->64", layers="6->3", metric="top1", max_drop=0.02
    )
    assert details["fp32"]["passes"]["load_export"]["architecture"] == "distilbert"
    assert any("temperature=2.0" in s for s in details["student-shallow-pruned"]["steps"])
    memory = report["memory"]
    assert rss_before <= memory["peakRssBytes"] <= memory_kib("VmHWM") * 1024
    assert memory["childrenPeakRssBytes"] >= 0
    with np.load(folder / "eval.npz") as npz:
        assert "token_type_ids" not in npz.files  # DistilBERT's own inputs, unchanged
