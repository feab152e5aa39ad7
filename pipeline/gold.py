"""Gold-format files (the labelling guide's JSON Lines: text, labels, evidence, briefing) read
into rows, and a row's text made what ingest would store, so a labelled item is scored, trained
on and evaluated on the same text the nightly run classifies."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pipeline.config import LABELS, DataError
from pipeline.ingest.readers import normalise
from pipeline.ingest.split import is_procedural, split_document


def read_labelled(paths: Iterable[Path]) -> list[dict]:
    """Gold-format JSON Lines files (labelling guide) -> rows; folders are read for *.jsonl."""
    rows = []
    for path in paths:
        path = Path(path)
        files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
        for file in files:
            for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{file}:{number}: not JSON ({exc.msg})") from None
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise DataError(f"{file}:{number}: needs a 'text' string")
                unknown = set(row.get("labels") or []) - set(LABELS)
                if unknown:
                    raise DataError(f"{file}:{number}: unknown label(s) {sorted(unknown)}")
                row.setdefault("id", f"{file.stem}-{number}")
                rows.append(row)
    return rows


def read_gold(gold_path) -> list[dict]:
    """A gold file's rows; a file with none is one clear error, not an empty score."""
    rows = read_labelled([gold_path])
    if not rows:
        raise DataError(f"{gold_path}: no gold items in the file")
    return rows


def prepare(row: dict) -> dict:
    """A gold row's text as ingest would store it: page furniture removed, title found.

    A row that names its title is one item with that title: a heading the splitter finds in
    its text (a scraped page's "Issue details", or the previous item's "Minutes of the
    previous meeting") neither renames it nor makes it procedural."""
    parsed = split_document(normalise(row["text"]))
    parts = parsed["items"]
    if len(parts) == 1:
        found_title, text = parts[0]["title"], parts[0]["text"]
    else:
        found_title, text = None, "\n\n".join(p["text"] for p in parts)
    title = row.get("title") or found_title
    resolutions = "\n".join(p["resolutions"] for p in parts if p.get("resolutions")) or None
    # What the splitter found under a procedural heading ("Apologies for Absence", then the
    # declarations of interest, up to the "Minutes" marker) is that heading's business: it is no
    # purpose line for the item the row is labelled as.
    found_purpose_is_the_rows = len(parts) == 1 and not (
        found_title and found_title != title and is_procedural(found_title))
    purpose = row.get("purpose") or (parts[0].get("purpose") if found_purpose_is_the_rows else None)
    return {**row, "title": title, "text": text, "raw_text": row["text"],
            "purpose": purpose, "committee": row.get("committee") or row.get("meeting"),
            "resolutions": resolutions, "is_procedural": is_procedural(title, text)}

