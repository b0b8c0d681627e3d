"""Run configuration in sections and TOML files (the sections' schema is `_schema.py`,
the presets shipped with the package `_presets.py`).

A configuration is a small tree:

    name = "mnist-hep"
    cost = "cross_entropy"
    [data]               kind (a dataset), data_dir, batch_size, eval_batch_size,
                         augment ({pad, flip} or "none": overrides the dataset's own)
    [model]              kind ("mlp", ...) and its constructor arguments
    [estimator]          kind ("hep", "classic", ...) and its constructor arguments
    [relaxation]         kind ("fixed_point", "ode", ...), the free phase
    [nudged_relaxation]  the nudged phases (absent: the same as `relaxation`)
    [optimizer]          kind ("sgd", "momentum", "adam", "adamw"), lr, schedule,
                         clip_norm, weight_decay, group_lrs, and the optimiser's arguments
    [loop]               epochs, seed, log_every, checkpoint_every, out_dir, devices

Every kind is looked up in the registry and every argument checked against what the
class takes, when the configuration is made: a typo, an argument of another kind, a
negative learning rate or a NaN beta is an error that names the valid choices. A change
(`set`, `update`) checks again only the sections it changed.
"""

import copy
import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._registry import lookup, parameters, resolve
from ._schema import DEFAULTS, SCHEMA, SECTION_KEYS, SECTIONS, TOP_LEVEL


def _merge(base: dict, override: Mapping) -> dict:
    """Sections merge key by key, except that a section whose `kind` changes is
    replaced (the other kind's arguments would not apply), keeping only the settings
    of the section itself (`data.batch_size`, `optimizer.lr`, ...)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key == "extends":
            continue
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            if "kind" in value and value["kind"] != out[key].get("kind"):
                kept = {k: v for k, v in out[key].items() if k in SECTION_KEYS.get(key, ())}
                out[key] = {**kept, **copy.deepcopy(dict(value))}
            else:
                out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _validate(tree: dict, old: dict | None = None) -> None:
    """Check a configuration tree against `SCHEMA`: its structure always, and the
    values of the sections that differ from `old` (all of them without `old`), so that
    a change checks only what it changed."""
    for key in tree:
        if key not in SECTIONS and key not in TOP_LEVEL:
            raise ValueError(
                f"unknown setting {key!r}; valid: {', '.join((*TOP_LEVEL, *SECTIONS))} "
                "(settings live in sections: write e.g. estimator.beta, not beta)."
            )
    if not isinstance(tree.get("name"), str) or not tree["name"]:
        raise ValueError(f"name must be a non-empty string, got {tree.get('name')!r}.")

    def changed(key: str) -> bool:
        return old is None or tree.get(key) != old.get(key)

    if changed("cost"):
        resolve(tree["cost"], "cost")
    for name, section in SCHEMA.items():
        value = tree.get(name)
        if value is None:
            if section.optional:
                continue
            raise ValueError(f"the configuration has no [{name}] section.")
        if not isinstance(value, Mapping):
            raise ValueError(f"[{name}] must be a table of settings, got {value!r}.")
        if changed(name) or any(changed(key) for key in section.depends_on):
            section.check(value, tree)


def _to_plain(value) -> Any:
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


class TrainConfig:
    """Everything a training run depends on, in sections (see the module docstring).

    Make one from a preset (`get_preset("mnist-hep")`), a TOML file
    (`TrainConfig.from_file(path)`) or a mapping (`TrainConfig.from_dict({...})`);
    change it with `cfg.set("estimator.beta", 0.2)` or `cfg.update({...})`, which
    return a new, validated configuration. Setting a section's `kind` keeps the
    arguments the new kind takes and drops the others.
    """

    __slots__ = ("_tree",)

    def __init__(self, tree: Mapping | None = None, *, _checked: dict | None = None):
        merged = _merge(DEFAULTS, {} if tree is None else _to_plain(tree))
        _validate(merged, _checked)
        object.__setattr__(self, "_tree", merged)

    def __setattr__(self, name, value):
        raise AttributeError("TrainConfig is immutable: use cfg.set(...) or cfg.update(...).")

    @classmethod
    def from_dict(cls, tree: Mapping) -> "TrainConfig":
        return cls(tree)

    @classmethod
    def from_file(cls, path: str | Path, base: "TrainConfig | None" = None) -> "TrainConfig":
        """A TOML (or JSON) file, merged over `base` (default: the defaults)."""
        path = Path(path)
        text = path.read_text()
        tree = tomllib.loads(text) if path.suffix != ".json" else json.loads(text)
        if "extends" in tree:
            from ._presets import get_preset  # presets are configurations: they import this

            base = get_preset(tree["extends"])
        return (base or cls()).update(tree)

    # -- access
    def __getattr__(self, name) -> Any:
        """A top-level setting (`cfg.name`) or a read-only copy of a section (`cfg.loop`;
        `None` for an absent optional section)."""
        tree = object.__getattribute__(self, "_tree")
        if name in TOP_LEVEL:
            return tree[name]
        if name in SECTIONS:
            section = tree.get(name)
            return None if section is None else MappingProxyType(copy.deepcopy(section))
        raise AttributeError(name)

    def get(self, path: str, default=None):
        """A setting by its dotted path, e.g. `cfg.get("estimator.beta")`."""
        node: Any = self._tree
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return copy.deepcopy(node)

    def to_dict(self) -> dict:
        return copy.deepcopy(self._tree)

    def __eq__(self, other):
        return isinstance(other, TrainConfig) and self._tree == other._tree

    def __hash__(self):
        return hash(json.dumps(self._tree, sort_keys=True))

    def __repr__(self):
        return f"TrainConfig({json.dumps(self._tree)})"

    @property
    def run_dir(self) -> Path:
        loop = self._tree["loop"]
        return Path(loop["out_dir"].format(name=self.name, seed=loop["seed"]))

    # -- changes
    def update(self, changes: Mapping) -> "TrainConfig":
        """A new configuration: `changes` holds dotted paths (`"loop.epochs": 5`) or
        nested tables (`{"loop": {"epochs": 5}}`). The sections that changed are checked
        again; the others are not (a setting builds nothing it does not change)."""
        tree = self._tree
        nested: dict = {}
        for key, value in changes.items():
            if key == "extends":
                continue
            if "." in key:
                tree = _set_path(tree, key, value)
            else:
                nested[key] = value
        # only what changed is checked again: the rest was checked when self was made
        return TrainConfig(_merge(tree, _to_plain(nested)), _checked=self._tree)

    def set(self, path: str, value) -> "TrainConfig":
        """A new configuration with one setting changed (`"section.key"` or `"name"`)."""
        return self.update({path: value})

    def to_toml(self) -> str:
        return to_toml(self._tree)


def _set_path(tree: dict, path: str, value) -> dict:
    parts = path.split(".")
    section = parts[0]
    if section not in SECTIONS and section not in TOP_LEVEL:
        raise ValueError(
            f"unknown setting {path!r}; a setting is section.key with a section among "
            f"{', '.join(SECTIONS)}, or one of {', '.join(TOP_LEVEL)}."
        )
    out = copy.deepcopy(tree)
    if section == "nudged_relaxation" and out.get(section) is None and len(parts) > 1:
        out[section] = copy.deepcopy(out["relaxation"])
    node = out
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    last = parts[-1]
    spec = SCHEMA.get(section)
    if last == "kind" and len(parts) == 2 and spec is not None and spec.registry is not None:
        takes = parameters(lookup(spec.registry, value))
        reserved = spec.own_keys
        node.update({"kind": value})
        for key in list(node):
            if key != "kind" and key not in takes and key not in reserved:
                del node[key]
        return out
    node[last] = _to_plain(value)
    return out


# ----------------------------------------------------------------------------- TOML


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return {math.inf: "inf", -math.inf: "-inf"}.get(value, "nan")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return '"none"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} to TOML.")


def to_toml(tree: Mapping) -> str:
    """A configuration tree as TOML text (top-level keys, then one table per section)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in tree.items() if not isinstance(v, Mapping)]
    for key, value in tree.items():
        if isinstance(value, Mapping):
            lines += ["", f"[{key}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"
