"""ModernGov connector: walk a council's committees and meetings, read each meeting from the web
service's GetMeeting (its HTML pages where the site has no web service), and hand items to ingest.

Polite and safe: a named User-Agent, one pace per host shared by every source of a run,
robots.txt, Retry-After honoured up to a cap, retries only on 429/5xx, a timeout and a size cap on
every request, redirects only within the configured site, conditional requests where the site
sends validators. A meeting whose minutes are in is never asked for again.
"""

from __future__ import annotations

import email.utils
import hashlib
import html
import re
import threading
import time
import urllib.robotparser
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from urllib.parse import urljoin, urlparse

import httpx
from selectolax.lexbor import LexborHTMLParser

from pipeline import store
from pipeline.config import Settings, Source
from pipeline.ingest import MIN_WORDS, IngestReport, Limits, ingest_bytes, limits_from
from pipeline.ingest.readers import InputError, html_text_and_title, normalise
from pipeline.ingest.split import parse_date


class FetchError(Exception):
    """One address could not be fetched; the message is the reason."""


@dataclass
class Page:
    url: str  # where the answer came from (after redirects within the site)
    status: int
    content: bytes
    content_type: str
    etag: str | None = None
    last_modified: str | None = None
    location: str | None = None  # a redirect's target


# ---------------------------------------------------------------- one pace per host
@dataclass
class Host:
    """What every client of one host shares: when the next request may go, how long the host
    asked us to stay away (Retry-After), and its robots.txt."""

    next_at: float = 0.0  # time.monotonic() before which no request goes (the pace)
    hold_until: float = 0.0  # the same, as the host asked with Retry-After or as backoff after errors
    robots: urllib.robotparser.RobotFileParser | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    robots_lock: threading.Lock = field(default_factory=threading.Lock)


class Hosts:
    """The hosts this process has asked, by scheme and host name. One nightly run is one process,
    so the process-wide HOSTS gives every source of a run on one host (two councils on a shared
    install) one pace, one Retry-After and one robots.txt read."""

    def __init__(self) -> None:
        self._hosts: dict[str, Host] = {}
        self._lock = threading.Lock()

    def of(self, url: str) -> Host:
        parsed = urlparse(url)
        key = f"{parsed.scheme}://{parsed.netloc.lower()}"
        with self._lock:
            return self._hosts.setdefault(key, Host())


HOSTS = Hosts()


def retry_after_s(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date); None when absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


@dataclass
class PoliteClient:
    """One site's HTTP client: everything it asks for stays under `base`; its pace is its host's."""

    base: str
    user_agent: str
    delay_s: float = 1.0
    timeout_s: float = 60.0
    max_bytes: int = 20 * 1024 * 1024
    retries: int = 3
    # The longest a Retry-After (or backoff) may make a request wait; a host asking for more is
    # not asked again in this run, and what it holds is asked for on the next.
    retry_after_cap_s: float = 120.0
    hosts: Hosts = field(default_factory=lambda: HOSTS)
    requests: int = 0
    _host: Host = field(init=False)
    _client: httpx.Client = field(init=False)

    def __post_init__(self):
        self.base = self.base.rstrip("/") + "/"
        parsed = urlparse(self.base)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise FetchError(f"{self.base}: a ModernGov address must be http(s)://host/...")
        self._host = self.hosts.of(self.base)
        self._client = httpx.Client(headers={"User-Agent": self.user_agent},
                                    timeout=self.timeout_s, follow_redirects=False)

    def close(self):
        self._client.close()

    def within_site(self, url: str) -> bool:
        a, b = urlparse(url), urlparse(self.base)
        return a.scheme in ("http", "https") and a.scheme == b.scheme and a.netloc == b.netloc \
            and a.path.startswith(b.path.rstrip("/") or "/")

    def _same_host(self, url: str) -> bool:
        a, b = urlparse(url), urlparse(self.base)
        return a.scheme == b.scheme and a.netloc == b.netloc

    def allowed(self, url: str) -> bool:
        host = self._host
        with host.robots_lock:
            if host.robots is None:
                robots = urllib.robotparser.RobotFileParser()
                try:
                    # robots.txt sits at the host's root, above a base with a path: same host only.
                    page = self._get(urljoin(self.base, "/robots.txt"), {}, robots_txt=True)
                    lines = page.content.decode("utf-8", "replace").splitlines() if page.status == 200 else []
                except FetchError:
                    lines = []
                robots.parse(lines)
                host.robots = robots
        return host.robots.can_fetch(self.user_agent, url)

    def get(self, url: str, etag: str | None = None, last_modified: str | None = None) -> Page:
        url = urljoin(self.base, url)
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        return self._get(url, headers)

    def _get(self, url: str, headers: dict, robots_txt: bool = False) -> Page:
        for _ in range(6):  # redirects, each checked against the site
            if not (self._same_host(url) if robots_txt else self.within_site(url)):
                raise FetchError(f"{url}: outside the configured site {self.base}; not fetched")
            if not robots_txt and not self.allowed(url):
                raise FetchError(f"{url}: disallowed by robots.txt")
            page = self._request(url, headers)
            if page.status in (301, 302, 303, 307, 308) and page.location:
                url = urljoin(url, page.location)
                continue
            return page
        raise FetchError(f"{url}: too many redirects")

    def _wait_turn(self, url: str) -> None:
        """Sleep until this host may be asked again, then take the turn. The turn is taken at
        the moment this request goes, not reserved ahead: a thread that wakes late (a busy
        machine) would otherwise send its reserved slot right behind the next one."""
        host = self._host
        while True:
            with host.lock:
                now = time.monotonic()
                if host.hold_until - now > self.retry_after_cap_s:
                    raise FetchError(f"{url}: not asked: {urlparse(url).netloc} asked us to wait "
                                     f"{host.hold_until - now:.0f} s more (Retry-After), longer than the "
                                     f"{self.retry_after_cap_s:g} s cap; asked again on the next run")
                start = max(host.next_at, host.hold_until)
                if now >= start:
                    host.next_at = now + self.delay_s
                    return
            time.sleep(start - now)

    def _finished(self) -> None:
        # The pace counts from the end of an answer too: a slow site is not asked faster.
        host = self._host
        with host.lock:
            host.next_at = max(host.next_at, time.monotonic() + self.delay_s)

    def _hold(self, seconds: float) -> None:
        host = self._host
        with host.lock:
            host.hold_until = max(host.hold_until, time.monotonic() + seconds)

    def _request(self, url: str, headers: dict) -> Page:
        last_error = ""
        for attempt in range(self.retries):
            self._wait_turn(url)
            self.requests += 1
            try:
                with self._client.stream("GET", url, headers=headers) as response:
                    status = response.status_code
                    if status in (301, 302, 303, 307, 308):
                        return Page(url, status, b"", "", location=response.headers.get("location", ""))
                    if status == 429 or status >= 500:
                        last_error = f"HTTP {status}"
                        asked = retry_after_s(response.headers.get("retry-after"))
                        if asked is not None and asked > self.retry_after_cap_s:
                            self._hold(asked)  # every source on this host stays away
                            raise FetchError(f"{url}: HTTP {status} asking to retry after {asked:.0f} s, "
                                             f"longer than the {self.retry_after_cap_s:g} s cap "
                                             "(retry_after_cap_s); asked again on the next run")
                        if attempt + 1 < self.retries:
                            self._hold(asked if asked is not None else 0.5 * 2 ** attempt)
                        continue
                    # Anything else is the answer: a 404 or 403 will not change by asking again.
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise FetchError(f"{url}: larger than the {self.max_bytes // 1048576} MB cap")
                    return Page(url, status, bytes(body), response.headers.get("content-type", ""),
                                response.headers.get("etag"), response.headers.get("last-modified"))
            except httpx.TimeoutException:
                last_error = f"no answer within {self.timeout_s:g} s"
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self._finished()
        raise FetchError(f"{url}: {last_error} after {self.retries} tries")


# ---------------------------------------------------------------- listings
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()


def _fields(node: ET.Element) -> dict[str, str]:
    return {_local(c.tag): (c.text or "").strip() for c in node}


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
    return [_fields(node) for node in root.iter() if _local(node.tag) == tag]


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


def _in_window(day: str | None, since: date | None, today: date) -> bool:
    """Some installs ignore sFromDate/sToDate (or read them in another format): the window is
    kept on our side too. A meeting with no readable date is kept."""
    if not day:
        return True
    return (not since or day >= since.isoformat()) and day <= today.isoformat()


def _is_cancelled(status: str) -> bool:
    return "cancel" in status.lower()


def meetings(client: PoliteClient, committee_id: str, since: date | None) -> list[dict]:
    """[{"id", "date", "url", "is_cancelled", "via_service"}] of a committee's meetings from
    `since` to today (one listing request)."""
    today = date.today()
    start = (since or date(2000, 1, 1)).strftime("%d/%m/%Y")
    records = _service_records(client, f"mgWebService.asmx/GetMeetings?lCommitteeId={committee_id}"
                                        f"&sFromDate={start}&sToDate={today.strftime('%d/%m/%Y')}", "meeting")
    if records is not None:
        found = [{"id": r["meetingid"], "date": parse_date(r.get("meetingdate", "")[:10]),
                  "url": f"ieListDocuments.aspx?CId={committee_id}&MId={r['meetingid']}",
                  "is_cancelled": _is_cancelled(r.get("meetingstatus", "")), "via_service": True}
                 for r in records if r.get("meetingid")]
        return [m for m in found if _in_window(m["date"], since, today)]
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
                          "url": href, "is_cancelled": _is_cancelled(text), "via_service": False})
    return [m for m in found if _in_window(m["date"], since, today)]


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


# ---------------------------------------------------------------- GetMeeting answers
@dataclass
class ServiceItem:
    """One `agendaitem` of a GetMeeting answer; the two texts are HTML, as the service sends them."""

    id: str
    number: str
    title: str
    purpose_html: str
    minutes_html: str
    is_restricted: bool
    documents: list[dict] = field(default_factory=list)  # [{"title", "url"}]


@dataclass
class ServiceMeeting:
    id: str
    date: str | None
    status: str
    is_published: bool  # `minutepublished`
    items: list[ServiceItem]
    documents: list[dict]  # the meeting's own linked documents (printed minutes, agenda pack)

    @property
    def is_cancelled(self) -> bool:
        return _is_cancelled(self.status)


def _is_true(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "y")


def _documents(node: ET.Element | None) -> list[dict]:
    """The `linkeddocument`s directly under a `linkeddocuments` child of node: a title and the
    address (a mgConvert2PDF.aspx?ID= one, or a file under documents/)."""
    found = []
    for group in (c for c in (node if node is not None else []) if _local(c.tag) == "linkeddocuments"):
        for doc in group:
            values = _fields(doc)
            title = next((v for k, v in values.items() if "title" in k and v), "")
            url = values.get("url") or next((v for v in values.values()
                                             if re.search(r"mgConvert2PDF\.aspx\?ID=\d+|\.pdf\b|^https?://", v, re.I)), "")
            if url:
                found.append({"title": title, "url": url})
    return found


def parse_meeting_xml(data: bytes) -> ServiceMeeting | None:
    """A GetMeeting answer as a ServiceMeeting; None when it is not one (a site without the call
    answers with an error page, or a meeting with no id)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return None
    node = root if _local(root.tag) == "meeting" else next(
        (n for n in root.iter() if _local(n.tag) == "meeting"), None)
    if node is None:
        return None
    values = _fields(node)
    if not values.get("meetingid"):
        return None
    items = []
    for item in (n for n in node.iter() if _local(n.tag) == "agendaitem"):
        fields = {_local(c.tag): c.text or "" for c in item}
        items.append(ServiceItem(
            id=fields.get("agendaitemid", "").strip(), number=fields.get("agendaitemnumber", "").strip(),
            title=" ".join(fields.get("agendaitemtitle", "").split()),
            purpose_html=fields.get("agendatext", ""), minutes_html=fields.get("minutesnonemptyhtmlbody", ""),
            is_restricted=_is_true(fields.get("isrestricted", "")), documents=_documents(item)))
    return ServiceMeeting(id=values["meetingid"], date=parse_date(values.get("meetingdate", "")[:10]),
                          status=values.get("meetingstatus", ""),
                          is_published=_is_true(values.get("minutepublished", "")),
                          items=[i for i in items if i.id], documents=_documents(node))


# Some installs escape the HTML twice, so `&amp;nbsp;` reaches the reader as the text "&nbsp;".
_TWICE_ESCAPED_SPACE = re.compile(r"&amp;(nbsp|#160|#xa0);", re.I)


def fragment_lines(fragment: str, limits: Limits) -> list[str]:
    """An HTML fragment of the service (agendatext, minutesnonemptyhtmlbody) as the lines of text
    the page reader makes of it: each fragment read on its own, so a stray end tag in Word's
    markup cannot close the rest of the item away. Raises InputError."""
    if not fragment.strip():
        return []
    text, _ = html_text_and_title(_TWICE_ESCAPED_SPACE.sub("&nbsp;", fragment), limits)
    text = normalise(text)
    return text.split("\n") if text else []


def _heading(item: ServiceItem) -> str:
    """The item's heading as its page shows it: the number first when it is a plain one, so a title
    that itself starts with a number ("16 Plus Service") keeps it."""
    if re.fullmatch(r"\d{1,3}\.?", item.number):
        return f"{item.number.rstrip('.')}. {item.title}"
    if re.fullmatch(r"[\w.]+", item.number):
        return f"{item.title} (Agenda item {item.number})"
    return item.title


def item_page(meeting: ServiceMeeting, item: ServiceItem, limits: Limits) -> tuple[bytes, int, bool]:
    """(the item as the agenda-item page ModernGov shows for it, its number of words, whether it
    has minutes). Ingest reads it with the same reader and splitter as a fetched mgAi.aspx page,
    so the items are the same whichever way they came. Raises InputError."""
    purpose, minutes = fragment_lines(item.purpose_html, limits), fragment_lines(item.minutes_html, limits)
    has_minutes = any(line.strip() for line in minutes)
    documents = [d["title"] for d in item.documents if d["title"]]
    body = [f"<p>{html.escape(line)}</p>" for line in purpose]
    if has_minutes:
        body += ["<p>Minutes:</p>"] + [f"<p>{html.escape(line)}</p>" for line in minutes]
    if documents:
        body += ["<p>Supporting documents:</p><ul>"] + [f"<li>{html.escape(t)}</li>" for t in documents] + ["</ul>"]
    page = ("<html><head><title>Agenda item</title></head><body><div id='modgov'>"
            # Names the meeting and item, so two items with the same words stay two documents.
            f"<!-- ModernGov web service: meeting {html.escape(meeting.id)}, item {html.escape(item.id)} -->"
            f"<h1>Agenda item</h1><h2>{html.escape(_heading(item))}</h2>{''.join(body)}</div></body></html>")
    words = len(item.title.split()) + sum(len(line.split()) for line in purpose + minutes + documents)
    return page.encode("utf-8"), words, has_minutes


def minutes_document(meeting: ServiceMeeting) -> dict | None:
    """The printed minutes among the linked documents: the meeting's own first, then an item's
    titled "printed minutes" (an item's "minutes of the previous meeting" is another meeting's)."""
    for doc in meeting.documents:
        if re.search(r"\bminutes\b", doc["title"], re.I) and not re.search(r"previous|last meeting", doc["title"], re.I):
            return doc
    for item in meeting.items:
        for doc in item.documents:
            if re.search(r"printed minutes", doc["title"], re.I):
                return doc
    return None


# ---------------------------------------------------------------- the report
@dataclass
class FetchReport(IngestReport):
    """What ingest reports, and what the walk did to get there."""

    requests: int = 0
    meetings_listed: int = 0
    meetings_asked: int = 0  # GetMeeting requests (or meeting pages, on sites without the service)
    meetings_complete: int = 0  # minutes in: never asked again
    meetings_awaiting_minutes: int = 0  # asked again on the next run
    meetings_not_modified: int = 0  # answered 304, or the same answer as last time
    meetings_cancelled: int = 0  # never asked
    restricted_items: int = 0  # skipped: exempt from publication
    empty_items: int = 0  # skipped: fewer words than an item needs (a bare "Apologies")

    def as_json(self) -> dict:
        return {**super().as_json(), "requests": self.requests, "meetings_listed": self.meetings_listed,
                "meetings_asked": self.meetings_asked, "meetings_complete": self.meetings_complete,
                "meetings_awaiting_minutes": self.meetings_awaiting_minutes,
                "meetings_not_modified": self.meetings_not_modified,
                "meetings_cancelled": self.meetings_cancelled, "restricted_items": self.restricted_items,
                "empty_items": self.empty_items}


Fail = Callable[[str, str], None]


def ingest_service_meeting(db, base: str, meeting: ServiceMeeting, meta: dict, limits: Limits,
                           report: FetchReport, fail: Fail,
                           fetch_document: Callable[[str], Page] | None) -> tuple[bool, bool]:
    """Store the items of one GetMeeting answer: one document per agenda item under its
    mgAi.aspx address; restricted items skipped and counted; the printed minutes fetched (through
    `fetch_document`) only when no item carries minutes. Returns (complete: the minutes are in,
    clean: nothing failed). A meeting whose minutes are not published stores nothing yet."""
    if meeting.is_cancelled:
        return True, True
    public = [i for i in meeting.items if not i.is_restricted]
    report.restricted_items += len(meeting.items) - len(public)
    if not meeting.is_published:
        return False, True
    pages, clean = [], True
    for item in public:
        source = urljoin(base, f"mgAi.aspx?ID={item.id}")
        try:
            page, words, has_minutes = item_page(meeting, item, limits)
        except InputError as exc:
            fail(source, str(exc))
            clean = False
            continue
        pages.append((source, page, words, has_minutes))
    has_minutes = any(p[3] for p in pages)
    printed = None if has_minutes else minutes_document(meeting)
    if printed is not None and fetch_document is not None:
        # The printed minutes hold every item: the agenda-only items would repeat them. Stored
        # under the service's address for them, which stays when the file behind it moves.
        url = urljoin(base, printed["url"])
        try:
            doc = fetch_document(url)
            if doc.status != 200:
                raise FetchError(f"HTTP {doc.status}")
            store.save_fetched(db, url, base, doc.etag, doc.last_modified,
                               hashlib.sha256(doc.content).hexdigest(), doc.content, doc.content_type)
            report.merge(ingest_bytes(db, url, doc.content, meta, limits))
            return True, clean
        except (FetchError, InputError) as exc:
            fail(url, str(exc))
            return False, False
    for source, page, words, _ in pages:
        if words < MIN_WORDS:
            report.empty_items += 1
            continue
        try:
            report.merge(ingest_bytes(db, source, page, meta, limits))
        except InputError as exc:
            fail(source, str(exc))
            clean = False
    # Published but no minutes anywhere: keep asking (the items stored so far are the agenda's).
    return has_minutes, clean


def reparse_stored_meetings(db, settings: Settings, base_url: str | None = None) -> FetchReport:
    """Read every stored GetMeeting answer again, and the printed minutes stored with them, without
    the network: after a change to the readers or the splitter."""
    report = FetchReport()
    limits = limits_from(settings)

    def fail(where: str, reason: str):
        report.failed.append({"path": where, "error": reason.removeprefix(where + ": ")})

    def stored(url: str) -> Page:
        row = store.raw_page(db, url)
        if row is None:
            raise FetchError(f"{url}: not in the store")
        return Page(url, 200, row["content"], row["content_type"] or "")

    for state in store.meetings_fetched(db, base_url):
        row = store.raw_page(db, state["xml_url"])
        meeting = parse_meeting_xml(row["content"]) if row is not None else None
        if meeting is None:
            fail(state["xml_url"], "no stored GetMeeting answer")
            continue
        meta = {"council": state["council"], "committee": state["committee"],
                "meeting_date": state["meeting_date"] or meeting.date, "fetched_at": state["last_asked_at"]}
        ingest_service_meeting(db, state["base_url"], meeting, meta, limits, report, fail, stored)
    return report


# ---------------------------------------------------------------- the walk
def fetch_moderngov(db, settings: Settings, source: Source, since: date | None = None,
                    on_error: Fail | None = None, on_progress: Callable[[str], None] | None = None,
                    hosts: Hosts | None = None) -> FetchReport:
    """Fetch what is new from one ModernGov site and ingest it: one listing request per followed
    committee, then one GetMeeting request per meeting whose minutes are not in yet (its HTML
    pages on sites without the web service). Cancelled meetings are never asked for."""
    report = FetchReport()

    def fail(where: str, reason: str):
        if reason.startswith(where + ": "):  # FetchError names the address itself
            reason = reason[len(where) + 2:]
        report.failed.append({"path": where, "error": reason})
        if on_error:
            on_error(where, reason)

    try:
        client = PoliteClient(source.url or "", settings.user_agent, settings.request_delay_s,
                              settings.request_timeout_s, int(settings.max_download_mb * 1048576),
                              retry_after_cap_s=settings.retry_after_cap_s, hosts=hosts or HOSTS)
    except FetchError as exc:
        fail(source.url or "?", str(exc))
        return report
    limits = limits_from(settings)
    # Does this site answer GetMeeting? Learnt from its first answer: an answer that is not a
    # meeting (an older install, or none) sends this and every later meeting of the run to the pages.
    has_get_meeting: bool | None = None
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
                report.meetings_listed += 1
                if meeting["is_cancelled"]:
                    report.meetings_cancelled += 1
                    continue
                page_url = urljoin(client.base, meeting["url"])
                if _is_complete(db, client.base, meeting["id"], page_url):
                    continue
                if on_progress:
                    on_progress(page_url)
                meta = {"council": source.council, "committee": committee["title"],
                        "meeting_date": meeting["date"], "fetched_at": store.now()}
                if meeting["via_service"] and has_get_meeting is not False:
                    answered = _fetch_service_meeting(db, client, meeting["id"], meta, report, fail,
                                                      limits, probing=has_get_meeting is None)
                    if answered is not None:
                        has_get_meeting = has_get_meeting or answered or None
                        continue
                    has_get_meeting = False
                report.meetings_asked += 1
                _fetch_meeting(db, client, page_url, store.fetched(db, page_url), committee, meeting,
                               source, report, fail, limits)
    finally:
        client.close()
        report.requests = client.requests
    return report


def _is_followed(committee: dict, follow: list[str]) -> bool:
    if not follow:
        return True
    title = committee["title"].lower()
    return any(str(f) == committee["id"] or str(f).lower() in title for f in follow)


def _is_complete(db, base: str, meeting_id: str, page_url: str) -> bool:
    """Minutes in, by either way of reading the meeting: the web service (meetings_fetched) or
    its HTML pages (the `fetched` row of its page, as versions before this one kept it)."""
    state = store.meeting_fetch_state(db, base, meeting_id)
    if state is not None and state["is_complete"]:
        return True
    legacy = store.fetched(db, page_url)
    return legacy is not None and legacy["content_hash"] == "complete"


def _get_meeting_url(client: PoliteClient, meeting_id: str) -> str:
    return urljoin(client.base, f"mgWebService.asmx/GetMeeting?lMeetingId={meeting_id}")


def _fetch_service_meeting(db, client: PoliteClient, meeting_id: str, meta: dict, report: FetchReport,
                           fail: Fail, limits: Limits, probing: bool) -> bool | None:
    """One meeting through GetMeeting. True when the service answered it (whatever became of its
    items), False when it failed (reported; asked again next run). While `probing` (no meeting of
    this site answered yet in this run), an answer that is not a meeting returns None: the site has
    no GetMeeting, and the caller reads the meeting's pages instead."""
    url = _get_meeting_url(client, meeting_id)
    validators = store.fetched(db, url)
    state = store.meeting_fetch_state(db, client.base, meeting_id)
    if state is None or state["xml_hash"] is None:
        # No answer read in full to fall back on (a first ask, or a failure last time): a 304
        # would leave nothing to read, so ask without validators.
        validators = None
    report.meetings_asked += 1
    try:
        page = client.get(url, validators["etag"] if validators else None,
                          validators["last_modified"] if validators else None)
    except FetchError as exc:
        fail(url, str(exc))
        return False
    record = {"base_url": client.base, "meeting_id": meeting_id, "xml_url": url, "council": meta["council"],
              "committee": meta["committee"], "meeting_date": meta["meeting_date"]}
    if page.status == 304 and state is not None:
        report.meetings_not_modified += 1
        report.meetings_awaiting_minutes += 1
        store.save_meeting_fetch_state(db, {**record, "is_complete": False, "xml_hash": state["xml_hash"],
                                            "items": state["items"], "restricted_items": state["restricted_items"]})
        return True
    meeting = parse_meeting_xml(page.content) if page.status == 200 else None
    if meeting is None:
        if probing and page.status in (200, 400, 404, 405, 501):
            report.meetings_asked -= 1  # counted with the pages that answer for it
            return None
        fail(url, f"HTTP {page.status}" if page.status != 200 else "not a GetMeeting answer")
        return False
    xml_hash = hashlib.sha256(page.content).hexdigest()
    # The XML is kept beside the pages, so a re-parse never needs the network.
    store.save_fetched(db, url, client.base, page.etag, page.last_modified, xml_hash, page.content,
                       page.content_type or "text/xml")
    restricted = sum(i.is_restricted for i in meeting.items)
    if state is not None and state["xml_hash"] == xml_hash:
        # Many installs send no validators: the same answer as last time changes nothing.
        report.meetings_not_modified += 1
        report.meetings_awaiting_minutes += 1
        store.save_meeting_fetch_state(db, {**record, "is_complete": False, "xml_hash": xml_hash,
                                            "items": len(meeting.items), "restricted_items": restricted})
        return True
    meta = {**meta, "meeting_date": meta["meeting_date"] or meeting.date}
    if meeting.is_cancelled:  # the listing did not say so, the meeting does
        report.meetings_cancelled += 1
    complete, clean = ingest_service_meeting(db, client.base, meeting, meta, limits, report, fail,
                                             client.get)
    if complete and clean:
        report.meetings_complete += not meeting.is_cancelled
    else:
        report.meetings_awaiting_minutes += 1
    store.save_meeting_fetch_state(db, {
        **record, "is_complete": complete and clean, "items": len(meeting.items), "restricted_items": restricted,
        # A failure is tried again next run even when the answer is the same.
        "xml_hash": xml_hash if clean else None})
    return True


def _fetch_meeting(db, client, url, state, committee, meeting, source, report, fail, limits) -> None:
    """One meeting through its HTML pages: the meeting page, then each agenda item's page (or its
    printed minutes); complete when every item page carried minutes."""
    try:
        page = client.get(url, state["etag"] if state else None, state["last_modified"] if state else None)
    except FetchError as exc:
        fail(url, str(exc))
        return
    if page.status == 304:
        report.meetings_not_modified += 1
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
    if complete:
        report.meetings_complete += 1
    else:
        report.meetings_awaiting_minutes += 1
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
