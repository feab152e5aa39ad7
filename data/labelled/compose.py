"""Compose the project's own labelled minutes items from the sentence banks in banks.py.

Writes data/labelled/composed.jsonl (training) and data/labelled/heldout/validation.jsonl (items
made only of held-out templates, for thresholds and the model card's validation figures) in the gold
format of ../shared/labelling-guide.md: each item has labels, verbatim evidence for every label, and
(when flagged) a reference briefing of at most 60 words.
Deterministic: the same seed writes the same files.  Run: python data/labelled/compose.py
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import banks  # noqa: E402

LABELS = ("intervention_notice", "inspection_outcome", "workforce_concern")
# Label-bearing and near-miss sentences are split by template: a fifth are held out and appear
# only in the validation items (heldout/validation.jsonl). Thresholds chosen there, and the
# validation figures on the model card, then measure wording the model never trained on, not
# recall of its own templates.
HELD_OUT_SHARE = 5  # one template in five


def is_held_out(template: str) -> bool:
    return int(hashlib.sha1(template.encode("utf-8")).hexdigest()[:8], 16) % HELD_OUT_SHARE == 0


def pools(held_out: bool) -> dict:
    def part(bank: list[str]) -> list[str]:
        return [t for t in bank if is_held_out(t) == held_out]

    return {
        "label": {
            "intervention_notice": part(banks.INTERVENTION),
            "inspection_outcome": part(banks.INSPECTION),
            "workforce_concern": part(banks.WORKFORCE),
        },
        "generated": {
            "intervention_notice": part(banks.INTERVENTION_GENERATED),
            "inspection_outcome": part(banks.INSPECTION_GENERATED),
        },
        "mixed": [
            (("inspection_outcome", "workforce_concern"), banks.INSPECTION_WORKFORCE),
            (("intervention_notice", "inspection_outcome"), banks.INTERVENTION_INSPECTION),
        ],
        "near_miss": part(banks.NEAR_MISS),
        "near_miss_generated": part(banks.NEAR_MISS_GENERATED),
    }


# How minutes report what was said; the sentence keeps its words after the lead-in.
LEAD_INS = [
    "", "", "", "", "It was noted that ", "The Director reported that ", "Members were informed that ",
    "In response to a question, officers confirmed that ", "The Cabinet Member explained that ",
    "The report highlighted that ", "Officers advised that ",
]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth"]


def fill(template: str, rng: random.Random) -> str:
    year = rng.randint(2009, 2025)
    judgement = rng.choice(banks.JUDGEMENTS)
    values = {
        "date": f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {year}",
        "month": rng.choice(MONTHS), "year": str(year), "yy": f"{(year + 1) % 100:02d}",
        "judgement": judgement.title() if rng.random() < 0.3 else judgement,
        "judgement_lc": judgement, "judgement2": rng.choice(banks.JUDGEMENTS),
        "name": rng.choice(banks.NAMES), "surname": rng.choice(banks.SURNAMES),
        "school": rng.choice(banks.SCHOOLS), "ordinal": rng.choice(ORDINALS),
        "n_caseload": str(rng.randint(21, 32)), "n_small": str(rng.randint(2, 9)),
        "n_vacancy": str(rng.randint(8, 60)), "n_large": str(rng.randint(120, 1400)),
        "pct": str(rng.randint(12, 45)), "pct2": str(rng.randint(5, 11)),
        "money": f"{rng.choice([1500, 2000, 2500, 3000, 4000, 5000]):,}",
        "money_m": f"{rng.randint(1, 30)}.{rng.randint(1, 9)}",
        "time": f"{rng.randint(5, 9)}.{rng.choice(['00', '15', '30', '45'])} pm",
        "topic": "",
    }
    return template.format(**values)


def with_lead_in(sentence: str, rng: random.Random) -> str:
    lead = rng.choice(LEAD_INS)
    if not lead or sentence.startswith(("Members asked", "Councillors", "The Committee questioned")):
        return sentence
    first = sentence.split(" ", 1)[0]
    # Keep capitals of names and acronyms (Ofsted, DfE, CQC); lower-case an ordinary first word.
    if first in ("The", "A", "An", "There", "It", "Following", "Inspectors", "Staff", "Average",
                 "Recruitment", "Sickness", "Caseloads", "Workforce", "Management", "Gaps",
                 "Senior", "Newly", "Retention", "Members"):
        sentence = sentence[0].lower() + sentence[1:]
    return lead + sentence


def compose_item(index: int, rng: random.Random, pool: dict, prefix: str = "composed") -> dict:
    roll = rng.random()
    if roll < 0.42:
        wanted: tuple = ()
    elif roll < 0.80:
        wanted = (rng.choice(LABELS),)
    elif roll < 0.95:
        wanted = tuple(sorted(rng.sample(LABELS, 2), key=LABELS.index))
    else:
        wanted = LABELS
    evidence: dict[str, list[str]] = {}
    body: list[tuple[str, tuple]] = []
    for label in wanted:
        bank = pool["label"][label]
        for template in rng.sample(bank, min(len(bank), rng.choice([1, 1, 2, 2, 3]))):
            # A share from the generated variety, where the label has one.
            if label in pool["generated"] and rng.random() < 0.3:
                template = rng.choice(pool["generated"][label])
            body.append((fill(template, rng), (label,)))
    for labels, bank in pool["mixed"]:
        if set(labels) <= set(wanted) and rng.random() < 0.4:
            body.append((fill(rng.choice(bank), rng), labels))
    n_other = rng.randint(2, 7)
    near_share = 0.6 if not wanted else 0.3
    for _ in range(n_other):
        bank = pool["near_miss"] if rng.random() < near_share else banks.NEUTRAL
        if bank is pool["near_miss"] and rng.random() < 0.4:
            bank = pool["near_miss_generated"]
        body.append((fill(rng.choice(bank), rng), ()))
    rng.shuffle(body)
    body = [(with_lead_in(s, rng), labels) for s, labels in body]
    for sentence, labels in body:
        for label in labels:
            evidence.setdefault(label, []).append(sentence)

    if wanted and rng.random() < 0.6:
        title = rng.choice(banks.TITLES[rng.choice(wanted)])
    else:
        title = rng.choice(banks.TITLES[None])
    committee = rng.choice(banks.COMMITTEES)
    council = rng.choice(banks.COUNCILS)
    keep = {"Ofsted", "SEND", "DfE", "Department", "Education", "Improvement", "Notice", "JTAI"}
    topic = " ".join(w if w in keep or w.isupper() else w.lower() for w in title.split())
    purpose = rng.choice(banks.PURPOSES).replace("{topic}", f"the {topic}")
    resolution = fill(rng.choice(banks.RESOLUTIONS), rng) if rng.random() < 0.7 else None
    text = render(title, purpose, body, resolution, committee, rng)
    labels = [label for label in LABELS if label in evidence]
    item = {
        "id": f"{prefix}-{index:04d}", "source": "data/labelled/compose.py", "council": council,
        "meeting": committee, "date": None, "title": title, "text": text, "labels": labels,
        "evidence": {label: evidence[label][:3] for label in labels},
        "briefing": briefing(committee, title, body, resolution) if labels else None,
    }
    return item


def render(title, purpose, body, resolution, committee, rng) -> str:
    """The item as a ModernGov page's text, an issue page, or plain minutes."""
    shape = rng.choice(["agenda", "agenda", "issue", "plain"])
    as_bullets = rng.random() < 0.4
    lines = []
    if shape == "agenda":
        lines += ["Agenda item", "", title, "", purpose, "", "Minutes:", ""]
    elif shape == "issue":
        day, month, year = rng.randint(1, 28), rng.randint(1, 12), rng.randint(2009, 2025)
        number = rng.randint(1, 120)
        lines += ["Issue - meetings", "", title, "",
                  f"Meeting: {day:02d}/{month:02d}/{year} - {committee} (Item {number})", "",
                  f"{number} {title} pdf icon PDF {rng.randint(40, 400)} KB", "", purpose, "",
                  "Minutes:", ""]
    else:
        lines += [title, "", purpose, ""]
    paragraph: list[str] = []
    for sentence, _ in body:
        if as_bullets:
            lines += ["· " + sentence, ""]
        else:
            paragraph.append(sentence)
            if len(paragraph) >= rng.randint(1, 3):
                lines += [" ".join(paragraph), ""]
                paragraph = []
    if paragraph:
        lines += [" ".join(paragraph), ""]
    if resolution:
        lines += [resolution, ""]
    return "\n".join(lines).strip()


def briefing(committee, title, body, resolution) -> str:
    """A reference briefing as the labelling guide asks: what was reported (the flagged
    sentences, trimmed of their lead-ins), then what was decided, within 60 words; every word
    comes from the item and every name keeps its capitals. No "The committee considered the
    <title>" opener: it repeats the title the briefing is shown under, and taught the sentence
    scorer to pick purpose lines. A part that does not fit is left out and the next tried, so a
    shorter fact later in the item is not lost behind a long one."""
    parts = []
    for sentence, labels in body:
        if labels:
            core = re.sub(r"^(It was noted that|The Director reported that|Members were informed that|"
                          r"In response to a question, officers confirmed that|The Cabinet Member "
                          r"explained that|The report highlighted that|Officers advised that) ", "",
                          sentence)
            parts.append(core[0].upper() + core[1:])
    if resolution and "noted" not in resolution:
        decided = resolution.split(":", 1)[-1].strip(" -")
        parts.append(decided[0].upper() + decided[1:])  # not .capitalize(): "Ofsted", "DfE" stay
    out: list[str] = []
    for part in parts:
        if len(" ".join(out + [part]).split()) > 60:
            continue
        out.append(part)
    return " ".join(out)


def main(n: int = 300, n_validation: int = 240, seed: int = 7) -> None:
    rng = random.Random(seed)
    here = Path(__file__).parent
    train_pool, held_out_pool = pools(held_out=False), pools(held_out=True)
    (here / "heldout").mkdir(exist_ok=True)
    for path, count, pool, prefix in [(here / "composed.jsonl", n, train_pool, "composed"),
                                      (here / "heldout" / "validation.jsonl", n_validation, held_out_pool, "heldout")]:
        with path.open("w", encoding="utf-8") as handle:
            for i in range(count):
                handle.write(json.dumps(compose_item(i, rng, pool, prefix), ensure_ascii=False) + "\n")
        print(f"wrote {count} items to {path}")


if __name__ == "__main__":
    main()
