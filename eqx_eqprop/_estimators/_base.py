"""The estimator interface (init/step, optionally stateful) and the diagnostics objects."""

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float, Int, PRNGKeyArray, PyTree, Real, Scalar

from .._costs import AbstractCost
from .._metrics import MetricSpec
from .._models import AbstractModel, State
from .._relaxation import AbstractRelaxation, RelaxationStats
from .._results import RESULTS
from ._needs import ModelNeeds


def _steps_specs(prefix: str) -> dict[str, MetricSpec]:
    return {
        f"{prefix}_steps_max": MetricSpec("max"),
        f"{prefix}_unconverged": MetricSpec(unconverged=prefix),
    }


def _all_converged(stats: RelaxationStats) -> Array:
    return jnp.all(stats.result == RESULTS.successful)


def _steps_metrics(prefix: str, stats: RelaxationStats) -> dict[str, Array]:
    """Mean and maximum steps, and the fraction of relaxations that missed their target."""
    steps = stats.steps.astype(jnp.float32)
    return {
        f"{prefix}_steps": jnp.mean(steps),
        f"{prefix}_steps_max": jnp.max(steps),
        f"{prefix}_unconverged": jnp.mean(stats.result != RESULTS.successful),
    }


class AbstractGradientInfo(eqx.Module):
    """Diagnostics returned next to a gradient. Every estimator reports:

    - `loss`: mean cost at the free equilibrium.
    - `result`: the most severe `RESULTS` code of the whole estimate.
    - `free_state`, `free_stats`: free equilibrium `(batch, ...)` and its stats `(batch,)`.

    and each family adds its own fields. `metrics()` gives the scalars a training loop
    logs, `metric_specs()` how an epoch reduces and names those that are not plain
    means, and `converged()` whether every relaxation met its tolerance.
    """

    loss: eqx.AbstractVar[Real[Scalar, ""]]
    result: eqx.AbstractVar[RESULTS]
    free_state: eqx.AbstractVar[State]
    free_stats: eqx.AbstractVar[RelaxationStats]

    def metrics(self) -> dict[str, Array]:
        return {
            "loss": self.loss,
            "residual": jnp.mean(self.free_stats.residual),
            **_steps_metrics("free", self.free_stats),
        }

    def metric_specs(self) -> dict[str, MetricSpec]:
        """How a training loop reduces and names each of `metrics()` (a metric without
        an entry is a mean, not printed)."""
        return _steps_specs("free")

    def converged(self) -> Array:
        """Whether every relaxation of the estimate met its tolerance (a scalar bool)."""
        return _all_converged(self.free_stats)


class GradientInfo(AbstractGradientInfo):
    """Diagnostics of the reference estimators and of `OscillatingEP`: see
    `AbstractGradientInfo`."""

    loss: Real[Scalar, ""]
    result: RESULTS
    free_state: State
    free_stats: RelaxationStats


class PhaseInfo(AbstractGradientInfo):
    """Diagnostics of the phase estimators (`ClassicEP`, `SymmetricEP`,
    `HolomorphicEP`), besides those of `AbstractGradientInfo`:

    - `betas`: the nudges that were relaxed, `(phases,)` complex (one of each conjugate
      pair).
    - `nudged_state`, `nudged_stats`: nudged equilibria `(phases, batch, ...)` (complex)
      and their stats `(phases, batch)`.
    - `error_estimate`: a-posteriori estimate of the relative aliasing error
      `||g - dL/dtheta|| / ||g||` with `num_phases >= 2`, else `None`.
    - `fourier_norms`: `(N,)` norms of the Fourier coefficients k = 1..N of the phase
      samples (k = N from the free phase); their decay is what the estimate reads.
    - `radius`: the radius |beta| that was used.
    - `retries`: how many smaller radii were tried after the first (adaptive radius).
    - `diagnostics`: scalars an estimator adds (`GeneralizedHEP`: the homeostasis loss,
      the Jacobian symmetry ratio, the cosine to a reference gradient), or `None`.
    """

    loss: Real[Scalar, ""]
    result: RESULTS
    free_state: State
    free_stats: RelaxationStats
    betas: Complex[Array, " phases"]
    nudged_state: State
    nudged_stats: RelaxationStats
    error_estimate: Real[Scalar, ""] | None
    fourier_norms: Real[Array, " N"] | None
    radius: Real[Scalar, ""]
    retries: Int[Scalar, ""]
    diagnostics: dict[str, Array] | None = None

    def metrics(self):
        out = {**super().metrics(), **_steps_metrics("nudged", self.nudged_stats)}
        out["radius"] = self.radius
        out["retries"] = self.retries.astype(jnp.float32)
        if self.error_estimate is not None:
            out["error_estimate"] = self.error_estimate
        return {**out, **(self.diagnostics or {})}

    def metric_specs(self):
        # the aliasing estimate reads DFT_0 - f(0), where a relaxation stopped at its
        # budget adds its own error (it read 1e4 on a conv net whose phases all ran out
        # of sweeps): an epoch averages it over the steps whose relaxations converged
        return {
            **super().metric_specs(),
            **_steps_specs("nudged"),
            "error_estimate": MetricSpec("converged_mean", label="hEP error est."),
        }

    def converged(self):
        return super().converged() & _all_converged(self.nudged_stats)


class AdjointInfo(AbstractGradientInfo):
    """Diagnostics of `RecurrentBackprop`: those of `AbstractGradientInfo` and
    `adjoint_stats`, the stats of the adjoint relaxation `(batch,)`."""

    loss: Real[Scalar, ""]
    result: RESULTS
    free_state: State
    free_stats: RelaxationStats
    adjoint_stats: RelaxationStats

    def metrics(self):
        return {**super().metrics(), **_steps_metrics("adjoint", self.adjoint_stats)}

    def metric_specs(self):
        return {**super().metric_specs(), **_steps_specs("adjoint")}

    def converged(self):
        return super().converged() & _all_converged(self.adjoint_stats)


STEP_INPUTS = ("relaxation", "nudged_relaxation", "key")


class AbstractEstimator(eqx.Module):
    """A strategy that estimates `dL/dtheta` for a batch, in the init/step pattern of
    optimistix solvers and diffrax step-size controllers: `init` makes the state that
    lives across steps (`None` for stateless estimators), `step` estimates one batch and
    returns the next state. `ep.gradient` wraps both for one-call use, `ep.gradient_step`
    threads the state.

    `step_inputs` names what `step` takes by keyword besides `cost`: the free
    `relaxation`, the `nudged_relaxation` of a second phase, the PRNG `key`. An estimator
    lists only what it uses and is called with exactly those (`call_step`); the default
    is all three. What else it uses (an adjoint relaxation, a reference estimator) it
    holds as fields.
    """

    step_inputs: ClassVar[tuple[str, ...]] = STEP_INPUTS

    def needs(self) -> ModelNeeds:
        """What the estimator needs of the network and the cost (`ModelNeeds`), checked
        once by `ep.gradient`, `ep.gradient_step` and the training step before `step`
        runs. Nothing by default (the references work on any network)."""
        return ModelNeeds()

    def inaccurate_advice(self) -> tuple[str, ...]:
        """What to change when this estimator reports `RESULTS.inaccurate_estimate` in
        training: what the end-of-epoch warning suggests."""
        return ()

    def init(self, model: AbstractModel, x: Float[Array, "batch ..."], y) -> Any:
        """The estimator state before the first step (`None` unless stateful)."""
        del model, x, y
        return None

    @abc.abstractmethod
    def step(
        self,
        model: AbstractModel,
        x: Float[Array, "batch ..."],
        y: Int[Array, " batch"],
        state: Any,
        *,
        cost: AbstractCost,
        **inputs: Any,
    ) -> tuple[PyTree, AbstractGradientInfo, Any]:
        """Inputs are already checked. `inputs` are those of `step_inputs`:
        `relaxation`, `nudged_relaxation` (`AbstractRelaxation`s) and `key` (a PRNG key
        or `None`, for noisy dynamics and any other randomness of the estimator).
        Returns `(grads, info, next state)`."""


def call_step(
    estimator: AbstractEstimator,
    model: AbstractModel,
    x,
    y,
    state,
    *,
    relaxation: AbstractRelaxation,
    nudged_relaxation: AbstractRelaxation,
    cost: AbstractCost,
    key: PRNGKeyArray | None,
):
    """`estimator.step` with the inputs its `step_inputs` names, and no others."""
    given = {"relaxation": relaxation, "nudged_relaxation": nudged_relaxation, "key": key}
    unknown = [name for name in estimator.step_inputs if name not in given]
    if unknown:
        raise TypeError(
            f"{type(estimator).__name__}.step_inputs names {unknown}; an estimator's step "
            f"can take {', '.join(STEP_INPUTS)}."
        )
    inputs = {name: given[name] for name in estimator.step_inputs}
    return estimator.step(model, x, y, state, cost=cost, **inputs)
