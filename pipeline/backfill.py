"""A backfill: many documents (a folder, or a manifest of paths) -> one Parquet row per item with
its labels, scores, evidence and briefing, on this machine or on a Ray cluster; and its import.

Both engines run the same stage code as the nightly run: `ingest.parse_source` parses, the stage
objects of `pipeline.stages` classify and summarise. The store is touched only by `import_results`,
which loads the Parquet exactly once, so a backfill can run anywhere and be imported later.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline import modelfolder, store
from pipeline.config import LABELS, DataError, Settings

# Documents per parse batch, and items per model batch (the model's own batch_size then sorts
# each model batch's passages by length).
PARSE_BATCH = 8
ITEM_BATCH = 64
# Ray's logical CPUs for the light tasks (parse, write) beside the actors; the actors share the
# rest, at most one each (one torch thread each). Without this a pool as large as the cluster
# would hold every CPU, the parse tasks feeding it could never be scheduled, and the job waits.
LIGHT_TASK_CPUS = 0.25
MANIFEST_SUFFIXES = {".csv", ".jsonl"}


class BackfillError(DataError):
    """A backfill cannot start (its input, output folder or engine): the message says which and why.
    A DataError, so the command line reports it as one line with exit 2 like any other."""


def result_schema():
    """The Parquet columns, fixed: every file of a run (a Ray block of nothing but bad inputs
    too) has the same types, so the folder reads as one table."""
    import pyarrow as pa

    return pa.schema([
        ("source", pa.string()), ("content_hash", pa.string()), ("format", pa.string()),
        ("council", pa.string()), ("committee", pa.string()), ("meeting_date", pa.string()),
        ("position", pa.int32()), ("number", pa.string()), ("title", pa.string()),
        ("purpose", pa.string()), ("minutes", pa.string()), ("resolutions", pa.string()),
        ("text", pa.string()), ("is_procedural", pa.bool_()),
        ("labels", pa.list_(pa.string())),
        *[(f"score_{label}", pa.float64()) for label in LABELS],
        ("evidence", pa.string()),  # JSON: {label: [sentence, ...]}
        ("briefing", pa.string()), ("is_fallback", pa.bool_()),
        ("classifier_version", pa.string()), ("summariser_version", pa.string()),
        ("error", pa.string()),
    ])


def _parsed_schema():
    """Columns between parse and the models: the result's, less what the models add."""
    import pyarrow as pa

    added = {"labels", "evidence", "briefing", "is_fallback", "classifier_version", "summariser_version",
             *[f"score_{label}" for label in LABELS]}
    return pa.schema([f for f in result_schema() if f.name not in added])


def _table(rows: list[dict], schema):
    import pyarrow as pa

    return pa.Table.from_pylist([{f.name: row.get(f.name) for f in schema} for row in rows], schema=schema)


# ---------------------------------------------------------------- inputs
def read_inputs(source: Path, council: str | None = None) -> tuple[list[dict], list[dict]]:
    """A folder (read as `minutes ingest` reads one) or a manifest (.csv with a `path` column,
    or .jsonl of {"path", "council"?} objects or plain strings) -> ([{"path", "council"}],
    [error rows for what cannot be a document: a missing file, a manifest row without a path]).
    A manifest's relative paths are read from the manifest's folder."""
    from pipeline.ingest import expand_paths

    source = Path(source)
    if source.is_file() and source.suffix.lower() in MANIFEST_SUFFIXES:
        entries, problems = _manifest(source)
    elif source.is_dir():
        entries, problems = [{"path": str(source)}], []
    elif source.exists():
        raise BackfillError(f"{source}: not a folder or a manifest (a .csv or .jsonl list of paths)")
    else:
        raise BackfillError(f"{source}: no such folder or manifest")
    inputs: list[dict] = []
    errors = [_error_row(p["path"], p["error"]) for p in problems]
    for entry in entries:
        files, missing = expand_paths([Path(entry["path"])])
        errors += [_error_row(m["path"], m["error"]) for m in missing]
        inputs += [{"path": str(f), "council": entry.get("council") or council} for f in files]
    return inputs, errors


def _manifest(path: Path) -> tuple[list[dict], list[dict]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BackfillError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                            f"{exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise BackfillError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    base = path.resolve().parent
    entries, problems = [], []

    def add(where: str, value, council=None) -> None:
        if not isinstance(value, str) or not value.strip():
            problems.append({"path": where, "error": "manifest row without a path"})
        elif "://" in value:
            problems.append({"path": value, "error": "an address, not a path: backfill reads files "
                             "(fetch pages first with `minutes fetch`, or list the saved files)"})
        else:
            file = Path(value.strip())
            entries.append({"path": str(file if file.is_absolute() else base / file),
                            "council": council if isinstance(council, str) else None})

    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise BackfillError(f"{path}: a CSV manifest needs a header row with a `path` column "
                                "(and optionally `council`)")
        for number, row in enumerate(reader, 2):
            add(f"{path}:{number}", row.get("path"), row.get("council"))
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append({"path": f"{path}:{number}", "error": f"not JSON ({exc.msg})"})
                continue
            if isinstance(row, dict):
                add(f"{path}:{number}", row.get("path"), row.get("council"))
            else:
                add(f"{path}:{number}", row)
    return entries, problems


def _error_row(source: str, error: str) -> dict:
    return {"source": source, "error": error}


# ---------------------------------------------------------------- the stages over rows
def parse_inputs(inputs: list[dict], limits) -> list[dict]:
    """[{"path", "council"?}] -> one row per item (the store's item fields and its document's),
    or one error row for a document that cannot be read or parsed."""
    from pipeline.ingest import InputError, _source, parse_source

    rows: list[dict] = []
    limit = int(limits.max_file_mb * 1024 * 1024)
    for entry in inputs:
        path = Path(entry["path"])
        try:
            with open(path, "rb") as handle:
                data = handle.read(limit + 1)  # one byte past the limit tells a file too large
            if len(data) > limit:
                raise InputError(f"file too large (over {limits.max_file_mb:g} MB; set max_file_mb to raise it)")
            # Stored under the name `minutes ingest` gives the file, so an import meets the same document.
            document, items = parse_source(_source(path), data, {"council": entry.get("council")}, limits,
                                           name=str(path))
        except (InputError, OSError) as exc:
            reason = str(exc) if isinstance(exc, InputError) else f"cannot read ({exc.strerror or exc})"
            rows.append(_error_row(str(path), reason))
            continue
        for position, item in enumerate(items):
            rows.append({
                **document, "position": position,
                **{k: item.get(k) for k in ("number", "title", "purpose", "minutes", "resolutions", "text")},
                # The item's own committee, council and date, as save_document keeps them.
                **{k: item.get(k) or document[k] for k in ("council", "committee", "meeting_date")},
                "is_procedural": bool(item.get("is_procedural")), "error": None,
            })
    return rows


class ItemStages:
    """Classify, then brief the flagged, a batch of item rows; the models load once, in
    __init__ (a Ray actor's, or this process's). Error rows pass through as they are."""

    def __init__(self, settings: Settings, classifier_folder: str, summariser_folder: str):
        from pipeline.stages import Classifier, Summariser

        self.classifier = Classifier(_on_this_machine(classifier_folder), settings)
        self.summariser = Summariser(_on_this_machine(summariser_folder), settings)
        # Loaded here, not on the first batch: an actor is ready (or fails) before work reaches it.
        _ = self.classifier.loaded, self.summariser.loaded

    def rows(self, rows: list[dict]) -> list[dict]:
        items = [(k, r) for k, r in enumerate(rows) if not r.get("error")]
        records = [{"id": k, "title": r["title"], "text": r["text"], "committee": r["committee"],
                    "purpose": r["purpose"], "resolutions": r["resolutions"],
                    "is_procedural": r["is_procedural"]} for k, r in items]
        predictions = {p["id"]: p for p in self.classifier(records)}
        flagged = [{**r, "evidence": predictions[r["id"]]["evidence"]} for r in records
                   if predictions[r["id"]]["labels"]]
        briefs = {b["id"]: b for b in self.summariser(flagged)}
        out = [dict(row) for row in rows]
        for k, _ in items:
            p = predictions[k]
            out[k].update({
                "labels": p["labels"], **{f"score_{label}": p["scores"][label] for label in LABELS},
                "evidence": json.dumps(p["evidence"], ensure_ascii=False),
                "briefing": briefs[k]["briefing"] if k in briefs else None,
                "is_fallback": briefs[k]["is_fallback"] if k in briefs else None,
                "classifier_version": self.classifier.version, "summariser_version": self.summariser.version,
            })
        return out

    def __call__(self, batch):
        """A Ray batch (a pyarrow Table) -> a Table of result rows."""
        return _table(self.rows(batch.to_pylist()), result_schema())


def _on_this_machine(folder: str) -> Path:
    """A model folder as the driver named it ("ABSOLUTE|RELATIVE" when it lay under the
    driver's working folder): the absolute path where it exists here (shared storage, one
    machine), else the relative one, from this worker's working folder (a job shipped with a
    runtime_env working_dir, unpacked elsewhere on each machine)."""
    absolute, _, relative = folder.partition("|")
    return Path(absolute) if Path(absolute).is_dir() or not relative else Path(relative)


def _shipped(folder: Path) -> str:
    try:
        return f"{folder}|{folder.relative_to(Path.cwd().resolve())}"
    except ValueError:
        return str(folder)


def _parse_batch(batch, limits):
    """A Ray batch of {"path", "council", "error"} -> a Table of item rows (parse runs in its own
    parse worker, as ingest's does); entries that already are errors (a manifest's) pass through."""
    rows = batch.to_pylist()
    failed = [_error_row(r["path"], r["error"]) for r in rows if r.get("error")]
    return _table(failed + parse_inputs([r for r in rows if not r.get("error")], limits), _parsed_schema())


# ---------------------------------------------------------------- the engines
@dataclass
class BackfillReport:
    engine: str
    documents: int
    items: int = 0
    errors: int = 0
    seconds: float = 0.0
    # Ray only: seconds to start or join the cluster, before any work.
    startup_s: float | None = None
    actors: int | None = None
    out: str = ""

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def model_folders(settings: Settings) -> tuple[Path, Path]:
    """The classifier and summariser folders, absolute (a Ray worker reads them by path)."""
    return (modelfolder.resolve(settings.models_dir, "classifier", settings.model).resolve(),
            modelfolder.resolve(settings.models_dir, "summariser", settings.summariser_model).resolve())


def prepare_out(out: Path) -> Path:
    """An output folder that holds no Parquet yet: a second run's files beside a first's would
    import as one backfill."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BackfillError(f"{out}: not a folder (--out names the folder the Parquet files go in)")
    if out.is_dir() and any(out.glob("*.parquet")):
        raise BackfillError(f"{out}: already holds Parquet files; give an empty or new folder to --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_local(inputs: list[dict], errors: list[dict], settings: Settings, out: Path,
              on_documents: Callable[[int, int], None] | None = None) -> BackfillReport:
    """In this process, PARSE_BATCH documents at a time; one Parquet file, a row group a batch."""
    import pyarrow.parquet as pq

    from pipeline.ingest import limits_from

    started = time.perf_counter()
    out = prepare_out(out)
    limits = limits_from(settings)
    stages = ItemStages(settings, *map(str, model_folders(settings)))
    report = BackfillReport("local", len(inputs) + len(errors), out=str(out))
    schema = result_schema()
    with pq.ParquetWriter(out / "part-00000.parquet", schema) as writer:
        if errors:
            writer.write_table(_table(errors, schema))
        pending: list[dict] = []
        for start in range(0, len(inputs), PARSE_BATCH):
            pending += parse_inputs(inputs[start:start + PARSE_BATCH], limits)
            if len(pending) >= ITEM_BATCH or start + PARSE_BATCH >= len(inputs):
                rows = stages.rows(pending)
                writer.write_table(_table(rows, schema))
                report.items += sum(1 for r in rows if not r.get("error"))
                report.errors += sum(1 for r in rows if r.get("error"))
                pending = []
            if on_documents:
                on_documents(min(start + PARSE_BATCH, len(inputs)), len(inputs))
    report.errors += len(errors)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def start_ray(address: str | None, num_cpus: int | None) -> tuple[bool, float]:
    """Join the cluster at `address`, or start a local one of `num_cpus` CPUs; nothing when this
    process is already connected. Returns (whether this call started it, seconds it took)."""
    try:
        import ray
    except ImportError:
        raise BackfillError("--engine ray needs Ray: pip install -e '.[ray]'") from None
    if ray.is_initialized():
        return False, 0.0
    started = time.perf_counter()
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise BackfillError(f"cannot start or join {where} ({' '.join(str(exc).split())[:300]})") from None
    return True, time.perf_counter() - started


def run_ray(inputs: list[dict], errors: list[dict], settings: Settings, out: Path, actors: int = 2,
            address: str | None = None, num_cpus: int | None = None) -> BackfillReport:
    """On Ray Data: inputs -> parse tasks -> a pool of `actors` actors, each with the models
    loaded once and one torch thread -> Parquet files in `out`, written by the workers."""
    out = prepare_out(out)
    folders = model_folders(settings)  # a missing model fails here, before a cluster starts
    owns, startup_s = start_ray(address, num_cpus)
    import ray
    import ray.data

    from pipeline.ingest import limits_from

    try:
        started = time.perf_counter()
        # Our own summary line at the end; Ray Data's execution notes would bury it.
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = sys.stderr.isatty()
        cluster_cpus = float(ray.cluster_resources().get("CPU", 1))
        actor_cpus = max(0.01, min(1.0, (cluster_cpus - 2 * LIGHT_TASK_CPUS) / actors))
        # One torch thread an actor: N actors on N cores beat N threads on every product.
        actor_settings = dataclasses.replace(settings, threads=1)
        entries = ([{"path": i["path"], "council": i.get("council"), "error": None} for i in inputs]
                   + [{"path": e["source"], "council": None, "error": e["error"]} for e in errors])
        if not entries:
            return BackfillReport("ray", 0, startup_s=round(startup_s, 3), actors=actors, out=str(out))
        dataset = ray.data.from_items(entries, override_num_blocks=min(len(entries), 4 * actors))
        parsed = dataset.map_batches(_parse_batch, fn_kwargs={"limits": limits_from(settings)},
                                     batch_size=PARSE_BATCH, batch_format="pyarrow", num_cpus=LIGHT_TASK_CPUS)
        results = parsed.map_batches(
            ItemStages, fn_constructor_args=(actor_settings, *map(_shipped, folders)),
            compute=ray.data.ActorPoolStrategy(size=actors), batch_size=ITEM_BATCH,
            batch_format="pyarrow", num_cpus=actor_cpus,
        )
        results.write_parquet(str(out), ray_remote_args={"num_cpus": LIGHT_TASK_CPUS})
        seconds = time.perf_counter() - started
    finally:
        if owns:
            ray.shutdown()
    import pyarrow.parquet as pq

    written = pq.read_table(out, columns=["error"], schema=result_schema()).column("error")
    return BackfillReport("ray", len(entries), items=written.null_count,
                          errors=len(written) - written.null_count, seconds=round(seconds, 3),
                          startup_s=round(startup_s, 3), actors=actors, out=str(out))


def run_backfill(source: Path, out: Path, settings: Settings, engine: str = "local", actors: int = 2,
                 address: str | None = None, num_cpus: int | None = None, council: str | None = None,
                 on_documents: Callable[[int, int], None] | None = None) -> BackfillReport:
    if engine not in ("local", "ray"):
        raise BackfillError(f"--engine {engine}: must be local or ray")
    inputs, errors = read_inputs(source, council)
    if engine == "local":
        return run_local(inputs, errors, settings, out, on_documents)
    return run_ray(inputs, errors, settings, out, actors, address, num_cpus)


# ---------------------------------------------------------------- reading results back
def read_results(folder: Path):
    """Every Parquet file in the folder as one table of result rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    if not folder.is_dir():
        raise BackfillError(f"{folder}: no such folder (give the folder `minutes backfill --out` wrote)")
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise BackfillError(f"{folder}: no .parquet files in this folder (give the folder "
                            "`minutes backfill --out` wrote)")
    tables = []
    for file in files:
        try:
            tables.append(pq.read_table(file, schema=result_schema()))
        except (pa.ArrowException, OSError) as exc:
            raise BackfillError(f"{file}: not a backfill result file ({' '.join(str(exc).split())[:200]})") from None
    return pa.concat_tables(tables)


@dataclass
class ImportReport:
    documents_new: int = 0
    documents_known: int = 0
    items_new: int = 0
    predictions_new: int = 0
    summaries_new: int = 0
    errors: int = 0

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def import_results(db, folder: Path) -> ImportReport:
    """Load a backfill's rows into the store, exactly once: a document is stored as `minutes
    ingest` stores it (unchanged content is found, not stored again), and its predictions and
    briefings go in under their models' versions, which the tables' keys make unique: a second
    import adds nothing. Error rows are counted, not stored."""
    rows = read_results(folder).to_pylist()
    report = ImportReport()
    documents: dict[str, list[dict]] = {}
    for row in rows:
        if row["error"]:
            report.errors += 1
        else:
            documents.setdefault(row["source"], []).append(row)
    for source, items in documents.items():
        items.sort(key=lambda r: r["position"])
        first = items[0]
        document = {k: first[k] for k in ("source", "content_hash", "format")}
        # The document's own fields are those of its items unless an item said otherwise;
        # council, committee and date are stored per item anyway.
        document.update({k: first[k] for k in ("council", "committee", "meeting_date")})
        document_id, outcome, item_ids = store.save_document(db, document, items)
        if outcome == "unchanged":
            report.documents_known += 1
            item_ids = store.current_item_ids(db, document_id)
        else:
            report.documents_new += 1
            report.items_new += len(item_ids)
        if len(item_ids) != len(items):
            raise BackfillError(f"{source}: the store holds {len(item_ids)} items of this document and "
                                f"the results {len(items)}: was it split by another version of the program?")
        by_version: dict[str, list[dict]] = {}
        briefs: dict[str, list[dict]] = {}
        for item_id, row in zip(item_ids, items):
            by_version.setdefault(row["classifier_version"], []).append({
                "item_id": item_id, "labels": list(row["labels"] or []),
                "scores": {label: row[f"score_{label}"] for label in LABELS},
                "evidence": json.loads(row["evidence"] or "{}"),
            })
            if row["briefing"] is not None:
                briefs.setdefault(row["summariser_version"], []).append(
                    {"item_id": item_id, "briefing": row["briefing"], "is_fallback": bool(row["is_fallback"])})
        for version, predictions in by_version.items():
            report.predictions_new += store.save_predictions(db, predictions, version)
        for version, summaries in briefs.items():
            report.summaries_new += store.save_summaries(db, summaries, version)
    return report
