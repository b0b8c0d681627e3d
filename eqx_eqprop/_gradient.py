"""The entry points: `gradient` (one call), `gradient_step` (estimator state threaded
through), the reference loss `equilibrium_loss`, and `predict` / `nudged_phase`."""

import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree, Real, Scalar

from ._costs import AbstractCost, CrossEntropy
from ._estimators import AbstractEstimator, AbstractGradientInfo
from ._estimators._base import call_step
from ._estimators._needs import check_needs
from ._inference import check_inputs, free_phase, mean_cost, nudged_relax
from ._misc import complex_dtype
from ._models import AbstractModel, State
from ._relaxation import AbstractRelaxation, FixedPointRelaxation, RelaxationStats
from ._results import RESULTS, combine_results

_WARNED = tuple(
    getattr(RESULTS, name)
    for name in RESULTS._name_to_item
    if name not in ("successful", "event_occurred")
)


def _warn_failures(*flags):
    for flag, code in zip(flags, _WARNED):
        if flag:
            warnings.warn(RESULTS[code], RuntimeWarning, stacklevel=2)


def check_strategies(estimator, relaxation, nudged_relaxation, cost) -> None:
    if not isinstance(estimator, AbstractEstimator):
        raise TypeError(f"estimator must be an AbstractEstimator, got {estimator!r}.")
    for name, value in (("relaxation", relaxation), ("nudged_relaxation", nudged_relaxation)):
        if not isinstance(value, AbstractRelaxation):
            raise TypeError(f"{name} must be an AbstractRelaxation, got {value!r}.")
    if not isinstance(cost, AbstractCost):
        raise TypeError(f"cost must be an AbstractCost, got {cost!r}.")


def _leaf_spec(v):
    if eqx.is_array(v) or isinstance(v, jax.ShapeDtypeStruct):
        return tuple(v.shape), jnp.dtype(v.dtype)
    return tuple(jnp.shape(v)), None  # a Python number: any dtype goes


def check_estimator_state(estimator, model, x, y, state) -> None:
    """At trace time: `state` has the structure, shapes and dtypes of
    `estimator.init(model, x, y)` (a state from another estimator, model or batch size
    would otherwise fail later, under a misleading message)."""
    expected = eqx.filter_eval_shape(estimator.init, model, x, y)
    same = jtu.tree_structure(expected) == jtu.tree_structure(state)
    if same:
        for want, got in zip(jtu.tree_leaves(expected), jtu.tree_leaves(state)):
            (shape, dtype), (got_shape, got_dtype) = _leaf_spec(want), _leaf_spec(got)
            same &= shape == got_shape and (got_dtype is None or got_dtype == dtype)
    if not same:
        raise ValueError(
            f"the estimator state does not match {type(estimator).__name__}.init(model, x, y): "
            f"expected {_show(expected)}, got {_show(state)}. Start from "
            "`state = estimator.init(model, x, y)` and pass on the state each "
            "gradient_step returns, with the same estimator and model."
        )


def _show(tree) -> str:
    def leaf(v):
        if eqx.is_array(v) or isinstance(v, jax.ShapeDtypeStruct):
            return f"{jnp.dtype(v.dtype).name}{list(v.shape)}"
        return repr(v)

    return str(jtu.tree_map(leaf, tree)) if tree is not None else "None"


def estimate(
    model, x, y, state, *, estimator, relaxation, nudged_relaxation, cost, key, runtime_checks
):
    """Checks, then one estimator step; no raising or warning on failures (the caller
    reads `info.result`). What `gradient`, `gradient_step` and the training step share."""
    nudged_relaxation = relaxation if nudged_relaxation is None else nudged_relaxation
    check_strategies(estimator, relaxation, nudged_relaxation, cost)
    check_needs(estimator.needs(), model, cost, type(estimator).__name__)
    x, y = check_inputs(model, x, y, runtime=runtime_checks)
    check_estimator_state(estimator, model, x, y, state)
    noisy = relaxation.noisy or nudged_relaxation.noisy
    if noisy and key is None:
        raise ValueError("This relaxation has noisy dynamics: pass key=jax.random.key(...).")
    return call_step(
        estimator,
        model,
        x,
        y,
        state,
        relaxation=relaxation,
        nudged_relaxation=nudged_relaxation,
        cost=cost,
        key=key,
    )


def _handle(grads, info, throw):
    if throw:
        return info.result.error_if((grads, info), info.result != RESULTS.successful)
    jax.debug.callback(_warn_failures, *[info.result == code for code in _WARNED])
    return grads, info


def _checked_step(model, x, y, state, estimator, relaxation, nudged_relaxation, cost, key, throw):
    grads, info, state = estimate(
        model,
        x,
        y,
        state,
        estimator=estimator,
        relaxation=relaxation,
        nudged_relaxation=nudged_relaxation,
        cost=cost,
        key=key,
        runtime_checks=True,
    )
    grads, info = _handle(grads, info, throw)
    return grads, info, state


@eqx.filter_jit
def gradient_step(
    model: AbstractModel,
    x: Float[Array, "batch ..."],
    y: Int[Array, " batch"],
    state: Any,
    *,
    estimator: AbstractEstimator,
    relaxation: AbstractRelaxation = FixedPointRelaxation(),
    nudged_relaxation: AbstractRelaxation | None = None,
    cost: AbstractCost = CrossEntropy(),
    key: PRNGKeyArray | None = None,
    throw: bool = True,
) -> tuple[PyTree, AbstractGradientInfo, Any]:
    """`gradient` for a stateful estimator: takes the estimator state (from
    `estimator.init(model, x, y)` or the previous step) and returns the next one,
    `(grads, info, state)`. Used by the training loop, e.g. for an adaptive radius."""
    return _checked_step(
        model, x, y, state, estimator, relaxation, nudged_relaxation, cost, key, throw
    )


@eqx.filter_jit
def gradient(
    model: AbstractModel,
    x: Float[Array, "batch ..."],
    y: Int[Array, " batch"],
    *,
    estimator: AbstractEstimator,
    relaxation: AbstractRelaxation = FixedPointRelaxation(),
    nudged_relaxation: AbstractRelaxation | None = None,
    cost: AbstractCost = CrossEntropy(),
    key: PRNGKeyArray | None = None,
    throw: bool = True,
) -> tuple[PyTree, AbstractGradientInfo]:
    """Estimate the gradient of the mean equilibrium loss of a batch.

    **Arguments:**

    - `model`: a network, e.g. `EnergyMLP` (any `AbstractModel`).
    - `x`: inputs, `(batch, *model.input_shape)`.
    - `y`: integer labels, `(batch,)`.
    - `estimator`: e.g. `HolomorphicEP(beta=0.1, num_phases=8)`, `ImplicitDifferentiation()`.
    - `relaxation`: how the free phase settles (`FixedPointRelaxation()`,
      `ODERelaxation()`, ...).
    - `nudged_relaxation`: how the nudged phases settle (default: `relaxation`), e.g.
      fewer steps from the free equilibrium.
    - `cost`: the readout cost, `CrossEntropy()` by default.
    - `key`: PRNG key for noisy dynamics (e.g. `FixedPointRelaxation(noise=0.04)`);
      each sample and phase gets its own noise.
    - `throw`: raise when `info.result` is not successful (non-converged or diverged
      relaxation, large aliasing error); with `False`, warn and return anyway.

    **Returns:**

    `(grads, info)`: `grads` has the structure of `eqx.filter(model, eqx.is_inexact_array)`
    and estimates `d mean_b C(readout(s*_b), y_b) / d theta`; `info` holds the
    diagnostics of the estimator's family (`GradientInfo`, `PhaseInfo`, `AdjointInfo`).
    A stateful estimator starts from `estimator.init` (see `gradient_step`).
    """
    state = estimator.init(model, x, y) if isinstance(estimator, AbstractEstimator) else None
    grads, info, _ = _checked_step(
        model, x, y, state, estimator, relaxation, nudged_relaxation, cost, key, throw
    )
    return grads, info


@eqx.filter_jit
def equilibrium_loss(
    model: AbstractModel,
    x: Float[Array, "batch ..."],
    y: Int[Array, " batch"],
    *,
    relaxation: AbstractRelaxation = FixedPointRelaxation(),
    cost: AbstractCost = CrossEntropy(),
    key: PRNGKeyArray | None = None,
    throw: bool = True,
) -> Real[Scalar, ""]:
    """Mean cost at the free equilibrium, `L = mean_b C(readout(s*_0(x_b)), y_b)`.

    `jax.grad` (or `eqx.filter_grad`) of it with respect to `model` differentiates
    through the equilibrium by the implicit function theorem (the relaxation's
    `ImplicitAdjoint`): the ground truth every estimator is checked against. With noisy
    dynamics (`key` given) it is the loss at the final noisy state, not an equilibrium.

    The relaxation's default adjoint solves densely: it materialises every sample's
    state Jacobian (`n_state^2` entries each), which a conv net rarely fits in memory.
    Give conv nets a matrix-free adjoint, e.g. `EvenOddRelaxation(adjoint=
    optx.ImplicitAdjoint(lx.GMRES(rtol=1e-5, atol=1e-5)))`;
    `eqx_eqprop.internal.check_adjoint_fits` says in advance whether a dense one fits.
    """
    x, y = check_inputs(model, x, y)
    if relaxation.noisy and key is None:
        raise ValueError("This relaxation has noisy dynamics: pass key=jax.random.key(...).")
    s, stats = free_phase(model, x, relaxation, key)
    loss = mean_cost(model, s, y, cost)
    if throw:
        result = combine_results(stats.result)
        loss = result.error_if(loss, result != RESULTS.successful)
    return loss


@eqx.filter_jit
def nudged_phase(
    model: AbstractModel,
    x: Float[Array, "batch ..."],
    y: Int[Array, " batch"],
    beta,
    *,
    relaxation: AbstractRelaxation = FixedPointRelaxation(),
    cost: AbstractCost = CrossEntropy(),
    start: State | None = None,
    key: PRNGKeyArray | None = None,
) -> tuple[State, RelaxationStats]:
    """Relax every sample of the batch at the nudge `beta` (a real or complex scalar)
    from `start` (`(batch, ...)`; default `model.init_state()`), e.g. the free
    equilibrium. Returns the states (complex for a complex `beta`) and their stats.
    `vmap` it over `beta` for phase portraits and stability maps."""
    x, y = check_inputs(model, x, y)
    beta = jnp.asarray(beta)
    if beta.shape != () or not jnp.issubdtype(beta.dtype, jnp.number):
        raise TypeError(f"nudged_phase: beta must be a real or complex scalar, got {beta!r}.")
    beta = eqx.error_if(
        beta,
        ~jnp.isfinite(beta),
        "nudged_phase: beta is NaN or infinite; give a finite real or complex nudge.",
    )
    dtype = complex_dtype(model.dtype) if jnp.iscomplexobj(beta) else model.dtype
    beta = beta.astype(dtype)
    if start is None:
        start = jax.vmap(lambda _: model.init_state())(x)
    start = jtu.tree_map(lambda v: v.astype(dtype), start)
    drives = jax.vmap(model.drive)(x)
    return nudged_relax(model, drives, start, y, beta, cost, relaxation, key, stream=0)


@eqx.filter_jit
def predict(
    model: AbstractModel,
    x: Float[Array, "batch ..."],
    relaxation: AbstractRelaxation = FixedPointRelaxation(),
    key: PRNGKeyArray | None = None,
) -> tuple[Float[Array, "batch classes"], RelaxationStats]:
    """Readout logits at the free equilibrium, `(batch, classes)`, and the relaxation
    stats (check `stats.result`: a network past criticality may not settle)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.number) or x.shape[1:] != model.input_shape:
        raise ValueError(
            f"x must have shape ('batch', {', '.join(map(str, model.input_shape))}), got {x.shape}."
        )
    if jnp.iscomplexobj(x):
        raise TypeError("x must be real; only the states become complex under a nudge.")
    if not isinstance(relaxation, AbstractRelaxation):
        raise TypeError(f"relaxation must be an AbstractRelaxation, got {relaxation!r}.")
    if relaxation.noisy and key is None:
        raise ValueError("This relaxation has noisy dynamics: pass key=jax.random.key(...).")
    x = eqx.error_if(
        x.astype(model.dtype),
        jnp.any(~jnp.isfinite(x)),
        "x contains NaN or inf values; clean the input data.",
    )
    s, stats = free_phase(model, x, relaxation, key)
    return jax.vmap(model.readout)(s), stats
