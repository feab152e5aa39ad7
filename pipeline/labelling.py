"""The labelling loop: pick items for people to label, and take their labels back, checked against
the labelling guide (known labels, known items, evidence quoted verbatim from the item)."""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import json
import random
import re
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


# ---------------------------------------------------------------- reading label files
# Every problem is reported against the line a row starts on, as an editor numbers lines, so
# that a person can go straight to it; positions inside a row (labels[2], task 3) count from 1.
_ABSENT = object()
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def kind_of(value) -> str:
    """What a JSON value is, for an error message: "a string", "null", "absent"."""
    if value is _ABSENT:
        return "absent"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _is_text(value: str) -> bool:
    # A JSON "\ud800" escape decodes to a lone surrogate, which SQLite and UTF-8 output refuse.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decoded_lines(data: bytes) -> list[tuple[int, str, tuple[int, int] | None]]:
    """(line number, text, problem) for each line of a file's bytes, each decoded on its own so
    one bad byte spoils one line, not the file. `problem` is (byte, column) where the line is
    not UTF-8; its text is then decoded with surrogateescape, keeping other lines' offsets."""
    if data.startswith(b"\xef\xbb\xbf"):  # a byte-order mark, as spreadsheets write
        data = data[3:]
    out = []
    # bytes.splitlines breaks only at \n, \r and \r\n; str.splitlines would also break at
    # U+2028 and friends, which JSON written with ensure_ascii=False carries inside strings.
    for number, raw in enumerate(data.splitlines(keepends=True), 1):
        try:
            out.append((number, raw.decode("utf-8"), None))
        except UnicodeDecodeError as exc:
            out.append((number, raw.decode("utf-8", "surrogateescape"), (raw[exc.start], exc.start + 1)))
    return out


def not_utf8(problem: tuple[int, int], line: int | None = None) -> str:
    byte, column = problem
    where = f"on line {line}, column {column}" if line is not None else f"at column {column}"
    return f"not UTF-8 (byte 0x{byte:02x} {where})"


def read_rows(path: Path) -> list[tuple[int, dict | None, str | None]]:
    """(line number, row, error) for each row of a jsonl, csv or Label Studio file: the line
    the row starts on, and a row (its shape not yet checked) or why it could not be read."""
    lines = decoded_lines(Path(path).read_bytes())
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return _read_csv(lines)
    if suffix == ".json":
        return _read_label_studio(lines)
    out: list[tuple[int, dict | None, str | None]] = []
    for number, line, problem in lines:
        if problem:
            out.append((number, None, not_utf8(problem)))
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            out.append((number, None, f"not JSON ({exc.msg})"))
            continue
        out.append((number, row, None) if isinstance(row, dict) else
                   (number, None, f"not a JSON object ({kind_of(row)})"))
    return out


def _read_csv(lines) -> list[tuple[int, dict | None, str | None]]:
    """Rows of a CSV as written by `label export --format csv`. A quoted field may hold line
    breaks, so a record can span lines: csv.reader's line_num tells where each one ends."""
    problems = {number: problem for number, _, problem in lines if problem}
    reader = csv.reader(text for _, text, _ in lines)
    out: list[tuple[int, dict | None, str | None]] = []
    header: list[str] | None = None
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # the reader cannot find the next record: nothing after is safe
            out.append((start, None, f"not CSV ({exc}); the rest of the file is not read"))
            break
        first, start = start, reader.line_num + 1
        spoiled = [n for n in range(first, reader.line_num + 1) if n in problems]
        if spoiled:
            error = not_utf8(problems[spoiled[0]], spoiled[0])
            if header is None:  # without the column names no record after it can be read
                return [(first, None, f"the header is {error}")]
            out.append((first, None, error))
            continue
        if not any(f.strip() for f in fields):
            continue
        if header is None:
            header = [f.strip() for f in fields]
            if "item_id" not in header:
                return [(first, None, "the header has no item_id column")]
            continue
        if len(fields) > len(header):
            out.append((first, None, f"{len(fields)} fields but the header has {len(header)} "
                                     "(a quote left open?)"))
            continue
        row = dict(zip(header, fields + [""] * (len(header) - len(fields))))
        try:
            evidence = json.loads(row.get("evidence") or "{}")
        except json.JSONDecodeError as exc:
            out.append((first, None, f"evidence is not JSON ({exc.msg})"))
            continue
        labels = [label.strip() for label in (row.get("labels") or "").split(";") if label.strip()]
        out.append((first, {**row, "labels": labels, "evidence": evidence}, None))
    return out


def _read_label_studio(lines) -> list[tuple[int, dict | None, str | None]]:
    """Tasks of a Label Studio JSON export, each at the line it starts on; a file holding one
    task object is that task. A file that is not JSON at all is one error, at its line."""
    problems = {number: problem for number, _, problem in lines if problem}
    text = "".join(line for _, line, _ in lines)
    line_starts, offset = [], 0
    for _, line, _ in lines:
        line_starts.append(offset)
        offset += len(line)

    def line_at(position: int) -> int:
        return max(bisect.bisect_right(line_starts, position), 1)

    def undecodable(first: int, last: int) -> str | None:
        spoiled = [n for n in range(first, last + 1) if n in problems]
        return not_utf8(problems[spoiled[0]], spoiled[0]) if spoiled else None

    try:
        # Lines that are not UTF-8 were decoded with surrogateescape: inside a string they
        # parse, and the task holding them is reported below.
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        where = line_at(exc.pos)
        return [(where, None, undecodable(where, where) or f"not JSON ({exc.msg})")]
    if isinstance(document, dict):
        tasks = [(_JSON_SPACE.match(text).end(), len(text.rstrip()), document)]
    elif isinstance(document, list):
        # The document is known to be well formed, so walking its top-level elements with
        # raw_decode needs no error handling; it is only to learn where each task starts.
        decoder, tasks = json.JSONDecoder(), []
        position = _JSON_SPACE.match(text, text.index("[") + 1).end()
        for _ in document:
            value, end = decoder.raw_decode(text, position)
            tasks.append((position, end, value))
            position = _JSON_SPACE.match(text, end).end() + 1  # past the comma
            position = _JSON_SPACE.match(text, position).end()
    else:
        return [(1, None, f"expected a list of Label Studio tasks, not {kind_of(document)}")]
    out: list[tuple[int, dict | None, str | None]] = []
    for index, (start, end, task) in enumerate(tasks, 1):
        first = line_at(start)
        problem = undecodable(first, line_at(max(end - 1, start)))
        row, error = (None, problem) if problem else _from_label_studio(task)
        out.append((first, row, f"task {index}: {error}" if error else None))
    return out


def _from_label_studio(task) -> tuple[dict | None, str | None]:
    """A task's last annotation as a row (labels from its choices, evidence from its labelled
    spans), or what is wrong with the task's shape."""
    if not isinstance(task, dict):
        return None, f"a task must be an object, not {kind_of(task)}"
    data = task.get("data", _ABSENT)
    if not isinstance(data, dict):
        return None, f"data must be an object, not {kind_of(data)}"
    annotations = task.get("annotations")
    if annotations is None:
        annotations = []
    if not isinstance(annotations, list):
        return None, f"annotations must be a list, not {kind_of(annotations)}"
    if not annotations:
        # Label Studio exports unlabelled tasks with no annotations; importing one as "no
        # labels" would teach the model that the item is negative.
        return None, "no annotations (not labelled yet)"
    where = f"annotations[{len(annotations)}]"
    annotation = annotations[-1]
    if not isinstance(annotation, dict):
        return None, f"{where} must be an object, not {kind_of(annotation)}"
    results = annotation.get("result")
    if results is None:
        results = []
    if not isinstance(results, list):
        return None, f"{where}.result must be a list, not {kind_of(results)}"
    labels, evidence = [], defaultdict(list)
    for number, result in enumerate(results, 1):
        at = f"{where}.result[{number}]"
        if not isinstance(result, dict):
            return None, f"{at} must be an object, not {kind_of(result)}"
        value = result.get("value", _ABSENT)
        if result.get("type") not in ("choices", "labels"):
            continue  # other controls (a comment box, ratings) carry nothing we import
        if not isinstance(value, dict):
            return None, f"{at}.value must be an object, not {kind_of(value)}"
        names = value.get("choices" if result["type"] == "choices" else "labels", _ABSENT)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            field = "choices" if result["type"] == "choices" else "labels"
            return None, f"{at}.value.{field} must be a list of strings, not {kind_of(names)}"
        if result["type"] == "choices":
            labels = names
            continue
        span = value.get("text", _ABSENT)
        if not isinstance(span, str):
            return None, f"{at}.value.text must be a string, not {kind_of(span)}"
        for label in names:
            evidence[label].append(span)
    annotator = annotation.get("completed_by")
    if isinstance(annotator, dict):  # some exports give the user object, not its id
        annotator = annotator.get("email") or annotator.get("id")
    row = {"labels": labels, "evidence": dict(evidence),
           "annotator": str(annotator) if annotator is not None else None}
    if "item_id" in data:  # absent stays absent, and the check says so
        row["item_id"] = data["item_id"]
    return row, None


# ---------------------------------------------------------------- checking and importing
def _item_number(value) -> int | None:
    # CSV cells are strings, and a hand-written file may quote the number; a float or a bool
    # is not an item number even though int() would take it.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    return None


def _shape_error(row: dict) -> str | None:
    """What is wrong with a row's shape, before it is compared with the store."""
    item_id = row.get("item_id", _ABSENT)
    if _item_number(item_id) is None:
        return f"item_id must be an item number (an integer), not {kind_of(item_id)}"
    labels = row.get("labels", _ABSENT)
    if not isinstance(labels, list):
        return f"labels must be a list of label names, not {kind_of(labels)}"
    for number, label in enumerate(labels, 1):
        if not isinstance(label, str):
            return f"labels[{number}] must be a label name (a string), not {kind_of(label)}"
    unknown = [label for label in labels if label not in LABELS]
    if unknown:
        return f"unknown label(s) {unknown}; known: {', '.join(LABELS)}"
    evidence = row.get("evidence")
    if evidence is None or evidence == []:
        evidence = {}
    if not isinstance(evidence, dict):
        return f"evidence must be an object {{label: [sentences]}}, not {kind_of(evidence)}"
    for label, sentences in evidence.items():
        # A string here would be read a character at a time, and every character is "in" the text.
        if not isinstance(sentences, list):
            return f"evidence.{label} must be a list of sentences, not {kind_of(sentences)}"
        for number, sentence in enumerate(sentences, 1):
            if not isinstance(sentence, str):
                return f"evidence.{label}[{number}] must be a sentence (a string), not {kind_of(sentence)}"
            if not sentence.strip():
                return f"evidence.{label}[{number}] is empty"
    for field in ("briefing", "annotator"):
        value = row.get(field)
        if field == "annotator" and isinstance(value, int) and not isinstance(value, bool):
            continue  # a user id
        if value is not None and not isinstance(value, str):
            return f"{field} must be a string or absent, not {kind_of(value)}"
        if isinstance(value, str) and not _is_text(value):
            return f"{field} is not valid text (it holds a lone surrogate escape)"
    return None


def validate(db, row: dict) -> str | None:
    """The reason a row breaks the labelling guide, or None."""
    error = _shape_error(row)
    if error:
        return error
    item_id = _item_number(row["item_id"])
    item = store.item(db, item_id)
    if item is None:
        return f"no item {item_id} in the store"
    labels = row["labels"]
    evidence = row.get("evidence") or {}
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


def stored_form(row: dict, identity: str) -> dict:
    """A row `validate` accepted, as the labels table holds it. `identity` joins the row's
    content in its hash: a row with the same content and identity is the same row."""
    evidence = row.get("evidence") or {}
    annotator = row.get("annotator")
    clean = {
        "item_id": _item_number(row["item_id"]), "labels": [l for l in LABELS if l in row["labels"]],
        "evidence": {l: evidence[l] for l in LABELS if l in row["labels"]},
        "annotator": str(annotator) if annotator not in (None, "") else None,
        "briefing": row.get("briefing") or None,
    }
    clean["row_hash"] = hashlib.sha256(json.dumps([clean, identity], sort_keys=True).encode()).hexdigest()
    return clean


def save_label(db, row: dict, source: str, identity: str) -> str | None:
    """One row from the review desk: checked by the same `validate` as every imported row and
    stored in the same table; returns the reason it was refused (nothing stored), or None."""
    error = validate(db, row)
    if error:
        return error
    store.save_labels(db, [stored_form(row, identity)], source)
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
        # The file is part of the identity: the same file again changes nothing, while a later
        # file repeating an earlier answer still counts as the latest word on the item.
        good.append(stored_form(row, str(Path(path).resolve())))
    if bad and not skip_bad:
        return {"imported": 0, "unchanged": 0, "bad": bad, "rows": len(parsed)}
    added = store.save_labels(db, good, str(Path(path).resolve()))
    return {"imported": added, "unchanged": len(good) - added, "bad": bad, "rows": len(parsed)}
