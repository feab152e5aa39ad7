"""The ModernGov item splitter: normalised text of one document -> its items.

Knows the shapes councils publish: "Agenda item" pages, "Issue - meetings" pages, "Decision details"
pages, and full minutes of a meeting with numbered items (web page, PDF or Word).
"""

from __future__ import annotations

import re
from datetime import datetime

from pipeline.passages import is_page_field

_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_DAYS = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"

# Site furniture and document links: never words of the minutes.
_BOILERPLATE_LINES = re.compile(
    r"^(supporting documents:?|additional documents:?|view directions|browse|agenda and minutes|"
    r"items|no\.? item|print this page|minutes:?|decision:?|agendas, meetings and minutes.*|"
    r"view the reasons why item .* is restricted|issue - meetings|agenda item|decision details|"
    r"back to .*|printed minutes.*|\(?copy attached\)?|decision status:.*|is key decision\?:.*|"
    r"is subject to call in\?:.*|decision maker:.*|date of decision:.*|effective from:.*|"
    r"wards affected:.*|date of publication:.*|call-in deadline:.*)$",
    re.I,
)
_LEADING_BULLET = re.compile(r"^[•·▪]\s*")
_MEETING_OF_LINE = re.compile(r"^Meeting of .{3,160}\(Item [\w.]+\)\.?$", re.I)
# ModernGov's own site menu, one entry a line, when a page was saved or copied whole: read as
# the item's first lines, it became the purpose line every passage is read with. Dropped in
# `split_document`, before items are found.
_SITE_MENU_LINE = re.compile(
    r"^(?:calendar|committees|community councils|consultations|decisions|election results|"
    r"e-?petitions|forthcoming decisions|forward plans?|library|meetings|outside bodies|search documents|"
    r"subscribe to updates|your councillors|your mps|your meps|what's new|what’s new|"
    r"parish councils|political groups|councillors|mps|meps)\s*$",
    re.I,
)
_INLINE_BOILERPLATE = [
    re.compile(r"\s*\bpdf icon\b", re.I),
    re.compile(r"\s*\b(?:PDF|DOC|DOCX)\s+\d+(?:\.\d+)?\s*[KM]B\b", re.I),
    re.compile(r"\s*\.{3}\s*view the full (?:minutes|decision) text for item \d+\s*", re.I),
    re.compile(r"\s*View the full (?:minutes|decision) text for item \d+\s*", re.I),
]
_ISSUE_MEETING = re.compile(
    r"^Meeting:\s*(?P<date>\d{1,2}/\d{1,2}/\d{4})\s*-\s*(?P<committee>.+?)\s*\(Item\s*(?P<number>[\w.]+)\)\s*$"
)
_AGENDA_ITEM_SUFFIX = re.compile(r"\s*\(Agenda item\s*(?P<number>[\w.]+)\)\s*$", re.I)
_BARE_NUMBER = re.compile(r"^(?P<number>\d{1,3})\.?$")
_NUMBER_TITLE = re.compile(r"^(?:Minute\s+|Item\s+)?(?P<number>\d{1,3})\.?\s+(?P<title>[A-Z(‘'\"].{2,160})$")
_MEETING_HEADER = re.compile(
    rf"^(?P<committee>(?!To |The )[^\n]{{3,100}}?(?:Committee|Cabinet|Board|Panel|Council|Executive|"
    rf"Forum|Session|Group|Commission|Partnership|Meeting))\s*[-–]\s*(?:(?:{_DAYS}),?\s+)?(?P<date>\d{{1,2}}(?:st|nd|rd|th)?\s+(?:{_MONTHS}),?\s+\d{{4}})",
)
_HELD_ON = re.compile(
    rf"(?:held|meeting)\s+(?:on|at)\s+(?:(?:{_DAYS}),?\s+)?(?P<date>\d{{1,2}}(?:st|nd|rd|th)?\s+(?:{_MONTHS}),?\s+\d{{4}})",
    re.I,
)
_COUNCIL = re.compile(
    r"\b((?:London Borough|Royal Borough|City|County Borough|Borough) of"
    r"(?: (?!Minutes\b|Meeting\b|Agenda\b|Cabinet\b|Council\b)[A-Z][\w'’-]+)+|"
    r"(?:[A-Z][\w'’-]{1,40} ){1,12}(?:County |City |Borough |District |Metropolitan Borough |Unitary )?Council)\b"
)  # Bounded words: unbounded, a long run of capitalised words costs time quadratic in its length.
_MEETING_OF = re.compile(
    r"meeting of (?:the )?(?P<committee>[A-Z][^\n]{2,80}?) held on (?:(?:" + _DAYS + r"),?\s+)?"
    r"(?P<date>\d{1,2}(?:st|nd|rd|th)?\s+(?:" + _MONTHS + r"),?\s+\d{4})",
)
_RESOLUTION_START = re.compile(
    r"^(?:RESOLVED|Resolved|AGREED|Agreed|DECISION|Decision|RECOMMENDED|It was resolved|"
    r"The (?:Committee|Cabinet|Board|Panel|Council) RESOLVED)\b"
)
# Meeting business, by its title. Urgent business and the public's questions are not here: what
# they hold is any subject at all (a DfE letter that came after the agenda, a resident asking
# what the commissioner's report means), and the labelling guide labels what an item says.
_PROCEDURAL = re.compile(
    r"^(apologies|declarations? of (?:disclosable )?(?:pecuniary )?interests?|minutes?$|"
    r"minutes of the (?:previous|last) meeting|confirmation of (?:the )?minutes|"
    r"date(?:s)? of (?:the )?next meeting|exclusion of (?:the )?(?:press|public)|"
    r"substitutes)",
    re.I,
)


def parse_date(value: str | None) -> str | None:
    """'11/03/2019' or '4th February, 2019' -> '2019-03-11' (ISO); None when unparseable."""
    if not value:
        return None
    value = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", value.replace(",", " "))
    value = re.sub(r"\s+", " ", value).strip()
    for fmt in ("%d/%m/%Y", "%d %B %Y", "%Y-%m-%d", "%d %b %Y"):
        try:
            return datetime.strptime(value, fmt).date().isoformat()
        except ValueError:
            continue
    return None


def clean_title(title: str) -> tuple[str, str | None]:
    """Strip document-link noise, '(Agenda item 4)' and a leading item number; returns
    (title, item number if one was found)."""
    number = None
    match = _AGENDA_ITEM_SUFFIX.search(title)
    if match:
        number = match.group("number")
        title = title[: match.start()]
    title = strip_boilerplate(title)
    match = re.match(r"^(?P<number>\d{1,3})\.?\s+(?=\S)", title)
    if match:
        number = number or match.group("number")
        title = title[match.end():]
    title = re.sub(r"\s*\((?:Pages?\s*[\d\s\-–]+)\)\s*$", "", title)
    # "... - Report of the Director of Children's Services" names the author, not the subject.
    title = re.sub(r"\s+[-–]\s+(?:Report|Joint Report) (?:of|by) .*$", "", title)
    return title.strip(" -–:"), number


def strip_boilerplate(line: str) -> str:
    for pattern in _INLINE_BOILERPLATE:
        line = pattern.sub("", line)
    return line.strip()


def is_procedural(title: str | None, text: str | None = None) -> bool:
    """Meeting business that carries no label by the labelling guide (apologies, declarations,
    the last meeting's minutes), by its title; procedural items are left unscored.

    Given the item's `text`, apologies, declarations and substitutes longer than
    `BRIEF_BUSINESS_MAX_WORDS` are not procedural: such an item is a whole meeting copied as plain
    text with unnumbered headings, which the splitter could not cut, and left unscored its
    inspection and its caseloads would never reach a director."""
    if not (title and _PROCEDURAL.match(title.strip())):
        return False
    if text is not None and _BRIEF_BUSINESS.match(title.strip()):
        return len(text.split()) - len(title.split()) <= BRIEF_BUSINESS_MAX_WORDS
    return True


# Apologies take a few lines, and a long list of declarations, one councillor's interest a line,
# two or three hundred words. Minutes of the last meeting can be long (matters arising), and stay
# procedural.
BRIEF_BUSINESS_MAX_WORDS = 400
_BRIEF_BUSINESS = re.compile(r"^(apologies|declarations? of|substitutes)", re.I)


def _nonempty(lines: list[str], start: int = 0) -> int:
    """Index of the first non-empty line at or after start (len(lines) if none)."""
    while start < len(lines) and not lines[start].strip():
        start += 1
    return start


def parse_item(title: str | None, body_lines: list[str], number: str | None = None) -> dict:
    """Split one item's lines into purpose, minutes and resolutions; `text` is all of it,
    boilerplate removed, title first."""
    purpose: list[str] = []
    minutes: list[str] = []
    resolutions: list[str] = []
    kept: list[str] = []
    section = "purpose"
    in_resolution = False
    for raw in body_lines:
        line = strip_boilerplate(raw)
        # A page copied as text keeps its list bullets: "• Agenda item" is still furniture.
        bare = _LEADING_BULLET.sub("", line)
        label = bare.lower().rstrip(":").strip()
        if label in ("minutes",):
            section = "minutes"
            in_resolution = False
            continue
        if label in ("decision",):
            section = "decision"
            in_resolution = True
            continue
        if label in ("supporting documents", "additional documents"):
            in_resolution = False
            continue
        if _BOILERPLATE_LINES.match(bare):
            continue
        # An agenda item page repeats its title and names its meeting before the minutes
        # ("Meeting of Cabinet, Thursday, 6th June, 2024 10.00 am (Item 4.)"): neither is
        # the purpose line every passage would be read with, nor text (the title leads it already).
        if section == "purpose" and (bare == (title or "").strip() or _MEETING_OF_LINE.match(bare)):
            continue
        if not line:
            if kept and kept[-1] != "":
                kept.append("")
            continue
        kept.append(line)
        if _RESOLUTION_START.match(line):
            in_resolution = True
        if in_resolution:
            resolutions.append(line)
        if section == "purpose":
            purpose.append(line)
        else:
            minutes.append(line)
    # With no "Minutes:" marker (plain-text copies), the first paragraph is the purpose
    # only when it reads like one ("To consider...", "The purpose of...").
    if section == "purpose":
        first = purpose[:1]
        if first and re.match(r"^(?:\[?To |The purpose of|This report)", first[0]):
            minutes = purpose[1:]
            purpose = first
        else:
            minutes, purpose = purpose, []
    # A page's fields before the minutes ("Submitted by: Cllr ...") are no purpose line.
    purpose = [line for line in purpose if not is_page_field(_LEADING_BULLET.sub("", line))]
    text_lines = ([title] if title else []) + [""] + kept
    text = "\n".join(text_lines).strip()
    text = re.sub(r"\n{3,}", "\n\n", text)
    return {
        "number": number,
        "title": title,
        "purpose": "\n".join(purpose) or None,
        "minutes": "\n".join(minutes) or None,
        "resolutions": "\n".join(resolutions) or None,
        "text": text,
        "is_procedural": is_procedural(title, text),
    }


def _find_headings(lines: list[str]) -> list[tuple[int, int, str, str]]:
    """Numbered item headings of a full set of minutes: (line index, next body line, number, title).

    ModernGov meeting pages put the number alone on a line ("16.") and the title on the next;
    PDFs and Word files write "61. Title". Numbers must ascend, and a heading must have body
    text before the next one, so numbered conditions or lists inside an item are not split.
    """
    bare = []
    for i, line in enumerate(lines):
        match = _BARE_NUMBER.match(line)
        if match:
            j = _nonempty(lines, i + 1)
            if j < len(lines) and not _BARE_NUMBER.match(lines[j]) and len(lines[j]) <= 200:
                bare.append((i, j + 1, match.group("number"), lines[j]))
    headings = _ascending(bare, lines)
    if len(headings) >= 2:
        return headings
    inline = []
    for i, line in enumerate(lines):
        match = _NUMBER_TITLE.match(line)
        if match and not line.rstrip().endswith((",", ";")):
            inline.append((i, i + 1, match.group("number"), match.group("title")))
    headings = _ascending(inline, lines)
    return headings if len(headings) >= 2 else []


def _ascending(candidates, lines):
    accepted = []
    for k, (i, body_start, number, title) in enumerate(candidates):
        n = int(number)
        if accepted and not (int(accepted[-1][2]) < n <= int(accepted[-1][2]) + 25):
            continue
        next_start = candidates[k + 1][0] if k + 1 < len(candidates) else len(lines)
        has_body = any(line.strip() for line in lines[body_start:next_start])
        if not has_body and k + 1 < len(candidates):
            continue
        accepted.append((i, body_start, number, title))
    return accepted


def split_document(text: str, page_title: str | None = None) -> dict:
    """Normalised text -> {"committee", "meeting_date", "shape", "items": [item, ...]}."""
    # A page saved or copied whole opens with the site's menu, a bulleted entry a line: gone
    # before the title is looked for ("• Calendar" was once an item's title), and the bullet of
    # "• Agenda item" with it, so the page shape is still seen.
    lines = []
    for line in text.split("\n"):
        bare = _LEADING_BULLET.sub("", line.strip())
        if _SITE_MENU_LINE.match(bare):
            continue
        lines.append(bare if bare.lower() == "agenda item" else line)
    head = [(i, line) for i, line in enumerate(lines) if line.strip()][:12]
    meta: dict = {"committee": None, "meeting_date": None, "council": None}
    for candidate in [page_title or ""] + [line for _, line in head[:4]]:
        match = _COUNCIL.search(candidate)
        if match and not match.group(1).startswith(("The ", "Full ")):
            meta["council"] = match.group(1).strip()
            break

    for _, line in head:
        match = _MEETING_HEADER.match(line)
        if match and len(line) < 200:
            meta["committee"] = match.group("committee").strip()
            meta["meeting_date"] = parse_date(match.group("date"))
            break
    match = _MEETING_OF.search("\n".join(line for _, line in head[:4]))
    if match and not meta["committee"]:
        meta["committee"] = match.group("committee").strip()
        meta["meeting_date"] = parse_date(match.group("date"))
    for line in lines[:400]:
        match = _ISSUE_MEETING.match(line)
        if match:
            meta["meeting_date"] = parse_date(match.group("date"))
            meta["committee"] = match.group("committee").strip()
            break
        if line.startswith("Decision Maker:"):
            meta["committee"] = line.split(":", 1)[1].strip() or None
    if not meta["meeting_date"]:
        # Only the document's own heading ("Minutes of the meeting ... held on ..."): later lines
        # name other meetings ("the minutes of the previous meeting held on ...").
        match = _HELD_ON.search("\n".join(line for _, line in head[:3]))
        if match:
            meta["meeting_date"] = parse_date(match.group("date"))

    # Single-item page shapes: the line after the page-type line is the title.
    for i, line in head:
        shape = _page_shape(line)
        if shape:
            t = _nonempty(lines, i + 1)
            # "Agendas, Meetings and Minutes - Agenda item" is followed by a plain "Agenda item".
            if t < len(lines) and _page_shape(lines[t]):
                t = _nonempty(lines, t + 1)
            if t >= len(lines):
                break
            title, number = clean_title(lines[t])
            body = lines[t + 1:]
            issue_number = None
            for line2 in body:
                match = _ISSUE_MEETING.match(line2)
                if match:
                    issue_number = match.group("number")
            number = number or issue_number
            body = [b for b in body if not _ISSUE_MEETING.match(b) and not _is_item_heading(b, number)]
            item = parse_item(title, body, number)
            return {**meta, "shape": shape, "items": [item]}

    headings = _find_headings(lines)
    if headings:
        items = []
        for k, (_, body_start, number, raw_title) in enumerate(headings):
            end = headings[k + 1][0] if k + 1 < len(headings) else len(lines)
            title, _ = clean_title(raw_title)
            items.append(parse_item(title, lines[body_start:end], number))
        return {**meta, "shape": "meeting", "items": items}

    # One item with no page header: the first line is its title.
    first = _nonempty(lines)
    title, number = clean_title(lines[first]) if first < len(lines) else (None, None)
    if title and (len(title) > 200 or not title):
        title = (page_title or title[:120]).strip()
    item = parse_item(title, lines[first + 1:], number)
    return {**meta, "shape": "item", "items": [item]}


def _page_shape(line: str) -> str | None:
    lower = line.strip().lower()
    if lower == "issue - meetings" or lower.endswith("- issue - meetings"):
        return "issue"
    if lower == "agenda item" or lower.endswith("- agenda item"):
        return "agenda-item"
    if lower == "decision details":
        return "decision"
    return None


def _is_item_heading(line: str, number: str | None) -> bool:
    """The "61 Title pdf icon PDF 136 KB" line of an issue page repeats the item heading."""
    return bool(number and re.match(rf"^{re.escape(number)}\.?\s+\S", line) and
                re.search(r"PDF\s+\d+\s*KB|pdf icon", line, re.I))
