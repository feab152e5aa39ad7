"""The directors' briefing: flagged items grouped by label, with their briefings, evidence and
confidence, written as one self-contained HTML file, Markdown and JSON.

Everything taken from minutes is data: the HTML template autoescapes every value.
The rendering takes plain records; `write_brief` reads them from the store for the nightly run,
`minutes brief` and `minutes send`.
"""

from __future__ import annotations

import base64
import io
import json
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from pipeline import store
from pipeline.config import LABEL_TITLES, LABELS


def briefing_data(items: list[dict], predictions: dict[int, dict], summaries: dict[int, dict],
                  title: str, recipients: str, period: str) -> dict:
    """Plain data for the templates: the items, each with its prediction and summary (by item
    id; an item with no prediction is left out)."""
    flagged, unflagged = [], []
    for item in items:
        prediction = predictions.get(item["id"])
        if prediction is None:
            continue
        summary = summaries.get(item["id"])
        entry = {
            "id": item["id"], "title": item["title"] or "(untitled item)",
            "council": item["council"], "committee": item["committee"], "date": item["date"],
            "source": item["source"], "link": _link(item["source"]),
            "labels": prediction["labels"], "scores": prediction["scores"],
            "evidence": prediction["evidence"],
            "briefing": summary["briefing"] if summary else None,
            "is_fallback": bool(summary["is_fallback"]) if summary else False,
            # Where the item was read, only what is known: "( )" told a director nothing.
            "where": ", ".join(part for part in (item["council"], item["committee"], item["date"]) if part),
        }
        (flagged if prediction["labels"] else unflagged).append(entry)
    groups = []
    for label in LABELS:  # intervention notices first: the gravest signal
        members = [e for e in flagged if label in e["labels"]]
        members.sort(key=lambda e: (-(e["scores"].get(label) or 0), e["date"] or ""))
        groups.append({"label": label, "title": LABEL_TITLES[label], "items": members})
    sources = sorted({i["source"] for i in items})
    dates = sorted(i["date"] for i in items if i["date"])
    return {
        "date_range": f"meetings from {dates[0]} to {dates[-1]}" if dates else "meeting dates not recorded",
        "title": title, "recipients": recipients, "period": period,
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "counts": {label: sum(label in e["labels"] for e in flagged) for label in LABELS},
        "label_titles": LABEL_TITLES, "groups": groups, "also_read": unflagged,
        "sources": sources, "items_read": len(items), "flagged": len(flagged),
    }


def _link(source: str) -> str:
    if source.startswith(("http://", "https://")):
        return source
    return Path(source).resolve().as_uri()


def monthly_chart(items: list[dict], predictions: dict[int, dict]) -> str | None:
    """Flagged items per label per month among `items` (undated and superseded ones left out),
    labelled by `predictions` (by item id), as a base64 PNG; None under two months of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts: dict[str, Counter] = defaultdict(Counter)
    months = set()
    for item in items:
        month = (item["date"] or "")[:7]
        if not month or not item["is_current"]:
            continue
        months.add(month)
        for label in predictions[item["id"]]["labels"]:
            counts[label][month] += 1
    if len(months) < 2:
        return None
    ordered = sorted(months)
    figure, axis = plt.subplots(figsize=(7, 2.8), dpi=110)
    width = 0.8 / len(LABELS)
    for j, label in enumerate(LABELS):
        axis.bar([i + j * width for i in range(len(ordered))],
                 [counts[label][m] for m in ordered], width, label=LABEL_TITLES[label])
    axis.set_xticks([i + width for i in range(len(ordered))])
    axis.set_xticklabels(ordered, rotation=45, ha="right", fontsize=7)
    axis.set_ylabel("flagged items")
    axis.legend(fontsize=7, frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


_ENV = Environment(
    loader=PackageLoader("pipeline", "templates"),
    autoescape=select_autoescape(["html", "htm", "xml", "html.j2"]),
    trim_blocks=True, lstrip_blocks=True,
)


def _markdown_escape(text: str | None) -> str:
    if not text:
        return ""
    # Minutes text in Markdown is data too: neutralise markup characters and raw HTML.
    out = text.replace("\\", "\\\\")
    for ch in "`*_[]<>#|":
        out = out.replace(ch, "\\" + ch)
    return out


_ENV.filters["md"] = _markdown_escape
_ENV.filters["pct"] = lambda v: f"{100 * float(v or 0):.0f}%"


def render_text(data: dict) -> str:
    """The briefing as plain text (the e-mail's text part): no markup, so nothing to escape."""
    return _ENV.get_template("briefing.txt.j2").render(**data)


def write_briefing(data: dict, out_dir: Path, chart_png: str | None) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "html": out_dir / "briefing.html",
        "md": out_dir / "briefing.md",
        "json": out_dir / "briefing.json",
    }
    html_text = _ENV.get_template("briefing.html.j2").render(**data, chart_png=chart_png)
    md_text = _ENV.get_template("briefing.md.j2").render(**data)
    for key, text in (("html", html_text), ("md", md_text),
                      ("json", json.dumps(data, indent=2, ensure_ascii=False))):
        tmp = paths[key].with_suffix(paths[key].suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(paths[key])  # a reader never sees half a briefing
    return paths


# ---------------------------------------------------------------- the store's side
def write_brief(db, settings, items: list[dict], period: str, out_dir: Path | None = None) -> dict[str, Path]:
    """The briefing of `items` with their latest predictions and summaries, and the chart of
    every item the store holds a prediction for, written to `out_dir` (default settings.out_dir)."""
    ids = [i["id"] for i in items]
    data = briefing_data(items, store.latest_predictions(db, ids), store.latest_summaries(db, ids),
                         "Children's services briefing", settings.recipients_title, period)
    every = store.latest_predictions(db)
    chart = monthly_chart(store.items_by_ids(db, every.keys()), every)
    return write_briefing(data, out_dir or settings.out_dir, chart)
