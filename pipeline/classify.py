"""Classify items: score every passage, read with its item's context (committee, title, purpose
line), with the fine-tuned encoder; take each label's best passage as the item's score (blended,
where the model card says so, with a TF-IDF reading of the whole item), and keep the passages
above the label's threshold as its evidence.

A function over batches of plain records ({"id", "title", "text"}), so any engine can run it.
`classify_pending` is the store's side of it, for the nightly run and `minutes classify`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import numpy as np

from pipeline import tfidf
from pipeline.config import LABELS
from pipeline.inference import score_texts
from pipeline.passages import is_page_field, item_context, item_passages

# With int8, close calls are scored again in fp32: within this many logits of a threshold. The
# largest int8 error measured on a passage of real or labelled minutes was 0.72 to 0.86 logits,
# depending on which passages share a batch (README, Measuring); the margin leaves room beyond.
INT8_RECHECK_LOGITS = 1.5


# What an item must name before it can carry a label. All three labels are about services for
# children (the labelling guide: "intervention by central government in the council's services
# for children", "inspection of the council's children's services", "the children's services
# workforce"), so an item that names neither children nor any of their services carries none: an
# adult home care review's "recruitment and retention" is the care market's, not children's
# social workers'. And an inspection outcome is "the result of an external inspection or
# regulatory visit", so an item that names no inspection, inspectorate or visit reports none. On
# real minutes the model alone took a budget report's sentence on rising demand, and a youth
# offending item's word "deemed", for inspection findings (0.98 and 0.93 read alone): phrases its
# written positives share with judgements. No inspection outcome in dev60, the written validation
# items or 102 real items of 55 other councils names none of the inspection words; no flagged item
# in dev60, 50 more real items (R2) or any labelled file names none of the children's (README,
# "What an item must name"). Education, Estyn, the DfE and an improvement notice (the DfE's) name
# children's services too, and the committee counts: "Children and Young People Scrutiny" says
# whose staff "the service" means. Written on each model card at training (`named_in_item`, each
# label's patterns, all of which must match), so a model folder's figures stay its own; a card
# without it applies none.
CHILDREN_NAMED = (r"(?i:child|young (?:people|person)|youth|looked[- ]after|care leaver|foster|adoption|"
                  r"school|pupil|education|early years|early help|family hubs?\b|corporate parent|"
                  r"improvement notice|Ofsted|Estyn|ILACS|JTAI|CAMHS)|\b(?:SEND?|DfE)\b")
INSPECTION_NAMED = (r"(?i:inspect|monitoring visit|focused visit|written statement of action|area SEND|SEND area)|"
                    r"\b(?:Ofsted|OFSTED|CIW|CSSIW|Care Inspectorate|HMI\w*|JTAI|ILACS|SIF|SCIF|WSoA)\b")
NAMED_IN_ITEM: dict[str, list[str]] = {
    "intervention_notice": [CHILDREN_NAMED],
    "inspection_outcome": [CHILDREN_NAMED, INSPECTION_NAMED],
    "workforce_concern": [CHILDREN_NAMED],
}


def unnamed_labels(record: dict, named_in_item: dict[str, str | list[str]]) -> set[str]:
    """The labels with a `named_in_item` pattern that neither the item's committee, title nor
    text matches (a card written before the children's rule holds one pattern a label, not a list)."""
    text = "\n".join(record.get(key) or "" for key in ("committee", "meeting", "title", "text"))
    return {label for label, patterns in named_in_item.items()
            if not all(re.search(pattern, text) for pattern in ([patterns] if isinstance(patterns, str) else patterns))}


def apply_named_in_item(record: dict, passage_scores: np.ndarray, named_in_item: dict[str, str | list[str]]) -> np.ndarray:
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
                            max_tokens: int, device: str, contexts: list[str] | None = None,
                            item_limits: list[np.ndarray | None] | None = None) -> int:
    """In place: where an item's best int8 score for a label lies within `margin` logits of the
    threshold, its passages within the margin get their fp32 scores. With int8 off by less than
    the margin, every other decision is already fp32's: an item whose best passage is clearly
    above (or below) stays so, and a passage clearly below cannot reach the threshold. So an
    item's labels are those fp32 gives. `item_limits` (one per span) are the passage log-odds at
    which each item's decision turns when that is not the threshold (the TF-IDF blend moves
    it); evidence is still taken at the threshold. Returns how many passages were scored again."""
    thresholds_logit = _logit(np.array([thresholds[label] for label in LABELS]))
    logits = _logit(scores)
    close: list[int] = []
    for k, span in enumerate(spans):
        if span is None or span[1] == 0:
            continue
        start, length, _ = span
        item = logits[start:start + length]
        turns = item_limits[k] if item_limits is not None and item_limits[k] is not None else thresholds_logit
        # An item is undecided if its best passage is near where its decision turns; then every
        # passage near that point or near the threshold (evidence) is scored again.
        undecided = np.abs(item.max(axis=0) - turns) < margin  # per label
        near = ((np.abs(item - turns) < margin) | (np.abs(item - thresholds_logit) < margin)) & undecided
        close += (start + np.flatnonzero(near.any(axis=1))).tolist()
    if close:
        scores[close] = score_texts(loaded.fp32(), [passages[i] for i in close], batch_size, max_tokens,
                                    device, contexts=None if contexts is None else [contexts[i] for i in close])
    return len(close)


def blend(best: np.ndarray, words: np.ndarray | None, share: float) -> np.ndarray:
    """Item scores from the encoder's best passage and the TF-IDF reader's probability for the
    whole item, mixed in log-odds: `(1 - share) * logit(best) + share * logit(words)`. A best
    passage of 0 (a label the item does not name) stays 0."""
    best = np.asarray(best, dtype=np.float64)
    if words is None or share <= 0:
        return best
    mixed = 1.0 / (1.0 + np.exp(-((1 - share) * _logit(best) + share * _logit(np.asarray(words)))))
    return np.where(best <= 0, 0.0, mixed)


def decision_limits(words: np.ndarray, thresholds: dict[str, float], share: float) -> np.ndarray:
    """The best passage's log-odds at which a blended item's decision turns, per label."""
    return (_logit(np.array([thresholds[label] for label in LABELS])) - share * _logit(words)) / (1 - share)


def aggregate(passages: list[str], passage_scores: np.ndarray, thresholds: dict[str, float],
              evidence_per_label: int = 3, has_title: bool = True,
              item_scores: np.ndarray | None = None) -> dict:
    """Passage scores of one item -> its labels, scores and evidence. The item's score for a
    label is its best passage's, or `item_scores` where given (the blend with its words)."""
    labels, scores, evidence = [], {}, {}
    for j, label in enumerate(LABELS):
        column = passage_scores[:, j] if len(passages) else np.zeros(0)
        best = float(column.max()) if len(column) else 0.0
        score = float(item_scores[j]) if item_scores is not None else best
        scores[label] = round(score, 6)
        if score < thresholds[label] or not len(column):
            continue
        labels.append(label)
        ranked = sorted(range(len(passages)), key=lambda i: -column[i])
        above = [i for i in ranked if column[i] >= thresholds[label]]
        # Body sentences are better evidence than the title; the title stands in only alone.
        body = [i for i in above if not (has_title and i == 0)]
        # Blended with its words, an item can be flagged with no passage over the threshold:
        # its best body sentence is then the evidence, so a flag always quotes the item.
        best_body = [i for i in ranked if not (has_title and i == 0)][:1]
        chosen = body[:evidence_per_label] or above[:1] or best_body or ranked[:1]
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
    # The TF-IDF reader's probability for each scored item's whole text (a card's "tfidf").
    share = tfidf.card_share(loaded.card) if loaded.words is not None else 0.0
    words: list[np.ndarray | None] = [None] * len(records)
    if share > 0:
        scored = [k for k, span in enumerate(spans) if span is not None]
        for k, row in zip(scored, tfidf.probabilities(loaded.words, [records[k]["text"] for k in scored])):
            words[k] = row
    scores = score_texts(loaded, all_passages, batch_size, max_tokens, device, on_batch, contexts)
    if loaded.reference is not None:
        limits = [None if w is None else decision_limits(w, thresholds, share) for w in words]
        recheck_near_thresholds(loaded, all_passages, scores, spans, thresholds, recheck_logits,
                                batch_size, max_tokens, device, contexts, limits)
    out = []
    for record, span, item_words in zip(records, spans, words):
        if span is None:
            result = {"labels": [], "scores": {label: 0.0 for label in LABELS}, "evidence": {}}
        else:
            start, length, has_title = span
            passage_scores = apply_named_in_item(record, scores[start:start + length], named_in_item)
            best = passage_scores.max(axis=0) if length else np.zeros(len(LABELS))
            item_scores = blend(best, item_words, share) if item_words is not None else None
            result = aggregate(all_passages[start:start + length], passage_scores,
                               thresholds, evidence_per_label, has_title, item_scores)
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
