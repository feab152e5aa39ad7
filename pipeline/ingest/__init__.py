"""Ingest: files, folders or fetched pages -> documents and items in the store.

`parse_source` is the pure part: one document's bytes -> its document record and item records,
no store (a backfill runs it anywhere). `ingest_bytes` and `ingest_paths` add the store's side.
Idempotent by content hash; one bad input is one `path: reason` line and never stops the rest.
"""

from __future__ import annotations

import atexit
import dataclasses
import errno
import hashlib
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from pipeline import store
from pipeline.ingest.readers import (
    DEFAULT_LIMITS,
    InputError,
    Limits,
    describe,
    one_line,
    read_document,
)
from pipeline.ingest.split import split_document

__all__ = ["DEFAULT_LIMITS", "IngestReport", "InputError", "Limits", "expand_paths", "ingest_bytes",
           "ingest_paths", "limits_from", "parse_bytes", "parse_document", "parse_source"]

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


def limits_from(settings) -> Limits:
    """The parse limits of a Settings (fields of the same names)."""
    return Limits(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(Limits)})


def expand_paths(paths: Iterable[Path]) -> tuple[list[Path], list[dict]]:
    """Files to read, in a stable order, and the problems met on the way, each a failure of its
    own: a path that does not exist or cannot be read, a sub-folder that cannot be listed, a
    broken or looping link, a named folder with no minutes in it. Links are followed, and each
    folder is read once, so a link back up the tree ends there instead of looping."""
    files: list[Path] = []
    problems: list[dict] = []
    for path in map(Path, paths):
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            problems.append(_os_problem(path, exc))
            continue
        if stat.S_ISDIR(mode):
            found = _minutes_files(path, problems)
            if not found:
                problems.append({"path": str(path), "error": "no minutes files in this folder "
                                 f"(looked for {', '.join(sorted(MINUTES_SUFFIXES))})"})
            files += found
        elif stat.S_ISREG(mode):
            files.append(path)
        else:
            problems.append({"path": str(path), "error": "not a regular file (a pipe, socket or device)"})
    return files, problems


def _minutes_files(root: Path, problems: list[dict]) -> list[Path]:
    """Files with a minutes suffix under root, hidden files and folders left out."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            info = folder.stat()
            if (info.st_dev, info.st_ino) in seen:
                continue  # reached again through a link: already read
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as listing:
                entries = [e for e in listing if not e.name.startswith(".")]
        except OSError as exc:
            problems.append(_os_problem(folder, exc, "folder"))
            continue
        for entry in entries:
            path = Path(entry.path)
            try:
                if entry.is_dir():
                    folders.append(path)
                    continue
                if path.suffix.lower() not in MINUTES_SUFFIXES:
                    continue
                if entry.is_file():
                    found.append(path)
                elif entry.is_symlink():
                    os.stat(path)  # a link to nothing: raises, and the reason is its line
                    # a link to a device or pipe ("zero.txt" -> /dev/zero): reading it never ends
                    problems.append({"path": str(path), "error": "a link to something that is not a regular "
                                     "file (a pipe, socket or device)"})
                else:
                    problems.append({"path": str(path), "error": "not a regular file (a pipe, socket or device)"})
            except OSError as exc:
                problems.append(_os_problem(path, exc))
    return sorted(found)


def _source(path: Path) -> str:
    """A file's name in the store: its absolute path, links resolved, and bytes of the name that
    are not UTF-8 written as escapes (SQLite text must be UTF-8)."""
    try:
        resolved = path.resolve()
    except RuntimeError:  # a link loop (Python before 3.13); the read would have failed first
        resolved = path.absolute()
    return os.fsencode(resolved).decode("utf-8", "backslashreplace")


def _os_problem(path: Path, exc: OSError, kind: str = "file or folder") -> dict:
    if exc.errno == errno.ENOENT:
        reason = "broken link (its target does not exist)" if path.is_symlink() else f"no such {kind}"
    elif exc.errno == errno.ELOOP:
        reason = "link loop (a link that leads back to itself)"
    else:
        reason = f"cannot read{' folder' if kind == 'folder' else ''} ({exc.strerror or exc})"
    return {"path": str(path), "error": reason}


def parse_bytes(name: str, data: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[str, dict]:
    """Bytes of one document -> (format, split result), in this process. Raises InputError."""
    fmt, text, page_title = read_document(name, data, limits)
    # Over-long lines are refused before the splitter's patterns ever see them: a 16 MB line
    # costs seconds in each, and no item may be that long anyway.
    for number, line in enumerate(text.split("\n"), 1):
        if len(line) > limits.max_item_chars:
            raise InputError(f"line {number} longer than an item may be (limit {limits.max_item_chars} characters)")
    parsed = split_document(text, page_title)
    # An over-long item rejects the document rather than being cut: a cut item would be
    # classified and briefed on text its meeting never had, and the user would not know.
    for number, item in enumerate(parsed["items"], 1):
        if len(item["text"]) > limits.max_item_chars:
            raise InputError(f"item {number} longer than limit (limit {limits.max_item_chars} characters)")
    if sum(len(item["text"].split()) for item in parsed["items"]) < MIN_WORDS:
        raise InputError(f"no minutes found in this {fmt} document (too little text)")
    return fmt, parsed


def parse_document(name: str, data: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[str, dict]:
    """parse_bytes within limits.parse_budget_s: in the parse worker, which is stopped when the
    budget is spent (in this process, unbounded, when the budget is 0 or less). Every failure,
    whatever raised it, is an InputError with a one-line reason."""
    outcome = _PARSER.parse(name, data, limits) if limits.parse_budget_s > 0 else _parse_outcome(name, data, limits)
    if outcome[0] != "ok":
        raise InputError(outcome[1])
    return outcome[1], outcome[2]


def _parse_outcome(name: str, data: bytes, limits: Limits) -> tuple:
    """("ok", format, parsed) or ("failed", reason): nothing a parser raises gets out."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the user gets one line per file, not library warnings
            return ("ok", *parse_bytes(name, data, limits))
    except InputError as exc:
        return ("failed", one_line(exc))
    except Exception as exc:  # a reader's bug or a library's surprise: still this file's line
        return ("failed", f"unexpected error ({describe(exc)})")


class ParseWorker:
    """A child process that parses documents one at a time, started once and reused (a few
    tenths of a second to start, then about a millisecond per document to pass its bytes and
    items); killed and started again when a parse overruns its budget or the process dies. A
    plain `python -c` child, not multiprocessing's spawn, which would import the parent's
    __main__ (the whole CLI) first. The store is only ever touched by the parent."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._owner = 0
        self._lock = threading.Lock()  # one document at a time, whichever thread asks

    def parse(self, name: str, data: bytes, limits: Limits) -> tuple:
        with self._lock:
            if self._process is not None and self._owner == os.getpid() and self._process.poll() is not None:
                self._stop()  # it died while idle: not this document's fault, start another
            if self._process is None or self._owner != os.getpid():
                self._start()
            try:
                self._conn.send((name, data, limits))
                finished = self._conn.poll(limits.parse_budget_s)
                outcome = self._conn.recv() if finished else None
            except (OSError, EOFError):
                status = self._stop()
                return ("failed", f"the parser stopped unexpectedly ({_describe_exit(status)})")
            if outcome is None:
                self._stop()
                return ("failed", f"parse took longer than its budget (limit {limits.parse_budget_s:g} s)")
            return outcome

    def _start(self) -> None:
        parent_end, child_end = socket.socketpair()
        # The child imports this checkout's pipeline, whatever the installed one is.
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", "import sys; from pipeline.ingest import serve; serve(int(sys.argv[1]))",
                 str(child_end.fileno())],
                pass_fds=(child_end.fileno(),), env=env,
                # Nothing a parser prints can reach the user's output; failures come back as reasons.
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            parent_end.close()
            raise InputError(f"cannot start the parser process ({exc.strerror or exc})") from None
        finally:
            child_end.close()
        self._conn, self._owner = Connection(parent_end.detach()), os.getpid()
        try:
            ready = self._conn.poll(60) and self._conn.recv() == "ready"
        except (OSError, EOFError):
            ready = False
        if not ready:
            status = self._stop()
            raise InputError(f"cannot start the parser process ({_describe_exit(status)})")

    def _stop(self) -> int | None:
        """Stop the child (now: it may be stuck) and forget it; its exit status."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is None:
            return None
        if conn is not None:
            conn.close()
        process.kill()
        return process.wait()

    def close(self) -> None:
        """At exit: let an idle child finish on its own (it reads the closed connection)."""
        with self._lock:
            if self._process is not None and self._owner == os.getpid():
                self._conn.close()
                try:
                    self._process.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process = self._conn = None


def _describe_exit(status: int | None) -> str:
    if status is None:
        return "no exit status"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


def serve(fd: int) -> None:
    """The parse worker's loop, in the child ParseWorker starts: (name, data, limits) in,
    _parse_outcome out, until the connection closes."""
    conn = Connection(fd)
    conn.send("ready")
    while True:
        try:
            name, data, limits = conn.recv()
        except (EOFError, OSError):
            return
        # If the parent is gone (killed) while a parse is stuck, nobody will kill this process:
        # the alarm's default action ends it a little after the budget.
        signal.alarm(int(min(limits.parse_budget_s, 10**8)) + 10)
        outcome = _parse_outcome(name, data, limits)
        signal.alarm(0)
        try:
            conn.send(outcome)
        except OSError:
            return


_PARSER = ParseWorker()
atexit.register(_PARSER.close)


def parse_source(source: str, data: bytes, meta: dict | None = None, limits: Limits = DEFAULT_LIMITS,
                 name: str | None = None, content_hash: str | None = None) -> tuple[dict, list[dict]]:
    """One document's bytes -> (its document record, its item records), as the store keeps them;
    `meta` (council, committee, meeting_date, fetched_at) wins over what the document says.
    `name` is what the format is told from (default `source`). Raises InputError."""
    meta = meta or {}
    fmt, parsed = parse_document(name or source, data, limits)
    document = {
        "source": source,
        "content_hash": content_hash or hashlib.sha256(data).hexdigest(),
        "format": fmt,
        "council": meta.get("council") or parsed.get("council"),
        "committee": meta.get("committee") or parsed["committee"],
        "meeting_date": meta.get("meeting_date") or parsed["meeting_date"],
        "fetched_at": meta.get("fetched_at"),
    }
    return document, parsed["items"]


def ingest_bytes(db, source: str, data: bytes, meta: dict | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> IngestReport:
    """Store one document given as bytes (a file's or a fetched page's)."""
    report = IngestReport()
    # Cheap early check, so unchanged files are not parsed; save_document decides again inside
    # its write transaction, since another process may store this document meanwhile.
    content_hash = hashlib.sha256(data).hexdigest()
    if store.unchanged_document(db, source, content_hash) is not None:
        report.unchanged += 1
        return report
    document, items = parse_source(source, data, meta, limits, content_hash=content_hash)
    _, outcome, item_ids = store.save_document(db, document, items)
    if outcome == "unchanged":
        report.unchanged += 1
        return report
    report.documents_replaced += int(outcome == "replaced")
    report.documents_new += int(outcome == "new")
    report.items_new += len(items)
    report.item_ids += item_ids
    return report


def ingest_paths(
    db,
    paths: Iterable[Path],
    *,
    limits: Limits = DEFAULT_LIMITS,
    council: str | None = None,
    on_error: Callable[[str, str], None] | None = None,
    progress: Callable[[Path], None] | None = None,
) -> IngestReport:
    files, problems = expand_paths(paths)
    report = IngestReport(failed=list(problems))
    for entry in problems:
        if on_error:
            on_error(entry["path"], entry["error"])
    limit = int(limits.max_file_mb * 1024 * 1024)
    for path in files:
        try:
            size = path.stat().st_size
            if size <= limit:
                # At most one byte past the limit: a file that grew since is still refused.
                with open(path, "rb") as handle:
                    data = handle.read(limit + 1)
                size = max(size, len(data))
            if size > limit:
                raise InputError(
                    f"file too large ({size / 1048576:.1f} MB; the limit is {limits.max_file_mb:g} MB, "
                    "set max_file_mb to raise it)"
                )
            report.merge(ingest_bytes(db, _source(path), data, {"council": council}, limits))
        except (InputError, OSError) as exc:
            reason = str(exc) if isinstance(exc, InputError) else f"cannot read ({exc.strerror or exc})"
            report.failed.append({"path": str(path), "error": reason})
            if on_error:
                on_error(str(path), reason)
        if progress:
            progress(path)
    return report
