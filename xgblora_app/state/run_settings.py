"""The run settings being edited in the window: a ``RunConfig`` plus change notices.

Defaults and help texts are read from the engine's config dataclasses (one source of
truth); this module only adds what the window derives from them (rounds, trainable
parameters) and a way for several panels to edit the same value (sequence length lives
in the Data panel and in the Method panel).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

from xgblora_app.state.observable import Observable
from xgblora_engine import config as C
from xgblora_engine.boosting.sampling import resolve_k
from xgblora_engine.boosting.schedule import booster_lr
from xgblora_engine.errors import UserError
from xgblora_engine.payloads import ModelInfo


def field_of(section: str, key: str) -> dataclasses.Field:
    return {f.name: f for f in dataclasses.fields(C.SECTIONS[section])}[key]


def help_text(section: str, key: str) -> str:
    return field_of(section, key).metadata.get("help", "")


def default_value(section: str, key: str) -> Any:
    return getattr(getattr(C.RunConfig(), section), key)


class RunSettings(Observable):
    """Topic "changed" carries (section, key, value) for every value that changed."""

    def __init__(self, cfg: C.RunConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or C.RunConfig()

    def get(self, section: str, key: str) -> Any:
        return getattr(getattr(self.cfg, section), key)

    def set(self, section: str, key: str, value: Any) -> None:
        self.update({section: {key: value}})

    def update(self, changes: dict[str, dict[str, Any]]) -> None:
        """Apply ``{section: {key: value}}`` (a preflight remedy has this shape)."""
        before = copy.deepcopy(self.cfg)
        C.update(self.cfg, changes, source="settings")  # coerces types, rejects unknown keys
        for section, values in changes.items():
            for key in values or {}:
                new = self.get(section, key)
                if getattr(getattr(before, section), key) != new:
                    self.notify("changed", section, key, new)

    set_values = update  # the name scripts and older callers use

    def load(self, saved: dict[str, Any], literal: bool = False) -> list[str]:
        """Restore saved settings one value at a time: a stale or bad value is skipped
        (and named) rather than losing the whole set. A whole saved set is read as of the
        version that wrote it (``C.as_then``) unless ``literal``."""
        skipped = []
        saved = saved or {}
        for section, values in (saved if literal else C.as_then(saved)).items():
            for key, value in (values or {}).items() if isinstance(values, dict) else ():
                try:
                    self.set(section, key, value)
                except UserError:
                    skipped.append(f"{section}.{key}")
        return skipped

    def to_dict(self) -> dict[str, Any]:
        return self.cfg.to_dict()

    def overrides(self) -> dict[str, dict[str, Any]]:
        """Only the values that differ from the engine's defaults: what the window keeps
        between sessions, so a default that improves in a new version reaches every
        setting the user never changed."""
        defaults = C.RunConfig().to_dict()
        changed = {section: {key: value for key, value in values.items() if defaults[section][key] != value}
                   for section, values in self.to_dict().items()}
        return {section: values for section, values in changed.items() if values}

    def load_overrides(self, overrides: dict[str, Any]) -> list[str]:
        """Restore what ``overrides`` kept, on top of today's defaults (no reading as of
        an older version: every value in it was set on purpose)."""
        return self.load(overrides, literal=True)

    def reset(self, sections: tuple[str, ...] = ("boost", "train")) -> None:
        """Every setting of ``sections`` back to the engine's default (the model and the
        data stay)."""
        defaults = C.RunConfig().to_dict()
        self.update({section: defaults[section] for section in sections})

    def copy(self) -> C.RunConfig:
        """The settings as they are now, for a command (later edits do not change it)."""
        return copy.deepcopy(self.cfg)

    def validated(self) -> C.RunConfig:
        """A validated copy, or a UserError naming the bad setting."""
        return copy.deepcopy(self.cfg).validate()

    # --- derived ----------------------------------------------------------------
    def rounds(self) -> int:
        """T = ceil(max_steps / merge_every), as the engine counts them."""
        return math.ceil(self.cfg.train.max_steps / max(1, self.cfg.boost.merge_every))

    def k(self, n_layers: int | None) -> int | None:
        return resolve_k(self.cfg.boost.layers, self.cfg.boost.layers_per_round, n_layers)

    def effective_lr(self, n_layers: int | None) -> float | None:
        """The rate the boosters train at (the engine's learning-rate rule), once L is known."""
        k = self.k(n_layers)
        if not (k and n_layers):
            return None
        t = self.cfg.train
        return booster_lr(t.lr, self.cfg.boost.rank, k, n_layers, t.lr_rule)

    def trainable_params(self, model_info: ModelInfo | None) -> int | None:
        """Booster parameters trained in one round, estimated (the window marks it ≈).

        Each target linear of a boosted layer gets r·(in + out) values; every target is
        taken as hidden × hidden, as the model info gives no per-linear shapes."""
        if not model_info:
            return None
        k = self.k(model_info.n_layers)
        if not k:
            return None
        n_targets = len(self.cfg.model.target_modules or model_info.targets) or 7
        return int(k * self.cfg.boost.rank * n_targets * 2 * model_info.hidden_size)

    def epochs_to_steps(self, epochs: float, n_train: int) -> int:
        per_step = self.cfg.train.batch_size * self.cfg.train.grad_accum
        return max(1, math.ceil(epochs * n_train / per_step))

    def steps_to_epochs(self, n_train: int) -> float:
        per_step = self.cfg.train.batch_size * self.cfg.train.grad_accum
        return self.cfg.train.max_steps * per_step / max(1, n_train)
