"""The review desk in headless Chromium (Debian's, driven by Playwright; never a downloaded
browser build): on a store filled by the nightly run over data/samples, open the flags, review
one item through the form, and find the new label in the store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import store
from pipeline.config import Settings, Source
from pipeline.nightly import run_nightly

from .conftest import REPO, SAMPLES

CHROMIUM = Path("/usr/bin/chromium")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def desk_url(tmp_path, tiny_models):
    """`minutes serve` over a store the nightly run filled, as `make demo` fills data/minutes.db."""
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not at /usr/bin/chromium (`make browser` installs it)")
    pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra: make install")
    settings = Settings(db=tmp_path / "minutes.db", models_dir=tiny_models, out_dir=tmp_path / "briefings",
                        labelled_dir=REPO / "data" / "labelled",
                        sources=[Source(kind="path", path=str(SAMPLES))])
    result = run_nightly(settings)
    assert result.items_classified > 0 and not result.failed
    port = _free_port()
    env = {**os.environ, "MINUTES_MODELS_DIR": str(tiny_models)}
    env.pop("MINUTES_TOKEN", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", "--db", str(settings.db), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"minutes serve did not start: {server.communicate()[1]}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", settings
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_an_analyst_reviews_a_flag_in_chromium_and_the_label_is_stored(desk_url):
    from playwright.sync_api import sync_playwright

    base, settings = desk_url
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 390, "height": 900})
            # A CSP violation (our own stylesheet blocked, say) shows as a console error.
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{base}/flags")
            articles = page.locator("article.item")
            assert articles.count() > 0, "the tiny model flagged nothing in data/samples"
            # The stylesheet arrived under the page's Content-Security-Policy.
            assert page.eval_on_selector("header.site", "e => getComputedStyle(e).borderBottomStyle") == "solid"
            first = articles.first
            item_id = int(first.get_attribute("data-item-id"))
            title = first.locator(".item-title").inner_text()
            first.get_by_role("link", name="Review").click()
            page.wait_for_url(f"{base}/review/{item_id}")
            assert page.locator("h1.item-title").inner_text() == title

            # The analyst's answer: a workforce concern, quoted from the item's own sentences.
            for box in page.locator("form.review input[type=checkbox]").all():
                box.uncheck()
            page.check("input[name=label][value=workforce_concern]")
            sentence_box = page.locator("input[name=evidence-workforce_concern]").first
            sentence_box.check()
            sentence = sentence_box.get_attribute("value")
            page.fill("input[name=annotator]", "Browser Analyst")
            page.get_by_role("button", name="Save review").click()
            page.wait_for_url(f"{base}/review/{item_id}?saved=1")
            assert "Saved." in page.locator("#saved").inner_text()
            assert "Reviewed by Browser Analyst" in page.locator(".reviewed").inner_text()
        finally:
            browser.close()
    assert problems == []
    db = store.connect(settings.db)
    (row,) = store.label_history(db, item_id)
    assert row["annotator"] == "Browser Analyst" and row["source_file"] == "review desk"
    (latest,) = [r for r in store.current_labels(db) if r["id"] == f"item-{item_id}"]
    assert latest["labels"] == ["workforce_concern"]
    assert latest["evidence"] == {"workforce_concern": [sentence]}

