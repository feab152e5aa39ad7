"""Evaluation on gold files: per-label precision/recall/F1, macro and micro F1 and an evidence
score for the classifier, ROUGE and faithfulness for briefings, each beside simple baselines."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline.config import LABELS
from pipeline.passages import abbreviate, acronyms_defined, overlaps

# The keyword rules a careful analyst would write first (../shared/MODELS.md baseline).
KEYWORDS = {
    "intervention_notice": r"improvement notice|statutory direction|commissioner",
    "inspection_outcome": r"ofsted|inspection|monitoring visit|focused visit|jtai|inspectorate",
    "workforce_concern": r"caseload|agency staff|agency social worker|recruit|retention|turnover|vacanc",
}


def label_metrics(truth: list[list[str]], predicted: list[list[str]]) -> dict:
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    y_true = np.array([[label in t for label in LABELS] for t in truth], dtype=int).reshape(-1, len(LABELS))
    y_pred = np.array([[label in p for label in LABELS] for p in predicted], dtype=int).reshape(-1, len(LABELS))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, average=None, labels=list(range(len(LABELS))), zero_division=0
    )
    per_label = {
        label: {"precision": round(float(precision[j]), 4), "recall": round(float(recall[j]), 4),
                "f1": round(float(f1[j]), 4), "support": int(support[j]),
                "predicted": int(y_pred[:, j].sum())}
        for j, label in enumerate(LABELS)
    }
    return {
        "per_label": per_label,
        "macro_f1": round(float(f1_score(y_true, y_pred, average="macro", zero_division=0)), 4),
        "micro_f1": round(float(f1_score(y_true, y_pred, average="micro", zero_division=0)), 4),
        "items": len(truth),
    }


def bootstrap_macro_f1(truth: list[list[str]], predicted: list[list[str]], rounds: int = 2000,
                       seed: int = 13) -> tuple[float, float]:
    """95% interval of macro-F1 over items resampled with replacement: with a few dozen items,
    one item moves a label's F1 by several points, and the interval says how far."""
    from sklearn.metrics import f1_score

    y_true = np.array([[label in t for label in LABELS] for t in truth], dtype=int).reshape(-1, len(LABELS))
    y_pred = np.array([[label in p for label in LABELS] for p in predicted], dtype=int).reshape(-1, len(LABELS))
    if not len(y_true):
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        pick = rng.integers(0, len(y_true), len(y_true))
        values.append(f1_score(y_true[pick], y_pred[pick], average="macro", zero_division=0))
    low, high = np.percentile(values, [2.5, 97.5])
    return (round(float(low), 4), round(float(high), 4))


def system_metrics(truth: list[list[str]], predicted: list[list[str]]) -> dict:
    """Per-label figures with counts, macro/micro F1 and macro-F1's bootstrap interval."""
    metrics = label_metrics(truth, predicted)
    metrics["macro_f1_95ci"] = list(bootstrap_macro_f1(truth, predicted))
    return metrics


def evidence_score(gold_rows: list[dict], predictions: list[dict]) -> float | None:
    """Share of gold evidence sentences (of labels both gold and predicted) found among the
    predicted evidence passages."""
    found = total = 0
    for row, pred in zip(gold_rows, predictions):
        for label, sentences in (row.get("evidence") or {}).items():
            if label not in pred["labels"]:
                continue
            for sentence in sentences:
                total += 1
                found += any(overlaps(p, sentence) for p in pred["evidence"].get(label, []))
    return round(found / total, 4) if total else None


def keyword_baseline(rows: list[dict]) -> list[list[str]]:
    return [
        [label for label in LABELS if re.search(KEYWORDS[label], r["text"], re.I)] for r in rows
    ]


def tfidf_baseline(train_rows: list[dict], rows: list[dict], seed: int = 13) -> list[list[str]]:
    """TF-IDF over item text + one logistic regression per label, on the same training data."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectoriser = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_train = vectoriser.fit_transform([r["text"] for r in train_rows])
    x = vectoriser.transform([r["text"] for r in rows])
    predicted = [[] for _ in rows]
    for label in LABELS:
        y = np.array([label in (r.get("labels") or []) for r in train_rows])
        if y.all() or not y.any():
            continue
        model = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
        model.fit(x_train, y)
        for i, flag in enumerate(model.predict(x)):
            if flag:
                predicted[i].append(label)
    return predicted


# ---------------------------------------------------------------- briefings
_NUMBER = re.compile(r"£?\d[\d,.]*(?:%| per cent)?")
_NAME = re.compile(r"\b(?:[A-Z][a-zA-Z'’&-]+|[A-Z]{2,})(?:\s+(?:of|and|for|the|[A-Z][a-zA-Z'’&-]+|[A-Z]{2,}))*")
_MONTH_YEAR = re.compile(
    r"\b(?:\d{1,2}(?:st|nd|rd|th)?\s+)?(?:January|February|March|April|May|June|July|August|"
    r"September|October|November|December)(?:\s+\d{4})?\b"
)


def unsupported_facts(briefing: str, source: str) -> list[str]:
    """Numbers, dates and named bodies in a briefing that the source does not contain. A name
    the source abbreviates itself ("Care Quality Commission (CQC)") counts in either form."""
    acronyms = acronyms_defined(source)
    if acronyms:
        source = source + "\n" + abbreviate(source, acronyms)
    norm_source = re.sub(r"\s+", " ", source.replace("’", "'")).lower()
    missing = []
    for match in _NUMBER.finditer(briefing):
        token = match.group().rstrip(".,")
        if token and token.lower() not in norm_source:
            missing.append(token)
    for match in _MONTH_YEAR.finditer(briefing):
        if match.group().lower() not in norm_source:
            missing.append(match.group())
    for match in _NAME.finditer(briefing):
        name = match.group().strip()
        words = name.split()
        # A capitalised word that opens a sentence is not a name on that account alone.
        opens_sentence = not briefing[:match.start()].strip() or briefing[:match.start()].rstrip()[-1] in ".!?:;"
        if len(words) == 1 and opens_sentence and not name.isupper():
            continue
        if opens_sentence and len(words) > 1 and words[0] in {"The", "A", "An", "This", "That", "It", "In", "On"}:
            name = " ".join(words[1:])
        if name.replace("’", "'").lower() not in norm_source:
            missing.append(name)
    unique = list(dict.fromkeys(missing))
    # "March" and "2024" are reported once, inside "March 2024".
    return [m for m in unique if not any(m != other and m in other for other in unique)]


def _sentence_start(text: str, at: int) -> bool:
    before = text[:at].rstrip()
    return not before or before[-1] in ".!?:;"


def stated_facts(text: str, source: str) -> list[str]:
    """The numbers, dates and named bodies a briefing states (the labelling guide's "every
    number, date and body named"): numbers and month dates; acronyms and names of two or more
    capitalised words (Ofsted, DfE, Department for Education); a single capitalised word that
    opens a sentence only when the source writes it capitalised inside a sentence too (a name,
    not a sentence's first word). A number inside a date is counted once, with its date."""
    facts = [m.group().rstrip(".,") for m in _NUMBER.finditer(text)]
    facts += [m.group() for m in _MONTH_YEAR.finditer(text)]
    months = {m.group() for m in _MONTH_YEAR.finditer(text)}
    for match in _NAME.finditer(text):
        name = match.group().strip()
        words = name.split()
        if words[0] in {"The", "A", "An", "This", "That", "It", "In", "On"} and len(words) > 1:
            name, words = " ".join(words[1:]), words[1:]
        if name in months or name in {"The", "A", "An"}:
            continue
        if len(words) == 1 and not any(c.isupper() for c in name[1:]) and _sentence_start(text, match.start()):
            inside = re.search(rf"(?<![.!?:;]\s)(?<!^)\b{re.escape(name)}\b", source)
            if not inside:
                continue
        facts.append(name)
    unique = [f for f in dict.fromkeys(facts) if f]

    def within(fact: str, other: str) -> bool:  # "2024" within "March 2024", not "24" within it
        return fact != other and re.search(rf"(?<![\w£]){re.escape(fact)}(?!\w)", other) is not None

    return [f for f in unique if not any(within(f, other) for other in unique)]


def _fact_key(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("’", "'")).lower()


def fact_recall(briefings: list[str], rows: list[dict]) -> float | None:
    """Share of the reference briefings' facts (`stated_facts`) that the briefings state too, in
    the words of either (a name the item abbreviates counts in either form)."""
    found = total = 0
    for briefing, row in zip(briefings, rows):
        acronyms = acronyms_defined(row["text"])
        ours = _fact_key(briefing + "\n" + abbreviate(briefing, acronyms))
        for fact in stated_facts(row["briefing"], row["text"]):
            total += 1
            found += _fact_key(fact) in ours or _fact_key(abbreviate(fact, acronyms)) in ours
    return round(found / total, 4) if total else None


def gap_closed(ours: float, lead: float, oracle: float) -> float | None:
    """How far ours goes from the first-60-words lead to the sentence oracle: 0 at the lead, 1
    at the oracle."""
    return round((ours - lead) / (oracle - lead), 4) if oracle != lead else None


def rouge_scores(predictions: list[str], references: list[str]) -> dict:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for pred, ref in zip(predictions, references):
        result = scorer.score(ref, pred)
        for key in totals:
            totals[key] += result[key].fmeasure
    n = max(1, len(predictions))
    return {key: round(value / n, 4) for key, value in totals.items()}


def briefing_metrics(briefings: list[str], rows: list[dict]) -> dict:
    references = [r["briefing"] for r in rows]
    lengths = [len(b.split()) for b in briefings]
    unsupported = [unsupported_facts(b, r["text"]) for b, r in zip(briefings, rows)]
    return {
        **rouge_scores(briefings, references),
        "fact_recall": fact_recall(briefings, rows),
        "mean_words": round(float(np.mean(lengths)), 1) if lengths else 0.0,
        "max_words": max(lengths) if lengths else 0,
        "share_unsupported": round(sum(bool(u) for u in unsupported) / max(1, len(rows)), 4),
        "unsupported_examples": [u for u in unsupported if u][:5],
        "items": len(rows),
    }


def first_words_baseline(row: dict, n: int = 60) -> str:
    """The first 60 words after "Minutes:" in the item as published."""
    text = row.get("raw_text") or row["text"]
    if "Minutes:" in text:
        text = text.split("Minutes:", 1)[1]
    return " ".join(text.split()[:n])


def sentence_oracle(row: dict, n_words: int = 60) -> str:
    """Not a system: the whole sentences (compressed as our summariser compresses them) that,
    chosen with the reference briefing in hand, raise ROUGE-L most within the word limit. It
    shows how far any extractive briefing could go on these references."""
    from pipeline.summarise import body_passages, compress, greedy_oracle

    acronyms = acronyms_defined(row["text"])
    passages = [compress(p, acronyms) for p in body_passages(row)]
    return " ".join(passages[i] for i in greedy_oracle(passages, row["briefing"], n_words, ("rougeL",)))


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
def read_gold(gold_path) -> list[dict]:
    """A gold file's rows; a file with none is one clear error, not an empty score."""
    from pipeline.config import DataError
    from pipeline.train import read_labelled

    rows = read_labelled([gold_path])
    if not rows:
        raise DataError(f"{gold_path}: no gold items in the file")
    return rows


def classify_gold(loaded, gold_rows: list[dict]) -> list[dict]:
    from pipeline.classify import classify_records

    return classify_records(loaded, gold_rows, max_tokens=loaded.card.get("max_tokens", 128))


def classifier_metrics(loaded, gold_rows: list[dict]) -> tuple[dict, list[dict]]:
    predictions = classify_gold(loaded, gold_rows)
    metrics = label_metrics([r.get("labels") or [] for r in gold_rows], [p["labels"] for p in predictions])
    return metrics, predictions


def cross_validate(settings, gold_path, training_rows: list[dict], validation_rows: list[dict],
                   folds: int, args, on_fold=None, on_step=None, base=None) -> dict:
    """What an analyst's own labels buy: for each of `folds` folds of the gold items, a
    classifier trained on the project's data plus the other folds' gold items (as `minutes
    label import` would add them) labels the held-out fold. Every gold item is then predicted
    by a model that never saw it; beside it, the default (promoted) model and TF-IDF trained
    the same way, on the same items. Thresholds come from the project's validation rows, as in
    `minutes train`."""
    import tempfile

    from pipeline import modelfolder
    from pipeline.train import prepare, train_classifier

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
            loaded = modelfolder.load(folder, settings.device, False, settings.threads)
            for i, p in zip(held, classify_gold(loaded, [gold[i] for i in held])):
                cv_labels[i] = p["labels"]
            for i, labels in zip(held, tfidf_baseline(prepared_training + [prepare(r) for r in extra],
                                                     [gold[i] for i in held])):
                tfidf_labels[i] = labels
    default = modelfolder.load(modelfolder.resolve(settings.models_dir, "classifier", settings.model),
                               settings.device, False, settings.threads)
    truth = [r.get("labels") or [] for r in gold]
    return {
        "gold": str(gold_path), "folds": folds, "epochs": args.epochs,
        "default_model_version": default.version,
        "default_model": system_metrics(truth, [p["labels"] for p in classify_gold(default, gold)]),
        "cross_validated": system_metrics(truth, cv_labels),
        "tfidf_cross_validated": system_metrics(truth, tfidf_labels),
        "keywords": system_metrics(truth, keyword_baseline(gold)),
    }


def evaluate_gold(settings, gold_path, training_rows: list[dict]) -> dict:
    """The classifier and summariser on a gold file, beside the baselines."""
    from pipeline import modelfolder
    from pipeline.summarise import summarise_records
    from pipeline.train import prepare

    gold = [prepare(r) for r in read_gold(gold_path)]
    training = [prepare(r) for r in training_rows]
    loaded = modelfolder.load(modelfolder.resolve(settings.models_dir, "classifier", settings.model),
                              settings.device, settings.quantize, settings.threads)
    predictions = classify_gold(loaded, gold)
    truth = [r.get("labels") or [] for r in gold]
    report = {
        "gold": str(gold_path), "model_version": loaded.version,
        "model": system_metrics(truth, [p["labels"] for p in predictions]),
        "keywords": system_metrics(truth, keyword_baseline(gold)),
        "tfidf_logreg": system_metrics(truth, tfidf_baseline(training, gold)),
        "evidence_score": evidence_score(gold, predictions),
    }
    flagged = [r for r in gold if r.get("briefing") and r.get("labels")]
    folder = modelfolder.promoted_folder(settings.models_dir, "summariser") if settings.summariser_model is None else settings.summariser_model
    if flagged and folder is not None:
        summariser = modelfolder.load(folder, settings.device, settings.quantize, settings.threads)
        by_id = {p["id"]: p for p in predictions}
        # Briefings use the model's own evidence, as in production.
        records = [{**r, "evidence": by_id[r["id"]]["evidence"]} for r in flagged]
        ours = [b["briefing"] for b in summarise_records(summariser, records, max_words=settings.briefing_max_words)]
        report["summariser_version"] = summariser.version
        report["briefings"] = {
            "model": briefing_metrics(ours, flagged),
            "first_60_words": briefing_metrics([first_words_baseline(r) for r in flagged], flagged),
            "lexrank": briefing_metrics([lexrank_baseline(r) for r in flagged], flagged),
            "sentence_oracle": briefing_metrics([sentence_oracle(r) for r in flagged], flagged),
        }
        b = report["briefings"]
        report["briefings_gap_closed"] = gap_closed(b["model"]["rougeL"], b["first_60_words"]["rougeL"],
                                                    b["sentence_oracle"]["rougeL"])
    return report


def compare_for_promotion(settings, kind: str, version: str, gold_path) -> dict:
    """Candidate and current model on the same gold file; promote when the candidate is not
    lower by more than nothing (plus the configured margin)."""
    from pipeline import modelfolder
    from pipeline.summarise import summarise_records
    from pipeline.train import prepare

    gold = [prepare(r) for r in read_gold(gold_path)]
    candidate_folder = modelfolder.kind_dir(settings.models_dir, kind) / version
    modelfolder.read_card(candidate_folder)
    current_folder = modelfolder.promoted_folder(settings.models_dir, kind)

    def score(folder) -> float:
        loaded = modelfolder.load(folder, settings.device, False, settings.threads)
        if kind == "classifier":
            return classifier_metrics(loaded, gold)[0]["macro_f1"]
        flagged = [r for r in gold if r.get("briefing") and r.get("labels")]
        briefs = summarise_records(loaded, flagged)
        return briefing_metrics([b["briefing"] for b in briefs], flagged)["rougeL"]

    metric = "macro-F1" if kind == "classifier" else "ROUGE-L"
    candidate = score(candidate_folder)
    if current_folder is None:
        return {"promote": True, "metric": metric, "candidate": candidate, "current": None,
                "current_version": None, "current_text": "none promoted"}
    current = score(current_folder)
    return {
        "promote": candidate >= current + settings.promote_margin, "metric": metric,
        "candidate": candidate, "current": current, "current_version": current_folder.name,
        "current_text": f"{current:.4f} ({current_folder.name})",
    }
