"""The stage objects (pipeline.stages): a typed card, settings from the card and Settings, and a
model whose labels are not the program's refused with one line wherever it is loaded."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline import modelfolder, store
from pipeline.classify import classify_records
from pipeline.cli import app
from pipeline.config import LABELS, Settings
from pipeline.stages import Classifier, ModelCard, Summariser

from .conftest import SAMPLES, composed_rows

runner = CliRunner()


def classifier_with_card(models_dir: Path, tmp_path: Path, **changes) -> Path:
    """A copy of the tiny classifier whose card says something else."""
    folder = tmp_path / "changed-classifier"
    shutil.copytree(modelfolder.promoted_folder(models_dir, "classifier"), folder)
    card = json.loads((folder / modelfolder.CARD).read_text())
    (folder / modelfolder.CARD).write_text(json.dumps({**card, **changes}))
    return folder


def test_card_is_typed_and_read_from_the_folder(tiny_models):
    folder = modelfolder.promoted_folder(tiny_models, "classifier")
    card = ModelCard.read(folder)
    raw = modelfolder.read_card(folder)
    assert (card.kind, card.version, card.labels) == ("classifier", raw["version"], LABELS)
    assert card.thresholds == raw["thresholds"] and set(card.thresholds) == set(LABELS)
    assert card.max_tokens == raw["max_tokens"] and card.data_hash == raw["data_hash"]
    assert card.context == raw["context"] and card.base_model == raw["base_model"]
    summariser = ModelCard.read(modelfolder.promoted_folder(tiny_models, "summariser"))
    assert summariser.kind == "summariser" and summariser.labels == ("in_briefing",)


def test_classifier_reads_max_tokens_from_its_card_not_a_default(tiny_models, tmp_path):
    folder = classifier_with_card(tiny_models, tmp_path, max_tokens=12)
    settings = Settings(models_dir=tiny_models, batch_size=4, threads=1)
    classifier = Classifier(folder, settings)
    assert classifier.max_tokens == 12
    text = ("The Director reported that Ofsted had judged the service inadequate and that caseloads had "
            "risen to thirty children per social worker in the assessment teams this year.")
    records = [{"id": 1, "title": "Children's Services Update", "text": text, "committee": "Cabinet"}]
    ours = classifier(records)[0]["scores"]
    cut = classify_records(classifier.loaded, records, max_tokens=12)[0]["scores"]
    whole = classify_records(classifier.loaded, records, max_tokens=128)[0]["scores"]
    assert ours == cut and ours != whole  # the card's 12 tokens, not the old hard-coded 128


def test_stages_take_run_settings_and_overridden_thresholds(tiny_models):
    settings = Settings(models_dir=tiny_models, thresholds={"workforce_concern": 0.01}, quantize=False)
    classifier = Classifier.promoted(settings)
    assert classifier.thresholds["workforce_concern"] == 0.01
    assert classifier.version == ModelCard.read(classifier.folder).version
    int8 = Classifier.promoted(replace(settings, quantize=True))
    assert int8.version.endswith("+int8") and int8.loaded.reference is not None
    summariser = Summariser.promoted(replace(settings, briefing_max_words=25))
    assert summariser.max_words == 25 and summariser.max_tokens == summariser.card.max_tokens
    record = {"id": 7, "title": "Ofsted Focused Visit", "text": (SAMPLES / "eastfield-early-help.txt").read_text(),
              "evidence": {}}
    [brief] = summariser([record])
    assert brief["id"] == 7 and 0 < len(brief["briefing"].split()) <= 25


@pytest.mark.parametrize("labels, says", [
    (["intervention_notice", "workforce_concern"], "differ from"),
    (["workforce_concern", "inspection_outcome", "intervention_notice"], "are in another order than"),
])
def test_a_card_with_other_labels_is_refused_in_one_line(tiny_models, tmp_path, labels, says):
    folder = classifier_with_card(tiny_models, tmp_path, labels=labels)
    with pytest.raises(modelfolder.ModelError) as refused:
        modelfolder.load(folder)
    message = str(refused.value)
    assert "\n" not in message and says in message
    assert f"[{', '.join(labels)}]" in message and f"[{', '.join(LABELS)}]" in message


@pytest.mark.parametrize("command", ["classify", "predict"])
def test_classify_and_predict_refuse_a_model_with_other_labels(model_env, tmp_path, command, models_dir):
    folder = classifier_with_card(models_dir, tmp_path, labels=["safeguarding", "inspection_outcome"])
    if command == "classify":
        assert runner.invoke(app, ["ingest", str(SAMPLES)], env=model_env).exit_code == 0
        args = ["classify", "--model", str(folder)]
    else:
        items = tmp_path / "items.jsonl"
        items.write_text(json.dumps({"id": 1, "title": "Workforce", "text": "Caseloads rose to 30 children."}) + "\n")
        args = ["predict", str(items), "--model", str(folder)]
    result = runner.invoke(app, args, env=model_env)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "[safeguarding, inspection_outcome]" in lines[0] and f"[{', '.join(LABELS)}]" in lines[0]


def test_nightly_refuses_a_promoted_model_with_other_labels_before_ingesting(model_env, models_dir):
    promoted = modelfolder.promoted_folder(models_dir, "classifier")
    card = json.loads((promoted / modelfolder.CARD).read_text())
    (promoted / modelfolder.CARD).write_text(json.dumps({**card, "labels": ["safeguarding"]}))
    result = runner.invoke(app, ["nightly", "--source", str(SAMPLES)], env=model_env)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "[safeguarding]" in result.output
    assert store.count_items(store.connect(model_env["MINUTES_DB"])) == 0


def test_a_head_with_another_width_than_its_card_is_refused(tiny_models, tmp_path):
    # The summariser's one-output scorer under a classifier's card: the card's labels are right,
    # the weights are not.
    folder = tmp_path / "mislabelled"
    shutil.copytree(modelfolder.promoted_folder(tiny_models, "summariser"), folder)
    card = json.loads((folder / modelfolder.CARD).read_text())
    (folder / modelfolder.CARD).write_text(json.dumps({**card, "kind": "classifier", "labels": list(LABELS),
                                                       "thresholds": {label: 0.5 for label in LABELS}}))
    with pytest.raises(modelfolder.ModelError, match="head has 1 outputs but its minutes_model.json names 3"):
        modelfolder.load(folder)


def test_promotion_scores_models_as_evaluate_does(models_dir, tmp_path):
    """The promotion gate and `evaluate` run the same stage objects on the same gold file: the
    same max_tokens (the card's) and the same wiring (the classifier's evidence goes to the
    summariser), so the figures agree exactly."""
    from pipeline.evaluate import compare_for_promotion, evaluate_gold, gold_briefings
    from pipeline.gold import prepare, read_gold
    from pipeline.metrics import briefing_metrics

    summariser_folder = modelfolder.promoted_folder(models_dir, "summariser")
    card = json.loads((summariser_folder / modelfolder.CARD).read_text())
    # Shorter than the 128 tokens once hard-coded where the card went unread: a gate that
    # still cut at 128 would score other briefings than `evaluate` does.
    (summariser_folder / modelfolder.CARD).write_text(json.dumps({**card, "max_tokens": 24}))
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(r) + "\n" for r in composed_rows(24, offset=200)))
    settings = Settings(models_dir=models_dir, thresholds={label: 0.3 for label in LABELS})
    report = evaluate_gold(settings, gold, composed_rows(40))
    classifier_version = modelfolder.promoted_folder(models_dir, "classifier").name
    by_labels = compare_for_promotion(settings, "classifier", classifier_version, gold)
    by_briefings = compare_for_promotion(settings, "summariser", summariser_folder.name, gold)
    assert by_labels["candidate"] == report["model"]["macro_f1"]
    assert by_briefings["candidate"] == by_briefings["current"] == report["briefings"]["model"]["rougeL"]

    # Equal because the wiring is the same, not because any wiring scores alike on these items.
    rows = [prepare(r) for r in read_gold(gold)]
    predictions = Classifier.promoted(settings)(rows)
    assert any(p["evidence"] for p in predictions)
    summariser = Summariser(summariser_folder, settings)
    without_evidence = briefing_metrics(*gold_briefings(summariser, rows, [{**p, "evidence": {}} for p in predictions]))
    at_128 = Summariser(summariser_folder, settings)
    at_128.max_tokens = 128
    assert report["briefings"]["model"]["rougeL"] != without_evidence["rougeL"]
    # The card's 24 tokens give the scorer other scores than 128 would (the tiny scorer's
    # differences are small beside the evidence and fact bonuses, so the briefings may agree).
    from pipeline.inference import score_texts
    from pipeline.summarise import body_passages

    passages = [p for r in rows for p in body_passages(r)]
    at_card = score_texts(summariser.loaded, passages, 32, summariser.max_tokens, "cpu")
    uncut = score_texts(at_128.loaded, passages, 32, at_128.max_tokens, "cpu")
    assert summariser.max_tokens == 24 and not np.allclose(at_card, uncut)



def test_promotion_reports_the_gain_with_a_paired_interval_and_can_ask_for_a_clear_one(models_dir, tmp_path):
    """The same version against itself gains exactly nothing on every resample: promoted when
    'no worse' is enough, refused when a clear gain is asked."""
    from pipeline.evaluate import compare_for_promotion

    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(r) + "\n" for r in composed_rows(24, offset=200)))
    settings = Settings(models_dir=models_dir)
    for kind in ("classifier", "summariser"):
        version = modelfolder.promoted_folder(models_dir, kind).name
        plain = compare_for_promotion(settings, kind, version, gold)
        assert plain["promote"] and plain["gain_95ci"] == [0.0, 0.0]
        assert plain["gain_text"].endswith("within what this gold file can tell apart")
        assert not compare_for_promotion(settings, kind, version, gold, clear_gain=True)["promote"]


def test_the_paired_interval_separates_a_real_gain_from_luck():
    from pipeline.metrics import bootstrap_macro_f1, macro_f1_gain_interval, mean_gain_interval

    truth = [["workforce_concern"], [], ["inspection_outcome"], ["intervention_notice"]] * 15
    right = [list(t) for t in truth]
    # Wrong on every positive: a gain no resample can hide.
    wrong = [[] for _ in truth]
    low, high = macro_f1_gain_interval(truth, right, wrong)
    assert 0 < low <= high
    # Two systems each wrong on one different item: the interval spans 0.
    one_off = [list(t) for t in truth]
    one_off[0] = []
    other_off = [list(t) for t in truth]
    other_off[2] = []
    low, high = macro_f1_gain_interval(truth, one_off, other_off)
    assert low < 0 < high
    assert mean_gain_interval([0.5, 0.6, 0.7], [0.4, 0.5, 0.6]) == (0.1, 0.1)
    # One system right on every item: every resample scores it 1, whatever the draw.
    assert bootstrap_macro_f1(truth, right) == (1.0, 1.0)


def test_the_bootstraps_macro_f1_is_sklearns():
    from sklearn.metrics import f1_score

    from pipeline.metrics import macro_f1_of

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 20))
        y = (rng.random((n, 3)) < rng.random()).astype(int)
        p = (rng.random((n, 3)) < rng.random()).astype(int)
        assert macro_f1_of(y, p) == pytest.approx(f1_score(y, p, average="macro", zero_division=0), abs=1e-12)
    nothing = np.zeros((4, 3), dtype=int)  # no gold and no predicted positives: 0, as sklearn says
    assert macro_f1_of(nothing, nothing) == 0.0
