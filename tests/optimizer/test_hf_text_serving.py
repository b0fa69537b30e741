"""``serving.tokenizer`` through ``optiserve optimize``: the artifact holds the model, its
tokenizer model and the text ensemble; a folder without tokenizer files fails before any work.
(tests/triton/test_text_ensemble.py serves such a repository on the real tritonserver.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from optiserve_optimizer.text_models import max_length
from tests.optimizer import hf_encoders
from tests.optimizer.runs import QUICK_BENCHMARK, OptimizerRunner

pytestmark = pytest.mark.models


def write_spec(optimizer: OptimizerRunner, folder: Path, eval_npz: Path) -> Path:
    return optimizer.write_spec(
        "tiny",
        {"uri": str(folder), "format": "huggingface"},
        {
            "accuracy": {"dataset": str(eval_npz), "metric": "cosine", "maxDrop": 0.05},
            "benchmark": QUICK_BENCHMARK,
        },
        serving={"maxBatchSize": 4, "tokenizer": True},
    )


def test_the_job_packages_tokenizer_and_ensemble_beside_the_model(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    folder = hf_encoders.save_encoder(tmp_path / "bert", "bert")
    eval_npz = hf_encoders.save_text_npz(tmp_path / "eval.npz", 16, seed=1)
    run = optimizer.run(write_spec(optimizer, folder, eval_npz))
    repository = run.folder / "model_repository"
    assert sorted(p.name for p in repository.iterdir()) == ["tiny", "tiny-text", "tiny-tokenizer"]
    configs = {
        p.name: text_format.Parse((p / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        for p in repository.iterdir()
    }
    tokenizer, ensemble = configs["tiny-tokenizer"], configs["tiny-text"]
    assert tokenizer.backend == "python" and ensemble.platform == "ensemble"
    assert tokenizer.max_batch_size == ensemble.max_batch_size == configs["tiny"].max_batch_size
    assert [t.name for t in tokenizer.output] == [t.name for t in configs["tiny"].input]
    assert [t.name for t in ensemble.output] == [t.name for t in configs["tiny"].output]
    assert tokenizer.parameters["max_length"].string_value == "130"  # max_position_embeddings
    version = repository / "tiny-tokenizer" / "1"
    assert (version / "model.py").read_text().startswith('"""Triton python-backend model')
    copied = {p.name for p in (version / "tokenizer").iterdir()}
    assert {"tokenizer_config.json", "config.json"} <= copied
    assert copied & {"tokenizer.json", "vocab.txt"}
    assert (repository / "tiny-text" / "1").is_dir()


def test_a_folder_without_tokenizer_files_exits_2_before_any_work(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    folder = hf_encoders.save_encoder(tmp_path / "bert", "bert")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    eval_npz = hf_encoders.save_text_npz(tmp_path / "eval.npz", 16, seed=1)
    error = optimizer.run(write_spec(optimizer, folder, eval_npz), expect=2).error
    assert error["pass"] == "package"
    assert "no tokenizer files" in error["message"]
    assert not optimizer.out.exists() or list(optimizer.out.iterdir()) == []


@pytest.mark.parametrize(
    ("config", "tokenizer_config", "expected"),
    [
        ({"model_type": "bert", "max_position_embeddings": 512}, {}, 512),
        ({"model_type": "bert", "max_position_embeddings": 512}, {"model_max_length": 128}, 128),
        ({"model_type": "roberta", "max_position_embeddings": 514}, {}, 512),
        ({"model_type": "bert", "max_position_embeddings": 64}, {"model_max_length": 1e30}, 64),
        ({"model_type": "bert"}, {}, 512),
    ],
)
def test_max_length_is_what_the_model_takes(
    tmp_path: Path, config: dict[str, Any], tokenizer_config: dict[str, Any], expected: int
) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    assert max_length(tmp_path) == expected
