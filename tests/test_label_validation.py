"""Issue 15: label import and predict check every row's shape and encoding line by line, report
`file:line: reason` with the line a row truly starts on, and go on with the rest."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from pipeline import store
from pipeline.cli import app
from pipeline.passages import item_passages

from .conftest import SAMPLES

runner = CliRunner()


def invoke(args: list[str], env: dict):
    result = runner.invoke(app, args, env=env)
    # An uncaught exception is a traceback for a person at a terminal; the runner catches it.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "internal error" not in result.output
    return result


def stored_labels(env: dict) -> int:
    return store.connect(env["MINUTES_DB"]).execute("SELECT COUNT(*) FROM labels").fetchone()[0]


@pytest.fixture()
def items(env) -> list[dict]:
    """Two stored items, each with one sentence quoted verbatim from it."""
    result = runner.invoke(app, ["ingest", str(SAMPLES)], env=env)
    assert result.exit_code == 0, result.output
    chosen = []
    for item in store.items(store.connect(env["MINUTES_DB"])):
        passages = item_passages(item["text"], item["title"])[1:]
        if not item["is_procedural"] and passages:
            chosen.append({"id": item["id"], "text": item["text"], "sentence": passages[0]})
    assert len(chosen) >= 3
    return chosen[:3]


def good_row(item: dict) -> dict:
    return {"item_id": item["id"], "labels": ["workforce_concern"],
            "evidence": {"workforce_concern": [item["sentence"]]}, "annotator": "analyst-1"}


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


# ---------------------------------------------------------------- jsonl
def test_evidence_given_as_a_string_is_an_error_not_split_into_characters(env, items, tmp_path):
    labels = tmp_path / "labels.jsonl"
    as_string = {**good_row(items[1]), "evidence": {"workforce_concern": items[1]["sentence"]}}
    write_jsonl(labels, [good_row(items[0]), as_string])
    result = invoke(["label", "import", str(labels)], env)
    assert result.exit_code == 1
    assert f"{labels}:2: evidence.workforce_concern must be a list of sentences, not a string" in result.stderr
    assert f"{labels}:1:" not in result.stderr
    assert stored_labels(env) == 0  # a file with a bad row imports nothing without --skip-bad


def test_evidence_holding_a_number_or_null_names_the_field(env, items, tmp_path):
    labels = tmp_path / "labels.jsonl"
    write_jsonl(labels, [
        {**good_row(items[0]), "evidence": {"workforce_concern": [items[0]["sentence"], 42]}},
        {**good_row(items[1]), "evidence": {"workforce_concern": 7}},
        {**good_row(items[2]), "evidence": {"workforce_concern": [None]}},
        good_row(items[2]),
    ])
    result = invoke(["label", "import", str(labels), "--skip-bad"], env)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{labels}:")]
    assert errors == [
        f"{labels}:1: evidence.workforce_concern[2] must be a sentence (a string), not a number",
        f"{labels}:2: evidence.workforce_concern must be a list of sentences, not a number",
        f"{labels}:3: evidence.workforce_concern[1] must be a sentence (a string), not null",
    ]
    assert stored_labels(env) == 1


def test_other_shapes_are_errors_naming_the_field(env, items, tmp_path):
    labels = tmp_path / "labels.jsonl"
    write_jsonl(labels, [
        {**good_row(items[0]), "labels": "workforce_concern"},
        {**good_row(items[0]), "labels": [3]},
        {**good_row(items[0]), "briefing": ["not", "a", "string"]},
        {**good_row(items[0]), "item_id": 1.5},
        {**good_row(items[0]), "item_id": True},
    ])
    result = invoke(["label", "import", str(labels)], env)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{labels}:")]
    assert errors == [
        f"{labels}:1: labels must be a list of label names, not a string",
        f"{labels}:2: labels[1] must be a label name (a string), not a number",
        f"{labels}:3: briefing must be a string or absent, not a list",
        f"{labels}:4: item_id must be an item number (an integer), not a number",
        f"{labels}:5: item_id must be an item number (an integer), not true or false",
    ]


def test_a_non_utf8_byte_is_an_error_for_its_line_only(env, items, tmp_path):
    labels = tmp_path / "labels.jsonl"
    lines = [json.dumps(good_row(i)).encode() for i in items]
    lines[1] = lines[1].replace(b"analyst-1", b"analyst-\xff")
    labels.write_bytes(b"\n".join(lines) + b"\n")

    refused = invoke(["label", "import", str(labels)], env)
    assert refused.exit_code == 1
    errors = [line for line in refused.stderr.splitlines() if line.startswith(f"{labels}:")]
    assert len(errors) == 1 and errors[0].startswith(f"{labels}:2: not UTF-8 (byte 0xff at column ")
    assert stored_labels(env) == 0

    imported = invoke(["label", "import", str(labels), "--skip-bad", "--json"], env)
    assert imported.exit_code == 1
    report = json.loads(imported.stdout.strip().splitlines()[-1])
    assert (report["imported"], report["rows"], [b["line"] for b in report["bad"]]) == (2, 3, [2])
    again = invoke(["label", "import", str(labels), "--skip-bad", "--json"], env)
    assert json.loads(again.stdout.strip().splitlines()[-1])["unchanged"] == 2
    assert stored_labels(env) == 2  # nothing stored twice


def test_a_line_separator_inside_a_json_string_does_not_split_the_line(env, items, tmp_path):
    # json.dumps(ensure_ascii=False), as `label export` writes, leaves U+2028 raw in a string.
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({**good_row(items[0]), "annotator": "analyst\u2028one"}, ensure_ascii=False)
                      + "\n" + json.dumps({**good_row(items[1]), "labels": ["ofsted"]}) + "\n", encoding="utf-8")
    result = invoke(["label", "import", str(labels), "--skip-bad"], env)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{labels}:")]
    assert len(errors) == 1 and errors[0].startswith(f"{labels}:2: unknown label(s) ['ofsted']")
    assert stored_labels(env) == 1


# ---------------------------------------------------------------- csv
def csv_text(rows: list[list]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def csv_record(row: dict, text: str) -> list:
    return [row["item_id"], text, ";".join(row["labels"]), json.dumps(row["evidence"]), row["annotator"]]


def test_csv_errors_name_the_line_a_record_starts_on(env, items, tmp_path):
    header = ["item_id", "text", "labels", "evidence", "annotator"]
    bad = {**good_row(items[1]), "labels": ["ofsted"], "evidence": {}}
    labels = tmp_path / "labels.csv"
    labels.write_text(csv_text([
        header,
        csv_record(good_row(items[0]), "first line\nsecond line\nthird line"),  # lines 2 to 4
        csv_record(bad, "one line"),  # line 5, the third record
        csv_record({**good_row(items[2]), "item_id": "twelve"}, "a\nb"),  # lines 6 and 7
        csv_record(good_row(items[2]), "x"),  # line 8
    ]), encoding="utf-8")
    result = invoke(["label", "import", str(labels), "--skip-bad", "--json"], env)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{labels}:")]
    assert errors[0].startswith(f"{labels}:5: unknown label(s) ['ofsted']")
    assert errors[1] == f"{labels}:6: item_id must be an item number (an integer), not a string"
    assert len(errors) == 2
    assert json.loads(result.stdout.strip().splitlines()[-1])["imported"] == 2
    assert stored_labels(env) == 2


def test_csv_record_with_a_non_utf8_byte_is_reported_at_its_first_line(env, items, tmp_path):
    header = ["item_id", "text", "labels", "evidence", "annotator"]
    labels = tmp_path / "labels.csv"
    data = csv_text([header, csv_record(good_row(items[0]), "a"),
                     csv_record(good_row(items[1]), "spans\nMARK\nlines"),
                     csv_record(good_row(items[2]), "b")]).encode()
    labels.write_bytes(data.replace(b"MARK", b"caf\xe9"))
    result = invoke(["label", "import", str(labels), "--skip-bad", "--json"], env)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{labels}:")]
    assert errors == [f"{labels}:3: not UTF-8 (byte 0xe9 on line 4, column 4)"]
    assert json.loads(result.stdout.strip().splitlines()[-1])["imported"] == 2


# ---------------------------------------------------------------- Label Studio
def studio_task(row: dict) -> dict:
    result = [{"from_name": "labels", "to_name": "text", "type": "choices",
               "value": {"choices": row["labels"]}}]
    for label, sentences in row["evidence"].items():
        for sentence in sentences:
            result.append({"from_name": "evidence", "to_name": "text", "type": "labels",
                           "value": {"start": 0, "end": len(sentence), "text": sentence, "labels": [label]}})
    return {"data": {"item_id": row["item_id"]}, "annotations": [{"completed_by": 3, "result": result}]}


def write_tasks(path, tasks) -> None:
    """One task a line after the opening bracket: task N starts on line N + 1."""
    path.write_text("[\n" + ",\n".join(json.dumps(t) for t in tasks) + "\n]\n", encoding="utf-8")


def test_label_studio_tasks_that_are_not_objects_are_errors_with_their_index(env, items, tmp_path):
    labels = tmp_path / "export.json"
    write_tasks(labels, [studio_task(good_row(items[0])), "a string", 42, studio_task(good_row(items[1]))])
    result = invoke(["label", "import", str(labels), "--skip-bad", "--json"], env)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{labels}:")]
    assert errors == [f"{labels}:3: task 2: a task must be an object, not a string",
                      f"{labels}:4: task 3: a task must be an object, not a number"]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (report["imported"], report["rows"]) == (2, 4)
    assert stored_labels(env) == 2


def test_label_studio_nested_shapes_are_checked(env, items, tmp_path):
    good = studio_task(good_row(items[0]))
    no_text = studio_task(good_row(items[2]))
    del no_text["annotations"][0]["result"][1]["value"]["text"]
    labels = tmp_path / "export.json"
    write_tasks(labels, [
        {**good, "annotations": {"result": []}},
        {**good, "annotations": [{"result": ["not an object"]}]},
        {**good, "annotations": [{"result": [{"type": "choices", "value": {"choices": "workforce_concern"}}]}]},
        {**good, "data": "item 3"},
        no_text,
    ])
    result = invoke(["label", "import", str(labels)], env)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{labels}:")]
    assert errors == [
        f"{labels}:2: task 1: annotations must be a list, not an object",
        f"{labels}:3: task 2: annotations[1].result[1] must be an object, not a string",
        f"{labels}:4: task 3: annotations[1].result[1].value.choices must be a list of strings, not a string",
        f"{labels}:5: task 4: data must be an object, not a string",
        f"{labels}:6: task 5: annotations[1].result[2].value.text must be a string, not absent",
    ]
    assert stored_labels(env) == 0


def test_a_label_studio_file_that_is_one_object_is_one_task(env, items, tmp_path):
    labels = tmp_path / "export.json"
    labels.write_text(json.dumps(studio_task(good_row(items[0])), indent=1), encoding="utf-8")
    result = invoke(["label", "import", str(labels), "--json"], env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (report["imported"], report["rows"]) == (1, 1)
    assert [r["id"] for r in store.current_labels(store.connect(env["MINUTES_DB"]))] == [f"item-{items[0]['id']}"]


# ---------------------------------------------------------------- predict
ITEM = ("The Director reported that agency social worker vacancies had risen to 30 per cent, "
        "and that recruitment to the safeguarding teams remained difficult.")


def test_predict_goes_on_past_a_non_utf8_line(model_env, tmp_path):
    source = tmp_path / "items.jsonl"
    lines = [json.dumps({"id": n, "title": "Workforce report", "text": ITEM}).encode() for n in (1, 2, 3)]
    lines[1] = lines[1].replace(b"Workforce", b"Workforce \xff")
    source.write_bytes(b"\n".join(lines) + b"\n")
    output = tmp_path / "out.jsonl"
    result = invoke(["predict", str(source), "-o", str(output), "--no-briefing"], model_env)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{source}:")]
    assert len(errors) == 1 and errors[0].startswith(f"{source}:2: skipped: not UTF-8 (byte 0xff at column ")
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == [1, 3]


def test_predict_reports_an_empty_text_instead_of_scoring_it(model_env, tmp_path):
    source = tmp_path / "items.jsonl"
    write_jsonl(source, [{"id": "a", "text": ITEM}, {"id": "b", "text": ""}, {"id": "c", "text": "   \n "},
                         {"id": "d", "text": "... -- ..."}, {"id": "e", "text": ITEM}])
    output = tmp_path / "out.jsonl"
    result = invoke(["predict", str(source), "-o", str(output), "--no-briefing"], model_env)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{source}:")]
    assert errors == [f"{source}:2: skipped: text is empty",
                      f"{source}:3: skipped: text is empty",
                      f"{source}:4: skipped: text has no words"]
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == ["a", "e"]


def test_predict_checks_field_types(model_env, tmp_path):
    source = tmp_path / "items.jsonl"
    write_jsonl(source, [{"id": [1], "text": ITEM}, {"id": 2, "title": 7, "text": ITEM},
                         {"id": 3, "text": ITEM, "committee": {"name": "x"}}, {"id": True, "text": ITEM},
                         {"id": 5, "text": ITEM, "meeting": None}])
    output = tmp_path / "out.jsonl"
    result = invoke(["predict", str(source), "-o", str(output), "--no-briefing"], model_env)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{source}:")]
    assert errors == [f"{source}:1: skipped: id must be a string or an integer, not a list",
                      f"{source}:2: skipped: title must be a string or null, not a number",
                      f"{source}:3: skipped: committee must be a string or null, not an object",
                      f"{source}:4: skipped: id must be a string or an integer, not true or false"]
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == [5]


def test_predict_exits_2_when_the_file_cannot_be_read(model_env, tmp_path):
    result = invoke(["predict", str(tmp_path / "missing.jsonl")], model_env)
    assert result.exit_code == 2
    assert "cannot read" in result.stderr
