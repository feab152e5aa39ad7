"""Item -> passages (the title, sentences and bullets), shared by classifier, summariser and evidence,
and the item context each passage is read with.

The encoder sees one passage at a time (items are longer than its window), paired with its item's
context (committee, title, purpose line): whether "ten inspection reports were published" flags
anything depends on whether the item is about children's homes or care homes for older people.
Evidence and briefings are made of passages, so they are always verbatim spans of the item's text.
"""

from __future__ import annotations

import re

import numpy as np

# Abbreviations after which a full stop does not end a sentence.
_ABBREVIATIONS = (
    "Cllr", "Councillor", "Mr", "Mrs", "Ms", "Dr", "Prof", "No", "Nos", "para", "paras", "e.g", "i.e",
    "etc", "approx", "St", "Rev", "Sgt", "Insp", "Supt", "Co", "Ltd", "vs", "cf", "Apr", "Aug",
    "Dec", "Feb", "Jan", "Jul", "Jun", "Mar", "Nov", "Oct", "Sep", "Sept", "a.m", "p.m", "Min",
)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'’”)]*\s+(?=[\"'‘“(]*[A-Z0-9£•])")
_MIN_WORDS = 3
_MAX_WORDS = 80
# The context is a short first segment: enough for the committee, the title and a purpose line.
CONTEXT_WORDS = 40


# Fields of ModernGov decision and issue pages: whole passages that are the page, not the minutes.
PAGE_FIELD = re.compile(
    r"^(?:Decision (?:maker|status|type|due|details)|Is (?:it a )?key decision|Is subject to call[- ]in|"
    r"Publication date|Date of (?:decision|publication)|Decided at meeting|Accompanying documents|"
    r"Lead (?:member|director|officer)|Department|Contact|Wards? affected|Notice of proposed decision|"
    r"Call[- ]in (?:deadline|expiry)|Effective from|Reason for urgency|Report author|Portfolio|Action(?: by)?|"
    # who brought the item: "Submitted by: Cllr ...", on Welsh councils' pages "Cyflwynwyd gan:"
    r"(?:Submitted|Presented) by|Cyflwynwyd gan)"
    r"\b[^:]{0,40}:",
    re.I,
)


def is_page_field(passage: str) -> bool:
    """A field of the page, not a sentence of the minutes: "Notice of proposed decision first
    published: 14/02/2024", "Department: Children's Services". It can be no label's evidence
    (a "notice" that is a publication date is no improvement notice), so the classifier does not
    score it. A field with a sentence's worth after its name ("Reason for urgency: the DfE's
    notice requires ...") is scored like any passage."""
    match = PAGE_FIELD.match(passage.strip())
    return bool(match) and len(passage.strip()[match.end():].split()) <= 12


def split_sentences(paragraph: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        before = paragraph[start:match.start()].rstrip()
        last_word = re.split(r"\s", before)[-1] if before else ""
        if last_word.rstrip(".").rstrip("'’") in _ABBREVIATIONS or re.fullmatch(r"[A-Z]\.", last_word):
            continue
        pieces.append(paragraph[start:match.start()].strip())
        start = match.end()
    pieces.append(paragraph[start:].strip())
    return [p for p in pieces if p]


def _chunk_long(sentence: str) -> list[str]:
    """A run-on sentence (no full stops for 100 words) is cut at semicolons, then by length."""
    words = sentence.split()
    if len(words) <= _MAX_WORDS:
        return [sentence]
    parts = [p.strip() for p in re.split(r"(?<=;)\s+", sentence) if p.strip()]
    out: list[str] = []
    for part in parts:
        w = part.split()
        for i in range(0, len(w), _MAX_WORDS):
            out.append(" ".join(w[i:i + _MAX_WORDS]))
    return out


# A PDF's text layer breaks every line at the page's width ("... services by Care\nInspectorate
# Wales (CIW), highlighting ..."): read line by line, each sentence becomes fragments that neither
# the classifier nor a briefing can use. Such a text is told by its lines: many stop mid-sentence
# near one common width. There, a line that stops mid-sentence near that width, or before a line
# that opens in lower case, is joined to the next; a blank line, a bullet or a numbered paragraph
# still starts a new one. A web page's paragraphs (one a line, ending in full stops), its short
# headings and a table's rows are left as they are.
_LINE_END = re.compile(r"[.!?:;][\"'’”)]*$")
_LINE_OPENS_LIST = re.compile(r"^(?:[-•·▪◦*–]\s|\(?[a-z0-9]{1,3}[.)]\s|\d+(?:\.\d+)+\s)", re.I)
_FIELD_LINE = re.compile(r"^[A-Z][\w ?’'()/-]{0,40}:\s")
_WRAP_SHARE = 0.3
_WRAP_WIDTH = 0.6


def unwrap_lines(text: str) -> list[str]:
    """The text's non-empty lines, with the lines a hard-wrapped text broke mid-sentence joined
    back into their paragraphs (whitespace aside, still the text's own words in order)."""
    paragraphs = [[line.strip() for line in block.split("\n") if line.strip()]
                  for block in re.split(r"\n\s*\n", text)]
    lines = [line for block in paragraphs for line in block]
    if len(lines) < 6:
        return lines
    width = float(np.percentile([len(line) for line in lines], 75))

    def breaks_mid_sentence(line: str, following: str) -> bool:
        if (_LINE_END.search(line) or _LINE_OPENS_LIST.match(following) or "|" in line + following
                or _FIELD_LINE.match(line) or _FIELD_LINE.match(following)):
            return False  # a sentence's end, a list, a table's rows, a page's "Meeting: ..." fields
        return len(line) >= _WRAP_WIDTH * width or following[:1].islower()

    pairs = [(a, b) for block in paragraphs for a, b in zip(block, block[1:])]
    if sum(breaks_mid_sentence(a, b) and len(a) >= _WRAP_WIDTH * width for a, b in pairs) < _WRAP_SHARE * len(pairs):
        return lines
    out: list[str] = []
    for block in paragraphs:
        if not block:
            continue
        current = [block[0]]  # a list, joined once: a long wrapped paragraph stays linear
        for last, line in zip(block, block[1:]):
            if not breaks_mid_sentence(last, line):
                out.append(" ".join(current))
                current = []
            current.append(line)
        out.append(" ".join(current))
    return out


def item_passages(text: str, title: str | None = None) -> list[str]:
    """Sentences and bullets of an item's text, in order, each verbatim from the text.

    Very short fragments ("Minutes:", "(a)") are merged into the passage that follows them.
    The title, when given, is the first passage (it often carries the subject alone).
    """
    passages: list[str] = []
    body = text
    if title and body.startswith(title):
        body = body[len(title):]
    if title:
        passages.append(title.strip())
    carry = ""
    for line in unwrap_lines(body):
        if line.startswith("• "):
            line = line[2:].strip()
        for sentence in split_sentences(line):
            for piece in _chunk_long(sentence):
                piece = (carry + " " + piece).strip() if carry else piece
                if len(piece.split()) < _MIN_WORDS:
                    carry = piece
                    continue
                carry = ""
                passages.append(piece)
    if carry:
        if passages and len(passages) > (1 if title else 0):
            passages[-1] = passages[-1] + " " + carry
        else:
            passages.append(carry)
    return passages


def item_context(record: dict, max_words: int = CONTEXT_WORDS) -> str:
    """What every passage of an item is read with: its committee, title and purpose line
    ("Adults and Health Scrutiny | Care home quality report | To inform members of ..."), at most
    `max_words` words. Fields that are missing are left out; an item with none of them has an
    empty context. Gold and labelled rows name the committee `meeting`, the store `committee`."""
    committee = record.get("committee") or record.get("meeting") or ""
    parts = [committee.strip(), (record.get("title") or "").strip(),
             " ".join((record.get("purpose") or "").split())]
    words = " | ".join(p for p in parts if p).split()
    return " ".join(words[:max_words])


# "Special Educational Needs and Disabilities (SEND)": a name followed by its own initials.
_DEFINED_ACRONYM = re.compile(r"\(([A-Z][A-Za-z&]{1,9})\)")
_NAME_WORD = re.compile(r"[A-Z][\w’'&-]*|of|and|for|the|in|on|to|&")


def acronyms_defined(text: str) -> dict[str, str]:
    """{"Special Educational Needs and Disabilities": "SEND", ...}: names the text itself
    abbreviates, found where the capitals of a run of name words spell the bracketed acronym."""
    found: dict[str, str] = {}
    for match in _DEFINED_ACRONYM.finditer(text):
        acronym = match.group(1)
        capitals = [c for c in acronym if c.isupper()]
        if len(capitals) < 2:  # "(Ofsted)" is a name, not an abbreviation
            continue
        words = text[max(0, match.start() - 300):match.start()].split()
        # Walk back over name words until their initials spell the acronym's capitals.
        for start in range(len(words) - 1, max(-1, len(words) - 12), -1):
            if not _NAME_WORD.fullmatch(words[start]):
                break
            run = words[start:]
            initials = [w[0] for w in run if w[0].isupper()]
            if initials == capitals and run[0][0].isupper() and len(run) >= 2:
                found[" ".join(run)] = acronym
                break
    return found


def abbreviate(sentence: str, acronyms: dict[str, str]) -> str:
    """Each name the item abbreviates, written as its acronym ("Care Quality Commission (CQC)"
    and later "Care Quality Commission" both become "CQC"): the acronym is the item's own word."""
    for name in sorted(acronyms, key=len, reverse=True):
        acronym = acronyms[name]
        sentence = re.sub(rf"{re.escape(name)}\s*\({re.escape(acronym)}\)", acronym, sentence)
        sentence = re.sub(rf"\b{re.escape(name)}\b", acronym, sentence)
    return sentence


def normalise_for_match(text: str) -> str:
    """Lower-case, plain quotes and single spaces: for comparing evidence with passages."""
    text = text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    text = text.replace("\u00a0", " ").replace("·", " ").replace("•", " ")
    return re.sub(r"\s+", " ", text).strip().lower()


def overlaps(passage: str, evidence: str) -> bool:
    """Whether a passage and a quoted evidence sentence are the same span (either holds the
    other, or they share most of their words: quotes are cut differently from our sentences)."""
    a, b = normalise_for_match(passage), normalise_for_match(evidence)
    if not a or not b:
        return False
    if a in b or b in a:
        return True
    wa, wb = set(re.findall(r"\w+", a)), set(re.findall(r"\w+", b))
    if not wa or not wb:
        return False
    return len(wa & wb) / min(len(wa), len(wb)) >= 0.8
