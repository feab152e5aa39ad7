"""Ingest: real corpus minutes, the bundled samples, every kind of bad input, idempotence."""

from __future__ import annotations

import json
import sqlite3

from typer.testing import CliRunner

from pipeline import store
from pipeline.cli import app
from pipeline.ingest import ingest_paths

from .conftest import SAMPLES

runner = CliRunner()


def ingest_json(env, *paths):
    result = runner.invoke(app, ["ingest", *map(str, paths), "--json"], env=env)
    return result, json.loads(result.stdout.strip().splitlines()[-1])


def test_corpus_dev_items_are_single_items_with_gold_titles(corpus, env):
    result, report = ingest_json(env, corpus / "dev")
    assert result.exit_code == 0, result.output
    assert report == {"documents_new": 20, "documents_replaced": 0, "items_new": 20,
                      "unchanged": 0, "failed": []}
    gold = {json.loads(l)["id"]: json.loads(l) for l in (corpus / "dev.gold.jsonl").open()}
    db = store.connect(env["MINUTES_DB"])
    matches = sum(item["title"] == gold[item["source"].rsplit("/", 1)[-1][:-4]]["title"]
                  for item in store.items(db))
    assert matches >= 18  # 18 of 20 at the time of writing; see the closing note

    again, report = ingest_json(env, corpus / "dev")
    assert again.exit_code == 0
    assert report["items_new"] == 0 and report["unchanged"] == 20


def test_corpus_meetings_split_into_their_items(corpus, tmp_path):
    db = store.connect(tmp_path / "m.db")
    expected = [json.loads(l) for l in (corpus / "meetings" / "meetings.jsonl").open()]
    for meeting in expected:
        report = ingest_paths(db, [corpus / "meetings" / meeting["file"]])
        assert not report.failed
        items = store.items_by_ids(db, report.item_ids)
        assert [(i["number"], i["title"]) for i in items] == [
            (e["number"], e["title"]) for e in meeting["items"]
        ]
        assert all(i["date"] == meeting["date"] for i in items if meeting["date"])


def test_sample_meetings_split_into_the_right_items(tmp_path):
    db = store.connect(tmp_path / "s.db")
    report = ingest_paths(db, [SAMPLES])
    assert not report.failed and report.documents_new == 13
    by_source = {}
    for item in store.items(db):
        by_source.setdefault(item["source"].rsplit("/", 1)[-1], []).append(item)
    meeting = by_source["westhaven-cyp-scrutiny-2025-03-10.html"]
    assert [i["number"] for i in meeting] == ["31", "32", "33", "34", "35", "36"]
    assert meeting[3]["title"] == "Ofsted Focused Visit: The Front Door"
    assert meeting[0]["is_procedural"] and not meeting[3]["is_procedural"]
    assert meeting[3]["resolutions"].startswith("RESOLVED")
    assert meeting[3]["committee"] == "Children and Young People Scrutiny Committee"
    assert meeting[3]["date"] == "2025-03-10"
    pdf = by_source["ashgrove-cabinet-2024-11-14.pdf"]
    assert [i["number"] for i in pdf] == ["61", "62", "63"]
    assert "statutory direction" in pdf[1]["text"]
    docx = by_source["southcliffe-children-select-2025-02-05.docx"]
    assert [i["title"] for i in docx] == ["Declarations of Interest",
                                          "Ofsted Inspection of Local Authority Children's Services",
                                          "Youth Service Review"]
    # Page furniture and scripts never reach an item's text.
    html_item = by_source["northmoor-cabinet-improvement-notice.html"][0]
    assert "window.analytics" not in html_item["text"]
    assert "Cookie settings" not in html_item["text"]
    assert "pdf icon" not in html_item["text"]
    assert html_item["council"] == "Northmoor County Council"


def test_bad_inputs_fail_one_by_one_and_the_rest_is_stored(tmp_path, env):
    good = tmp_path / "in" / "good.txt"
    good.parent.mkdir()
    good.write_text("Agenda item\n\nSchool Transport\n\nMinutes:\n\nMembers noted the new routes "
                    "for home to school transport and asked for a review in the spring.\n",
                    encoding="utf-8")
    (tmp_path / "in" / "empty.txt").write_bytes(b"")
    (tmp_path / "in" / "binary.txt").write_bytes(bytes(range(256)) * 40)
    pdf = (SAMPLES / "ashgrove-cabinet-2024-11-14.pdf").read_bytes()
    (tmp_path / "in" / "truncated.pdf").write_bytes(pdf[: len(pdf) // 3])
    (tmp_path / "in" / "nominutes.html").write_text(
        "<html><head><script>alert(1)</script></head><body><nav>Home</nav></body></html>")
    # A UTF-16 export cut off mid-character.
    (tmp_path / "in" / "utf16cut.txt").write_bytes("Agenda item\n\nMinutes:\n\nNoted.".encode("utf-16")[:-1])
    huge = tmp_path / "in" / "huge.txt"
    with huge.open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: 50 MB without writing 50 MB
    cp1252 = tmp_path / "in" / "windows.txt"
    cp1252.write_bytes("Agenda item\n\nBudget\n\nMinutes:\n\nThe Cabinet noted the £2.1m "
                       "overspend on placements and the café lease – both were agreed.\n"
                       .encode("cp1252"))

    result, report = ingest_json(env, tmp_path / "in")
    assert result.exit_code == 1
    errors = {f["path"].rsplit("/", 1)[-1]: f["error"] for f in report["failed"]}
    assert set(errors) == {"empty.txt", "binary.txt", "truncated.pdf", "nominutes.html", "huge.txt",
                           "utf16cut.txt"}
    assert "UTF-16" in errors["utf16cut.txt"]
    assert errors["empty.txt"] == "empty file"
    assert "binary" in errors["binary.txt"]
    assert "PDF" in errors["truncated.pdf"]
    assert "no" in errors["nominutes.html"]
    assert "too large" in errors["huge.txt"]
    # One line per bad file on stderr, naming it.
    for name in errors:
        assert sum(name in line for line in result.stderr.splitlines()) == 1
    db = store.connect(env["MINUTES_DB"])
    titles = sorted(i["title"] for i in store.items(db))
    assert titles == ["Budget", "School Transport"]
    windows = next(i for i in store.items(db) if i["title"] == "Budget")
    assert "£2.1m" in windows["text"] and "café lease – both" in windows["text"]


def test_a_changed_document_replaces_its_items_and_keeps_old_predictions(tmp_path):
    path = tmp_path / "item.txt"
    path.write_text("Agenda item\n\nWorkforce\n\nMinutes:\n\nMembers heard that caseloads were 25 per worker in the assessment teams.\n")
    db = store.connect(tmp_path / "c.db")
    first = ingest_paths(db, [path])
    old_id = first.item_ids[0]
    store.save_predictions(db, [{"item_id": old_id, "labels": ["workforce_concern"],
                                 "scores": {}, "evidence": {}}], "v1")
    path.write_text("Agenda item\n\nWorkforce\n\nMinutes:\n\nMembers heard that caseloads were 19 per worker in the assessment teams.\n")
    second = ingest_paths(db, [path])
    assert second.documents_replaced == 1 and second.items_new == 1
    current = store.items(db)
    assert [i["id"] for i in current] == second.item_ids
    assert "19 per worker" in current[0]["text"]
    old = store.item(db, old_id)
    assert old is not None and old["is_current"] is False
    assert store.latest_predictions(db, [old_id])[old_id]["labels"] == ["workforce_concern"]
    assert ingest_paths(db, [path]).unchanged == 1


def test_store_migrates_older_schema_and_refuses_newer(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    store.MIGRATIONS[0](db)
    db.execute("PRAGMA user_version=1")
    db.close()
    migrated = store.connect(path)
    assert migrated.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    assert migrated.execute("SELECT COUNT(*) FROM fetched").fetchone()[0] == 0
    migrated.execute(f"PRAGMA user_version={store.SCHEMA_VERSION + 1}")
    migrated.close()
    try:
        store.connect(path)
    except store.StoreError as exc:
        assert "newer than this program" in str(exc)
    else:
        raise AssertionError("a newer store was opened")


def test_items_json_lists_the_promised_fields(env):
    ingest_json(env, SAMPLES / "eastfield-early-help.txt")
    result = runner.invoke(app, ["items", "--json"], env=env)
    listing = json.loads(result.stdout)
    assert len(listing) == 1
    assert {"id", "title", "council", "committee", "date", "source", "labels"} <= set(listing[0])
    assert listing[0]["labels"] is None
    shown = runner.invoke(app, ["show", str(listing[0]["id"])], env=env)
    assert shown.exit_code == 0 and "Early Help and Early Intervention Strategy" in shown.stdout


def test_parse_limits_come_from_the_settings(env):
    from pipeline.config import Settings
    from pipeline.ingest import Limits, limits_from

    assert limits_from(Settings()) == Limits()  # the same defaults in both places
    limited = {**env, "MINUTES_MAX_ITEM_CHARS": "300", "MINUTES_MAX_HTML_DEPTH": "3"}
    result = runner.invoke(app, ["ingest", str(SAMPLES / "eastfield-early-help.txt"),
                                 str(SAMPLES / "westhaven-decision-commissioner.html")], env=limited)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert any(line.endswith("eastfield-early-help.txt: item 1 longer than limit (limit 300 characters)")
               for line in lines), lines
    assert any(line.endswith("westhaven-decision-commissioner.html: HTML elements nested too deep (limit 3)")
               for line in lines), lines


def test_html_text_is_read_in_one_parse_and_walks_deep_trees(monkeypatch):
    """A page is parsed once (title and text from one tree), and a tree 80,000 elements deep is
    walked without recursion. How its time grows with depth is measured by
    benchmarks/html_depth.py, not asserted here."""
    from selectolax.lexbor import LexborHTMLParser

    from pipeline.ingest import readers

    parses = []
    real_parser = readers.HTMLParser

    def counting_parser(html):
        parses.append(len(html))
        return real_parser(html)

    limits = readers.Limits(max_html_depth=10**6, max_html_elements=10**6)
    tree = LexborHTMLParser("<body>" + "<span>" * 80_000 + "noted" + "</span>" * 80_000)
    assert readers._tree_text(tree, limits).strip() == "noted"
    monkeypatch.setattr(readers, "HTMLParser", counting_parser)
    text, title = readers.html_text_and_title("<title>T</title><p>One</p><p>Two</p>")
    assert (text, title, len(parses)) == ("\nOne\n\nTwo\n", "T", 1)


def test_a_page_copied_whole_loses_the_sites_menu_and_keeps_its_title_and_purpose():
    """An agenda item page saved as text opens with ModernGov's menu, a bulleted entry a line,
    then "• Agenda item", the title again, the meeting's name and who submitted the item ("Cyflwynwyd
    gan:" on Welsh councils' pages): none of it is the title or the purpose line every passage is
    read with."""
    from pipeline.ingest.split import split_document

    page = "\n".join([
        "• Calendar", "  • Committees", "  • Decisions", "  • Forward Plans", "  • Your councillors",
        "  • What's new", "  • Agenda item", "",
        "Fostering Service Annual Report", "",
        "• Meeting of Corporate Parenting Panel, Monday, 3rd March, 2025 2.00 pm (Item 7.)", "",
        "Cyflwynwyd gan:Cllr. Aled Brown", "",
        "To receive the annual report of the fostering service.", "",
        "Minutes:", "",
        "The panel heard that 14 new foster carers had been approved.", "",
        "• Meetings were held with every carer in the year.",
    ])
    items = split_document(page)["items"]
    assert len(items) == 1
    item = items[0]
    assert item["title"] == "Fostering Service Annual Report"
    assert item["purpose"] == "To receive the annual report of the fostering service."
    assert "Calendar" not in item["text"] and "Forward Plans" not in item["text"]
    # A bullet of the minutes themselves is a sentence, not a menu entry: it stays, bullet and all.
    assert "• Meetings were held with every carer in the year." in item["text"]


def test_a_meeting_swallowed_by_its_apologies_is_scored(tmp_path):
    """A whole meeting copied as plain text with unnumbered headings is one item to the splitter,
    titled by its first heading. Apologies take a few lines: under that title, a long item is the
    rest of the meeting, and is classified; short apologies stay procedural and unscored."""
    from pipeline.ingest.split import split_document

    business = ("The Director reported that Ofsted had judged the council's children's services "
                "good in every area at the inspection in May. Caseloads had fallen to eighteen a "
                "worker and the use of agency social workers was down by a third. ")
    meeting = "\n\n".join([
        "Apologies for Absence", "Apologies were received from Councillor Reed.",
        "Declarations of Interest", "None.",
        "Children's Services Improvement Update", business * 12,
    ])
    (item,) = split_document(meeting)["items"]
    assert item["title"] == "Apologies for Absence" and not item["is_procedural"]
    brief = "\n\n".join(["Apologies for Absence", "Apologies were received from Councillors Reed and Khan."])
    assert split_document(brief)["items"][0]["is_procedural"]
    # Through ingest, the long item reaches the store as one to classify.
    (tmp_path / "meeting.txt").write_text(meeting, encoding="utf-8")
    db = store.connect(tmp_path / "m.db")
    report = ingest_paths(db, [tmp_path / "meeting.txt"])
    assert not report.failed
    (stored,) = store.items_by_ids(db, report.item_ids)
    assert not stored["is_procedural"]
    assert store.items_without_predictions(db, "any-version")[0]["id"] == stored["id"]


def test_urgent_business_and_public_questions_are_scored():
    """A resident's question on the commissioner's report, or a DfE letter taken as urgent
    business, is labelled for what it says: such items are scored. Apologies, declarations and
    the last meeting's minutes are meeting business and are not."""
    from pipeline.ingest.split import is_procedural

    for title in ("Public Questions", "Urgent Business", "Items of Urgent Business", "Public Participation"):
        assert not is_procedural(title), title
    for title in ("Apologies for Absence", "Declarations of Interest", "Minutes of the Previous Meeting",
                  "Date of Next Meeting", "Exclusion of the Press and Public"):
        assert is_procedural(title), title
