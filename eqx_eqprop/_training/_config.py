"""Run configuration in sections, TOML files, presets shipped with the package.

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
negative learning rate or a NaN beta is an error that names the valid choices.
"""

import copy
import json
import math
import tomllib
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .._checks import describe
from ._registry import (
    _check_lr,
    build,
    check_arguments,
    check_values,
    kinds,
    lookup,
    parameters,
    resolve,
)

SECTIONS = ("data", "model", "estimator", "relaxation", "nudged_relaxation", "optimizer", "loop")
TOP_LEVEL = ("name", "cost")
DATA_KEYS = ("batch_size", "eval_batch_size", "augment")  # read by the loop, not the loader
OPTIMIZER_KEYS = ("lr", "schedule", "clip_norm", "weight_decay", "group_lrs")
LOOP_DEFAULTS = {
    "epochs": 10,
    "seed": 0,
    "log_every": 50,
    "checkpoint_every": 500,
    "out_dir": "runs/{name}/seed{seed}",
    "devices": 0,
}
DEFAULTS: dict[str, Any] = {
    "name": "run",
    "cost": "cross_entropy",
    "data": {"kind": "digits", "batch_size": 32, "eval_batch_size": 500},
    "model": {"kind": "mlp"},
    "estimator": {"kind": "hep", "beta": 0.4, "num_phases": 10},
    "relaxation": {"kind": "fixed_point", "max_steps": 200, "rtol": "none", "atol": "none"},
    "optimizer": {"kind": "sgd", "lr": 0.05, "schedule": "constant"},
    "loop": dict(LOOP_DEFAULTS),
}
# settings that do not change a run's results: they may differ when it is resumed
HARMLESS = {
    "data.data_dir",
    "data.eval_batch_size",
    "loop.checkpoint_every",
    "loop.log_every",
    "loop.out_dir",
    "loop.devices",
}


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}.")


SECTION_KEYS = {"data": DATA_KEYS, "optimizer": OPTIMIZER_KEYS}


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


def _validate(tree: dict) -> None:
    for key in tree:
        if key not in SECTIONS and key not in TOP_LEVEL:
            raise ValueError(
                f"unknown setting {key!r}; valid: {', '.join(TOP_LEVEL + SECTIONS)} "
                "(settings live in sections: write e.g. estimator.beta, not beta)."
            )
    if not isinstance(tree.get("name"), str) or not tree["name"]:
        raise ValueError(f"name must be a non-empty string, got {tree.get('name')!r}.")
    resolve(tree["cost"], "cost")
    for section in SECTIONS:
        if section not in tree:
            if section == "nudged_relaxation":
                continue
            raise ValueError(f"the configuration has no [{section}] section.")
        if not isinstance(tree[section], Mapping):
            raise ValueError(f"[{section}] must be a table of settings, got {tree[section]!r}.")
    data = tree["data"]
    lookup("data", data.get("kind", "?"))
    check_arguments(
        "data", data["kind"], {k: v for k, v in data.items() if k not in ("kind", *DATA_KEYS)}
    )
    for key in ("batch_size", "eval_batch_size"):
        _positive_int(data.get(key), f"data.{key}")
    augment = data.get("augment")
    if (
        augment is not None
        and not (isinstance(augment, Mapping) and set(augment) <= {"pad", "flip"})
        and augment not in ("none", False)
    ):
        raise ValueError(
            "data.augment is a table {pad = P, flip = true/false} (random crops after "
            f'padding by P pixels, and flips) or "none", got {augment!r}.'
        )
    model = tree["model"]
    check_arguments("model", model.get("kind", "?"), _args(model), reserved=("key",))
    for name, section in (("activation", "activation"), ("pooling", "pooling")):
        if name in model:
            values = model[name] if isinstance(model[name], list) else [model[name]]
            for value in values:
                resolve(value, section)
    check_values("model", model)
    build("estimator", tree["estimator"])
    build("relaxation", tree["relaxation"])
    if tree.get("nudged_relaxation") is not None:
        build("relaxation", tree["nudged_relaxation"], where="nudged_relaxation")
    _validate_optimizer(tree["optimizer"])
    _validate_loop(tree["loop"], tree["name"])


def _validate_loop(loop: Mapping, name: str) -> None:
    for key in loop:
        if key not in LOOP_DEFAULTS:
            raise ValueError(f"unknown loop setting {key!r}; valid: {', '.join(LOOP_DEFAULTS)}.")
    for key in ("epochs", "log_every", "checkpoint_every"):
        _positive_int(loop[key], f"loop.{key}")
    seed = loop["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(
            f"loop.seed must be a non-negative integer (it seeds NumPy's and JAX's "
            f"generators), got {describe(seed)}."
        )
    devices = loop["devices"]
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 0:
        raise ValueError(f"loop.devices must be 0 (all) or a positive integer, got {devices!r}.")
    out_dir = loop["out_dir"]
    if not isinstance(out_dir, str) or not out_dir:
        raise ValueError(f"loop.out_dir must be a directory path, got {describe(out_dir)}.")
    try:
        out_dir.format(name=name, seed=seed)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f"loop.out_dir {out_dir!r} is not a valid template ({type(e).__name__}: {e}): "
            "it may name {name} and {seed} only (write {{ and }} for literal braces)."
        ) from None


def _args(section: Mapping, skip=()) -> dict:
    return {k: v for k, v in section.items() if k != "kind" and k not in skip}


def _validate_optimizer(opt: Mapping) -> None:
    kind = opt.get("kind", "?")
    lookup("optimizer", kind)
    _check_lr(opt.get("lr"), "optimizer.lr")
    if opt["lr"] == 0:
        raise ValueError("optimizer.lr must be positive (use group_lrs to freeze a group).")
    for group, lr in dict(opt.get("group_lrs", {})).items():
        _check_lr(lr, f"optimizer.group_lrs.{group}")
    for key in ("clip_norm", "weight_decay"):
        value = opt.get(key, "none")
        if value != "none" and value is not None:
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"optimizer.{key} must be a non-negative number, got {value!r}.")
    schedule = opt.get("schedule", "constant")
    spec = {"kind": schedule} if isinstance(schedule, str) else dict(schedule)
    check_arguments("schedule", spec.get("kind", "?"), _args(spec), reserved=("lr", "total_steps"))
    build("optimizer", {"kind": kind, **_args(opt, OPTIMIZER_KEYS)}, learning_rate=opt["lr"])


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

    def __init__(self, tree: Mapping | None = None):
        merged = _merge(DEFAULTS, {} if tree is None else _to_plain(tree))
        _validate(merged)
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
        nested tables (`{"loop": {"epochs": 5}}`)."""
        tree = self._tree
        nested: dict = {}
        for key, value in changes.items():
            if key == "extends":
                continue
            if "." in key:
                tree = _set_path(tree, key, value)
            else:
                nested[key] = value
        return TrainConfig(_merge(tree, _to_plain(nested)))

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
    if (
        last == "kind"
        and len(parts) == 2
        and section in ("model", "estimator", "relaxation", "nudged_relaxation", "optimizer")
    ):
        registry_section = "relaxation" if section == "nudged_relaxation" else section
        takes = parameters(lookup(registry_section, value))
        reserved = OPTIMIZER_KEYS if section == "optimizer" else ()
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


# --------------------------------------------------------------------------- presets


def _preset_files() -> dict[str, Any]:
    folder = resources.files("eqx_eqprop") / "presets"
    return {p.name[: -len(".toml")]: p for p in folder.iterdir() if p.name.endswith(".toml")}


def preset_names() -> tuple[str, ...]:
    """The presets shipped with the package (TOML files in `eqx_eqprop/presets`)."""
    order = ("digits", "mnist-hep", "mnist-classic", "mnist-symmetric", "mnist-bp", "mnist")
    names = sorted(_preset_files())
    return tuple(
        sorted(
            names,
            key=lambda n: next((i for i, p in enumerate(order) if n.startswith(p)), len(order)),
        )
    )


def _preset_tree(name: str, seen=()) -> dict:
    files = _preset_files()
    if name not in files:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(preset_names())}.")
    if name in seen:
        raise ValueError(f"preset {name!r} extends itself (through {' -> '.join(seen)}).")
    tree = tomllib.loads(files[name].read_text())
    base = _preset_tree(tree["extends"], (*seen, name)) if "extends" in tree else DEFAULTS
    return _merge(base, {**tree, "name": tree.get("name", name)})


def get_preset(name: str) -> TrainConfig:
    """The configuration of a named preset (`eqprop-train --list-presets`)."""
    return TrainConfig(_preset_tree(name))


class _Presets(Mapping):
    """The presets by name, loaded when read."""

    def __getitem__(self, name: str) -> TrainConfig:
        if name not in _preset_files():
            raise KeyError(name)
        return get_preset(name)

    def __iter__(self) -> Iterator[str]:
        return iter(preset_names())

    def __len__(self) -> int:
        return len(_preset_files())


PRESETS = _Presets()


def available(section: str) -> tuple[str, ...]:
    return kinds(section)
