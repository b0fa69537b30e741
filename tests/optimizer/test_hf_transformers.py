"""Hugging Face encoders (tiny ones built from a config) through ``optiserve optimize``: the
packaged model agrees with transformers on padded batches, an export that drops the mask is
caught, compression is physically smaller and gated, and bad folders exit 2 naming the cause."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optiserve_optimizer.errors import PassFailedError
from optiserve_optimizer.onnx_utils import session
from optiserve_optimizer.passes import hf_model, hf_source
from tests.optimizer import hf_encoders
from tests.optimizer.runs import QUICK_BENCHMARK, OptimizerRunner

pytestmark = pytest.mark.models


def write_spec(
    optimizer: OptimizerRunner,
    folder: Path,
    eval_npz: Path,
    task: str | None = None,
    **optimization: Any,
) -> Path:
    source: dict[str, Any] = {"uri": str(folder), "format": "huggingface"}
    if task:
        source["task"] = task
    return optimizer.write_spec(
        "tiny",
        source,
        {
            "accuracy": {"dataset": str(eval_npz), "metric": "cosine", "maxDrop": 0.05},
            "benchmark": QUICK_BENCHMARK,
            **optimization,
        },
    )


def npz_size(path: Path) -> int:
    with np.load(path) as npz:
        return int(npz["attention_mask"].size)


def reference(folder: Path, task: str, feed: dict[str, Any]) -> Any:
    """What transformers itself computes (default attention, our code not involved)."""
    import torch

    model = hf_model.auto_class(task).from_pretrained(str(folder)).eval()
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
    if task != "feature-extraction":
        return out.logits.numpy()
    mask = torch.from_numpy(feed["attention_mask"]).unsqueeze(-1).float()
    pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


@pytest.mark.parametrize(
    ("kind", "task"),
    [
        ("bert", "feature-extraction"),
        ("distilbert", "sequence-classification"),
        ("roberta", "token-classification"),
    ],
)
def test_encoder_folder_is_packaged_and_matches_transformers_on_a_padded_batch(
    tmp_path: Path, optimizer: OptimizerRunner, kind: str, task: str
) -> None:
    folder = hf_encoders.save_encoder(tmp_path / kind, kind, task)
    eval_npz = hf_encoders.save_text_npz(tmp_path / "eval.npz", 16, seed=1, kind=kind)
    spec = write_spec(optimizer, folder, eval_npz, task=task)
    run = optimizer.run(spec)
    report = run.report
    assert report["baseline"]["name"] == report["baseline"]["runtime"] == "pytorch-eager"
    assert list(report["baseline"]["beside"]) == ["onnxruntime-fp32"]  # measured in the same run
    checks = {(c["name"], c["subject"]): c for c in report["checks"]}
    binding = checks["input-binding", "source"]["numbers"]
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if kind == "bert" else [])
    assert binding["inputs"] == names and binding["samples"] == {"eval.npz": 16}
    padded = checks["padded-batch", "source"]  # main's checker on the exported ONNX model
    assert padded["result"] == "passed" and len(set(padded["numbers"]["lengths"])) > 1
    assert checks["padded-batch", "fp32"]["result"] == "passed"
    load = report["candidateDetails"]["fp32"]["passes"]["load_export"]
    assert load["architecture"] == kind and load["task"] == task
    accuracy = report["candidateDetails"]["fp32"]["accuracy"]
    with np.load(eval_npz) as npz:
        real_tokens = float(npz["attention_mask"].sum())
    if task == "token-classification":  # the gate counted real tokens only
        assert accuracy["realTokens"] == real_tokens < npz_size(eval_npz)
    else:
        assert "realTokens" not in accuracy
    assert len(set(load["paddedCheckLengths"])) > 1  # the check saw mixed lengths
    (served,) = run.folder.glob("model_repository/*/1/model.onnx")
    with np.load(eval_npz) as npz:
        feed = hf_source.padded_batch({k: npz[k] for k in npz.files}, pad_id=0)
    sess = session(served)
    got = sess.run(None, {i.name: feed[i.name] for i in sess.get_inputs()})[0]
    want = reference(folder, task, feed)
    assert got.shape == want.shape
    diff = np.abs(got - want)
    if task == "token-classification":
        diff = diff[feed["attention_mask"].astype(bool)]  # padded positions carry no answer
    assert float(diff.max()) < 1e-4


def test_export_that_drops_the_attention_mask_is_caught(tmp_path: Path) -> None:
    import torch

    folder = hf_encoders.save_encoder(tmp_path / "bert", "bert")
    eval_npz = hf_encoders.save_text_npz(tmp_path / "eval.npz", 8, seed=1)
    module = hf_model.load_folder(folder, "feature-extraction", "load_export")
    with np.load(eval_npz) as npz:
        arrays = {k: npz[k] for k in npz.files}
    padded = hf_source.padded_batch(arrays, pad_id=0)

    class MaskDropping(torch.nn.Module):
        """The trap: attention sees every position (pooling still uses the mask)."""

        input_names = module.input_names
        task = module.task

        def __init__(self) -> None:
            super().__init__()
            self.encoder = module.model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.encoder(input_ids=input_ids, token_type_ids=token_type_ids)[0]
            mask = attention_mask.unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            return torch.nn.functional.normalize(pooled, dim=1)

    onnx_path = tmp_path / "dropped.onnx"
    hf_source.export(MaskDropping().eval(), padded, onnx_path, "load_export")
    full = {k: v.copy() for k, v in padded.items()}
    full["attention_mask"][:] = 1
    hf_source.check_padded(module, onnx_path, full, "load_export")  # unpadded: agrees
    with pytest.raises(PassFailedError, match=r"largest difference .* at sample \d+ \(length"):
        hf_source.check_padded(module, onnx_path, padded, "load_export")
    # The right export of the same model passes the same check.
    hf_source.export(module, padded, tmp_path / "right.onnx", "load_export")
    metrics = hf_source.check_padded(module, tmp_path / "right.onnx", padded, "load_export")
    assert metrics["paddedCheckMaxDiff"] < 1e-4


def test_compression_candidates_are_physically_smaller_and_gated(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    folder = hf_encoders.save_encoder(tmp_path / "bert", "bert")
    eval_npz = hf_encoders.save_text_npz(tmp_path / "eval.npz", 16, seed=1)
    calib = hf_encoders.save_text_npz(tmp_path / "calib.npz", 32, seed=2)
    spec = write_spec(
        optimizer,
        folder,
        eval_npz,
        quantization={"precision": "int8", "method": "dynamic"},
        pruning={"method": "structured", "sparsity": 0.5},
        recovery={"method": "distill", "epochs": 1, "dataset": str(calib)},
        student={"method": "shallow", "layers": 1, "epochs": 1, "dataset": str(calib)},
    )
    report = optimizer.run(spec).report
    rows, details = hf_encoders.check_compression_report(
        report, heads="4->2", ffn="128->64", layers="2->1", metric="cosine", max_drop=0.05
    )
    assert details["student-shallow-pruned"]["passes"]["distill"]["epochs"] == 1
    for name in ("pruned-structured", "student-shallow-pruned"):
        assert rows[name]["sizeBytes"] < rows["fp32"]["sizeBytes"]
        assert rows[f"{name}+int8-dynamic"]["sizeBytes"] < rows["int8-dynamic"]["sizeBytes"]


def test_a_compressed_candidate_that_loses_accuracy_is_not_chosen(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    folder = hf_encoders.save_encoder(tmp_path / "bert", "bert")
    eval_npz = hf_encoders.save_text_npz(tmp_path / "eval.npz", 16, seed=1)
    spec = write_spec(
        optimizer,
        folder,
        eval_npz,
        pruning={"method": "structured", "sparsity": 0.75},
        recovery={"method": "none"},
        accuracy={"dataset": str(eval_npz), "metric": "cosine", "maxDrop": 1e-6},
    )
    report = optimizer.run(spec).report
    rows = {c["name"]: c for c in report["candidates"]}
    assert not rows["pruned-structured"]["passed"]
    assert "cosine drop" in rows["pruned-structured"]["reason"]
    assert report["chosen"] in ("fp32", "fp32-fused")  # the unpruned model, fused or not


def _no_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def _pickled_weights(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def _no_config(folder: Path) -> None:
    (folder / "config.json").unlink()


def _gpt2(folder: Path) -> None:
    from transformers import GPT2Config, GPT2Model

    for path in folder.iterdir():
        path.unlink()
    GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2)).save_pretrained(str(folder))


def _small_vocab(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = 1000
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("damage", "task", "cause"),
    [
        (_no_weights, None, "has no *.safetensors weights"),
        (_pickled_weights, None, "pickle files are not loaded"),
        (_no_config, None, "has no config.json"),
        (_gpt2, None, "unsupported architecture 'gpt2'"),
        (None, "sequence-classification", "task sequence-classification does not fit"),
        (_small_vocab, None, "the tokenizer does not match the model"),
    ],
)
def test_bad_folder_exits_2_naming_the_pass_and_cause_and_writes_nothing(
    tmp_path: Path, optimizer: OptimizerRunner, damage: Any, task: str | None, cause: str
) -> None:
    folder = hf_encoders.save_encoder(tmp_path / "bert", "bert")
    if damage is not None:
        damage(folder)
    eval_npz = hf_encoders.save_text_npz(tmp_path / "eval.npz", 16, seed=1)
    error = optimizer.run(write_spec(optimizer, folder, eval_npz, task=task), expect=2).error
    assert error["pass"] == "load_export"
    assert cause in error["message"]
    assert not optimizer.out.exists() or list(optimizer.out.iterdir()) == []


def test_eval_data_without_a_model_input_exits_2(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    folder = hf_encoders.save_encoder(tmp_path / "bert", "bert")
    # DistilBERT-style data has no token_type_ids; a BERT model takes them.
    eval_npz = hf_encoders.save_text_npz(tmp_path / "eval.npz", 16, seed=1, kind="distilbert")
    error = optimizer.run(write_spec(optimizer, folder, eval_npz), expect=2).error
    assert error["pass"] == "load_export" and "token_type_ids" in error["message"]
    assert not optimizer.out.exists() or list(optimizer.out.iterdir()) == []


def test_training_data_that_does_not_fit_is_refused_before_the_export(
    tmp_path: Path, optimizer: OptimizerRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every dataset a step reads is bound to the model's inputs up front (inputs.py), not
    only the eval set: distillation data without token_type_ids fails while loading."""
    folder = hf_encoders.save_encoder(tmp_path / "bert", "bert")
    eval_npz = hf_encoders.save_text_npz(tmp_path / "eval.npz", 16, seed=1)
    train = hf_encoders.save_text_npz(tmp_path / "train.npz", 16, seed=2, kind="distilbert")
    student = {"method": "shallow", "layers": 1, "dataset": str(train)}
    error = optimizer.run(write_spec(optimizer, folder, eval_npz, student=student), expect=2).error
    assert error["pass"] == "distill"  # the role that reads the data, as for TorchScript sources
    assert "train.npz" in error["message"] and "token_type_ids" in error["message"]
    assert re.search(r"original +load_export +FAILED", capsys.readouterr().err)  # no export
    assert not optimizer.out.exists() or list(optimizer.out.iterdir()) == []
