"""The models a visitor can pick: ``$STARGAN_MODEL``, the Hub's 128 and 256 px CelebA models and the release
shipped with the app. Each is loaded once, on first use, and then shared read-only by every visitor (a server-wide
cache, not per-visitor state); a Hub model that is neither cached nor reachable is refused with one sentence."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from stargan_core.config import ModelConfig
from stargan_core.edit.pipeline import StarGANPipeline
from stargan_core.weights.formats import CheckpointError
from stargan_core.weights.hub import hub_cached, hub_reachable, load_model, shipped_release

HUB_REPO = "goodfellowliu/StarGAN-PyTorch"
OFFLINE = "it is not on this computer yet and the Hugging Face Hub cannot be reached, so it needs the internet once"


@dataclass(frozen=True)
class ModelOption:
    """One entry of the model picker."""

    label: str  # what the picker shows
    source: str  # for hub.load_model: a folder, a file or a Hub repo_id:filename
    offers: str  # one sentence: what this model can do
    hub: bool = False  # fetched from the Hub on first use (then cached)


def model_options() -> list[ModelOption]:
    """The picker's entries: ``$STARGAN_MODEL`` when set, the Hub's 128 px model (``hub.DEFAULT_MODEL``), the
    release shipped with the app, the Hub's 256 px model."""
    options = []
    if os.environ.get("STARGAN_MODEL"):
        src = os.environ["STARGAN_MODEL"]
        options.append(ModelOption(f"STARGAN_MODEL ({src})", src, "The model this server was started with."))
    hub = [ModelOption(f"{HUB_REPO} {size} px (Hub)", f"{HUB_REPO}:g_celeba-{size}x{size}.pth.tar",
                       f"Hair colour, gender and age at {size} px, {note}; no expressions; downloaded from the "
                       "Hugging Face Hub on first use.", hub=True)
           for size, note in ((128, "trained longest"), (256, "sharper and about four times slower"))]
    options.append(hub[0])
    shipped = shipped_release()
    if shipped is not None:
        groups = ", ".join(g.name for g in shipped_groups())
        options.append(ModelOption(f"Shipped with the app ({shipped.name})", str(shipped),
                                   f"Trained by this project ({groups}); works offline."))
    return [*options, hub[1]]


def shipped_groups() -> list:
    """The controls of the release shipped with the app, read from its config.json ([] when none can be read)."""
    shipped = shipped_release()
    try:
        return list(ModelConfig.load(shipped / "config.json").schema.groups) if shipped else []
    except (OSError, ValueError, KeyError, TypeError):
        return []


def label_of(options: list[ModelOption], source: str, fallback: bool) -> str | None:
    """The picker label of a model ``hub.load_model`` loaded (its ``source``; ``fallback``: the shipped one)."""
    for o in options:
        if source.startswith(o.source) if not fallback else o.source == str(shipped_release()):
            return o.label
    return None


class ModelShelf:
    """Pipelines by picker label, loaded on first use under a lock (two visitors never load the same one twice)."""

    def __init__(self, options: list[ModelOption], loaded: dict[str, tuple[StarGANPipeline, str]] | None = None):
        self.options = {o.label: o for o in options}
        self._loaded = dict(loaded or {})
        self._lock = threading.Lock()

    @property
    def loaded(self) -> list[str]:
        """The labels of the models loaded so far, in the order they were."""
        return list(self._loaded)

    @property
    def default(self) -> str | None:
        """The model the page starts with: the first one loaded (the server's), else the first option."""
        return next(iter(self._loaded), next(iter(self.options), None))

    def unavailable(self, label: str) -> str | None:
        """Why ``label`` cannot be loaded now (one sentence), or None when it can."""
        o = self.options.get(label)
        if o is None:
            return f"There is no model called {label!r}; choose one of: {', '.join(self.options)}."
        if o.hub and label not in self._loaded and not hub_cached(o.source) and not hub_reachable():
            return f"{o.label}: {OFFLINE}."
        return None

    def get(self, label: str | None) -> tuple[StarGANPipeline, str]:
        """(pipeline, status sentence) for ``label`` (None = the default); raises CheckpointError with a sentence."""
        label = label or self.default
        why = self.unavailable(label)
        if why:
            raise CheckpointError(why)
        with self._lock:
            if label not in self._loaded:
                m = load_model(self.options[label].source, fallback=False)
                self._loaded[label] = (StarGANPipeline(m.G, m.config, D=m.D), m.status)
            return self._loaded[label]

    def describe(self) -> str:
        """One line per model: what it offers, and why it cannot be used now when that is so."""
        return "\n".join(f"* **{o.label}**: {o.offers}" + (f" *Not available now: {OFFLINE}.*"
                                                              if self.unavailable(o.label) else "")
                         for o in self.options.values())
