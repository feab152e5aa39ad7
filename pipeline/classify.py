"""Classify items: score every passage, read with its item's context (committee, title, purpose
line), with the fine-tuned encoder; take each label's best passage as the item's score, and keep the
passages above the label's threshold as its evidence.

A function over batches of plain records ({"id", "title", "text"}), so any engine can run it.
`classify_pending` is the store's side of it, for the nightly run and `minutes classify`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import numpy as np

from pipeline.config import LABELS
from pipeline.inference import score_texts
from pipeline.passages import is_page_field, item_context, item_passages

# With int8, close calls are scored again in fp32: within this many logits of a threshold. The
# largest int8 error measured on a passage of real or labelled minutes was 0.72 to 0.86 logits,
# depending on which passages share a batch (README, Measuring); the margin leaves room beyond.
INT8_RECHECK_LOGITS = 1.5


# What an item must name before it can carry a label, for the labels the labelling guide defines
# by a named thing: an inspection outcome is "the result of an external inspection or regulatory
# visit", so an item that names no inspection, inspectorate or visit reports none. On real
# minutes the model alone took a budget report's sentence on rising demand, and a
# youth offending item's word "deemed", for inspection findings (0.98 and 0.93 read alone): phrases
# its written positives share with judgements. No inspection outcome in dev60, the
# written validation items, or 102 real items of 55 other councils names none of these (README,
# "What an item must name"). Written on each model card at training (`named_in_item`), so a
# model folder's figures stay its own; a card without it applies none.
NAMED_IN_ITEM: dict[str, str] = {
    "inspection_outcome": (r"(?i:inspect|monitoring visit|focused visit|written statement of action|"
                           r"area SEND|SEND area)|"
                           r"\b(?:Ofsted|OFSTED|CIW|CSSIW|Care Inspectorate|HMI\w*|JTAI|ILACS|SIF|SCIF|WSoA)\b"),
}


def unnamed_labels(record: dict, named_in_item: dict[str, str]) -> set[str]:
    """The labels whose `named_in_item` pattern neither the item's title nor its text matches."""
    text = f"{record.get('title') or ''}\n{record.get('text') or ''}"
    return {label for label, pattern in named_in_item.items() if not re.search(pattern, text)}


def apply_named_in_item(record: dict, passage_scores: np.ndarray, named_in_item: dict[str, str]) -> np.ndarray:
    """One item's passage scores with the labels it does not name scored 0 (a copy when any is),
    so the item cannot carry them and no passage is their evidence."""
    unnamed = unnamed_labels(record, named_in_item)
    if not unnamed:
        return passage_scores
    passage_scores = passage_scores.copy()
    passage_scores[:, [LABELS.index(label) for label in unnamed]] = 0.0
    return passage_scores


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def recheck_near_thresholds(loaded, passages: list[str], scores: np.ndarray, spans: list,
                            thresholds: dict[str, float], margin: float, batch_size: int,
                            max_tokens: int, device: str, contexts: list[str] | None = None) -> int:
    """In place: where an item's best int8 score for a label lies within `margin` logits of the
    threshold, its passages within the margin get their fp32 scores. With int8 off by less than
    the margin, every other decision is already fp32's: an item whose best passage is clearly
    above (or below) stays so, and a passage clearly below cannot reach the threshold. So an
    item's labels are those fp32 gives. Returns how many passages were scored again."""
    limits = _logit(np.array([thresholds[label] for label in LABELS]))
    logits = _logit(scores)
    close: list[int] = []
    for span in spans:
        if span is None or span[1] == 0:
            continue
        start, length, _ = span
        item = logits[start:start + length]
        undecided = np.abs(item.max(axis=0) - limits) < margin  # per label
        near = (np.abs(item - limits) < margin) & undecided
        close += (start + np.flatnonzero(near.any(axis=1))).tolist()
    if close:
        scores[close] = score_texts(loaded.fp32(), [passages[i] for i in close], batch_size, max_tokens,
                                    device, contexts=None if contexts is None else [contexts[i] for i in close])
    return len(close)


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


def classify_records(loaded, records: list[dict], batch_size: int = 32, max_tokens: int = 128,
                     device: str = "cpu", evidence_per_label: int = 3,
                     on_batch: Callable[[int], None] | None = None,
                     recheck_logits: float = INT8_RECHECK_LOGITS) -> list[dict]:
    """Records {"id", "title"?, "text", "committee"?, "purpose"?, "is_procedural"?} ->
    predictions {"id", "labels", "scores", "evidence"}. Procedural items (apologies,
    declarations, last meeting's minutes) skip the model: they carry no label by the labelling
    guide. A model trained with context (its card says so) reads each passage paired with
    `item_context(record)`. With an int8 model, passages near a threshold are scored again in
    fp32 (`recheck_logits`)."""
    thresholds = loaded.card["thresholds"]
    with_context = bool(loaded.card.get("context"))
    named_in_item = loaded.card.get("named_in_item") or {}
    all_passages: list[str] = []
    all_contexts: list[str] = []
    spans = []
    for record in records:
        if record.get("is_procedural"):
            spans.append(None)
            continue
        passages = item_passages(record["text"], record.get("title"))
        first = 1 if record.get("title") else 0  # the title is passage 0 and always read
        passages = passages[:first] + [p for p in passages[first:] if not is_page_field(p)]
        spans.append((len(all_passages), len(passages), bool(record.get("title"))))
        all_passages += passages
        if with_context:
            all_contexts += [item_context(record)] * len(passages)
    contexts = all_contexts if with_context else None
    scores = score_texts(loaded, all_passages, batch_size, max_tokens, device, on_batch, contexts)
    if loaded.reference is not None:
        recheck_near_thresholds(loaded, all_passages, scores, spans, thresholds, recheck_logits,
                                batch_size, max_tokens, device, contexts)
    out = []
    for record, span in zip(records, spans):
        if span is None:
            result = {"labels": [], "scores": {label: 0.0 for label in LABELS}, "evidence": {}}
        else:
            start, length, has_title = span
            item_scores = apply_named_in_item(record, scores[start:start + length], named_in_item)
            result = aggregate(all_passages[start:start + length], item_scores,
                               thresholds, evidence_per_label, has_title)
        out.append({"id": record["id"], **result})
    return out



# ---------------------------------------------------------------- the store's side
def classify_pending(db, classifier, run_id: int | None = None,
                     on_items: Callable[[int, int], None] | None = None,
                     reclassify_all: bool = False) -> int:
    """Classify the stored current items that `classifier` (a `stages.Classifier`) has not
    labelled yet, `store_batch` at a time, each batch committed with the run's id; returns how
    many. Its weights load only when there is something to classify."""
    from pipeline import store

    settings = classifier.settings
    version = classifier.version
    pending = store.items(db) if reclassify_all else store.items_without_predictions(db, version)
    done = 0
    for start in range(0, len(pending), settings.store_batch):
        batch = pending[start:start + settings.store_batch]
        rows = [{**p, "item_id": p["id"]} for p in classifier(batch)]
        if reclassify_all:
            store.delete_predictions(db, [r["item_id"] for r in rows], version)
        store.save_predictions(db, rows, version, run_id)
        done += len(batch)
        time.sleep(settings.pause_between_batches_s)
        if on_items:
            on_items(done, len(pending))
    return done
