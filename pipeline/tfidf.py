"""The whole item read as words: TF-IDF over its text, one logistic regression a label.

Two uses, one definition: the classifier's second reader (a model card's `"tfidf"`; classify
blends its probability with the encoder's best passage, see `classify.blend`), and the TF-IDF +
LR baseline that `minutes evaluate` prints beside the model.

Saved beside the encoder's weights as safetensors (idf, coefficients, intercepts) and JSON (the
vocabulary), never pickled: a model folder from elsewhere is read, not executed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import LABELS

WEIGHTS = "tfidf.safetensors"
VOCABULARY = "tfidf_vocabulary.json"
# Unigrams and bigrams seen in at least two training items, counts damped by log: the baseline's
# settings since it was first measured (../shared/MODELS.md).
NGRAMS = (1, 2)
MIN_DF = 2
# A label no training item carries (or every one does) gets no regression: a constant this sure.
CONSTANT_LOGIT = 7.0


@dataclass
class ItemWords:
    terms: list[str]          # the vocabulary, in feature order
    idf: np.ndarray           # (features,)
    coef: np.ndarray          # (labels, features)
    intercept: np.ndarray     # (labels,)
    labels: list[str]


def card_share(card: dict) -> float:
    """The share of the item's words in its score, as a model card gives it (0: not blended)."""
    return float((card.get("tfidf") or {}).get("share") or 0.0)


def _counts(terms: list[str], texts: list[str]):
    from sklearn.feature_extraction.text import CountVectorizer

    vocabulary = {term: i for i, term in enumerate(terms)}
    return CountVectorizer(ngram_range=NGRAMS, vocabulary=vocabulary).transform(texts)


def features(words: ItemWords, texts: list[str]):
    """TF-IDF rows, as `TfidfVectorizer(sublinear_tf=True)` computes them: 1 + log(count), times
    idf, each row of unit length."""
    from sklearn.preprocessing import normalize

    x = _counts(words.terms, texts).astype(np.float64)
    x.data = 1.0 + np.log(x.data)
    return normalize(x.multiply(words.idf[None, :]).tocsr())


def fit(rows: list[dict], labels: list[str] = LABELS, seed: int = 13) -> ItemWords:
    """Fit on labelled rows ({"text", "labels"}): the vocabulary and idf on their texts, then one
    class-balanced logistic regression a label."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = [r["text"] for r in rows]
    vectoriser = TfidfVectorizer(ngram_range=NGRAMS, min_df=MIN_DF, sublinear_tf=True)
    x = vectoriser.fit_transform(texts)
    terms = [term for term, _ in sorted(vectoriser.vocabulary_.items(), key=lambda kv: kv[1])]
    coef = np.zeros((len(labels), len(terms)))
    intercept = np.zeros(len(labels))
    for j, label in enumerate(labels):
        y = np.array([label in (r.get("labels") or []) for r in rows])
        if y.all() or not y.any():
            intercept[j] = CONSTANT_LOGIT if y.all() else -CONSTANT_LOGIT
            continue
        model = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
        model.fit(x, y)
        coef[j], intercept[j] = model.coef_[0], model.intercept_[0]
    return ItemWords(terms, np.asarray(vectoriser.idf_, dtype=np.float64), coef, intercept, list(labels))


def logits(words: ItemWords, texts: list[str]) -> np.ndarray:
    """(texts, labels) log-odds."""
    if not texts:
        return np.zeros((0, len(words.labels)))
    return np.asarray(features(words, texts) @ words.coef.T) + words.intercept[None, :]


def probabilities(words: ItemWords, texts: list[str]) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits(words, texts)))


def predict_labels(words: ItemWords, texts: list[str]) -> list[list[str]]:
    """Labels whose probability is over one half (logistic regression's own decision)."""
    return [[label for j, label in enumerate(words.labels) if row[j] > 0] for row in logits(words, texts)]


def save(words: ItemWords, folder: Path) -> None:
    from safetensors.numpy import save_file

    folder = Path(folder)
    save_file({"idf": words.idf, "coef": words.coef, "intercept": words.intercept}, folder / WEIGHTS)
    (folder / VOCABULARY).write_text(json.dumps({"labels": words.labels, "terms": words.terms}), encoding="utf-8")


def load(folder: Path) -> ItemWords:
    from safetensors.numpy import load_file

    folder = Path(folder)
    arrays = load_file(folder / WEIGHTS)
    meta = json.loads((folder / VOCABULARY).read_text(encoding="utf-8"))
    words = ItemWords(meta["terms"], arrays["idf"], arrays["coef"], arrays["intercept"], meta["labels"])
    if words.coef.shape != (len(words.labels), len(words.terms)) or words.idf.shape != (len(words.terms),):
        raise ValueError(f"{folder}: {WEIGHTS} does not match {VOCABULARY}")
    return words
