"""Equilibrium propagation: one-sided, symmetric and holomorphic (N phases).

All three sample the model's learning signal `f(beta) = dF_beta/dtheta (s*_beta)` at
nudges on a circle of radius |beta| and return the first Fourier coefficient,

    g = (1/N) sum_n (f(beta_n) - f(0)) / beta_n,      beta_n = |beta| exp(2 pi i n / N),

which is `dL/dtheta` up to the aliasing error `c_{N+1} |beta|^N` (Laborieux & Zenke
2022). N = 1 (subtracting the free phase) is one-sided EP (Scellier & Bengio 2017);
N = 2 is symmetric EP (Laborieux et al. 2021). Real parameters make phases come in
conjugate pairs: each pair is relaxed once and counted as `2 Re`.
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.core import Tracer
from jaxtyping import Array, PyTree

from .._checks import check_integer, check_real
from .._inference import free_phase, mean_cost, nudged_relax
from .._misc import complex_dtype, tree_astype, tree_norm
from .._models import Nudge
from .._relaxation import RelaxationStats
from .._results import RESULTS, combine_results
from ._aliasing import aliasing_estimate
from ._base import AbstractEstimator, PhaseInfo
from ._needs import ModelNeeds
from ._radius import AbstractRadius, AdaptiveRadius, ConstantRadius, check_radius_settings


def real_combination(coef, rows):
    """`Re sum_j coef_j rows_j` in real arithmetic (no complex dot)."""
    if not jnp.iscomplexobj(coef):
        return jnp.tensordot(coef, rows, axes=1)
    return jnp.tensordot(coef.real, rows.real, axes=1) - jnp.tensordot(coef.imag, rows.imag, axes=1)


def check_beta(beta, name: str, positive: bool = False) -> Array:
    """`beta` as an array, after checking a concrete value (on the host: a Python or
    NumPy number is never sent to the device to be checked); a traced one (a sweep
    under jit or vmap) passes through."""
    if isinstance(beta, Tracer):
        return beta
    host = np.asarray(beta)
    if host.shape != () or np.iscomplexobj(host) or not np.issubdtype(host.dtype, np.number):
        raise TypeError(f"{name}: beta must be a real scalar, got {beta!r}.")
    value = float(host)
    if value == 0 or not math.isfinite(value):
        raise ValueError(
            f"{name}: beta must be finite and non-zero (got {value}); the estimate "
            "divides by beta. Typical values are 0.01 to 0.5."
        )
    if positive and value < 0:
        raise ValueError(
            f"{name}: beta is the radius |beta| of the circle of nudges and must be "
            f"positive, got {value}."
        )
    return jnp.asarray(beta)


def beta_field(name: str, positive: bool = True):
    """An array field `beta`, checked when the estimator is made."""
    return eqx.field(converter=lambda beta: check_beta(beta, name, positive))


def check_target(estimator, name: str) -> None:
    """The error tolerance and the adaptive-radius settings of a phase estimator."""
    check_real(
        estimator.error_tolerance,
        "error_tolerance (a relative error)",
        minimum=0.0,
        strict=True,
        optional=True,
        owner=name,
    )
    check_radius_settings(
        estimator.target_error,
        estimator.max_retries,
        estimator.min_radius_fraction,
        name,
        optional=True,
    )


def circle_factors(n: int) -> tuple[complex, ...]:
    """`exp(2 pi i k / n)`, k = 0..n-1, with exact conjugate pairs and exact -1."""
    out = [1 + 0j] + [0j] * (n - 1)
    for i in range(1, n):
        if 2 * i == n:
            out[i] = -1 + 0j
        elif 2 * i < n:
            angle = 2 * math.pi * i / n
            out[i] = complex(math.cos(angle), math.sin(angle))
            out[n - i] = out[i].conjugate()
    return tuple(out)


class PhaseSamples(eqx.Module):
    """What the phases at one radius produced: the first Fourier coefficient of the
    observable, the nudges, states and stats, and the aliasing estimate."""

    coefficient: PyTree
    betas: Array
    states: PyTree
    stats: RelaxationStats
    error: Array | None
    norms: Array | None


class AbstractPhaseEstimator(AbstractEstimator):
    """The machinery of the phase estimators: free phase, nudged phases on a circle
    (vmapped; conjugate pairs relaxed once), an observable sampled at each phase, its
    first Fourier coefficient, and the aliasing estimate.

    Subclasses give `phase_factors` and may change what is sampled (`observable`,
    the model's EP learning signal by default) and how its coefficient becomes the
    gradient (`finish`, the identity by default).
    `beta` is an array field, so a new value does not recompile a jitted caller.
    """

    beta: eqx.AbstractVar[Array]
    error_tolerance: eqx.AbstractVar[float | None]

    def inaccurate_advice(self):
        return ("lower |beta|, raise num_phases or give the estimator a target_error",)

    @abc.abstractmethod
    def phase_factors(self) -> tuple[complex, ...]:
        """Unit factors `u_n`, the nudges being `beta_n = radius * u_n`, in circle order
        (conjugates of complex ones included, exactly)."""

    def needs(self) -> ModelNeeds:
        """An energy network; a holomorphic one and cost when a phase is complex."""
        return ModelNeeds(energy=True, holomorphic=any(u.imag != 0 for u in self.phase_factors()))

    def observable(self, model, x, s, nudge: Nudge | None) -> PyTree:
        """What is sampled at each phase (batched): the EP learning signal `dF/dtheta`."""
        return model.learning_signal(x, s, nudge)

    def observable_change(self, model, x, s_free, f0, s, nudge: Nudge) -> PyTree:
        """`observable(s) - f0` with `f0 = observable(s_free)`: for the EP learning
        signal the model's `learning_signal_change`, which a layered network computes
        from the displacement `s - s_free` without cancellation."""
        del f0
        return model.learning_signal_change(x, s_free, s, nudge)

    def finish(self, model, x, y, s_free, cost, coefficient) -> tuple[PyTree, dict | None]:
        """The gradient from the first Fourier coefficient of the observable, and any
        diagnostics to report (`None`)."""
        del model, x, y, s_free, cost
        return coefficient, None

    def sample_phases(
        self, model, x, y, s_free, f0, beta, nudged_relaxation, cost, key
    ) -> PhaseSamples:
        """Relax the phases `beta_n = beta u_n` from the free equilibrium `s_free` and
        combine the observable `f(beta_n) - f0` into its first Fourier coefficient."""
        factors = self.phase_factors()
        n_phases = len(factors)
        real_idx = [i for i, u in enumerate(factors) if u.imag == 0]
        cplx_idx = [i for i, u in enumerate(factors) if u.imag > 0]
        dtype, cdtype = model.dtype, complex_dtype(model.dtype)
        frozen = jax.lax.stop_gradient(model)
        drives = jax.lax.stop_gradient(jax.vmap(model.drive)(x))

        def relax(beta_n, start, phase_id):
            return nudged_relax(
                frozen, drives, start, y, beta_n, cost, nudged_relaxation, key, phase_id
            )

        coefficient = jtu.tree_map(jnp.zeros_like, f0)
        circle: list = [None] * n_phases  # n -> (row among the relaxed phases, conjugate)
        unique, betas, states, stats = [], [], [], []
        row = 0
        for idx, group_dtype in ((real_idx, dtype), (cplx_idx, cdtype)):
            if not idx:
                continue
            units = jnp.array([factors[i] if i in cplx_idx else factors[i].real for i in idx])
            betas_g = beta.astype(group_dtype) * units.astype(group_dtype)
            phase_ids = jnp.array([1 + i for i in idx])  # stream 0 is the free phase
            s_n, st_n = jax.vmap(relax, (0, None, 0))(
                betas_g, tree_astype(s_free, group_dtype), phase_ids
            )
            # f(beta_n) - f(0), the phases' changes of the observable
            f_n = jax.vmap(
                lambda s, b: self.observable_change(model, x, s_free, f0, s, Nudge(b, y, cost))
            )(s_n, betas_g)
            weights = jnp.array([1.0 if i in real_idx else 2.0 for i in idx]) / n_phases
            coef = weights.astype(group_dtype) / betas_g  # += Re sum_j coef_j (f_j - f0)
            coefficient = jtu.tree_map(lambda g, v: g + real_combination(coef, v), coefficient, f_n)
            for j, i in enumerate(idx):
                circle[i] = (row + j, False)
                if i in cplx_idx:
                    circle[factors.index(factors[i].conjugate())] = (row + j, True)
            row += len(idx)
            unique.append(f_n)
            betas.append(betas_g.astype(cdtype))
            states.append(tree_astype(s_n, cdtype))
            stats.append(st_n)
        error = norms = None
        if n_phases >= 2:
            scale = tree_norm(f0)
            error, norms = aliasing_estimate(scale, unique, circle, jnp.abs(beta), coefficient)
        return PhaseSamples(
            coefficient,
            jnp.concatenate(betas),
            _stack(states),
            _stack(stats),
            error,
            norms,
        )

    def radius_rule(self) -> AbstractRadius:
        """How the radius |beta| is chosen at each call (`ConstantRadius()`: `beta`)."""
        return ConstantRadius()

    def init(self, model, x, y):
        """The state of the radius rule (`None` for a constant radius)."""
        del x, y
        return self.radius_rule().init(jnp.asarray(self.beta).astype(model.dtype))

    def step(self, model, x, y, state, *, relaxation, nudged_relaxation, cost, key):
        noisy = relaxation.noisy or nudged_relaxation.noisy
        key = key if noisy else None
        rule = self.radius_rule()
        if noisy and rule.adaptive:
            raise ValueError(
                f"{type(self).__name__}: target_error adapts the radius to the aliasing "
                "estimate, which noisy dynamics blur with their noise; use a fixed beta "
                "(target_error=None) with noise."
            )
        s_free, free_stats = jax.lax.stop_gradient(free_phase(model, x, relaxation, key))
        f0 = self.observable(model, x, s_free, None)
        beta = jnp.asarray(self.beta).astype(model.dtype)

        def sample(b):
            return self.sample_phases(model, x, y, s_free, f0, b, nudged_relaxation, cost, key)

        n = len(self.phase_factors())
        samples, radius, retries, state = rule.choose(sample, beta, state, n)
        grads, diagnostics = self.finish(model, x, y, s_free, cost, samples.coefficient)
        info = self._info(model, y, cost, s_free, free_stats, samples, radius, retries, noisy)
        return grads, eqx.tree_at(lambda i: i.diagnostics, info, diagnostics, is_leaf=_none), state

    def _info(self, model, y, cost, s_free, free_stats, samples, radius, retries, noisy):
        nudged_failed = jnp.any(samples.stats.result != RESULTS.successful)
        result = combine_results(
            free_stats.result,
            RESULTS.where(nudged_failed, RESULTS.nudged_phase_failed, RESULTS.successful),
        )
        # with noisy dynamics the coefficients carry the noise too: the estimate is
        # reported but measures noise as much as aliasing, so it is not a failure
        if samples.error is not None and self.error_tolerance is not None and not noisy:
            bad = ~(samples.error <= self.error_tolerance)
            result = combine_results(
                result, RESULTS.where(bad, RESULTS.inaccurate_estimate, RESULTS.successful)
            )
        return PhaseInfo(
            loss=mean_cost(model, s_free, y, cost),
            result=result,
            free_state=s_free,
            free_stats=free_stats,
            betas=samples.betas,
            nudged_state=samples.states,
            nudged_stats=samples.stats,
            error_estimate=samples.error,
            fourier_norms=samples.norms,
            radius=radius,
            retries=jnp.asarray(retries, jnp.int32),
        )


def _none(v):
    return v is None


def _stack(trees):
    """Concatenate pytrees along their leading (phase) axis."""
    return jtu.tree_map(lambda *v: jnp.concatenate(v), *trees)


class AbstractAdaptiveEstimator(AbstractPhaseEstimator):
    """A phase estimator whose radius may adapt to its aliasing estimate: with
    `target_error` its `radius_rule()` is an `AdaptiveRadius`, else a constant radius."""

    target_error: eqx.AbstractVar[float | None]
    max_retries: eqx.AbstractVar[int]
    min_radius_fraction: eqx.AbstractVar[float]

    def radius_rule(self) -> AbstractRadius:
        if self.target_error is None:
            return ConstantRadius()
        return AdaptiveRadius(self.target_error, self.max_retries, self.min_radius_fraction)


class ClassicEP(AbstractPhaseEstimator):
    """One-sided EP (Scellier & Bengio 2017):
    `g = (dF/dtheta(s*_beta) - dF/dtheta(s*_0)) / beta`, bias O(beta).

    - `beta`: the nudge, real and non-zero (either sign).
    """

    beta: Array = beta_field("ClassicEP", positive=False)
    error_tolerance: None = eqx.field(static=True, default=None, init=False)

    def phase_factors(self):
        return (1 + 0j,)


class SymmetricEP(AbstractAdaptiveEstimator):
    """Symmetric EP (Laborieux et al. 2021):
    `g = (dF/dtheta(s*_beta) - dF/dtheta(s*_-beta)) / (2 beta)`, bias O(beta^2).
    Also named `CenteredEP` (configuration kind `"centered"`), the name "centered EP" of
    Scellier et al. (2023): the same class, not a copy.

    - `beta`: the nudge magnitude (> 0).
    - `error_tolerance`: flag (`RESULTS.inaccurate_estimate`) a relative aliasing error
      estimate above this; `None` turns the check off.
    - `target_error`, `max_retries`: an adaptive radius, as for `HolomorphicEP`.
    """

    beta: Array = beta_field("SymmetricEP")
    error_tolerance: float | None = eqx.field(static=True, default=0.05)
    target_error: float | None = eqx.field(static=True, default=None)
    max_retries: int = eqx.field(static=True, default=3)
    min_radius_fraction: float = eqx.field(static=True, default=0.01)

    def __check_init__(self):
        check_target(self, "SymmetricEP")

    def phase_factors(self):
        return (1 + 0j, -1 + 0j)


# "centered EP" (Scellier et al. 2023) is symmetric EP: one class under both names
CenteredEP = SymmetricEP


class HolomorphicEP(AbstractAdaptiveEstimator):
    """Holomorphic EP with N phases (Laborieux & Zenke 2022): the discretised Cauchy
    integral `g = (1/N) sum_n (f(beta_n) - f(0)) / beta_n` over
    `beta_n = beta exp(2 pi i n / N)`; exact up to O(beta^N) aliasing, which is
    estimated from the decay of the Fourier coefficients of the phase samples and
    reported as `info.error_estimate`.

    - `beta`: the radius |beta| > 0.
    - `num_phases`: N >= 1 (N = 1 is one-sided EP, N = 2 symmetric EP).
    - `error_tolerance`: flag (`RESULTS.inaccurate_estimate`) a relative error estimate
      above this; `None` turns the check off. Not applied to noisy dynamics, where the
      estimate also measures the noise.
    - `target_error`: choose the radius adaptively, `beta` being the largest (see
      below); `None` (default) keeps `|beta|` fixed.
    - `max_retries`: smaller radii tried within one call (adaptive radius only).
    - `min_radius_fraction`: the radius never goes below this fraction of `beta`.

    **Adaptive radius.** With `target_error`, the radius follows `AdaptiveRadius` (its
    docstring has the rule): a call whose aliasing estimate exceeds the target retries at
    smaller radii inside the same compiled call and keeps the best attempt, and the
    estimator state carries the radius to the next call, growing it back when the
    estimate allows, like a step-size controller. The accepted radius is `info.radius`,
    the retries `info.retries`. Not available with noisy dynamics.

    The complex phases need a holomorphic network and cost.
    """

    beta: Array = beta_field("HolomorphicEP")
    # beta_field has no default, which pyright cannot see through the helper
    num_phases: int = eqx.field(static=True)  # pyright: ignore[reportGeneralTypeIssues]
    error_tolerance: float | None = eqx.field(static=True, default=0.05)
    target_error: float | None = eqx.field(static=True, default=None)
    max_retries: int = eqx.field(static=True, default=3)
    min_radius_fraction: float = eqx.field(static=True, default=0.01)

    def __check_init__(self):
        check_target(self, "HolomorphicEP")
        check_integer(self.num_phases, "num_phases", owner="HolomorphicEP")
        if self.target_error is not None and self.num_phases < 2:
            raise ValueError(
                "HolomorphicEP: target_error needs the aliasing estimate, which needs "
                "num_phases >= 2."
            )

    def phase_factors(self):
        return circle_factors(self.num_phases)
