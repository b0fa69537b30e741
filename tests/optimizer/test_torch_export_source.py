"""``source.format: torch-export``: a ``.pt2`` from ``torch.export.save`` (the digits CNN and a
tiny BERT built from a config) is bound by its signature's names, timed eagerly as the
``pytorch-eager`` baseline, exported to ONNX with its dynamic axes, and packaged; a file that is
not such a program exits 2 naming the pass and the file, and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from optiserve_optimizer.main import run_optimize
from optiserve_optimizer.onnx_utils import session
from tests.optimizer import hf_encoders

pytestmark = pytest.mark.models


@pytest.fixture
def termination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "termination-log"
    monkeypatch.setenv("OPTISERVE_TERMINATION_LOG", str(path))
    return path


def write_spec(
    tmp_path: Path, program: Path, eval_npz: Path, metric: str, **optimization: Any
) -> Path:
    doc = {
        "name": "program",
        "source": {"uri": str(program), "format": "torch-export"},
        "optimization": {
            "accuracy": {"dataset": str(eval_npz), "metric": metric, "maxDrop": 0.05},
            "benchmark": {"batchSizes": [1, 8], "iterations": 2, "warmup": 1},
            **optimization,
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def digits_program(folder: Path, dynamic: bool = True) -> tuple[Path, Path, Any]:
    """(digits.pt2, eval.npz with ``input`` and ``labels``, the module) after a short training."""
    import torch

    from optiserve_optimizer.models import digits

    x, y = digits.load_digits()
    torch.manual_seed(0)
    network = digits.build_network(16)
    digits.train(network, x[:1000], y[:1000], epochs=2)
    sample = (torch.from_numpy(x[:4]),)
    shapes = {"input": {0: torch.export.Dim("batch")}} if dynamic else None
    program = torch.export.export(network.eval(), sample, dynamic_shapes=shapes)
    folder.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(folder / "digits.pt2"))
    np.savez(folder / "eval.npz", labels=y[1000:1200], input=x[1000:1200])
    return folder / "digits.pt2", folder / "eval.npz", network


def bert_program(folder: Path) -> tuple[Path, Path, Any]:
    """(bert.pt2 of a tiny BertForSequenceClassification called by keyword with dynamic batch
    and sequence, its tokenized eval.npz, the model)."""
    import torch

    from optiserve_optimizer.passes import hf_model

    hf_model.quiet_transformers()
    torch.manual_seed(0)
    config = hf_encoders.tiny_config("bert", "sequence-classification")
    model = hf_model.auto_class("sequence-classification").from_config(
        config, attn_implementation="eager"
    )
    folder.mkdir(parents=True, exist_ok=True)
    eval_npz = hf_encoders.save_text_npz(folder / "eval.npz", 16, seed=1)
    with np.load(eval_npz) as npz:
        feed = {k: torch.from_numpy(npz[k][:4]) for k in npz.files}
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=128)
    program = torch.export.export(
        model.eval(),
        (),
        kwargs=feed,
        dynamic_shapes={k: {0: batch, 1: sequence} for k in feed},
        strict=False,
    )
    torch.export.save(program, str(folder / "bert.pt2"))
    return folder / "bert.pt2", eval_npz, model


def report_of(termination: Path) -> tuple[Path, dict[str, Any]]:
    folder = Path(json.loads(termination.read_text())["folder"])
    return folder, json.loads((folder / "report.json").read_text())


def dims(value: Any) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_digits_program_is_bound_exported_with_a_dynamic_batch_and_packaged(
    tmp_path: Path, termination: Path
) -> None:
    import onnx
    import torch

    program, eval_npz, network = digits_program(tmp_path / "digits")
    spec = write_spec(
        tmp_path, program, eval_npz, "top1", quantization={"precision": "int8", "method": "dynamic"}
    )
    assert run_optimize(spec, tmp_path / "out") == 0
    folder, report = report_of(termination)
    assert report["baseline"]["name"] == "pytorch-eager"
    assert list(report["baseline"]["beside"]) == ["onnxruntime-fp32"]
    checks = {(c["name"], c["subject"]): c for c in report["checks"]}
    binding = checks["input-binding", "source"]["numbers"]
    assert binding == {"inputs": ["input"], "samples": {"eval.npz": 200}}
    load = report["candidateDetails"]["fp32"]["passes"]["load_export"]
    assert load["maxRelDiff"] < 1e-3
    assert [c["name"] for c in report["candidates"]] == ["fp32", "int8-dynamic"]
    (served,) = folder.glob("model_repository/*/1/model.onnx")
    graph = onnx.load(str(served)).graph
    assert [(i.name, dims(i)) for i in graph.input] == [("input", ["batch", 1, 8, 8])]
    with np.load(eval_npz) as npz:
        x = npz["input"][:37]  # a batch size the export never saw
    got = session(served).run(None, {"input": x})[0]
    with torch.no_grad():
        want = network(torch.from_numpy(x)).numpy()
    if report["chosen"] == "fp32":
        assert float(np.abs(got - want).max()) < 1e-3
    assert float((got.argmax(1) == want.argmax(1)).mean()) > 0.9


def test_bert_program_called_by_keyword_keeps_batch_and_sequence_dynamic(
    tmp_path: Path, termination: Path
) -> None:
    import onnx
    import torch

    program, eval_npz, model = bert_program(tmp_path / "bert")
    spec = write_spec(tmp_path, program, eval_npz, "cosine")
    assert run_optimize(spec, tmp_path / "out") == 0
    folder, report = report_of(termination)
    assert report["baseline"]["name"] == "pytorch-eager"
    checks = {(c["name"], c["subject"]): c for c in report["checks"]}
    names = ["input_ids", "attention_mask", "token_type_ids"]
    assert checks["input-binding", "source"]["numbers"]["inputs"] == names
    assert checks["padded-batch", "source"]["result"] == "passed"
    (served,) = folder.glob("model_repository/*/1/model.onnx")
    graph = onnx.load(str(served)).graph
    assert [(i.name, dims(i)) for i in graph.input] == [(n, ["batch", "sequence"]) for n in names]
    assert [(o.name, dims(o)) for o in graph.output] == [("output", ["batch", 3])]
    with np.load(eval_npz) as npz:  # 5 rows, 11 positions: neither was exported with
        feed = {k: npz[k][3:8, :11] for k in names}
    got = session(served).run(None, feed)[0]
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
    assert float(np.abs(got - want).max()) < 1e-4


def _corrupt(folder: Path) -> Path:
    path = folder / "model.pt2"
    path.write_bytes(b"PK\x03\x04 not really a zip archive" * 8)
    return path


def _torchscript(folder: Path) -> Path:
    import torch

    from optiserve_optimizer.models import digits

    path = folder / "model.pt2"
    torch.jit.script(digits.build_network(8).eval()).save(str(path))
    return path


def _static_batch(folder: Path) -> Path:
    return digits_program(folder / "static", dynamic=False)[0]


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (_corrupt, "model.pt2 is not a torch.export program"),
        (_torchscript, "model.pt2 is not a torch.export program"),
        (_static_batch, "the program's input 'input' has the static shape [4, 1, 8, 8]"),
    ],
)
def test_a_file_that_is_no_usable_program_exits_2_naming_the_pass_and_file(
    tmp_path: Path, termination: Path, make: Any, cause: str
) -> None:
    _, eval_npz, _ = digits_program(tmp_path / "digits")
    program = make(tmp_path)
    out = tmp_path / "out"
    assert run_optimize(write_spec(tmp_path, program, eval_npz, "top1"), out) == 2
    error = json.loads(termination.read_text())["error"]
    assert error["pass"] == "load_export"
    assert cause in error["message"]
    assert not out.exists() or list(out.iterdir()) == []


def test_eval_data_that_does_not_fit_the_program_signature_exits_2(
    tmp_path: Path, termination: Path
) -> None:
    program, eval_npz, _ = digits_program(tmp_path / "digits")
    with np.load(eval_npz) as npz:
        np.savez(tmp_path / "wide.npz", input=npz["input"][:, :, :, :4], labels=npz["labels"])
    out = tmp_path / "out"
    assert run_optimize(write_spec(tmp_path, program, tmp_path / "wide.npz", "top1"), out) == 2
    error = json.loads(termination.read_text())["error"]
    assert error["pass"] == "accuracy"
    assert "wide.npz['input'] has sample shape [1, 8, 4]" in error["message"]
    assert not out.exists() or list(out.iterdir()) == []
