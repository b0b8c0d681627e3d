"""One registry from configuration names to the library's classes and builders.

A configuration section is a `kind` plus keyword arguments; `build(section, spec)`
looks the kind up here and calls it with the arguments, after checking them against
its signature (an argument it does not take is an error, never silently ignored).
Arguments that are themselves strategies (an activation, a pooling) are given as a
kind name or a table with a `kind`. TOML has no null: the string `"none"` stands for
`None`. The library's own kinds are registered by `_library.py`.
"""

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax

REGISTRY: dict[str, dict[str, Callable]] = {}
# argument checks run when a configuration is made, for factories that build only later
# (a model needs the data's shape): `check(**args)` raises ValueError for a bad argument
CHECKS: dict[str, dict[str, Callable]] = {}

# arguments whose values are strategies of another section
NESTED = {
    "activation": "activation",
    "pooling": "pooling",
    "cost": "cost",
    "low": "relaxation",
    "high": "relaxation",
    "relaxation": "relaxation",
    "adjoint": "adjoint",
    "homeostasis": "homeostasis",
    "reference": "estimator",
    "adjoint_relaxation": "relaxation",
}


def register(
    section: str,
    kind: str,
    factory: Callable,
    *,
    check: Callable | None = None,
    overwrite: bool = False,
) -> None:
    """Make `factory` available as `kind` in configuration section `section`.

    Sections: `model` (a factory `(sample_shape, num_classes, *, key, **args) -> model`),
    `estimator`, `relaxation`, `activation`, `cost`, `pooling` (classes), `optimizer`
    (`(learning_rate, **args) -> optax.GradientTransformation`), `schedule`
    (`(lr, total_steps, **args) -> lr or optax schedule`), `data` (`(data_dir) -> Dataset`).

    `check(**args)`, if given, is called with the configured arguments when a
    configuration is made and raises `ValueError` for a bad one: for factories that are
    called only later (a model is built once the data's shape is known), so that a bad
    value fails at once, not after the data is loaded.
    """
    table = REGISTRY.setdefault(section, {})
    if kind in table and not overwrite and table[kind] is not factory:
        raise ValueError(f"{section} kind {kind!r} is already registered; pass overwrite=True.")
    table[kind] = factory
    checks = CHECKS.setdefault(section, {})
    checks.pop(kind, None)
    if check is not None:
        checks[kind] = check


def kinds(section: str) -> tuple[str, ...]:
    """The registered kinds of a section."""
    if section not in REGISTRY:
        raise ValueError(f"unknown section {section!r}; valid: {', '.join(REGISTRY)}.")
    return tuple(REGISTRY[section])


def lookup(section: str, kind: str) -> Callable:
    table = REGISTRY.get(section)
    if table is None:
        raise ValueError(f"unknown section {section!r}; valid: {', '.join(REGISTRY)}.")
    if kind not in table:
        raise ValueError(f"unknown {section} {kind!r}; valid: {', '.join(table)}.")
    return table[kind]


def _none(value):
    return None if isinstance(value, str) and value.lower() in ("none", "null") else value


def parameters(factory: Callable) -> dict[str, inspect.Parameter]:
    """The keyword arguments a factory takes (for a class: its `__init__`, or its
    dataclass fields for an Equinox module)."""
    sig = inspect.signature(factory)
    return {
        name: p
        for name, p in sig.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def check_arguments(section: str, kind: str, args: Mapping[str, Any], reserved=()) -> None:
    """Every argument must be one the factory takes (and not one the caller supplies)."""
    params = parameters(lookup(section, kind))
    takes_any = any(
        p.kind == p.VAR_KEYWORD
        for p in inspect.signature(lookup(section, kind)).parameters.values()
    )
    valid = [n for n in params if n not in reserved]
    for name in args:
        if name in reserved or (name not in params and not takes_any):
            raise ValueError(
                f"{section} {kind!r} takes no argument {name!r}; valid: {', '.join(valid)}."
            )


def resolve(value, section: str):
    """A strategy given as a kind name or a `{kind = ..., ...}` table, built."""
    if isinstance(value, str):
        return build(section, {"kind": value})
    if isinstance(value, Mapping):
        return build(section, value)
    return value


def _arguments(section: str, spec: Mapping[str, Any], supplied=(), where: str | None = None):
    """The kind and the arguments of `spec`, checked by name, `"none"` read as `None`."""
    where = where or section
    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise ValueError(f"the {where} section needs a `kind`; valid: {', '.join(kinds(section))}.")
    kind = spec["kind"]
    args = {k: v for k, v in spec.items() if k != "kind"}
    check_arguments(section, kind, args, reserved=tuple(supplied))
    return kind, {k: _none(v) for k, v in args.items()}


def check_values(section: str, spec: Mapping[str, Any], where: str | None = None) -> None:
    """Run the `check` registered with the kind of `spec`, if any (see `register`)."""
    kind, args = _arguments(section, spec, where=where)
    check = CHECKS.get(section, {}).get(kind)
    if check is not None:
        try:
            check(**args)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where or section} {kind!r}: {e}") from e


def build(section: str, spec: Mapping[str, Any], *, where: str | None = None, **supplied):
    """Call the factory of `spec["kind"]` with the other entries of `spec` (nested
    strategies built, `"none"` read as `None`) and the `supplied` arguments. `where`
    names the configuration section in error messages (default `section`)."""
    kind, args = _arguments(section, spec, supplied, where)
    for name, nested in NESTED.items():
        value = args.get(name)
        if isinstance(value, list):  # one per layer
            args[name] = tuple(resolve(v, nested) for v in value)
        elif value is not None:
            args[name] = resolve(value, nested)
    for name, value in args.items():
        if isinstance(value, list):
            args[name] = tuple(value)
    try:
        return lookup(section, kind)(**args, **supplied)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where or section} {kind!r}: {e}") from e


def model_key(seed: int):
    """The key a run's model is initialised from."""
    return jax.random.fold_in(jax.random.key(seed), 0)


from . import _library  # noqa: E402, F401  (registers the library's kinds)
