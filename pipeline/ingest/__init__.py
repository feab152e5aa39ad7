"""Ingest: files, folders or fetched pages -> documents and items in the store.

Idempotent by content hash; one bad input is one `path: reason` line and never stops the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import store
from pipeline.ingest.readers import InputError, read_document
from pipeline.ingest.split import split_document

# Inside a folder only these are read (a folder of minutes often holds an index or notes too);
# a file named on the command line is read whatever its name.
MINUTES_SUFFIXES = {".html", ".htm", ".aspx", ".txt", ".text", ".pdf", ".docx"}
MIN_WORDS = 8


@dataclass
class IngestReport:
    documents_new: int = 0
    documents_replaced: int = 0
    items_new: int = 0
    unchanged: int = 0
    failed: list[dict] = field(default_factory=list)
    item_ids: list[int] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "documents_new": self.documents_new,
            "documents_replaced": self.documents_replaced,
            "items_new": self.items_new,
            "unchanged": self.unchanged,
            "failed": self.failed,
        }

    def merge(self, other: "IngestReport") -> None:
        self.documents_new += other.documents_new
        self.documents_replaced += other.documents_replaced
        self.items_new += other.items_new
        self.unchanged += other.unchanged
        self.failed += other.failed
        self.item_ids += other.item_ids


def expand_paths(paths: Iterable[Path]) -> tuple[list[Path], list[dict]]:
    """Files to read, in a stable order, and the paths that do not exist."""
    files: list[Path] = []
    missing = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in MINUTES_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            files.append(path)
        else:
            missing.append({"path": str(path), "error": "no such file or folder"})
    return files, missing


def parse_bytes(name: str, data: bytes) -> tuple[str, dict]:
    """Bytes of one document -> (format, split result). Raises InputError."""
    fmt, text, page_title = read_document(name, data)
    parsed = split_document(text, page_title)
    if sum(len(item["text"].split()) for item in parsed["items"]) < MIN_WORDS:
        raise InputError(f"no minutes found in this {fmt} document (too little text)")
    return fmt, parsed


def ingest_bytes(db, source: str, data: bytes, meta: dict | None = None) -> IngestReport:
    """Store one document given as bytes (a file's or a fetched page's)."""
    report = IngestReport()
    meta = meta or {}
    content_hash = hashlib.sha256(data).hexdigest()
    # Cheap early check, so unchanged files are not parsed; save_document decides again inside
    # its write transaction, since another process may store this document meanwhile.
    if store.unchanged_document(db, source, content_hash) is not None:
        report.unchanged += 1
        return report
    fmt, parsed = parse_bytes(source, data)
    document = {
        "source": source,
        "content_hash": content_hash,
        "format": fmt,
        "council": meta.get("council") or parsed.get("council"),
        "committee": meta.get("committee") or parsed["committee"],
        "meeting_date": meta.get("meeting_date") or parsed["meeting_date"],
        "fetched_at": meta.get("fetched_at"),
    }
    _, outcome, item_ids = store.save_document(db, document, parsed["items"])
    if outcome == "unchanged":
        report.unchanged += 1
        return report
    report.documents_replaced += int(outcome == "replaced")
    report.documents_new += int(outcome == "new")
    report.items_new += len(parsed["items"])
    report.item_ids += item_ids
    return report


def ingest_paths(
    db,
    paths: Iterable[Path],
    max_file_mb: float = 20.0,
    council: str | None = None,
    on_error: Callable[[str, str], None] | None = None,
    progress: Callable[[Path], None] | None = None,
) -> IngestReport:
    files, missing = expand_paths(paths)
    report = IngestReport(failed=list(missing))
    for entry in missing:
        if on_error:
            on_error(entry["path"], entry["error"])
    limit = int(max_file_mb * 1024 * 1024)
    for path in files:
        source = str(path.resolve())
        try:
            size = path.stat().st_size
            if size > limit:
                raise InputError(
                    f"file too large ({size / 1048576:.1f} MB; the limit is {max_file_mb:g} MB, "
                    "set max_file_mb to raise it)"
                )
            data = path.read_bytes()
            report.merge(ingest_bytes(db, source, data, {"council": council}))
        except (InputError, OSError) as exc:
            reason = str(exc) if isinstance(exc, InputError) else f"cannot read ({exc.strerror})"
            report.failed.append({"path": str(path), "error": reason})
            if on_error:
                on_error(str(path), reason)
        if progress:
            progress(path)
    return report
