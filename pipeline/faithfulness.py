"""The faithfulness check: the numbers, dates and named bodies a briefing states, and those of
them its item does not contain. The summariser applies it to every sentence it picks; evaluation
counts what it finds."""

from __future__ import annotations

import re

from pipeline.passages import abbreviate, acronyms_defined

_NUMBER = re.compile(r"£?\d[\d,.]*(?:%| per cent)?")
_NAME = re.compile(r"\b(?:[A-Z][a-zA-Z'’&-]+|[A-Z]{2,})(?:\s+(?:of|and|for|the|[A-Z][a-zA-Z'’&-]+|[A-Z]{2,}))*")
_MONTH_YEAR = re.compile(
    r"\b(?:\d{1,2}(?:st|nd|rd|th)?\s+)?(?:January|February|March|April|May|June|July|August|"
    r"September|October|November|December)(?:\s+\d{4})?\b"
)


def unsupported_facts(briefing: str, source: str) -> list[str]:
    """Numbers, dates and named bodies in a briefing that the source does not contain. A name
    the source abbreviates itself ("Care Quality Commission (CQC)") counts in either form."""
    acronyms = acronyms_defined(source)
    if acronyms:
        source = source + "\n" + abbreviate(source, acronyms)
    norm_source = re.sub(r"\s+", " ", source.replace("’", "'")).lower()
    missing = []
    for match in _NUMBER.finditer(briefing):
        token = match.group().rstrip(".,")
        if token and token.lower() not in norm_source:
            missing.append(token)
    for match in _MONTH_YEAR.finditer(briefing):
        if match.group().lower() not in norm_source:
            missing.append(match.group())
    for match in _NAME.finditer(briefing):
        name = match.group().strip()
        words = name.split()
        # A capitalised word that opens a sentence is not a name on that account alone.
        opens_sentence = not briefing[:match.start()].strip() or briefing[:match.start()].rstrip()[-1] in ".!?:;"
        if len(words) == 1 and opens_sentence and not name.isupper():
            continue
        if opens_sentence and len(words) > 1 and words[0] in {"The", "A", "An", "This", "That", "It", "In", "On"}:
            name = " ".join(words[1:])
        if name.replace("’", "'").lower() not in norm_source:
            missing.append(name)
    unique = list(dict.fromkeys(missing))
    # "March" and "2024" are reported once, inside "March 2024".
    return [m for m in unique if not any(m != other and m in other for other in unique)]


def _sentence_start(text: str, at: int) -> bool:
    before = text[:at].rstrip()
    return not before or before[-1] in ".!?:;"


def stated_facts(text: str, source: str) -> list[str]:
    """The numbers, dates and named bodies a briefing states (the labelling guide's "every
    number, date and body named"): numbers and month dates; acronyms and names of two or more
    capitalised words (Ofsted, DfE, Department for Education); a single capitalised word that
    opens a sentence only when the source writes it capitalised inside a sentence too (a name,
    not a sentence's first word). A number inside a date is counted once, with its date."""
    facts = [m.group().rstrip(".,") for m in _NUMBER.finditer(text)]
    facts += [m.group() for m in _MONTH_YEAR.finditer(text)]
    months = {m.group() for m in _MONTH_YEAR.finditer(text)}
    for match in _NAME.finditer(text):
        name = match.group().strip()
        words = name.split()
        if words[0] in {"The", "A", "An", "This", "That", "It", "In", "On"} and len(words) > 1:
            name, words = " ".join(words[1:]), words[1:]
        if name in months or name in {"The", "A", "An"}:
            continue
        if len(words) == 1 and not any(c.isupper() for c in name[1:]) and _sentence_start(text, match.start()):
            inside = re.search(rf"(?<![.!?:;]\s)(?<!^)\b{re.escape(name)}\b", source)
            if not inside:
                continue
        facts.append(name)
    unique = [f for f in dict.fromkeys(facts) if f]

    def within(fact: str, other: str) -> bool:  # "2024" within "March 2024", not "24" within it
        return fact != other and re.search(rf"(?<![\w£]){re.escape(fact)}(?!\w)", other) is not None

    return [f for f in unique if not any(within(f, other) for other in unique)]
