"""The labelled items the project ships keep the gold format of the labelling guide: a file that
breaks it (evidence not verbatim, a briefing over 60 words, a label the guide does not name)
would train a model on something no labeller wrote."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

LABELLED = Path(__file__).resolve().parent.parent / "data" / "labelled"


def _check_module():
    spec = importlib.util.spec_from_file_location("labelled_check", LABELLED / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_labelled_file_keeps_the_gold_format():
    check = _check_module()
    files = sorted(LABELLED.rglob("*.jsonl"))
    assert len(files) > 10
    assert [msg for path in files for msg in check.problems(path)] == []


def test_the_checker_refuses_evidence_that_is_not_in_the_text(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "title": "Staffing", "text": "Caseloads were high.",
                               "labels": ["workforce_concern"],
                               "evidence": {"workforce_concern": ["Caseloads were very high."]},
                               "briefing": "Caseloads were high."}) + "\n", encoding="utf-8")
    assert any("not verbatim" in msg for msg in _check_module().problems(bad))


def test_no_id_is_used_twice_across_the_files():
    seen: dict[str, Path] = {}
    for path in sorted(LABELLED.rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                item_id = json.loads(line)["id"]
                assert item_id not in seen, f"{item_id} in {path} and {seen[item_id]}"
                seen[item_id] = path
