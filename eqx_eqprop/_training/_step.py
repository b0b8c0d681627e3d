"""The training state and the pure, jit-compiled training and evaluation steps.

Metrics stay on the device: each step adds its scalars to an accumulator (sums, or
maxima where a metric's `MetricSpec` says so) that the loop reads once per logging
interval, so the host never waits for the device between steps.
"""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int, PRNGKeyArray, PyTree

from .._costs import AbstractCost
from .._estimators import AbstractEstimator
from .._gradient import estimate
from .._inference import check_inputs, free_phase
from .._metrics import MetricSpec
from .._misc import tree_all_finite
from .._models import AbstractModel
from .._relaxation import AbstractRelaxation
from .._results import RESULTS


class TrainState(eqx.Module):
    """What a training run carries from step to step: the model, the optimiser state,
    the estimator state (e.g. an adaptive radius), the run's PRNG key and the number
    of steps taken. Each step draws its noise from `fold_in(fold_in(key, 1), step)`."""

    model: AbstractModel
    opt_state: PyTree
    estimator_state: Any
    key: PRNGKeyArray
    step: Int[Array, ""]


def init_train_state(model, optimizer, estimator, key, x, y) -> TrainState:
    """A fresh state; `x`, `y` (one batch) give the estimator its shapes."""
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    estimator_state = estimator.init(model, jnp.asarray(x).astype(model.dtype), jnp.asarray(y))
    return TrainState(model, opt_state, estimator_state, key, jnp.array(0, jnp.int32))


class TrainStep:
    """`step(state, x, y) -> (state, metrics)`: pure and jit-compiled (see
    `make_train_step`). `trace(state, x, y)` says, without running anything, the
    metrics' shapes and how an epoch reduces and names each (`MetricSpec`, declared by
    the estimator's diagnostics; a metric without one is a mean)."""

    def __init__(self, estimate_fn, optimizer):
        self._estimate = estimate_fn
        self._optimizer = optimizer
        self._step = eqx.filter_jit(self._apply)

    def __call__(self, state: "TrainState", x, y):
        return self._step(state, x, y)

    def trace(self, state: "TrainState", x, y) -> tuple[dict, dict[str, MetricSpec]]:
        """`(metric shapes, metric specs)` from one trace of the step (nothing runs)."""
        _, shapes, specs = eqx.filter_eval_shape(self._run, state, x, y)
        return shapes, specs

    def metric_specs(self, state: "TrainState", x, y) -> dict[str, MetricSpec]:
        return self.trace(state, x, y)[1]

    def _apply(self, state: "TrainState", x, y):
        new, metrics, _ = self._run(state, x, y)
        return new, metrics

    def _run(self, state: "TrainState", x, y):
        grads, info, estimator_state = self._estimate(state, x, y)
        params = eqx.filter(state.model, eqx.is_inexact_array)
        updates, opt_state = self._optimizer.update(grads, state.opt_state, params)
        model = eqx.apply_updates(state.model, updates)
        logits = jax.vmap(state.model.readout)(info.free_state)
        finite = tree_all_finite(eqx.filter(model, eqx.is_inexact_array))
        metrics = {
            **info.metrics(),
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == y),
            "failed": (info.result != RESULTS.successful).astype(jnp.float32),
            "skipped": (~tree_all_finite(grads)).astype(jnp.float32),
            "nonfinite_params": (~finite).astype(jnp.float32),
        }
        specs = info.metric_specs()
        only_converged = [
            k for k, spec in specs.items() if spec.reduce == "converged_mean" and k in metrics
        ]
        if only_converged:
            # counted only in steps whose relaxations all met their tolerance; the
            # epoch divides their sum by `converged_steps`
            converged = info.converged()
            for k in only_converged:
                metrics[k] = jnp.where(converged, metrics[k], 0.0)
            metrics["converged_steps"] = converged
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        new = TrainState(model, opt_state, estimator_state, state.key, state.step + 1)
        return new, metrics, specs


def make_train_step(
    estimator: AbstractEstimator,
    relaxation: AbstractRelaxation,
    cost: AbstractCost,
    optimizer: optax.GradientTransformation,
    nudged_relaxation: AbstractRelaxation | None = None,
) -> TrainStep:
    """`step(state, x, y) -> (state, metrics)`, pure and jit-compiled, for any estimator
    and any optax transform. It goes through the same checks as `ep.gradient` (the
    data's values are checked once when loaded, not at every step) and never raises on
    a failed relaxation or a large aliasing estimate: `metrics["failed"]` counts them,
    so one bad batch does not end a long run. `step.metric_specs(state, x, y)` says how
    each metric is reduced over an epoch."""
    nudged_relaxation = relaxation if nudged_relaxation is None else nudged_relaxation

    def estimate_fn(state: TrainState, x, y):
        key = jax.random.fold_in(jax.random.fold_in(state.key, 1), state.step)
        return estimate(
            state.model,
            x,
            y,
            state.estimator_state,
            estimator=estimator,
            relaxation=relaxation,
            nudged_relaxation=nudged_relaxation,
            cost=cost,
            key=key,
            runtime_checks=False,
        )

    return TrainStep(estimate_fn, optimizer)


def _reduce(specs: dict[str, MetricSpec], name: str) -> str:
    spec = specs.get(name)
    return "mean" if spec is None else spec.reduce


def empty_accumulator(
    metrics_like: dict[str, Array], specs: dict[str, MetricSpec]
) -> dict[str, Array]:
    """Zeros (and -inf for maxima) for the metric names of a step, plus a count."""
    acc = {
        k: jnp.full((), -jnp.inf if _reduce(specs, k) == "max" else 0.0, jnp.float32)
        for k in metrics_like
    }
    acc["count"] = jnp.zeros((), jnp.float32)
    return acc


def accumulate(
    acc: dict[str, Array], metrics: dict[str, Array], specs: dict[str, MetricSpec]
) -> dict[str, Array]:
    out = {
        k: jnp.maximum(acc[k], v) if _reduce(specs, k) == "max" else acc[k] + v
        for k, v in metrics.items()
    }
    out["count"] = acc["count"] + 1
    return out


def merge_sums(total: dict, read: dict, specs: dict[str, MetricSpec]) -> dict:
    """Host sums over several reads of the accumulator (floats)."""
    out = dict(total)
    for k, v in read.items():
        v = float(v)
        if _reduce(specs, k) == "max":
            out[k] = max(out.get(k, -math.inf), v)
        else:
            out[k] = out.get(k, 0.0) + v
    return out


def summarise(read: dict[str, float], specs: dict[str, MetricSpec]) -> dict[str, float]:
    """Means (sums over the count) and maxima from an accumulator read to the host, as
    the metrics' `specs` say. A `"converged_mean"` metric is the mean over the steps
    whose relaxations all converged (`converged_steps`, their fraction), and absent
    when there were none."""
    n = max(read["count"], 1.0)
    out = {}
    for k, v in read.items():
        if k == "count":
            continue
        reduce = _reduce(specs, k)
        if reduce == "max":
            out[k] = v
        elif reduce == "converged_mean":
            if read.get("converged_steps", 0.0) > 0:
                out[k] = v / read["converged_steps"]
        else:
            out[k] = v / n
    return out | {"count": read["count"]}


def make_eval_step(relaxation: AbstractRelaxation, cost: AbstractCost):
    """`evaluate(model, x, y, valid, key, sums) -> sums`, jit-compiled: adds the loss,
    top-1 and top-5 hits, free-phase residual and steps of the `valid` samples of a
    batch to device sums."""

    @eqx.filter_jit
    def evaluate(model, x, y, valid, key, sums):
        x, y = check_inputs(model, x, y, runtime=False)
        s, stats = free_phase(model, x, relaxation, key if relaxation.noisy else None)
        logits = jax.vmap(model.readout)(s)
        loss = jax.vmap(cost)(logits, y)
        rank = jnp.sum(logits > jnp.take_along_axis(logits, y[:, None], 1), axis=1)
        mask = valid.astype(jnp.float32)
        new = {
            "loss": jnp.sum(mask * loss),
            "top1": jnp.sum(mask * (rank == 0)),
            "top5": jnp.sum(mask * (rank < 5)),
            "residual": jnp.sum(mask * stats.residual),
            "free_steps": jnp.sum(mask * stats.steps),
            "count": jnp.sum(mask),
        }
        new = {k: v.astype(jnp.float32) for k, v in new.items()}
        out = {k: sums[k] + new[k] for k in new}
        out["free_steps_max"] = jnp.maximum(
            sums["free_steps_max"], jnp.max(jnp.where(valid, stats.steps, 0)).astype(jnp.float32)
        )
        out["failed"] = sums["failed"] + jnp.sum(
            mask * (stats.result != RESULTS.successful)
        ).astype(jnp.float32)
        return out

    return evaluate


def empty_eval_sums() -> dict[str, Array]:
    names = ("loss", "top1", "top5", "residual", "free_steps", "free_steps_max", "failed", "count")
    return {k: jnp.zeros((), jnp.float32) for k in names}
