"""The review desk (`minutes serve`): a small web app over the store and the model registry where
analysts read flags with their evidence, confirm or correct them, and see trends across councils.

Reviews are saved through `labelling.save_label`, the validation `minutes label import` uses, into
the same labels table that `minutes train` reads. Everything taken from minutes is data: the
templates autoescape, the pages run no script, and a strict Content-Security-Policy backs that up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import socket
import sqlite3
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timezone
from urllib.parse import quote, unquote, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from pipeline import labelling, modelfolder, store
from pipeline.config import LABEL_TITLES, LABELS, Settings
from pipeline.passages import item_passages, normalise_for_match, overlaps

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MIN_TOKEN_CHARS = 16
FLAGS_PER_PAGE = 50
MAX_FORM_BYTES = 1_000_000  # a review form is a few kilobytes; anything near this is not one
# Who saved a review, in the labels table's source_file column (imports hold their file's path).
DESK_SOURCE = "review desk"
NO_COUNCIL = "(council not recorded)"
SHORT_LABELS = {"intervention_notice": "Intervention", "inspection_outcome": "Inspection",
                "workforce_concern": "Workforce"}

# No script at all, styles only from our own stylesheet, images only inline, forms only to us,
# never framed (clickjacking), and no <base> to re-point relative links.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self' data:; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
SESSION_COOKIE = "minutes_desk_session"
CSRF_COOKIE = "minutes_desk_csrf"
REVIEWER_COOKIE = "minutes_desk_reviewer"


# ---------------------------------------------------------------- plain functions over the store
# "Herefordshire Council" and "Herefordshire", "London Borough of Camden" and "Camden": the
# minutes name one council many ways, and the trends must count it once.
_COUNCIL_PREFIXES = re.compile(
    r"^(?:the\s+)?(?:(?:london|royal|metropolitan)\s+borough\s+of|city\s+and\s+county\s+of|"
    r"city\s+of|county\s+of|borough\s+of|council\s+of\s+the|council\s+of)\s+", re.I)
_COUNCIL_SUFFIXES = re.compile(
    r"\s+(?:metropolitan\s+borough|metropolitan\s+district|county\s+borough|city\s+and\s+district|"
    r"county|city|borough|district|unitary)?\s*(?:council|authority)$", re.I)


def normalise_council(name: str | None) -> str | None:
    """One name per council: "London Borough of X", "X Council", "X County Council", "X City
    Council" and "Royal Borough of X" are all "X" (spacing and a leading "The" ignored)."""
    if not name or not name.strip():
        return None
    text = " ".join(name.replace("\u00a0", " ").split())
    text = _COUNCIL_SUFFIXES.sub("", text)
    text = _COUNCIL_PREFIXES.sub("", text)
    text = text.strip(" ,-")
    return text or " ".join(name.split())


def quarter_of(day: str | None) -> str | None:
    """"2025-02-05" -> "2025 Q1"; None for a date not recorded or not a date."""
    try:
        parsed = date.fromisoformat((day or "")[:10])
    except ValueError:
        return None
    return f"{parsed.year} Q{(parsed.month - 1) // 3 + 1}"


_QUOTES = {"'": "['’‘]", "’": "['’‘]", "‘": "['’‘]", '"': "[\"“”]", "“": "[\"“”]", "”": "[\"“”]"}


def _sentence_pattern(sentence: str) -> str:
    # The sentence's words in order with any spacing between them (a passage joins lines with
    # one space) and either kind of quote: how validate's normalise_for_match compares them.
    words = []
    for word in sentence.split():
        words.append("".join(_QUOTES.get(ch, re.escape(ch)) for ch in word))
    return r"\s+".join(words)


def highlighted(text: str, sentences: list[str]) -> list[tuple[str, bool]]:
    """The item's text as (piece, is_evidence) pieces, each evidence sentence marked where it
    stands in the text; the template escapes every piece."""
    spans = []
    for sentence in sentences:
        if sentence.split():
            spans += [m.span() for m in re.finditer(_sentence_pattern(sentence), text, re.I)]
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    pieces, at = [], 0
    for start, end in merged:
        if start > at:
            pieces.append((text[at:start], False))
        pieces.append((text[start:end], True))
        at = end
    if at < len(text):
        pieces.append((text[at:], False))
    return pieces


def choosable_sentences(item: dict) -> list[str]:
    """The item's own sentences, as the classifier splits them, that the labelling guide's
    check finds in its text: picking evidence from these is verbatim by construction."""
    passages = item_passages(item["text"], item["title"])
    if item["title"]:
        passages = passages[1:]  # the title is the first passage, and not always in the text
    text = normalise_for_match(item["text"])
    seen, out = set(), []
    for passage in passages:
        key = normalise_for_match(passage)
        if key and key in text and key not in seen:
            seen.add(key)
            out.append(passage)
    return out


def source_link(source: str) -> str | None:
    """An address to follow for a page fetched from the web; a file's path is shown, not linked
    (a browser does not open file: links from a web page, and the desk serves no files)."""
    return source if source.startswith(("http://", "https://")) else None


def _effective(record: dict) -> tuple[list[str], dict]:
    """A person's latest label wins over the model's prediction."""
    if record["review"] is not None:
        return record["review"]["labels"], record["review"]["evidence"] or {}
    prediction = record["prediction"] or {}
    return prediction.get("labels") or [], prediction.get("evidence") or {}


def flag_records(db) -> list[dict]:
    """Every current item the model flagged or a person labelled, with its latest prediction,
    briefing and person's label; newest meeting first."""
    predictions = store.latest_predictions(db)
    reviews = store.latest_labels(db)
    ids = ({i for i, p in predictions.items() if p["labels"]}
           | {i for i, r in reviews.items() if r["labels"]})
    summaries = store.latest_summaries(db, ids)
    records = []
    for item in store.items_by_ids(db, ids):
        if not item["is_current"]:
            continue
        record = {**item, "council_name": normalise_council(item["council"]),
                  "prediction": predictions.get(item["id"]), "review": reviews.get(item["id"]),
                  "summary": summaries.get(item["id"]), "link": source_link(item["source"])}
        record["labels"], record["evidence"] = _effective(record)
        records.append(record)
    records.sort(key=lambda r: (r["date"] or "", r["id"]), reverse=True)
    return records


def confidence(record: dict, label: str | None) -> float | None:
    """The model's score for the label asked about, else its best score among the labels it
    gave (or among all, when it gave none); None for an item the model never scored."""
    scores = (record["prediction"] or {}).get("scores")
    if not scores:
        return None
    if label:
        return scores.get(label)
    chosen = (record["prediction"] or {}).get("labels") or list(scores)
    return max(scores.get(l, 0.0) for l in chosen)


@dataclass
class FlagFilters:
    label: str | None = None
    council: str | None = None
    committee: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    min_confidence: float | None = None  # percent, as typed
    max_confidence: float | None = None
    page: int = 1

    def query(self, **changes) -> str:
        """This filter as a query string, with some fields changed (for page links)."""
        values = {**self.__dict__, **changes}
        return urlencode({k: v for k, v in values.items()
                          if v not in (None, "") and not (k == "page" and v == 1)})


class FilterError(ValueError):
    """A filter value a person typed that is not one; the message names it."""


def parse_filters(params) -> FlagFilters:
    """The Flags page's query parameters, each checked: a wrong one is a FilterError naming it."""
    def text(name):
        value = (params.get(name) or "").strip()
        return value or None

    filters = FlagFilters(label=text("label"), council=text("council"),
                          committee=text("committee"))
    if filters.label and filters.label not in LABELS:
        raise FilterError(f"label {filters.label!r} is not one of {', '.join(LABELS)}")
    for name in ("date_from", "date_to"):
        value = text(name)
        if value is not None:
            try:
                date.fromisoformat(value)
            except ValueError:
                raise FilterError(f"{name.replace('_', ' ')} {value!r} is not a date (YYYY-MM-DD)") from None
        setattr(filters, name, value)
    for name in ("min_confidence", "max_confidence"):
        value = text(name)
        if value is not None:
            try:
                number = float(value)
            except ValueError:
                number = float("nan")
            if not 0 <= number <= 100:
                raise FilterError(f"{name.replace('_', ' ')} {value!r} is not a percentage from 0 to 100")
            setattr(filters, name, number)
    page = text("page") or "1"
    if not page.isascii() or not page.isdigit() or int(page) < 1:
        raise FilterError(f"page {page!r} is not a page number")
    filters.page = int(page)
    return filters


def filtered(records: list[dict], filters: FlagFilters) -> list[dict]:
    out = []
    for record in records:
        model_labels = (record["prediction"] or {}).get("labels") or []
        if filters.label and filters.label not in set(model_labels) | set(record["labels"]):
            continue
        if filters.council and (record["council_name"] or "").lower() != filters.council.lower():
            continue
        if filters.committee and (record["committee"] or "") != filters.committee:
            continue
        if filters.date_from and not (record["date"] and record["date"][:10] >= filters.date_from):
            continue
        if filters.date_to and not (record["date"] and record["date"][:10] <= filters.date_to):
            continue
        if filters.min_confidence is not None or filters.max_confidence is not None:
            score = confidence(record, filters.label)
            if score is None:
                continue
            if filters.min_confidence is not None and 100 * score < filters.min_confidence:
                continue
            if filters.max_confidence is not None and 100 * score > filters.max_confidence:
                continue
        out.append(record)
    return out


def flags_view(db, filters: FlagFilters) -> dict:
    records = flag_records(db)
    shown = filtered(records, filters)
    pages = max(1, -(-len(shown) // FLAGS_PER_PAGE))
    start = (min(filters.page, pages) - 1) * FLAGS_PER_PAGE
    for record in shown[start:start + FLAGS_PER_PAGE]:
        record["confidence"] = confidence(record, filters.label)
        record["pieces"] = highlighted(record["text"], [s for l in record["labels"]
                                                        for s in record["evidence"].get(l, [])])
    return {
        "records": shown[start:start + FLAGS_PER_PAGE], "total": len(shown), "all": len(records),
        "page": min(filters.page, pages), "pages": pages, "filters": filters,
        "councils": sorted({r["council_name"] for r in records if r["council_name"]}, key=str.lower),
        "committees": sorted({r["committee"] for r in records if r["committee"]}, key=str.lower),
    }


def _promoted_thresholds(settings: Settings) -> dict[str, float] | None:
    """The promoted classifier's thresholds, which `label export --strategy uncertain` measures
    each item's margin against."""
    folder = modelfolder.promoted_folder(settings.models_dir, "classifier")
    if folder is None:
        return None
    try:
        return modelfolder.read_card(folder).get("thresholds")
    except (modelfolder.ModelError, ValueError):
        return None


def next_uncertain(db, thresholds: dict | None, after: int | None) -> int | None:
    """The next item nobody has reviewed in the queue of `label export --strategy uncertain`
    (scores nearest a threshold first, councils in turn), after the item `after` in it."""
    queue = [row["item_id"] for row in
             labelling.pick_items(db, store.count_items(db), "uncertain", thresholds)]
    reviewed = store.latest_labels(db)
    start = queue.index(after) + 1 if after in queue else 0
    return next((item_id for item_id in queue[start:] if item_id not in reviewed), None)


def review_view(db, item_id: int) -> dict | None:
    item = store.item(db, item_id)
    if item is None:
        return None
    prediction = store.latest_predictions(db, [item_id]).get(item_id)
    summary = store.latest_summaries(db, [item_id]).get(item_id)
    history = store.label_history(db, item_id)
    for row in history:
        row["labels"] = json.loads(row["labels"])
    review = store.latest_labels(db).get(item_id)
    record = {**item, "prediction": prediction, "review": review, "summary": summary,
              "council_name": normalise_council(item["council"]), "link": source_link(item["source"])}
    labels, evidence = _effective(record)
    sentences = choosable_sentences(item)
    # Pre-filled with the latest word on the item: a person's label, else the model's.
    ticked = {(label, s) for label in labels for s in sentences
              if any(overlaps(s, e) for e in evidence.get(label, []))}
    record["pieces"] = highlighted(item["text"], [s for l in labels for s in evidence.get(l, [])])
    return {"record": record, "history": history, "sentences": sentences,
            "form": {"labels": set(labels), "ticked": ticked,
                     "briefing": (review or {}).get("briefing") or (summary or {}).get("briefing") or ""}}


def row_from_form(item_id: int, form) -> dict:
    """The review form as a row of a label file, for `labelling.validate` to judge."""
    labels = [value for value in form.getlist("label")]
    evidence = {}
    for key in form.keys():
        if key.startswith("evidence-"):
            chosen = [s for s in form.getlist(key) if isinstance(s, str)]
            if chosen:
                evidence[key[len("evidence-"):]] = chosen
    return {"item_id": item_id, "labels": labels, "evidence": evidence,
            "annotator": (form.get("annotator") or "").strip() or None,
            "briefing": (form.get("briefing") or "").strip() or None}


def save_review(db, item_id: int, form) -> tuple[int, str | None]:
    """(HTTP status, reason refused): validate and store one reviewed item."""
    row = row_from_form(item_id, form)
    if row["annotator"] is None:
        return 400, "say who you are (your name or initials) before saving"
    if len(row["annotator"]) > 100:
        return 400, "your name is over 100 characters"
    summary = store.latest_summaries(db, [item_id]).get(item_id)
    if summary and row["briefing"] == " ".join(summary["briefing"].split()):
        # An untouched machine briefing is not a person's briefing: the summariser would learn
        # from its own output. Only an edited one is stored.
        row["briefing"] = None
    if row["briefing"] is not None:
        row["briefing"] = " ".join(row["briefing"].split())
    # Each save is a new answer, kept beside earlier ones: the latest supersedes them.
    error = labelling.save_label(db, row, DESK_SOURCE, f"{DESK_SOURCE} {uuid.uuid4()}")
    if error is None:
        return 303, None
    return (404 if store.item(db, item_id) is None else 400), error


def trends_view(db, as_of: date) -> dict:
    """Flags per label per council per quarter (a person's label wins over the model's), and
    the councils with an intervention notice or an inadequate judgement in the 12 months to
    `as_of`."""
    records = flag_records(db)
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    totals: dict[str, Counter] = defaultdict(Counter)
    undated = 0
    for record in records:
        quarter = quarter_of(record["date"])
        if quarter is None:
            undated += bool(record["labels"])
            continue
        council = record["council_name"] or NO_COUNCIL
        for label in record["labels"]:
            counts[council][label][quarter] += 1
            totals[quarter][label] += 1
    quarters = sorted(totals)
    table = [{"council": council, "query": None if council == NO_COUNCIL else urlencode({"council": council}),
              "rows": [
        {"label": label, "cells": [counts[council][label][q] for q in quarters],
         "total": sum(counts[council][label].values())} for label in LABELS]}
        for council in sorted(counts, key=str.lower)]
    since = as_of.replace(year=as_of.year - 1) if not (as_of.month == 2 and as_of.day == 29) \
        else as_of.replace(year=as_of.year - 1, day=28)
    watch: dict[str, dict] = {}
    for record in records:
        day = (record["date"] or "")[:10]
        if not day or not (since.isoformat() < day <= as_of.isoformat()):
            continue
        signals = []
        if "intervention_notice" in record["labels"]:
            signals.append("intervention notice")
        if "inspection_outcome" in record["labels"] and any(
                re.search(r"\binadequate\b", s, re.I)
                for s in record["evidence"].get("inspection_outcome", [])):
            signals.append("inadequate judgement")
        if not signals:
            continue
        council = record["council_name"] or NO_COUNCIL
        entry = watch.setdefault(council, {"council": council, "signals": set(), "items": 0,
                                           "latest": day})
        entry["signals"].update(signals)
        entry["items"] += 1
        entry["latest"] = max(entry["latest"], day)
    for entry in watch.values():
        entry["signals"] = sorted(entry["signals"])
        entry["query"] = None if entry["council"] == NO_COUNCIL else urlencode(
            {"council": entry["council"], "date_from": since.isoformat(), "date_to": as_of.isoformat()})
    dated = [r["date"][:10] for r in records if quarter_of(r["date"])]
    return {"table": table, "quarters": quarters, "chart": _chart(quarters, totals),
            "undated": undated, "watch": sorted(watch.values(), key=lambda e: e["council"].lower()),
            "as_of": as_of.isoformat(), "since": since.isoformat(),
            "newest": max(dated) if dated else None}


def _chart(quarters: list[str], totals: dict[str, Counter]) -> dict | None:
    """A stacked bar per quarter (one segment a label) as plain numbers for the template's
    inline SVG: drawn by the server, so the page makes no request and runs no script."""
    if not quarters:
        return None
    # Drawn at its own size, about 90 px a quarter: on a phone a long series scrolls sideways
    # instead of shrinking its labels to nothing.
    height, left, bottom, top = 220, 36, 30, 14
    width = max(320, left + 10 + 90 * len(quarters))
    peak = max(sum(totals[q].values()) for q in quarters) or 1
    step = (width - left - 10) / len(quarters)
    bar = min(48.0, step * 0.7)
    scale = (height - bottom - top) / peak
    bars = []
    for index, quarter in enumerate(quarters):
        x = left + index * step + (step - bar) / 2
        y = height - bottom
        segments = []
        for label in LABELS:
            n = totals[quarter][label]
            if n:
                segments.append({"label": label, "n": n, "x": round(x, 1), "y": round(y - n * scale, 1),
                                 "w": round(bar, 1), "h": round(n * scale, 1)})
                y -= n * scale
        bars.append({"quarter": quarter, "x": round(x + bar / 2, 1), "segments": segments,
                     "total": sum(totals[quarter].values()), "top": round(y - 4, 1)})
    ticks = sorted({0, peak // 2, peak})
    return {"width": width, "height": height, "left": left, "base": height - bottom,
            "bars": bars, "ticks": [{"n": t, "y": round(height - bottom - t * scale, 1)} for t in ticks]}


def runs_view(db, settings: Settings) -> dict:
    models = []
    for kind in ("classifier", "summariser"):
        promoted = (modelfolder.history(settings.models_dir, kind) or [None])[-1]
        try:
            versions = modelfolder.versions(settings.models_dir, kind)
        except (modelfolder.ModelError, ValueError, OSError) as exc:
            versions, problem = [], f"cannot read the model cards ({exc})"
        else:
            problem = None
        models.append({"kind": kind, "promoted": promoted, "problem": problem, "versions": [
            {"version": v["version"], "trained_at": v.get("trained_at"),
             "rows": v.get("training_rows"), "data_hash": (v.get("data_hash") or "")[:10],
             "metrics": v.get("metrics") or {}, "gold_metrics": v.get("gold_metrics") or {},
             "is_promoted": v["version"] == promoted}
            for v in reversed(versions)]})
    return {"runs": store.runs(db, 50), "models": models, "models_dir": str(settings.models_dir)}


# ---------------------------------------------------------------- the web app
_ENV = Environment(
    loader=PackageLoader("pipeline", "templates/desk"),
    autoescape=select_autoescape(["html", "html.j2"]),
    trim_blocks=True, lstrip_blocks=True,
)
_ENV.filters["pct"] = lambda v: "–" if v is None else f"{100 * float(v):.0f}%"


def _when(stamp: str | None) -> str:
    """"2026-12-02T07:34:32+00:00" -> "2026-12-02 07:34 UTC": the store's times, readably."""
    try:
        moment = datetime.fromisoformat(stamp or "")
    except ValueError:
        return stamp or ""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M") + (" UTC" if moment.tzinfo is not None else "")


_ENV.filters["when"] = _when
_ENV.globals.update(LABELS=LABELS, LABEL_TITLES=LABEL_TITLES, SHORT_LABELS=SHORT_LABELS)
# Read once from the package, through the templates' loader: no route reads a file.
_STYLESHEET = _ENV.loader.get_source(_ENV, "desk.css")[0].encode("utf-8")


def bind_problem(host: str, token: str | None) -> str | None:
    """Why the desk must not start on this address with this token, or None."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        return (f"--token must be at least {MIN_TOKEN_CHARS} characters; make one with "
                "`python3 -c 'import secrets; print(secrets.token_urlsafe())'`")
    if host not in LOCAL_HOSTS and not token:
        return (f"--host {host} lets other machines reach the desk: give --token (or MINUTES_TOKEN) "
                "too, or keep the default --host 127.0.0.1")
    return None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))


def _host_of(header: str) -> str:
    """A Host header without its port ("[::1]:8750" -> "::1")."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class DeskGuard(BaseHTTPMiddleware):
    """Every request: the Host it names (without a token, only this machine's names, so a page
    elsewhere cannot reach the desk by pointing a domain at 127.0.0.1), the token when there is
    one, a CSRF cookie for the forms, and the security headers on every answer."""

    def __init__(self, app, token: str | None, allowed_hosts: tuple[str, ...] | None,
                 secret: bytes):
        super().__init__(app)
        self.token = token
        self.allowed_hosts = allowed_hosts
        self.secret = secret
        self.session = (hmac.new(token.encode(), b"minutes review desk session", hashlib.sha256)
                        .hexdigest() if token else None)

    async def dispatch(self, request: Request, call_next) -> Response:
        response = self._refusal(request)
        if response is None:
            new_csrf = None
            if not request.cookies.get(CSRF_COOKIE):
                new_csrf = secrets.token_urlsafe(32)
            request.state.csrf = request.cookies.get(CSRF_COOKIE) or new_csrf
            request.state.csrf_form = hmac.new(self.secret, request.state.csrf.encode(),
                                               hashlib.sha256).hexdigest()
            response = await call_next(request)
            if new_csrf:
                response.set_cookie(CSRF_COOKIE, new_csrf, httponly=True, samesite="strict",
                                    secure=request.url.scheme == "https", path="/")
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        return response

    def _refusal(self, request: Request) -> Response | None:
        if request.method not in ("GET", "HEAD", "POST"):
            return _plain(405, "only GET and POST are answered here")
        if self.allowed_hosts is not None and \
                _host_of(request.headers.get("host", "")) not in self.allowed_hosts:
            return _plain(400, "this desk answers only requests addressed to this machine "
                               "(127.0.0.1 or localhost)")
        if self.token is None:
            return None
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            given = authorization[7:].strip()
            return None if _same(given, self.token) else _plain(403, "wrong token")
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is not None and _same(cookie, self.session):
            return None
        given = request.query_params.get("token")
        if given is not None:
            if not _same(given, self.token):
                return _plain(403, "wrong token")
            # Accepted once: the token leaves the address (history, logs, Referer) at once and
            # the browser keeps a cookie derived from it, which no script can read.
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), 303)
            response.set_cookie(SESSION_COOKIE, self.session, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https", path="/")
            return response
        if cookie is not None:
            return _plain(403, "this browser's session is from another token; open the desk "
                               "with ?token=TOKEN again")
        response = _plain(401, "this desk needs its token: open it with ?token=TOKEN once, or "
                               "send Authorization: Bearer TOKEN")
        response.headers["WWW-Authenticate"] = 'Bearer realm="minutes review desk"'
        return response


def _plain(status: int, message: str) -> Response:
    return Response(message + "\n", status, media_type="text/plain; charset=utf-8")


def _page(request: Request, template: str, status: int = 200, **data) -> HTMLResponse:
    html = _ENV.get_template(template).render(
        **data, csrf_token=getattr(request.state, "csrf_form", ""), path=request.url.path)
    return HTMLResponse(html, status)


def create_app(settings: Settings, token: str | None = None,
               allowed_hosts: tuple[str, ...] | None = LOCAL_HOSTS) -> Starlette:
    """The desk over `settings.db` and `settings.models_dir`. With a token every request must
    carry it; `allowed_hosts` (None: any) are the Host names answered, which `serve` widens to
    any once a token guards the desk."""
    secret = secrets.token_bytes(32)  # signs CSRF tokens; a restart asks forms to be reloaded

    def with_store(work, *args):
        """Run `work(db, *args)` on a connection of its own, off the event loop (a save may
        wait for the nightly run's write lock)."""
        def run():
            db = store.connect(settings.db)
            try:
                return work(db, *args)
            finally:
                db.close()
        return run_in_threadpool(run)

    async def guarded(request: Request, handler) -> Response:
        try:
            return await handler(request)
        except (sqlite3.Error, store.StoreError) as exc:
            problem = exc if isinstance(exc, store.StoreError) else store.error_for(settings.db, exc)
            return _page(request, "message.html.j2", 503, title="Store unavailable", message=str(problem))

    async def home(request: Request) -> Response:
        return RedirectResponse("/flags", 303)

    async def stylesheet(request: Request) -> Response:
        return Response(_STYLESHEET, media_type="text/css; charset=utf-8")

    async def flags(request: Request) -> Response:
        async def handle(request):
            try:
                filters = parse_filters(request.query_params)
            except FilterError as exc:
                data = await with_store(flags_view, FlagFilters())
                return _page(request, "flags.html.j2", 400, error=str(exc), **data)
            data = await with_store(flags_view, filters)
            return _page(request, "flags.html.j2", **data)
        return await guarded(request, handle)

    async def review(request: Request) -> Response:
        item_id = request.path_params["item_id"]

        async def handle(request):
            data = await with_store(review_view, item_id)
            if data is None:
                return _page(request, "message.html.j2", 404, title="No such item",
                             message=f"no item {item_id} in the store")
            return _page(request, "review.html.j2", saved=request.query_params.get("saved") == "1",
                         reviewer=unquote(request.cookies.get(REVIEWER_COOKIE, "")), **data)
        return await guarded(request, handle)

    async def save(request: Request) -> Response:
        item_id = request.path_params["item_id"]

        async def handle(request):
            refused = await _checked_post(request, secret)
            if refused is not None:
                return refused
            form = await request.form(max_files=0, max_fields=5000)
            status, error = await with_store(save_review, item_id, form)
            if error is None:
                response = RedirectResponse(f"/review/{item_id}?saved=1", 303)
                # Remembered for the next review; quoted, since a name need not be ASCII.
                response.set_cookie(REVIEWER_COOKIE, quote(row_from_form(item_id, form)["annotator"]),
                                    httponly=True, samesite="strict", path="/")
                return response
            data = await with_store(review_view, item_id)
            if data is None:
                return _page(request, "message.html.j2", status, title="Not saved",
                             message=f"not saved: {error}")
            # The form comes back as the person filled it in, with the reason; nothing stored.
            row = row_from_form(item_id, form)
            data["form"] = {"labels": set(row["labels"]), "briefing": row["briefing"] or "",
                            "ticked": {(l, s) for l, ss in row["evidence"].items() for s in ss}}
            return _page(request, "review.html.j2", status, error=f"not saved: {error}",
                         reviewer=row["annotator"] or "", saved=False, **data)
        return await guarded(request, handle)

    async def next_item(request: Request) -> Response:
        after = request.query_params.get("after", "")
        after_id = int(after) if after.isascii() and after.isdigit() else None

        async def handle(request):
            thresholds = _promoted_thresholds(settings)
            found = await with_store(next_uncertain, thresholds, after_id)
            if found is None:
                return _page(request, "message.html.j2", 200, title="Queue done",
                             message="every item in the uncertain queue has been reviewed")
            return RedirectResponse(f"/review/{found}", 303)
        return await guarded(request, handle)

    async def trends(request: Request) -> Response:
        async def handle(request):
            typed = (request.query_params.get("as_of") or "").strip()
            error, as_of = None, datetime.now(timezone.utc).date()
            if typed:
                try:
                    as_of = date.fromisoformat(typed)
                except ValueError:
                    error = f"as of {typed!r} is not a date (YYYY-MM-DD)"
            data = await with_store(trends_view, as_of)
            return _page(request, "trends.html.j2", 400 if error else 200, error=error, **data)
        return await guarded(request, handle)

    async def runs(request: Request) -> Response:
        async def handle(request):
            data = await with_store(runs_view, settings)
            return _page(request, "runs.html.j2", **data)
        return await guarded(request, handle)

    routes = [
        Route("/", home), Route("/desk.css", stylesheet), Route("/flags", flags),
        # Browsers ask for one on their own; "no icon" rather than a 404 in the console.
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/review/next", next_item),
        Route("/review/{item_id:int}", review, methods=["GET"]),
        Route("/review/{item_id:int}", save, methods=["POST"]),
        Route("/trends", trends), Route("/runs", runs),
    ]
    return Starlette(routes=routes, middleware=[
        Middleware(DeskGuard, token=token, allowed_hosts=allowed_hosts, secret=secret)])


async def _checked_post(request: Request, secret: bytes) -> Response | None:
    """Every POST: not too big, from one of our own pages (Origin), and carrying the CSRF token
    that signs this browser's CSRF cookie. A refusal says why; nothing is read further."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit() or int(length) > MAX_FORM_BYTES:
        return _plain(413, f"a form must say its length and be under {MAX_FORM_BYTES} bytes")
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        return _plain(403, "refused: the form was sent from another site")
    cookie = request.cookies.get(CSRF_COOKIE)
    form = await request.form(max_files=0, max_fields=5000)
    given = form.get("csrf")
    expected = hmac.new(secret, (cookie or "").encode(), hashlib.sha256).hexdigest()
    if not cookie or not isinstance(given, str) or not _same(given, expected):
        return _plain(403, "refused: the form's CSRF token is missing or out of date; reload the "
                           "page and save again")
    return None


def listening_socket(host: str, port: int) -> socket.socket:
    """The desk's socket, bound before the server starts so a port in use is one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, reuse_port=False)


def serve(settings: Settings, host: str, port: int, token: str | None, sock: socket.socket) -> None:
    """Run the desk until interrupted. The access log is off: `?token=` would be written to it."""
    import uvicorn

    allowed = None if token else tuple(dict.fromkeys((*LOCAL_HOSTS, host)))
    config = uvicorn.Config(create_app(settings, token, allowed), log_level="warning",
                            access_log=False, server_header=False, proxy_headers=False)
    uvicorn.Server(config).run(sockets=[sock])
