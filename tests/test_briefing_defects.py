"""Briefings as a director reads them: no page furniture run into a sentence, no purpose line,
no report-speak, no key fact of the flag left out for a procedural sentence. The detectors are
checked on planted defects, then on every briefing made for data/samples/ items."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline import store
from pipeline.cli import app
from pipeline.summarise import briefing_defects, compress, select, summarise_record

from .conftest import SAMPLES

runner = CliRunner()
EVIDENCE = {"inspection_outcome": ["Ofsted judged the council's children's services inadequate overall."],
            "workforce_concern": ["There were 46 agency social workers in post at the end of June."]}
RECORD = {"text": "fictional item", "evidence": EVIDENCE}


@pytest.mark.parametrize("briefing, kind", [
    ("Title Quarterly Review of Fostering Background The service recruited 12 carers.", "furniture"),
    ("The service recruited 12 carers. Decision: The Board approved the plan.", "furniture"),
    ("Background: the service recruited 12 carers.", "furniture"),
    ("The service recruited 12 carers in Ashby Background", "furniture"),
    ("To consider the Corporate Parenting Strategy.", "purpose_line"),
    ("Caseloads had risen. To receive performance reports on a quarterly basis.", "purpose_line"),
    ("The purpose of this report is to present cabinet with the annual fostering report.", "report_speak"),
    ("The cabinet member introduced the report and recommended that the plan be approved.", "report_speak"),
    ("The Committee considered a report of the Director of Children's Services.", "report_speak"),
    ("This report sets out progress on the improvement plan.", "report_speak"),
])
def test_each_detector_catches_a_planted_defect(briefing, kind):
    assert kind in briefing_defects(briefing, {"text": briefing})


def test_a_key_fact_left_out_for_a_procedural_sentence_is_a_defect():
    planted = "The Chair welcomed the Director to the meeting. Ofsted judged services inadequate overall."
    found = briefing_defects(planted, RECORD)
    assert found["missing_fact"] == ["46"]
    # Every fact stated, or no procedural sentence spending the words: not this defect.
    assert "missing_fact" not in briefing_defects(
        planted + " There were 46 agency social workers in post.", RECORD)
    assert briefing_defects("Ofsted judged services inadequate overall.", RECORD) == {}


@pytest.mark.parametrize("briefing", [
    "Ofsted judged services inadequate in March 2025; 46 agency social workers were in post.",
    "Background checks were completed for every new foster carer.",
    "To date, 40 social workers have been recruited from overseas.",
    "The Title of the post changed to Principal Social Worker.",  # a noun in a sentence, not a heading
    "Members noted the decision of the DfE to lift the improvement notice.",
])
def test_the_detectors_pass_what_a_person_would_write(briefing):
    assert briefing_defects(briefing, {"text": briefing, "evidence": {}}) == {}


def test_selection_puts_the_flags_facts_first_and_drops_announcements():
    passages = [
        "To consider the Ofsted inspection of children's services.",
        "The Cabinet Member for Children, Cllr Hale, introduced the report.",
        "The Chair welcomed the inspectors to the meeting.",
        "Background The Ofsted inspection took place over two weeks in January 2025.",
        "Ofsted judged the council's children's services inadequate overall.",
        "There were 46 agency social workers in post at the end of June.",
        "Members discussed the communications plan for staff and partners at some length.",
    ]
    # The scorer prefers the announcements; the selection must not.
    scores = np.array([0.99, 0.98, 0.97, 0.3, 0.2, 0.1, 0.5])
    record = {"id": 1, "title": "Ofsted inspection", "text": "\n".join(passages), "evidence": EVIDENCE}
    briefing = summarise_record(record, scores, passages)["briefing"]
    assert briefing_defects(briefing, record) == {}
    assert "inadequate" in briefing and "46" in briefing and "January 2025" in briefing
    assert not briefing.startswith("To consider")
    # Compression deletes, never adds: every word of the briefing is a word of the item.
    item_words = set(" ".join(passages).replace(".", " ").replace(",", " ").split())
    assert set(briefing.replace(".", " ").replace(",", " ").split()) <= item_words


def test_an_announcement_is_kept_when_nothing_else_says_what_happened():
    passages = ["To receive the annual report of the Fostering Service.", "Members asked questions?"]
    assert select(passages, np.array([0.5, 0.9]), None, 60) == [passages[0]]
    assert compress("Background The service approved 12 carers. Decision: Noted") == \
        "The service approved 12 carers. Noted"


def test_no_briefing_of_the_samples_has_any_of_the_four_defects(model_env):
    assert runner.invoke(app, ["ingest", str(SAMPLES)], env=model_env).exit_code == 0
    assert runner.invoke(app, ["classify"], env=model_env).exit_code == 0
    result = runner.invoke(app, ["summarise"], env=model_env)
    assert result.exit_code == 0, result.output
    db = store.connect(model_env["MINUTES_DB"])
    predictions = store.latest_predictions(db)
    flagged = [i for i, p in predictions.items() if p["labels"]]
    summaries = store.latest_summaries(db, flagged)
    assert summaries and set(summaries) == set(flagged)
    for item_id, summary in summaries.items():
        item = store.item(db, item_id)
        record = {**item, "evidence": predictions[item_id]["evidence"]}
        assert briefing_defects(summary["briefing"], record) == {}, (item["title"], summary["briefing"])


@pytest.mark.parametrize("scorer", ["flat", "lead", "announcements"])
def test_no_briefing_of_the_dev60_items_has_a_defect_whatever_the_scorer_prefers(corpus, scorer):
    """The selection's rules, on real minutes: each of the 60 gold items briefed from its gold
    evidence, under a scorer that rates every sentence alike, one that prefers the first
    sentences, and one that prefers purpose lines and report-speak; none of the four defects
    and no briefing over 60 words in any."""
    from pipeline.gold import prepare, read_gold
    from pipeline.summarise import body_passages, is_announcement

    def scores(passages):
        if scorer == "flat":
            return np.full(len(passages), 0.5)
        if scorer == "lead":
            return np.linspace(0.9, 0.1, len(passages))
        return np.array([0.95 if is_announcement(p) else 0.2 for p in passages])

    rows = [prepare(r) for r in read_gold(corpus / "dev60.gold.jsonl")]
    briefed = 0
    for row in rows:
        passages = body_passages(row)
        if not passages:
            continue
        record = {**row, "evidence": row.get("evidence") or {}}
        briefing = summarise_record(record, scores(passages), passages)["briefing"]
        assert briefing_defects(briefing, record) == {}, (row["id"], briefing)
        assert 0 < len(briefing.split()) <= 60
        briefed += 1
    assert briefed >= 55
