"""From a configuration to the objects of a run: data, model, estimator, relaxations,
cost and optimiser, each through the registry."""

import math
from typing import Any

import jax
import optax

from .._data import Dataset
from .._models import AbstractModel
from ._config import TrainConfig
from ._registry import build, lookup, model_key, resolve
from ._schema import DATA_KEYS, OPTIMIZER_KEYS


def build_data(cfg: TrainConfig) -> Dataset:
    spec = {k: v for k, v in cfg.data.items() if k not in DATA_KEYS}
    return build("data", spec)


def model_spec(cfg: TrainConfig, sample_shape, num_classes: int) -> dict:
    """What rebuilds the model: its kind, constructor arguments, sample shape, classes
    and the seed of its initialisation (stored in every checkpoint)."""
    return {
        "kind": cfg.model["kind"],
        "args": {k: v for k, v in cfg.model.items() if k != "kind"},
        "sample_shape": list(sample_shape),
        "num_classes": int(num_classes),
        "seed": cfg.loop["seed"],
    }


def build_model_from_spec(spec: dict) -> AbstractModel:
    """A model of a registered kind from `model_spec`'s dictionary."""
    model = build(
        "model",
        {"kind": spec["kind"], **spec["args"]},
        sample_shape=tuple(spec["sample_shape"]),
        num_classes=spec["num_classes"],
        key=model_key(spec["seed"]),
    )
    if not isinstance(model, AbstractModel):
        raise TypeError(
            f"model kind {spec['kind']!r} built a {type(model).__name__}, not an AbstractModel."
        )
    return model


def build_model(cfg: TrainConfig, sample_shape, num_classes: int) -> AbstractModel:
    return build_model_from_spec(model_spec(cfg, sample_shape, num_classes))


def build_estimator(cfg: TrainConfig):
    return build("estimator", cfg.estimator)


def build_relaxations(cfg: TrainConfig):
    """(free, nudged) relaxations; the nudged one is the free one unless configured."""
    free = build("relaxation", cfg.relaxation)
    nudged = free if cfg.nudged_relaxation is None else build("relaxation", cfg.nudged_relaxation)
    return free, nudged


def build_cost(cfg: TrainConfig):
    return resolve(cfg.cost, "cost")


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return max(1, math.floor(n_train / batch_size))


def build_optimizer(
    cfg: TrainConfig, model: AbstractModel, steps_per_epoch: int
) -> optax.GradientTransformation:
    """The configured optax optimiser with its learning-rate schedule over the whole
    run; per-group learning rates (`group_lrs`, keyed by the model's `param_groups()`
    labels) through `optax.multi_transform`; then decoupled from the optimiser, L2
    weight decay (`optax.add_decayed_weights`, as in the papers' SGD) and global-norm
    clipping, chained in front; all inside `optax.apply_if_finite`, so that a step with
    a non-finite gradient is skipped (up to 20 in a row; then the run stops as diverged)."""
    opt = cfg.optimizer
    total = cfg.loop["epochs"] * steps_per_epoch
    schedule = opt.get("schedule", "constant")
    schedule = {"kind": schedule} if isinstance(schedule, str) else dict(schedule)
    args = {k: v for k, v in opt.items() if k not in ("kind", *OPTIMIZER_KEYS)}
    lookup("optimizer", opt["kind"])

    def base(lr):
        rate = build("schedule", schedule, lr=lr, total_steps=total)
        return build("optimizer", {"kind": opt["kind"], **args}, learning_rate=rate)

    group_lrs = dict(opt.get("group_lrs", {}))
    if group_lrs:
        labels = model.param_groups()
        groups = _labels(labels)
        unknown = sorted(set(group_lrs) - set(groups))
        if unknown:
            raise ValueError(
                f"optimizer.group_lrs names unknown parameter groups {unknown}; this "
                f"model's groups are {groups}."
            )
        transforms: dict[Any, optax.GradientTransformation] = {
            g: base(group_lrs.get(g, opt["lr"])) for g in groups
        }
        tx = optax.multi_transform(transforms, labels)
    else:
        tx = base(opt["lr"])
    if opt.get("weight_decay") not in (None, "none", 0, 0.0):
        tx = optax.chain(optax.add_decayed_weights(opt["weight_decay"]), tx)
    if opt.get("clip_norm") not in (None, "none"):
        tx = optax.chain(optax.clip_by_global_norm(opt["clip_norm"]), tx)
    # a step whose gradient is not finite (a phase that blew up) is skipped, not applied;
    # the loop counts these (`skipped_steps`), and stops if too many come in a row
    return optax.apply_if_finite(tx, max_consecutive_errors=SKIP_LIMIT)


SKIP_LIMIT = 20


def _labels(labels) -> list[str]:
    return sorted({v for v in jax.tree_util.tree_leaves(labels) if isinstance(v, str)})
