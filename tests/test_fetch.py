"""ModernGov fetching against a local site on 127.0.0.1: no test touches the internet."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipeline import store
from pipeline.cli import app
from pipeline.config import Settings, Source
from pipeline.fetch import FetchError, PoliteClient, fetch_moderngov

from .fixtures.moderngov_site import Site, serve

runner = CliRunner()


@pytest.fixture()
def site():
    site = Site()
    server, url = serve(site)
    yield site, url
    server.shutdown()


def settings_for(tmp_path) -> Settings:
    return Settings(db=tmp_path / "f.db", request_delay_s=0.0, request_timeout_s=1.0)


FOLLOWED = ["Cabinet", "Children and Young People"]


def test_fetch_moderngov_stores_every_item_with_its_metadata(site, tmp_path):
    server_site, url = site
    db = store.connect(tmp_path / "f.db")
    report = fetch_moderngov(db, settings_for(tmp_path),
                             Source(kind="moderngov", url=url, council="Fernley Borough Council",
                                    committees=FOLLOWED))
    items = {i["title"]: i for i in store.items(db)}
    assert {"Ofsted Focused Visit Letter", "Budget Monitoring", "Social Work Workforce",
            "Children's Services: Statutory Direction and Commissioner's Review"} <= set(items)
    assert "Land at Mill Lane" not in items  # Planning Committee is not followed
    visit = items["Ofsted Focused Visit Letter"]
    assert visit["council"] == "Fernley Borough Council" and visit["committee"] == "Cabinet"
    assert visit["date"] == "2025-01-15" and visit["source"] == url + "mgAi.aspx?ID=9001"
    pdf_items = [i for i in store.items(db) if i["source"].endswith(".pdf")]
    assert len(pdf_items) == 3 and all(i["date"] == "2025-02-12" for i in pdf_items)
    raw = db.execute("SELECT COUNT(*) FROM raw_pages").fetchone()[0]
    assert raw >= 5  # fetched pages and documents are kept with their address
    assert report.items_new == len(store.items(db))


def test_fetch_moderngov_reports_broken_slow_failing_and_offsite_pages_and_stores_the_rest(site, tmp_path):
    _, url = site
    db = store.connect(tmp_path / "f.db")
    report = fetch_moderngov(db, settings_for(tmp_path), Source(kind="moderngov", url=url, committees=FOLLOWED))
    errors = {f["path"].rsplit("=", 1)[-1]: f["error"] for f in report.failed}
    assert set(errors) == {"9003", "9004", "9005", "9007"}
    assert "binary" in errors["9003"]
    assert "no answer within 1 s" in errors["9004"]
    assert "HTTP 500 after 3 tries" in errors["9005"]
    assert "outside the configured site" in errors["9007"]
    assert "Social Work Workforce" in {i["title"] for i in store.items(db)}


def test_second_fetch_asks_only_for_listings_then_picks_up_a_new_meeting(site, tmp_path):
    server_site, url = site
    db = store.connect(tmp_path / "f.db")
    source = Source(kind="moderngov", url=url, committees=["Cabinet"])
    fetch_moderngov(db, settings_for(tmp_path), source)
    before = len(store.items(db))
    server_site.requests.clear()
    again = fetch_moderngov(db, settings_for(tmp_path), source)
    assert again.items_new == 0 and not again.failed
    listings = [r for r in server_site.requests if "GetMeetings" in r]
    assert len(listings) == 1  # one listing request for the one followed committee
    assert [r for r in server_site.requests if "robots" not in r and "GetCommittees" not in r] == listings

    server_site.add_meeting("101", "5010", "09/04/2025", "9010", "Improvement Notice Review",
                            "The DfE's review of progress under the improvement notice was positive.")
    third = fetch_moderngov(db, settings_for(tmp_path), source)
    assert third.items_new == 1 and len(store.items(db)) == before + 1
    assert any(r.endswith("mgAi.aspx?ID=9010") for r in server_site.requests)


def test_fetch_falls_back_to_html_pages_when_the_web_service_is_absent(tmp_path):
    site = Site(web_service=False)
    server, url = serve(site)
    try:
        db = store.connect(tmp_path / "f.db")
        report = fetch_moderngov(db, settings_for(tmp_path), Source(kind="moderngov", url=url, committees=["Cabinet"]))
    finally:
        server.shutdown()
    assert not report.failed
    assert any("mgListCommittees.aspx" in r for r in site.requests)
    assert any("mgCommitteeDetails.aspx?ID=101" in r for r in site.requests)
    assert {i["title"] for i in store.items(db)} >= {"Ofsted Focused Visit Letter", "Budget Monitoring"}


def test_fetch_client_refuses_other_sites_file_urls_and_robots_disallowed_paths(site):
    _, url = site
    client = PoliteClient(url, "minutes-pipeline-test", delay_s=0.0, timeout_s=1.0)
    try:
        with pytest.raises(FetchError, match="outside the configured site"):
            client.get("http://example.org/mgAi.aspx?ID=1")
        with pytest.raises(FetchError, match="outside the configured site"):
            client.get("file:///etc/passwd")
        with pytest.raises(FetchError, match="robots.txt"):
            client.get("private/secret.html")
    finally:
        client.close()
    with pytest.raises(FetchError, match="http"):
        PoliteClient("file:///etc/", "ua")


def test_fetch_moderngov_command_as_a_user_runs_it(site, env):
    _, url = site
    args = ["fetch", "moderngov", url, "--committee", "Cabinet", "--delay", "0", "--json"]
    first = runner.invoke(app, args, env=env)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout.strip().splitlines()[-1])
    assert report["items_new"] == 5 and report["failed"] == []
    second = runner.invoke(app, args, env=env)
    assert json.loads(second.stdout.strip().splitlines()[-1])["items_new"] == 0
    failing = runner.invoke(app, ["fetch", "moderngov", "http://127.0.0.1:9/", "--delay", "0"], env=env)
    assert failing.exit_code == 1 and "http://127.0.0.1:9/" in failing.stderr
