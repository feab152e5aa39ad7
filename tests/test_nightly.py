"""The overnight run: incremental, locked, and finished exactly once after a SIGKILL mid-stage."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from typer.testing import CliRunner

from pipeline import modelfolder, store
from pipeline.cli import app
from pipeline.nightly import RunLock

from .conftest import CORPUS, SAMPLES

runner = CliRunner()


def nightly_json(env, *extra):
    result = runner.invoke(app, ["nightly", "--source", str(SAMPLES), "--json", *extra], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_nightly_runs_every_stage_then_does_nothing_when_nothing_is_new(model_env, tmp_path):
    first = nightly_json(model_env)
    assert first["items_new"] == 28 and first["items_classified"] == 28
    assert first["items_summarised"] >= 1 and first["failed"] == []
    assert os.path.isfile(first["briefing"])
    second = runner.invoke(app, ["nightly", "--source", str(SAMPLES)], env=model_env)
    assert second.exit_code == 0
    assert "nothing new to classify or summarise" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    # The morning's briefing is not replaced by an empty one.
    kept = json.loads((tmp_path / "briefings" / "briefing.json").read_text())
    assert kept["items_read"] == 28 and kept["flagged"] >= 1
    # A changed document is processed once more, and only it.
    changed = tmp_path / "more"
    changed.mkdir()
    (changed / "item.txt").write_text("Agenda item\n\nStaffing\n\nMinutes:\n\nCaseloads had risen to "
                                      "27 per social worker and agency use remained high.\n")
    third = nightly_json(model_env, "--source", str(changed))
    assert third["items_new"] == 1 and third["items_classified"] == 1
    (changed / "item.txt").write_text("Agenda item\n\nStaffing\n\nMinutes:\n\nCaseloads had fallen to "
                                      "17 per social worker and agency use remained high.\n")
    fourth = nightly_json(model_env, "--source", str(changed))
    assert fourth["items_new"] == 1 and fourth["items_classified"] == 1
    listing = runner.invoke(app, ["runs", "--json"], env=model_env)
    runs = json.loads(listing.stdout)
    assert [r["status"] for r in runs] == ["ok"] * 4
    assert all(r["model_version"] for r in runs)


def test_failed_inputs_give_status_1_and_are_listed(model_env, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.txt").write_bytes(b"")
    (folder / "ok.txt").write_text("Agenda item\n\nWork Programme\n\nMinutes:\n\nThe Committee agreed "
                                   "its work programme for the rest of the year.\n")
    result = runner.invoke(app, ["nightly", "--source", str(folder), "--json"], env=model_env)
    assert result.exit_code == 1
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["items_new"] == 1
    assert [f["path"].rsplit("/", 1)[-1] for f in summary["failed"]] == ["empty.txt"]


def minutes_process(env, *args):
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_run_is_refused_while_one_holds_the_lock_and_a_stale_lock_is_cleared(model_env):
    with RunLock(model_env["MINUTES_DB"]):
        process = minutes_process(model_env, "nightly", "--source", str(SAMPLES))
        _, err = process.communicate(timeout=120)
    assert process.returncode == 75
    assert "locked" in err and "holds" in err
    # A killed run leaves its pid in the lock file but no lock: the next run clears it.
    with open(model_env["MINUTES_DB"] + ".lock", "w") as handle:
        handle.write("999999")
    result = runner.invoke(app, ["nightly", "--source", str(SAMPLES)], env=model_env)
    assert result.exit_code == 0, result.output
    assert "cleared a stale lock left by pid 999999" in result.stderr


def count(db_path, sql):
    db = sqlite3.connect(db_path, timeout=30)
    try:
        return db.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def kill_when(process, db_path, sql, at_least, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"run ended before it could be killed: {process.stderr.read()}")
        if count(db_path, sql) >= at_least:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the run never reached the stage to kill it in")


def test_killed_mid_classify_and_mid_summarise_the_next_run_finishes_exactly_once(model_env, tmp_path):
    sources = [str(SAMPLES)] + ([str(CORPUS / "dev")] if (CORPUS / "dev").is_dir() else [])
    args = ["nightly", "--json"] + [a for s in sources for a in ("--source", s)]
    slow = {**model_env, "MINUTES_STORE_BATCH": "2", "MINUTES_PAUSE_BETWEEN_BATCHES_S": "0.3"}
    db_path = model_env["MINUTES_DB"]

    kill_when(minutes_process(slow, *args), db_path, "SELECT COUNT(*) FROM predictions", 4)
    classified_before = count(db_path, "SELECT COUNT(*) FROM predictions")
    items = count(db_path, "SELECT COUNT(*) FROM items")
    assert 4 <= classified_before < items  # killed in the middle of classify

    kill_when(minutes_process(slow, *args), db_path, "SELECT COUNT(*) FROM summaries", 1)
    assert count(db_path, "SELECT COUNT(*) FROM predictions") == items
    flagged = count(db_path, "SELECT COUNT(*) FROM predictions WHERE labels != '[]'")
    assert count(db_path, "SELECT COUNT(*) FROM summaries") < flagged  # killed mid-summarise

    final = minutes_process(model_env, *args)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["items_new"] == 0 and summary["items_classified"] == 0
    db = store.connect(db_path)
    version = modelfolder.read_card(modelfolder.promoted_folder(model_env["MINUTES_MODELS_DIR"], "classifier"))["version"]
    # Every item classified once, every flagged item briefed once, across the three runs.
    assert store.count_predictions(db, version) == items == store.count_items(db)
    assert count(db_path, "SELECT COUNT(*) FROM summaries") == flagged
    assert count(db_path, "SELECT COUNT(DISTINCT item_id) FROM summaries") == flagged
    statuses = [r["status"] for r in store.runs(db)]
    assert statuses == ["ok", "interrupted", "interrupted"]
    # The briefing of the run that finished covers all the items the killed runs took in.
    briefing = json.loads((tmp_path / "briefings" / "briefing.json").read_text())
    assert briefing["items_read"] == items


def test_nightly_reads_everything_from_one_toml_config(model_env, tmp_path):
    """Sources (a folder and a ModernGov site), store, output folder, thresholds and the
    recipients' title all come from the config file."""
    from .fixtures.moderngov_site import Site, serve

    site = Site()
    server, url = serve(site)
    try:
        config = tmp_path / "minutes.toml"
        config.write_text(f"""
db = "store/night.db"
out_dir = "out"
recipients_title = "Director of Children's Services, Fernley"
request_delay_s = 0.0
request_timeout_s = 1.0

[thresholds]
workforce_concern = 0.999999   # in effect never flag workforce concerns

[[sources]]
kind = "path"
path = "{SAMPLES}"

[[sources]]
kind = "moderngov"
url = "{url}"
council = "Fernley Borough Council"
committees = ["Cabinet"]
""")
        env = {k: v for k, v in model_env.items() if k not in ("MINUTES_DB", "MINUTES_OUT_DIR")}
        result = runner.invoke(app, ["nightly", "--config", str(config), "--json"], env=env)
    finally:
        server.shutdown()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    # The samples' 28 items, and the site's two Cabinet agenda items; its printed minutes PDF is
    # byte for byte a sample already stored, so the content hash keeps it from being stored twice.
    assert summary["items_new"] == 28 + 2
    assert summary["briefing"] == str(tmp_path / "out" / "briefing.html")
    briefing = json.loads((tmp_path / "out" / "briefing.json").read_text())
    assert briefing["recipients"] == "Director of Children's Services, Fernley"
    assert briefing["counts"]["workforce_concern"] == 0
    db = store.connect(tmp_path / "store" / "night.db")
    assert any(i["council"] == "Fernley Borough Council" for i in store.items(db))


def test_a_bad_config_file_is_one_clear_error(model_env, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[thresholds]\nofsted = 0.5\n")
    result = runner.invoke(app, ["nightly", "--config", str(config)], env=model_env)
    assert result.exit_code == 2
    assert "bad.toml: unknown label(s) in [thresholds]: ofsted" in result.stderr


def test_items_ingested_during_a_nightly_run_are_briefed_once_by_the_next(models_dir, tmp_path, monkeypatch):
    """Issue 15, finding 3: an ingest that lands while a nightly run is classifying must not be
    covered by that run's briefing before it is classified; the next run briefs it, and no item
    is ever in two briefings."""
    import shutil

    from pipeline import nightly
    from pipeline.config import Settings, Source
    from pipeline.ingest import ingest_paths

    samples = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".html", ".txt", ".pdf", ".docx"))
    first_half, second_half = tmp_path / "a", tmp_path / "b"
    for folder, files in ((first_half, samples[::2]), (second_half, samples[1::2])):
        folder.mkdir()
        for path in files:
            shutil.copy(path, folder / path.name)
    db_path = tmp_path / "minutes.db"
    settings = Settings(db=db_path, models_dir=models_dir, sources=[Source(path=str(first_half))])

    # A second process's ingest, landing just after the run has read what it will classify.
    pending = store.items_without_predictions
    landed = []

    def pending_then_an_ingest_lands(db, version):
        rows = pending(db, version)
        if not landed:
            other = store.connect(db_path)
            landed.extend(ingest_paths(other, [second_half]).item_ids)
            other.close()
        return rows

    monkeypatch.setattr(nightly.store, "items_without_predictions", pending_then_an_ingest_lands)
    briefed = []
    for night in ("first", "second"):
        out = tmp_path / night
        result = nightly.run_nightly(settings.with_overrides(out_dir=out))
        data = json.loads((out / "briefing.json").read_text())
        briefed.append({e["id"] for group in data["groups"] for e in group["items"]}
                       | {e["id"] for e in data["also_read"]})
        assert data["items_read"] == len(briefed[-1])
    assert landed, "the concurrent ingest stored nothing"
    db = store.connect(db_path)
    current = {i["id"] for i in store.items(db)}
    assert not briefed[0] & set(landed)  # not classified in time for the first briefing
    assert briefed[1] == set(landed)     # so the second one shows them
    assert briefed[0] | briefed[1] == current and not briefed[0] & briefed[1]
    assert set(store.briefed_in(db, result.run_id)) == set(landed)
    # A third night with nothing new keeps the last briefing and briefs nobody again.
    third = nightly.run_nightly(settings.with_overrides(out_dir=tmp_path / "second"))
    assert store.briefed_in(db, third.run_id) == []
