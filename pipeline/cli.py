"""The `minutes` command line: one small command per stage, each parsing options and calling
the stage's library function. Nothing else lives here."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline import store
from pipeline.config import LABELS, ConfigError, Settings, load_settings

app = typer.Typer(
    help="Read council minutes overnight and brief children's services directors.\n\n"
    "Example: minutes ingest data/samples && minutes classify && minutes brief",
    no_args_is_help=True,
    rich_markup_mode=None,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)

DbOption = Annotated[Optional[Path], typer.Option("--db", help="Store file (default data/minutes.db, or MINUTES_DB).")]
ConfigOption = Annotated[Optional[Path], typer.Option("--config", help="TOML settings file.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
ModelOption = Annotated[Optional[Path], typer.Option("--model", help="Classifier folder (default: the promoted model).")]


def settings_from(config: Path | None = None, **overrides) -> Settings:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        console.print(f"error: {exc}")
        raise typer.Exit(2) from None
    return settings.with_overrides(**overrides)


def open_store(settings: Settings):
    try:
        return store.connect(settings.db)
    except store.StoreError as exc:
        console.print(f"error: {exc}")
        raise typer.Exit(2) from None


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )


def error_line(path: str, reason: str) -> None:
    console.print(f"{path}: {reason}", markup=False)


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
    exit status 1 when any failed.

    Example: minutes ingest data/samples ../shared/corpus/dev --db data/minutes.db
    """
    from pipeline.ingest import expand_paths, ingest_paths

    settings = settings_from(config, db=db)
    database = open_store(settings)
    files, _ = expand_paths(paths)
    with progress_bar() as bar:
        task = bar.add_task("ingesting", total=len(files))
        report = ingest_paths(
            database, paths, max_file_mb=settings.max_file_mb, council=council,
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


def _item_labels(database, item_ids) -> dict:
    return store.latest_predictions(database, item_ids)


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
    predictions = _item_labels(database, [r["id"] for r in rows])
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


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
