"""One typed settings object for every stage.

Precedence: defaults < TOML file (``--config``) < environment (``MINUTES_*``) < command-line flags.
No other module reads the environment; they all take a ``Settings``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

LABELS: tuple[str, ...] = ("intervention_notice", "inspection_outcome", "workforce_concern")
LABEL_TITLES = {
    "intervention_notice": "Intervention notices",
    "inspection_outcome": "Inspection outcomes",
    "workforce_concern": "Workforce concerns",
}

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Source:
    """One place the nightly run reads: a folder/file, or a ModernGov site."""

    kind: str = "path"  # "path" or "moderngov"
    path: str | None = None
    url: str | None = None
    council: str | None = None
    committees: list[str] = field(default_factory=list)


@dataclass
class Settings:
    db: Path = REPO_ROOT / "data" / "minutes.db"
    models_dir: Path = REPO_ROOT / "models"
    out_dir: Path = REPO_ROOT / "data" / "briefings"
    labelled_dir: Path = REPO_ROOT / "data" / "labelled"
    # An explicit model folder overrides the promoted one (used by tests and `--model`).
    model: Path | None = None
    summariser_model: Path | None = None
    sources: list[Source] = field(default_factory=list)
    # Per-label decision thresholds that override the model's own ({label: probability}); they
    # apply to items classified from now on (`minutes classify --all` re-labels the rest).
    thresholds: dict[str, float] = field(default_factory=dict)
    recipients_title: str = "Director of Children's Services"
    batch_size: int = 32
    max_passage_tokens: int = 128
    threads: int = 2
    device: str = "cpu"
    # int8 on CPU: smoothed, per-channel, close calls scored again in fp32 (README, Measuring).
    quantize: bool = False
    max_file_mb: float = 20.0
    # Limits on every parse (issue 15): over any of them a document is one `path: reason (limit N)`
    # line and the run goes on with the rest.
    max_html_depth: int = 2000
    max_html_elements: int = 200_000
    max_pdf_pages: int = 500
    max_pdf_chars: int = 5_000_000
    max_docx_unzipped_mb: float = 100.0
    max_docx_members: int = 2000
    max_item_chars: int = 200_000
    # Wall-clock seconds one document may take to parse; the parser runs in a worker process
    # that is stopped when this is spent, so no input can stall a run.
    parse_budget_s: float = 20.0
    evidence_per_label: int = 3
    briefing_max_words: int = 60
    promote_margin: float = 0.0
    # Items per committed batch in classify/summarise: a kill loses at most one batch of work.
    store_batch: int = 256
    # Seconds to wait after each committed batch. Only for tests that kill a run mid-stage.
    pause_between_batches_s: float = 0.0
    # ModernGov fetching
    user_agent: str = "minutes-pipeline/0.1 (+https://github.com/minutes-pipeline; council minutes reader)"
    request_delay_s: float = 1.0
    request_timeout_s: float = 20.0
    max_download_mb: float = 20.0

    def with_overrides(self, **overrides) -> "Settings":
        """A copy with the given (non-None) overrides applied: flags win over everything."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        for key in ("db", "models_dir", "out_dir", "labelled_dir", "model", "summariser_model"):
            if key in clean and clean[key] is not None:
                clean[key] = Path(clean[key])
        return dataclasses.replace(self, **clean)


_PATH_FIELDS = {"db", "models_dir", "out_dir", "labelled_dir", "model", "summariser_model"}


def load_settings(config_file: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Defaults, then the TOML file, then ``MINUTES_*`` environment variables."""
    settings = Settings()
    env = dict(os.environ) if env is None else env
    if config_file is None and env.get("MINUTES_CONFIG"):
        config_file = Path(env["MINUTES_CONFIG"])
    if config_file is not None:
        settings = _apply_toml(settings, Path(config_file))
    known = {f.name: f for f in dataclasses.fields(Settings)}
    updates = {}
    for name, f in known.items():
        value = env.get(f"MINUTES_{name.upper()}")
        if value is None or name in ("sources", "thresholds"):
            continue
        updates[name] = _coerce(name, value, f.type)
    return dataclasses.replace(settings, **updates)


def _apply_toml(settings: Settings, path: Path) -> Settings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    known = {f.name: f for f in dataclasses.fields(Settings)}
    updates: dict = {}
    base = path.resolve().parent
    for key, value in data.items():
        if key == "sources":
            updates["sources"] = [_source(s, base, path) for s in value]
        elif key == "thresholds":
            unknown = set(value) - set(LABELS)
            if unknown:
                raise ConfigError(f"{path}: unknown label(s) in [thresholds]: {', '.join(sorted(unknown))}")
            updates["thresholds"] = {label: float(v) for label, v in value.items()}
        elif key in known:
            updates[key] = _coerce(key, value, known[key].type)
            if key in _PATH_FIELDS and not Path(updates[key]).is_absolute():
                updates[key] = base / updates[key]
        else:
            raise ConfigError(f"{path}: unknown setting '{key}' (known: {', '.join(sorted(known))})")
    return dataclasses.replace(settings, **updates)


def _source(entry: dict, base: Path, path: Path) -> Source:
    allowed = {f.name for f in dataclasses.fields(Source)}
    unknown = set(entry) - allowed
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [[sources]]: {', '.join(sorted(unknown))}")
    source = Source(**entry)
    if source.kind == "path":
        if not source.path:
            raise ConfigError(f"{path}: a [[sources]] entry of kind 'path' needs 'path'")
        if not Path(source.path).is_absolute():
            source.path = str(base / source.path)
    elif source.kind == "moderngov":
        if not source.url:
            raise ConfigError(f"{path}: a [[sources]] entry of kind 'moderngov' needs 'url'")
    else:
        raise ConfigError(f"{path}: [[sources]] kind must be 'path' or 'moderngov', not '{source.kind}'")
    return source


def _coerce(name: str, value, type_hint):
    hint = str(type_hint)
    if name in _PATH_FIELDS:
        return Path(value) if value not in (None, "") else None
    if "bool" in hint:
        return value if isinstance(value, bool) else str(value).lower() in {"1", "true", "yes"}
    if "int" in hint:
        return int(value)
    if "float" in hint:
        return float(value)
    return value


class ConfigError(Exception):
    """A user's configuration is wrong; the message names the file and the fix."""
