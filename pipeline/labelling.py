"""The labelling loop: pick items for people to label, and take their labels back, checked against
the labelling guide (known labels, known items, evidence quoted verbatim from the item)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections import defaultdict
from pathlib import Path

from pipeline import store
from pipeline.config import LABELS
from pipeline.passages import normalise_for_match

STRATEGIES = ("uncertain", "flagged", "random")
FORMATS = ("jsonl", "csv", "label-studio")


def pick_items(db, n: int, strategy: str, thresholds: dict[str, float] | None, seed: int = 0) -> list[dict]:
    """Items to label. `uncertain`: scores nearest a threshold first, taken in turn from each
    council so one council's minutes do not fill the batch."""
    items = store.items(db)
    items = [i for i in items if not i["is_procedural"]]
    predictions = store.latest_predictions(db, [i["id"] for i in items])
    rng = random.Random(seed)
    if strategy == "random":
        rng.shuffle(items)
        chosen = items[:n]
    elif strategy == "flagged":
        flagged = [i for i in items if predictions.get(i["id"], {}).get("labels")]
        rng.shuffle(flagged)
        chosen = flagged[:n]
    elif strategy == "uncertain":
        thresholds = thresholds or {label: 0.5 for label in LABELS}

        def margin(item):
            scores = predictions.get(item["id"], {}).get("scores")
            if not scores:
                return 0.0  # never classified: as uncertain as can be
            return min(abs(scores[label] - thresholds[label]) for label in LABELS)

        by_council: dict[str, list[dict]] = defaultdict(list)
        for item in sorted(items, key=lambda i: (margin(i), i["id"])):
            by_council[item["council"] or item["source"]].append(item)
        queues = sorted(by_council.values(), key=lambda q: margin(q[0]))
        chosen = []
        while len(chosen) < n and any(queues):
            for queue in queues:
                if queue and len(chosen) < n:
                    chosen.append(queue.pop(0))
    else:
        raise ValueError(f"unknown strategy '{strategy}' (choose from {', '.join(STRATEGIES)})")
    rows = []
    for item in chosen:
        prediction = predictions.get(item["id"]) or {}
        rows.append({
            "item_id": item["id"], "title": item["title"], "council": item["council"],
            "committee": item["committee"], "date": item["date"], "source": item["source"],
            "text": item["text"],
            # Suggestions from the model, pre-filled: a labeller corrects rather than starts blank.
            "labels": prediction.get("labels") or [],
            "evidence": prediction.get("evidence") or {},
            "model_scores": prediction.get("scores"),
            "annotator": "",
        })
    return rows


def write_export(rows: list[dict], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["item_id", "title", "council", "committee", "date", "source", "text",
                         "labels", "evidence", "annotator"])
        for r in rows:
            writer.writerow([r["item_id"], r["title"], r["council"], r["committee"], r["date"],
                             r["source"], r["text"], ";".join(r["labels"]),
                             json.dumps(r["evidence"], ensure_ascii=False), r["annotator"]])
        return buffer.getvalue()
    if fmt == "label-studio":
        tasks = []
        for r in rows:
            result = [{"from_name": "labels", "to_name": "text", "type": "choices",
                       "value": {"choices": r["labels"]}}]
            for label, sentences in r["evidence"].items():
                for sentence in sentences:
                    start = r["text"].find(sentence)
                    if start >= 0:
                        result.append({"from_name": "evidence", "to_name": "text", "type": "labels",
                                       "value": {"start": start, "end": start + len(sentence),
                                                 "text": sentence, "labels": [label]}})
            tasks.append({"data": {k: r[k] for k in ("item_id", "title", "council", "committee",
                                                     "date", "source", "text")},
                          "predictions": [{"model_version": "minutes-pipeline", "result": result}]})
        return json.dumps(tasks, ensure_ascii=False, indent=1)
    raise ValueError(f"unknown format '{fmt}' (choose from {', '.join(FORMATS)})")


def read_rows(path: Path) -> list[tuple[int, dict | None, str | None]]:
    """(line number, row, parse error) for each row of a jsonl, csv or Label Studio file."""
    text = Path(path).read_text(encoding="utf-8-sig")
    out: list[tuple[int, dict | None, str | None]] = []
    if path.suffix.lower() == ".csv":
        for number, row in enumerate(csv.DictReader(io.StringIO(text)), 2):
            try:
                labels = [l.strip() for l in (row.get("labels") or "").split(";") if l.strip()]
                evidence = json.loads(row.get("evidence") or "{}")
                out.append((number, {**row, "labels": labels, "evidence": evidence}, None))
            except json.JSONDecodeError as exc:
                out.append((number, None, f"evidence is not JSON ({exc.msg})"))
        return out
    if path.suffix.lower() == ".json":
        try:
            tasks = json.loads(text)
        except json.JSONDecodeError as exc:
            return [(exc.lineno, None, f"not JSON ({exc.msg})")]
        for number, task in enumerate(tasks if isinstance(tasks, list) else [], 1):
            out.append((number, _from_label_studio(task), None))
        return out
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append((number, row if isinstance(row, dict) else None,
                        None if isinstance(row, dict) else "not a JSON object"))
        except json.JSONDecodeError as exc:
            out.append((number, None, f"not JSON ({exc.msg})"))
    return out


def _from_label_studio(task: dict) -> dict:
    data = task.get("data") or {}
    results = ((task.get("annotations") or [{}])[-1] or {}).get("result") or []
    labels, evidence = [], defaultdict(list)
    for r in results:
        value = r.get("value") or {}
        if r.get("type") == "choices":
            labels = value.get("choices") or []
        elif r.get("type") == "labels":
            for label in value.get("labels") or []:
                evidence[label].append(value.get("text") or "")
    annotator = ((task.get("annotations") or [{}])[-1] or {}).get("completed_by")
    return {"item_id": data.get("item_id"), "labels": labels, "evidence": dict(evidence),
            "annotator": str(annotator) if annotator is not None else None}


def validate(db, row: dict) -> str | None:
    """The reason a row breaks the labelling guide, or None."""
    try:
        item_id = int(row.get("item_id"))
    except (TypeError, ValueError):
        return "item_id missing or not a number"
    item = store.item(db, item_id)
    if item is None:
        return f"no item {item_id} in the store"
    labels = row.get("labels")
    if not isinstance(labels, list):
        return "labels must be a list"
    unknown = [label for label in labels if label not in LABELS]
    if unknown:
        return f"unknown label(s) {unknown}; known: {', '.join(LABELS)}"
    evidence = row.get("evidence") or {}
    if not isinstance(evidence, dict):
        return "evidence must be an object {label: [sentences]}"
    text = normalise_for_match(item["text"])
    for label in labels:
        sentences = evidence.get(label) or []
        if not sentences:
            return f"label {label} has no evidence sentence"
        for sentence in sentences:
            if normalise_for_match(sentence) not in text:
                return f"evidence for {label} is not in item {item_id}'s text: {sentence[:60]!r}"
    extra = set(evidence) - set(labels)
    if extra:
        return f"evidence given for label(s) not chosen: {sorted(extra)}"
    return None


def import_labels(db, path: Path, skip_bad: bool = False) -> dict:
    """Validate every row; import all (or, with skip_bad, the good ones). Same file twice: no change."""
    parsed = read_rows(Path(path))
    good, bad = [], []
    for number, row, error in parsed:
        error = error or validate(db, row)
        if error:
            bad.append({"line": number, "error": error})
            continue
        clean = {
            "item_id": int(row["item_id"]), "labels": [l for l in LABELS if l in row["labels"]],
            "evidence": {l: row["evidence"][l] for l in LABELS if l in row["labels"]},
            "annotator": row.get("annotator") or None, "briefing": row.get("briefing") or None,
        }
        # The file is part of the identity: the same file again changes nothing, while a later
        # file repeating an earlier answer still counts as the latest word on the item.
        identity = json.dumps([clean, str(Path(path).resolve())], sort_keys=True)
        clean["row_hash"] = hashlib.sha256(identity.encode()).hexdigest()
        good.append(clean)
    if bad and not skip_bad:
        return {"imported": 0, "unchanged": 0, "bad": bad, "rows": len(parsed)}
    added = store.save_labels(db, good, str(Path(path).resolve()))
    return {"imported": added, "unchanged": len(good) - added, "bad": bad, "rows": len(parsed)}
