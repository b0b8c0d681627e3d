"""The presets shipped with the package: TOML files in `eqx_eqprop/presets`, each a
configuration (`TrainConfig`) that may extend another."""

import tomllib
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

from ._config import TrainConfig, _merge
from ._registry import kinds
from ._schema import DEFAULTS


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
