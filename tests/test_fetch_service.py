"""ModernGov through the web service's GetMeeting, against the project's fake site on 127.0.0.1:
one request per meeting, the same items as the HTML pages give, conditional and repeated asks,
one pace per host, Retry-After, and the markup councils really send."""

from __future__ import annotations

import json
import threading
import time
from datetime import date, timedelta

import pytest
from typer.testing import CliRunner

from pipeline import store
from pipeline.cli import app
from pipeline.config import Settings, Source
from pipeline.fetch import (
    Hosts,
    fetch_moderngov,
    parse_meeting_xml,
    reparse_stored_meetings,
    retry_after_s,
)

from .fixtures.moderngov_service import SECRET, Item, Meeting, ServiceSite, serve_sites

runner = CliRunner()
CABINET, CHILDREN = ["Cabinet"], ["Children's Services"]


@pytest.fixture()
def served():
    """A started server for any number of ServiceSites: served({"/": site}) -> base addresses."""
    servers = []

    def start(sites):
        server, bases = serve_sites(sites)
        servers.append(server)
        return server, bases

    yield start
    for server in servers:
        server.shutdown()


def settings_for(tmp_path, name="f.db", **overrides) -> Settings:
    values = {"db": tmp_path / name, "request_delay_s": 0.0, "request_timeout_s": 5.0, **overrides}
    return Settings(**values)


def fetch(db, settings, url, committees, **kwargs):
    # A fresh Hosts per call is a fresh run: no pace or Retry-After carried from another test.
    kwargs.setdefault("hosts", Hosts())
    return fetch_moderngov(db, settings, Source(kind="moderngov", url=url, committees=committees), **kwargs)


def paths(server, start: int = 0) -> list[str]:
    return [r.path for r in server.log[start:]]


def stored_items(db) -> dict[str, dict]:
    return {i["source"].rsplit("/", 1)[-1]: i for i in store.items(db)}


# ---------------------------------------------------------------- one request per meeting
def test_one_get_meeting_per_meeting_and_a_second_run_asks_only_for_listings(served, tmp_path):
    site = ServiceSite()
    server, bases = served({"/": site})
    db = store.connect(tmp_path / "f.db")
    report = fetch(db, settings_for(tmp_path), bases["/"], CHILDREN)
    asked = paths(server)
    assert asked[0] == "/robots.txt" and asked[1].startswith("/mgWebService.asmx/GetCommittees")
    assert asked[2].startswith("/mgWebService.asmx/GetMeetings?lCommitteeId=202&sFromDate=01/01/2000&sToDate=")
    # 1 listing + 1 GetMeeting per meeting; no meeting or item page.
    assert asked[3:] == ["/mgWebService.asmx/GetMeeting?lMeetingId=6004",
                         "/mgWebService.asmx/GetMeeting?lMeetingId=6005"]
    assert report.requests == 5 and report.meetings_asked == 2 and not report.failed
    assert set(stored_items(db)) == {"mgAi.aspx?ID=9131", "mgAi.aspx?ID=9132"}

    # Cabinet: 6001 in the items, 6002 in its printed minutes, 6003 cancelled.
    first = fetch(db, settings_for(tmp_path), bases["/"], CABINET)
    assert first.meetings_cancelled == 1 and first.meetings_complete == 2 and not first.failed
    mark = len(server.log)
    second = fetch(db, settings_for(tmp_path), bases["/"], CABINET)
    assert second.items_new == 0 and second.meetings_asked == 0 and not second.failed
    assert [p.split("?")[0] for p in paths(server, mark)] == [
        "/robots.txt", "/mgWebService.asmx/GetCommittees", "/mgWebService.asmx/GetMeetings"]
    assert not any("6003" in p for p in paths(server))  # the cancelled meeting is never asked for


def test_printed_minutes_are_fetched_only_when_no_item_carries_minutes(served, tmp_path):
    site = ServiceSite()
    server, bases = served({"/": site})
    db = store.connect(tmp_path / "f.db")
    fetch(db, settings_for(tmp_path), bases["/"], CABINET)
    pdfs = [p for p in paths(server) if "mgConvert2PDF" in p or p.endswith(".pdf")]
    # 6002's items have no minutes: its "Printed minutes" (not the agenda frontsheet); 6001's
    # items carry their minutes, so its Ofsted letter (a linked document) is never fetched.
    assert pdfs == ["/mgConvert2PDF.aspx?ID=7002",
                    "/documents/g6002/Printed%20minutes%2012th-Feb-2025%2018.00%20Cabinet.pdf"]
    pdf_items = [i for i in store.items(db) if i["source"].endswith("mgConvert2PDF.aspx?ID=7002")]
    assert len(pdf_items) == 3 and all(i["date"] == "2025-02-12" and i["committee"] == "Cabinet" for i in pdf_items)
    assert not {"mgAi.aspx?ID=9111", "mgAi.aspx?ID=9112"} & set(stored_items(db))  # agenda-only items


def test_items_from_get_meeting_are_the_items_of_the_html_pages(served, tmp_path):
    by_service, by_pages = ServiceSite(), ServiceSite(get_meeting=False)
    server, bases = served({"/service/": by_service, "/pages/": by_pages})
    service_db, pages_db = store.connect(tmp_path / "s.db"), store.connect(tmp_path / "p.db")
    for db, base in ((service_db, bases["/service/"]), (pages_db, bases["/pages/"])):
        report = fetch(db, settings_for(tmp_path), base, CABINET + CHILDREN)
        assert not report.failed
    assert not any("mgAi.aspx" in p for p in by_service.requests)
    # The site without GetMeeting is asked once (the answer is not a meeting), then read by its pages.
    assert sum("GetMeeting?" in p for p in by_pages.requests) == 1
    assert sum("mgAi.aspx" in p for p in by_pages.requests) == 9  # one per public item

    service, pages = stored_items(service_db), stored_items(pages_db)
    fields = ("number", "title", "purpose", "minutes", "resolutions", "text", "committee", "date", "is_procedural")
    same = ["mgAi.aspx?ID=9101", "mgAi.aspx?ID=9102", "mgAi.aspx?ID=9104", "mgAi.aspx?ID=9131"]
    for source in same:
        assert {f: service[source][f] for f in fields} == {f: pages[source][f] for f in fields}, source
    assert "Ofsted inspection letter" in service["mgAi.aspx?ID=9102"]["text"]  # its linked document, as on the page
    # Twice-escaped `&amp;nbsp;`: the page shows the entity as text, the service path a space.
    assert "41&nbsp;of" in pages["mgAi.aspx?ID=9132"]["text"]
    assert "filled 41 of 130 posts" in service["mgAi.aspx?ID=9132"]["text"]
    # Restricted: neither path stores it, the service path counts it.
    assert "mgAi.aspx?ID=9103" not in service and "mgAi.aspx?ID=9103" not in pages
    assert not any(SECRET in i["text"] for i in store.items(service_db))


def test_word_markup_and_nbsp_come_out_as_plain_lines(served, tmp_path):
    site = ServiceSite()
    _, bases = served({"/": site})
    db = store.connect(tmp_path / "f.db")
    report = fetch(db, settings_for(tmp_path), bases["/"], CABINET + CHILDREN)
    assert report.restricted_items == 1
    items = stored_items(db)
    word = items["mgAi.aspx?ID=9131"]
    assert word["minutes"].splitlines() == [
        "The Panel received the annual report of the Independent Reviewing Officer service for 2024.",
        "• Reviews held on time rose to 91 per cent of children in care.",
        "• Reviewing officers carried an average of 84 children each, above the handbook's range.",
        "RESOLVED: That the report be noted and a recruitment plan be brought to the next meeting.",
    ]
    assert word["resolutions"].startswith("RESOLVED: That the report be noted")
    assert word["number"] == "5" and word["title"] == "Independent Reviewing Officer Annual Report"
    assert "placed more than twenty miles from home at 31 December." in items["mgAi.aspx?ID=9104"]["minutes"]
    for item in store.items(db):
        for junk in ("&nbsp", "nbsp;", "\u00a0", "mso", "supportLists", "WordDocument", "Zoom", "o:p", "<"):
            assert junk not in item["text"], (junk, item["source"])


# ---------------------------------------------------------------- asked again, until the minutes are in
@pytest.mark.parametrize("validators", [True, False], ids=["etag-304", "no-validators"])
def test_unpublished_meeting_is_asked_again_then_completed_and_left_alone(served, tmp_path, validators):
    site = ServiceSite(validators=validators)
    server, bases = served({"/": site})
    db = store.connect(tmp_path / "f.db")
    base = bases["/"]
    first = fetch(db, settings_for(tmp_path), base, CHILDREN)
    assert first.meetings_awaiting_minutes == 1 and first.meetings_complete == 1
    assert not {"mgAi.aspx?ID=9141", "mgAi.aspx?ID=9142"} & set(stored_items(db))  # nothing until minutes
    state = store.meeting_fetch_state(db, base, "6005")
    assert not state["is_complete"] and state["times_asked"] == 1

    mark = len(server.log)
    second = fetch(db, settings_for(tmp_path), base, CHILDREN)
    asked = [r for r in server.log[mark:] if "GetMeeting?" in r.path]
    assert [r.path for r in asked] == ["/mgWebService.asmx/GetMeeting?lMeetingId=6005"]  # 6004 is complete
    assert second.meetings_not_modified == 1 and second.items_new == 0
    assert ("if-none-match" in asked[0].headers) == validators
    assert store.meeting_fetch_state(db, base, "6005")["times_asked"] == 2

    site.publish_minutes("6005", {
        "9141": "<p>The Board noted that 62 per cent of care leavers were in education, employment or training.</p>",
        "9142": "<p>RESOLVED: That the revised local offer for care leavers be published in June.</p>"})
    third = fetch(db, settings_for(tmp_path), base, CHILDREN)
    assert third.meetings_complete == 1 and third.items_new == 2
    assert "62 per cent of care leavers" in stored_items(db)["mgAi.aspx?ID=9141"]["minutes"]
    state = store.meeting_fetch_state(db, base, "6005")
    assert state["is_complete"] and state["times_asked"] == 3

    mark = len(server.log)
    fourth = fetch(db, settings_for(tmp_path), base, CHILDREN)
    assert fourth.meetings_asked == 0 and not any("GetMeeting?" in p for p in paths(server, mark))


def test_stored_xml_is_read_again_without_the_network(served, tmp_path):
    site = ServiceSite()
    server, bases = served({"/": site})
    db = store.connect(tmp_path / "f.db")
    fetch(db, settings_for(tmp_path), bases["/"], CABINET + CHILDREN)
    before = {s: (i["title"], i["text"]) for s, i in stored_items(db).items()}
    xml = store.raw_page(db, bases["/"] + "mgWebService.asmx/GetMeeting?lMeetingId=6001")
    assert b"<minutesnonemptyhtmlbody>" in xml["content"]
    server.shutdown()
    # As after a change to the readers: every stored document reads as changed.
    db.execute("UPDATE documents SET content_hash = 'reader-changed'")
    report = reparse_stored_meetings(db, settings_for(tmp_path))
    assert not report.failed and report.documents_replaced == 6  # 5 items and the printed minutes
    assert {s: (i["title"], i["text"]) for s, i in stored_items(db).items()} == before


# ---------------------------------------------------------------- pace, Retry-After, 404
def test_two_sources_on_one_host_share_one_pace(served, tmp_path):
    delay = 0.15
    sites = {"/harrowmere/": ServiceSite(), "/ashby/": ServiceSite()}
    server, bases = served(sites)
    hosts = Hosts()  # one run: both sources share it, as the process-wide one does in `nightly`
    reports = {}

    def run(prefix):
        db = store.connect(tmp_path / f"{prefix.strip('/')}.db")
        reports[prefix] = fetch(db, settings_for(tmp_path, request_delay_s=delay), bases[prefix], CHILDREN,
                                hosts=hosts)

    threads = [threading.Thread(target=run, args=(p,)) for p in sites]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(not r.failed and r.items_new == 2 for r in reports.values())
    arrivals = [r.at for r in server.log]
    assert len(arrivals) == 9  # one robots.txt for the host, then 4 requests from each source
    assert sum(p == "/robots.txt" for p in paths(server)) == 1
    assert {p.split("/")[1] for p in paths(server)[1:]} == {"harrowmere", "ashby"}
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert min(gaps) >= delay * 0.7, gaps  # a margin for the loopback's own jitter, never more


def test_429_with_retry_after_is_waited_out(served, tmp_path):
    site = ServiceSite()
    server, bases = served({"/": site})
    site.throttle("GetMeeting?lMeetingId=6004", "1")
    db = store.connect(tmp_path / "f.db")
    report = fetch(db, settings_for(tmp_path), bases["/"], CHILDREN)
    assert not report.failed and "mgAi.aspx?ID=9131" in stored_items(db)
    tries = [r.at for r in server.log if r.path.endswith("GetMeeting?lMeetingId=6004")]
    assert len(tries) == 2 and tries[1] - tries[0] >= 0.95


def test_retry_after_over_the_cap_stops_asking_that_host_until_the_next_run(served, tmp_path):
    site = ServiceSite()
    server, bases = served({"/": site})
    site.throttle("GetMeeting?lMeetingId=6004", "3600")
    db = store.connect(tmp_path / "f.db")
    started = time.monotonic()
    report = fetch(db, settings_for(tmp_path, retry_after_cap_s=5.0), bases["/"], CHILDREN)
    assert time.monotonic() - started < 5.0  # not an hour, and not the cap either
    errors = {f["path"].rsplit("=", 1)[-1]: f["error"] for f in report.failed}
    assert set(errors) == {"6004", "6005"}
    assert "retry after 3600 s" in errors["6004"] and "5 s cap" in errors["6004"]
    assert errors["6005"].startswith("not asked")
    assert sum("GetMeeting?" in p for p in paths(server)) == 1  # 6005 never reached the site

    again = fetch(db, settings_for(tmp_path), bases["/"], CHILDREN)  # the next run
    assert not again.failed and {"mgAi.aspx?ID=9131", "mgAi.aspx?ID=9132"} <= set(stored_items(db))


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_s("120") == 120.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: go now
    later = time.time() + 30
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(later))
    assert 25 <= retry_after_s(http_date) <= 31


def test_a_404_is_not_asked_again_in_the_run_and_the_meeting_waits_for_the_next(served, tmp_path):
    site = ServiceSite()
    server, bases = served({"/": site})
    site.gone.add("6002")
    db = store.connect(tmp_path / "f.db")
    report = fetch(db, settings_for(tmp_path), bases["/"], CABINET)
    assert report.failed == [{"path": bases["/"] + "mgWebService.asmx/GetMeeting?lMeetingId=6002",
                              "error": "HTTP 404"}]
    assert sum(p.endswith("lMeetingId=6002") for p in paths(server)) == 1
    site.gone.clear()
    again = fetch(db, settings_for(tmp_path), bases["/"], CABINET)
    assert not again.failed and again.meetings_asked == 1 and again.meetings_complete == 1


# ---------------------------------------------------------------- the date window, the XML
def test_the_date_window_is_kept_on_our_side_when_the_site_ignores_it(served, tmp_path):
    site = ServiceSite(honours_window=False)
    site.add_meeting(Meeting("6010", "202", "11/06/2014", [Item("9160", "1", "Old Item", "<p>x</p>")]))
    future = (date.today() + timedelta(days=30)).strftime("%d/%m/%Y")
    site.add_meeting(Meeting("6011", "202", future, [Item("9161", "1", "Next Month", "<p>x</p>")]))
    server, bases = served({"/": site})
    db = store.connect(tmp_path / "f.db")
    report = fetch(db, settings_for(tmp_path), bases["/"], CHILDREN, since=date(2015, 1, 1))
    listing = next(p for p in paths(server) if "GetMeetings" in p)
    assert f"sFromDate=01/01/2015&sToDate={date.today():%d/%m/%Y}" in listing
    asked = [p for p in paths(server) if "GetMeeting?" in p]
    assert asked == ["/mgWebService.asmx/GetMeeting?lMeetingId=6004", "/mgWebService.asmx/GetMeeting?lMeetingId=6005"]
    assert report.meetings_listed == 2


def test_get_meeting_answers_read_with_a_namespace_and_without_one():
    site = ServiceSite()
    plain = site.meeting_xml(site.meetings["6001"])
    assert plain.count(b"&amp;nbsp;") == 5  # escaped HTML: the entity's own & escaped
    spaced = plain.replace(b"<getmeeting>", b"<getmeeting xmlns='http://tempuri.org/'>")
    for answer in (plain, spaced):
        meeting = parse_meeting_xml(answer)
        assert meeting.id == "6001" and meeting.date == "2025-01-15" and meeting.is_published
        assert [i.id for i in meeting.items] == ["9101", "9102", "9103", "9104"]
        assert [i.is_restricted for i in meeting.items] == [False, False, True, False]
        assert meeting.items[1].documents == [{"title": "Ofsted inspection letter", "url": "mgConvert2PDF.aspx?ID=7101"}]
        assert meeting.items[3].minutes_html.count("&nbsp;") == 5
    assert parse_meeting_xml(b"<html><body>Meeting not found</body></html>") is None
    assert parse_meeting_xml(b"not xml at all") is None


# ---------------------------------------------------------------- as a user runs it
def test_fetch_moderngov_command_reports_the_meetings_it_asked_for(served, env):
    site = ServiceSite()
    _, bases = served({"/": site})
    args = ["fetch", "moderngov", bases["/"], "--committee", "Children's Services", "--delay", "0"]
    first = runner.invoke(app, args + ["--json"], env=env)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout.strip().splitlines()[-1])
    assert report["items_new"] == 2 and report["meetings_asked"] == 2 and report["requests"] == 5
    assert report["meetings_awaiting_minutes"] == 1 and report["failed"] == []
    second = runner.invoke(app, args, env=env)
    assert second.exit_code == 0, second.output
    assert "1 meeting awaiting minutes" in second.stderr and "2 listed" in second.stderr
