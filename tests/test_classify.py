"""Classifier: train -> save -> load -> classify -> predict with a tiny model; one test with the
real packaged encoder; passages and evidence are verbatim spans of the item."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline import modelfolder, store
from pipeline.classify import aggregate, classify_records
from pipeline.cli import app
from pipeline.config import LABELS
from pipeline.gold import prepare, read_labelled
from pipeline.ingest.split import split_document
from pipeline.passages import item_passages, unwrap_lines
from pipeline.train import (
    TrainingArguments,
    choose_thresholds,
    passage_targets,
    passage_weights,
    swapped_context_pairs,
    train_classifier,
)

from .conftest import REPO, SAMPLES, composed_rows

runner = CliRunner()


def test_passages_are_verbatim_sentences_and_bullets():
    text = ("Workforce\n\nCllr. Khan asked about caseloads. The Director said they were 24 per worker, "
            "e.g. in the assessment teams.\n\n• Agency staff made up 31 per cent of posts.\n\nOK.")
    passages = item_passages(text, "Workforce")
    assert passages[0] == "Workforce"
    assert "Cllr. Khan asked about caseloads." in passages
    assert "The Director said they were 24 per worker, e.g. in the assessment teams." in passages
    assert "Agency staff made up 31 per cent of posts. OK." in passages
    assert all(p in text.replace("• ", "") or p.split(" OK.")[0] in text for p in passages)


def test_a_pdfs_wrapped_lines_are_read_as_whole_sentences_and_a_pages_lines_stay_apart():
    # Written for this test: a PDF's text layer, broken at the page's width mid-sentence.
    wrapped = ("The Head of Service introduced the evaluation of children's services by Care\n"
               "Inspectorate Wales (CIW), setting out the strengths and the areas for\n"
               "improvement the inspectors had identified in their letter. She said the\n"
               "inspection had found the service safe and that there was evidence of\n"
               "progress since the spring.\n"
               "Key points raised by members:\n"
               "- Members asked how the service would reduce its reliance on agency\n"
               "workers and retain experienced social workers in the coming year.\n"
               "- A\n"
               "member asked when the next inspection would take place.\n")
    passages = item_passages(wrapped)
    assert ("The Head of Service introduced the evaluation of children's services by Care Inspectorate Wales "
            "(CIW), setting out the strengths and the areas for improvement the inspectors had identified in "
            "their letter.") in passages
    assert ("She said the inspection had found the service safe and that there was evidence of progress "
            "since the spring.") in passages
    assert "Key points raised by members:" in passages
    assert ("- Members asked how the service would reduce its reliance on agency workers and retain "
            "experienced social workers in the coming year.") in passages
    assert "- A member asked when the next inspection would take place." in passages
    # A web page's lines (headings, fields, a table's rows) are never run together.
    page = ("Agenda item\n\nQuarter 3 Performance Report\n\nMeeting: 12/01/2024 - Cabinet (Item 5)\n"
            "Decision status: Approved\nMinutes:\nThe Cabinet considered the performance report\n"
            "Indicator | Target | Q3\nRe-referrals within 12 months | 22% | 24%\n"
            "Assessments within 45 days | 85% | 81%\nCaseloads had risen to 24 per worker.")
    assert unwrap_lines(page) == [line for line in page.split("\n") if line]


def test_passage_targets_follow_the_evidence():
    row = prepare({"id": "x", "text": "Agenda item\n\nStaffing\n\nMinutes:\n\nThe meeting opened. "
                   "Caseloads had risen to 27 per social worker.",
                   "labels": ["workforce_concern"],
                   "evidence": {"workforce_concern": ["Caseloads had risen to 27 per social worker."]}})
    targets = dict(passage_targets(row))
    assert targets["Caseloads had risen to 27 per social worker."] == [0.0, 0.0, 1.0]
    assert targets["The meeting opened."] == [0.0, 0.0, 0.0]
    assert "Staffing" not in targets  # titles are not trained on unless quoted as evidence


def test_unquoted_passages_of_a_labelled_item_are_unknown_for_that_label_only():
    row = prepare({"id": "x", "text": "Agenda item\n\nStaffing\n\nMinutes:\n\nThe meeting opened. "
                   "Caseloads had risen to 27 per social worker. Agency staff filled 30 posts.",
                   "labels": ["workforce_concern"],
                   "evidence": {"workforce_concern": ["Caseloads had risen to 27 per social worker."]}})
    pairs = passage_targets(row)
    weights = dict(zip([p for p, _ in pairs], passage_weights(row, [t for _, t in pairs])))
    # The quoted sentence is a positive and counts; the others are unknown for workforce (a
    # gold row quotes at most three sentences) but still negatives for the other two labels.
    assert weights["Caseloads had risen to 27 per social worker."] == [1.0, 1.0, 1.0]
    assert weights["Agency staff filled 30 posts."] == [1.0, 1.0, 0.0]
    assert weights["The meeting opened."] == [1.0, 1.0, 0.0]
    # As training runs them: weak negatives, at the card's weight.
    weak = passage_weights(row, [t for _, t in pairs], TrainingArguments().unquoted_weight)
    assert {tuple(w) for w in weak} == {(1.0, 1.0, 1.0), (1.0, 1.0, 0.25)}
    unlabelled = {**row, "labels": [], "evidence": {}}
    assert all(w == [1.0, 1.0, 1.0] for w in passage_weights(unlabelled, [t for _, t in passage_targets(unlabelled)]))


def test_whole_items_negatives_are_in_every_epoch_and_composed_ones_thinned():
    import torch

    from pipeline.train import epoch_batches, is_composed

    assert is_composed({"source": "data/labelled/compose.py"}) and not is_composed({"source": "data/labelled/written"})
    n = 400
    is_negative = np.ones(n, dtype=bool)
    is_negative[:20] = False
    thinned = np.zeros(n, dtype=bool)
    thinned[200:] = True  # composed passages
    args = TrainingArguments(batch_size=16, negative_share=0.3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        seen = {i for batch in epoch_batches([10] * n, is_negative, args, generator, thinned) for i in batch}
        assert set(range(200)) <= seen  # every positive and every whole item's negative
        assert 30 < len(seen & set(range(200, n))) < 100  # about 30% of the composed negatives


def test_evidence_is_read_again_with_another_labelled_items_context_for_its_own_label_only():
    from pipeline.passages import item_context

    def whole(id_, title, text, labels, evidence):
        return prepare({"id": id_, "title": title, "meeting": "Children's Scrutiny", "source": "written",
                        "text": f"{title}\n\n{text}", "labels": labels, "evidence": evidence})

    rows = [
        whole("a", "Children's Workforce Plan 2026", "The plan was noted. Social worker vacancies stood at 31.",
              ["workforce_concern"], {"workforce_concern": ["Social worker vacancies stood at 31."]}),
        whole("b", "Fostering Service Inspection", "Ofsted judged the fostering service good.",
              ["inspection_outcome"], {"inspection_outcome": ["Ofsted judged the fostering service good."]}),
        whole("c", "Highways Inspection Regime", "Inspectors checked 400 gullies.", [], {}),
    ]
    pairs = [(item_context(r), *p) for r in rows for p in passage_targets(r)]
    swapped, weights = swapped_context_pairs(rows, pairs, seed=13)
    # One more pair per evidence passage; the unlabelled highways item lends no context.
    assert [(p, t) for _, p, t in swapped] == [("Social worker vacancies stood at 31.", [0.0, 0.0, 1.0]),
                                               ("Ofsted judged the fostering service good.", [0.0, 1.0, 0.0])]
    assert [c for c, _, _ in swapped] == [item_context(rows[1]), item_context(rows[0])]
    assert weights == [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]  # only the label the passage is evidence of
    assert swapped_context_pairs(rows[:1], pairs[:2], seed=13) == ([], [])  # no other item to lend one


def test_context_dropout_reads_some_passages_alone(tiny_base, monkeypatch):
    from pipeline import train

    lengths_seen: list[int] = []
    real = train.upper_logits

    def recording(model, states, frozen):
        lengths_seen.extend(len(s) for s in states)
        return real(model, states, frozen)

    monkeypatch.setattr(train, "upper_logits", recording)
    texts = ["Caseloads had risen to 27 per social worker."] * 8
    contexts = ["Children's Scrutiny | Social work caseloads | To receive an update on caseloads"] * 8
    targets = np.array([[0, 0, 1]] * 8, dtype=np.float32)
    args = TrainingArguments(epochs=4, batch_size=8, context_dropout=0.5)
    train.fine_tune(tiny_base, texts, targets, args, dict(enumerate(LABELS)), contexts=contexts)
    # The pair is longer than the passage alone: both were read, about half and half.
    assert len(set(lengths_seen)) == 2
    short = min(lengths_seen)
    assert 8 <= sum(n == short for n in lengths_seen) <= 24


def test_thresholds_stay_near_half_unless_validation_clearly_says_otherwise():
    rng = np.random.default_rng(0)
    truth = np.zeros((100, 3), dtype=bool)
    truth[:30] = True
    scores = np.zeros((100, 3))
    # intervention: perfectly separated anywhere in (0.2, 0.8): a flat curve, so 0.5.
    scores[:, 0] = np.where(truth[:, 0], 0.8 + rng.uniform(0, 0.1, 100), 0.2 - rng.uniform(0, 0.1, 100))
    # inspection: twenty negatives score 0.85-0.9 and every positive 0.95: only a high threshold works.
    scores[:, 1] = np.where(truth[:, 1], 0.95, 0.1)
    scores[30:50, 1] = rng.uniform(0.85, 0.9, 20)
    # workforce: positives 0.3-0.4, negatives below 0.1: a low threshold is needed.
    scores[:, 2] = np.where(truth[:, 2], rng.uniform(0.3, 0.4, 100), rng.uniform(0.0, 0.1, 100))
    chosen = choose_thresholds(scores, truth)
    assert chosen["intervention_notice"] == 0.5
    assert 0.9 <= chosen["inspection_outcome"] <= 0.95
    assert chosen["workforce_concern"] <= 0.3



def test_a_perfect_validation_f1_does_not_pin_the_threshold_to_its_one_best_point():
    # 37 positives at 0.9 and one negative at 0.75: F1 is 1.0 only above 0.75 and 0.987 below.
    # With the plain standard error, 0 at a perfect F1, the rule took 0.775; one item is
    # within the noise of 37, so the threshold stays at 0.5.
    truth = np.zeros((120, 3), dtype=bool)
    truth[:37] = True
    scores = np.where(truth, 0.9, 0.1)
    scores[37, :] = 0.75
    assert set(choose_thresholds(scores, truth).values()) == {0.5}
    # Eight such negatives (F1 0.902) are more than the noise: the threshold goes above them.
    scores[37:45, 2] = 0.75
    assert choose_thresholds(scores, truth)["workforce_concern"] > 0.75

def test_aggregate_takes_the_best_passage_and_keeps_evidence_above_threshold():
    passages = ["Title", "A sentence about caseloads.", "Ofsted judged services good.", "Nothing."]
    scores = np.array([[0.1, 0.6, 0.2], [0.0, 0.1, 0.9], [0.2, 0.95, 0.1], [0.0, 0.0, 0.0]])
    result = aggregate(passages, scores, {label: 0.5 for label in LABELS})
    assert result["labels"] == ["inspection_outcome", "workforce_concern"]
    assert result["evidence"]["inspection_outcome"] == ["Ofsted judged services good."]
    assert result["evidence"]["workforce_concern"] == ["A sentence about caseloads."]
    assert result["scores"]["intervention_notice"] == pytest.approx(0.2)


def test_tiny_model_round_trip(tiny_models):
    folder = modelfolder.promoted_folder(tiny_models, "classifier")
    card = modelfolder.read_card(folder)
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    assert set(card["thresholds"]) == set(LABELS)
    assert card["data_hash"] and card["arguments"]["epochs"] == 2 and card["labels"] == list(LABELS)
    assert "README.md" in {p.name for p in folder.iterdir()}
    loaded = modelfolder.load(folder)
    records = [prepare(r) for r in composed_rows(6, offset=200)]
    predictions = classify_records(loaded, records)
    assert [p["id"] for p in predictions] == [r["id"] for r in records]
    for record, prediction in zip(records, predictions):
        assert set(prediction["scores"]) == set(LABELS)
        assert all(0.0 <= s <= 1.0 for s in prediction["scores"].values())
        assert set(prediction["evidence"]) == set(prediction["labels"])
        for sentences in prediction["evidence"].values():
            assert sentences and all(s in record["text"] for s in sentences)
    # Same input, same output: batching and padding do not change the scores.
    alone = classify_records(loaded, records[:1], batch_size=1)[0]
    assert alone["scores"] == pytest.approx(predictions[0]["scores"], abs=1e-4)


@pytest.mark.parametrize("quantize", [False, True])
def test_fast_forward_gives_the_models_own_scores(tiny_models, quantize):
    import torch

    from pipeline.inference import PooledBertForward, encode_batches, score_texts

    loaded = modelfolder.load(modelfolder.promoted_folder(tiny_models, "classifier"), quantize=quantize)
    texts = [p for r in composed_rows(8, offset=200) for p in item_passages(r["text"], r.get("title"))]
    assert PooledBertForward.applies_to(loaded.model)
    forward = PooledBertForward(loaded.model)
    with torch.inference_mode():
        for _, batch in encode_batches(loaded.tokenizer, texts, 16, 128):
            assert batch["attention_mask"].min() == 0  # padding is present and masked
            # int8: the fused and the separate products round and accumulate in another order
            # (seen 1e-4 apart on an AVX2 machine without VNNI), far inside int8's own error.
            assert torch.allclose(forward(**batch), loaded.model(**batch).logits,
                                  atol=1e-3 if quantize else 1e-5)
    # One batch per core, or one thread over all: the same scores, in the texts' order.
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        shared = score_texts(loaded, texts, batch_size=8)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        single = score_texts(loaded, texts, batch_size=64)
    finally:
        torch.set_num_threads(threads)
    # int8 scales its activations per batch, so which passages share a batch moves its scores a little.
    tolerance = 1e-3 if quantize else 1e-5
    np.testing.assert_allclose(shared, single, atol=tolerance)
    one_by_one = np.vstack([score_texts(loaded, [t], batch_size=1) for t in texts[:5]])
    np.testing.assert_allclose(shared[:5], one_by_one, atol=tolerance)


def test_int8_is_close_to_fp32_and_close_calls_are_decided_in_fp32(tiny_models, tmp_path):
    import shutil

    import torch

    from pipeline.inference import ACTIVATION_RANGES

    folder = modelfolder.promoted_folder(tiny_models, "classifier")
    fp32 = modelfolder.load(folder)
    int8 = modelfolder.load(folder, quantize=True)
    assert int8.reference is not None and fp32.reference is None
    summariser = modelfolder.load(modelfolder.promoted_folder(tiny_models, "summariser"), quantize=True)
    assert summariser.reference is None  # no thresholds, no close calls: no fp32 copy kept
    records = [prepare(r) for r in composed_rows(12, offset=200)]
    exact = classify_records(fp32, records)
    screened = classify_records(int8, records, recheck_logits=0.0)  # int8 alone
    rechecked = classify_records(int8, records, recheck_logits=1e9)  # every item scored again in fp32
    differences = [abs(a["scores"][l] - b["scores"][l]) for a, b in zip(exact, screened) for l in LABELS]
    assert max(differences) < 0.05  # smoothing keeps int8 near fp32
    int8_layers = [m for m in int8.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(int8_layers) == 2 * (3 + 1 + 1) + 1 + 2  # per layer q, k, v, attention out,
    # feed-forward in; feed-forward out in the upper half; and the fused q/k/v of each layer
    for a, b in zip(exact, rechecked):
        assert b["labels"] == a["labels"] and b["evidence"] == a["evidence"]
        assert b["scores"] == pytest.approx(a["scores"], abs=1e-5)
    # int8 is calibrated on ranges saved beside the weights; a folder without them is refused.
    bare = tmp_path / folder.name
    shutil.copytree(folder, bare)
    (bare / ACTIVATION_RANGES).unlink()
    with pytest.raises(modelfolder.ModelError, match=ACTIVATION_RANGES):
        modelfolder.load(bare, quantize=True)


def test_int8_recheck_scores_again_only_the_close_calls(tiny_models):
    from pipeline.classify import recheck_near_thresholds
    from pipeline.inference import score_texts

    folder = modelfolder.promoted_folder(tiny_models, "classifier")
    int8 = modelfolder.load(folder, quantize=True)
    passages = [p for r in composed_rows(2, offset=200) for p in item_passages(r["text"], r.get("title"))][:5]
    probability = lambda logit: 1 / (1 + np.exp(-logit))  # noqa: E731
    # First label only; the others are far below their thresholds (0.5, logit 0).
    logits = np.array([[0.5, -0.2, -5.0, 3.0, 0.3]]).T
    scores = np.hstack([probability(logits), np.full((5, 2), probability(-9.0))]).astype(np.float32)
    spans = [(0, 3, False), None, (3, 2, False)]  # item A: passages 0-2; a procedural item; item B: 3-4
    given = scores.copy()
    rescored = recheck_near_thresholds(int8, passages, scores, spans, {l: 0.5 for l in LABELS}, 1.0, 8, 128, "cpu")
    # Item A's best (0.5) is a close call: its passages within the margin (0 and 1) get fp32
    # scores; passage 2 is clearly below. Item B's best (3.0) is clearly above: nothing changes.
    assert rescored == 2
    fp32 = score_texts(modelfolder.load(folder), passages[:2])
    np.testing.assert_allclose(scores[:2], fp32, atol=1e-5)
    np.testing.assert_array_equal(scores[2:], given[2:])


def test_training_is_reproducible(tiny_base, tmp_path):
    rows = composed_rows(40)
    args = TrainingArguments(epochs=1, batch_size=16, learning_rate=3e-4, validation_share=0.2)
    a = modelfolder.read_card(train_classifier(rows, tmp_path / "a", tiny_base, args))
    b = modelfolder.read_card(train_classifier(rows, tmp_path / "b", tiny_base, args))
    assert a["data_hash"] == b["data_hash"]
    assert a["metrics"] == b["metrics"] and a["thresholds"] == b["thresholds"]


def test_validation_items_use_wording_held_out_of_training(tiny_base, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("compose", REPO / "data" / "labelled" / "compose.py")
    compose = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compose)
    train_pool, held_out_pool = compose.pools(held_out=False), compose.pools(held_out=True)
    for label in LABELS:
        assert train_pool["label"][label] and held_out_pool["label"][label]
        assert not set(train_pool["label"][label]) & set(held_out_pool["label"][label])
    assert not set(train_pool["near_miss"]) & set(held_out_pool["near_miss"])
    # The shipped files are what compose.py writes from those pools.
    held_out_rows = read_labelled([REPO / "data" / "labelled" / "heldout"])
    assert {r["id"].split("-")[0] for r in held_out_rows} == {"heldout"}
    training_text = "\n".join(r["text"] for r in composed_rows(2000))
    shared = [template[:40].lower() for _, bank in train_pool["mixed"] for template in bank]
    quoted = [e for r in held_out_rows for sentences in r["evidence"].values() for e in sentences]
    assert len(quoted) > 100
    # Only the few two-label sentences are shared; every other quoted sentence is new wording.
    assert all(any(t in e.lower() for t in shared) for e in quoted if e in training_text)
    # Training takes thresholds from the validation items given, and trains on all the rest.
    args = TrainingArguments(epochs=1, batch_size=16, learning_rate=3e-4)
    card = modelfolder.read_card(train_classifier(composed_rows(30), tmp_path, tiny_base, args,
                                                  validation_rows=held_out_rows[:12]))
    assert card["training_rows"] == 30 and card["validation_rows"] == 12
    assert "held out" in card["validation"] and card["metrics"]["validation_items"] == 12


def test_classify_command_labels_stored_items_once(model_env):
    assert runner.invoke(app, ["ingest", str(SAMPLES)], env=model_env).exit_code == 0
    result = runner.invoke(app, ["classify"], env=model_env)
    assert result.exit_code == 0, result.output
    db = store.connect(model_env["MINUTES_DB"])
    version = modelfolder.read_card(modelfolder.promoted_folder(model_env["MINUTES_MODELS_DIR"], "classifier"))["version"]
    assert store.count_predictions(db, version) == store.count_items(db) == 28
    procedural = [i for i in store.items(db) if i["is_procedural"]]
    assert procedural and all(store.latest_predictions(db, [i["id"]])[i["id"]]["labels"] == [] for i in procedural)
    again = runner.invoke(app, ["classify"], env=model_env)
    assert "classified 0 items" in again.stderr
    assert store.count_predictions(db, version) == 28
    listing = json.loads(runner.invoke(app, ["items", "--json"], env=model_env).stdout)
    assert all(isinstance(row["labels"], list) for row in listing)


def test_predict_command_skips_malformed_lines(model_env, tmp_path):
    source = tmp_path / "in.jsonl"
    good = {"id": "a", "title": "Staffing", "text": "Caseloads had risen to 27 per worker.", "extra": 1}
    source.write_text(json.dumps(good) + "\n{not json\n" + json.dumps({"id": "b"}) + "\n"
                      + json.dumps({"id": "c", "text": "The meeting closed at 8pm."}) + "\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["predict", str(source), "-o", str(out)], env=model_env)
    assert result.exit_code == 1
    assert "in.jsonl:2: skipped" in result.stderr and "in.jsonl:3: skipped" in result.stderr
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "c"]
    for r in rows:
        assert set(r) == {"id", "labels", "scores", "evidence", "briefing"}
        assert (r["briefing"] is None) == (not r["labels"])


def test_evaluate_reports_model_and_baselines(model_env, corpus):
    result = runner.invoke(app, ["evaluate", "--gold", str(corpus / "dev.gold.jsonl"), "--json"],
                           env=model_env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for system in ("model", "keywords", "tfidf_logreg"):
        assert set(report[system]["per_label"]) == set(LABELS)
        assert report[system]["items"] == 20
    assert report["keywords"]["macro_f1"] == pytest.approx(0.9103, abs=1e-3)  # MODELS.md's figure
    assert report["model"]["per_label"]["inspection_outcome"]["support"] == 8
    assert set(report["briefings"]) == {"model", "first_60_words", "lexrank", "sentence_oracle", "rules_oracle"}
    assert report["briefings"]["first_60_words"]["rougeL"] == pytest.approx(0.26, abs=0.03)
    # The oracle chooses with the references in hand: no system of whole sentences can beat it.
    oracle = report["briefings"]["sentence_oracle"]
    assert oracle["rougeL"] > max(report["briefings"][s]["rougeL"] for s in ("model", "first_60_words", "lexrank"))
    assert oracle["max_words"] <= 60 and oracle["share_unsupported"] == 0
    # The rules oracle chooses with the reference in hand among what our selection may take: ours,
    # choosing by score from the same sentences, does not beat it.
    rules = report["briefings"]["rules_oracle"]
    assert rules["rougeL"] >= report["briefings"]["model"]["rougeL"]
    assert rules["max_words"] <= 60 and rules["share_unsupported"] == 0
    assert report["rules_oracle_gap_closed"] >= report["briefings_gap_closed"]
    # The gains are paired on the items; each interval holds the plain difference of the figures.
    gains = report["gains_95ci"]
    assert gains["against"] == "model" and set(gains) == {"against", "keywords", "tfidf_logreg"}
    for system in ("keywords", "tfidf_logreg"):
        low, high = gains[system]
        assert low <= report["model"]["macro_f1"] - report[system]["macro_f1"] <= high
    briefings = report["briefings"]
    low, high = report["briefings_gains_95ci"]["sentence_oracle"]
    assert low - 1e-3 <= briefings["model"]["rougeL"] - briefings["sentence_oracle"]["rougeL"] <= high + 1e-3
    table = runner.invoke(app, ["evaluate", "--gold", str(corpus / "dev.gold.jsonl")],
                          env={**model_env, "COLUMNS": "400"}).stdout
    assert "model minus this, macro F1 [95% paired" in table and f"[{low:+.3f}, {high:+.3f}]" in table


@pytest.mark.real_model
def test_real_packaged_encoder_fine_tunes_and_predicts(tmp_path):
    """The real all-MiniLM-L6-v2 from its package, offline: a short fine-tune must already
    separate a clear workforce sentence from procedural text."""
    base = modelfolder.packaged_base_model()
    assert (base / "model.safetensors").is_file()
    rows = composed_rows(120)
    folder = train_classifier(rows, tmp_path, None, TrainingArguments(epochs=1, validation_share=0.1))
    assert modelfolder.read_card(folder)["base_model"].startswith("sentence-transformers/all-MiniLM-L6-v2")
    loaded = modelfolder.load(folder)
    records = [
        {"id": "w", "title": "Workforce", "text": "Workforce\n\nThe children's service relied on agency social "
         "workers for 35 per cent of posts and caseloads had risen to 28."},
        {"id": "p", "title": "Apologies", "text": "Apologies\n\nThe minutes of the last meeting "
         "were signed as a correct record."},
    ]
    workforce, plain = classify_records(loaded, records)
    assert workforce["scores"]["workforce_concern"] > 0.5 > plain["scores"]["workforce_concern"]


def test_item_context_is_committee_title_and_purpose():
    from pipeline.passages import item_context

    row = {"meeting": "Adults and Health Scrutiny Panel", "title": "Care home quality",
           "purpose": "To inform members of\nCQC ratings of care homes for older people."}
    assert item_context(row) == ("Adults and Health Scrutiny Panel | Care home quality | "
                                 "To inform members of CQC ratings of care homes for older people.")
    assert item_context({"title": "Staffing"}) == "Staffing"
    assert item_context({}) == ""
    assert len(item_context({"title": "word " * 100}).split()) == 40
    # prepare() finds the purpose line of a ModernGov page and names the committee.
    prepared = prepare({"id": "x", "meeting": "Cabinet", "text": "Agenda item\n\nCare homes\n\n"
                        "To note the CQC ratings.\n\nMinutes:\n\nTen inspection reports were published."})
    assert item_context(prepared) == "Cabinet | Care homes | To note the CQC ratings."


class RecordingTokenizer:
    """The model's tokenizer, keeping every (first segment, second segment) it was asked to encode."""

    def __init__(self, tokenizer):
        self.inner, self.calls = tokenizer, []

    def __call__(self, first, second=None, **kwargs):
        self.calls.append((first, second))
        return self.inner(first, second, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_tiny_model_trains_and_classifies_with_context(tiny_models):
    folder = modelfolder.promoted_folder(tiny_models, "classifier")
    card = modelfolder.read_card(folder)
    assert card["context"] and card["arguments"]["context"] is True
    loaded = modelfolder.load(folder)
    loaded.tokenizer = RecordingTokenizer(loaded.tokenizer)
    sentence = "Ten inspection reports were published this quarter and most were rated good."
    adult = {"id": "adult", "committee": "Adults and Health Scrutiny Panel",
             "title": "Adult social care: care homes for older people",
             "purpose": "To receive the quarterly report on CQC inspections of care homes.",
             "text": f"Adult social care: care homes for older people\n\n{sentence}"}
    children = {**adult, "id": "children", "committee": "Corporate Parenting Panel",
                "title": "Children's homes", "purpose": "To receive the Ofsted reports on the council's children's homes.",
                "text": f"Children's homes\n\n{sentence}"}
    results = classify_records(loaded, [adult, children])
    (contexts, passages), = loaded.tokenizer.calls
    # The adult item's inspection sentence reaches the model paired with the adult item's context.
    pair = passages.index(sentence)
    assert contexts[pair].startswith("Adults and Health Scrutiny Panel | Adult social care")
    encoded = loaded.tokenizer.inner(contexts[pair], passages[pair])
    assert set(encoded["token_type_ids"]) == {0, 1}
    # The same sentence is scored differently when its item is about something else.
    assert results[0]["scores"] != results[1]["scores"]
    # A model trained without context reads passages alone, as before.
    alone = modelfolder.LoadedModel(folder, {**card, "context": None}, RecordingTokenizer(loaded.tokenizer.inner),
                                    loaded.model)
    classify_records(alone, [adult])
    assert alone.tokenizer.calls[0][1] is None


def test_cross_validation_trains_on_other_folds_and_scores_each_item_once(model_env, tiny_base, corpus, tmp_path):
    """`evaluate --cross-validate K` with a tiny model: every gold item is predicted by the fold
    model that did not train on it, beside the default model on the same items."""
    labelled = tmp_path / "labelled"
    labelled.mkdir()
    (labelled / "few.jsonl").write_text("\n".join(json.dumps(r) for r in composed_rows(24)) + "\n")
    gold = tmp_path / "gold.jsonl"
    gold.write_text("\n".join((corpus / "dev.gold.jsonl").read_text(encoding="utf-8").splitlines()[:9]) + "\n")
    env = {**model_env, "MINUTES_LABELLED_DIR": str(labelled)}
    result = runner.invoke(app, ["evaluate", "--gold", str(gold), "--cross-validate", "3", "--epochs", "1",
                                 "--base", str(tiny_base), "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["folds"] == 3 and report["epochs"] == 1
    assert result.stderr.count("fold ") == 3 and "+ 6 gold items, scoring 3" in result.stderr
    for system in ("default_model", "cross_validated", "tfidf_cross_validated", "keywords"):
        assert report[system]["items"] == 9
        low, high = report[system]["macro_f1_95ci"]
        assert 0.0 <= low <= high <= 1.0
    # What the labels buy, paired on the same nine items: the interval holds the plain difference.
    low, high = report["gains_95ci"]["default_model"]
    assert report["gains_95ci"]["against"] == "cross_validated"
    assert low <= report["cross_validated"]["macro_f1"] - report["default_model"]["macro_f1"] <= high
    bad = runner.invoke(app, ["evaluate", "--gold", str(gold), "--cross-validate", "1"], env=env)
    assert bad.exit_code == 2 and "2 to 9 folds" in bad.stderr


def test_a_labelled_rows_own_title_names_the_item():
    """A scraped item whose text opens with another item's heading (here the previous item's
    "Minutes of the previous meeting") keeps the title it was labelled with, and is not taken
    for a procedural item and left unscored."""
    row = {"id": "x", "meeting": "Children's Scrutiny Panel",
           "title": "Update from the Children's Services Commissioner",
           "text": "Minutes of the Previous Meeting held on 3 March\n\nThe minutes were agreed.\n\n"
                   "Update from the Children's Services Commissioner\n\nThe Commissioner appointed by "
                   "the Secretary of State presented her second report to the Panel."}
    prepared = prepare(row)
    assert prepared["title"] == row["title"] and not prepared["is_procedural"]
    assert item_passages(prepared["text"], prepared["title"])[0] == row["title"]
    # A row without a title still takes the heading found in its text.
    assert prepare({"id": "y", "text": "Agenda item\n\nCare homes\n\nTen reports were published "
                    "this quarter on care homes."})["title"] == "Care homes"
    # And one titled as procedural is procedural.
    assert prepare({**row, "title": "Apologies for Absence"})["is_procedural"]
    # A whole meeting's page copied for one item: what precedes its "Minutes" marker belongs to
    # the apologies, not to the item, and is not read as the item's purpose line.
    page = {"id": "z", "title": "Fostering Service Inspection - Action Plan",
            "text": "Apologies for Absence\n\nApologies were received from Councillor Reed.\n\n"
                    "Declarations of Interest\n\nNone.\n\nMinutes\n\nThe minutes were agreed.\n\n"
                    "Fostering Service Inspection - Action Plan\n\nThe action plan was presented."}
    assert split_document(page["text"])["items"][0]["purpose"]  # the splitter did find one
    assert prepare(page)["purpose"] is None
    assert prepare({**page, "title": None})["is_procedural"]


def test_frozen_lower_layers_are_computed_once_and_give_the_whole_models_logits(tiny_base, tmp_path):
    """Training with the lowest layers frozen reuses their cached outputs: the upper layers over
    those cached states give exactly the whole model's logits, the frozen layers do not move,
    and the layers above them do."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.inference import encode
    from pipeline.train import fine_tune, lower_states, upper_logits

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_base, num_labels=3,
                                                               ignore_mismatched_sizes=True).eval()
    texts = ["Caseloads rose to 28 per social worker.", "The report was noted.",
             "Ofsted judged the service inadequate in March and the council was issued a notice."]
    contexts = ["Scrutiny | Workforce", "Cabinet | Budget", "Cabinet | Ofsted inspection"]
    encoded = encode(tokenizer, texts, 64, contexts)
    states = lower_states(model, tokenizer, encoded, 1)
    assert [len(s) for s in states] == [len(ids) for ids in encoded["input_ids"]]
    with torch.no_grad():
        whole = model(**tokenizer.pad([{k: encoded[k][i] for k in encoded.keys()} for i in range(3)],
                                      return_tensors="pt")).logits
        upper = upper_logits(model, states, 1)
    assert torch.allclose(whole, upper, atol=1e-5)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = composed_rows(40)
    pairs = [(t, tg) for r in rows for t, tg in passage_targets(r)]
    trained, _ = fine_tune(tiny_base, [p[0] for p in pairs], np.array([p[1] for p in pairs], dtype=np.float32),
                           TrainingArguments(epochs=1, frozen_layers=1, learning_rate=3e-4),
                           {i: label for i, label in enumerate(LABELS)})
    after = dict(trained.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before
               if n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")))
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("bert.encoder.layer.1."))


def test_page_fields_are_not_scored_and_so_never_evidence(tiny_models, monkeypatch):
    """"Notice of proposed decision first published: 14/02/2024" is the page, not the minutes:
    a "notice" that is a publication date must not flag an improvement notice. A field with a
    sentence's worth after its name is read like any passage."""
    from pipeline import classify
    from pipeline.passages import is_page_field

    assert is_page_field("Notice of proposed decision first published: 14/02/2024")
    assert is_page_field("Department: Children's Services")
    assert not is_page_field("The DfE issued an improvement notice on 6 May 2020.")
    assert not is_page_field("Reason for urgency: the Department for Education's improvement notice requires "
                             "the council to appoint a commissioner before the next meeting of Cabinet.")
    scored: list[str] = []
    real = classify.score_texts

    def recording(loaded, texts, *args, **kwargs):
        scored.extend(texts)
        return real(loaded, texts, *args, **kwargs)

    monkeypatch.setattr(classify, "score_texts", recording)
    loaded = modelfolder.load(modelfolder.promoted_folder(tiny_models, "classifier"))
    loaded.card["thresholds"] = {label: 0.0 for label in LABELS}  # every scored passage is evidence
    record = {"id": "x", "title": "Improvement Plan",
              "text": "Improvement Plan\nNotice of proposed decision first published: 14/02/2024\n"
                      "Department: Children's Services\nThe Cabinet approved the improvement plan for "
                      "children's services."}
    [prediction] = classify_records(loaded, [record])
    assert scored == ["Improvement Plan", "The Cabinet approved the improvement plan for children's services."]
    assert all(not is_page_field(s) for sentences in prediction["evidence"].values() for s in sentences)


def test_an_item_that_names_no_inspection_carries_no_inspection_outcome(tiny_models, monkeypatch):
    """The labelling guide defines an inspection outcome as the result of a named external
    inspection or visit, and all three labels as about children's services: however high a
    passage scores, an item naming no inspection is not flagged for one, an item naming no
    children's service for none, its score is 0 and no sentence is quoted; one naming Ofsted, a
    visit or a written statement of action keeps the model's decision. The rule travels on the
    model card."""
    from pipeline import classify
    from pipeline.classify import NAMED_IN_ITEM, unnamed_labels

    budget = {"id": "budget", "title": "Budget Monitoring Quarter 2",
              "text": "The overspend reflects more children in care and higher placement costs."}
    visit = {"id": "visit", "title": "Children's Services Update",
             "text": "The focused visit letter praised the front door. The overall judgement was good."}
    assert unnamed_labels(budget, NAMED_IN_ITEM) == {"inspection_outcome"}
    assert unnamed_labels(visit, NAMED_IN_ITEM) == set()
    assert unnamed_labels({"title": "Ofsted ILACS", "text": "Judged good."}, NAMED_IN_ITEM) == set()
    assert unnamed_labels({"text": "The SEND written statement of action was agreed."}, NAMED_IN_ITEM) == set()
    assert unnamed_labels({"text": "The Care Inspectorate Wales letter on fostering was noted."}, NAMED_IN_ITEM) == set()
    assert unnamed_labels(budget, {}) == set()
    # An adult care item names no children's service: it carries none of the three labels,
    # whatever its sentences say; the committee's name counts as naming one.
    home_care = {"id": "home-care", "title": "Home Care Review",
                 "text": "Providers reported difficulty with the recruitment and retention of care workers."}
    assert unnamed_labels(home_care, NAMED_IN_ITEM) == set(LABELS)
    assert unnamed_labels({**home_care, "committee": "Children and Young People Scrutiny"},
                          NAMED_IN_ITEM) == {"inspection_outcome"}
    assert unnamed_labels({"title": "Improvement Notice", "text": "The report was noted."},
                          NAMED_IN_ITEM) == {"inspection_outcome"}
    # A card written before the children's rule holds one pattern a label, and still reads.
    assert unnamed_labels(home_care, {"inspection_outcome": NAMED_IN_ITEM["inspection_outcome"][1]}) == {
        "inspection_outcome"}

    monkeypatch.setattr(classify, "score_texts",
                        lambda loaded, texts, *args, **kwargs: np.full((len(texts), len(LABELS)), 0.9))
    loaded = modelfolder.load(modelfolder.promoted_folder(tiny_models, "classifier"))
    assert loaded.card["named_in_item"] == NAMED_IN_ITEM  # written at training
    loaded.card["thresholds"] = {label: 0.5 for label in LABELS}  # every passage scores 0.9
    loaded.card.pop("tfidf")  # the passages alone decide (the blend has its own test)
    by_id = {p["id"]: p for p in classify_records(loaded, [budget, visit])}
    assert "inspection_outcome" not in by_id["budget"]["labels"]
    assert by_id["budget"]["scores"]["inspection_outcome"] == 0.0
    assert "inspection_outcome" not in by_id["budget"]["evidence"]
    assert set(by_id["budget"]["labels"]) == {"intervention_notice", "workforce_concern"}
    assert set(by_id["visit"]["labels"]) == set(LABELS)
    [adult] = classify_records(loaded, [home_care])
    assert adult["labels"] == [] and adult["evidence"] == {} and set(adult["scores"].values()) == {0.0}
    # A model folder trained before the rule keeps its own figures: its card applies none.
    loaded.card.pop("named_in_item")
    assert "inspection_outcome" in classify_records(loaded, [budget])[0]["labels"]


def test_tfidf_reader_is_the_baseline_and_loads_from_safetensors(tmp_path):
    """The whole-item reader computes what scikit-learn's TfidfVectorizer and LogisticRegression
    compute, and travels as safetensors and JSON: nothing in a model folder is unpickled."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from pipeline import tfidf

    rows = [prepare(r) for r in composed_rows(80)]
    unseen = [r["text"] for r in (prepare(r) for r in composed_rows(10, offset=200))]
    words = tfidf.fit(rows)
    vectoriser = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x = vectoriser.fit_transform([r["text"] for r in rows])
    assert abs(tfidf.features(words, unseen) - vectoriser.transform(unseen)).max() < 1e-12
    j = LABELS.index("workforce_concern")
    y = np.array(["workforce_concern" in r["labels"] for r in rows])
    assert 0 < y.sum() < len(y)
    regression = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=13).fit(x, y)
    np.testing.assert_allclose(tfidf.probabilities(words, unseen)[:, j],
                               regression.predict_proba(vectoriser.transform(unseen))[:, 1], atol=1e-9)
    assert [("workforce_concern" in p) for p in tfidf.predict_labels(words, unseen)] == \
        list(regression.predict(vectoriser.transform(unseen)))
    tfidf.save(words, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([tfidf.WEIGHTS, tfidf.VOCABULARY])
    np.testing.assert_array_equal(tfidf.probabilities(tfidf.load(tmp_path), unseen),
                                  tfidf.probabilities(words, unseen))
    # A label no training item carries is never predicted.
    none = tfidf.fit([{**r, "labels": [l for l in r["labels"] if l != "workforce_concern"]} for r in rows])
    assert not any("workforce_concern" in p for p in tfidf.predict_labels(none, unseen))


def test_an_items_words_blend_with_its_best_passage(tiny_models, tmp_path, monkeypatch):
    """With a card's "tfidf", an item's score mixes its best passage's log-odds with the TF-IDF
    reader's for its whole text; a flag whose passages all sit below the threshold quotes the
    item's best body sentence (not its title); a label the item does not name stays 0; a card
    without the key scores the best passage alone."""
    import shutil

    from pipeline import classify, tfidf

    folder = modelfolder.promoted_folder(tiny_models, "classifier")
    loaded = modelfolder.load(folder)
    share = loaded.card["tfidf"]["share"]
    assert share == TrainingArguments().tfidf_share and loaded.words is not None  # written at training
    assert (folder / tfidf.WEIGHTS).is_file() and (folder / tfidf.VOCABULARY).is_file()
    record = {"id": "budget", "title": "Children's Services Budget Update",
              "text": "Children's Services Budget Update\nThe overspend was reported. "
                      "Posts in the assessment teams were hard to fill."}
    passage_scores = {"Children's Services Budget Update": 0.45, "The overspend was reported.": 0.30,
                      "Posts in the assessment teams were hard to fill.": 0.40}
    monkeypatch.setattr(classify, "score_texts", lambda loaded, texts, *a, **k: np.array(
        [[passage_scores[t]] * len(LABELS) for t in texts]))
    words = {"intervention_notice": 0.1, "inspection_outcome": 0.99, "workforce_concern": 0.9}
    monkeypatch.setattr(tfidf, "probabilities", lambda reader, texts: np.array(
        [[words[l] for l in LABELS]] * len(texts)))
    loaded.card["thresholds"] = {label: 0.5 for label in LABELS}
    [prediction] = classify_records(loaded, [record])
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    expected = 1 / (1 + np.exp(-((1 - share) * logit(0.45) + share * logit(0.9))))
    assert prediction["scores"]["workforce_concern"] == pytest.approx(expected, abs=1e-6)
    assert prediction["labels"] == ["workforce_concern"]
    assert prediction["evidence"]["workforce_concern"] == ["Posts in the assessment teams were hard to fill."]
    assert prediction["scores"]["inspection_outcome"] == 0.0  # names no inspection
    assert prediction["scores"]["intervention_notice"] < 0.45
    loaded.card.pop("tfidf")
    [alone] = classify_records(loaded, [record])
    assert alone["labels"] == [] and alone["scores"]["workforce_concern"] == pytest.approx(0.45)
    # A card that blends a reader its folder lacks is a damaged folder.
    damaged = tmp_path / folder.name
    shutil.copytree(folder, damaged)
    (damaged / tfidf.WEIGHTS).unlink()
    with pytest.raises(modelfolder.ModelError, match=tfidf.WEIGHTS):
        modelfolder.load(damaged)


def test_int8_recheck_follows_where_a_blended_items_decision_turns(tiny_models):
    """Blended with its words, an item's decision turns where its best passage reaches
    `decision_limits`, not the threshold: the close calls are the passages near that point."""
    from pipeline.classify import blend, decision_limits, recheck_near_thresholds

    folder = modelfolder.promoted_folder(tiny_models, "classifier")
    int8 = modelfolder.load(folder, quantize=True)
    passages = [p for r in composed_rows(2, offset=200) for p in item_passages(r["text"], r.get("title"))][:2]
    probability = lambda logit: 1 / (1 + np.exp(-logit))  # noqa: E731
    scores = np.full((2, len(LABELS)), probability(-9.0), dtype=np.float32)
    scores[:, 0] = probability(np.array([3.0, -6.0]))  # the best passage is far above the threshold
    thresholds = {l: 0.5 for l in LABELS}
    words = np.array([probability(-3.0), 0.5, 0.5])  # the item's words pull it back to the line
    limits = decision_limits(words, thresholds, 0.5)
    assert limits[0] == pytest.approx(3.0)
    assert blend(np.array([probability(3.0)] * 3), words, 0.5)[0] == pytest.approx(0.5)
    given = scores.copy()
    assert recheck_near_thresholds(int8, passages, given, [(0, 2, False)], thresholds, 1.0, 8, 128, "cpu") == 0
    assert recheck_near_thresholds(int8, passages, scores, [(0, 2, False)], thresholds, 1.0, 8, 128, "cpu",
                                   item_limits=[limits]) == 1
