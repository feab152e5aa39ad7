"""Briefings: faithful, short, free of boilerplate; the briefing document is escaped, parses,
and shows every flagged item in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from selectolax.lexbor import LexborHTMLParser
from typer.testing import CliRunner

from pipeline import store
from pipeline.cli import app
from pipeline.faithfulness import unsupported_facts
from pipeline.passages import acronyms_defined
from pipeline.summarise import compress, cut_to_words, select, summarise_record

from .conftest import SAMPLES

runner = CliRunner()


def test_compress_only_removes_words():
    sentence = "The Director reported that caseloads had risen to 24 (see Appendix 2) in March."
    out = compress(sentence)
    assert out == "Caseloads had risen to 24 in March."
    assert set(out.lower().rstrip(".").split()) <= set(sentence.lower().replace(".", "").split())


def test_compress_drops_list_markers_and_headings_and_writes_names_as_the_items_acronyms():
    text = ("The joint local area Special Educational Needs and Disabilities (SEND) inspection by the "
            "Care Quality Commission (CQC) reported to the Department for Education (DfE).")
    acronyms = acronyms_defined(text)
    assert acronyms == {"Special Educational Needs and Disabilities": "SEND",
                        "Care Quality Commission": "CQC", "Department for Education": "DfE"}
    assert acronyms_defined("A letter from Ofsted (Ofsted) and the Annual Report (Appendix B).") == {}
    assert compress("·   h)  Background: the Care Quality Commission visited in May", acronyms) == \
        "The CQC visited in May"
    assert compress("5.1 The Department for Education (DfE) wrote |", acronyms) == "The DfE wrote"
    assert compress("iv. The Department for Education (DfE) wrote", acronyms) == "The DfE wrote"
    # The acronym is the item's own word: the faithfulness check accepts it in either form.
    assert unsupported_facts("The CQC visited; the DfE wrote about the SEND inspection.", text) == []
    assert unsupported_facts("The CQC visited with Ofsted.", text) == ["Ofsted"]


def test_a_purpose_line_that_names_a_fact_loses_its_frame_and_one_that_names_none_stays_an_announcement():
    from pipeline.summarise import is_announcement

    cases = {
        "To update members on the CIW inspection of the fostering service in March 2023.":
            "The CIW inspection of the fostering service in March 2023.",
        "Purpose: To provide the committee with an update on the 17 agency social workers in the "
        "assessment teams.": "The 17 agency social workers in the assessment teams.",
        "To inform Cabinet that the DfE has lifted the improvement notice issued in 2021.":
            "The DfE has lifted the improvement notice issued in 2021.",
    }
    for sentence, topic in cases.items():
        out = compress(sentence)
        assert out == topic
        assert not is_announcement(out)
        assert set(out.lower().rstrip(".").split()) <= set(sentence.lower().replace(".", "").split())
    # No fact in the object: the frame stays, and so does its place after everything else.
    assert compress("To consider the Children and Young People's Plan.") == \
        "To consider the Children and Young People's Plan."
    assert is_announcement(compress("To consider the Children and Young People's Plan."))
    # A decision asked for is not a decision taken: "To approve" keeps its verb.
    assert compress("To approve fostering allowances of £260 a week from April.") == \
        "To approve fostering allowances of £260 a week from April."


def test_select_skips_the_title_again_questions_and_list_introductions_and_items():
    title = "Second Ofsted Focused Visit letter"
    passages = [
        "Agenda item Second Ofsted Focused Visit letter",
        "Had the visit changed how many newly qualified staff chose to stay?",
        "Members raised the following matters:",
        "ii. The Family Homes Programme;",
        "Inspectors found that plans for care leavers were still too often out of date.",
    ]
    chosen = select(passages, np.array([0.99, 0.98, 0.97, 0.96, 0.2]), None, 60, title)
    assert chosen == ["Inspectors found that plans for care leavers were still too often out of date."]


def test_a_welcome_to_named_guests_is_a_courtesy_not_news():
    passages = [
        "The panel was pleased to welcome Ana Okafor (Senior HMI, Ofsted), Tom Rees, and Dr Ivy Lund, "
        "to the meeting to brief members.",
        "Inspectors judged the service requires improvement to be good.",
    ]
    chosen = select(passages, np.array([0.9, 0.3]), None, 60)
    assert chosen == ["Inspectors judged the service requires improvement to be good."]


def test_a_pointer_to_a_web_page_is_not_a_briefing_sentence():
    passages = [
        "This is the link to the Ofsted webpage",
        "Click here to view the full report.",
        "Inspectors judged the service requires improvement to be good.",
        "Links to the university's social work course had helped recruitment.",
    ]
    chosen = select(passages, np.array([0.9, 0.9, 0.3, 0.2]), None, 60)
    assert chosen == passages[2:]


def test_the_minutes_own_housekeeping_is_not_a_briefing_sentence():
    """Where the papers are, a list's introduction, when the meeting ended or meets again, and a
    bare courtesy: the scorer rated lines like these highly on real minutes of other councils."""
    housekeeping = [
        "Copies of the presentation slides are available from the clerk.",
        "In debate, the points made were as follows:-",
        "The meeting closed at 8.10 pm.",
        "Date of next meeting.",
        "Meeting: 20/07/2023 - Full Council.",
        "Members welcomed the report.",
    ]
    news = [
        "Agency social workers filled 31% of posts, and a copy of the action plan would be circulated.",
        "Members welcomed the report's finding that caseloads had fallen to 18.",
    ]
    chosen = select(housekeeping + news, np.array([0.99] * 6 + [0.2, 0.1]), None, 60)
    assert chosen == news


def test_select_keeps_the_resolution_drops_duplicates_and_fits_60_words():
    passages = [
        "Caseloads had risen to 24 per social worker in the assessment teams.",
        "Caseloads had risen to 24 per social worker in assessment teams.",
        "pdf icon PDF 136 KB",
        "The Committee discussed a long list of other matters " + "at length " * 30 + "today.",
        "RESOLVED: That a market supplement of £3,000 be paid to experienced social workers.",
    ]
    scores = np.array([0.9, 0.85, 0.99, 0.5, 0.2])
    chosen = select(passages, scores, passages[-1], 60)
    text = " ".join(chosen)
    assert len(text.split()) <= 60
    assert chosen[0] == passages[0] and passages[1] not in chosen
    assert "pdf icon" not in text
    assert chosen[-1] == "That a market supplement of £3,000 be paid to experienced social workers."


def test_every_resolution_loses_its_heading_and_a_noted_report_is_dropped():
    """An item can resolve more than once, under a number ("12.3 RESOLVED – That ..."), or with
    its resolutions unfound: no "RESOLVED" heading reaches a briefing, and a resolution that only
    notes the report says nothing a director needs."""
    passages = [
        "Ofsted judged the fostering service good in March 2024.",
        "12.3 RESOLVED – That the inspection report be noted and progress be reported in six months.",
        "RESOLVED: That the report be noted.",
        "Resolved: That the action plan be approved.",
    ]
    for resolution in (None, "RESOLVED: That the action plan be approved."):
        chosen = select(passages, np.array([0.9, 0.5, 0.8, 0.4]), resolution, 60)
        assert not any(c.lower().startswith("resolved") for c in chosen), chosen
        assert "That the inspection report be noted and progress be reported in six months." in chosen
        assert "That the action plan be approved." in chosen
        assert not any(c.startswith("That the report be noted") for c in chosen)
    # A sentence that opens with the word is not a heading.
    for sentence in ("Decisions on the two remaining homes were deferred until June 2025.",
                     "Decision-making in the front door had been audited by the service in May."):
        assert select([sentence], np.array([0.9]), None, 60) == [sentence]


def test_unfaithful_briefing_falls_back_to_the_items_own_words():
    record = {"id": 1, "text": "Caseloads were 24 per worker.", "evidence": {}}
    passages = ["Caseloads were 24 per worker."]
    result = summarise_record(record, np.array([0.9]), passages)
    assert result["briefing"] == "Caseloads were 24 per worker." and not result["is_fallback"]
    invented = "Caseloads were 31 per worker in March 2024, says Ofsted."
    assert set(unsupported_facts(invented, record["text"])) == {"31", "March 2024", "Ofsted"}
    assert unsupported_facts("Caseloads were 24 per worker.", record["text"]) == []
    assert cut_to_words("one, two three four five six", 4).endswith("…")


def flagged_store(model_env):
    assert runner.invoke(app, ["ingest", str(SAMPLES)], env=model_env).exit_code == 0
    assert runner.invoke(app, ["classify"], env=model_env).exit_code == 0
    result = runner.invoke(app, ["summarise"], env=model_env)
    assert result.exit_code == 0, result.output
    return store.connect(model_env["MINUTES_DB"])


def test_summarise_command_briefs_each_flagged_item_once(model_env):
    db = flagged_store(model_env)
    predictions = store.latest_predictions(db)
    flagged = [i for i, p in predictions.items() if p["labels"]]
    summaries = store.latest_summaries(db, flagged)
    assert set(summaries) == set(flagged)
    for item_id, summary in summaries.items():
        item = store.item(db, item_id)
        assert len(summary["briefing"].split()) <= 60
        assert unsupported_facts(summary["briefing"], item["text"]) == []
        assert "pdf icon" not in summary["briefing"].lower()
    again = runner.invoke(app, ["summarise"], env=model_env)
    assert "summarised 0 flagged items" in again.stderr
    assert store.count_summaries(db) == len(flagged)


def test_briefing_html_is_escaped_and_well_formed(model_env, tmp_path):
    hostile = tmp_path / "hostile.html"
    hostile.write_text(
        "<html><body><div id='modgov'><h1>Agenda item</h1>"
        "<h2>&lt;script&gt;alert('x')&lt;/script&gt; Ofsted inspection judged inadequate</h2>"
        "<p>Minutes:</p><p>Ofsted judged children's services inadequate in March 2025 and "
        "caseloads were 30 per social worker &lt;img src=x onerror=alert(1)&gt;.</p>"
        "<script>alert('page')</script></div></body></html>")
    runner.invoke(app, ["ingest", str(hostile), str(SAMPLES)], env=model_env)
    runner.invoke(app, ["classify"], env=model_env)
    runner.invoke(app, ["summarise"], env=model_env)
    out = tmp_path / "out"
    result = runner.invoke(app, ["brief", "--out", str(out)], env=model_env)
    assert result.exit_code == 0, result.output
    html = (out / "briefing.html").read_text()
    assert "<script" not in html.lower()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;script&gt;" in html  # the title shows as text
    assert "http" not in html.split("<body>")[0].replace("http-equiv", "")  # no external requests
    tree = LexborHTMLParser(html)
    assert tree.css_first("title").text() == "Children's services briefing"
    sections = [s.attributes["id"] for s in tree.css("main > section")]
    assert sections[:3] == ["intervention_notice", "inspection_outcome", "workforce_concern"]
    assert "also-read" in sections
    data = json.loads((out / "briefing.json").read_text())
    flagged_titles = {e["title"] for g in data["groups"] for e in g["items"]}
    shown_titles = {n.text() for n in tree.css("article .item-title")}
    assert flagged_titles == shown_titles and flagged_titles
    for article in tree.css("article"):
        assert article.css_first("a").attributes["href"].startswith(("file://", "http"))
    if len({(i["date"] or "")[:7] for g in data["groups"] for i in g["items"]}) > 1:
        assert tree.css_first("#chart img").attributes["src"].startswith("data:image/png;base64,")
    assert "\\<script\\>" in (out / "briefing.md").read_text()
    assert data["date_range"] == "meetings from 2024-11-14 to 2025-04-07"  # the samples' meetings


def test_briefing_shows_every_flagged_title_in_headless_chromium(model_env, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    flagged_store(model_env)
    out = tmp_path / "out"
    assert runner.invoke(app, ["brief", "--out", str(out)], env=model_env).exit_code == 0
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", (out / "briefing.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout
    data = json.loads((out / "briefing.json").read_text())
    titles = {e["title"] for g in data["groups"] for e in g["items"]}
    assert titles
    rendered = LexborHTMLParser(dom)
    assert {n.text() for n in rendered.css("article .item-title")} == titles


def test_evidence_and_facts_outrank_a_sentence_the_scorer_rates_a_little_higher():
    filler = ("Members discussed the partnership's newsletter and its distribution to schools, libraries "
              "and community centres across the borough at some length")
    passages = [
        filler + " this evening.",
        "Inspectors found that supervision was not regular enough in the duty teams.",
        "Caseloads had reached 27 children per worker in March.",
        filler + " before the break.",
    ]
    scores = np.array([0.55, 0.30, 0.35, 0.6])
    # 38 words fit beside the two short sentences, not beside either long one.
    chosen = select(passages, scores, None, 38, evidence={1})
    assert chosen == passages[1:3]
    # Without the evidence and the number, the scorer's order alone decides.
    plain = ["Inspectors found that supervision was not regular enough in the duty teams.",
             "Caseloads had reached a high level per worker in the spring."]
    chosen = select([passages[0]] + plain + [passages[3]], scores, None, 38)
    assert passages[3] in chosen and plain[0] not in chosen


def test_an_unflagged_item_is_listed_with_only_what_is_known_of_where_it_was_read(tmp_path):
    from pipeline.brief import briefing_data, render_text, write_briefing

    def item(i, council, committee, date):
        return {"id": i, "title": f"Item {i}", "council": council, "committee": committee,
                "date": date, "source": f"/minutes/{i}.html"}

    items = [item(1, None, None, None), item(2, None, "Cabinet", None),
             item(3, "Eastfield City Council", "Cabinet", "2025-01-20")]
    no_flag = {"labels": [], "scores": {}, "evidence": {}}
    data = briefing_data(items, {i["id"]: no_flag for i in items}, {}, "Briefing", "Director", "night")
    paths = write_briefing(data, tmp_path, None)
    markdown = paths["md"].read_text()
    text = render_text(data)
    html = LexborHTMLParser(paths["html"].read_text())
    listed = [li.text(strip=True) for li in html.css("#also-read li")]
    assert "- Item 1\n" in markdown and "- Item 1\n" in text and listed[0] == "Item 1"
    assert "- Item 2 (Cabinet)" in markdown and "- Item 2 (Cabinet)" in text
    assert "- Item 3 (Eastfield City Council, Cabinet, 2025-01-20)" in markdown
    assert listed[2] == "Item 3(Eastfield City Council, Cabinet, 2025-01-20)"
    assert "( )" not in markdown + text + paths["html"].read_text()


def test_the_rules_oracle_takes_only_what_the_selection_may_take():
    from pipeline.oracle import rules_oracle

    text = ("Ofsted Focused Visit\n"
            "To consider the letter from Ofsted following the focused visit.\n"
            "The Director presented the report.\n"
            "Inspectors found that the front door was effective in March 2025.\n"
            "Caseloads in the assessment teams were 24 children per worker.\n"
            "RESOLVED: That the Committee receives an update in June 2025.")
    row = {"id": "o", "title": "Ofsted Focused Visit", "text": text,
           "resolutions": "That the Committee receives an update in June 2025.",
           "briefing": "The Committee considered the letter from Ofsted following the focused visit and "
                       "the report presented. Inspectors found the front door effective in March 2025 and "
                       "asked for an update in June 2025."}
    briefing = rules_oracle(row)
    # The reference repeats the purpose line and the report-speak, but other sentences say what
    # happened, so the rules leave them out; the resolution comes without its heading.
    assert "Inspectors found that the front door was effective in March 2025." in briefing
    assert "To consider" not in briefing and "presented the report" not in briefing
    assert "RESOLVED" not in briefing and len(briefing.split()) <= 60
    # With nothing but announcements, an announcement is what is left to take.
    only = {**row, "text": "Ofsted Focused Visit\nTo consider the letter from Ofsted following the focused visit.",
            "resolutions": None}
    assert rules_oracle(only).startswith("To consider the letter from Ofsted")
