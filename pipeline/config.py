"""One typed settings object for every stage.

Precedence: defaults < TOML file (``--config``) < environment (``MINUTES_*``) < command-line flags.
No other module reads the environment; they all take a ``Settings``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
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
class Delivery:
    """Where `minutes nightly` and `minutes send` mail the briefing ([delivery] in the TOML file).
    The password is never in the file: `password_env` names the environment variable holding it,
    read only when a briefing is sent (`delivery_password`)."""

    host: str
    sender: str  # `from` in the file
    to: list[str]
    port: int | None = None  # None: 587 for starttls, 465 for tls, 25 for none
    security: str = "starttls"  # "starttls", "tls" (SMTP over TLS from the first byte) or "none"
    user: str | None = None
    password_env: str | None = None
    timeout_s: float = 30.0

    @property
    def port_in_use(self) -> int:
        return self.port or {"starttls": 587, "tls": 465, "none": 25}[self.security]


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
    # Mail the briefing after each nightly run with flagged items; None: the briefing is only
    # written to out_dir.
    delivery: Delivery | None = None
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
    # Seconds between requests to one host, shared by every source of a run on that host.
    request_delay_s: float = 1.0
    # Self-hosted installs are slow: a meeting's GetMeeting answer can take tens of seconds.
    request_timeout_s: float = 60.0
    max_download_mb: float = 20.0
    # The longest wait a 429/503 Retry-After is granted; a host asking for longer is left alone
    # for the rest of the run, and what it holds is asked for on the next.
    retry_after_cap_s: float = 120.0

    def with_overrides(self, **overrides) -> "Settings":
        """A copy with the given (non-None) overrides applied: flags win over everything.
        Each is checked like a setting from the config file; a wrong one raises ConfigError."""
        clean = {}
        for key, value in overrides.items():
            if value is None:
                continue
            if key == "thresholds":
                clean[key] = {label: _threshold(label, v, "command line") for label, v in value.items()}
            elif key == "sources":
                clean[key] = list(value)  # Source records built in code
            else:
                clean[key] = _checked(key, value, "command line", key, from_text=False)
        return dataclasses.replace(self, **clean)


# ---------------------------------------------------------------- what each setting may be
@dataclass(frozen=True)
class Rule:
    """The type and range one setting must have, wherever it comes from (TOML, environment,
    flag). Bounds are inclusive unless `above` is used (a strict lower bound)."""

    kind: type  # bool, int, float, str or Path
    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    optional: bool = False  # may be unset (None): "" in the environment
    pattern: str | None = None  # str only: the whole value must match
    choices: str | None = None  # how to say `pattern` to a person

    def allowed(self) -> str:
        """What is allowed, in words, for the error line."""
        words = {bool: "true or false", int: "a whole number", float: "a number",
                 str: "text", Path: "a path (text)"}[self.kind]
        if self.choices:
            words = self.choices
        bounds = []
        if self.above is not None:
            bounds.append(f"> {self.above:g}")
        if self.at_least is not None:
            bounds.append(f">= {self.at_least:g}")
        if self.at_most is not None:
            bounds.append(f"<= {self.at_most:g}")
        return words + (" " + " and ".join(bounds) if bounds else "")

    def within(self, number: float) -> bool:
        return (
            (self.at_least is None or number >= self.at_least)
            and (self.above is None or number > self.above)
            and (self.at_most is None or number <= self.at_most)
        )


_POSITIVE_INT = Rule(int, at_least=1)
_POSITIVE_FLOAT = Rule(float, above=0)
_NON_NEGATIVE_FLOAT = Rule(float, at_least=0)

# Every field of Settings, in one table (tests/test_faults.py checks none is missing).
# `sources` and `thresholds` are tables in the config file and are checked by their own code.
RULES: dict[str, Rule] = {
    "db": Rule(Path),
    "models_dir": Rule(Path),
    "out_dir": Rule(Path),
    "labelled_dir": Rule(Path),
    "model": Rule(Path, optional=True),
    "summariser_model": Rule(Path, optional=True),
    "recipients_title": Rule(str),
    "batch_size": _POSITIVE_INT,
    "max_passage_tokens": Rule(int, at_least=8, at_most=512),  # the encoders' position limit
    "threads": _POSITIVE_INT,
    "device": Rule(str, pattern=r"cpu|mps|cuda(:[0-9]+)?", choices="cpu, cuda, cuda:N or mps"),
    "quantize": Rule(bool),
    "max_file_mb": _POSITIVE_FLOAT,
    "max_html_depth": _POSITIVE_INT,
    "max_html_elements": _POSITIVE_INT,
    "max_pdf_pages": _POSITIVE_INT,
    "max_pdf_chars": _POSITIVE_INT,
    "max_docx_unzipped_mb": _POSITIVE_FLOAT,
    "max_docx_members": _POSITIVE_INT,
    "max_item_chars": _POSITIVE_INT,
    "parse_budget_s": _NON_NEGATIVE_FLOAT,  # 0: parse in this process, without a budget
    "evidence_per_label": _POSITIVE_INT,
    "briefing_max_words": _POSITIVE_INT,
    "promote_margin": Rule(float),
    "store_batch": _POSITIVE_INT,
    "pause_between_batches_s": _NON_NEGATIVE_FLOAT,
    "user_agent": Rule(str),
    "request_delay_s": _NON_NEGATIVE_FLOAT,
    "request_timeout_s": _POSITIVE_FLOAT,
    "max_download_mb": _POSITIVE_FLOAT,
    "retry_after_cap_s": _NON_NEGATIVE_FLOAT,
}
_TABLE_FIELDS = {"sources", "thresholds", "delivery"}

# The keys of [delivery], checked like the settings above. An address is one token with an @:
# no spaces or line breaks, so nothing in the config can add a header to the message.
_ADDRESS = Rule(str, pattern=r"[^@\s,;<>\"]+@[^@\s,;<>\"]+", choices="an address like name@example.gov.uk")
DELIVERY_RULES: dict[str, Rule] = {
    "host": Rule(str, pattern=r"[A-Za-z0-9.:\[\]-]+", choices="a host name or IP address"),
    "port": Rule(int, at_least=1, at_most=65535),
    "security": Rule(str, pattern=r"starttls|tls|none", choices="starttls, tls or none"),
    "user": Rule(str),
    "password_env": Rule(str, pattern=r"[A-Za-z_][A-Za-z0-9_]*",
                         choices="the name of an environment variable (letters, digits, _)"),
    "from": _ADDRESS,
    "timeout_s": _POSITIVE_FLOAT,
}
_TRUE, _FALSE = {"1", "true", "yes"}, {"0", "false", "no"}


class _Invalid(ValueError):
    """A value that breaks its rule; the message says what is allowed."""


def _value(rule: Rule, raw, from_text: bool):
    """`raw` as the rule's type, or _Invalid. `from_text`: it came from the environment, where
    every value is a string; from TOML or a flag it must already have the right type."""
    if rule.optional and (raw is None or (from_text and raw == "")):
        return None
    if rule.kind is bool:
        if isinstance(raw, bool):
            return raw
        if from_text and str(raw).strip().lower() in _TRUE | _FALSE:
            return str(raw).strip().lower() in _TRUE
        raise _Invalid("true or false" + (" (or 1/0, yes/no)" if from_text else ""))
    if rule.kind in (int, float):
        number = raw
        if from_text and isinstance(raw, str):
            try:
                number = rule.kind(raw.strip())
            except ValueError:
                raise _Invalid(rule.allowed()) from None
        # bool is an int to Python, but `batch_size = true` is a mistake; so is 32.5 for a count.
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise _Invalid(rule.allowed())
        if rule.kind is int and not isinstance(number, int):
            raise _Invalid(rule.allowed())
        if not math.isfinite(number) or not rule.within(number):
            raise _Invalid(rule.allowed())
        return rule.kind(number)
    if isinstance(raw, Path) and rule.kind is Path:
        return raw
    if not isinstance(raw, str):
        raise _Invalid(rule.allowed())
    if rule.kind is Path:
        if not raw.strip():
            raise _Invalid("a path (text, not empty)")
        return Path(raw)
    if rule.pattern and not re.fullmatch(rule.pattern, raw):
        raise _Invalid(rule.allowed())
    return raw


def _show(value) -> str:
    """A value as the person wrote it: strings quoted, as in TOML."""
    return json.dumps(value) if isinstance(value, str) else str(value)


def _checked(name: str, raw, origin: str, shown_key: str, from_text: bool):
    """One setting checked against its rule; a wrong one is a ConfigError naming where it came
    from, the key, the value and what is allowed."""
    rule = RULES.get(name)
    if rule is None:
        raise ConfigError(f"{origin}: unknown setting '{shown_key}'")
    try:
        return _value(rule, raw, from_text)
    except _Invalid as exc:
        raise ConfigError(f"{origin}: {shown_key} = {_show(raw)}: must be {exc}") from None


def check_settings(settings: Settings) -> Settings:
    """Every field against its rule (the defaults, or a Settings built in code)."""
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        if f.name == "thresholds":
            for label, threshold in value.items():
                _threshold(label, threshold, "settings")
        elif f.name not in _TABLE_FIELDS:
            _checked(f.name, value, "settings", f.name, from_text=False)
    return settings


def _threshold(label: str, value, origin: str) -> float:
    if label not in LABELS:
        raise ConfigError(f"{origin}: unknown label '{label}' in [thresholds] (known: {', '.join(LABELS)})")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"{origin}: thresholds.{label} = {_show(value)}: must be a number "
                          "between 0 and 1 (not 0 or 1 themselves)")
    return float(value)


# ---------------------------------------------------------------- loading
def load_settings(config_file: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Defaults, then the TOML file, then ``MINUTES_*`` environment variables, each checked."""
    settings = Settings()
    env = dict(os.environ) if env is None else env
    if config_file is None and env.get("MINUTES_CONFIG"):
        config_file = Path(env["MINUTES_CONFIG"])
    if config_file is not None:
        settings = _apply_toml(settings, Path(config_file))
    updates = {}
    for f in dataclasses.fields(Settings):
        variable = f"MINUTES_{f.name.upper()}"
        value = env.get(variable)
        if value is None:
            continue
        if f.name in _TABLE_FIELDS:
            raise ConfigError(f"environment: {variable} is not read; set [{f.name}] in the config file")
        updates[f.name] = _checked(f.name, value, "environment", variable, from_text=True)
    return dataclasses.replace(settings, **updates)


def debug_requested(env: dict[str, str] | None = None) -> bool:
    """MINUTES_DEBUG=1: an internal error prints its traceback too. Read here, not in the CLI,
    because it must work even when the settings themselves cannot be loaded."""
    value = (os.environ if env is None else env).get("MINUTES_DEBUG", "")
    return value.strip().lower() in _TRUE


def _apply_toml(settings: Settings, path: Path) -> Settings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    known = {f.name for f in dataclasses.fields(Settings)}
    updates: dict = {}
    base = path.resolve().parent
    for key, value in data.items():
        if key == "sources":
            if not isinstance(value, list):
                raise ConfigError(f"{path}: sources = {_show(value)}: must be [[sources]] tables")
            updates["sources"] = [_source(s, base, path) for s in value]
        elif key == "thresholds":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: thresholds = {_show(value)}: must be a [thresholds] table "
                                  "of label = number between 0 and 1")
            unknown = set(value) - set(LABELS)
            if unknown:
                raise ConfigError(f"{path}: unknown label(s) in [thresholds]: {', '.join(sorted(unknown))}")
            updates["thresholds"] = {label: _threshold(label, v, str(path)) for label, v in value.items()}
        elif key == "delivery":
            updates["delivery"] = _delivery(value, path)
        elif key in known:
            updates[key] = _checked(key, value, str(path), key, from_text=False)
            if isinstance(updates[key], Path) and not updates[key].is_absolute():
                updates[key] = base / updates[key]
        else:
            raise ConfigError(f"{path}: unknown setting '{key}' (known: {', '.join(sorted(known))})")
    return dataclasses.replace(settings, **updates)


_SOURCE_TEXT_KEYS = ("kind", "path", "url", "council")


def _source(entry, base: Path, path: Path) -> Source:
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: sources entry {_show(entry)}: must be a [[sources]] table")
    allowed = {f.name for f in dataclasses.fields(Source)}
    unknown = set(entry) - allowed
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [[sources]]: {', '.join(sorted(unknown))}")
    for key in _SOURCE_TEXT_KEYS:
        if key in entry and not isinstance(entry[key], str):
            raise ConfigError(f"{path}: [[sources]] {key} = {_show(entry[key])}: must be text")
    committees = entry.get("committees", [])
    if not isinstance(committees, list) or not all(isinstance(c, str) for c in committees):
        raise ConfigError(f"{path}: [[sources]] committees = {_show(committees)}: must be a list of names")
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


def _delivery(table, path: Path) -> Delivery:
    """[delivery] checked key by key: one line naming the key, its value and what is allowed."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: delivery = {_show(table)}: must be a [delivery] table")
    if "password" in table:
        raise ConfigError(f"{path}: [delivery] password: a password is never kept in the config file; "
                          "put it in an environment variable and name that variable in password_env")
    allowed = set(DELIVERY_RULES) | {"to"}
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [delivery]: {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(sorted(allowed))})")
    for key in ("host", "from", "to"):
        if key not in table:
            raise ConfigError(f"{path}: [delivery] needs '{key}'")
    values = {}
    for key, rule in DELIVERY_RULES.items():
        if key in table:
            try:
                values[key] = _value(rule, table[key], from_text=False)
            except _Invalid as exc:
                raise ConfigError(f"{path}: delivery.{key} = {_show(table[key])}: must be {exc}") from None
    to = table["to"]
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not to:
        raise ConfigError(f"{path}: delivery.to = {_show(table['to'])}: must be a list of addresses")
    for address in to:
        try:
            _value(_ADDRESS, address, from_text=False)
        except _Invalid as exc:
            raise ConfigError(f"{path}: delivery.to: {_show(address)}: must be {exc}") from None
    if ("user" in values) != ("password_env" in values):
        raise ConfigError(f"{path}: [delivery] user and password_env go together: give both to log in, "
                          "or neither")
    return Delivery(host=values["host"], sender=values["from"], to=list(to), port=values.get("port"),
                    security=values.get("security", "starttls"), user=values.get("user"),
                    password_env=values.get("password_env"), timeout_s=values.get("timeout_s", 30.0))


def delivery_password(delivery: Delivery, env: dict[str, str] | None = None) -> str | None:
    """The SMTP password from the environment variable the config names (read at send time, so
    a missing one fails the send, not every command); None when the config does not log in."""
    if not delivery.password_env:
        return None
    value = (os.environ if env is None else env).get(delivery.password_env)
    if not value:
        raise ConfigError(f"[delivery] password_env names {delivery.password_env}, which is not set "
                          "in this environment")
    return value


class ConfigError(Exception):
    """A user's configuration is wrong; the message names the file and the fix."""


class DataError(Exception):
    """A labelled or gold file is unusable; the message names the file, the line and the problem."""
