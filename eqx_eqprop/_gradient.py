"""The single entry point `gradient`, the reference loss `equilibrium_loss`, and what
every estimator shares: input checks, the free phase, the diagnostics object."""

import abc
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Complex, Float, Int, PRNGKeyArray, PyTree, Real, Scalar

from ._costs import AbstractCost, CrossEntropy
from ._misc import complex_dtype
from ._models import AbstractEnergyModel
from ._models._base import State, free_update, nudged_update
from ._relaxation import AbstractRelaxation, FixedPointRelaxation, RelaxationStats
from ._results import RESULTS


class GradientInfo(eqx.Module):
    """Diagnostics returned next to the gradient.

    - `loss`: mean cost at the free equilibrium.
    - `result`: the most severe `RESULTS` code of the whole estimate.
    - `free_state`, `free_stats`: free equilibrium `(batch, ...)` and its stats `(batch,)`.
    - `betas`: the nudges that were relaxed, `(phases,)` complex (one of each
      conjugate pair), or `None`.
    - `nudged_state`, `nudged_stats`: nudged equilibria `(phases, batch, ...)` (complex)
      and their stats `(phases, batch)`, or `None`.
    - `error_estimate`: a-posteriori estimate of the relative aliasing error
      `||g - dL/dtheta|| / ||g||` of a phase estimator with `num_phases >= 2`, else `None`.
    - `fourier_norms`: `(N,)` norms of the Fourier coefficients k = 1..N of the phase
      samples (k = N from the free phase); their decay is what the estimate reads.
    - `adjoint_stats`: stats of the adjoint relaxation of `RecurrentBackprop`, else `None`.
    """

    loss: Real[Scalar, ""]
    result: RESULTS
    free_state: State
    free_stats: RelaxationStats
    betas: Complex[Array, " phases"] | None = None
    nudged_state: State | None = None
    nudged_stats: RelaxationStats | None = None
    error_estimate: Real[Scalar, ""] | None = None
    fourier_norms: Real[Array, " N"] | None = None
    adjoint_stats: RelaxationStats | None = None


class AbstractEstimator(eqx.Module):
    """A strategy that estimates `dL/dtheta` for a batch; used through `gradient`."""

    @abc.abstractmethod
    def __call__(
        self,
        model: AbstractEnergyModel,
        x: Float[Array, "batch ..."],
        y: Int[Array, " batch"],
        relaxation: AbstractRelaxation,
        cost: AbstractCost,
        key: PRNGKeyArray | None,
    ) -> tuple[PyTree, GradientInfo]:
        """Inputs are already checked; `key` is `None` unless the dynamics are noisy.
        Returns `(grads, info)`."""


def combine_results(*results: RESULTS) -> RESULTS:
    """The most severe code over any number of (batched) results, as a scalar."""
    out = RESULTS.successful
    for code in (
        RESULTS.inaccurate_estimate,
        RESULTS.nudged_phase_failed,
        RESULTS.max_steps_reached,
        RESULTS.diverged,
    ):
        hit = jnp.any(jnp.stack([jnp.any(r == code) for r in results]))
        out = RESULTS.where(hit, code, out)
    return out


def sample_keys(key: PRNGKeyArray | None, phase: int, batch: int):
    """Independent keys per sample for phase `phase` (0 = free), or None."""
    if key is None:
        return None
    return jax.random.split(jax.random.fold_in(key, phase), batch)


def free_phase(
    model: AbstractEnergyModel,
    x: Float[Array, "batch ..."],
    relaxation: AbstractRelaxation,
    key: PRNGKeyArray | None = None,
) -> tuple[State, RelaxationStats]:
    """Relax every sample of the batch at `beta = 0` from `model.init_state()`."""

    def one(xi, ki):
        args = (model, model.drive(xi))
        return relaxation.relax(free_update, model.init_state(), args, ki)

    keys = sample_keys(key, 0, x.shape[0])
    return jax.vmap(one, (0, None if keys is None else 0))(x, keys)


@eqx.filter_jit
def nudged_phase(
    model: AbstractEnergyModel,
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
    dtype = complex_dtype(model.dtype) if jnp.iscomplexobj(beta) else model.dtype
    beta = beta.astype(dtype)
    if start is None:
        start = jax.vmap(lambda _: model.init_state())(x)
    start = jtu.tree_map(lambda v: v.astype(dtype), start)
    keys = sample_keys(key, 0, x.shape[0])

    def one(si, xi, yi, ki):
        return relaxation.relax(nudged_update, si, (model, model.drive(xi), beta, yi, cost), ki)

    return jax.vmap(one, (0, 0, 0, None if keys is None else 0))(start, x, y, keys)


@eqx.filter_jit
def predict(
    model: AbstractEnergyModel,
    x: Float[Array, "batch ..."],
    relaxation: AbstractRelaxation = FixedPointRelaxation(),
    key: PRNGKeyArray | None = None,
) -> tuple[Float[Array, "batch classes"], RelaxationStats]:
    """Readout logits at the free equilibrium, `(batch, classes)`, and the relaxation
    stats (check `stats.result`: a network past criticality may not settle)."""
    if (
        not jnp.issubdtype(jnp.asarray(x).dtype, jnp.number)
        or jnp.asarray(x).shape[1:] != model.input_shape
    ):
        raise ValueError(f"x must have shape ('batch', {', '.join(map(str, model.input_shape))}).")
    s, stats = free_phase(model, jnp.asarray(x).astype(model.dtype), relaxation, key)
    return jax.vmap(model.readout)(s), stats


def mean_cost(model: AbstractEnergyModel, s: State, y, cost: AbstractCost) -> Scalar:
    """Mean over the batch of `C(readout(s), y)`."""
    return jnp.mean(jax.vmap(lambda si, yi: cost(model.readout(si), yi))(s, y))


def check_inputs(model: AbstractEnergyModel, x, y) -> tuple[Array, Array]:
    """Shape and dtype checks at trace time; label range and finiteness at run time."""
    if not isinstance(model, AbstractEnergyModel):
        raise TypeError(f"model must be an AbstractEnergyModel, got {type(model).__name__}.")
    x, y = jnp.asarray(x), jnp.asarray(y)
    expected = ("batch", *model.input_shape)
    if x.ndim != len(expected) or x.shape[1:] != model.input_shape:
        raise ValueError(
            f"x must have shape {expected} for this model, got {x.shape}. "
            "Flatten images for an MLP, and add a batch axis for a single sample."
        )
    if x.shape[0] == 0:
        raise ValueError("x holds an empty batch.")
    if jnp.iscomplexobj(x):
        raise TypeError("x must be real; only the states become complex under a nudge.")
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"y must hold one integer label per sample, shape ({x.shape[0]},), got shape {y.shape}."
        )
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}.")
    x = x.astype(model.dtype)
    x = eqx.error_if(
        x, jnp.any(~jnp.isfinite(x)), "x contains NaN or inf values; clean the input data."
    )
    n = model.num_classes
    y = eqx.error_if(
        y,
        jnp.any((y < 0) | (y >= n)),
        f"labels y must lie in [0, {n}) for a model with {n} classes.",
    )
    return x, y


def _warn_failures(*flags):
    for flag, code in zip(flags, _WARNED):
        if flag:
            warnings.warn(RESULTS[code], RuntimeWarning, stacklevel=2)


_WARNED = (
    RESULTS.max_steps_reached,
    RESULTS.diverged,
    RESULTS.nudged_phase_failed,
    RESULTS.inaccurate_estimate,
)


@eqx.filter_jit
def gradient(
    model: AbstractEnergyModel,
    x: Float[Array, "batch ..."],
    y: Int[Array, " batch"],
    *,
    estimator: AbstractEstimator,
    relaxation: AbstractRelaxation = FixedPointRelaxation(),
    cost: AbstractCost = CrossEntropy(),
    key: PRNGKeyArray | None = None,
    throw: bool = True,
) -> tuple[PyTree, GradientInfo]:
    """Estimate the gradient of the mean equilibrium loss of a batch.

    **Arguments:**

    - `model`: an energy-based network, e.g. `EnergyMLP`.
    - `x`: inputs, `(batch, *model.input_shape)`.
    - `y`: integer labels, `(batch,)`.
    - `estimator`: e.g. `HolomorphicEP(beta=0.1, num_phases=8)`, `ImplicitDifferentiation()`.
    - `relaxation`: how the free phase settles (`FixedPointRelaxation()` or `ODERelaxation()`).
    - `cost`: the readout cost, `CrossEntropy()` by default.
    - `key`: PRNG key for noisy dynamics (e.g. `FixedPointRelaxation(noise=0.04)`);
      each sample and phase gets its own noise.
    - `throw`: raise when `info.result` is not successful (non-converged or diverged
      relaxation, large aliasing error); with `False`, warn and return anyway.

    **Returns:**

    `(grads, info)`: `grads` has the structure of `eqx.filter(model, eqx.is_inexact_array)`
    and estimates `d mean_b C(readout(s*_b), y_b) / d theta`; `info` is a `GradientInfo`.
    """
    if not isinstance(estimator, AbstractEstimator):
        raise TypeError(f"estimator must be an AbstractEstimator, got {estimator!r}.")
    if not isinstance(relaxation, AbstractRelaxation):
        raise TypeError(f"relaxation must be an AbstractRelaxation, got {relaxation!r}.")
    if not isinstance(cost, AbstractCost):
        raise TypeError(f"cost must be an AbstractCost, got {cost!r}.")
    x, y = check_inputs(model, x, y)
    if relaxation.noisy and key is None:
        raise ValueError("This relaxation has noisy dynamics: pass key=jax.random.key(...).")
    grads, info = estimator(model, x, y, relaxation, cost, key if relaxation.noisy else None)
    if throw:
        grads, info = info.result.error_if((grads, info), info.result != RESULTS.successful)
    else:
        jax.debug.callback(_warn_failures, *[info.result == code for code in _WARNED])
    return grads, info


@eqx.filter_jit
def equilibrium_loss(
    model: AbstractEnergyModel,
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


def tree_stack_phases(trees):
    """Concatenate pytrees along their leading (phase) axis."""
    return jtu.tree_map(lambda *v: jnp.concatenate(v), *trees)
