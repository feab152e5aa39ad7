"""Item -> passages (the title, sentences and bullets), shared by classifier, summariser and evidence.

The encoder sees one passage at a time (items are longer than its window); evidence and briefings
are made of these passages, so they are always verbatim spans of the item's text.
"""

from __future__ import annotations

import re

# Abbreviations after which a full stop does not end a sentence.
_ABBREVIATIONS = (
    "Cllr", "Councillor", "Mr", "Mrs", "Ms", "Dr", "Prof", "No", "Nos", "para", "paras", "e.g", "i.e",
    "etc", "approx", "St", "Rev", "Sgt", "Insp", "Supt", "Co", "Ltd", "vs", "cf", "Apr", "Aug",
    "Dec", "Feb", "Jan", "Jul", "Jun", "Mar", "Nov", "Oct", "Sep", "Sept", "a.m", "p.m", "Min",
)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'’”)]*\s+(?=[\"'‘“(]*[A-Z0-9£•])")
_MIN_WORDS = 3
_MAX_WORDS = 80


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
    for line in body.split("\n"):
        line = line.strip()
        if not line:
            continue
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
