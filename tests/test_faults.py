"""Issue 15 (parts 4-6): wrong settings, a damaged or unusable store, two processes on one store,
and the program's own crashes. Each is one line naming the problem and a distinct exit status,
never a traceback or silently wrong predictions."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import threading

import pytest
from typer.testing import CliRunner

from pipeline import ingest, store
from pipeline.cli import app
from pipeline.config import Settings
from pipeline.ingest import ingest_paths

from .conftest import SAMPLES

runner = CliRunner()
SAMPLE_DOCUMENTS, SAMPLE_ITEMS = 13, 28


def one_line_error(result, *words, code=2):
    """The command ended with `code`, printing exactly one line that contains every word."""
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, (SystemExit, type(None))), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def write_config(tmp_path, text: str | bytes):
    path = tmp_path / "minutes.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- settings (part 4 and 5)
def test_every_setting_has_a_rule():
    from pipeline.config import RULES

    tables = {"sources", "thresholds", "delivery"}  # checked by their own code
    assert {f.name for f in dataclasses.fields(Settings)} - tables == set(RULES)


def test_default_settings_pass_their_own_rules():
    from pipeline.config import check_settings

    check_settings(Settings())


@pytest.mark.parametrize("toml, key", [
    ('batch_size = "thirty-two"', "batch_size"),
    ("batch_size = 0", "batch_size"),
    ("batch_size = 32.5", "batch_size"),
    ("batch_size = true", "batch_size"),
    ("db = 42", "db"),
    ("thresholds = 0.5", "thresholds"),
    ("[thresholds]\nintervention_notice = 1.5", "intervention_notice"),
    ('[thresholds]\nintervention_notice = "high"', "intervention_notice"),
    ('quantize = "maybe"', "quantize"),
    ('device = "gpu"', "device"),
    ("max_passage_tokens = 1000", "max_passage_tokens"),
    ("parse_budget_s = -1", "parse_budget_s"),
    ("max_file_mb = 0", "max_file_mb"),
    ("request_timeout_s = 0", "request_timeout_s"),
    ("threads = 0", "threads"),
    ("max_pdf_pages = 0", "max_pdf_pages"),
    ('sources = "inbox"', "sources"),
    ("[[sources]]\npath = 42", "path"),
])
def test_a_wrong_setting_in_the_config_file_is_one_line_naming_it(env, tmp_path, toml, key):
    config = write_config(tmp_path, toml)
    result = runner.invoke(app, ["items", "--config", str(config)], env=env)
    one_line_error(result, key, str(config), "must be")


def test_a_config_file_that_is_not_utf8_is_one_line(env, tmp_path):
    config = write_config(tmp_path, b'recipients_title = "Director \xff\xfe"\n')
    result = runner.invoke(app, ["items", "--config", str(config)], env=env)
    one_line_error(result, str(config), "UTF-8")


@pytest.mark.parametrize("name, value", [
    ("MINUTES_BATCH_SIZE", "abc"),
    ("MINUTES_BATCH_SIZE", "-5"),
    ("MINUTES_QUANTIZE", "maybe"),
    ("MINUTES_REQUEST_DELAY_S", "soon"),
    ("MINUTES_DEVICE", "cuda:x"),
])
def test_a_wrong_setting_in_the_environment_is_one_line_naming_it(env, name, value):
    result = runner.invoke(app, ["items"], env={**env, name: value})
    one_line_error(result, name, value)


@pytest.mark.parametrize("value, expected", [
    ("1", True), ("yes", True), ("TRUE", True), ("0", False), ("no", False), ("false", False),
])
def test_booleans_from_the_environment(env, value, expected):
    from pipeline.config import load_settings

    assert load_settings(env={"MINUTES_QUANTIZE": value}).quantize is expected


def test_a_wrong_value_from_a_flag_is_one_line_naming_it(env, tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text("")
    result = runner.invoke(app, ["models", "promote", "v1", "--gold", str(gold), "--margin", "nan"], env=env)
    one_line_error(result, "promote_margin")


@pytest.mark.parametrize("toml, key", [("batch_size = -5", "batch_size"), ("store_batch = 0", "store_batch")])
def test_classify_refuses_a_bad_batch_size_instead_of_storing_wrong_predictions(model_env, tmp_path, toml, key):
    # batch_size = -5 used to store all-zero scores and no labels for every item, exit 0;
    # store_batch = 0 was a traceback.
    assert runner.invoke(app, ["ingest", str(SAMPLES)], env=model_env).exit_code == 0
    config = write_config(tmp_path, toml)
    result = runner.invoke(app, ["classify", "--config", str(config)], env=model_env)
    one_line_error(result, key)
    assert store.count_predictions(store.connect(model_env["MINUTES_DB"])) == 0


# ---------------------------------------------------------------- the store (part 5)
def ingested_store(path):
    db = store.connect(path)
    report = ingest_paths(db, [SAMPLES])
    assert report.documents_new == SAMPLE_DOCUMENTS and not report.failed
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path


@pytest.fixture()
def corrupted_env(env, tmp_path):
    """A store whose first two pages (header, schema) are sound and every later page is garbage:
    it opens, and its queries raise `database disk image is malformed`."""
    path = ingested_store(tmp_path / "minutes.db")
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    data[2 * page:] = b"\xab" * (len(data) - 2 * page)
    path.write_bytes(bytes(data))
    return env


@pytest.mark.parametrize("command", [
    ["items"], ["brief"], ["label", "export"], ["runs"], ["show", "1"],
    ["nightly", "--source", str(SAMPLES)], ["ingest", str(SAMPLES)],
])
def test_a_corrupted_store_is_one_line_from_every_command(corrupted_env, command):
    result = runner.invoke(app, command, env=corrupted_env)
    one_line_error(result, "malformed", corrupted_env["MINUTES_DB"], "minutes check")


def test_check_says_a_corrupted_store_is_not_sound(corrupted_env):
    result = runner.invoke(app, ["check", "--json"], env=corrupted_env)
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    assert report["sound"] is False and report["problems"]
    text = runner.invoke(app, ["check"], env=corrupted_env)
    assert text.exit_code == 2 and "not sound" in text.output and "Traceback" not in text.output


def test_check_reports_a_sound_store(env, tmp_path):
    ingested_store(tmp_path / "minutes.db")
    for extra in ([], ["--full"]):
        result = runner.invoke(app, ["check", "--json", *extra], env=env)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["sound"] is True and report["problems"] == []
        assert report["schema_version"] == store.SCHEMA_VERSION
        assert report["counts"]["documents"] == SAMPLE_DOCUMENTS
        assert report["counts"]["items"] == SAMPLE_ITEMS
    text = runner.invoke(app, ["check"], env=env)
    assert text.exit_code == 0 and ": sound (quick_check)" in text.output


def test_check_does_not_create_a_missing_store(env, tmp_path):
    result = runner.invoke(app, ["check"], env=env)
    one_line_error(result, "no store")
    assert not (tmp_path / "minutes.db").exists()


def test_a_store_path_whose_folder_cannot_be_created_is_one_line(env, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    result = runner.invoke(app, ["items"], env={**env, "MINUTES_DB": str(tmp_path / "a-file" / "minutes.db")})
    one_line_error(result, "a-file")


def test_a_store_in_a_folder_that_cannot_be_written_is_one_line(env, tmp_path):
    folder = tmp_path / "locked-away"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        result = runner.invoke(app, ["items"], env={**env, "MINUTES_DB": str(folder / "minutes.db")})
        one_line_error(result, "locked-away")
    finally:
        folder.chmod(0o755)


def test_a_read_only_store_file_is_one_line(env, tmp_path):
    path = ingested_store(tmp_path / "minutes.db")
    path.chmod(0o444)
    try:
        if os.access(path, os.W_OK):
            pytest.skip("running as root: chmod 0444 does not stop writes "
                        "(test_a_store_that_refuses_writes_is_one_line covers it)")
        extra = tmp_path / "extra"
        extra.mkdir()
        (extra / "item.txt").write_text("Agenda item\n\nStaffing\n\nMinutes:\n\nCaseloads had risen to "
                                        "27 per social worker and agency use remained high.\n")
        result = runner.invoke(app, ["ingest", str(extra)], env=env)
        one_line_error(result, "readonly")
    finally:
        path.chmod(0o644)


def test_a_store_that_refuses_writes_is_one_line(env, tmp_path, monkeypatch):
    # Root ignores file modes, so make SQLite itself refuse: the same `attempt to write a
    # readonly database` a read-only file gives.
    ingested_store(tmp_path / "minutes.db")
    real_connect = store.connect

    def read_only_connect(path):
        db = real_connect(path)
        db.execute("PRAGMA query_only=ON")
        return db

    monkeypatch.setattr(store, "connect", read_only_connect)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "item.txt").write_text("Agenda item\n\nStaffing\n\nMinutes:\n\nCaseloads had risen to "
                                    "27 per social worker and agency use remained high.\n")
    result = runner.invoke(app, ["ingest", str(extra)], env=env)
    one_line_error(result, "readonly", env["MINUTES_DB"])


def test_a_lock_file_that_cannot_be_opened_is_one_line(env, tmp_path):
    (tmp_path / "minutes.db.lock").mkdir()
    result = runner.invoke(app, ["nightly", "--source", str(SAMPLES)], env=env)
    one_line_error(result, "minutes.db.lock")


# ---------------------------------------------------------------- two processes, one store (part 6)
def test_two_ingests_of_one_document_at_once_store_it_once(tmp_path, monkeypatch):
    # Both pass the early "have we got it?" check before either writes: the second must see
    # the first's document inside its own write transaction, not replace it.
    path = tmp_path / "minutes.db"
    store.connect(path).close()
    data = (SAMPLES / "eastfield-early-help.txt").read_bytes()
    both_checked = threading.Barrier(2, timeout=30)
    real_save = store.save_document

    def save_after_both_checked(db, document, items):
        both_checked.wait()
        return real_save(db, document, items)

    monkeypatch.setattr(store, "save_document", save_after_both_checked)
    reports = {}

    def ingest_once(name):
        db = store.connect(path)
        reports[name] = ingest.ingest_bytes(db, "/minutes/eastfield.txt", data)
        db.close()

    threads = [threading.Thread(target=ingest_once, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted((r.documents_new, r.documents_replaced, r.unchanged) for r in reports.values()) == [
        (0, 0, 1), (1, 0, 0)]
    db = store.connect(path)
    assert db.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM items WHERE is_current = 0").fetchone()[0] == 0


def minutes_process(env, *args):
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def current_item_ids(db_path) -> list[int]:
    db = store.connect(db_path)
    ids = [r[0] for r in db.execute("SELECT id FROM items WHERE is_current = 1 ORDER BY id")]
    db.close()
    return ids


def test_two_first_ingests_at_once_on_a_new_store(env):
    # Both race the migration of a new store, then the same 13 documents.
    processes = [minutes_process(env, "ingest", str(SAMPLES), "--json") for _ in range(2)]
    reports = []
    for process in processes:
        output, errors = process.communicate(timeout=180)
        assert process.returncode == 0, errors
        reports.append(json.loads(output.strip().splitlines()[-1]))
    assert all(r["documents_replaced"] == 0 for r in reports), reports
    assert sum(r["documents_new"] for r in reports) == SAMPLE_DOCUMENTS
    assert all(r["documents_new"] + r["unchanged"] == SAMPLE_DOCUMENTS for r in reports)
    db = store.connect(env["MINUTES_DB"])
    assert db.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == SAMPLE_DOCUMENTS
    assert db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == SAMPLE_ITEMS  # no churned ids
    db.close()
    ids = current_item_ids(env["MINUTES_DB"])
    third = runner.invoke(app, ["ingest", str(SAMPLES), "--json"], env=env)
    assert json.loads(third.stdout)["unchanged"] == SAMPLE_DOCUMENTS
    assert current_item_ids(env["MINUTES_DB"]) == ids


def test_first_opens_at_once_all_see_one_migrated_store(tmp_path):
    for attempt in range(5):
        path = tmp_path / f"new-{attempt}.db"
        all_ready = threading.Barrier(4, timeout=30)
        errors: list[Exception] = []

        def open_new(path=path, all_ready=all_ready, errors=errors):
            all_ready.wait()
            try:
                store.connect(path).close()
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=open_new) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()


def test_every_connection_waits_for_a_busy_store(tmp_path):
    db = store.connect(tmp_path / "minutes.db")
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 30_000


# ---------------------------------------------------------------- the program's own crash
def test_an_internal_error_exits_70_with_one_line(env, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(store, "items", broken)
    result = runner.invoke(app, ["items"], env=env)
    line = one_line_error(result, code=70)
    assert line == "minutes: internal error (RuntimeError: boom); MINUTES_DEBUG=1 shows the traceback"
    debug = runner.invoke(app, ["items"], env={**env, "MINUTES_DEBUG": "1"})
    assert debug.exit_code == 70
    assert "Traceback" in debug.output and "RuntimeError: boom" in debug.output


def test_an_empty_gold_file_is_one_line_not_an_internal_error(env, tmp_path, models_dir):
    gold = tmp_path / "empty.gold.jsonl"
    gold.write_text("\n")
    env["MINUTES_MODELS_DIR"] = str(models_dir)
    for command in (["evaluate", "--gold", str(gold)],
                    ["models", "promote", "no-such-version", "--gold", str(gold)]):
        result = runner.invoke(app, command, env=env)
        assert result.exit_code == 2, (command, result.output)
        assert "no gold items" in result.stderr or "no-such-version" in result.stderr
        assert "Traceback" not in result.output and "internal error" not in result.output
