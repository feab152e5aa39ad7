"""The `minutes` command line: one small command per stage, each parsing options and calling
the stage's library function. Nothing else lives here."""

from __future__ import annotations

import errno
import json
import sqlite3
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from pipeline import modelfolder, store
from pipeline.config import LABELS, ConfigError, DataError, Settings, debug_requested, load_settings

# Exit statuses every command shares: 1 is a finished run in which some inputs failed, 2 a usage,
# configuration, model or store error, 75 (EX_TEMPFAIL, pipeline.nightly) another run holds the
# lock, 70 (EX_SOFTWARE) the program itself failed: a bug to report, never an input's fault.
EXIT_USAGE, EXIT_INTERNAL_ERROR = 2, 70
# The store the running command uses (set by settings_from), to name it in a store error met
# in any later query.
_store_in_use: Path | None = None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class MinutesGroup(TyperGroup):
    """Runs every command (and sub-command) so that what goes wrong inside it, wherever it is
    raised, ends as one line and a distinct exit status rather than a traceback: a SQLite error
    from any query (a damaged or read-only store) or a store, config or model error is exit 2;
    an unexpected exception is exit 70 and its traceback is printed only with MINUTES_DEBUG=1."""

    def invoke(self, ctx: typer.Context):
        global _store_in_use
        _store_in_use = None
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # a command's own exit status, and usage errors typer prints itself
        except sqlite3.Error as exc:
            problem = str(store.error_for(_store_in_use or "the store", exc))
        except (store.StoreError, ConfigError, DataError, modelfolder.ModelError) as exc:
            problem = str(exc)
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise  # `minutes items | head`: typer ends quietly
            # The machine's state (permissions, a full disk, a missing folder), not a bug.
            where = f": {exc.filename}" if exc.filename else ""
            problem = f"{exc.strerror or exc}{where}"
        except Exception as exc:
            if debug_requested():
                console.print(traceback.format_exc().rstrip(), markup=False)
            detail = _one_line(str(exc))
            kind = type(exc).__name__ + (f": {detail}" if detail else "")
            hint = "" if debug_requested() else "; MINUTES_DEBUG=1 shows the traceback"
            console.print(f"minutes: internal error ({kind}){hint}", markup=False)
            raise typer.Exit(EXIT_INTERNAL_ERROR) from None
        console.print(f"error: {_one_line(problem)}", markup=False)
        raise typer.Exit(EXIT_USAGE) from None


app = typer.Typer(
    cls=MinutesGroup,
    help="Read council minutes overnight and brief children's services directors.\n\n"
    "Example: minutes ingest data/samples && minutes classify && minutes brief",
    no_args_is_help=True,
    rich_markup_mode=None,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
out = Console(highlight=False, soft_wrap=True, markup=False)

DbOption = Annotated[Optional[Path], typer.Option("--db", help="Store file (default data/minutes.db, or MINUTES_DB).")]
ConfigOption = Annotated[Optional[Path], typer.Option("--config", help="TOML settings file.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
ModelOption = Annotated[Optional[Path], typer.Option("--model", help="Classifier folder (default: the promoted model).")]


def settings_from(config: Path | None = None, **overrides) -> Settings:
    """Defaults < config file < MINUTES_* < these flags, every value checked: a wrong one is
    one line naming it and exit 2."""
    try:
        settings = load_settings(config).with_overrides(**overrides)
    except ConfigError as exc:
        console.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_USAGE) from None
    global _store_in_use
    _store_in_use = settings.db
    return settings


def open_store(settings: Settings):
    try:
        return store.connect(settings.db)
    except store.StoreError as exc:
        console.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_USAGE) from None


@contextmanager
def user_errors(status: int = EXIT_USAGE):
    """No model yet, or an unusable store: one line saying what to do, not a traceback."""
    try:
        yield
    except (modelfolder.ModelError, store.StoreError) as exc:
        console.print(f"error: {exc}", markup=False)
        raise typer.Exit(status) from None


class LoggedProgress(Progress):
    """A rich bar on a terminal; elsewhere (cron, CI, a log file) a plain line at least every
    `every_s` seconds while work is under way: "training (loss 0.213): 120/420, 95 s". Lines come
    from updates and, between them (one batch of a slow stage can outlast `every_s`), from a
    heartbeat thread, so a log never goes quiet for longer than `every_s`."""

    def __init__(self, *columns, every_s: float = 30.0, **kwargs):
        super().__init__(*columns, **kwargs)
        self.every_s = every_s
        self._last_line = time.monotonic()
        self._last_task = None
        self._stopped = None

    def __enter__(self):
        import threading

        if self.disable:
            self._stopped = threading.Event()
            threading.Thread(target=self._heartbeat, daemon=True).start()
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        if self._stopped is not None:
            self._stopped.set()
        super().__exit__(*exc)

    def _heartbeat(self) -> None:
        while not self._stopped.wait(min(1.0, self.every_s)):
            if self._last_task is not None and time.monotonic() - self._last_line >= self.every_s:
                self._print_line(self._last_task)

    def update(self, task_id, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._last_task = task_id
        if not self.disable or time.monotonic() - self._last_line < self.every_s:
            return
        self._print_line(task_id)

    def add_task(self, *args, **kwargs):
        task_id = super().add_task(*args, **kwargs)
        self._last_task = task_id
        return task_id

    def _print_line(self, task_id) -> None:
        self._last_line = time.monotonic()
        task = self._tasks[task_id]
        total = f"/{task.total:.0f}" if task.total else ""
        console.print(f"{task.description}: {task.completed:.0f}{total}, {task.elapsed or 0:.0f} s",
                      markup=False, highlight=False)


def progress_bar() -> Progress:
    return LoggedProgress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )


def error_line(path: str, reason: str) -> None:
    """`path: reason`, always one line: control characters in a file's name (a newline could
    forge a second line), format characters and undecodable bytes are written as escapes."""
    console.print(f"{_escape_controls(path)}: {_escape_controls(reason)}", markup=False)


def _escape_controls(text: str) -> str:
    import unicodedata

    if text.isprintable():
        return text

    def escape(ch: str) -> str:
        if "\udc80" <= ch <= "\udcff":  # a byte of a file name that is not UTF-8, as that byte
            return f"\\x{ord(ch) - 0xDC00:02x}"
        return repr(ch)[1:-1] if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") else ch

    return "".join(map(escape, text))


# ---------------------------------------------------------------- ingest and browsing
@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (read recursively).")],
    db: DbOption = None,
    config: ConfigOption = None,
    council: Annotated[Optional[str], typer.Option(help="Council name to record for these documents.")] = None,
    as_json: JsonOption = False,
):
    """Read minutes (HTML, text, PDF, Word) into the store, split into items.

    Re-ingesting unchanged files adds nothing; a changed file replaces its items (old predictions
    are kept, marked stale). A bad file is reported as `path: reason` and the rest go on;
    exit status 1 when any failed. Each file is read within limits (max_file_mb, max_html_depth,
    max_html_elements, max_pdf_pages, max_pdf_chars, max_docx_members, max_docx_unzipped_mb,
    max_item_chars) and a wall-clock parse_budget_s; over one, the reason ends "(limit N)".

    Example: minutes ingest data/samples ../shared/corpus/dev --db data/minutes.db
    """
    from pipeline.ingest import expand_paths, ingest_paths, limits_from

    settings = settings_from(config, db=db)
    database = open_store(settings)
    files, _ = expand_paths(paths)
    with progress_bar() as bar:
        task = bar.add_task("ingesting", total=len(files))
        report = ingest_paths(
            database, paths, limits=limits_from(settings), council=council,
            on_error=error_line, progress=lambda _: bar.advance(task),
        )
    if as_json:
        out.print(json.dumps(report.as_json()))
    else:
        console.print(
            f"ingested {report.documents_new} new and {report.documents_replaced} changed documents "
            f"({report.items_new} items), {report.unchanged} unchanged, {len(report.failed)} failed; "
            f"store {settings.db}"
        )
    raise typer.Exit(1 if report.failed else 0)


@app.command()
def items(
    db: DbOption = None,
    config: ConfigOption = None,
    limit: Annotated[Optional[int], typer.Option(help="Show at most N items.")] = None,
    as_json: JsonOption = False,
):
    """List stored items with their labels (null until classified).

    Example: minutes items --limit 20 --json
    """
    settings = settings_from(config, db=db)
    database = open_store(settings)
    rows = store.items(database, limit=limit)
    predictions = store.latest_predictions(database, [r["id"] for r in rows])
    if as_json:
        listing = [
            {
                "id": r["id"], "number": r["number"], "title": r["title"], "council": r["council"],
                "committee": r["committee"], "date": r["date"], "source": r["source"],
                "is_procedural": r["is_procedural"],
                "labels": predictions[r["id"]]["labels"] if r["id"] in predictions else None,
            }
            for r in rows
        ]
        out.print(json.dumps(listing, ensure_ascii=False))
        return
    table = Table("id", "date", "committee", "title", "labels")
    for r in rows:
        labels = predictions.get(r["id"], {}).get("labels")
        table.add_row(
            str(r["id"]), r["date"] or "", (r["committee"] or "")[:30], (r["title"] or "")[:60],
            "-" if labels is None else ", ".join(labels) or "none",
        )
    out.print(table)
    console.print(f"{len(rows)} items shown of {store.count_items(database)} in {settings.db}")


@app.command()
def show(
    item_id: Annotated[int, typer.Argument(help="Item id (from `minutes items`).")],
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Print one stored item: metadata, text, labels, evidence and briefing.

    Example: minutes show 12
    """
    settings = settings_from(config, db=db)
    database = open_store(settings)
    item = store.item(database, item_id)
    if item is None:
        console.print(f"error: no item {item_id} in {settings.db}")
        raise typer.Exit(1)
    prediction = store.latest_predictions(database, [item_id]).get(item_id)
    summary = store.latest_summaries(database, [item_id]).get(item_id)
    item["labels"] = prediction["labels"] if prediction else None
    item["scores"] = prediction["scores"] if prediction else None
    item["evidence"] = prediction["evidence"] if prediction else None
    item["briefing"] = summary["briefing"] if summary else None
    if as_json:
        out.print(json.dumps(item, ensure_ascii=False, indent=2))
        return
    for key in ("id", "title", "number", "council", "committee", "date", "source", "labels", "briefing"):
        out.print(f"{key}: {item[key]}", markup=False)
    if item["evidence"]:
        for label, sentences in item["evidence"].items():
            for s in sentences:
                out.print(f"evidence[{label}]: {s}", markup=False)
    out.print("")
    out.print(item["text"], markup=False)


# ---------------------------------------------------------------- fetching
fetch_app = typer.Typer(help="Fetch new minutes from council websites.\n\n"
                        "Example: minutes fetch moderngov https://democracy.example.gov.uk/ --committee Cabinet",
                        no_args_is_help=True)
app.add_typer(fetch_app, name="fetch")


@fetch_app.command("moderngov")
def fetch_moderngov_command(
    base_url: Annotated[str, typer.Argument(help="The site's ModernGov address, e.g. https://democracy.example.gov.uk/")],
    committee: Annotated[Optional[list[str]], typer.Option("--committee", help="Committee name (or part) or id to follow (repeatable; default all).")] = None,
    since: Annotated[Optional[str], typer.Option(help="Only meetings on or after YYYY-MM-DD.")] = None,
    council: Annotated[Optional[str], typer.Option(help="Council name to record on the items.")] = None,
    delay: Annotated[Optional[float], typer.Option(help="Seconds between requests to the site's host (default 1).")] = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Fetch new meetings' agenda items and minutes from a ModernGov site and ingest them.
    One listing request per committee, then one GetMeeting request per meeting (the meeting's
    pages where the site has no web service). Incremental: a meeting whose minutes are in is
    never asked for again; one whose minutes are not published yet is asked again next time;
    cancelled meetings and restricted items are skipped. Polite: robots.txt, one pace per host,
    Retry-After honoured up to retry_after_cap_s, no retry on 404, a 60 s timeout, a size cap.

    Example: minutes fetch moderngov https://democracy.example.gov.uk/ --committee Cabinet --since 2025-01-01
    """
    from pipeline.config import Source
    from pipeline.fetch import FetchError, fetch_moderngov, since_date

    settings = settings_from(config, db=db, request_delay_s=delay)
    database = open_store(settings)
    try:
        start = since_date(since)
    except FetchError as exc:
        console.print(f"error: {exc}")
        raise typer.Exit(2) from None
    source = Source(kind="moderngov", url=base_url, council=council, committees=list(committee or []))
    with progress_bar() as bar:
        task = bar.add_task("fetching meetings", total=None)
        report = fetch_moderngov(database, settings, source, start, on_error=error_line,
                                 on_progress=lambda _: bar.advance(task))
    if as_json:
        out.print(json.dumps(report.as_json()))
    else:
        console.print(f"fetched {report.documents_new} new and {report.documents_replaced} changed documents "
                      f"({report.items_new} items) from {base_url}; {report.unchanged} unchanged, "
                      f"{len(report.failed)} failed")
        console.print(f"meetings: {report.meetings_listed} listed, {report.meetings_asked} asked for, "
                      f"{report.meetings_complete} complete, {report.meetings_awaiting_minutes} meeting"
                      f"{'' if report.meetings_awaiting_minutes == 1 else 's'} awaiting minutes, "
                      f"{report.meetings_cancelled} cancelled; {report.restricted_items} restricted items "
                      f"skipped; {report.requests} requests")
    raise typer.Exit(1 if report.failed else 0)


# ---------------------------------------------------------------- models: train, classify, predict
def _training_rows(settings: Settings, label_files: list[Path] | None, use_store_labels: bool):
    """(training rows, validation rows, source names): the project's labelled data, any extra
    files, and labels imported into the store."""
    from pipeline.gold import read_labelled
    from pipeline.train import labelled_data

    try:
        rows, validation, names = labelled_data(settings.labelled_dir)
        rows += read_labelled(label_files or [])
    except (DataError, FileNotFoundError) as exc:
        console.print(f"error: {exc}")
        raise typer.Exit(2) from None
    names += [str(p) for p in label_files or []]
    if use_store_labels and Path(settings.db).exists():
        imported = store.current_labels(open_store(settings))
        if imported:
            rows += imported
            names.append(f"{settings.db} ({len(imported)} imported labels)")
    return rows, validation, names


def _train_progress(bar, task):
    def on_step(step, total, loss):
        bar.update(task, completed=step, total=total, description=f"training (loss {loss:.3f})")
    return on_step


@app.command()
def train(
    labels: Annotated[Optional[list[Path]], typer.Option("--labels", help="Extra gold-format JSONL files to train on (repeatable).")] = None,
    base: Annotated[Optional[Path], typer.Option(help="Base encoder folder (default: the packaged all-MiniLM-L6-v2).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs (default 3).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed: same seed and data, same model.")] = None,
    summariser: Annotated[bool, typer.Option("--summariser/--no-summariser", help="Also train the briefing sentence scorer.")] = True,
    promote_first: Annotated[bool, typer.Option("--promote/--no-promote", help="Promote the new model if none is promoted yet.")] = True,
    if_missing: Annotated[bool, typer.Option("--if-missing", help="Do nothing when promoted models exist (for `make demo`).")] = False,
    store_labels: Annotated[bool, typer.Option("--store-labels/--no-store-labels", help="Include labels imported with `minutes label import`.")] = True,
    db: DbOption = None,
    config: ConfigOption = None,
    models_dir: Annotated[Optional[Path], typer.Option(help="Where model folders go (default models/).")] = None,
):
    """Fine-tune the classifier (and the summariser's sentence scorer) on data/labelled/, any
    --labels files and imported labels; writes models/<kind>/<version>/ with a model card.

    Never train on the gold file you report scores for.

    Example: minutes train --epochs 3 --seed 13 --labels data/labelled/extra.jsonl
    """
    import time

    from pipeline.train import (
        TrainingArguments,
        summariser_arguments,
        train_classifier,
        train_summariser,
    )

    settings = settings_from(config, db=db, models_dir=models_dir)
    if if_missing and all(modelfolder.promoted_folder(settings.models_dir, k) for k in ("classifier", "summariser")):
        console.print(f"models already trained and promoted in {settings.models_dir}; nothing to do")
        return
    # Thresholds are chosen on the validation rows: held-out wording and written items.
    rows, validation_rows, names = _training_rows(settings, labels, store_labels)
    args = TrainingArguments()
    if epochs is not None:
        args.epochs = epochs
    if seed is not None:
        args.seed = seed
    started = time.perf_counter()
    with user_errors():
        with progress_bar() as bar:
            task = bar.add_task("training classifier", total=None)
            folder = train_classifier(rows, settings.models_dir, base, args, names, _train_progress(bar, task),
                                      validation_rows)
        card = modelfolder.read_card(folder)
        console.print(f"classifier {card['version']}: validation macro-F1 {card['metrics'].get('macro_f1')} "
                      f"on {card['validation_rows']} {card['validation']}, {card['training_seconds']:.0f} s")
        if promote_first and not modelfolder.history(settings.models_dir, "classifier"):
            modelfolder.promote(settings.models_dir, "classifier", card["version"])
            console.print(f"promoted classifier {card['version']} (the first)")
        if summariser:
            s_args = summariser_arguments(seed=args.seed)
            with progress_bar() as bar:
                task = bar.add_task("training summariser", total=None)
                s_folder = train_summariser(rows, settings.models_dir, base, s_args, names, _train_progress(bar, task))
            s_card = modelfolder.read_card(s_folder)
            console.print(f"summariser {s_card['version']}: validation ROUGE-L {s_card['metrics'].get('rougeL')}")
            if promote_first and not modelfolder.history(settings.models_dir, "summariser"):
                modelfolder.promote(settings.models_dir, "summariser", s_card["version"])
                console.print(f"promoted summariser {s_card['version']} (the first)")
    console.print(f"training took {time.perf_counter() - started:.0f} s; model folder {folder}")


@app.command()
def classify(
    db: DbOption = None,
    config: ConfigOption = None,
    model: ModelOption = None,
    reclassify_all: Annotated[bool, typer.Option("--all", help="Re-label every current item, not only new ones.")] = False,
    quantize: Annotated[Optional[bool], typer.Option("--int8/--fp32", help="int8 on CPU (smoothed, per-channel; items near a threshold are scored again in fp32).")] = None,
):
    """Label stored items not yet labelled by the current model, in batches, with evidence.

    Example: minutes classify --db data/minutes.db
    """
    from pipeline.classify import classify_pending
    from pipeline.stages import Classifier

    settings = settings_from(config, db=db, model=model, quantize=quantize)
    database = open_store(settings)
    with user_errors():
        classifier = Classifier.promoted(settings)
        version = classifier.version
        with progress_bar() as bar:
            task = bar.add_task("classifying", total=None)
            done = classify_pending(
                database, classifier, reclassify_all=reclassify_all,
                on_items=lambda d, t: bar.update(task, completed=d, total=t),
            )
    flagged = sum(1 for p in store.predictions_for(database, version).values() if p["labels"])
    console.print(f"classified {done} items with model {version}; {flagged} items flagged in {settings.db}")


@app.command()
def summarise(
    db: DbOption = None,
    config: ConfigOption = None,
    model: ModelOption = None,
    summariser_model: Annotated[Optional[Path], typer.Option("--summariser", help="Summariser folder (default: the promoted one).")] = None,
):
    """Write a briefing (at most 60 words) for each flagged item without one from the current
    summariser. Run `minutes classify` first.

    Example: minutes summarise --db data/minutes.db
    """
    from pipeline.stages import Classifier, Summariser
    from pipeline.summarise import summarise_pending

    settings = settings_from(config, db=db, model=model, summariser_model=summariser_model)
    database = open_store(settings)
    with user_errors():
        # The classifier's version only (its weights are not loaded): whose flags to brief.
        version = Classifier.promoted(settings).version
        summariser = Summariser.promoted(settings)
        with progress_bar() as bar:
            task = bar.add_task("summarising", total=None)
            done = summarise_pending(database, summariser, version,
                                     on_items=lambda d, t: bar.update(task, completed=d, total=t))
    console.print(f"summarised {done} flagged items in {settings.db}")


@app.command()
def predict(
    input_file: Annotated[Path, typer.Argument(help="JSON Lines: one {\"id\", \"title\"?, \"text\"} per line.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write JSON Lines here (default: stdout).")] = None,
    model: ModelOption = None,
    config: ConfigOption = None,
    with_briefing: Annotated[bool, typer.Option("--briefing/--no-briefing", help="Add a briefing to flagged items.")] = True,
):
    """Classify (and brief) items from a file, without a store.

    Each output line: {"id", "labels", "scores", "evidence", "briefing"}. A malformed input line
    (not UTF-8, not a JSON object, an id that is not a string or integer, an empty text) is
    reported as `FILE:LINE: skipped: reason` and the rest are classified (exit status 1); a file
    that cannot be read at all is exit status 2.

    Example: minutes predict items.jsonl -o predictions.jsonl
    """
    import re

    from pipeline.gold import prepare
    from pipeline.labelling import decoded_lines, kind_of, not_utf8
    from pipeline.passages import item_passages
    from pipeline.stages import Classifier, Summariser

    settings = settings_from(config, model=model)
    records, bad = [], 0
    try:
        # Bytes, decoded a line at a time: one line that is not UTF-8 is that line's problem.
        lines = decoded_lines(input_file.read_bytes())
    except OSError as exc:
        console.print(f"{input_file}: cannot read ({exc})")
        raise typer.Exit(2) from None
    for number, line, undecodable in lines:
        if not undecodable and not line.strip():
            continue
        try:
            if undecodable:
                raise ValueError(not_utf8(undecodable))
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"needs an object with \"id\" and \"text\", not {kind_of(row)}")
            if "id" not in row or "text" not in row:
                raise ValueError("needs \"id\" and a \"text\" string")
            if isinstance(row["id"], bool) or not isinstance(row["id"], (str, int)):
                raise ValueError(f"id must be a string or an integer, not {kind_of(row['id'])}")
            if not isinstance(row["text"], str):
                raise ValueError(f"text must be a string, not {kind_of(row['text'])}")
            for field in ("title", "meeting", "committee", "purpose"):
                if row.get(field) is not None and not isinstance(row[field], str):
                    raise ValueError(f"{field} must be a string or null, not {kind_of(row[field])}")
            for field in ("id", "text", "title", "meeting", "committee", "purpose"):
                try:  # a JSON "\ud800" escape: a lone surrogate no UTF-8 output can hold
                    str(row.get(field) or "").encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError(f"{field} is not valid text (a lone surrogate escape)") from None
            # An empty text has nothing to score; a 0.0 for it would read as "checked, nothing found".
            if not row["text"].strip():
                raise ValueError("text is empty")
            if not re.search(r"\w", row["text"]):
                raise ValueError("text has no words")
            record = prepare({"id": row["id"], "title": row.get("title"), "text": row["text"],
                              "meeting": row.get("meeting") or row.get("committee"),
                              "purpose": row.get("purpose")})
            if not record["is_procedural"] and not item_passages(record["text"], record["title"]):
                raise ValueError("text has no words once page headers and footers are removed")
        except (json.JSONDecodeError, ValueError) as exc:
            console.print(f"{input_file}:{number}: skipped: {exc}", markup=False)
            bad += 1
            continue
        records.append(record)
    with user_errors():
        # The stage objects: max_tokens from each card, device, threads and int8 from settings,
        # as the nightly run and a backfill run them.
        predictions = Classifier.promoted(settings)(records)
        if with_briefing:
            summariser = Summariser.promoted(settings)
            flagged = [{**r, "evidence": p["evidence"]} for r, p in zip(records, predictions) if p["labels"]]
            briefs = {b["id"]: b["briefing"] for b in summariser(flagged)}
            for p in predictions:
                p["briefing"] = briefs.get(p["id"])
    text = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {len(predictions)} predictions to {output}; {bad} lines skipped")
    else:
        sys.stdout.write(text)
    raise typer.Exit(1 if bad else 0)


def _gain_cell(gains: dict | None, name: str) -> list[str]:
    """The cell of a table's paired-gain column ("the model minus this system, 95% interval")."""
    if not gains:
        return []
    if name == gains["against"]:
        return ["-"]
    if name not in gains:
        return [""]
    low, high = gains[name]
    return [f"[{low:+.3f}, {high:+.3f}]" + ("" if low > 0 or high < 0 else " ~")]


def _gain_header(gains: dict | None, what: str) -> list[str]:
    return [f"{gains['against']} minus this, {what} [95% paired; ~ spans 0]"] if gains else []


def _labels_table(report: dict, systems: list[str], title: str) -> Table:
    """Per-label F1 with gold and predicted counts, macro-F1 with its 95% bootstrap interval, and
    (when the report has them) one system's macro-F1 gain over each other, paired on the items."""
    first = report[systems[0]]
    gains = report.get("gains_95ci")
    short = {label: label.split("_")[0] for label in LABELS}
    table = Table("system", *[f"{short[l]} n={first['per_label'][l]['support']}: F1 (flagged)" for l in LABELS],
                  "macro F1 [95% CI]", "micro F1", *_gain_header(gains, "macro F1"), title=title)
    for name in systems:
        m = report[name]
        low, high = m["macro_f1_95ci"]
        table.add_row(name, *[f"{m['per_label'][l]['f1']:.3f} ({m['per_label'][l]['predicted']})" for l in LABELS],
                      f"{m['macro_f1']:.3f} [{low:.3f}, {high:.3f}]", f"{m['micro_f1']:.3f}",
                      *_gain_cell(gains, name))
    return table


@app.command()
def evaluate(
    gold: Annotated[Path, typer.Option("--gold", help="Gold JSONL (labelling-guide format).")],
    model: ModelOption = None,
    summariser_model: Annotated[Optional[Path], typer.Option("--summariser", help="Summariser folder (default: promoted).")] = None,
    cross_validate: Annotated[Optional[int], typer.Option("--cross-validate", help="K: train on data/labelled/ plus K-1 folds of the gold items, score the held-out fold, for every fold (slow: K trainings).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs for --cross-validate (default: as `minutes train`).")] = None,
    base: Annotated[Optional[Path], typer.Option(help="Base encoder for --cross-validate (default: the packaged all-MiniLM-L6-v2).")] = None,
    config: ConfigOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
):
    """Score the classifier and summariser on a gold file beside baselines: keyword rules and
    TF-IDF + logistic regression (trained on the same training data) for labels, each with
    per-label counts and a 95% bootstrap interval for macro-F1; the first 60 words and LexRank
    for briefings, and the sentence oracle: the best whole sentences chosen with the reference
    in hand, the ceiling of any extractive briefing (not a system); and the rules oracle, the same
    choice among only the sentences our selection rules allow (what a perfect scorer would reach).

    With --cross-validate K it measures the retraining loop instead: what the model scores on
    these items once an analyst has labelled the other folds' items (see `minutes label import`).

    Example: minutes evaluate --gold ../shared/corpus/dev60.gold.jsonl

    Example: minutes evaluate --gold ../shared/corpus/dev60.gold.jsonl --cross-validate 5
    """
    from pipeline.evaluate import evaluate_gold

    settings = settings_from(config, db=db, model=model, summariser_model=summariser_model)
    training, validation, _ = _training_rows(settings, None, True)
    if cross_validate is not None:
        _cross_validate(settings, gold, training, validation, cross_validate, epochs, base, as_json)
        return
    with user_errors():
        report = evaluate_gold(settings, gold, training)
    if as_json:
        out.print(json.dumps(report, indent=2))
        return
    out.print(_labels_table(report, ["model", "keywords", "tfidf_logreg"],
                            f"labels on {gold} ({report['model']['items']} items)"))
    out.print(f"evidence score (gold evidence sentences found in predicted evidence): {report['evidence_score']}")
    if report.get("briefings"):
        gains = report.get("briefings_gains_95ci")
        table = Table("system", "ROUGE-1", "ROUGE-2", "ROUGE-L", "fact recall", "mean words", "max words",
                      "unsupported", *_gain_header(gains, "ROUGE-L"),
                      title=f"briefings on {report['briefings']['model']['items']} flagged gold items")
        for name, m in report["briefings"].items():
            recall = "-" if m["fact_recall"] is None else f"{m['fact_recall']:.3f}"
            table.add_row(name, f"{m['rouge1']:.3f}", f"{m['rouge2']:.3f}", f"{m['rougeL']:.3f}", recall,
                          f"{m['mean_words']}", f"{m['max_words']}", f"{m['share_unsupported']:.2f}",
                          *_gain_cell(gains, name))
        out.print(table)
        out.print("share of the first-60-words -> sentence-oracle ROUGE-L gap closed "
                  f"((ours - first 60) / (oracle - first 60)): {report['briefings_gap_closed']}")
        out.print("the same share for the rules oracle, the best briefing the selection rules allow "
                  f"(chosen with the reference in hand; the rest is the scorer's): {report['rules_oracle_gap_closed']}")


def _cross_validate(settings, gold, training, validation, folds, epochs, base, as_json) -> None:
    from pipeline.evaluate import cross_validate
    from pipeline.train import TrainingArguments

    args = TrainingArguments()
    if epochs is not None:
        args.epochs = epochs

    def on_fold(fold, total, n_train, n_held):
        console.print(f"fold {fold + 1} of {total}: training on the project's data + {n_train} gold items, "
                      f"scoring {n_held}")

    with user_errors():
        try:
            with progress_bar() as bar:
                task = bar.add_task("training", total=None)
                report = cross_validate(settings, gold, training, validation, folds, args, on_fold,
                                        _train_progress(bar, task), base)
        except ValueError as exc:
            console.print(f"error: {exc}")
            raise typer.Exit(2) from None
    if as_json:
        out.print(json.dumps(report, indent=2))
        return
    out.print(_labels_table(report, ["default_model", "cross_validated", "tfidf_cross_validated", "keywords"],
                            f"labels on {gold} ({report['default_model']['items']} items), "
                            f"{folds}-fold cross-validation, {report['epochs']} epochs"))


# ---------------------------------------------------------------- briefing and the overnight run
@app.command()
def brief(
    db: DbOption = None,
    config: ConfigOption = None,
    since: Annotated[Optional[str], typer.Option(help="Items whose meeting (or ingest) date is on or after YYYY-MM-DD.")] = None,
    run: Annotated[Optional[int], typer.Option("--run", help="Items classified in this run (see `minutes runs`).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder for briefing.html, .md and .json.")] = None,
):
    """Write the directors' briefing (HTML, Markdown, JSON) for stored, classified items.

    Example: minutes brief --since 2025-01-01 --out data/briefings
    """
    from pipeline.brief import write_brief

    settings = settings_from(config, db=db, out_dir=out_dir)
    database = open_store(settings)
    items = store.items_since(database, since_date=since, run_id=run)
    period = f"since {since}" if since else (f"run {run}" if run else "all stored items")
    paths = write_brief(database, settings, items, period)
    console.print(f"briefing for {len(items)} items written to {paths['html']}")
    out.print(str(paths["html"]))


@app.command()
def nightly(
    config: ConfigOption = None,
    source: Annotated[Optional[list[Path]], typer.Option("--source", help="Folder or file to ingest (repeatable; adds to the config's sources).")] = None,
    db: DbOption = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder for the briefing.")] = None,
    model: ModelOption = None,
    as_json: JsonOption = False,
):
    """The overnight run: ingest every source, classify new items, summarise flagged ones, and
    write the briefing for items new since the last successful run. Safe to re-run; a killed run
    is finished by the next. With [delivery] in the config, a briefing that flags anything is
    mailed once, after the results are stored; a failed send is one line, recorded on the run
    (`minutes runs`, `minutes send --run ID` to send it again). Exit status: 0 ok, 1 some inputs
    failed, 2 usage, 69 the briefing could not be mailed, 75 locked.

    Example (cron): minutes nightly --config /etc/minutes.toml --json
    """
    import time

    from pipeline.config import Source
    from pipeline.nightly import EXIT_DELIVERY_FAILED, EXIT_LOCKED, Locked, run_nightly

    settings = settings_from(config, db=db, out_dir=out_dir, model=model)
    settings.sources = list(settings.sources) + [Source(kind="path", path=str(p)) for p in (source or [])]
    if not settings.sources:
        console.print("error: no sources: give --source PATH or [[sources]] in the config file")
        raise typer.Exit(2)
    started = time.perf_counter()
    try:
        with progress_bar() as bar:
            tasks: dict[str, int] = {}

            def on_stage(name, done, total):
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=total)
                bar.update(tasks[name], completed=done, total=total)

            result = run_nightly(settings, on_error=error_line, on_stage=on_stage)
    except Locked as exc:
        console.print(f"locked: {exc}; try again when it has finished")
        raise typer.Exit(EXIT_LOCKED) from None
    except (modelfolder.ModelError, store.StoreError) as exc:
        console.print(f"error: {exc}")
        raise typer.Exit(2) from None
    if result.stale_lock_cleared:
        console.print(f"cleared a stale lock left by pid {result.stale_lock_cleared} (killed run)")
    mailed = ""
    if result.delivery and result.delivery["status"] == "sent":
        mailed = f"; mailed to {', '.join(result.delivery['recipients'])}"
    if as_json:
        out.print(json.dumps(result.as_json()))
    elif not result.did_model_work:
        console.print(f"run {result.run_id}: nothing new to classify or summarise "
                      f"({result.items_new} new items); briefing {result.briefing}")
    else:
        console.print(
            f"run {result.run_id}: {result.items_new} new items, {result.items_classified} classified, "
            f"{result.items_summarised} summarised, {len(result.failed)} failed inputs in "
            f"{time.perf_counter() - started:.1f} s; briefing {result.briefing}{mailed}"
        )
    if result.is_delivery_failed:
        console.print(f"delivery failed: {_one_line(result.delivery['reason'])}; the run's results are "
                      f"stored and its briefing is {result.briefing}; send it with "
                      f"`minutes send --run {result.run_id}`", markup=False)
        raise typer.Exit(EXIT_DELIVERY_FAILED)
    raise typer.Exit(1 if result.failed else 0)


@app.command()
def send(
    run: Annotated[int, typer.Option("--run", help="The run whose briefing to send (see `minutes runs`).")],
    config: ConfigOption = None,
    db: DbOption = None,
):
    """Mail a nightly run's briefing again, to the [delivery] recipients in the config: the
    briefing of the items that run first showed, rebuilt from the store. Each attempt is recorded
    on the run. Exit status: 0 sent, 2 no [delivery], no such run or it wrote no briefing,
    69 the mail server refused or could not be reached.

    Example: minutes send --run 12 --config /etc/minutes.toml
    """
    from pipeline.deliver import DeliveryError, resend_run
    from pipeline.nightly import EXIT_DELIVERY_FAILED

    settings = settings_from(config, db=db)
    database = open_store(settings)
    try:
        outcome = resend_run(database, settings, run)
    except DeliveryError as exc:
        console.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_USAGE) from None
    if outcome["status"] != "sent":
        console.print(f"delivery failed: {_one_line(outcome['reason'])}", markup=False)
        raise typer.Exit(EXIT_DELIVERY_FAILED)
    console.print(f"sent run {run}'s briefing to {', '.join(outcome['recipients'])}: {outcome['subject']}",
                  markup=False)


@app.command()
def runs(
    db: DbOption = None,
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option(help="Show the last N runs.")] = 20,
    as_json: JsonOption = False,
):
    """List overnight runs: start, end, outcome, counts per stage and model version.

    Example: minutes runs --limit 5
    """
    settings = settings_from(config, db=db)
    rows = store.runs(open_store(settings), limit)
    if as_json:
        out.print(json.dumps(rows))
        return
    table = Table("run", "started", "ended", "status", "new", "classified", "summarised", "failed", "model")
    for r in rows:
        c = r["counts"]
        table.add_row(str(r["id"]), r["started_at"], r["ended_at"] or "", r["status"],
                      str(c.get("items_new", "")), str(c.get("items_classified", "")),
                      str(c.get("items_summarised", "")), str(len(r["failed"])), r["model_version"] or "")
    out.print(table)


@app.command()
def check(
    db: DbOption = None,
    config: ConfigOption = None,
    full: Annotated[bool, typer.Option("--full", help="integrity_check: also compare every index with its table (slower).")] = False,
    as_json: JsonOption = False,
):
    """Check the store without changing it: schema version, counts, and SQLite's check of every
    page. Exit status 0 when sound, 2 when not (or when there is no store).

    Example: minutes check --db data/minutes.db --full
    """
    settings = settings_from(config, db=db)
    report = store.check(settings.db, full)
    if as_json:
        out.print(json.dumps(report))
        raise typer.Exit(0 if report["sound"] else EXIT_USAGE)
    version = report["schema_version"]
    schema = f"schema v{version}" if version is not None else "no schema"
    if version is not None and version < report["program_schema_version"]:
        schema += f" (migrated to v{report['program_schema_version']} when next opened)"
    counts = ", ".join(f"{n} {name}" for name, n in report["counts"].items())
    verdict = "sound" if report["sound"] else "not sound"
    out.print(f"{report['path']}: {verdict} ({report['check']}); {schema}" + (f"; {counts}" if counts else ""))
    for problem in report["problems"]:
        out.print(f"  {_one_line(problem)}")
    raise typer.Exit(0 if report["sound"] else EXIT_USAGE)


# ---------------------------------------------------------------- labelling loop
label_app = typer.Typer(help="Export items for people to label, and import their labels.\n\n"
                        "Example: minutes label export -n 20 -o to_label.jsonl; minutes label import to_label.jsonl",
                        no_args_is_help=True)
app.add_typer(label_app, name="label")


@label_app.command("export")
def label_export(
    n: Annotated[int, typer.Option("-n", help="How many items.")] = 20,
    strategy: Annotated[str, typer.Option(help="uncertain (nearest the thresholds, across councils), flagged or random.")] = "uncertain",
    fmt: Annotated[str, typer.Option("--format", help="jsonl, csv or label-studio.")] = "jsonl",
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="File to write (default: stdout).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for random and flagged picks.")] = 0,
    db: DbOption = None,
    config: ConfigOption = None,
):
    """Pick items for labelling, with the model's labels and evidence as suggestions.

    Example: minutes label export -n 20 --strategy uncertain --format csv -o to_label.csv
    """
    from pipeline import labelling

    settings = settings_from(config, db=db)
    if strategy not in labelling.STRATEGIES or fmt not in labelling.FORMATS:
        console.print(f"error: --strategy is one of {labelling.STRATEGIES}, --format one of {labelling.FORMATS}")
        raise typer.Exit(2)
    thresholds = None
    folder = modelfolder.promoted_folder(settings.models_dir, "classifier")
    if folder is not None:
        thresholds = modelfolder.read_card(folder)["thresholds"]
    rows = labelling.pick_items(open_store(settings), n, strategy, thresholds, seed)
    text = labelling.write_export(rows, fmt)
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"exported {len(rows)} items ({strategy}) to {output}")
    else:
        sys.stdout.write(text)


@label_app.command("import")
def label_import(
    file: Annotated[Path, typer.Argument(help="Labelled rows: .jsonl, .csv, or a Label Studio .json export.")],
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Import the good rows even if some are bad.")] = False,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Import people's labels, checked against the labelling guide. Each bad row (not UTF-8,
    a wrong shape, an unknown label or item, evidence not quoted from the item) is reported as
    `FILE:LINE: reason`, LINE the line the row starts on (a CSV record or Label Studio task may
    span lines). A file with any bad row imports nothing (unless --skip-bad) and exits 1;
    importing the same file again changes nothing.

    Example: minutes label import labelled.csv
    """
    from pipeline import labelling

    settings = settings_from(config, db=db)
    if not file.is_file():
        console.print(f"{file}: no such file")
        raise typer.Exit(2)
    database = open_store(settings)
    try:
        report = labelling.import_labels(database, file, skip_bad)
    except OSError as exc:  # unreadable (permissions, a disk error): nothing was imported
        console.print(f"{file}: cannot read ({exc.strerror or exc})", markup=False)
        raise typer.Exit(2) from None
    for bad in report["bad"]:
        console.print(f"{file}:{bad['line']}: {bad['error']}", markup=False)
    if as_json:
        out.print(json.dumps(report))
    else:
        console.print(f"imported {report['imported']} labels, {report['unchanged']} already present, "
                      f"{len(report['bad'])} bad rows of {report['rows']}")
    raise typer.Exit(1 if report["bad"] else 0)


# ---------------------------------------------------------------- model registry
models_app = typer.Typer(help="List, promote and roll back trained models.\n\n"
                         "Example: minutes models promote VERSION --gold ../shared/corpus/dev.gold.jsonl",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(
    kind: Annotated[str, typer.Option(help="classifier or summariser.")] = "classifier",
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Model versions with their training data, date and metrics; * marks the promoted one.

    Example: minutes models list --kind classifier
    """

    settings = settings_from(config)
    versions = modelfolder.versions(settings.models_dir, kind)
    current = (modelfolder.history(settings.models_dir, kind) or [None])[-1]
    if as_json:
        out.print(json.dumps([{**v, "promoted": v["version"] == current} for v in versions]))
        return
    table = Table("", "version", "trained", "rows", "data hash", "validation metrics")
    for v in versions:
        metric = v["metrics"].get("macro_f1", v["metrics"].get("rougeL"))
        gold = v.get("gold_metrics", {})
        text = f"{metric}" + "".join(f"; {g}: {m}" for g, m in gold.items())
        table.add_row("*" if v["version"] == current else "", v["version"], v["trained_at"],
                      str(v["training_rows"]), v["data_hash"][:10], text)
    out.print(table)


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="Version folder name under models/<kind>/.")],
    gold: Annotated[Path, typer.Option("--gold", help="Gold JSONL both models are scored on.")],
    kind: Annotated[str, typer.Option(help="classifier (summariser promotion uses ROUGE-L).")] = "classifier",
    margin: Annotated[Optional[float], typer.Option(help="Required improvement (default from config, 0).")] = None,
    clear_gain: Annotated[bool, typer.Option(
        "--clear-gain", help="Promote only when the whole 95% paired interval of the gain is above the margin.")] = False,
    config: ConfigOption = None,
):
    """Promote a model only if it scores no worse than the current one on the same gold file.

    Both are scored on the same items, and the gain is printed with its 95% paired bootstrap
    interval: an interval that spans 0 says this file's items cannot tell the two apart. (It
    does not say what another training seed would give; see the README.)

    Example: minutes models promote 20251101-020000-ab12cd --gold data/labelled/holdout.gold.jsonl --clear-gain
    """
    from pipeline.evaluate import compare_for_promotion

    settings = settings_from(config, promote_margin=margin)
    with user_errors():
        decision = compare_for_promotion(settings, kind, version, gold, clear_gain)
    if decision["promote"]:
        modelfolder.promote(settings.models_dir, kind, version)
        console.print(f"promoted {kind} {version}: {decision['metric']} {decision['candidate']:.4f} "
                      f"vs current {decision['current_text']}; {decision['gain_text']}")
        return
    console.print(f"refused: {kind} {version} scores {decision['metric']} {decision['candidate']:.4f}, "
                  f"current {decision['current_version']} scores {decision['current']:.4f} "
                  f"(margin {settings.promote_margin}{', a clear gain asked' if clear_gain else ''}) on {gold}; "
                  f"{decision['gain_text']}")
    raise typer.Exit(1)


@models_app.command("rollback")
def models_rollback(
    kind: Annotated[str, typer.Option(help="classifier or summariser.")] = "classifier",
    config: ConfigOption = None,
):
    """Return to the previously promoted model.

    Example: minutes models rollback --kind classifier
    """

    settings = settings_from(config)
    try:
        version = modelfolder.rollback(settings.models_dir, kind)
    except modelfolder.ModelError as exc:
        console.print(f"error: {exc}")
        raise typer.Exit(1) from None
    console.print(f"{kind} is back to {version}")


# ---------------------------------------------------------------- backfill (pipeline.backfill)
@app.command()
def backfill(
    source: Annotated[Path, typer.Argument(help="A folder of minutes, or a manifest: .csv with a `path` (and optional `council`) column, or .jsonl of {\"path\", \"council\"?} or plain strings.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the Parquet results (new or empty).")],
    engine: Annotated[str, typer.Option(help="local (this process, as the nightly run) or ray (Ray Data).")] = "local",
    actors: Annotated[int, typer.Option(help="Ray: actors in the model pool, each with the models loaded once and one torch thread.", min=1)] = 2,
    address: Annotated[Optional[str], typer.Option(help="Ray: join this cluster (auto, or HEAD:6379 as `ray start --head` printed); without it a local cluster is started.")] = None,
    num_cpus: Annotated[Optional[int], typer.Option("--num-cpus", help="Ray: CPUs of the local cluster started without --address (default: all).", min=1)] = None,
    council: Annotated[Optional[str], typer.Option(help="Council name for documents whose manifest row names none.")] = None,
    model: ModelOption = None,
    summariser_model: Annotated[Optional[Path], typer.Option("--summariser", help="Summariser folder (default: the promoted one).")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Classify and brief many documents without the store: one Parquet row per item (source,
    council, committee, meeting date, item position, number and title, labels, a score per
    label, evidence as JSON, briefing, the two models' versions, and error). A document that
    cannot be read or parsed is a row with its error, never a failed job. Load the results with
    `minutes import-results`.

    Example: minutes backfill minutes/ --out results/ --engine ray --actors 8 --address auto
    """
    from pipeline.backfill import run_backfill

    settings = settings_from(config, model=model, summariser_model=summariser_model)
    with user_errors():
        report = run_backfill(source, out_dir, settings, engine, actors, address, num_cpus, council)
    if as_json:
        out.print(json.dumps(report.as_json()))
    else:
        started = f", start-up {report.startup_s:.1f} s" if report.startup_s else ""
        console.print(f"backfill ({report.engine}): {report.documents} documents, {report.items} items, "
                      f"{report.errors} errors in {report.seconds:.1f} s{started}; results in {report.out}",
                      markup=False)


@app.command("import-results")
def import_results_command(
    results: Annotated[Path, typer.Argument(help="The folder `minutes backfill --out` wrote.")],
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Load a backfill's Parquet results into the store, exactly once: documents as `minutes
    ingest` stores them, predictions and briefings under their models' versions. Running it
    again adds nothing; rows with an error are counted, not stored.

    Example: minutes import-results results/ --db data/minutes.db
    """
    from pipeline.backfill import import_results

    settings = settings_from(config, db=db)
    database = open_store(settings)
    report = import_results(database, results)
    if as_json:
        out.print(json.dumps(report.as_json()))
    else:
        console.print(f"imported {report.documents_new} new documents ({report.items_new} items; "
                      f"{report.documents_known} already stored), {report.predictions_new} predictions, "
                      f"{report.summaries_new} briefings; {report.errors} error rows skipped; store {settings.db}",
                      markup=False)


# ---------------------------------------------------------------- the review desk
@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; anything but 127.0.0.1, localhost or ::1 needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8750,
    token: Annotated[Optional[str], typer.Option(envvar="MINUTES_TOKEN", show_envvar=True, help="Secret every request must carry (at least 16 characters): open the desk once with ?token=TOKEN, or send Authorization: Bearer TOKEN.")] = None,
    db: DbOption = None,
    config: ConfigOption = None,
):
    """Open the review desk in a browser: flagged items with their evidence (filter by label,
    council, committee, date and confidence), a form to confirm or correct each one (saved as a
    label, checked as `minutes label import` checks a file), trends across councils, and the
    overnight runs and model registry. `minutes train` learns from the saved labels.

    Listens on 127.0.0.1 unless --host says otherwise, which then needs --token. Ctrl-C stops it.

    Example: minutes serve --db data/minutes.db  (then open http://127.0.0.1:8750/)
    """
    import os

    from pipeline.serve import bind_problem, listening_socket
    from pipeline.serve import serve as run_desk

    settings = settings_from(config, db=db)
    token = token or None  # MINUTES_TOKEN= (empty) is no token
    problem = bind_problem(host, token)
    if problem:
        console.print(f"error: {problem}", markup=False)
        raise typer.Exit(EXIT_USAGE)
    if not Path(settings.db).is_file():
        console.print(f"error: {settings.db}: no store here; run `minutes nightly` (or `make demo`) "
                      "first, or pass --db", markup=False)
        raise typer.Exit(EXIT_USAGE)
    open_store(settings).close()  # a damaged or newer store is one line now, not on first request
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        console.print(f"error: cannot listen on {host}:{port} ({reason}); pass "
                      "--port to use another", markup=False)
        raise typer.Exit(EXIT_USAGE) from None
    shown = f"[{host}]" if ":" in host else host
    console.print(f"review desk on http://{shown}:{port}/ over {settings.db}"
                  + (" (token required)" if token else "") + "; Ctrl-C stops it", markup=False)
    run_desk(settings, host, port, token, sock)


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
