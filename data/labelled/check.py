"""Check labelled JSON Lines files against the labelling guide's gold format.

Every line: an object with id, title, text, labels (known names), evidence for each label
(1 to 3 strings, each verbatim in the text), and for a flagged item a briefing of at most 60
words. Run: python data/labelled/check.py FILE_OR_FOLDER...  (exit 1 on any problem)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LABELS = {"intervention_notice", "inspection_outcome", "workforce_concern"}


def problems(path: Path) -> list[str]:
    found, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            found.append(f"{where}: not JSON ({exc.msg})")
            continue
        if not isinstance(row, dict):
            found.append(f"{where}: not an object")
            continue
        for key in ("id", "title", "text"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                found.append(f"{where}: needs a non-empty '{key}' string")
        if row.get("id") in seen:
            found.append(f"{where}: duplicate id {row.get('id')}")
        seen.add(row.get("id"))
        labels = row.get("labels")
        if not isinstance(labels, list) or set(labels) - LABELS:
            found.append(f"{where}: labels must be a list of {sorted(LABELS)}")
            continue
        evidence = row.get("evidence") or {}
        if not isinstance(evidence, dict) or set(evidence) != set(labels):
            found.append(f"{where}: evidence needs exactly one entry per label")
            continue
        text = row.get("text") or ""
        for label, quotes in evidence.items():
            if not isinstance(quotes, list) or not 1 <= len(quotes) <= 3:
                found.append(f"{where}: evidence for {label} must be a list of 1 to 3 strings")
                continue
            for quote in quotes:
                if not isinstance(quote, str) or quote not in text:
                    found.append(f"{where}: evidence for {label} is not verbatim in the text: {quote!r:.80}")
        briefing = row.get("briefing")
        if labels:
            if not isinstance(briefing, str) or not briefing.strip():
                found.append(f"{where}: a flagged item needs a briefing")
            elif len(briefing.split()) > 60:
                found.append(f"{where}: briefing has {len(briefing.split())} words (at most 60)")
    return found


def main(args: list[str]) -> int:
    paths = []
    for arg in args:
        p = Path(arg)
        paths += sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
    all_problems = [msg for path in paths for msg in problems(path)]
    for msg in all_problems:
        print(msg)
    print(f"{len(paths)} file(s), {len(all_problems)} problem(s)")
    return 1 if all_problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
