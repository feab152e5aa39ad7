"""ModernGov connector: walk a council's committees, meetings and agenda items (web service where
the site answers, HTML pages otherwise), politely, and hand each document to ingest.

Polite and safe: a named User-Agent, a delay between requests, robots.txt, retries with backoff on
429/5xx, a timeout and a size cap on every request, redirects only within the configured site.
"""

from __future__ import annotations

import hashlib
import re
import time
import urllib.robotparser
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from urllib.parse import urljoin, urlparse

import httpx
from selectolax.lexbor import LexborHTMLParser

from pipeline import store
from pipeline.config import Settings, Source
from pipeline.ingest import IngestReport, ingest_bytes, limits_from
from pipeline.ingest.readers import InputError
from pipeline.ingest.split import parse_date


class FetchError(Exception):
    """One address could not be fetched; the message is the reason."""


@dataclass
class Page:
    url: str
    status: int
    content: bytes
    content_type: str
    etag: str | None = None
    last_modified: str | None = None


@dataclass
class PoliteClient:
    """One site's HTTP client: everything it asks for stays under `base`."""

    base: str
    user_agent: str
    delay_s: float = 1.0
    timeout_s: float = 20.0
    max_bytes: int = 20 * 1024 * 1024
    retries: int = 3
    requests: int = 0
    _last: float = 0.0
    _robots: urllib.robotparser.RobotFileParser | None = None
    _client: httpx.Client = field(init=False)

    def __post_init__(self):
        self.base = self.base.rstrip("/") + "/"
        parsed = urlparse(self.base)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise FetchError(f"{self.base}: a ModernGov address must be http(s)://host/...")
        self._client = httpx.Client(headers={"User-Agent": self.user_agent},
                                    timeout=self.timeout_s, follow_redirects=False)

    def close(self):
        self._client.close()

    def within_site(self, url: str) -> bool:
        a, b = urlparse(url), urlparse(self.base)
        return a.scheme in ("http", "https") and a.scheme == b.scheme and a.netloc == b.netloc \
            and a.path.startswith(b.path.rstrip("/") or "/")

    def allowed(self, url: str) -> bool:
        if self._robots is None:
            self._robots = urllib.robotparser.RobotFileParser()
            robots_url = urljoin(self.base, "/robots.txt")
            try:
                page = self._get(robots_url, {}, check_robots=False)
                lines = page.content.decode("utf-8", "replace").splitlines() if page.status == 200 else []
            except FetchError:
                lines = []
            self._robots.parse(lines)
        return self._robots.can_fetch(self.user_agent, url)

    def get(self, url: str, etag: str | None = None, last_modified: str | None = None) -> Page:
        url = urljoin(self.base, url)
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        return self._get(url, headers)

    def _get(self, url: str, headers: dict, check_robots: bool = True) -> Page:
        for _ in range(6):  # redirects, each checked against the site
            if not self.within_site(url):
                raise FetchError(f"{url}: outside the configured site {self.base}; not fetched")
            if check_robots and not self.allowed(url):
                raise FetchError(f"{url}: disallowed by robots.txt")
            response = self._request(url, headers)
            if response.status in (301, 302, 303, 307, 308):
                url = urljoin(url, response.content_type)  # _request puts Location there
                continue
            return response
        raise FetchError(f"{url}: too many redirects")

    def _request(self, url: str, headers: dict) -> Page:
        last_error = ""
        for attempt in range(self.retries):
            wait = self._last + self.delay_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last = time.monotonic()
            self.requests += 1
            try:
                with self._client.stream("GET", url, headers=headers) as response:
                    if response.status_code in (301, 302, 303, 307, 308):
                        return Page(url, response.status_code, b"", response.headers.get("location", ""))
                    if response.status_code == 429 or response.status_code >= 500:
                        last_error = f"HTTP {response.status_code}"
                        retry_after = response.headers.get("retry-after", "")
                        pause = float(retry_after) if retry_after.isdigit() else 0.5 * 2 ** attempt
                        time.sleep(min(pause, 30.0))
                        continue
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise FetchError(f"{url}: larger than the {self.max_bytes // 1048576} MB cap")
                    return Page(url, response.status_code, bytes(body),
                                response.headers.get("content-type", ""),
                                response.headers.get("etag"), response.headers.get("last-modified"))
            except httpx.TimeoutException:
                last_error = f"no answer within {self.timeout_s:g} s"
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
        raise FetchError(f"{url}: {last_error} after {self.retries} tries")


# ---------------------------------------------------------------- listings
def _service_records(client: PoliteClient, path: str, tag: str) -> list[dict] | None:
    """The `tag` records of a ModernGov web-service answer, each as {field: text}; None when the
    service is absent or answers with something else (the caller falls back to the HTML pages)."""
    try:
        page = client.get(path)
        if page.status != 200 or f"<{tag}".encode() not in page.content.lower():
            return None
        root = ET.fromstring(page.content)
    except (FetchError, ET.ParseError):
        return None
    return [{_local(c.tag): (c.text or "").strip() for c in node}
            for node in root.iter() if _local(node.tag) == tag]


def committees(client: PoliteClient) -> list[dict]:
    """[{"id", "title"}]: from the web service, else from mgListCommittees.aspx."""
    records = _service_records(client, "mgWebService.asmx/GetCommittees?lCommitteeType=0", "committee") or []
    found = [{"id": r["committeeid"], "title": r.get("committeetitle", "")} for r in records if r.get("committeeid")]
    if found:
        return found
    page = client.get("mgListCommittees.aspx")
    if page.status != 200:
        raise FetchError(f"{page.url}: HTTP {page.status} for the committee list")
    found, seen = [], set()
    for link in LexborHTMLParser(page.content.decode("utf-8", "replace")).css("a[href]"):
        match = re.search(r"mgCommitteeDetails\.aspx\?ID=(\d+)", link.attributes.get("href") or "", re.I)
        if match and match.group(1) not in seen:
            seen.add(match.group(1))
            found.append({"id": match.group(1), "title": link.text(strip=True)})
    return found


def meetings(client: PoliteClient, committee_id: str, since: date | None) -> list[dict]:
    """[{"id", "date", "url"}] of a committee's meetings (one listing request)."""
    start = (since or date(2000, 1, 1)).strftime("%d/%m/%Y")
    end = date.today().strftime("%d/%m/%Y")
    records = _service_records(client, f"mgWebService.asmx/GetMeetings?lCommitteeId={committee_id}"
                                        f"&sFromDate={start}&sToDate={end}", "meeting")
    if records is not None:
        found = [{"id": r["meetingid"], "date": parse_date(r.get("meetingdate", "")[:10]),
                  "url": f"ieListDocuments.aspx?CId={committee_id}&MId={r['meetingid']}"}
                 for r in records if r.get("meetingid")]
        return [m for m in found if not since or not m["date"] or m["date"] >= since.isoformat()]
    page = client.get(f"mgCommitteeDetails.aspx?ID={committee_id}")
    if page.status != 200:
        raise FetchError(f"{page.url}: HTTP {page.status} for the meetings list")
    found, seen = [], set()
    for link in LexborHTMLParser(page.content.decode("utf-8", "replace")).css("a[href]"):
        href = link.attributes.get("href") or ""
        match = re.search(r"ieListDocuments\.aspx\?CId=\d+&(?:amp;)?MId=(\d+)", href, re.I)
        if match and match.group(1) not in seen:
            seen.add(match.group(1))
            text = link.text(strip=True)
            day = re.search(r"\d{1,2}(?:st|nd|rd|th)? \w+,? \d{4}|\d{1,2}/\d{1,2}/\d{4}", text)
            found.append({"id": match.group(1), "date": parse_date(day.group()) if day else None,
                          "url": href})
    return [m for m in found if not since or not m["date"] or m["date"] >= since.isoformat()]


def meeting_documents(page: Page) -> list[str]:
    """Agenda-item pages of a meeting; its printed minutes (PDF) when it lists no items."""
    tree = LexborHTMLParser(page.content.decode("utf-8", "replace"))
    items, minutes = [], []
    for link in tree.css("a[href]"):
        href = link.attributes.get("href") or ""
        absolute = urljoin(page.url, href)
        if re.search(r"mgAi\.aspx\?ID=\d+", href, re.I) and absolute not in items:
            items.append(absolute)
        elif href.lower().endswith(".pdf") and "minutes" in (href + link.text()).lower() and absolute not in minutes:
            minutes.append(absolute)
    return items or minutes


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()


# ---------------------------------------------------------------- the walk
def fetch_moderngov(db, settings: Settings, source: Source, since: date | None = None,
                    on_error: Callable[[str, str], None] | None = None,
                    on_progress: Callable[[str], None] | None = None) -> IngestReport:
    """Fetch what is new from one ModernGov site and ingest it. Meetings whose pages all carried
    minutes are complete and never asked for again; others are re-asked with ETag/Last-Modified."""
    report = IngestReport()

    def fail(where: str, reason: str):
        if reason.startswith(where + ": "):  # FetchError names the address itself
            reason = reason[len(where) + 2:]
        report.failed.append({"path": where, "error": reason})
        if on_error:
            on_error(where, reason)

    try:
        client = PoliteClient(source.url, settings.user_agent, settings.request_delay_s,
                              settings.request_timeout_s, int(settings.max_download_mb * 1048576))
    except FetchError as exc:
        fail(source.url or "?", str(exc))
        return report
    try:
        try:
            listed = committees(client)
        except FetchError as exc:
            fail(source.url, str(exc))
            return report
        wanted = [c for c in listed if _is_followed(c, source.committees)]
        if source.committees and not wanted:
            fail(source.url, f"none of the committees {source.committees} is listed by the site")
        for committee in wanted:
            try:
                found = meetings(client, committee["id"], since)
            except FetchError as exc:
                fail(f"{source.url} committee {committee['title']}", str(exc))
                continue
            for meeting in found:
                url = urljoin(client.base, meeting["url"])
                state = store.fetched(db, url)
                if state is not None and state["content_hash"] == "complete":
                    continue
                if on_progress:
                    on_progress(url)
                _fetch_meeting(db, client, url, state, committee, meeting, source, report, fail,
                               limits_from(settings))
    finally:
        client.close()
    return report


def _is_followed(committee: dict, follow: list[str]) -> bool:
    if not follow:
        return True
    title = committee["title"].lower()
    return any(str(f) == committee["id"] or str(f).lower() in title for f in follow)


def _fetch_meeting(db, client, url, state, committee, meeting, source, report, fail, limits) -> None:
    try:
        page = client.get(url, state["etag"] if state else None, state["last_modified"] if state else None)
    except FetchError as exc:
        fail(url, str(exc))
        return
    if page.status == 304:
        return
    if page.status != 200:
        fail(url, f"HTTP {page.status}")
        return
    documents = meeting_documents(page)
    complete = bool(documents)
    meta = {"council": source.council, "committee": committee["title"],
            "meeting_date": meeting["date"], "fetched_at": store.now()}
    for doc_url in documents:
        try:
            doc = client.get(doc_url)
            if doc.status != 200:
                raise FetchError(f"HTTP {doc.status}")
            store.save_fetched(db, doc_url, client.base, doc.etag, doc.last_modified,
                               hashlib.sha256(doc.content).hexdigest(), doc.content, doc.content_type)
            result = ingest_bytes(db, doc_url, doc.content, meta, limits)
            report.merge(result)
            if b"Minutes:" not in doc.content and not doc_url.lower().endswith(".pdf"):
                complete = False  # minutes not published yet: ask again next time
        except (FetchError, InputError) as exc:
            complete = False
            fail(doc_url, str(exc))
    store.save_fetched(db, url, client.base, page.etag, page.last_modified,
                       "complete" if complete else hashlib.sha256(page.content).hexdigest(),
                       page.content, page.content_type)


def since_date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise FetchError(f"--since {value!r}: give a date as YYYY-MM-DD") from None
