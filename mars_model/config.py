"""Training configs: one recipe per model (a base config and its stages), resolved to the plain dict a trainer takes.

A recipe (``mars_model/configs/tokenizer.yaml``, ``autoregressor.yaml``, ``codec.yaml``) holds
one model's full base config and the list of stages that made its weights, each with only
what it changes::

    model: tokenizer
    base:                        # the full config of the first stage
      data: {root: data/fluidr3}
      tokenizer: {...}
      train: {steps: 2000, lr: 1.0e-3}
    stages:
      - name: base
        export: runs/tokenizer_base.pt
      - name: dec1
        from: base               # starts from base's weights and base's config
        export: runs/tokenizer_dec1.pt
        set:                     # deep-merged over that config
          finetune: {freeze: [encoder, quantizer]}
          train: {steps: 1500, lr: 5.0e-4}

A stage's config is the config of its ``from`` stage (or ``base`` without one) with its
``set`` merged in (mappings key by key, anything else replaced); with ``from``,
``finetune.init`` is that stage's ``export``, the weights it starts from. A plain config
(the sections alone, no ``stages``) is a one-stage recipe of itself.

Keys are checked once, at load, against the trainer's sections (``CONFIG_SECTIONS`` of
``mars_model.<model>.train``): an unknown key is a one-line error naming it and the file.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mars_model.errors import MarsError

#: What a section of a config may hold: a config dataclass (its fields; a field that is itself a
#: dataclass is a nested section) or the names of its keys.
SectionSchema = type | Collection[str]

RECIPE_KEYS = ("model", "base", "stages")
STAGE_KEYS = ("name", "from", "export", "set")


def dataclass_from_dict(cls, raw: Mapping[str, Any] | None, where: str):
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys with a clear error.

    Lists become tuples (and lists of lists tuples of tuples), as frozen configs hold them.
    """
    raw = dict(raw or {})
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise MarsError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    for name, value in raw.items():
        if isinstance(value, list):
            raw[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    try:
        return cls(**raw)
    except (TypeError, ValueError) as err:
        raise MarsError(f"{where}: {err}") from None


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for missing or malformed files."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise MarsError(f"cannot read config {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise MarsError(f"config {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise MarsError(f"config {path} must be a mapping of sections")
    return data


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in: mappings key by key (recursively), other values replaced.

    Neither argument is modified; the result shares no mapping with them.
    """
    out = {k: merge(v, {}) if isinstance(v, Mapping) else v for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = merge(value, {}) if isinstance(value, Mapping) else value
    return out


def _allowed_keys(schema: SectionSchema) -> dict[str, SectionSchema | None]:
    """Key -> nested schema (``None``: a plain value) for one section."""
    if isinstance(schema, type) and dataclasses.is_dataclass(schema):
        hints = typing.get_type_hints(schema)
        return {f.name: hints[f.name] if dataclasses.is_dataclass(hints[f.name]) else None
                for f in dataclasses.fields(schema)}  # fmt: skip
    return dict.fromkeys(schema)


def check_keys(config: Mapping[str, Any], sections: Mapping[str, SectionSchema], where: str) -> None:
    """Raise a one-line :class:`MarsError` for the first key of ``config`` that ``sections`` does not know.

    Args:
        config: a whole config or a stage's overrides (``{section: {key: value}}``).
        sections: section name -> allowed keys (see :data:`SectionSchema`).
        where: the file (and stage) the keys come from, for the message.
    """

    def walk(mapping: Any, allowed: Mapping[str, SectionSchema | None], path: str) -> None:
        if not isinstance(mapping, Mapping):
            raise MarsError(f"{where}: {path or 'the config'} must be a mapping, got {mapping!r}")
        for key, value in mapping.items():
            name = f"{path}.{key}" if path else str(key)
            if key not in allowed:
                scope = f"in {path}" if path else "as sections"
                raise MarsError(f"{where}: unknown key {name} (allowed {scope}: {', '.join(allowed)})")
            if allowed[key] is not None:
                walk(value, _allowed_keys(allowed[key]), name)

    walk(config, dict(sections), "")


@dataclass(frozen=True)
class Stage:
    """One training run of a recipe.

    Args:
        name: what ``--stage`` calls it.
        start_from: the stage whose exported weights (``finetune.init``) and config it starts
            from; ``None``: the recipe's base config and a fresh initialisation.
        export: where its weights are exported (what a later stage's ``from`` loads).
        overrides: what it changes, merged over the config it starts from.
    """

    name: str
    start_from: str | None = None
    export: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """A model's base config and the stages that made its weights (see the module docstring)."""

    path: str
    model: str
    base: dict[str, Any]
    stages: tuple[Stage, ...]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def stage(self, name: str) -> Stage:
        """The stage called ``name`` (a one-line error listing the stages if there is none)."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise MarsError(f"{self.path} has no stage {name!r}; stages: {', '.join(self.names)}")

    def chain(self, name: str) -> list[Stage]:
        """The stages that lead to ``name`` through ``from``, first to last (``name`` included)."""
        out = [self.stage(name)]
        while out[0].start_from is not None:
            out.insert(0, self.stage(out[0].start_from))
        return out

    def resolve(self, name: str) -> dict[str, Any]:
        """The full config of stage ``name``: what ``mars-synth train`` runs for it."""
        config = self.base
        for stage in self.chain(name):
            config = merge(config, stage.overrides)
            if stage.start_from is not None:
                init = self.stage(stage.start_from).export
                config = merge(config, {"finetune": {"init": init}})
        return config

    def check(self, sections: Mapping[str, SectionSchema]) -> None:
        """Check the keys of the base and of every stage's overrides against ``sections``."""
        check_keys(self.base, sections, f"{self.path}, base")
        for stage in self.stages:
            check_keys(stage.overrides, sections, f"{self.path}, stage {stage.name}")


def _stage(raw: Any, seen: dict[str, Stage], path: str) -> Stage:
    if not isinstance(raw, Mapping) or "name" not in raw:
        raise MarsError(f"{path}: every stage needs a name, got {raw!r}")
    where = f"{path}, stage {raw['name']}"
    unknown = sorted(set(raw) - set(STAGE_KEYS))
    if unknown:
        raise MarsError(f"{where}: unknown key {unknown[0]} (allowed: {', '.join(STAGE_KEYS)})")
    name, start_from, overrides = str(raw["name"]), raw.get("from"), raw.get("set") or {}
    if name in seen:
        raise MarsError(f"{where}: a second stage with this name")
    if not isinstance(overrides, Mapping):
        raise MarsError(f"{where}: set must be a mapping of sections")
    if start_from is not None:
        if start_from not in seen:
            raise MarsError(f"{where}: from {start_from!r} is not an earlier stage ({', '.join(seen) or 'none'})")
        if not seen[start_from].export:
            raise MarsError(f"{where}: from {start_from!r}, a stage with no export to start from")
        if "init" in (overrides.get("finetune") or {}):
            raise MarsError(f"{where}: set.finetune.init is the export of its from stage; leave it out")
    return Stage(name, start_from, raw.get("export"), merge(overrides, {}))


def load_recipe(path: str | os.PathLike, sections: Mapping[str, SectionSchema] | None = None) -> Recipe:
    """Read a recipe file (a plain config becomes a recipe with one stage, ``base``).

    Args:
        path: the YAML file.
        sections: the trainer's ``CONFIG_SECTIONS``; with them, every key is checked now.
    """
    raw = load_yaml(path)
    path = str(path)
    if "stages" not in raw:  # a plain config: its sections are the one stage's config
        recipe = Recipe(path, "", raw, (Stage("base"),))
    else:
        unknown = sorted(set(raw) - set(RECIPE_KEYS))
        if unknown:
            raise MarsError(f"{path}: unknown key {unknown[0]} (a recipe holds {', '.join(RECIPE_KEYS)})")
        if not raw.get("model") or not isinstance(raw.get("base"), Mapping) or not isinstance(raw["stages"], list) \
                or not raw["stages"]:
            raise MarsError(f"{path}: a recipe needs a model, a base config (a mapping) and a list of stages")
        seen: dict[str, Stage] = {}
        for item in raw["stages"]:
            stage = _stage(item, seen, path)
            seen[stage.name] = stage
        recipe = Recipe(path, str(raw["model"]), dict(raw["base"]), tuple(seen.values()))
    if sections is not None:
        recipe.check(sections)
    return recipe


def load_config(path: str | os.PathLike, stage: str | None = None, *, model: str | None = None,
                sections: Mapping[str, SectionSchema] | None = None) -> dict[str, Any]:  # fmt: skip
    """The full config of ``stage`` of the recipe at ``path`` (or the plain config at ``path``).

    Args:
        path: a recipe or a plain config file.
        stage: the recipe's stage; required for a recipe, not allowed for a plain config.
        model: the model being trained; a recipe for another model is refused.
        sections: the trainer's ``CONFIG_SECTIONS`` (keys are checked when given).
    """
    recipe = load_recipe(path)
    if not recipe.model:
        if stage is not None:
            raise MarsError(f"{path} is a plain config, not a recipe with stages; leave out --stage")
        stage = "base"
    elif model is not None and recipe.model != model:
        raise MarsError(f"{path} is a recipe for the {recipe.model}, not the {model}")
    elif stage is None:
        raise MarsError(f"{path} is a recipe: choose a stage with --stage ({', '.join(recipe.names)})")
    if sections is not None:
        recipe.check(sections)
    return recipe.resolve(stage)
