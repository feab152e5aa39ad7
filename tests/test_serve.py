"""The review desk through Starlette's test client: filters, the review form saving a label that
`minutes train` reads, bad input refused with nothing stored, the token, CSRF, escaping, trends."""

from __future__ import annotations

import json
import re
import socket

import pytest
from selectolax.lexbor import LexborHTMLParser
from starlette.testclient import TestClient
from typer.testing import CliRunner

from pipeline import labelling, store
from pipeline.cli import _training_rows, app
from pipeline.config import Settings
from pipeline.passages import item_passages
from pipeline.serve import (
    CONTENT_SECURITY_POLICY,
    bind_problem,
    create_app,
    highlighted,
    normalise_council,
    quarter_of,
)

from .conftest import REPO

TOKEN = "desk-token-for-tests-0123456789"
LOCAL = "http://127.0.0.1:8750"
runner = CliRunner()

# Fictional councils and minutes, written for these tests.
NOTICE = "The Department for Education issued an improvement notice to the council on 3 March 2025."
INADEQUATE = "Ofsted judged the council's services for children in need of help and protection inadequate."
CASELOADS = "Average caseloads in the assessment teams had risen to 27 children per social worker."
FOCUSED = "Inspectors from Ofsted completed a focused visit to the front door in January."
AGENCY = "Agency social workers now fill a third of the posts in the children in care service."
HOSTILE_TITLE = "<script>alert('desk')</script> Ofsted inspection outcome"


def _document(db, source, council, committee, day, items):
    _, _, ids = store.save_document(
        db, {"source": source, "content_hash": source, "format": "text", "council": council,
             "committee": committee, "meeting_date": day}, items)
    return ids


def _scores(intervention=0.05, inspection=0.05, workforce=0.05):
    return {"intervention_notice": intervention, "inspection_outcome": inspection,
            "workforce_concern": workforce}


@pytest.fixture()
def desk_store(tmp_path):
    """A store of five items from four councils, some named two ways, classified and briefed."""
    settings = Settings(db=tmp_path / "minutes.db", models_dir=tmp_path / "models",
                        labelled_dir=REPO / "data" / "labelled")
    db = store.connect(settings.db)
    notice, hostile = _document(db, "northmoor-cabinet.txt", "Northmoor County Council", "Cabinet",
                                "2025-03-10", [
        {"title": "Improvement notice", "text": f"Improvement notice\n{NOTICE} The Leader asked for a plan."},
        {"title": HOSTILE_TITLE, "text": f"Ofsted inspection outcome\n{INADEQUATE} "
                                         "Members noted <img src=x onerror=alert(1)> the report."},
    ])
    (caseloads,) = _document(db, "northmoor-scrutiny.txt", "Northmoor", "Children's Scrutiny",
                             "2024-11-14", [
        {"title": "Workforce report", "text": f"Workforce report\n{CASELOADS} Members asked about retention."}])
    focused, quiet = _document(db, "https://democracy.eastfield.example/mgAi.aspx?ID=7",
                               "London Borough of Eastfield", "Corporate Parenting Panel", "2025-01-20", [
        {"title": "Focused visit", "text": f"Focused visit\n{FOCUSED} Leaders knew their services well."},
        {"title": "Allotments", "text": "Allotments\nThe panel noted the allotment waiting list."}])
    (agency,) = _document(db, "westhaven.txt", "Royal Borough of Westhaven", "Cabinet", None, [
        {"title": "Agency staff", "text": f"Agency staff\n{AGENCY} The cost is rising."}])
    store.save_predictions(db, [
        {"item_id": notice, "labels": ["intervention_notice"], "scores": _scores(intervention=0.93),
         "evidence": {"intervention_notice": [NOTICE]}},
        {"item_id": hostile, "labels": ["inspection_outcome"], "scores": _scores(inspection=0.88),
         "evidence": {"inspection_outcome": [INADEQUATE]}},
        {"item_id": caseloads, "labels": ["workforce_concern"], "scores": _scores(workforce=0.62),
         "evidence": {"workforce_concern": [CASELOADS]}},
        {"item_id": focused, "labels": ["inspection_outcome"], "scores": _scores(inspection=0.71),
         "evidence": {"inspection_outcome": [FOCUSED]}},
        {"item_id": quiet, "labels": [], "scores": _scores(), "evidence": {}},
        {"item_id": agency, "labels": ["workforce_concern"], "scores": _scores(workforce=0.8),
         "evidence": {"workforce_concern": [AGENCY]}},
    ], "tiny-v1")
    store.save_summaries(db, [{"item_id": notice, "briefing": "The DfE issued an improvement notice.",
                               "is_fallback": False}], "sum-v1")
    db.close()
    ids = {"notice": notice, "hostile": hostile, "caseloads": caseloads, "focused": focused,
           "quiet": quiet, "agency": agency}
    return settings, ids


def client(settings, **kwargs) -> TestClient:
    return TestClient(create_app(settings, **kwargs), base_url=LOCAL)


def shown_ids(response) -> list[int]:
    return [int(a.attributes["data-item-id"]) for a in LexborHTMLParser(response.text).css("article.item")]


def label_rows(settings) -> int:
    db = store.connect(settings.db)
    try:
        return db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    finally:
        db.close()


def csrf_of(page) -> str:
    return LexborHTMLParser(page.text).css_first("input[name=csrf]").attributes["value"]


# ---------------------------------------------------------------- small functions
def test_council_names_are_normalised():
    same = {"Herefordshire Council": "Herefordshire", "Herefordshire": "Herefordshire",
            "London Borough of Camden": "Camden", "Kent County Council": "Kent",
            "Leeds City Council": "Leeds", "Royal Borough of Kensington and Chelsea": "Kensington and Chelsea",
            "The Royal Borough of Windsor and Maidenhead": "Windsor and Maidenhead",
            "City of Bradford Metropolitan District Council": "Bradford",
            "Wigan Metropolitan Borough Council": "Wigan", "  Northmoor   County  Council ": "Northmoor",
            "Isle of Wight Council": "Isle of Wight", "Westhaven Borough Council": "Westhaven"}
    assert {name: normalise_council(name) for name in same} == same
    assert normalise_council(None) is None and normalise_council("  ") is None
    assert quarter_of("2025-02-05") == "2025 Q1" and quarter_of("2024-11-30") == "2024 Q4"
    assert quarter_of(None) is None and quarter_of("not a date") is None


def test_evidence_is_highlighted_where_it_stands_in_the_text():
    text = "Title\nFirst sentence here.  The council’s   notice was issued. Last one."
    pieces = highlighted(text, ["The council's notice was issued."])
    assert [p for p, marked in pieces if marked] == ["The council’s   notice was issued."]
    assert "".join(p for p, _ in pieces) == text


def test_a_bind_beyond_this_machine_needs_a_long_token():
    assert bind_problem("127.0.0.1", None) is None and bind_problem("::1", None) is None
    assert bind_problem("0.0.0.0", TOKEN) is None
    assert "give --token (or MINUTES_TOKEN)" in bind_problem("0.0.0.0", None)
    assert "at least 16 characters" in bind_problem("0.0.0.0", "short")


def test_serve_command_refuses_an_open_bind_and_a_missing_store_in_one_line(env, tmp_path):
    refused = runner.invoke(app, ["serve", "--host", "0.0.0.0"], env=env)
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines() == [
        "error: --host 0.0.0.0 lets other machines reach the desk: give --token (or MINUTES_TOKEN) "
        "too, or keep the default --host 127.0.0.1"]
    short = runner.invoke(app, ["serve", "--host", "0.0.0.0"], env={**env, "MINUTES_TOKEN": "short"})
    assert short.exit_code == 2 and "--token must be at least 16 characters" in short.stderr
    missing = runner.invoke(app, ["serve", "--db", str(tmp_path / "typo.db")], env=env)
    assert missing.exit_code == 2 and "typo.db: no store here" in missing.stderr
    assert not (tmp_path / "typo.db").exists()
    assert "Example: minutes serve --db data/minutes.db" in runner.invoke(app, ["serve", "--help"]).stdout


def test_serve_command_says_when_its_port_is_taken(desk_store, env):
    settings, _ = desk_store
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        refused = runner.invoke(app, ["serve", "--db", str(settings.db), "--port", str(port)], env=env)
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port} (Address already in use); pass --port to use another"]


# ---------------------------------------------------------------- the flags page
def test_flags_newest_first_and_every_filter(desk_store):
    settings, ids = desk_store
    desk = client(settings)
    everything = desk.get("/flags")
    assert everything.status_code == 200
    # Newest meeting first, the undated item last; the item nothing flagged is not shown.
    assert shown_ids(everything) == [ids["hostile"], ids["notice"], ids["focused"], ids["caseloads"],
                                     ids["agency"]]

    def shown(query):
        response = desk.get("/flags?" + query)
        assert response.status_code == 200, response.text
        return set(shown_ids(response))

    assert shown("label=intervention_notice") == {ids["notice"]}
    assert shown("label=workforce_concern") == {ids["caseloads"], ids["agency"]}
    # "Northmoor County Council" and "Northmoor" are one council.
    assert shown("council=Northmoor") == {ids["notice"], ids["hostile"], ids["caseloads"]}
    assert shown("council=Eastfield") == {ids["focused"]}
    assert shown("committee=Cabinet") == {ids["notice"], ids["hostile"], ids["agency"]}
    assert shown("date_from=2025-01-01&date_to=2025-02-28") == {ids["focused"]}
    assert shown("date_to=2024-12-31") == {ids["caseloads"]}
    assert shown("min_confidence=85") == {ids["notice"], ids["hostile"]}
    assert shown("max_confidence=65") == {ids["caseloads"]}
    assert shown("label=inspection_outcome&min_confidence=80") == {ids["hostile"]}
    assert shown("council=Northmoor&label=workforce_concern") == {ids["caseloads"]}
    councils = [o.text() for o in LexborHTMLParser(everything.text).css("select[name=council] option")]
    assert councils == ["any", "Eastfield", "Northmoor", "Westhaven"]


def test_a_wrong_filter_is_one_clear_message(desk_store):
    settings, _ = desk_store
    desk = client(settings)
    for query, message in [("date_from=2025-13-01", "date from '2025-13-01' is not a date (YYYY-MM-DD)"),
                           ("min_confidence=150", "min confidence '150' is not a percentage from 0 to 100"),
                           ("label=ofsted", "label 'ofsted' is not one of intervention_notice")]:
        response = desk.get("/flags?" + query)
        assert response.status_code == 400
        assert message in LexborHTMLParser(response.text).css_first("#error").text()


def test_each_flag_shows_its_evidence_scores_model_and_source(desk_store):
    settings, ids = desk_store
    page = LexborHTMLParser(client(settings).get("/flags").text)
    notice = page.css_first(f"article[data-item-id='{ids['notice']}']")
    assert notice.css_first(".briefing").text() == "The DfE issued an improvement notice."
    assert [m.text() for m in notice.css(".text mark")] == [NOTICE]
    assert "93%" in notice.css_first(".score.is-flagged").text()
    assert "Model tiny-v1" in notice.text()
    assert notice.css_first(".council").text() == "Northmoor County Council"
    focused = page.css_first(f"article[data-item-id='{ids['focused']}']")
    assert focused.css_first(".source a").attributes["href"] == "https://democracy.eastfield.example/mgAi.aspx?ID=7"
    assert notice.css_first(".source a") is None and "northmoor-cabinet.txt" in notice.css_first(".source code").text()


def test_text_from_minutes_is_shown_as_text_never_markup(desk_store):
    settings, ids = desk_store
    desk = client(settings)
    for path in ("/flags", f"/review/{ids['hostile']}"):
        response = desk.get(path)
        assert response.status_code == 200
        assert "<script" not in response.text.lower() and "<img" not in response.text.lower()
        assert "&lt;script&gt;alert(&#39;desk&#39;)&lt;/script&gt;" in response.text
        titles = [n.text() for n in LexborHTMLParser(response.text).css(".item-title")]
        assert any(t.strip() == HOSTILE_TITLE for t in titles)
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "script-src" not in CONTENT_SECURITY_POLICY  # default-src 'none': no script at all
    assert desk.get("/desk.css").headers["content-type"].startswith("text/css")


# ---------------------------------------------------------------- the review form
def review(desk, item_id, fields, csrf=None):
    page = desk.get(f"/review/{item_id}") if csrf is None else None
    data = {"csrf": csrf if csrf is not None else csrf_of(page), **fields}
    return desk.post(f"/review/{item_id}", data=data, follow_redirects=False)


def test_review_saves_a_label_that_training_reads_and_a_later_one_supersedes_it(desk_store):
    settings, ids = desk_store
    desk = client(settings)
    item_id = ids["caseloads"]
    form = LexborHTMLParser(desk.get(f"/review/{item_id}").text)
    # The model's answer is pre-filled, and the sentences offered are the item's own.
    assert "checked" in form.css_first("input[name=label][value=workforce_concern]").attributes
    assert "checked" in form.css_first(f"input[name=evidence-workforce_concern][value=\"{CASELOADS}\"]").attributes
    assert "checked" not in form.css_first("input[name=label][value=inspection_outcome]").attributes
    offered = [i.attributes["value"] for i in form.css("input[name=evidence-workforce_concern]")]
    assert offered == [CASELOADS, "Members asked about retention."]

    saved = review(desk, item_id, {"label": ["workforce_concern", "inspection_outcome"],
                                   "evidence-workforce_concern": [CASELOADS],
                                   "evidence-inspection_outcome": ["Members asked about retention."],
                                   "annotator": "Analyst One", "briefing": "Caseloads rose to 27 a worker."})
    assert saved.status_code == 303 and saved.headers["location"] == f"/review/{item_id}?saved=1"
    after = desk.get(saved.headers["location"])
    assert "Saved." in LexborHTMLParser(after.text).css_first("#saved").text()
    assert LexborHTMLParser(after.text).css_first("input[name=annotator]").attributes["value"] == "Analyst One"

    db = store.connect(settings.db)
    (row,) = store.label_history(db, item_id)
    assert json.loads(row["labels"]) == ["inspection_outcome", "workforce_concern"]
    assert row["annotator"] == "Analyst One" and row["source_file"] == "review desk" and row["created_at"]
    assert row["briefing"] == "Caseloads rose to 27 a worker."
    # `minutes train` gathers its rows here: the desk's label is among them.
    rows, _, names = _training_rows(settings, None, True)
    mine = [r for r in rows if r.get("id") == f"item-{item_id}"]
    assert mine and mine[0]["labels"] == ["inspection_outcome", "workforce_concern"]
    assert mine[0]["evidence"]["workforce_concern"] == [CASELOADS]
    assert names[-1].endswith("(1 imported labels)")

    again = review(desk, item_id, {"label": "workforce_concern", "evidence-workforce_concern": CASELOADS,
                                   "annotator": "Łucja Siân"})
    assert again.status_code == 303
    history = store.label_history(db, item_id)
    assert [h["annotator"] for h in history] == ["Analyst One", "Łucja Siân"]  # both kept
    assert history[1]["briefing"] is None  # no briefing typed
    (latest,) = [r for r in store.current_labels(db) if r["id"] == f"item-{item_id}"]
    assert latest["labels"] == ["workforce_concern"]  # the later one is the latest word
    page = LexborHTMLParser(desk.get(f"/review/{item_id}").text)
    assert len(page.css(".history tbody tr")) == 2
    assert "Reviewed by Łucja Siân" in page.css_first(".reviewed").text()
    assert page.css_first("input[name=annotator]").attributes["value"] == "Łucja Siân"


def test_an_untouched_machine_briefing_is_not_stored_as_a_persons(desk_store):
    settings, ids = desk_store
    desk = client(settings)
    assert review(desk, ids["notice"], {"label": "intervention_notice", "evidence-intervention_notice": NOTICE,
                                        "briefing": "The DfE issued an improvement notice.",
                                        "annotator": "AO"}).status_code == 303
    db = store.connect(settings.db)
    assert store.label_history(db, ids["notice"])[0]["briefing"] is None


@pytest.mark.parametrize("item, fields, status, message", [
    ("missing", {"label": "workforce_concern", "evidence-workforce_concern": CASELOADS},
     404, "no item 99999 in the store"),
    ("caseloads", {"label": "workforce_concern", "evidence-workforce_concern": "Caseloads were fine."},
     400, "evidence for workforce_concern is not in item"),
    ("caseloads", {"label": "ofsted", "evidence-ofsted": CASELOADS},
     400, "unknown label(s) ['ofsted']; known: intervention_notice, inspection_outcome, workforce_concern"),
    ("caseloads", {"label": "workforce_concern"}, 400, "label workforce_concern has no evidence sentence"),
    ("caseloads", {"evidence-workforce_concern": CASELOADS}, 400,
     "evidence given for label(s) not chosen: ['workforce_concern']"),
])
def test_bad_review_input_is_refused_with_the_reason_and_nothing_stored(desk_store, item, fields, status, message):
    settings, ids = desk_store
    desk = client(settings)
    item_id = 99999 if item == "missing" else ids[item]
    csrf = csrf_of(desk.get(f"/review/{ids['caseloads']}"))
    refused = review(desk, item_id, {**fields, "annotator": "Analyst One"}, csrf=csrf)
    assert refused.status_code == status
    shown = LexborHTMLParser(refused.text)
    text = (shown.css_first("#error") or shown.css_first("#message")).text()
    assert f"not saved: {message}" in text
    assert label_rows(settings) == 0
    if status == 400:  # the form comes back as filled in, to correct
        assert shown.css_first("input[name=annotator]").attributes["value"] == "Analyst One"


def test_the_same_check_as_label_import_judges_the_form(desk_store, monkeypatch):
    settings, ids = desk_store
    seen = []
    real = labelling.validate
    monkeypatch.setattr(labelling, "validate", lambda db, row: seen.append(row) or real(db, row))
    desk = client(settings)
    assert review(desk, ids["caseloads"], {"label": "workforce_concern",
                                           "evidence-workforce_concern": CASELOADS,
                                           "annotator": "AO"}).status_code == 303
    assert seen == [{"item_id": ids["caseloads"], "labels": ["workforce_concern"],
                     "evidence": {"workforce_concern": [CASELOADS]}, "annotator": "AO", "briefing": None}]


def test_a_review_needs_a_name(desk_store):
    settings, ids = desk_store
    refused = review(client(settings), ids["caseloads"], {"label": "workforce_concern",
                                                          "evidence-workforce_concern": CASELOADS})
    assert refused.status_code == 400 and "say who you are" in refused.text
    assert label_rows(settings) == 0


def test_next_uncertain_walks_the_label_export_queue_past_reviewed_items(desk_store):
    settings, ids = desk_store
    desk = client(settings)
    db = store.connect(settings.db)
    queue = [r["item_id"] for r in labelling.pick_items(db, 10, "uncertain", None)]
    assert len(queue) == 6
    first = desk.get("/review/next", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == f"/review/{queue[0]}"
    assert desk.get(f"/review/next?after={queue[2]}", follow_redirects=False).headers["location"] == \
        f"/review/{queue[3]}"
    item = store.item(db, queue[0])
    sentence = item_passages(item["text"], item["title"])[1]
    assert review(desk, queue[0], {"label": "workforce_concern", "evidence-workforce_concern": sentence,
                                   "annotator": "AO"}).status_code == 303
    assert desk.get("/review/next", follow_redirects=False).headers["location"] == f"/review/{queue[1]}"


# ---------------------------------------------------------------- CSRF and the token
def test_a_post_without_the_forms_csrf_token_is_refused(desk_store):
    settings, ids = desk_store
    desk = client(settings)
    fields = {"label": "workforce_concern", "evidence-workforce_concern": CASELOADS, "annotator": "AO"}
    item = ids["caseloads"]
    token = csrf_of(desk.get(f"/review/{item}"))
    assert desk.post(f"/review/{item}", data=fields).status_code == 403
    wrong = desk.post(f"/review/{item}", data={**fields, "csrf": "0" * 64})
    assert wrong.status_code == 403 and "CSRF token is missing or out of date" in wrong.text
    foreign = desk.post(f"/review/{item}", data={**fields, "csrf": token},
                        headers={"Origin": "https://elsewhere.example"})
    assert foreign.status_code == 403 and "another site" in foreign.text
    # A token from another browser (another CSRF cookie) does not fit this one's cookie.
    other = client(settings)
    other.get(f"/review/{item}")
    assert other.post(f"/review/{item}", data={**fields, "csrf": token}).status_code == 403
    assert label_rows(settings) == 0
    assert desk.post(f"/review/{item}", data={**fields, "csrf": token},
                     follow_redirects=False).status_code == 303
    assert label_rows(settings) == 1


def test_the_token_is_checked_on_every_request(desk_store):
    settings, ids = desk_store
    desk = TestClient(create_app(settings, token=TOKEN, allowed_hosts=None),
                      base_url="http://desk.example:8750")
    for path in ("/flags", "/desk.css", "/trends", "/runs", f"/review/{ids['notice']}"):
        missing = desk.get(path)
        assert missing.status_code == 401, path
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert desk.get("/flags", headers={"Authorization": "Bearer not-the-token"}).status_code == 403
    assert desk.get("/flags", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert desk.get("/flags?token=not-the-token").status_code == 403
    posted = desk.post(f"/review/{ids['notice']}", data={"label": "intervention_notice"})
    assert posted.status_code == 401 and label_rows(settings) == 0

    # Once via the address: a cookie the page's scripts cannot read, and the token leaves the URL.
    opened = desk.get(f"/flags?label=intervention_notice&token={TOKEN}", follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/flags?label=intervention_notice"
    cookie = opened.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie
    assert shown_ids(desk.get(opened.headers["location"])) == [ids["notice"]]
    # With the token, a POST still needs the form's CSRF token.
    fields = {"label": "intervention_notice", "evidence-intervention_notice": NOTICE, "annotator": "AO"}
    assert desk.post(f"/review/{ids['notice']}", data=fields).status_code == 403
    csrf = csrf_of(desk.get(f"/review/{ids['notice']}"))
    assert desk.post(f"/review/{ids['notice']}", data={**fields, "csrf": csrf},
                     follow_redirects=False).status_code == 303
    # A cookie from another token is not this one's.
    stale = TestClient(create_app(settings, token=TOKEN + "-rotated", allowed_hosts=None),
                       base_url="http://desk.example:8750", cookies=dict(desk.cookies))
    assert stale.get("/flags").status_code == 403


def test_without_a_token_only_this_machines_names_are_answered(desk_store):
    settings, _ = desk_store
    desk = client(settings)
    assert desk.get("/flags").status_code == 200
    assert desk.get("/flags", headers={"Host": "localhost:8750"}).status_code == 200
    # A page elsewhere pointing its own domain at 127.0.0.1 (DNS rebinding) is refused.
    assert desk.get("/flags", headers={"Host": "attacker.example"}).status_code == 400
    assert desk.request("PUT", "/flags").status_code == 405


# ---------------------------------------------------------------- trends, runs and models
def test_trends_count_flags_per_council_per_quarter_and_list_councils_to_watch(desk_store):
    settings, ids = desk_store
    desk = client(settings)
    page = LexborHTMLParser(desk.get("/trends?as_of=2025-06-30").text)
    quarters = [th.text() for th in page.css("table.trends thead th")][2:-1]
    assert quarters == ["2024 Q4", "2025 Q1"]
    rows = {}
    council = None
    for tr in page.css("table.trends tbody tr"):
        head = tr.css_first("th")
        council = head.text() if head else council
        cells = [td.text() for td in tr.css("td")]
        rows[(council, cells[0])] = cells[1:]
    assert rows[("Northmoor", "Intervention")] == ["0", "1", "1"]
    assert rows[("Northmoor", "Inspection")] == ["0", "1", "1"]
    assert rows[("Northmoor", "Workforce")] == ["1", "0", "1"]
    assert rows[("Eastfield", "Inspection")] == ["0", "1", "1"]
    assert "1 flagged item without a meeting date" in page.text()  # Westhaven's
    assert len(page.css("svg rect.bar-intervention_notice")) == 1
    # 2024 Q4: one workforce concern; 2025 Q1: one intervention notice, two inspection outcomes.
    assert [r.css_first("title").text() for r in page.css("svg rect")] == [
        "2024 Q4, workforce concerns: 1", "2025 Q1, intervention notices: 1",
        "2025 Q1, inspection outcomes: 2"]
    watch = page.css("#watch ul.watch li")
    assert [li.css_first("a").text() for li in watch] == ["Northmoor"]
    assert "inadequate judgement and intervention notice" in watch[0].text()
    assert watch[0].css_first("a").attributes["href"] == \
        "/flags?council=Northmoor&date_from=2024-06-30&date_to=2025-06-30"
    # The link: the council's flags in those 12 months.
    assert set(shown_ids(desk.get(watch[0].css_first("a").attributes["href"]))) == \
        {ids["notice"], ids["hostile"], ids["caseloads"]}

    later = LexborHTMLParser(desk.get("/trends?as_of=2026-12-01").text)
    assert later.css("#watch ul.watch li") == []
    assert later.css_first("#watch .empty a").attributes["href"] == "/trends?as_of=2025-03-10"
    assert desk.get("/trends?as_of=soon").status_code == 400

    # A person's word counts in place of the model's: caseloads reviewed as no flag at all.
    assert review(desk, ids["caseloads"], {"annotator": "AO"}).status_code == 303
    page = LexborHTMLParser(desk.get("/trends?as_of=2025-06-30").text)
    assert [th.text() for th in page.css("table.trends thead th")][2:-1] == ["2025 Q1"]


def test_runs_and_models_page_shows_runs_and_each_versions_card(desk_store):
    settings, _ = desk_store
    db = store.connect(settings.db)
    run_id = store.start_run(db, None)
    store.finish_run(db, run_id, "ok", {"items_new": 6, "items_classified": 6, "items_summarised": 1},
                     [], "briefing.html", "tiny-v1", store.max_item_id(db))
    for version, f1 in (("20261101-000000-aaaaaa", 0.81), ("20261201-000000-bbbbbb", 0.84)):
        folder = settings.models_dir / "classifier" / version
        folder.mkdir(parents=True)
        (folder / "minutes_model.json").write_text(json.dumps({
            "version": version, "trained_at": "2026-12-01T00:00:00", "training_rows": 1100,
            "data_hash": "abcdef0123456789", "metrics": {"macro_f1": f1}}))
    (settings.models_dir / "classifier" / "promoted.json").write_text(
        json.dumps({"history": ["20261101-000000-aaaaaa"]}))
    page = LexborHTMLParser(client(settings).get("/runs").text)
    run_row = [td.text() for td in page.css("#runs tbody tr")[0].css("td")]
    assert run_row[0] == str(run_id) and run_row[3] == "ok" and run_row[4:7] == ["6", "6", "1"]
    versions = page.css("#models-classifier tbody tr")
    assert [v.css("td")[1].text() for v in versions] == ["20261201-000000-bbbbbb", "20261101-000000-aaaaaa"]
    assert re.search(r"macro_f1 0\.84", versions[0].text()) and "promoted" in versions[1].text()
    assert "No summariser trained" in page.css_first("#models-summariser").text()
    assert "minutes models promote VERSION --gold FILE" in page.text()
