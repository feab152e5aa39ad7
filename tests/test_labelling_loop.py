"""The retraining loop, scripted end to end: nightly -> export 20 uncertain -> import labels ->
train -> promotion refused for a worse model, accepted for a better one -> nightly uses it."""

from __future__ import annotations

import csv
import json
import re

from typer.testing import CliRunner

from pipeline import modelfolder, store
from pipeline.cli import app
from pipeline.evaluate import KEYWORDS
from pipeline.passages import item_passages

from .conftest import SAMPLES, composed_rows

runner = CliRunner()


def label_like_a_person(row: dict) -> dict:
    """A stand-in analyst: labels by the keyword rules and quotes the matching sentences."""
    labels, evidence = [], {}
    for label, pattern in KEYWORDS.items():
        quotes = [p for p in item_passages(row["text"], row["title"])[1:] if re.search(pattern, p, re.I)]
        if quotes:
            labels.append(label)
            evidence[label] = quotes[:2]
    return {"item_id": row["item_id"], "labels": labels, "evidence": evidence, "annotator": "analyst-1"}


def test_export_import_train_promote_and_nightly_uses_the_promoted_model(model_env, tmp_path, tiny_base):
    labelled = tmp_path / "labelled"
    labelled.mkdir()
    (labelled / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in composed_rows(200)))
    gold = tmp_path / "holdout.gold.jsonl"
    gold.write_text("".join(json.dumps(r) + "\n" for r in composed_rows(80, offset=200)))
    env = {**model_env, "MINUTES_LABELLED_DIR": str(labelled)}
    models = env["MINUTES_MODELS_DIR"]

    first = runner.invoke(app, ["nightly", "--source", str(SAMPLES), "--json"], env=env)
    assert first.exit_code == 0, first.output

    export = tmp_path / "to_label.jsonl"
    result = runner.invoke(app, ["label", "export", "-n", "20", "--strategy", "uncertain",
                                 "-o", str(export)], env=env)
    assert result.exit_code == 0, result.output
    rows = [json.loads(l) for l in export.read_text().splitlines()]
    assert len(rows) == 20
    assert all({"item_id", "text", "labels", "evidence"} <= set(r) for r in rows)
    assert len({r["council"] for r in rows[:6]}) >= 4  # spread across councils
    csv_out = runner.invoke(app, ["label", "export", "-n", "5", "--format", "csv"], env=env)
    assert list(csv.DictReader(csv_out.stdout.splitlines()))[0]["item_id"]
    studio = json.loads(runner.invoke(app, ["label", "export", "-n", "3", "--format", "label-studio"], env=env).stdout)
    assert studio[0]["data"]["text"]

    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps(label_like_a_person(r)) + "\n" for r in rows))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(label_like_a_person(rows[0])) + "\n"
                   + json.dumps({"item_id": rows[1]["item_id"], "labels": ["ofsted"], "evidence": {}}) + "\n"
                   + json.dumps({"item_id": rows[2]["item_id"], "labels": ["workforce_concern"],
                                 "evidence": {"workforce_concern": ["Words that are not in the item."]}}) + "\n"
                   + json.dumps({"item_id": 999999, "labels": [], "evidence": {}}) + "\n")
    refused = runner.invoke(app, ["label", "import", str(bad)], env=env)
    assert refused.exit_code == 1
    assert "bad.jsonl:2: unknown label" in refused.stderr
    assert "bad.jsonl:3: evidence for workforce_concern is not in item" in refused.stderr
    assert "bad.jsonl:4: no item 999999" in refused.stderr
    db = store.connect(env["MINUTES_DB"])
    assert store.current_labels(db) == []  # all or nothing
    skipped = runner.invoke(app, ["label", "import", str(bad), "--skip-bad", "--json"], env=env)
    assert json.loads(skipped.stdout.strip().splitlines()[-1])["imported"] == 1

    imported = runner.invoke(app, ["label", "import", str(answers), "--json"], env=env)
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.stdout.strip().splitlines()[-1])["imported"] == 20
    again = runner.invoke(app, ["label", "import", str(answers), "--json"], env=env)
    assert json.loads(again.stdout.strip().splitlines()[-1]) == {"imported": 0, "unchanged": 20, "bad": [], "rows": 20}
    assert len(store.current_labels(db)) == 20  # the later label superseded the --skip-bad one
    assert len(store.label_history(db, rows[0]["item_id"])) == 2

    def train(*extra):
        before = {v["version"] for v in modelfolder.versions(models, "classifier")}
        result = runner.invoke(app, ["train", "--base", str(tiny_base), "--no-summariser",
                                     "--no-promote", *extra], env=env)
        assert result.exit_code == 0, result.output
        (new,) = {v["version"] for v in modelfolder.versions(models, "classifier")} - before
        return new

    # A deliberately worse model: trained on the same items with every label taken away.
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    (unlabelled / "train.jsonl").write_text("".join(
        json.dumps({**r, "labels": [], "evidence": {}, "briefing": None}) + "\n" for r in composed_rows(200)))
    env["MINUTES_LABELLED_DIR"] = str(unlabelled)
    worse = train("--epochs", "1", "--no-store-labels")
    env["MINUTES_LABELLED_DIR"] = str(labelled)
    refused = runner.invoke(app, ["models", "promote", worse, "--gold", str(gold)], env=env)
    assert refused.exit_code == 1 and "refused" in refused.stderr
    assert re.search(r"scores macro-F1 [\d.]+, current \S+ scores [\d.]+", refused.stderr)

    better = train("--epochs", "4")
    card = next(v for v in modelfolder.versions(models, "classifier") if v["version"] == better)
    assert any("20 imported labels" in f for f in card["training_files"])
    accepted = runner.invoke(app, ["models", "promote", better, "--gold", str(gold)], env=env)
    assert accepted.exit_code == 0, accepted.output + refused.stderr
    assert modelfolder.history(models, "classifier")[-1] == better
    listing = json.loads(runner.invoke(app, ["models", "list", "--json"], env=env).stdout)
    assert [m["version"] for m in listing if m["promoted"]] == [better]

    last = runner.invoke(app, ["nightly", "--source", str(SAMPLES), "--json"], env=env)
    summary = json.loads(last.stdout.strip().splitlines()[-1])
    assert summary["model_version"] == better and summary["items_classified"] == 28
    assert store.runs(db)[0]["model_version"] == better

    rolled = runner.invoke(app, ["models", "rollback"], env=env)
    assert rolled.exit_code == 0 and modelfolder.history(models, "classifier")[-1] != better
