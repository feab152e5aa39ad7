"""Evaluation on gold files: the classifier's labels and evidence and the summariser's briefings
(scored by `pipeline.metrics`), each beside simple baselines; and the promotion gate. Models run
as the stage objects of `pipeline.stages`, so each report measures what the nightly run runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline import tfidf
from pipeline.config import LABELS
from pipeline.gold import prepare, read_gold
from pipeline.metrics import (
    briefing_metrics,
    evidence_score,
    gap_closed,
    label_metrics,
    macro_f1_gain_interval,
    mean_gain_interval,
    rouge_per_item,
    system_metrics,
)
from pipeline.oracle import rules_oracle, sentence_oracle
from pipeline.stages import Classifier, Summariser

# The keyword rules a careful analyst would write first (../shared/MODELS.md baseline).
KEYWORDS = {
    "intervention_notice": r"improvement notice|statutory direction|commissioner",
    "inspection_outcome": r"ofsted|inspection|monitoring visit|focused visit|jtai|inspectorate",
    "workforce_concern": r"caseload|agency staff|agency social worker|recruit|retention|turnover|vacanc",
}


def keyword_baseline(rows: list[dict]) -> list[list[str]]:
    return [
        [label for label in LABELS if re.search(KEYWORDS[label], r["text"], re.I)] for r in rows
    ]


def tfidf_baseline(train_rows: list[dict], rows: list[dict], seed: int = 13) -> list[list[str]]:
    """TF-IDF over item text + one logistic regression per label, on the same training data: the
    reader a model card may blend in (`tfidf`), here alone."""
    return tfidf.predict_labels(tfidf.fit(train_rows, seed=seed), [r["text"] for r in rows])


# ---------------------------------------------------------------- briefings
def first_words_baseline(row: dict, n: int = 60) -> str:
    """The first 60 words after "Minutes:" in the item as published."""
    text = row.get("raw_text") or row["text"]
    if "Minutes:" in text:
        text = text.split("Minutes:", 1)[1]
    return " ".join(text.split()[:n])


def lexrank_baseline(row: dict, n_words: int = 60) -> str:
    """LexRank (sumy) over the item's passages, as many top sentences as fit in 60 words."""
    from sumy.models.dom import ObjectDocumentModel, Paragraph, Sentence
    from sumy.nlp.stemmers import Stemmer
    from sumy.summarizers.lex_rank import LexRankSummarizer

    from pipeline.passages import item_passages

    passages = item_passages(row["text"], row.get("title"))

    class WordTokenizer:
        # sumy's own English tokenizer needs NLTK data downloads; our passages need none.
        language = "english"

        def to_words(self, sentence):
            return re.findall(r"[A-Za-z0-9£']+", sentence)

    tokenizer = WordTokenizer()
    document = ObjectDocumentModel([Paragraph([Sentence(p, tokenizer) for p in passages])])
    summariser = LexRankSummarizer(Stemmer("english"))
    # sumy returns the top k sentences in document order; the summary's length grows with k, so
    # a binary search finds the largest k that fits (each call is quadratic in the sentences).
    low, high, best = 1, len(passages), []
    while low <= high:
        k = (low + high) // 2
        chosen = [str(s) for s in summariser(document, k)]
        if len(" ".join(chosen).split()) <= n_words:
            best, low = chosen, k + 1
        else:
            high = k - 1
    return " ".join(best)


# ---------------------------------------------------------------- whole reports
def classifier_metrics(classifier, gold_rows: list[dict]) -> tuple[dict, list[dict]]:
    """Label metrics of a classifier (a stage object, or any callable over records) on prepared
    gold rows, and its predictions."""
    predictions = classifier(gold_rows)
    metrics = label_metrics([r.get("labels") or [] for r in gold_rows], [p["labels"] for p in predictions])
    return metrics, predictions


def gold_briefings(summariser, gold_rows: list[dict], predictions: list[dict]) -> tuple[list[str], list[dict]]:
    """The summariser's briefings of the gold items that have a label and a reference briefing,
    each briefed from the classifier's evidence for it (`predictions`), as the nightly run briefs
    from the stored predictions; returns (briefings, those gold rows)."""
    flagged = [r for r in gold_rows if r.get("briefing") and r.get("labels")]
    by_id = {p["id"]: p for p in predictions}
    records = [{**r, "evidence": by_id[r["id"]]["evidence"]} for r in flagged]
    return [b["briefing"] for b in summariser(records)], flagged


def cross_validate(settings, gold_path, training_rows: list[dict], validation_rows: list[dict],
                   folds: int, args, on_fold=None, on_step=None, base=None) -> dict:
    """What an analyst's own labels buy: for each of `folds` folds of the gold items, a
    classifier trained on the project's data plus the other folds' gold items (as `minutes
    label import` would add them) labels the held-out fold. Every gold item is then predicted
    by a model that never saw it; beside it, the default (promoted) model and TF-IDF trained
    the same way, on the same items. Thresholds come from the project's validation rows, as in
    `minutes train`."""
    import tempfile

    from pipeline.train import train_classifier

    raw_gold = read_gold(gold_path)
    if folds < 2 or folds > len(raw_gold):
        raise ValueError(f"--cross-validate needs 2 to {len(raw_gold)} folds, not {folds}")
    gold = [prepare(r) for r in raw_gold]
    order = np.random.default_rng(args.seed).permutation(len(gold))
    fold_of = {int(i): k % folds for k, i in enumerate(order)}
    cv_labels: list[list[str]] = [[] for _ in gold]
    tfidf_labels: list[list[str]] = [[] for _ in gold]
    prepared_training = [prepare(r) for r in training_rows]
    with tempfile.TemporaryDirectory(prefix="minutes-cv-") as scratch:
        for fold in range(folds):
            held = [i for i in range(len(gold)) if fold_of[i] == fold]
            extra = [raw_gold[i] for i in range(len(gold)) if fold_of[i] != fold]
            if on_fold:
                on_fold(fold, folds, len(extra), len(held))
            folder = train_classifier(training_rows + extra, Path(scratch) / f"fold{fold}", base, args,
                                      [f"cross-validation fold {fold + 1} of {folds}"], on_step,
                                      validation_rows)
            for i, p in zip(held, Classifier(folder, settings)([gold[i] for i in held])):
                cv_labels[i] = p["labels"]
            for i, labels in zip(held, tfidf_baseline(prepared_training + [prepare(r) for r in extra],
                                                     [gold[i] for i in held])):
                tfidf_labels[i] = labels
    default = Classifier.promoted(settings)
    truth = [r.get("labels") or [] for r in gold]
    default_labels = [p["labels"] for p in default(gold)]
    return {
        "gold": str(gold_path), "folds": folds, "epochs": args.epochs,
        "default_model_version": default.card.version,
        "default_model": system_metrics(truth, default_labels),
        "cross_validated": system_metrics(truth, cv_labels),
        "tfidf_cross_validated": system_metrics(truth, tfidf_labels),
        "keywords": system_metrics(truth, keyword_baseline(gold)),
        # What the analysts' labels buy, paired on the same items: cross-validated minus default.
        "gains_95ci": {"against": "cross_validated",
                       "default_model": list(macro_f1_gain_interval(truth, cv_labels, default_labels))},
    }


def evaluate_gold(settings, gold_path, training_rows: list[dict]) -> dict:
    """The classifier and summariser on a gold file, beside the baselines."""
    from pipeline import modelfolder

    gold = [prepare(r) for r in read_gold(gold_path)]
    training = [prepare(r) for r in training_rows]
    classifier = Classifier.promoted(settings)
    predictions = classifier(gold)
    truth = [r.get("labels") or [] for r in gold]
    labelled = {"model": [p["labels"] for p in predictions], "keywords": keyword_baseline(gold),
                "tfidf_logreg": tfidf_baseline(training, gold)}
    report = {
        "gold": str(gold_path), "model_version": classifier.card.version,
        **{name: system_metrics(truth, labels) for name, labels in labelled.items()},
        "evidence_score": evidence_score(gold, predictions),
        # The model's macro-F1 minus each baseline's, on the same resampled items: whether "above
        # the baseline" is more than these items' draw.
        "gains_95ci": {"against": "model", **{name: list(macro_f1_gain_interval(truth, labelled["model"], labels))
                                              for name, labels in labelled.items() if name != "model"}},
    }
    folder = settings.summariser_model or modelfolder.promoted_folder(settings.models_dir, "summariser")
    if folder is not None and any(r.get("briefing") and r.get("labels") for r in gold):
        summariser = Summariser(folder, settings)
        ours, flagged = gold_briefings(summariser, gold, predictions)
        report["summariser_version"] = summariser.version
        briefings = {
            "model": ours,
            "first_60_words": [first_words_baseline(r) for r in flagged],
            "lexrank": [lexrank_baseline(r) for r in flagged],
            "sentence_oracle": [sentence_oracle(r) for r in flagged],
            "rules_oracle": [rules_oracle(r) for r in flagged],
        }
        report["briefings"] = {name: briefing_metrics(texts, flagged) for name, texts in briefings.items()}
        references = [r["briefing"] for r in flagged]
        rouge_l = {name: [s["rougeL"] for s in rouge_per_item(texts, references)] for name, texts in briefings.items()}
        report["briefings_gains_95ci"] = {"against": "model", **{
            name: list(mean_gain_interval(rouge_l["model"], values)) for name, values in rouge_l.items() if name != "model"}}
        b = report["briefings"]
        report["briefings_gap_closed"] = gap_closed(b["model"]["rougeL"], b["first_60_words"]["rougeL"],
                                                    b["sentence_oracle"]["rougeL"])
        # How much of the gap the selection rules leave to a perfect scorer.
        report["rules_oracle_gap_closed"] = gap_closed(b["rules_oracle"]["rougeL"], b["first_60_words"]["rougeL"],
                                                       b["sentence_oracle"]["rougeL"])
    return report


def compare_for_promotion(settings, kind: str, version: str, gold_path, clear_gain: bool = False) -> dict:
    """Candidate and current model on the same gold file, each run as `evaluate` runs it (a
    summariser briefs from the classifier's evidence, that classifier `evaluate` would use);
    promote when the candidate is not lower by more than nothing (plus the configured margin),
    or with `clear_gain` only when the whole 95% paired interval of the gain is above the
    margin. The interval is reported either way: on a few dozen items one item moves macro-F1
    by several points, and the interval says whether the gain is more than the items' draw."""
    from pipeline import modelfolder

    gold = [prepare(r) for r in read_gold(gold_path)]
    candidate_folder = modelfolder.kind_dir(settings.models_dir, kind) / version
    modelfolder.read_card(candidate_folder)
    current_folder = modelfolder.promoted_folder(settings.models_dir, kind)

    if kind == "classifier":
        truth = [r.get("labels") or [] for r in gold]

        def score(folder) -> tuple[float, list]:
            metrics, predictions = classifier_metrics(Classifier(folder, settings), gold)
            return metrics["macro_f1"], [p["labels"] for p in predictions]

        def gain_interval(candidate: list, current: list) -> tuple[float, float]:
            return macro_f1_gain_interval(truth, candidate, current)
    else:
        predictions = Classifier.promoted(settings)(gold)  # one classifier's evidence for both

        def score(folder) -> tuple[float, list]:
            briefings, rows = gold_briefings(Summariser(folder, settings), gold, predictions)
            per_item = [r["rougeL"] for r in rouge_per_item(briefings, [row["briefing"] for row in rows])]
            return briefing_metrics(briefings, rows)["rougeL"], per_item

        gain_interval = mean_gain_interval

    metric = "macro-F1" if kind == "classifier" else "ROUGE-L"
    candidate, candidate_items = score(candidate_folder)
    if current_folder is None:
        return {"promote": True, "metric": metric, "candidate": candidate, "current": None,
                "current_version": None, "current_text": "none promoted", "gain_95ci": None,
                "items": len(candidate_items), "gain_text": "nothing to compare with"}
    current, current_items = score(current_folder)
    low, high = gain_interval(candidate_items, current_items)
    margin = settings.promote_margin
    promote = candidate >= current + margin and (low > margin or not clear_gain)
    told_apart = low > 0 or high < 0
    return {
        "promote": promote, "metric": metric, "candidate": candidate, "current": current,
        "current_version": current_folder.name, "current_text": f"{current:.4f} ({current_folder.name})",
        "gain_95ci": [low, high], "items": len(candidate_items),
        "gain_text": (f"gain {candidate - current:+.4f}, 95% paired interval [{low:+.4f}, {high:+.4f}] over "
                      f"{len(candidate_items)} items"
                      + ("" if told_apart else ", within what this gold file can tell apart")),
    }
