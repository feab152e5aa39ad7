"""Item -> a briefing of at most 60 words: a fine-tuned encoder scores each sentence, the best are
chosen without redundancy (the resolution kept), lead-ins are trimmed, and nothing is added.

Every number, date and named body in a briefing must appear in the item; a briefing that fails
that check is replaced by a safer one (the item's own best sentence, cut to fit).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from pipeline.evaluate import unsupported_facts
from pipeline.ingest.split import clean_title
from pipeline.passages import abbreviate, acronyms_defined, item_passages, normalise_for_match

# Reporting lead-ins: dropping them shortens a sentence without changing what it says.
_LEAD_INS = re.compile(
    r"^(?:(?:it was|members were|the (?:committee|cabinet|board|panel) (?:was|were)) "
    r"(?:noted|informed|reported|advised|explained|highlighted|confirmed|stated|told) that |"
    r"(?:the )?(?:[A-Z][\w’'&-]+ ){0,5}(?:reported|explained|advised|confirmed|stated|noted|"
    r"highlighted|added|commented|said) that |in response to (?:a )?questions?(?: from [^,]+)?, "
    r"(?:[\w’'-]+ ){1,6}(?:confirmed|explained|advised|stated|said) that |"
    r"the report (?:highlighted|noted|stated|explained) that |during the discussion,? )",
    re.I,
)
_PARENTHETICAL_REFS = re.compile(
    r"\s*\((?:for copy of report see[^)]*|appendix[^)]*|see appendix[^)]*|copy attached|"
    r"agenda pages?[^)]*|pages? \d[^)]*)\)",
    re.I,
)
_RESOLUTION_HEAD = re.compile(r"^(?:RESOLVED|Resolved|AGREED|Agreed|DECISION|Decision)\s*[:–-]?\s*", re.I)
_BOILERPLATE = re.compile(
    r"pdf icon|\bPDF \d+ ?KB\b|view the full minutes text|supporting documents|additional documents",
    re.I,
)


_LONG_PARENTHESIS = re.compile(r"\s*\((?:[^()\d]*?\s){3,}[^()\d]*?\)")
# What opens a passage without being part of its sentence: list markers ("·", "h)", "(b)", "5.1")
# and section headings of minutes pages ("Minutes:", "Background:", "Reasons:").
_OPENERS = re.compile(
    r"^(?:[·•▪◦*–-]\s*|\(?[a-hj-z]\)\s+|\(?(?:i{1,3}|iv|vi{0,3}|ix|x)\)\s+|\d+(?:\.\d+)+\.?\s+|"
    r"\d{1,3}[.)]\s+|(?:Minutes|Background|Reasons?(?: for (?:the )?decision)?|Decision|Purpose"
    r"(?: of (?:the )?report)?|Summary|Discussion|Outcome)\s*:\s*)+",
    re.I,
)


def compress(sentence: str, acronyms: dict[str, str] | None = None) -> str:
    """Trim list markers, headings, a lead-in, references to appendices and long asides in
    brackets, and write defined names as their acronyms; never add a word."""
    out = _OPENERS.sub("", sentence.strip()).strip()
    out = _PARENTHETICAL_REFS.sub("", out).strip()
    out = _LONG_PARENTHESIS.sub("", out)
    if acronyms:
        out = abbreviate(out, acronyms)
    trimmed = _LEAD_INS.sub("", out, count=1)
    if trimmed != out and len(trimmed.split()) >= 4:
        out = trimmed
    out = out.strip().rstrip("| ").strip()  # a table cell's border, from a page's decision table
    return out[:1].upper() + out[1:]


# Words that make two different sentences look alike.
_FUNCTION_WORDS = frozenset(
    "a an and are as at be been by for from had has have in is it its of on or that the their this "
    "to was were which will with would".split()
)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9£]+", normalise_for_match(text))) - _FUNCTION_WORDS


def _is_redundant(candidate: str, chosen: list[str]) -> bool:
    words = _words(candidate)
    return any(len(words & _words(c)) / max(1, min(len(words), len(_words(c)))) > 0.6 for c in chosen)


def cut_to_words(sentence: str, limit: int) -> str:
    """A sentence cut at its last clause boundary within `limit` words (or at the limit)."""
    words = sentence.split()
    if len(words) <= limit:
        return sentence
    head = " ".join(words[:limit])
    boundary = max(head.rfind(", "), head.rfind("; "), head.rfind(": "))
    if boundary > len(head) // 2:
        head = head[:boundary]
    return head.rstrip(",;: ") + "…"


def is_heading(passage: str, title: str | None) -> bool:
    """The item's title again ("Agenda item Fourth Ofsted Monitoring Visit feedback", "28 Title
    pdf icon PDF 73 KB"): the briefing document shows the title beside the briefing already."""
    if not title:
        return False
    heading, _ = clean_title(re.sub(r"^agenda item\s+", "", passage.strip(), flags=re.I))
    return normalise_for_match(heading).rstrip(". ") == normalise_for_match(title).rstrip(". ")


def select(passages: list[str], scores: np.ndarray, resolution: str | None, max_words: int,
           title: str | None = None, acronyms: dict[str, str] | None = None) -> list[str]:
    """Greedy choice by score, no two near-duplicates, the resolution kept when it fits,
    returned in document order. Headings, questions and list introductions are never chosen: a
    briefing says what was reported or decided."""
    order = sorted(range(len(passages)), key=lambda i: -scores[i])
    chosen: dict[int, str] = {}
    used = 0
    resolution_index = None
    if resolution:
        for i, p in enumerate(passages):
            if normalise_for_match(p) in normalise_for_match(resolution) or _RESOLUTION_HEAD.match(p):
                resolution_index = i
    for i in order:
        text = compress(passages[i], acronyms)
        # A question, or a line that introduces a list ("The following points were made:"),
        # reports nothing by itself.
        if (_BOILERPLATE.search(text) or len(text.split()) < 4 or text.endswith(("?", ":"))
                or is_heading(passages[i], title)):
            continue
        if resolution_index is not None and i == resolution_index:
            continue  # placed last, if it fits
        if _is_redundant(text, list(chosen.values())):
            continue
        n = len(text.split())
        if used + n > max_words:
            if not chosen:  # the best sentence alone is too long: cut it to fit
                chosen[i] = cut_to_words(text, max_words)
                used = max_words
            continue
        chosen[i] = text
        used += n
        if used >= max_words - 5:
            break
    if resolution_index is not None:
        text = _RESOLUTION_HEAD.sub("", compress(passages[resolution_index], acronyms)).strip()
        # "That the report be noted" says nothing a director needs.
        if text and not re.fullmatch(r"(?:that )?the (?:report|update) be noted\.?", text, re.I):
            text = text[0].upper() + text[1:]
            if used + len(text.split()) <= max_words and not _is_redundant(text, list(chosen.values())):
                chosen[resolution_index] = text
    return [chosen[i] for i in sorted(chosen)]


def summarise_record(record: dict, passage_scores: np.ndarray, passages: list[str],
                     max_words: int = 60) -> dict:
    """One item's briefing from its passages' scores; the faithfulness check is applied here."""
    evidence = {p for sentences in (record.get("evidence") or {}).values() for p in sentences}
    # Sentences the classifier quoted as evidence are what a director must see: they get a lift.
    lifted = np.array([
        s + (0.35 if p in evidence else 0.0) for p, s in zip(passages, passage_scores)
    ])
    chosen = select(passages, lifted, record.get("resolutions"), max_words, record.get("title"),
                    acronyms_defined(record["text"]))
    # Joined passages each end a sentence: a purpose line or bullet often has no full stop.
    briefing = " ".join(c if c.endswith((".", "!", "?", "…", ";", ":")) else c + "." for c in chosen).strip()
    is_fallback = False
    if not briefing or unsupported_facts(briefing, record["text"]) or len(briefing.split()) > max_words:
        is_fallback = True
        best = passages[int(np.argmax(lifted))] if passages else (record.get("title") or "")
        # The passage verbatim but for a list marker or heading: nothing in it can be unsupported.
        briefing = cut_to_words(_OPENERS.sub("", best).strip() or best, max_words)
    return {"id": record["id"], "briefing": briefing, "is_fallback": is_fallback}


def body_passages(record: dict) -> list[str]:
    passages = item_passages(record["text"], record.get("title"))
    return passages[1:] if record.get("title") and passages else passages


def summarise_records(loaded, records: list[dict], batch_size: int = 32, max_tokens: int = 128,
                      device: str = "cpu", max_words: int = 60,
                      on_batch: Callable[[int], None] | None = None) -> list[dict]:
    """Records {"id", "title", "text", "resolutions"?, "evidence"?} -> {"id", "briefing",
    "is_fallback"}, scoring every sentence of the batch in one pass."""
    from pipeline.inference import score_texts

    per_item = [body_passages(r) for r in records]
    flat = [p for passages in per_item for p in passages]
    scores = score_texts(loaded, flat, batch_size, max_tokens, device, on_batch)[:, 0]
    out, start = [], 0
    for record, passages in zip(records, per_item):
        out.append(summarise_record(record, scores[start:start + len(passages)], passages, max_words))
        start += len(passages)
    return out


# ---------------------------------------------------------------- training targets
def greedy_oracle(passages: list[str], reference: str, max_words: int,
                  metrics: tuple[str, ...] = ("rouge1", "rouge2")) -> list[int]:
    """Indices, in order, of the passages a greedy oracle picks: add the passage that most raises
    ROUGE (the sum of `metrics`) against the reference, while it rises and fits `max_words`."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(metrics), use_stemmer=True)
    lengths = [len(p.split()) for p in passages]
    chosen: list[int] = []
    best = 0.0
    while True:
        used = sum(lengths[j] for j in chosen)
        candidates = []
        for i in range(len(passages)):
            if i in chosen or used + lengths[i] > max_words:
                continue
            result = scorer.score(reference, " ".join(passages[j] for j in sorted(chosen + [i])))
            candidates.append((sum(result[m].fmeasure for m in metrics), i))
        if not candidates:
            break
        score, i = max(candidates)
        if score <= best + 1e-4:
            break
        chosen.append(i)
        best = score
    return sorted(chosen)


def oracle_targets(passages: list[str], briefing: str, max_words: int = 60) -> list[float]:
    """The scorer's training targets: 1 for the passages the greedy oracle picks against the
    reference briefing (with a little room over the limit), 0 for the rest."""
    chosen = set(greedy_oracle([compress(p) for p in passages], briefing, int(max_words * 1.3)))
    return [1.0 if i in chosen else 0.0 for i in range(len(passages))]
