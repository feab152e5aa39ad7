"""The overnight run: ingest -> classify -> summarise -> brief, with a lock, a run record, and
batches committed one at a time so a killed run is finished, exactly once, by the next.

Only the order lives here: each stage's store-facing runner lives in its stage's module
(`ingest.ingest_paths`, `classify.classify_pending`, `summarise.summarise_pending`,
`brief.write_brief`), which the CLI also calls on its own (`minutes classify`, ...), with the
models as the stage objects of `pipeline.stages`.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import store
from pipeline.config import Settings

EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 75
# EX_UNAVAILABLE: the run's results are stored and its briefing written, but mailing it failed.
EXIT_DELIVERY_FAILED = 69


class Locked(Exception):
    """Another run holds the lock."""


class RunLock:
    """An exclusive lock beside the store. flock is released by the kernel when its holder dies,
    so a killed run never blocks the next; the pid it left behind is reported as stale."""

    def __init__(self, db_path: Path):
        self.path = Path(str(db_path) + ".lock")
        self.handle = None
        self.stale_pid: int | None = None

    def __enter__(self) -> "RunLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "a+")
        except OSError as exc:
            # A store error, not a crash: the folder or the lock file itself is unusable.
            raise store.StoreError(f"{self.path}: cannot open the run lock ({exc.strerror or exc}); "
                                   "it must be a file this user can write, beside the store") from None
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise Locked(f"another minutes run (pid {holder}) holds {self.path}") from None
        self.handle.seek(0)
        previous = self.handle.read().strip()
        if previous.isdigit() and int(previous) != os.getpid():
            self.stale_pid = int(previous)  # its holder died without releasing: cleared now
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc) -> None:
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.flush()
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


@dataclass
class NightlyResult:
    run_id: int
    items_new: int = 0
    items_classified: int = 0
    items_summarised: int = 0
    briefing: str | None = None
    failed: list[dict] = field(default_factory=list)
    model_version: str | None = None
    stale_lock_cleared: int | None = None
    interrupted_runs: int = 0
    # The outcome of mailing the briefing (pipeline.deliver); None when delivery is not configured.
    delivery: dict | None = None

    def as_json(self) -> dict:
        return {
            "run_id": self.run_id, "items_new": self.items_new,
            "items_classified": self.items_classified, "items_summarised": self.items_summarised,
            "briefing": self.briefing, "failed": self.failed, "model_version": self.model_version,
            "delivery": self.delivery,
        }

    @property
    def is_delivery_failed(self) -> bool:
        return bool(self.delivery) and self.delivery["status"] == "failed"

    @property
    def did_model_work(self) -> bool:
        return bool(self.items_classified or self.items_summarised)


def run_nightly(settings: Settings, on_error: Callable[[str, str], None] | None = None,
                on_stage: Callable[[str, int, int], None] | None = None) -> NightlyResult:
    """One overnight run under the lock. Raises Locked when another run holds it."""
    from pipeline.brief import write_brief
    from pipeline.classify import classify_pending
    from pipeline.ingest import ingest_paths, limits_from
    from pipeline.stages import Classifier, Summariser
    from pipeline.summarise import summarise_pending

    with RunLock(settings.db) as lock:
        db = store.connect(settings.db)
        interrupted = store.mark_interrupted_runs(db)
        # Fail before ingesting anything when a model is missing or its card is wrong; the
        # weights load only when there is something to classify or summarise.
        classifier = Classifier.promoted(settings)
        summariser = Summariser.promoted(settings)
        previous = store.last_successful_run(db)
        run_id = store.start_run(db, None)
        result = NightlyResult(run_id, stale_lock_cleared=lock.stale_pid, interrupted_runs=interrupted)
        paths = None
        files_read = 0

        def on_file(_path) -> None:  # a backfill of many files reports its progress too
            nonlocal files_read
            files_read += 1
            if on_stage:
                on_stage("ingesting", files_read, None)

        try:
            for source in settings.sources:
                if source.kind == "path":
                    report = ingest_paths(db, [Path(source.path)], limits=limits_from(settings),
                                          council=source.council, on_error=on_error, progress=on_file)
                else:
                    from pipeline.fetch import fetch_moderngov

                    report = fetch_moderngov(db, settings, source, on_error=on_error)
                result.items_new += report.items_new
                result.failed += report.failed
            result.items_classified = classify_pending(
                db, classifier, run_id, (lambda d, t: on_stage("classifying", d, t)) if on_stage else None,
            )
            result.model_version = classifier.version
            # Each flagged item is briefed from the classifier's evidence stored with its labels.
            result.items_summarised = summarise_pending(
                db, summariser, classifier.version, run_id,
                (lambda d, t: on_stage("summarising", d, t)) if on_stage else None,
            )
            items = store.items_to_brief(db, result.model_version)
            if items or not previous or not previous.get("briefing"):
                period = (f"items not in an earlier briefing (the last was run {previous['id']})"
                          if previous else "all stored items")
                paths = write_brief(db, settings, items, period)
                result.briefing = str(paths["html"])
            else:
                # Nothing new: the last briefing stays as it was, not replaced by an empty one.
                result.briefing = previous["briefing"]
            status = "failed-inputs" if result.failed else "ok"
            store.finish_run(db, run_id, status, {
                "items_new": result.items_new, "items_classified": result.items_classified,
                "items_summarised": result.items_summarised, "items_briefed": len(items),
            }, result.failed, result.briefing, result.model_version, store.max_item_id(db),
                briefed_ids=[item["id"] for item in items])
        except BaseException:
            store.finish_run(db, run_id, "error", {}, result.failed, None, result.model_version, None)
            raise
        if settings.delivery is not None:
            # After finish_run: the results are stored whatever the mail server does.
            from pipeline.deliver import deliver_nightly

            result.delivery = deliver_nightly(db, settings, run_id, paths if items else None)
        return result
