"""The model stages as objects that load once: a classifier and a summariser made from a model
folder, each a callable over a batch of plain records, every run setting from the card or Settings.

One object serves the nightly run, `classify`, `summarise`, `predict`, `evaluate`, the promotion
gate, `minutes backfill` (both engines), the bench and a Ray actor alike, so each runs the model as
production does: `max_tokens` from the card, device, threads, int8 and batch size from `Settings`,
and the summariser fed the classifier's evidence. The card is read (and its labels checked) when
the object is made; the weights load on first use, once, so a run with nothing to do loads
nothing. The functions they call (`classify_records`, `summarise_records`) stay pure.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from pipeline import modelfolder
from pipeline.config import Settings


@dataclass(frozen=True)
class ModelCard:
    """What a model folder's `minutes_model.json` says about running it (training figures and
    arguments stay in the file; `raw` keeps the whole card for those who need them)."""

    kind: str
    version: str
    labels: tuple[str, ...]
    thresholds: dict[str, float]
    # Tokens a passage (or context + passage pair) is cut to: what the model was trained on.
    max_tokens: int | None
    # The context scheme a classifier reads each passage with (None: passages alone).
    context: str | None
    base_model: str | None
    data_hash: str | None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, card: dict, folder: Path | str = "?") -> "ModelCard":
        for key in ("kind", "version"):
            if not isinstance(card.get(key), str):
                raise modelfolder.ModelError(f"{folder}: its {modelfolder.CARD} has no {key}; "
                                             "retrain with `minutes train`")
        max_tokens = card.get("max_tokens", (card.get("arguments") or {}).get("max_tokens"))
        return cls(kind=card["kind"], version=card["version"], labels=tuple(card.get("labels") or ()),
                   thresholds=dict(card.get("thresholds") or {}),
                   max_tokens=int(max_tokens) if max_tokens is not None else None,
                   context=card.get("context"), base_model=card.get("base_model"),
                   data_hash=card.get("data_hash"), raw=dict(card))

    @classmethod
    def read(cls, folder: Path) -> "ModelCard":
        """The card of a folder, its labels checked against the program's (one line if not)."""
        card = modelfolder.read_card(folder)
        modelfolder.check_labels(folder, card)
        return cls.from_dict(card, folder)

    def tokens(self, settings: Settings) -> int:
        """The card's max_tokens; a card from before it was recorded falls back to Settings."""
        return self.max_tokens if self.max_tokens is not None else settings.max_passage_tokens


def classifier_version(card: ModelCard, settings: Settings) -> str:
    """The version predictions are stored under: +int8 when quantised, since the scores differ
    (the same rule as the nightly run's, so results of a backfill import beside its own)."""
    return card.version + ("+int8" if settings.quantize else "")


class Classifier:
    """The classifier of a model folder, loaded once; `classifier(records)` labels a batch.

    Records are those `classify.classify_records` takes ({"id", "title"?, "text", "committee"?,
    "purpose"?, "is_procedural"?}); each result is {"id", "labels", "scores", "evidence"}."""

    def __init__(self, folder: Path, settings: Settings):
        self.folder = Path(folder)
        self.settings = settings
        self.card = ModelCard.read(self.folder)
        if self.card.kind != "classifier":
            raise modelfolder.ModelError(f"{self.folder}: a {self.card.kind} model, not a classifier")
        self.version = classifier_version(self.card, settings)
        self.max_tokens = self.card.tokens(settings)

    @cached_property
    def loaded(self) -> modelfolder.LoadedModel:
        return modelfolder.load(self.folder, self.settings.device, self.settings.quantize,
                                self.settings.threads, self.settings.thresholds)

    @classmethod
    def promoted(cls, settings: Settings) -> "Classifier":
        """The folder `--model` names, else the promoted classifier."""
        return cls(modelfolder.resolve(settings.models_dir, "classifier", settings.model), settings)

    @property
    def thresholds(self) -> dict[str, float]:
        return self.loaded.card["thresholds"]  # the card's, with Settings' overrides applied by load

    def fp32(self) -> "Classifier":
        """The same classifier on fp32 weights: itself, or, when int8, the fp32 weights int8
        keeps for close calls (not loaded again), under the fp32 version."""
        if not self.settings.quantize:
            return self
        twin = copy.copy(self)
        twin.settings = replace(self.settings, quantize=False)
        twin.version = classifier_version(self.card, twin.settings)
        twin.__dict__["loaded"] = self.loaded.fp32()
        return twin

    def __call__(self, records: list[dict]) -> list[dict]:
        from pipeline.classify import classify_records

        return classify_records(self.loaded, records, self.settings.batch_size, self.max_tokens,
                                self.settings.device, self.settings.evidence_per_label)


class Summariser:
    """The summariser of a model folder, loaded once; `summariser(records)` briefs a batch.

    Records are those `summarise.summarise_records` takes ({"id", "title", "text",
    "resolutions"?, "evidence"?}); the classifier's evidence goes first in a briefing, so pass it
    (the same wiring as the nightly run). Each result is {"id", "briefing", "is_fallback"}."""

    def __init__(self, folder: Path, settings: Settings, max_words: int | None = None):
        self.folder = Path(folder)
        self.settings = settings
        self.card = ModelCard.read(self.folder)
        if self.card.kind != "summariser":
            raise modelfolder.ModelError(f"{self.folder}: a {self.card.kind} model, not a summariser")
        self.version = self.card.version
        self.max_tokens = self.card.tokens(settings)
        self.max_words = max_words or settings.briefing_max_words

    @classmethod
    def promoted(cls, settings: Settings) -> "Summariser":
        """The folder `--summariser` names, else the promoted summariser."""
        return cls(modelfolder.resolve(settings.models_dir, "summariser", settings.summariser_model), settings)

    @cached_property
    def loaded(self) -> modelfolder.LoadedModel:
        return modelfolder.load(self.folder, self.settings.device, self.settings.quantize, self.settings.threads)

    def __call__(self, records: list[dict]) -> list[dict]:
        from pipeline.summarise import summarise_records

        return summarise_records(self.loaded, records, self.settings.batch_size, self.max_tokens,
                                 self.settings.device, self.max_words)
