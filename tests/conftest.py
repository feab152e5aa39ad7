"""Fixtures: a tiny BERT (2 layers, 64 wide, random weights, the packaged tokenizer) so that
train -> save -> load -> classify round-trips run in seconds, and paths to the shared corpus."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"
COMPOSED = REPO / "data" / "labelled" / "composed.jsonl"
CORPUS = REPO.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS / "dev.gold.jsonl").is_file():
        pytest.skip("../shared/corpus is not beside this checkout")
    return CORPUS


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT with the packaged model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from pipeline.modelfolder import packaged_base_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-base")
    tokenizer = AutoTokenizer.from_pretrained(packaged_base_model(), local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=128, max_position_embeddings=256)
    BertForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def composed_rows(n: int, offset: int = 0) -> list[dict]:
    lines = COMPOSED.read_text(encoding="utf-8").splitlines()[offset:offset + n]
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tiny_base) -> Path:
    """A models/ folder with a tiny classifier and summariser trained and promoted."""
    from pipeline import modelfolder
    from pipeline.train import TrainingArguments, train_classifier, train_summariser

    root = tmp_path_factory.mktemp("models")
    rows = composed_rows(160)
    args = TrainingArguments(epochs=2, batch_size=32, learning_rate=3e-4, head_lr_scale=3.0)
    folder = train_classifier(rows, root, tiny_base, args, ["composed (first 160)"])
    modelfolder.promote(root, "classifier", folder.name)
    s_folder = train_summariser(rows, root, tiny_base, TrainingArguments(epochs=1, learning_rate=3e-4),
                                ["composed (first 160)"])
    modelfolder.promote(root, "summariser", s_folder.name)
    return root


@pytest.fixture()
def models_dir(tmp_path, tiny_models) -> Path:
    """A private copy of the tiny models, so a test may promote or roll back freely."""
    target = tmp_path / "models"
    shutil.copytree(tiny_models, target)
    return target


@pytest.fixture()
def env(tmp_path) -> dict:
    """Environment for running `minutes` against a temporary store (no models)."""
    environment = dict(os.environ)
    environment.update({
        "MINUTES_DB": str(tmp_path / "minutes.db"),
        "MINUTES_MODELS_DIR": str(tmp_path / "no-models"),
        "MINUTES_OUT_DIR": str(tmp_path / "briefings"),
        "MINUTES_LABELLED_DIR": str(REPO / "data" / "labelled"),
    })
    return environment


@pytest.fixture()
def model_env(env, models_dir) -> dict:
    """The same, with the tiny models trained and promoted."""
    return {**env, "MINUTES_MODELS_DIR": str(models_dir)}
