"""Mail the directors' briefing: the HTML as the body with a plain-text alternative, the
Markdown and JSON attached, over SMTP (STARTTLS, TLS or plain), each attempt recorded on its run.

The nightly run calls `deliver_nightly` after its results are stored, so a failed send costs
nothing but the mail; `minutes send --run ID` calls `resend_run`.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import tempfile
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from pipeline import store
from pipeline.config import LABEL_TITLES, LABELS, ConfigError, Delivery, Settings, delivery_password

SENT, FAILED, SKIPPED = "sent", "failed", "skipped"


class DeliveryError(Exception):
    """A briefing that cannot be sent as asked (no [delivery], no such run, no briefing)."""


def subject_line(data: dict, day: str) -> str:
    """"Children's services briefing 2025-03-11: intervention notices 1, inspection outcomes 2,
    workforce concerns 0": what a director sees in the inbox before opening it."""
    counts = ", ".join(f"{LABEL_TITLES[label].lower()} {data['counts'].get(label, 0)}" for label in LABELS)
    return f"{data['title']} {day}: {counts}"


def build_message(delivery: Delivery, paths: dict[str, Path], day: str) -> EmailMessage:
    """The briefing files as one message: text/plain and text/html alternatives, then the
    Markdown and JSON as attachments. The HTML is the file `brief` wrote, already escaped."""
    from pipeline.brief import render_text

    data = json.loads(Path(paths["json"]).read_text(encoding="utf-8"))
    message = EmailMessage()
    message["Subject"] = subject_line(data, day)
    message["From"] = delivery.sender
    message["To"] = ", ".join(delivery.to)
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    message["Message-ID"] = make_msgid(domain=delivery.sender.rsplit("@", 1)[-1])
    message.set_content(render_text(data))
    message.add_alternative(Path(paths["html"]).read_text(encoding="utf-8"), subtype="html")
    # As text, so it goes with its charset (UTF-8): bytes would be read as ASCII.
    message.add_attachment(Path(paths["md"]).read_text(encoding="utf-8"), subtype="markdown",
                           filename=f"briefing-{day}.md")
    message.add_attachment(Path(paths["json"]).read_bytes(), maintype="application", subtype="json",
                           filename=f"briefing-{day}.json")
    return message


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def send_message(delivery: Delivery, message: EmailMessage, password: str | None) -> None:
    """Hand the message to the SMTP server; any failure is an OSError or SMTPException."""
    context = ssl.create_default_context()
    port = delivery.port_in_use
    if delivery.security == "tls":
        client = smtplib.SMTP_SSL(delivery.host, port, timeout=delivery.timeout_s, context=context)
    else:
        client = smtplib.SMTP(delivery.host, port, timeout=delivery.timeout_s)
    with client:
        if delivery.security == "starttls":
            # Refuses (SMTPNotSupportedError) a server that does not offer it, rather than send
            # the password and the briefing in clear.
            client.starttls(context=context)
        if delivery.user:
            client.login(delivery.user, password or "")
        refused = client.send_message(message, delivery.sender, delivery.to)
    if refused:
        raise smtplib.SMTPRecipientsRefused(refused)


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "the server refused " + ", ".join(sorted(exc.recipients))
    if isinstance(exc, smtplib.SMTPResponseException):
        detail = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        return f"the server answered {exc.smtp_code} {_one_line(detail)}"
    if isinstance(exc, TimeoutError):
        return "no answer from the server (timed out)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _one_line(exc) or type(exc).__name__


def send_briefing(db, delivery: Delivery, run_id: int, paths: dict[str, Path]) -> dict:
    """Send a run's briefing files and record the attempt on the run: {"status": "sent" or
    "failed", "reason", "recipients", "subject", "attempted_at"}. Never raises for a send
    that fails: the caller reports the outcome."""
    run = store.run(db, run_id)
    day = (run["started_at"] if run else store.now())[:10]
    try:
        message = build_message(delivery, paths, day)
    except (OSError, ValueError) as exc:  # the briefing files unreadable: recorded, not a crash
        reason = f"cannot read the briefing files ({_failure_reason(exc)})"
        return store.save_delivery(db, run_id, FAILED, delivery.to, None, reason)
    try:
        send_message(delivery, message, delivery_password(delivery))
    except ConfigError as exc:
        reason = str(exc)
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        reason = f"{delivery.host}:{delivery.port_in_use}: {_failure_reason(exc)}"
    else:
        return store.save_delivery(db, run_id, SENT, delivery.to, message["Subject"])
    return store.save_delivery(db, run_id, FAILED, delivery.to, message["Subject"], _one_line(reason))


def deliver_nightly(db, settings: Settings, run_id: int, paths: dict[str, Path] | None) -> dict | None:
    """After a nightly run: send its briefing when delivery is configured and the briefing is
    new (`paths`, None when the run briefed nothing new) and flags something. An old briefing is
    never sent again here; that takes `minutes send --run ID`."""
    if settings.delivery is None:
        return None
    if paths is None:
        return {"status": SKIPPED, "reason": "no new items since the last briefing"}
    data = json.loads(Path(paths["json"]).read_text(encoding="utf-8"))
    if not data["flagged"]:
        return {"status": SKIPPED, "reason": "no flagged items in this run's briefing"}
    return send_briefing(db, settings.delivery, run_id, paths)


def resend_run(db, settings: Settings, run_id: int) -> dict:
    """Send a run's briefing again, rebuilt from the items that run briefed (later runs have
    overwritten the files in out_dir). DeliveryError when it cannot be."""
    from pipeline.brief import write_brief

    if settings.delivery is None:
        raise DeliveryError("delivery is not configured: add a [delivery] table to the config file "
                            "(see README, Delivery) and pass --config")
    run = store.run(db, run_id)
    if run is None:
        raise DeliveryError(f"no run {run_id} in {settings.db} (see `minutes runs`)")
    briefed = store.briefed_in(db, run_id)
    if not briefed:
        earlier = store.last_run_with_briefing(db, run_id)
        hint = f"; run {earlier} wrote the briefing it kept" if earlier else ""
        raise DeliveryError(f"run {run_id} ({run['status']}) wrote no briefing of its own{hint}")
    items = store.items_by_ids(db, briefed)
    with tempfile.TemporaryDirectory(prefix="minutes-send-") as scratch:
        paths = write_brief(db, settings, items, f"items first briefed in run {run_id}", Path(scratch))
        return send_briefing(db, settings.delivery, run_id, paths)
