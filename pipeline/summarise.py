"""Item -> a briefing of at most 60 words: the sentences carrying the flag's facts first (the
classifier's evidence, judgements, numbers, dates, decisions), then the best of the rest as a
fine-tuned encoder scores them; purpose lines and report-speak only when nothing else says what
happened; page furniture, lead-ins and asides deleted. Nothing is ever added.

Every number, date and named body in a briefing must appear in the item; a briefing that fails
that check is replaced by a safer one (the item's own best sentence, cut to fit).
The defects a director should never read are functions here too (`briefing_defects`), so tests
and measurements look for the same thing the selection avoids. `summarise_pending` is the store's
side, for the nightly run and `minutes summarise`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import numpy as np

from pipeline.faithfulness import unsupported_facts
from pipeline.ingest.split import clean_title
from pipeline.passages import (
    PAGE_FIELD,
    abbreviate,
    acronyms_defined,
    item_passages,
    normalise_for_match,
)

# Reporting lead-ins: dropping them shortens a sentence without changing what it says. The
# speaker is an officer, member or the report ("The Director of Children's Services, Ms A,
# reported that"); "Inspectors found that" and "Ofsted judged" are kept: they say who found it.
_SPEAKER = (r"(?:the |a )?(?:[A-Z][\w’'&.-]*,? (?:(?:of|for|and|the|&|to) )*){0,8}")
_LEAD_INS = re.compile(
    r"^(?:(?:it was|members were|the (?:committee|cabinet|board|panel|council) (?:was|were)) "
    r"(?:noted|informed|reported|advised|explained|highlighted|confirmed|stated|told|reminded) that |"
    r"(?:members|the (?:committee|cabinet|board|panel)) (?:noted|heard|were told|were advised|"
    r"were informed|were reminded) that |"
    rf"{_SPEAKER}(?:also )?(?:reported|explained|advised|confirmed|stated|noted|highlighted|added|"
    r"commented|said|informed (?:members|the committee|cabinet)|told (?:members|the committee)|"
    r"reminded members|emphasised|stressed|outlined|acknowledged) that |"
    r"in response to (?:a )?(?:questions?|queries|a query)(?: from [^,]+| about [^,]+| on [^,]+)?, "
    r"(?:[\w’'-]+,? ){1,8}(?:confirmed|explained|advised|stated|said|reported|noted) that |"
    r"the (?:report|update|presentation|letter) (?:highlighted|noted|stated|explained|showed|"
    r"indicated|confirmed|reported) that |during (?:the )?discussion,? (?:it was noted that )?|"
    r"(?:furthermore|in addition|additionally|moreover|also|overall|in summary),? )",
    re.I,
)
_PARENTHETICAL_REFS = re.compile(
    r"\s*\((?:for copy of report see[^)]*|appendix[^)]*|see appendix[^)]*|copy attached|"
    r"agenda pages?[^)]*|pages? \d[^)]*|item \d[^)]*|minute \d[^)]*)\)",
    re.I,
)
# A whole word ("Decisions were deferred" and "Decision-making" are sentences, not headings).
_RESOLUTION_HEAD = re.compile(r"^(?:RESOLVED|Resolved|AGREED|Agreed|DECISION|Decision)\b(?!-)\s*[:–-]?\s*", re.I)
_BOILERPLATE = re.compile(
    r"pdf icon|\bPDF \d+ ?KB\b|view the full minutes text|supporting documents|additional documents|"
    # ModernGov's own menu, when a page was read whole
    r"subscribe to updates|search documents|your councillors|what's new|forward plans|election results|"
    r"outside bodies|epetitions",
    re.I,
)
# "The Director, Mr D. Farrant, highlighted": the office says who spoke; the name costs words.
_NAMED_PERSON = re.compile(
    r",\s+(?:the\s+)?(?:Cllr|Councillor|County Councillor|Mr|Mrs|Ms|Miss|Dr)\.?\s+[A-Z][\w.’'-]*"
    r"(?:\s+[A-Z][\w.’'-]*){0,3},(?=\s)|\s*\((?:Cllr|Councillor|Mr|Mrs|Ms|Miss|Dr)\.?\s[^()]{1,40}\)"
)
_LONG_PARENTHESIS = re.compile(r"\s*\((?:[^()\d]*?\s){3,}[^()\d]*?\)")
# What opens a passage without being part of its sentence: list markers ("·", "h)", "(b)", "5.1")
# and section headings of minutes pages ("Minutes:", "Background:", "Reasons:").
_OPENERS = re.compile(
    r"^(?:[·•▪◦*–-]\s*|\(?[a-hj-z]\)\s+|\(\d{1,2}\)\s+|\(?(?:i{1,3}|iv|vi{0,3}|ix|x)[.)]\s+|\d+(?:\.\d+)+\.?\s+|"
    r"\d{1,3}[.)]\s+|(?:Minutes|Background|Reasons?(?: for (?:the )?decision)?|Decision|Purpose"
    r"(?: of (?:the )?report)?|Summary|Discussion|Outcome)\s*:\s*)+",
    re.I,
)
# Page furniture run into a sentence: a page's headings ("Title", "Background", "Decision",
# "Reasons for the decision") left on their own line, which the passage splitter joins to the
# sentence after them ("Title Quarterly review Background The council ..."). Capitalised and
# followed by a capital, or ending a passage, they are headings, not words of the sentence.
_FURNITURE_WORDS = (
    r"Title|Background(?: (?:information|papers))?|Details|Decisions?|Reasons?(?: for (?:the )?"
    r"(?:decision|recommendations?))?|Purpose(?: of (?:the )?report)?|Summary|Minutes|Outcome|"
    r"Recommendations?|Issue details|Alternative options(?: considered)?(?: and rejected)?|"
    r"Options considered|Executive summary|Introduction|Key points"
)
_FURNITURE_AT_START = re.compile(rf"^(?:(?:{_FURNITURE_WORDS})\s*[:–-]?\s+)+(?=[A-Z0-9£\"'‘“(])")
_FURNITURE_INSIDE = re.compile(r"(?<=[\w.,;)’'])\s+(?:Title|Background)\s*:?\s+(?=[A-Z0-9£])")
_FURNITURE_WITH_COLON = re.compile(rf"(?<=[\w.,;)’'])\s+(?:{_FURNITURE_WORDS})\s*:\s+(?=\S)")
_FURNITURE_AT_END = re.compile(rf"\s+(?:{_FURNITURE_WORDS})\s*:?\s*$")


def strip_furniture(sentence: str) -> str:
    """A sentence without the page headings run into it; never a word of the sentence itself."""
    out = _FURNITURE_AT_START.sub("", sentence)
    out = _FURNITURE_INSIDE.sub(" ", out)
    out = _FURNITURE_WITH_COLON.sub(" ", out)
    return _FURNITURE_AT_END.sub("", out)


def compress(sentence: str, acronyms: dict[str, str] | None = None) -> str:
    """Trim list markers, headings and page furniture, a lead-in, references to appendices and
    long asides in brackets, and write defined names as their acronyms; never add a word."""
    out = _OPENERS.sub("", sentence.strip()).strip()
    out = strip_furniture(out).strip()
    out = _OPENERS.sub("", out).strip()
    out = _PARENTHETICAL_REFS.sub("", out).strip()
    out = _LONG_PARENTHESIS.sub("", out)
    out = _NAMED_PERSON.sub("", out)
    if acronyms:
        out = abbreviate(out, acronyms)
    for _ in range(2):  # "Furthermore, the Director reported that ..."
        trimmed = _LEAD_INS.sub("", out, count=1)
        removed = out[:len(out) - len(trimmed)]
        # "Ofsted reported that", "Inspectors noted that": who found it is part of the fact; and
        # "she looked forward to ..." would leave a pronoun nobody can place.
        if (re.search(r"inspect|\bcommissioner|\badviser", removed, re.I) or _BODY.search(removed)
                or re.match(r"(?:he|she|they|it|this|these|those|we|i)\b", trimmed, re.I)):
            break
        if trimmed != out and len(trimmed.split()) >= 4:
            out = trimmed
    out = _REPORT_FRAME.sub(r"\g<who>\g<verb> \g<rest>", out, count=1)
    out = purpose_to_topic(out)
    out = out.strip().rstrip("| ").strip()  # a table cell's border, from a page's decision table
    return out[:1].upper() + out[1:]


# "The Committee considered a report of the Director which provided an update on X": deleting
# the report's frame leaves what was considered ("The Committee considered an update on X").
_REPORT_FRAME = re.compile(
    r"^(?P<who>(?:the |members )?(?:[\w’'-]+ ){0,5}?)(?P<verb>received|considered|noted|scrutinised|"
    r"reviewed|welcomed) (?:a|the) (?:\w+ ){0,3}?(?:report|presentation|paper)(?: (?:of|from|by) "
    r"(?:the )?[^,]{0,80}?)?,? (?:which|that) (?:provided|set out|sets out|outlined|outlines|gave|"
    r"detailed|presented|summarised|described|highlighted|updated members on|informed members of) "
    r"(?P<rest>\S.*)$",
    re.I,
)
# "To update members on the CIW inspection of the fostering service in March 2023": a purpose
# line whose object is the news. Deleting the frame leaves what the item was about ("The CIW
# inspection of the fostering service in March 2023"), as a person's briefing would open; a
# purpose line whose object carries no fact ("To consider the Children's Plan") stays an
# announcement, chosen only when nothing else says what happened.
_PURPOSE_FRAME = re.compile(
    r"^(?:(?:the )?purpose of (?:this|the) (?:report|item|paper) is |purpose\s*:?\s*)?to "
    r"(?:(?:note|receive|consider|share|inform|update|present|review|advise|brief|scrutinise|outline|"
    r"highlight|report(?: on)?)(?: and (?:note|comment on|discuss|consider|review|scrutinise))?|"
    r"provide|give|bring)"
    r"(?: (?:to )?(?:the )?(?:cabinet|committee|members|panel|board|council|scrutiny|forum|cabinet member)"
    r"(?: (?:committee|members|panel|board))?)?(?: (?:with|of|on|about|to))?"
    r"(?: (?:an? |the )?(?:(?:brief |short |further |progress |annual |quarterly )?(?:update|overview|summary|"
    r"briefing|report)) (?:on|of|about|in relation to|regarding|in respect of))?(?: that)? (?P<rest>\S.*)$",
    re.I,
)


def purpose_to_topic(sentence: str) -> str:
    """A purpose line that names a fact (a judgement, a number, a date) without its frame; any
    other sentence as it was. Deletion only."""
    match = _PURPOSE_FRAME.match(sentence)
    if not match:
        return sentence
    rest = match.group("rest")
    # A named body alone is the topic, not news: "To consider the Ofsted inspection".
    if len(rest.split()) < 5 or not (has_judgement(rest) or _FACT_NUMBER.search(rest)
                                     or _FACT_DATE.search(rest)):
        return sentence
    return rest[:1].upper() + rest[1:]


# What a passage is when it is nobody's sentence: a report's byline, the minutes' own business.
_SAYS_NOTHING = re.compile(
    r"^(?:(?:joint )?report (?:of|by|from) (?:the )?[\w’'&,() -]{3,120}\.?$|"
    r"(?:that )?(?:the )?(?:content|contents|report|update|presentation|information|progress|position|"
    r"minutes|comments)[\w\s,’']{0,60}? (?:be|is|was|were|are) (?:noted|received)\.?$|"
    r"in the absence of |.*\bbe appointed (?:as )?chair\b|meeting of .{0,80}\b\d{4}\b|"
    r"(?:councillor [\w’'-]+ )?minutes? (?:no\.? \d+|of the [\w -]{0,30}meeting)|"
    r".*\b(?:confirmed|approved|agreed|signed) as a (?:correct|true|accurate) record|there (?:are|were) no (?:specific )?recommendations|\([^()]*\d{5,}[^()]*\)\.?$|"
    # a pointer to a web page, not what it says ("This is the link to the Ofsted webpage")
    r"(?:(?:this|here) is |please see |see )?(?:the |a )?(?:web ?)?(?:link|hyperlink)s? (?:to|for) [^.]{0,80}?"
    r"\b(?:report|page|webpage|website|document|minutes|agenda|papers|presentation|video|recording|letter)s?\.?$|"
    r"click here\b|"
    # the minutes' own housekeeping: where the papers are, when the meeting ended or meets again
    r"(?:a )?cop(?:y|ies) of (?:the|each|this|these|which) [^.]{0,80}?\b(?:is|are|was|were|has been|have been) "
    r"(?:filed|attached|appended|kept|held|available|published|circulated)\b[^.]{0,60}\.?$|"
    r"(?:the )?date of (?:the )?next meeting\b|(?:the )?meeting (?:closed|ended|finished|concluded|rose) at\b|"
    r"meeting:\s*\d|"
    # a courtesy with nothing after it ("Members welcomed the report.")
    r"(?:members|the (?:committee|cabinet|board|panel|council)) (?:welcomed|thanked officers for|were pleased "
    r"with) the (?:report|update|presentation|briefing)\.?$)",
    re.I,
)
# A line of capitalised words with no full stop ("79 Payment of Market Supplements", "Family
# Services Performance Report"): a heading, the item's own or a section's.
_HEADING_LINE = re.compile(
    r"^(?:\d{1,3}\.?\s+)?['‘\"]?[A-Z0-9][\w’'-]*['’\"]?(?:\s+(?:[A-Z0-9(][\w’'()/-]*['’\"]?|of|and|for|the|to|in|"
    r"on|at|a|an|&|[-–:]))*$"
)

# ---------------------------------------------------------------- what a sentence carries
# Sentences that announce rather than report: an item's purpose line ("To consider the ...
# Plan.", "To receive ... reports on a quarterly basis.") and report-speak ("The purpose of this
# report is to ...", "The cabinet member introduced the report and ...").
_PURPOSE_LINE = re.compile(r"^(?:(?:purpose|recommendations?)\s*:?\s*)?to (?!date\b)[a-z]+\b", re.I)
_REPORT_SPEAK = re.compile(
    r"\bpurpose of (?:this|the) (?:report|item|paper|presentation)\b|"
    r"^(?:this|the) (?:\w+ ){0,3}(?:report|paper|item|presentation|update) (?:(?:which|that) )?(?:\w+ly )?"
    r"(?:sets? out|presents?|presented|provides?|provided|seeks?|sought|updates?|updated|informs?|"
    r"notif(?:y|ies|ied)|confirms?|explains?|reports?|"
    r"informed|outlines?|outlined|summarises?|summarised|asks?|asked|gives?|gave|brings?|brought|"
    r"describes?|described|invites?|invited|details|detailed|requests?|requested|is|was)\b(?! that)|"
    r"\b(?:introduced|presented|outlined|took members through) (?:the|a|an|this|his|her|their) (?:\w+ ){0,4}?"
    r"(?:report|item|paper|presentation|update)\b|"
    r"^(?:the |members )?(?:[\w’'-]+ ){0,6}?(?:received|considered|noted) (?:a|the) (?:\w+ ){0,4}?"
    r"(?:report|presentation|update|paper)(?: (?:of|from|by)\b|[,.]|$)|"
    r"\b(?:report|presentation|update) (?:was|were|is) (?:introduced|presented|submitted|received|"
    r"considered|given|tabled)\b|"
    r"\b(?:set out|detailed|attached|included|summarised) (?:in|at) (?:section|paragraph|appendix|appendices|"
    r"annex)\b",
    re.I,
)
# Courtesies and meeting business that say nothing about the services.
_PROCEDURAL = re.compile(
    r"\b(?:welcome[ds]? [^.;:]{0,160}?\bto (?:the|this) meeting|thanked (?:\w+ ){0,8}for|copy of which is "
    r"(?:attached|appended)|attached to (?:the|these) minutes|apolog(?:y|ies)|declarations? of "
    r"interests?|the chair(?:man)? (?:welcomed|thanked|introduced))\b",
    re.I,
)
_JUDGEMENT = re.compile(r"\b(?:inadequate|requires? improvement(?: to be good)?|outstanding|good)\b", re.I)
_JUDGED = re.compile(
    r"\b(?:judged|judgements?|rated|graded|grade|overall effectiveness|found (?:to be|services)|"
    r"inspect\w*|ofsted|ilacs|jtai|monitoring visit|focused visit)\b",
    re.I,
)
_FACT_NUMBER = re.compile(r"£?\d[\d,.]*(?:%| per cent)?")
_FACT_DATE = re.compile(
    r"\b(?:January|February|March|April|May|June|July|August|September|October|November|December)\b"
)
_DECISION = re.compile(
    r"\b(?:resolved|agreed|approved|decided|endorsed|rejected|refused|issued|lifted|revoked|"
    r"appointed|directed|required|recommended|will|would|must|due)\b",
    re.I,
)
_BODY = re.compile(r"\b(?:Ofsted|DfE|CQC|HMI\w*|CIW|CSSIW|Estyn|JTAI|ILACS|Department for Education|"
                   r"Secretary of State|[Cc]ommissioner|(?i:improvement notice|statutory direction))\b")


def is_purpose_line(sentence: str) -> bool:
    return bool(_PURPOSE_LINE.match(sentence.strip()))


def is_report_speak(sentence: str) -> bool:
    return bool(_REPORT_SPEAK.search(sentence.strip()))


def is_announcement(sentence: str) -> bool:
    """Says that something was presented, considered or welcomed, not what it said."""
    return is_purpose_line(sentence) or is_report_speak(sentence) or bool(_PROCEDURAL.search(sentence))


def has_judgement(sentence: str) -> bool:
    """An inspection's judgement ("judged inadequate", "rated good"), not "good progress"."""
    for match in _JUDGEMENT.finditer(sentence):
        word = match.group().lower()
        if word in ("inadequate",) or word.startswith("requires") or _JUDGED.search(sentence):
            return True
    return False


def fact_weight(sentence: str) -> int:
    """How many kinds of the flag's facts a sentence carries: a judgement, a number, a date, a
    decision, a named inspectorate or intervention."""
    return (has_judgement(sentence) + bool(_FACT_NUMBER.search(sentence)) + bool(_FACT_DATE.search(sentence))
            + bool(_DECISION.search(sentence)) + bool(_BODY.search(sentence)))


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
    """The item's title again ("Agenda item Ofsted Focused Visit Letter", "28 Title
    pdf icon PDF 73 KB"): the briefing document shows the title beside the briefing already."""
    if not title:
        return False
    heading, _ = clean_title(re.sub(r"^agenda item\s+", "", passage.strip(), flags=re.I))
    heading = strip_furniture(heading)
    return normalise_for_match(heading).rstrip(". ") == normalise_for_match(title).rstrip(". ")


def _says_nothing(passage: str, text: str, title: str | None) -> bool:
    """Headings, page fields, questions, list introductions: they report nothing by themselves."""
    return bool(_BOILERPLATE.search(text) or PAGE_FIELD.match(passage.strip()) or PAGE_FIELD.match(text)
                or _SAYS_NOTHING.match(text) or _HEADING_LINE.match(passage.strip().rstrip(" |"))
                or _HEADING_LINE.match(text) or re.search(r",? (?:and|or)$", text)
                or re.match(r"whether\b", text, re.I)
                # one item of a list, cut from the list that said what it was ("ii. The Family
                # Homes Programme;")
                or (text.endswith((";", ",")) and len(text.split()) < 6)
                or len(text.split()) < 4 or is_heading(passage, title)
                # a question, or a list's introduction ("the points made were as follows:-")
                or text.rstrip(" .-–").endswith(("?", ":")))


# What a sentence's place in the briefing adds to the scorer's score (a probability): being the
# classifier's evidence, and each kind of fact it carries. Chosen on the written validation items'
# reference briefings (not on gold), from a grid where 0.25-0.3 and 0.1-0.15 formed a plateau:
# evidence always first (the old order) spent the 60 words on three long evidence sentences of
# one label and left out the numbers a director needs; a small bonus keeps evidence and facts
# ahead of a sentence the scorer rates only a little higher.
EVIDENCE_BONUS = 0.3
FACT_BONUS = 0.15


def briefing_candidates(passages: list[str], resolution: str | None, title: str | None = None,
                        acronyms: dict[str, str] | None = None,
                        is_faithful: Callable[[str], bool] | None = None) -> list[tuple[int, str, bool]]:
    """The sentences a briefing may take, as (index of the passage, its compressed text, whether
    it only announces): resolutions without their heading, and neither a sentence that says
    nothing nor one the faithfulness check refuses. An announcing sentence (a purpose line,
    report-speak, a courtesy, a sentence cut short) is taken only when nothing else is.
    `select` chooses among them by score, `oracle.rules_oracle` with the reference in hand."""
    texts = [compress(p, acronyms) for p in passages]
    # Every passage of the resolutions, and any that opens "RESOLVED:" (an item can resolve more
    # than once, or its resolutions go unfound): the heading is the page's, not the sentence's.
    resolved = normalise_for_match(resolution) if resolution else None
    resolution_indices = {i for i, (p, text) in enumerate(zip(passages, texts))
                          if _RESOLUTION_HEAD.match(text) or (resolved and normalise_for_match(p) in resolved)}
    candidates = []
    for i, text in enumerate(texts):
        if i in resolution_indices:
            text = _RESOLUTION_HEAD.sub("", text).strip()
            text = text[:1].upper() + text[1:]
            # "That the report be noted" says nothing a director needs.
            if re.fullmatch(r"(?:that )?(?:\(\w{1,3}\) )?the (?:report|update|presentation)s? (?:be|is|was) "
                            r"noted[.;]?(?: and)?", text, re.I):
                continue
        if _says_nothing(passages[i], text, title) or (is_faithful and not is_faithful(text)):
            continue
        # An item cut short ends in a broken sentence ("... the provision to extend these to oth").
        is_cut_short = i == len(passages) - 1 and not passages[i].rstrip().endswith(tuple(".!?:;)\"'’”"))
        candidates.append((i, text, is_announcement(text) or is_cut_short))
    return candidates


def select(passages: list[str], scores: np.ndarray, resolution: str | None, max_words: int,
           title: str | None = None, acronyms: dict[str, str] | None = None,
           evidence: set[int] | frozenset[int] = frozenset(),
           is_faithful: Callable[[str], bool] | None = None) -> list[str]:
    """The briefing's sentences, in document order, within `max_words`.

    Order of choice: by the scorer's score for the sentence, raised for the classifier's
    evidence (what the flag rests on) and for each kind of fact it carries (judgements,
    numbers, dates, decisions, named inspectorates); no two near-duplicates. Purpose lines,
    report-speak and courtesies come only when nothing else fits."""
    texts = {}
    ranked = []
    for i, text, is_announcing in briefing_candidates(passages, resolution, title, acronyms, is_faithful):
        texts[i] = text
        priority = float(scores[i]) + EVIDENCE_BONUS * (i in evidence) + FACT_BONUS * fact_weight(text)
        ranked.append((is_announcing, -priority, i))
    chosen: dict[int, str] = {}
    used = 0
    for is_announcing, _, i in sorted(ranked):
        if is_announcing and chosen:
            break  # an announcement only when nothing else says what happened
        text = texts[i]
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
        if used >= max_words - 3:
            break
    return [chosen[i] for i in sorted(chosen)]


def join_sentences(sentences: list[str]) -> str:
    """Chosen passages as one briefing: each ends a sentence (a purpose line or bullet often has
    no full stop)."""
    return " ".join(c if c.endswith((".", "!", "?", "…", ";", ":")) else c + "." for c in sentences).strip()


def summarise_record(record: dict, passage_scores: np.ndarray, passages: list[str],
                     max_words: int = 60) -> dict:
    """One item's briefing from its passages' scores; the faithfulness check is applied here."""
    quoted = [normalise_for_match(p) for sentences in (record.get("evidence") or {}).values() for p in sentences]
    # Sentences the classifier quoted as evidence are what a director must see: they go first.
    evidence = {i for i, p in enumerate(passages) if normalise_for_match(p) in quoted}
    chosen = select(passages, np.asarray(passage_scores, dtype=float), record.get("resolutions"), max_words,
                    record.get("title"), acronyms_defined(record["text"]), evidence,
                    lambda sentence: not unsupported_facts(sentence, record["text"]))
    briefing = join_sentences(chosen)
    is_fallback = False
    if not briefing or unsupported_facts(briefing, record["text"]) or len(briefing.split()) > max_words:
        is_fallback = True
        order = sorted(range(len(passages)), key=lambda i: (i not in evidence, -float(passage_scores[i])))
        best = passages[order[0]] if passages else (record.get("title") or "")
        # The passage verbatim but for a list marker or heading: nothing in it can be unsupported.
        briefing = cut_to_words(_OPENERS.sub("", best).strip() or best, max_words)
    return {"id": record["id"], "briefing": briefing, "is_fallback": is_fallback}


# ---------------------------------------------------------------- defects a director should never read
_FURNITURE_DEFECT = re.compile(
    rf"(?:^|(?<=[.!?]\s))(?:{_FURNITURE_WORDS})(?:\s*:|\s*[–-]?\s+(?=[A-Z0-9£]))|"
    rf"(?<=[\w,;)’'])\s+(?:Title|Background)\b\s*:?\s+(?=[A-Z0-9£])|"
    rf"(?<=[\w,;)’'])\s+(?:{_FURNITURE_WORDS})\s*:|\b(?:Title|Background)\s*:?\s*$"
)


def _sentences(briefing: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?…;])\s+(?=[A-Z0-9£\"'‘“(])", briefing.strip()) if s]


def briefing_defects(briefing: str, record: dict) -> dict[str, list[str]]:
    """What no person would write in a briefing, by kind (empty when none):
    - "furniture": page headings run into a sentence ("Title ... Background ...", "Decision:");
    - "purpose_line": a sentence that announces ("To consider the ... Plan.");
    - "report_speak": "The purpose of this report is ...", "... introduced the report ...";
    - "missing_fact": the flag's key fact (an inspection judgement, a number in the evidence)
      left out while an announcing sentence stays.
    `record` is the item ({"text", "evidence"?}); its evidence is the classifier's."""
    sentences = _sentences(briefing)
    defects = {
        "furniture": [m.group().strip() for m in _FURNITURE_DEFECT.finditer(briefing)],
        "purpose_line": [s for s in sentences if is_purpose_line(s)],
        "report_speak": [s for s in sentences if is_report_speak(s)],
    }
    announcing = defects["purpose_line"] + defects["report_speak"] + [s for s in sentences if _PROCEDURAL.search(s)]
    missing = []
    if announcing:
        stated = normalise_for_match(briefing)
        for sentence in (s for quoted in (record.get("evidence") or {}).values() for s in quoted):
            facts = [m.group().rstrip(".,") for m in _FACT_NUMBER.finditer(sentence)]
            if has_judgement(sentence):
                facts += [m.group() for m in _JUDGEMENT.finditer(sentence)]
            missing += [f for f in facts if f and normalise_for_match(f) not in stated]
    defects["missing_fact"] = list(dict.fromkeys(missing))
    return {kind: found for kind, found in defects.items() if found}


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


# ---------------------------------------------------------------- the store's side
def summarise_pending(db, summariser, classifier_version: str, run_id: int | None = None,
                      on_items: Callable[[int, int], None] | None = None) -> int:
    """Brief the stored items that the classifier of `classifier_version` flagged and
    `summariser` (a `stages.Summariser`) has not briefed, each from that classifier's stored
    evidence, `store_batch` at a time; returns how many. Its weights load only when there is
    something to brief."""
    from pipeline import store

    settings = summariser.settings
    pending = store.flagged_items_without_summary(db, classifier_version, summariser.version)
    done = 0
    for start in range(0, len(pending), settings.store_batch):
        batch = pending[start:start + settings.store_batch]
        summaries = summariser(batch)
        store.save_summaries(db, [{**s, "item_id": s["id"]} for s in summaries], summariser.version, run_id)
        done += len(batch)
        time.sleep(settings.pause_between_batches_s)
        if on_items:
            on_items(done, len(pending))
    return done
