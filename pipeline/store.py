"""The one embedded store (SQLite): schema, numbered migrations, and every query the stages need.

Stages never write SQL of their own; they call the functions here with plain dicts.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _script(db: sqlite3.Connection, sql: str) -> None:
    # executescript() would COMMIT on its own; statement by statement keeps the migration atomic.
    for statement in sql.split(";"):
        if statement.strip():
            db.execute(statement)


# Migrations are append-only: never edit one that has shipped, add the next.
def _m1_initial(db: sqlite3.Connection) -> None:
    _script(db,
        """
        CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL UNIQUE,       -- file path or page address
            content_hash TEXT NOT NULL,
            format TEXT NOT NULL,
            council TEXT, committee TEXT, meeting_date TEXT,
            fetched_at TEXT, ingested_at TEXT NOT NULL
        );
        CREATE INDEX documents_hash ON documents(content_hash);
        CREATE TABLE items (
            id INTEGER PRIMARY KEY,
            document_id INTEGER NOT NULL REFERENCES documents(id),
            position INTEGER NOT NULL,
            number TEXT, title TEXT, purpose TEXT, minutes TEXT, resolutions TEXT,
            text TEXT NOT NULL,
            council TEXT, committee TEXT, meeting_date TEXT,
            is_procedural INTEGER NOT NULL DEFAULT 0,
            -- 0 once a newer version of the document replaced this item, its predictions stay
            is_current INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL
        );
        CREATE INDEX items_document ON items(document_id);
        CREATE TABLE predictions (
            item_id INTEGER NOT NULL REFERENCES items(id),
            model_version TEXT NOT NULL,
            labels TEXT NOT NULL, scores TEXT NOT NULL, evidence TEXT NOT NULL,
            run_id INTEGER, created_at TEXT NOT NULL,
            PRIMARY KEY (item_id, model_version)
        );
        CREATE TABLE summaries (
            item_id INTEGER NOT NULL REFERENCES items(id),
            model_version TEXT NOT NULL,
            briefing TEXT NOT NULL, is_fallback INTEGER NOT NULL DEFAULT 0,
            run_id INTEGER, created_at TEXT NOT NULL,
            PRIMARY KEY (item_id, model_version)
        );
        CREATE TABLE labels (
            id INTEGER PRIMARY KEY,
            item_id INTEGER NOT NULL REFERENCES items(id),
            labels TEXT NOT NULL, evidence TEXT NOT NULL, briefing TEXT,
            annotator TEXT, source_file TEXT, row_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        );
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL, ended_at TEXT,
            status TEXT NOT NULL,              -- running, ok, failed-inputs, error
            model_version TEXT, counts TEXT, failed TEXT, briefing TEXT,
            item_high_water INTEGER            -- the largest item id when the run ended
        );
        """
    )


def _m2_fetch_state(db: sqlite3.Connection) -> None:
    _script(db,
        """
        CREATE TABLE fetched (
            url TEXT PRIMARY KEY, base_url TEXT NOT NULL,
            etag TEXT, last_modified TEXT, content_hash TEXT, fetched_at TEXT NOT NULL
        );
        CREATE TABLE raw_pages (
            url TEXT PRIMARY KEY, content BLOB NOT NULL, content_type TEXT, fetched_at TEXT NOT NULL
        );
        """
    )


def _m3_briefed(db: sqlite3.Connection) -> None:
    # Which nightly briefing first showed each item, so every classified item is briefed exactly
    # once whatever ingests run alongside a nightly (a high-water mark of item ids covered items
    # that arrived mid-run before they were classified, and they were never briefed).
    _script(db,
        """
        CREATE TABLE briefed (
            item_id INTEGER PRIMARY KEY REFERENCES items(id),
            run_id INTEGER NOT NULL REFERENCES runs(id)
        );
        INSERT INTO briefed (item_id, run_id)
            SELECT i.id, r.id FROM items i JOIN (
                SELECT id, item_high_water FROM runs WHERE status IN ('ok', 'failed-inputs')
                AND item_high_water IS NOT NULL ORDER BY id DESC LIMIT 1
            ) r ON i.id <= r.item_high_water
        """
    )


def _m_deliveries(db: sqlite3.Connection) -> None:
    # Each attempt to mail a run's briefing (the nightly send, and each `minutes send --run`),
    # so a failed send is on the record beside the run whose results stay stored.
    _script(db,
        """
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            status TEXT NOT NULL,              -- sent or failed
            reason TEXT,                       -- why it failed (null when sent)
            recipients TEXT NOT NULL,          -- JSON list of addresses
            subject TEXT,
            attempted_at TEXT NOT NULL
        );
        CREATE INDEX deliveries_run ON deliveries(run_id)
        """
    )


def _m_meetings_fetched(db: sqlite3.Connection) -> None:
    # Where each ModernGov meeting read through the web service stands: complete (its minutes
    # are in, never asked again) or asked again next run. Its GetMeeting XML is in raw_pages
    # (xml_url), its validators in fetched.
    _script(db,
        """
        CREATE TABLE meetings_fetched (
            base_url TEXT NOT NULL,
            meeting_id TEXT NOT NULL,
            xml_url TEXT NOT NULL,
            council TEXT, committee TEXT, meeting_date TEXT,
            is_complete INTEGER NOT NULL DEFAULT 0,
            xml_hash TEXT,                     -- the answer last read in full (null after a failure)
            items INTEGER NOT NULL DEFAULT 0,
            restricted_items INTEGER NOT NULL DEFAULT 0,
            times_asked INTEGER NOT NULL DEFAULT 0,
            first_asked_at TEXT NOT NULL,
            last_asked_at TEXT NOT NULL,
            PRIMARY KEY (base_url, meeting_id)
        )
        """
    )


MIGRATIONS = [_m1_initial, _m2_fetch_state, _m3_briefed, _m_deliveries, _m_meetings_fetched]
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """The store cannot be opened or used; the message says why and what to do."""


# Every connection waits this long for another process's write lock before giving up, so two
# commands on one store take turns instead of failing with "database is locked".
BUSY_TIMEOUT_S = 30.0


def error_for(path: Path | str, exc: sqlite3.Error) -> StoreError:
    """A SQLite error met anywhere (opening, or any later query) as one line saying what is wrong
    with the store and what to do about it."""
    message = str(exc)
    reason = message.lower()
    if "malformed" in reason or "corrupt" in reason:
        return StoreError(f"{path}: the store is damaged ({message}); `minutes check --full` lists "
                          "the damage; restore the file from a backup")
    if "not a database" in reason:
        return StoreError(f"{path}: not a minutes store ({message}); pass --db to use another file")
    if "readonly" in reason or "read-only" in reason:
        return StoreError(f"{path}: the store cannot be written ({message}); it, its folder and its "
                          "-wal and -shm files must be writable by this user")
    if "unable to open" in reason:
        return StoreError(f"{path}: cannot open the store ({message}); its folder must exist and be "
                          "writable, or pass --db to use another file")
    if "locked" in reason or "busy" in reason:
        return StoreError(f"{path}: another process kept the store locked for over "
                          f"{BUSY_TIMEOUT_S:.0f} s ({message}); try again when it has finished")
    return StoreError(f"{path}: store error ({message})")


def connect(path: Path | str) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the store."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the store's folder {path.parent} "
                         f"({exc.strerror or exc}); pass --db to use another file") from None
    db = None
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        _use_wal(db)
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")
        _migrate(db, path)
    except sqlite3.Error as exc:
        if db is not None:
            db.close()
        raise error_for(path, exc) from None
    except StoreError:
        db.close()
        raise
    return db


def _use_wal(db: sqlite3.Connection) -> None:
    """WAL, so readers and one writer work at once. Switching a new file to WAL takes an
    exclusive lock, and when two first runs try it together SQLite answers "database is locked"
    at once, without calling the busy handler: so wait here instead, up to the same timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _schema_version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the store up to SCHEMA_VERSION, all migrations in one transaction. The version is
    read again inside BEGIN IMMEDIATE: of two first runs on a new store, one migrates and the
    other waits for it, then finds nothing left to do. A current store takes no write lock, so
    a store that cannot be written can still be read."""
    version = _schema_version(db)
    if version < SCHEMA_VERSION:
        with transaction(db):
            version = _schema_version(db)
            for number in range(version, SCHEMA_VERSION):
                MIGRATIONS[number](db)
                db.execute(f"PRAGMA user_version={number + 1}")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: store schema v{version} is newer than this program (v{SCHEMA_VERSION}); "
            "upgrade minutes-pipeline"
        )


# Counted by `minutes check`: the tables a person recognises (what each stage made).
_COUNTED = {
    "documents": "SELECT COUNT(*) FROM documents",
    "items": "SELECT COUNT(*) FROM items WHERE is_current = 1",
    "predictions": "SELECT COUNT(*) FROM predictions",
    "summaries": "SELECT COUNT(*) FROM summaries",
    "labels": "SELECT COUNT(*) FROM labels",
    "runs": "SELECT COUNT(*) FROM runs",
}


def check(path: Path | str, full: bool = False) -> dict:
    """How sound the store at `path` is, without creating or migrating it: its schema version,
    its row counts, and SQLite's own check of every page (`quick_check`; `integrity_check`,
    slower, also compares every index with its table, when `full`). Raises StoreError only
    when there is no store to check."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no store here; pass --db to check another file")
    pragma = "integrity_check" if full else "quick_check"
    report = {"path": str(path), "schema_version": None, "program_schema_version": SCHEMA_VERSION,
              "check": pragma, "counts": {}, "problems": [], "sound": False}
    problems = report["problems"]
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        problems.append(str(exc))
        return report
    try:
        version = report["schema_version"] = _schema_version(db)
        # At most 20 lines: a badly damaged file can list every page.
        found = [row[0] for row in db.execute(f"PRAGMA {pragma}(20)")]
        if found != ["ok"]:
            problems += found
        if version == 0:
            problems.append("not a minutes store (it has no schema version)")
        elif version > SCHEMA_VERSION:
            problems.append(f"schema v{version} is newer than this program (v{SCHEMA_VERSION})")
        else:
            for name, sql in _COUNTED.items():
                try:
                    report["counts"][name] = db.execute(sql).fetchone()[0]
                except sqlite3.DatabaseError as exc:
                    problems.append(f"counting {name}: {exc}")
    except sqlite3.DatabaseError as exc:
        problems.append(str(exc))
    finally:
        db.close()
    report["sound"] = not problems
    return report


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """All or nothing: BEGIN IMMEDIATE so a second writer waits instead of failing half-way."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _loads(value):
    return json.loads(value) if value is not None else None


# ---------------------------------------------------------------- documents and items
def document_by_source(db, source: str):
    return db.execute("SELECT * FROM documents WHERE source = ?", (source,)).fetchone()


def document_with_hash(db, content_hash: str):
    return db.execute("SELECT * FROM documents WHERE content_hash = ?", (content_hash,)).fetchone()


def unchanged_document(db, source: str, content_hash: str):
    """The stored document that makes this content nothing new, or None: the same source with
    the same hash, or, for a source not seen before, the same content stored under another."""
    existing = document_by_source(db, source)
    if existing is not None:
        return existing if existing["content_hash"] == content_hash else None
    return document_with_hash(db, content_hash)


def save_document(db, document: dict, items: list[dict]) -> tuple[int, str, list[int]]:
    """Store a document and its items together. A changed document keeps its old items
    (and their predictions) marked not current. Returns (document id, outcome, the new item
    ids); the outcome is "new", "replaced", or "unchanged" when the store already held this
    content: decided inside the write transaction, so of two processes ingesting one file at
    once, the second finds the first's document instead of replacing it."""
    item_ids = []
    with transaction(db):
        same = unchanged_document(db, document["source"], document["content_hash"])
        if same is not None:
            return same["id"], "unchanged", []
        existing = document_by_source(db, document["source"])
        fields = ("content_hash", "format", "council", "committee", "meeting_date", "fetched_at")
        if existing:
            db.execute(
                "UPDATE documents SET content_hash=?, format=?, council=?, committee=?, "
                "meeting_date=?, fetched_at=?, ingested_at=? WHERE id=?",
                (*[document.get(f) for f in fields], now(), existing["id"]),
            )
            db.execute("UPDATE items SET is_current = 0 WHERE document_id = ?", (existing["id"],))
            document_id = existing["id"]
        else:
            cursor = db.execute(
                "INSERT INTO documents (source, content_hash, format, council, committee, "
                "meeting_date, fetched_at, ingested_at) VALUES (?,?,?,?,?,?,?,?)",
                (document["source"], *[document.get(f) for f in fields], now()),
            )
            document_id = cursor.lastrowid
        for position, item in enumerate(items):
            cursor = db.execute(
                "INSERT INTO items (document_id, position, number, title, purpose, minutes, "
                "resolutions, text, council, committee, meeting_date, is_procedural, created_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    document_id, position, item.get("number"), item.get("title"),
                    item.get("purpose"), item.get("minutes"), item.get("resolutions"),
                    item["text"], item.get("council") or document.get("council"),
                    item.get("committee") or document.get("committee"),
                    item.get("meeting_date") or document.get("meeting_date"),
                    int(bool(item.get("is_procedural"))), now(),
                ),
            )
            item_ids.append(cursor.lastrowid)
    return document_id, "replaced" if existing else "new", item_ids


_ITEM_COLUMNS = (
    "i.id, i.number, i.title, i.purpose, i.minutes, i.resolutions, i.text, i.council, "
    "i.committee, i.meeting_date AS date, i.is_procedural, i.is_current, i.created_at, "
    "d.source, d.format"
)


def _item(row) -> dict:
    item = dict(row)
    item["is_procedural"] = bool(item["is_procedural"])
    item["is_current"] = bool(item["is_current"])
    return item


def items(db, limit: int | None = None, current_only: bool = True) -> list[dict]:
    sql = f"SELECT {_ITEM_COLUMNS} FROM items i JOIN documents d ON d.id = i.document_id"
    if current_only:
        sql += " WHERE i.is_current = 1"
    sql += " ORDER BY i.id"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [_item(r) for r in db.execute(sql)]


def item(db, item_id: int) -> dict | None:
    row = db.execute(
        f"SELECT {_ITEM_COLUMNS} FROM items i JOIN documents d ON d.id = i.document_id "
        "WHERE i.id = ?",
        (item_id,),
    ).fetchone()
    return _item(row) if row else None


def items_by_ids(db, ids: Iterable[int]) -> list[dict]:
    ids = list(ids)
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    rows = db.execute(
        f"SELECT {_ITEM_COLUMNS} FROM items i JOIN documents d ON d.id = i.document_id "
        f"WHERE i.id IN ({marks}) ORDER BY i.id",
        ids,
    )
    return [_item(r) for r in rows]


def count_items(db) -> int:
    return db.execute("SELECT COUNT(*) FROM items WHERE is_current = 1").fetchone()[0]


def max_item_id(db) -> int:
    return db.execute("SELECT COALESCE(MAX(id), 0) FROM items").fetchone()[0]


def current_item_ids(db, document_id: int) -> list[int]:
    """A document's current items, in their order in the document (`minutes import-results`
    meets a document already stored and attaches results to its items)."""
    rows = db.execute("SELECT id FROM items WHERE document_id = ? AND is_current = 1 ORDER BY position",
                      (document_id,))
    return [r[0] for r in rows]


# ---------------------------------------------------------------- predictions
def items_without_predictions(db, model_version: str) -> list[dict]:
    rows = db.execute(
        f"SELECT {_ITEM_COLUMNS} FROM items i JOIN documents d ON d.id = i.document_id "
        "WHERE i.is_current = 1 AND NOT EXISTS (SELECT 1 FROM predictions p "
        "WHERE p.item_id = i.id AND p.model_version = ?) ORDER BY i.id",
        (model_version,),
    )
    return [_item(r) for r in rows]


def save_predictions(db, predictions: list[dict], model_version: str, run_id=None) -> int:
    """One batch in one transaction: a kill loses the batch, never half of it.
    INSERT OR IGNORE keeps a re-run from labelling an item twice."""
    stored = 0
    with transaction(db):
        for p in predictions:
            cursor = db.execute(
                "INSERT OR IGNORE INTO predictions (item_id, model_version, labels, scores, "
                "evidence, run_id, created_at) VALUES (?,?,?,?,?,?,?)",
                (
                    p["item_id"], model_version, json.dumps(p["labels"]),
                    json.dumps(p["scores"]), json.dumps(p["evidence"]), run_id, now(),
                ),
            )
            stored += cursor.rowcount
    return stored


def delete_predictions(db, item_ids: list[int], model_version: str) -> None:
    """For `classify --all`: the model's earlier predictions for these items are redone."""
    with transaction(db):
        db.executemany("DELETE FROM predictions WHERE item_id = ? AND model_version = ?",
                       [(i, model_version) for i in item_ids])


def latest_predictions(db, item_ids: Iterable[int] | None = None) -> dict[int, dict]:
    """The newest prediction for each item (whatever model made it)."""
    sql = (
        "SELECT p.* FROM predictions p WHERE p.created_at = (SELECT MAX(created_at) FROM "
        "predictions q WHERE q.item_id = p.item_id)"
    )
    params: list = []
    if item_ids is not None:
        ids = list(item_ids)
        if not ids:
            return {}
        sql += f" AND p.item_id IN ({','.join('?' * len(ids))})"
        params = ids
    result = {}
    for row in db.execute(sql + " ORDER BY p.rowid", params):
        result[row["item_id"]] = {
            "item_id": row["item_id"], "model_version": row["model_version"],
            "labels": _loads(row["labels"]), "scores": _loads(row["scores"]),
            "evidence": _loads(row["evidence"]), "run_id": row["run_id"],
            "created_at": row["created_at"],
        }
    return result


def predictions_for(db, model_version: str) -> dict[int, dict]:
    rows = db.execute("SELECT * FROM predictions WHERE model_version = ?", (model_version,))
    return {
        r["item_id"]: {
            "item_id": r["item_id"], "labels": _loads(r["labels"]), "scores": _loads(r["scores"]),
            "evidence": _loads(r["evidence"]), "run_id": r["run_id"],
        }
        for r in rows
    }


def count_predictions(db, model_version: str | None = None) -> int:
    if model_version:
        return db.execute(
            "SELECT COUNT(*) FROM predictions WHERE model_version = ?", (model_version,)
        ).fetchone()[0]
    return db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]


# ---------------------------------------------------------------- summaries
def flagged_items_without_summary(db, classifier_version: str, summariser_version: str) -> list:
    rows = db.execute(
        f"SELECT {_ITEM_COLUMNS}, p.labels AS labels, p.evidence AS evidence, p.scores AS scores "
        "FROM items i JOIN documents d ON d.id = i.document_id "
        "JOIN predictions p ON p.item_id = i.id AND p.model_version = ? "
        "WHERE i.is_current = 1 AND p.labels != '[]' AND NOT EXISTS (SELECT 1 FROM summaries s "
        "WHERE s.item_id = i.id AND s.model_version = ?) ORDER BY i.id",
        (classifier_version, summariser_version),
    )
    out = []
    for r in rows:
        item = _item(r)
        for key in ("labels", "evidence", "scores"):
            item[key] = _loads(item[key])
        out.append(item)
    return out


def save_summaries(db, summaries: list[dict], model_version: str, run_id=None) -> int:
    stored = 0
    with transaction(db):
        for s in summaries:
            cursor = db.execute(
                "INSERT OR IGNORE INTO summaries (item_id, model_version, briefing, is_fallback, "
                "run_id, created_at) VALUES (?,?,?,?,?,?)",
                (s["item_id"], model_version, s["briefing"], int(s["is_fallback"]), run_id, now()),
            )
            stored += cursor.rowcount
    return stored


def latest_summaries(db, item_ids: Iterable[int]) -> dict[int, dict]:
    ids = list(item_ids)
    if not ids:
        return {}
    rows = db.execute(
        "SELECT * FROM summaries s WHERE s.item_id IN (%s) ORDER BY s.created_at, s.rowid"
        % ",".join("?" * len(ids)),
        ids,
    )
    return {r["item_id"]: dict(r) for r in rows}


def count_summaries(db, model_version: str | None = None) -> int:
    if model_version:
        return db.execute(
            "SELECT COUNT(*) FROM summaries WHERE model_version = ?", (model_version,)
        ).fetchone()[0]
    return db.execute("SELECT COUNT(*) FROM summaries").fetchone()[0]


# ---------------------------------------------------------------- people's labels
def save_labels(db, rows: list[dict], source_file: str) -> int:
    """All rows in one transaction; a row already imported (same hash) is skipped."""
    added = 0
    with transaction(db):
        for row in rows:
            cursor = db.execute(
                "INSERT OR IGNORE INTO labels (item_id, labels, evidence, briefing, annotator, "
                "source_file, row_hash, created_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    row["item_id"], json.dumps(row["labels"]), json.dumps(row["evidence"]),
                    row.get("briefing"), row.get("annotator"), source_file, row["row_hash"], now(),
                ),
            )
            added += cursor.rowcount
    return added


def current_labels(db) -> list[dict]:
    """The latest label per item (later imports supersede earlier; all are kept)."""
    rows = db.execute(
        f"SELECT l.labels AS gold_labels, l.evidence AS gold_evidence, l.briefing AS gold_briefing,"
        f" l.annotator, l.created_at AS labelled_at, {_ITEM_COLUMNS} FROM labels l "
        "JOIN items i ON i.id = l.item_id JOIN documents d ON d.id = i.document_id "
        "WHERE l.id = (SELECT MAX(id) FROM labels m WHERE m.item_id = l.item_id) ORDER BY l.id"
    )
    out = []
    for r in rows:
        row = dict(r)
        out.append({
            "id": f"item-{row['id']}", "title": row["title"], "text": row["text"],
            "council": row["council"], "meeting": row["committee"], "purpose": row["purpose"],
            "labels": _loads(row["gold_labels"]),
            "evidence": _loads(row["gold_evidence"]), "briefing": row["gold_briefing"],
        })
    return out


def latest_labels(db) -> dict[int, dict]:
    """{item id: the latest person's label on it, with who gave it, when and from where}:
    the review desk's "reviewed" mark, the same latest row `current_labels` trains on."""
    rows = db.execute(
        "SELECT l.* FROM labels l WHERE l.id = (SELECT MAX(id) FROM labels m "
        "WHERE m.item_id = l.item_id)"
    )
    return {r["item_id"]: {"labels": _loads(r["labels"]), "evidence": _loads(r["evidence"]),
                           "briefing": r["briefing"], "annotator": r["annotator"],
                           "source_file": r["source_file"], "created_at": r["created_at"]}
            for r in rows}


def label_history(db, item_id: int) -> list[dict]:
    return [dict(r) for r in db.execute(
        "SELECT * FROM labels WHERE item_id = ? ORDER BY id", (item_id,))]


# ---------------------------------------------------------------- runs
def start_run(db, model_version: str | None) -> int:
    with transaction(db):
        return db.execute(
            "INSERT INTO runs (started_at, status, model_version) VALUES (?, 'running', ?)",
            (now(), model_version),
        ).lastrowid


def finish_run(db, run_id: int, status: str, counts: dict, failed: list, briefing: str | None,
               model_version: str | None = None, item_high_water: int | None = None,
               briefed_ids: Iterable[int] = ()):
    """Close a run; the items its briefing showed are recorded in the same transaction, so a
    run killed before this point leaves them to the next run's briefing."""
    with transaction(db):
        db.execute(
            "UPDATE runs SET ended_at=?, status=?, counts=?, failed=?, briefing=?, model_version=?, "
            "item_high_water=? WHERE id=?",
            (now(), status, json.dumps(counts), json.dumps(failed), briefing, model_version,
             item_high_water, run_id),
        )
        db.executemany("INSERT OR IGNORE INTO briefed (item_id, run_id) VALUES (?, ?)",
                       [(item_id, run_id) for item_id in briefed_ids])


def save_delivery(db, run_id: int, status: str, recipients: list[str], subject: str | None,
                  reason: str | None = None) -> dict:
    """Record one attempt to mail a run's briefing; returns it as `delivery_of` would."""
    attempted_at = now()
    with transaction(db):
        db.execute(
            "INSERT INTO deliveries (run_id, status, reason, recipients, subject, attempted_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, status, reason, json.dumps(recipients), subject, attempted_at),
        )
    return {"status": status, "reason": reason, "recipients": recipients, "subject": subject,
            "attempted_at": attempted_at}


def deliveries_of(db, run_id: int) -> list[dict]:
    """Every attempt to mail a run's briefing, oldest first."""
    out = []
    for r in db.execute("SELECT * FROM deliveries WHERE run_id = ? ORDER BY id", (run_id,)):
        row = dict(r)
        out.append({"status": row["status"], "reason": row["reason"],
                    "recipients": json.loads(row["recipients"]), "subject": row["subject"],
                    "attempted_at": row["attempted_at"]})
    return out


def run(db, run_id: int) -> dict | None:
    row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    return dict(row) if row else None


def mark_interrupted_runs(db) -> int:
    """Runs left 'running' by a killed process (called only while holding the run lock)."""
    with transaction(db):
        return db.execute(
            "UPDATE runs SET status='interrupted', ended_at=? WHERE status='running'", (now(),)
        ).rowcount


def runs(db, limit: int = 20) -> list[dict]:
    rows = db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
    out = []
    for r in rows:
        run = dict(r)
        run["counts"] = _loads(run["counts"]) or {}
        run["failed"] = _loads(run["failed"]) or []
        # The last attempt to mail its briefing (null: none was made).
        run["delivery"] = (deliveries_of(db, run["id"]) or [None])[-1]
        out.append(run)
    return out


def last_successful_run(db) -> dict | None:
    row = db.execute(
        "SELECT * FROM runs WHERE status IN ('ok', 'failed-inputs') ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return dict(row) if row else None


def items_since(db, since_date: str | None = None, run_id: int | None = None) -> list[dict]:
    """Current items for `minutes brief`: ingested since a date, or classified in one run."""
    sql = f"SELECT {_ITEM_COLUMNS} FROM items i JOIN documents d ON d.id = i.document_id WHERE i.is_current = 1"
    params: list = []
    if since_date:
        sql += " AND (COALESCE(i.meeting_date, substr(i.created_at, 1, 10)) >= ?)"
        params.append(since_date)
    if run_id is not None:
        sql += " AND i.id IN (SELECT item_id FROM predictions WHERE run_id = ?)"
        params.append(run_id)
    return [_item(r) for r in db.execute(sql + " ORDER BY i.id", params)]


def items_to_brief(db, classifier_version: str) -> list[dict]:
    """Current items no nightly briefing has shown yet that are ready to show: classified by
    this model, and summarised when flagged. An item ingested or classified while a run was
    working waits for the next run instead of being passed over."""
    sql = (
        f"SELECT {_ITEM_COLUMNS} FROM items i JOIN documents d ON d.id = i.document_id "
        "JOIN predictions p ON p.item_id = i.id AND p.model_version = ? "
        "WHERE i.is_current = 1 AND NOT EXISTS (SELECT 1 FROM briefed b WHERE b.item_id = i.id) "
        "AND (p.labels = '[]' OR EXISTS (SELECT 1 FROM summaries s WHERE s.item_id = i.id)) "
        "ORDER BY i.id"
    )
    return [_item(r) for r in db.execute(sql, (classifier_version,))]


def last_run_with_briefing(db, before_run_id: int) -> int | None:
    """The latest run before this one whose briefing showed items of its own."""
    row = db.execute("SELECT MAX(run_id) FROM briefed WHERE run_id < ?", (before_run_id,)).fetchone()
    return row[0] if row else None


def briefed_in(db, run_id: int) -> list[int]:
    return [r[0] for r in db.execute("SELECT item_id FROM briefed WHERE run_id = ? ORDER BY item_id",
                                     (run_id,))]


# ---------------------------------------------------------------- fetch state
def fetched(db, url: str):
    return db.execute("SELECT * FROM fetched WHERE url = ?", (url,)).fetchone()


def save_fetched(db, url: str, base_url: str, etag, last_modified, content_hash,
                 content: bytes | None = None, content_type: str | None = None) -> None:
    with transaction(db):
        db.execute(
            "INSERT OR REPLACE INTO fetched (url, base_url, etag, last_modified, content_hash, "
            "fetched_at) VALUES (?,?,?,?,?,?)",
            (url, base_url, etag, last_modified, content_hash, now()),
        )
        if content is not None:
            db.execute(
                "INSERT OR REPLACE INTO raw_pages (url, content, content_type, fetched_at) "
                "VALUES (?,?,?,?)",
                (url, content, content_type, now()),
            )


def raw_page(db, url: str):
    """The stored copy of a fetched page, document or web-service answer (content, content_type)."""
    return db.execute("SELECT * FROM raw_pages WHERE url = ?", (url,)).fetchone()


def meeting_fetch_state(db, base_url: str, meeting_id: str):
    return db.execute("SELECT * FROM meetings_fetched WHERE base_url = ? AND meeting_id = ?",
                      (base_url, meeting_id)).fetchone()


def meetings_fetched(db, base_url: str | None = None) -> list[dict]:
    sql = "SELECT * FROM meetings_fetched" + (" WHERE base_url = ?" if base_url else "") + \
        " ORDER BY base_url, meeting_date, meeting_id"
    return [dict(r) for r in db.execute(sql, (base_url,) if base_url else ())]


def save_meeting_fetch_state(db, state: dict) -> None:
    """Record that a meeting was just asked for, and where it stands (times_asked counts up)."""
    asked_at = now()
    with transaction(db):
        db.execute(
            "INSERT INTO meetings_fetched (base_url, meeting_id, xml_url, council, committee, "
            "meeting_date, is_complete, xml_hash, items, restricted_items, times_asked, "
            "first_asked_at, last_asked_at) VALUES (?,?,?,?,?,?,?,?,?,?,1,?,?) "
            "ON CONFLICT (base_url, meeting_id) DO UPDATE SET xml_url=excluded.xml_url, "
            "council=excluded.council, committee=excluded.committee, "
            "meeting_date=excluded.meeting_date, is_complete=excluded.is_complete, "
            "xml_hash=excluded.xml_hash, items=excluded.items, "
            "restricted_items=excluded.restricted_items, times_asked=times_asked + 1, "
            "last_asked_at=excluded.last_asked_at",
            (state["base_url"], state["meeting_id"], state["xml_url"], state.get("council"),
             state.get("committee"), state.get("meeting_date"), int(bool(state["is_complete"])),
             state.get("xml_hash"), state.get("items", 0), state.get("restricted_items", 0),
             asked_at, asked_at),
        )
