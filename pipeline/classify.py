"""Classify items: score every passage with the fine-tuned encoder, take each label's best passage
as the item's score, and keep the passages above the label's threshold as its evidence.

A function over batches of plain records ({"id", "title", "text"}), so any engine can run it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.config import LABELS
from pipeline.passages import item_passages


def encode_batches(tokenizer, texts: list[str], batch_size: int, max_tokens: int):
    """One tokenizer pass, then length-sorted batches with dynamic padding: short passages are
    not padded to the longest passage of the whole run. Yields (indices, padded batch)."""
    encoded = tokenizer(texts, truncation=True, max_length=max_tokens)
    order = sorted(range(len(texts)), key=lambda i: len(encoded["input_ids"][i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        features = [{k: encoded[k][i] for k in encoded.keys()} for i in chunk]
        yield chunk, tokenizer.pad(features, return_tensors="pt")


def score_texts(loaded, texts: list[str], batch_size: int = 64, max_tokens: int = 128,
                device: str = "cpu", on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Sigmoid probabilities, shape (len(texts), number of model outputs)."""
    import torch

    n_out = loaded.model.config.num_labels
    scores = np.zeros((len(texts), n_out), dtype=np.float32)
    if not texts:
        return scores
    with torch.inference_mode():
        for chunk, batch in encode_batches(loaded.tokenizer, texts, batch_size, max_tokens):
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = loaded.model(**batch).logits.float()
            scores[chunk] = torch.sigmoid(logits).cpu().numpy()
            if on_batch:
                on_batch(len(chunk))
    return scores


def aggregate(passages: list[str], passage_scores: np.ndarray, thresholds: dict[str, float],
              evidence_per_label: int = 3, has_title: bool = True) -> dict:
    """Passage scores of one item -> its labels, scores and evidence."""
    labels, scores, evidence = [], {}, {}
    for j, label in enumerate(LABELS):
        column = passage_scores[:, j] if len(passages) else np.zeros(0)
        score = float(column.max()) if len(column) else 0.0
        scores[label] = round(score, 6)
        if score < thresholds[label]:
            continue
        labels.append(label)
        ranked = sorted(range(len(passages)), key=lambda i: -column[i])
        # Body sentences are better evidence than the title; the title stands in only alone.
        body = [i for i in ranked if not (has_title and i == 0) and column[i] >= thresholds[label]]
        chosen = body[:evidence_per_label] or ranked[:1]
        evidence[label] = [passages[i] for i in sorted(chosen)]
    return {"labels": labels, "scores": scores, "evidence": evidence}


def classify_records(loaded, records: list[dict], batch_size: int = 64, max_tokens: int = 128,
                     device: str = "cpu", evidence_per_label: int = 3,
                     on_batch: Callable[[int], None] | None = None) -> list[dict]:
    """Records {"id", "title"?, "text", "is_procedural"?} -> predictions
    {"id", "labels", "scores", "evidence"}. Procedural items (apologies, declarations, last
    meeting's minutes) skip the model: they carry no label by the labelling guide."""
    thresholds = loaded.card["thresholds"]
    all_passages: list[str] = []
    spans = []
    for record in records:
        if record.get("is_procedural"):
            spans.append(None)
            continue
        passages = item_passages(record["text"], record.get("title"))
        spans.append((len(all_passages), len(passages), bool(record.get("title"))))
        all_passages += passages
    scores = score_texts(loaded, all_passages, batch_size, max_tokens, device, on_batch)
    out = []
    for record, span in zip(records, spans):
        if span is None:
            result = {"labels": [], "scores": {label: 0.0 for label in LABELS}, "evidence": {}}
        else:
            start, length, has_title = span
            result = aggregate(all_passages[start:start + length], scores[start:start + length],
                               thresholds, evidence_per_label, has_title)
        out.append({"id": record["id"], **result})
    return out


def count_passages(records: list[dict]) -> int:
    return sum(len(item_passages(r["text"], r.get("title"))) for r in records
               if not r.get("is_procedural"))
