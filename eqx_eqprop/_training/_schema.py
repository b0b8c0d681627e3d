"""The configuration's schema: one table of its sections.

Each section says which registry section its `kind` is looked up in, which of its keys
the training loop reads itself (not passed to the factory), its defaults, which keys
may differ when a run is resumed, and how its values are checked. The constants the
rest of the package reads (`SECTIONS`, `DEFAULTS`, `HARMLESS`, ...) are derived from
the table, never written twice. Presets live apart, in `_presets.py`.
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._checks import describe
from ._library import _check_lr
from ._registry import build, check_arguments, check_values, lookup, resolve

Check = Callable[[Mapping, Mapping], None]  # (the section, the whole tree) -> raises


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}.")


def _args(section: Mapping, skip=()) -> dict:
    return {k: v for k, v in section.items() if k != "kind" and k not in skip}


def check_data(data: Mapping, tree: Mapping) -> None:
    del tree
    lookup("data", data.get("kind", "?"))
    check_arguments("data", data["kind"], _args(data, DATA_KEYS))
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


def check_model(model: Mapping, tree: Mapping) -> None:
    """Names and values, without building the model (that needs the data's shape):
    the model kind's registered `check` and its strategies' arguments."""
    del tree
    check_arguments("model", model.get("kind", "?"), _args(model), reserved=("key",))
    for name, section in (("activation", "activation"), ("pooling", "pooling")):
        if name in model:
            values = model[name] if isinstance(model[name], list) else [model[name]]
            for value in values:
                resolve(value, section)
    check_values("model", model)


def strategy_check(registry: str, where: str) -> Check:
    """A section that is one strategy (an estimator, a relaxation): its constructor is
    its check (`__check_init__`), so it is built once to validate it."""

    def check(section: Mapping, tree: Mapping) -> None:
        del tree
        build(registry, section, where=where)

    return check


def check_optimizer(opt: Mapping, tree: Mapping) -> None:
    del tree
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


def check_loop(loop: Mapping, tree: Mapping) -> None:
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
        out_dir.format(name=tree["name"], seed=seed)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f"loop.out_dir {out_dir!r} is not a valid template ({type(e).__name__}: {e}): "
            "it may name {name} and {seed} only (write {{ and }} for literal braces)."
        ) from None


@dataclass(frozen=True)
class Section:
    """One section of a configuration.

    - `registry`: the registry section its `kind` is looked up in (`None`: no kind).
    - `own_keys`: keys the training loop reads itself, kept when the kind changes and
      never passed to the factory.
    - `defaults`: its settings when a configuration does not give them (`None` for an
      optional section).
    - `harmless`: keys that do not change a run's results (they may differ on resume).
    - `check`: raises `ValueError` for a bad section, given the whole tree.
    - `depends_on`: top-level settings its check reads (re-checked when they change).
    """

    registry: str | None
    check: Check
    defaults: Mapping[str, Any] | None = None
    own_keys: tuple[str, ...] = ()
    harmless: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = field(default=())

    @property
    def optional(self) -> bool:
        return self.defaults is None


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

SCHEMA: dict[str, Section] = {
    "data": Section(
        "data",
        check_data,
        {"kind": "digits", "batch_size": 32, "eval_batch_size": 500},
        own_keys=DATA_KEYS,
        harmless=("data_dir", "eval_batch_size"),
    ),
    "model": Section("model", check_model, {"kind": "mlp"}),
    "estimator": Section(
        "estimator",
        strategy_check("estimator", "estimator"),
        {"kind": "hep", "beta": 0.4, "num_phases": 10},
    ),
    "relaxation": Section(
        "relaxation",
        strategy_check("relaxation", "relaxation"),
        {"kind": "fixed_point", "max_steps": 200, "rtol": "none", "atol": "none"},
    ),
    # the nudged phases: absent means the same as `relaxation`
    "nudged_relaxation": Section(
        "relaxation", strategy_check("relaxation", "nudged_relaxation"), None
    ),
    "optimizer": Section(
        "optimizer",
        check_optimizer,
        {"kind": "sgd", "lr": 0.05, "schedule": "constant"},
        own_keys=OPTIMIZER_KEYS,
    ),
    "loop": Section(
        None,
        check_loop,
        LOOP_DEFAULTS,
        harmless=("checkpoint_every", "log_every", "out_dir", "devices"),
        depends_on=("name",),
    ),
}
TOP_LEVEL = {"name": "run", "cost": "cross_entropy"}

# derived from the table
SECTIONS = tuple(SCHEMA)
DEFAULTS: dict[str, Any] = {
    **TOP_LEVEL,
    **{name: dict(s.defaults) for name, s in SCHEMA.items() if s.defaults is not None},
}
HARMLESS = {f"{name}.{key}" for name, s in SCHEMA.items() for key in s.harmless}
SECTION_KEYS = {name: s.own_keys for name, s in SCHEMA.items() if s.own_keys}
