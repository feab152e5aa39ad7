"""`minutes backfill` on both engines over 200+ documents, and `minutes import-results`: the same
rows from Ray Data as from this process, bad inputs as rows with errors, each item stored once."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import store
from pipeline.cli import app
from pipeline.config import LABELS

from .conftest import SAMPLES

runner = CliRunner()

# Fictional councils and committees, written for this test.
COUNCILS = ["Larkmoor", "Fenwick Vale", "Stonebridge", "Oakhollow", "Marsden Cross", "Kestrel Bay",
            "Thornfield", "Brackenridge", "Holloway Downs", "Ravensmere", "Wyncombe", "Ashcott"]
COMMITTEES = ["Children and Families Scrutiny Committee", "Corporate Parenting Panel", "Executive Cabinet",
              "Education and Skills Overview Panel", "Highways and Transport Committee"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "September", "October",
          "November"]
ITEMS = [
    ("Ofsted Focused Visit", "Inspectors from Ofsted carried out a focused visit to the front door "
     "service in {month}. The letter judged that {n} of the {m} areas looked at required improvement, "
     "and that management oversight of referrals was inconsistent.",
     "RESOLVED: That the outcome of the focused visit be noted and an action plan be brought to the next meeting."),
    ("Social Work Workforce Update", "The Head of Service reported that {n} social worker posts were "
     "vacant and that {m} agency workers were covering caseloads. Average caseloads had risen to {k} "
     "children per worker in the assessment teams.",
     "RESOLVED: That the recruitment and retention plan be endorsed."),
    ("Improvement Notice", "The Director of Children's Services reported that the Department for "
     "Education had issued an improvement notice on {day} {month} following the inadequate judgement. "
     "An improvement board chaired by an independent adviser would meet every {n} weeks.",
     "RESOLVED: That the improvement notice be noted and the improvement plan be approved."),
    ("Road Resurfacing Programme", "The Highways Manager presented the resurfacing programme for {n} "
     "roads in the district. Members asked about the timing of works near {m} primary schools.",
     "RESOLVED: That the programme be approved."),
    ("Youth Service Grant", "Members considered a report on grants of {n} thousand pounds to {m} "
     "voluntary youth clubs across the borough.",
     "RESOLVED: That the grants be awarded as set out in the report."),
]


def minutes_text(rng: random.Random, council: str, committee: str, day: int, month: str, year: int) -> str:
    """One fictional meeting's minutes as plain text, in the ModernGov shape the splitter reads."""
    suffix = "th" if 10 < day < 14 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    lines = [f"{committee} - Tuesday, {day}{suffix} {month} {year} 10.00 am", "",
             f"{council} Council", "", "Venue: Council Chamber", "", "Items", "No. Item", "",
             "1.", "", "Apologies", "", "Minutes:", "", "Apologies were received from two members.", ""]
    for number, (title, body, resolution) in enumerate(rng.sample(ITEMS, rng.randint(1, 3)), 2):
        values = {"n": rng.randint(2, 19), "m": rng.randint(2, 9), "k": rng.randint(18, 31),
                  "day": day, "month": month}
        lines += [f"{number}.", "", title, "", "Minutes:", "", body.format(**values), "",
                  resolution, ""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> Path:
    """A folder of 200 documents of our own and 22 samples (our own minutes, and the samples copied under new names) and
    five bad ones: empty, binary, undecodable control bytes, a text that is no PDF; plus a
    Windows-1252 file, which is not UTF-8 but is minutes and must parse."""
    rng = random.Random(16)
    root = tmp_path_factory.mktemp("backfill-inputs")
    for k in range(200):
        council, committee = rng.choice(COUNCILS), rng.choice(COMMITTEES)
        day, month, year = rng.randint(1, 28), rng.choice(MONTHS), rng.randint(2010, 2025)
        folder = root / council.lower().replace(" ", "-")
        folder.mkdir(exist_ok=True)
        (folder / f"{k:03d}-{year}-{month.lower()}-{day:02d}.txt").write_text(
            minutes_text(rng, council, committee, day, month, year), encoding="utf-8")
    samples = [p for p in sorted(SAMPLES.iterdir()) if p.suffix in (".txt", ".html")]
    for copy in range(2):
        for sample in samples:
            shutil.copy(sample, root / f"copy{copy}-{sample.name}")
            if copy:  # the second copy differs in a date, so it is a document of its own
                path = root / f"copy{copy}-{sample.name}"
                path.write_text(path.read_text(encoding="utf-8").replace("202", "201"), encoding="utf-8")
    cp1252 = minutes_text(rng, "Ashcott", "Executive Cabinet", 3, "March", 2015).replace(
        "Apologies were received", "Apologies were received from Councillor Zoë Brontë’s deputy and")
    (root / "windows-1252.txt").write_bytes(cp1252.encode("cp1252"))
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.txt").write_bytes(b"")
    (bad / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (bad / "control-bytes.txt").write_bytes(bytes(rng.randrange(1, 32) for _ in range(2000)))
    (bad / "not-really.pdf").write_text("Minutes of the meeting, saved as text under a .pdf name\n")
    return root


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster of 2 CPUs for the whole session (`local_mode` no longer exists)."""
    ray = pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]'")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()


def document_count(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


def backfill(env: dict, source: Path, out: Path, *extra) -> dict:
    result = runner.invoke(app, ["backfill", str(source), "--out", str(out), "--json", *extra], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def rows_by_key(out: Path) -> dict[tuple, dict]:
    from pipeline.backfill import read_results

    return {(r["source"], r["position"]): r for r in read_results(out).to_pylist()}


@pytest.fixture(scope="module")
def local_results(tmp_path_factory, tiny_models, documents) -> Path:
    out = tmp_path_factory.mktemp("local") / "results"
    env = {"MINUTES_MODELS_DIR": str(tiny_models)}
    report = backfill(env, documents, out)
    assert report["engine"] == "local" and report["documents"] == document_count(documents) >= 205
    return out


def test_ray_and_local_backfills_give_the_same_rows(tmp_path, tiny_models, documents, local_results,
                                                    ray_cluster):
    report = backfill({"MINUTES_MODELS_DIR": str(tiny_models)}, documents, tmp_path / "ray",
                      "--engine", "ray", "--actors", "2")
    assert report["engine"] == "ray" and report["actors"] == 2
    assert report["documents"] == document_count(documents)
    local, distributed = rows_by_key(local_results), rows_by_key(tmp_path / "ray")
    assert local.keys() == distributed.keys()
    items = [k for k, r in local.items() if not r["error"]]
    assert len(items) >= 400 and report["items"] == len(items)
    flagged = [k for k in items if local[k]["labels"]]
    assert flagged and len(flagged) < len(items)  # the comparison covers both kinds of item
    for key in items:
        a, b = local[key], distributed[key]
        assert a["labels"] == b["labels"], key
        for label in LABELS:
            # Scores are stored rounded to 6 places (classify.aggregate): two fp32 scores less
            # than 1e-6 apart (batches padded to other lengths) can round one unit apart.
            assert abs(a[f"score_{label}"] - b[f"score_{label}"]) <= 1e-6 + 1e-12, (key, label)
        assert a["briefing"] == b["briefing"], key
        assert json.loads(a["evidence"]) == json.loads(b["evidence"]), key
        assert (a["classifier_version"], a["summariser_version"]) == (b["classifier_version"], b["summariser_version"])
        assert a["title"] and a["text"]
        compared = set(a) - {"evidence", *[f"score_{label}" for label in LABELS]}
        assert [c for c in compared if a[c] != b[c]] == [], key
    # Our own minutes' metadata, as the splitter reads it from each page's heading.
    ours = [local[k] for k in items if Path(k[0]).parent.name != documents.name]
    assert len(ours) >= 400
    assert all(r["committee"] in COMMITTEES and r["meeting_date"][:4] in Path(r["source"]).name for r in ours)
    assert all(local[k]["briefing"] for k in flagged)
    assert not any(local[k]["briefing"] for k in items if not local[k]["labels"])


def test_bad_inputs_are_rows_with_their_error(local_results):
    rows = rows_by_key(local_results)
    errors = {Path(source).name: r for (source, _), r in rows.items() if r["error"]}
    assert set(errors) == {"empty.txt", "binary.txt", "control-bytes.txt", "not-really.pdf"}
    assert "NUL" in errors["binary.txt"]["error"] and "not a PDF" in errors["not-really.pdf"]["error"]
    assert all(r["labels"] is None and r["text"] is None for r in errors.values())
    # Not UTF-8, but minutes: read as Windows-1252, with its words intact.
    windows = [r for (source, _), r in rows.items() if source.endswith("windows-1252.txt")]
    assert windows and not any(r["error"] for r in windows)
    assert any("Zoë Brontë’s" in r["text"] for r in windows)


def test_import_results_stores_each_item_once(tmp_path, local_results):
    env = {"MINUTES_DB": str(tmp_path / "minutes.db")}
    rows = [r for r in rows_by_key(local_results).values() if not r["error"]]
    first = runner.invoke(app, ["import-results", str(local_results), "--json"], env=env)
    assert first.exit_code == 0, first.output
    counts = json.loads(first.stdout)
    assert counts["items_new"] == len(rows) and counts["predictions_new"] == len(rows)
    assert counts["summaries_new"] == sum(1 for r in rows if r["briefing"]) > 0
    assert counts["errors"] == 4
    again = json.loads(runner.invoke(app, ["import-results", str(local_results), "--json"], env=env).stdout)
    assert again["items_new"] == again["predictions_new"] == again["summaries_new"] == 0
    assert again["documents_known"] == counts["documents_new"]
    db = store.connect(tmp_path / "minutes.db")
    assert store.count_items(db) == len(rows) == store.count_predictions(db)
    version = rows[0]["classifier_version"]
    stored = store.predictions_for(db, version)
    by_item = {(i["source"], k): i for k, i in enumerate(store.items(db))}
    assert len(stored) == len(rows)
    # What was stored is what the backfill wrote: one item's labels and briefing.
    flagged = next(r for r in rows if r["labels"])
    item = next(i for i in by_item.values() if i["source"] == flagged["source"] and i["title"] == flagged["title"])
    assert stored[item["id"]]["labels"] == flagged["labels"]
    assert store.latest_summaries(db, [item["id"]])[item["id"]]["briefing"] == flagged["briefing"]


def test_manifest_rows_name_their_own_problems(tmp_path, tiny_models, documents):
    files = sorted(documents.glob("larkmoor/*.txt"))[:3]
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,council\n" + "".join(f"{f},Larkmoor Borough Council\n" for f in files)
                        + "missing/minutes.txt,\nhttps://democracy.example.gov.uk/x.htm,\n", encoding="utf-8")
    backfill({"MINUTES_MODELS_DIR": str(tiny_models)}, manifest, tmp_path / "out")
    rows = rows_by_key(tmp_path / "out")
    errors = {Path(s).name: r["error"] for (s, _), r in rows.items() if r["error"]}
    assert errors == {"minutes.txt": "no such file or folder",
                      "x.htm": errors["x.htm"]} and "an address, not a path" in errors["x.htm"]
    assert {r["council"] for r in rows.values() if not r["error"]} == {"Larkmoor Borough Council"}
    lines = tmp_path / "list.jsonl"
    lines.write_text(json.dumps({"path": str(files[0])}) + "\n" + json.dumps(str(files[1])) + "\n{oops\n",
                     encoding="utf-8")
    backfill({"MINUTES_MODELS_DIR": str(tiny_models)}, lines, tmp_path / "out2")
    sources = {(Path(s).name, bool(r["error"])) for (s, _), r in rows_by_key(tmp_path / "out2").items()}
    assert {(files[0].name, False), (files[1].name, False), ("list.jsonl:3", True)} <= sources


@pytest.mark.parametrize("args, says", [
    (["nowhere"], "nowhere: no such folder or manifest"),
    (["OUT_WITH_FILES"], "already holds Parquet files"),
    (["--engine", "spark"], "--engine spark: must be local or ray"),
])
def test_backfill_refuses_bad_arguments_in_one_line(tmp_path, tiny_models, documents, local_results, args, says):
    source, out = str(documents), str(tmp_path / "out")
    if args == ["nowhere"]:
        source, args = str(tmp_path / "nowhere"), []
    elif args == ["OUT_WITH_FILES"]:
        out, args = str(local_results), []
    result = runner.invoke(app, ["backfill", source, "--out", out, *args],
                           env={"MINUTES_MODELS_DIR": str(tiny_models)})
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and says in result.output
    assert "Traceback" not in result.output


def test_import_results_of_a_folder_without_results_is_one_line(tmp_path):
    result = runner.invoke(app, ["import-results", str(tmp_path)], env={"MINUTES_DB": str(tmp_path / "m.db")})
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "no .parquet files" in result.output


def test_bench_backfill_row_times_both_engines_from_one_run(tiny_models, ray_cluster, tmp_path):
    from pipeline.bench import backfill_throughput
    from pipeline.config import Settings

    figures = backfill_throughput(Settings(models_dir=tiny_models), documents=12, actors=2)
    assert figures["documents"] == 12 and figures["items"] == 12  # one item a document
    assert figures["local_items_s"] > 0 and figures["ray_items_s"] > 0
    assert figures["ray_startup_s"] >= 0 and figures["ray_fixed_s"] > 0
    assert figures["same_labels"] is True


def test_a_model_folder_shipped_with_a_job_is_found_by_its_relative_path(tmp_path, monkeypatch):
    from pipeline.backfill import _on_this_machine, _shipped

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "classifier").mkdir(parents=True)
    named = _shipped((tmp_path / "models" / "classifier").resolve())
    assert named == f"{(tmp_path / 'models' / 'classifier').resolve()}|models/classifier"
    assert _on_this_machine(named) == (tmp_path / "models" / "classifier").resolve()  # shared storage
    # Unpacked somewhere else on a worker: the absolute path is not there, the relative one is.
    assert _on_this_machine("/elsewhere/models/classifier|models/classifier") == Path("models/classifier")
    assert _shipped(Path("/srv/shared/models/classifier")) == "/srv/shared/models/classifier"
