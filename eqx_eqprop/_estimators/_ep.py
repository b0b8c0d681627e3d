"""Equilibrium propagation: one-sided, symmetric and holomorphic (N phases).

All three sample `f(beta) = dF_beta/dtheta (s*_beta)` at nudges on a circle of
radius |beta| and return the first Fourier coefficient,

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
from jaxtyping import Array, PyTree, Real

from .._gradient import (
    AbstractEstimator,
    GradientInfo,
    combine_results,
    free_phase,
    mean_cost,
    tree_stack_phases,
)
from .._misc import complex_dtype, tree_astype, tree_norm
from .._models._base import energy, nudged_update
from .._relaxation import AbstractRelaxation
from .._results import RESULTS


def energy_gradient(model, x, s, beta, y, cost) -> PyTree:
    """`d/dtheta mean_b [-Phi(x_b, s_b) + beta C(readout(s_b), y_b)]` at fixed states:
    one batched backward pass (weight gradients are batch-contracted matmuls). Complex
    states give the complex derivative `d Re E + i d Im E`."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def mean_energy(params, weight):
        m = eqx.combine(params, static)
        e = jax.vmap(lambda xi, si, yi: energy(m, xi, si, beta, yi, cost))(x, s, y)
        return jnp.real(weight * jnp.mean(e))

    if not any(jnp.iscomplexobj(v) for v in jtu.tree_leaves(s)):
        return jax.grad(mean_energy)(params, 1.0)
    weights = jnp.array([1.0, -1.0j], complex_dtype(model.dtype))  # Re E and Im E
    g = jax.vmap(jax.grad(mean_energy), (None, 0))(params, weights)
    return jtu.tree_map(lambda v: jax.lax.complex(v[0], v[1]), g)


def aliasing_estimate(
    f0: PyTree,
    unique: list[PyTree],
    circle: list[tuple[int, bool]],
    radius,
    gradient: PyTree,
) -> tuple[Real[Array, ""], Real[Array, " N"]]:
    """A-posteriori relative aliasing error of the N-phase estimate.

    The DFT of the samples `f(beta_n)` gives `c_k |beta|^k` (aliased with k + N, 2N..)
    for k = 1..N-1, and `DFT_0 - f(0)` gives `c_N |beta|^N`. Their norms `m_k` decay
    like `rho^k`, `rho = |beta| / R` with `R` the distance to the nearest singularity
    of `beta -> s*_beta`. `rho` is fitted on the last three `m_k`, `m_{N+1} = m_N rho`,
    and the error of `g = DFT_1 / |beta|` is about `m_{N+1} / (|beta| ||g||)` relative.
    On contractive test networks it is within a factor 5 of the true error. It measures
    aliasing: the bias of tolerance-limited relaxations (about tolerance / |beta|) is a
    separate error, seen in the residuals of `info.free_stats` and `info.nudged_stats`.

    `unique` holds the relaxed samples stacked along a leading axis (a real and a
    complex group); `circle[n] = (row, conjugate)` says which row of the concatenated
    groups is `f(beta_n)`, conjugated for the partner of a complex phase. Each
    coefficient is a combination of the rows minus `f(0)` (which leaves k >= 1
    unchanged and keeps `DFT_0 - f(0)` free of cancellation): one small matmul per
    parameter array, `(N, rows) @ (rows, size)`.
    Returns `(relative error estimate, (m_1..m_N))`.
    """
    n = len(circle)
    n_rows = sum(jtu.tree_leaves(g)[0].shape[0] for g in unique)
    k = np.arange(n)
    dft = np.exp(-2j * np.pi * np.outer(k, k) / n) / n  # [k, n]
    # coefficient k = sum_a plain[k, a] d_a + conjugated[k, a] conj(d_a), d_a = u_a - f(0)
    plain = np.zeros((n, n_rows), complex)
    conjugated = np.zeros((n, n_rows), complex)
    for m, (row, conj) in enumerate(circle):
        (conjugated if conj else plain)[:, row] += dft[:, m]
    # with d = r + i q: plain d + conjugated conj(d) = (plain + conj.) r + i (plain - conj.) q
    on_real, on_imag = plain + conjugated, 1j * (plain - conjugated)
    sq = 0
    for leaves in zip(*[jtu.tree_leaves(g) for g in unique], jtu.tree_leaves(f0)):
        *groups, free = leaves
        free = free.reshape(1, -1)
        c_re, c_im, start = 0, 0, 0
        for g in groups:
            # coefficient = A r + B q with r, q the real and imaginary parts of the
            # rows minus f(0), in real matmuls (XLA's complex matmul on CPU is several
            # times slower than four real ones)
            rows = slice(start, start + g.shape[0])
            start += g.shape[0]
            g = g.reshape(g.shape[0], -1)
            r = jnp.real(g) - free
            c_re = c_re + jnp.asarray(on_real.real[:, rows], r.dtype) @ r
            c_im = c_im + jnp.asarray(on_real.imag[:, rows], r.dtype) @ r
            if jnp.iscomplexobj(g):
                q = jnp.imag(g)
                c_re = c_re + jnp.asarray(on_imag.real[:, rows], q.dtype) @ q
                c_im = c_im + jnp.asarray(on_imag.imag[:, rows], q.dtype) @ q
        sq = sq + jnp.sum(c_re**2 + c_im**2, axis=1)
    norms = jnp.sqrt(jnp.concatenate([sq[1:], sq[:1]]))  # m_1..m_N (m_N: DFT_0 - f(0))
    eps = jnp.finfo(norms.dtype).eps
    floor = eps * (tree_norm(f0) + jnp.max(norms))
    logs = jnp.log(norms + floor)
    order = jnp.arange(1, n + 1, dtype=logs.dtype)

    def fit(kk, ll):  # least-squares slope: log rho
        return jnp.sum((kk - kk.mean()) * (ll - ll.mean())) / jnp.sum((kk - kk.mean()) ** 2)

    last = slice(max(0, n - 3), n)  # the last three coefficients (two when N = 2)
    predicted = jnp.exp(logs[-1] + fit(order[last], logs[last]))  # m_{N+1} = m_N * rho
    if n >= 4:
        # m_N compares the nudged phases with the free phase, so it also carries the
        # mismatch of their relaxation errors (tolerance-limited relaxations), which
        # cancels in g itself. When m_N sits far above the trend of m_{N-3..N-1}, that
        # mismatch dominates it: extrapolate from the nudged-only coefficients instead.
        inner = slice(n - 4, n - 1)
        slope = fit(order[inner], logs[inner])
        trend = jnp.exp(logs[n - 2] + slope)  # m_N expected from the trend
        nudged_only = jnp.exp(logs[n - 2] + 2 * slope)  # m_{N+1} from it
        predicted = jnp.where(norms[-1] > 10 * trend, nudged_only, predicted)
    relative = predicted / (radius * tree_norm(gradient) + floor)
    return relative.astype(norms.dtype), norms


def _real_combination(coef, rows):
    """`Re sum_j coef_j rows_j` in real arithmetic (no complex dot)."""
    if not jnp.iscomplexobj(coef):
        return jnp.tensordot(coef, rows, axes=1)
    return jnp.tensordot(coef.real, rows.real, axes=1) - jnp.tensordot(coef.imag, rows.imag, axes=1)


class _AbstractPhaseEP(AbstractEstimator):
    """Shared machinery of the EP family: free phase, nudged phases (vmapped, conjugate
    pairs once), the learning signal at each phase and the Fourier combination.

    `beta` is an array field, so a new value does not recompile a jitted caller."""

    beta: eqx.AbstractVar[Array]
    nudged_relaxation: eqx.AbstractVar[AbstractRelaxation | None]
    error_tolerance: eqx.AbstractVar[float | None]

    @abc.abstractmethod
    def phase_factors(self) -> tuple[complex, ...]:
        """Unit factors `u_n`, the nudges being `beta_n = beta * u_n`, in circle order
        (conjugates of complex ones included, exactly)."""

    def __call__(self, model, x, y, relaxation, cost, key):
        factors = self.phase_factors()
        n_phases = len(factors)
        real_idx = [i for i, u in enumerate(factors) if u.imag == 0]
        cplx_idx = [i for i, u in enumerate(factors) if u.imag > 0]
        if cplx_idx:
            _require_holomorphic(model, cost, type(self).__name__)
        dtype, cdtype = model.dtype, complex_dtype(model.dtype)
        beta = jnp.asarray(self.beta).astype(dtype)
        nudged = relaxation if self.nudged_relaxation is None else self.nudged_relaxation

        s_free, free_stats = jax.lax.stop_gradient(free_phase(model, x, relaxation, key))
        drives = jax.lax.stop_gradient(jax.vmap(model.drive)(x))
        frozen = jax.lax.stop_gradient(model)
        batch = x.shape[0]

        def relax_phase(beta_n, s_start, phase_id):
            def one(si, di, yi, ki):
                return nudged.relax(nudged_update, si, (frozen, di, beta_n, yi, cost), ki)

            keys = (
                None if key is None else jax.random.split(jax.random.fold_in(key, phase_id), batch)
            )
            return jax.vmap(one, (0, 0, 0, None if keys is None else 0))(s_start, drives, y, keys)

        def signal(s, beta_n):
            return energy_gradient(model, x, s, beta_n, y, cost)

        f0 = signal(s_free, None)
        grads = jtu.tree_map(jnp.zeros_like, f0)
        circle: list = [None] * n_phases  # n -> (row among the relaxed phases, conjugate)
        unique, betas, states, stats = [], [], [], []
        row = 0
        for idx, group_dtype in ((real_idx, dtype), (cplx_idx, cdtype)):
            if not idx:
                continue
            units = jnp.array([factors[i] if i in cplx_idx else factors[i].real for i in idx])
            betas_g = beta.astype(group_dtype) * units.astype(group_dtype)
            phase_ids = jnp.array([1 + i for i in idx])  # 0 is the free phase
            s_n, st_n = jax.vmap(relax_phase, (0, None, 0))(
                betas_g, tree_astype(s_free, group_dtype), phase_ids
            )
            f_n = jax.vmap(signal)(s_n, betas_g)
            weights = jnp.array([1.0 if i in real_idx else 2.0 for i in idx]) / n_phases
            coef = weights.astype(group_dtype) / betas_g  # g += Re sum_j coef_j (f_j - f0)
            grads = jtu.tree_map(
                lambda g, v, v0: g + _real_combination(coef, v - v0[None]), grads, f_n, f0
            )
            for j, i in enumerate(idx):
                circle[i] = (row + j, False)
                if i in cplx_idx:
                    circle[factors.index(factors[i].conjugate())] = (row + j, True)
            row += len(idx)
            unique.append(f_n)
            betas.append(betas_g.astype(cdtype))
            states.append(tree_astype(s_n, cdtype))
            stats.append(st_n)

        stats = tree_stack_phases(stats)
        nudged_failed = jnp.any(stats.result != RESULTS.successful)
        result = combine_results(
            free_stats.result,
            RESULTS.where(nudged_failed, RESULTS.nudged_phase_failed, RESULTS.successful),
        )
        error, norms = None, None
        if n_phases >= 2:
            error, norms = aliasing_estimate(f0, unique, circle, jnp.abs(beta), grads)
            # with noisy dynamics the coefficients carry the noise too: the estimate is
            # reported but measures noise as much as aliasing, so it is not a failure
            if self.error_tolerance is not None and not (relaxation.noisy or nudged.noisy):
                bad = ~(error <= self.error_tolerance)
                result = combine_results(
                    result, RESULTS.where(bad, RESULTS.inaccurate_estimate, RESULTS.successful)
                )
        info = GradientInfo(
            loss=mean_cost(model, s_free, y, cost),
            result=result,
            free_state=s_free,
            free_stats=free_stats,
            betas=jnp.concatenate(betas),
            nudged_state=tree_stack_phases(states),
            nudged_stats=stats,
            error_estimate=error,
            fourier_norms=norms,
        )
        return grads, info


def _require_holomorphic(model, cost, name):
    if not model.activation.holomorphic:
        raise ValueError(
            f"{name} relaxes complex nudges, which needs a holomorphic activation; "
            f"{type(model.activation).__name__} is not. Use Sigmoid() or SmoothClip(), "
            "or a real-phase estimator (ClassicEP, SymmetricEP)."
        )
    if not cost.holomorphic:
        raise ValueError(f"{name} needs a holomorphic cost; {type(cost).__name__} is not.")


def _as_beta(beta) -> Array:
    return jnp.asarray(beta)


def _check_beta(beta, name, positive=False):
    """Checks a concrete beta; a traced one (a sweep under jit/vmap) passes through."""
    if isinstance(beta, jax.core.Tracer):
        return
    if beta.shape != () or jnp.iscomplexobj(beta) or not jnp.issubdtype(beta.dtype, jnp.number):
        raise TypeError(f"{name}: beta must be a real scalar, got {beta!r}.")
    value = float(beta)
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


class ClassicEP(_AbstractPhaseEP):
    """One-sided EP (Scellier & Bengio 2017):
    `g = (dF/dtheta(s*_beta) - dF/dtheta(s*_0)) / beta`, bias O(beta).

    - `beta`: the nudge, real and non-zero (either sign).
    - `nudged_relaxation`: relaxation of the nudged phase (default: the free one).
    """

    beta: Array = eqx.field(converter=_as_beta)
    nudged_relaxation: AbstractRelaxation | None = None
    error_tolerance: None = eqx.field(static=True, default=None, init=False)

    def __check_init__(self):
        _check_beta(self.beta, "ClassicEP")

    def phase_factors(self):
        return (1 + 0j,)


class SymmetricEP(_AbstractPhaseEP):
    """Symmetric EP (Laborieux et al. 2021):
    `g = (dF/dtheta(s*_beta) - dF/dtheta(s*_-beta)) / (2 beta)`, bias O(beta^2).

    - `beta`: the nudge magnitude (> 0).
    - `nudged_relaxation`: relaxation of the nudged phases (default: the free one).
    - `error_tolerance`: flag (`RESULTS.inaccurate_estimate`) a relative aliasing error
      estimate above this; `None` turns the check off.
    """

    beta: Array = eqx.field(converter=_as_beta)
    nudged_relaxation: AbstractRelaxation | None = None
    error_tolerance: float | None = eqx.field(static=True, default=0.05)

    def __check_init__(self):
        _check_beta(self.beta, "SymmetricEP", positive=True)

    def phase_factors(self):
        return (1 + 0j, -1 + 0j)


class HolomorphicEP(_AbstractPhaseEP):
    """Holomorphic EP with N phases (Laborieux & Zenke 2022): the discretised Cauchy
    integral `g = (1/N) sum_n (f(beta_n) - f(0)) / beta_n` over
    `beta_n = beta exp(2 pi i n / N)`; exact up to O(beta^N) aliasing, which is
    estimated from the decay of the Fourier coefficients of the phase samples and
    reported as `info.error_estimate`.

    - `beta`: the radius |beta| > 0.
    - `num_phases`: N >= 1 (N = 1 is one-sided EP, N = 2 symmetric EP).
    - `nudged_relaxation`: relaxation of the nudged phases (default: the free one).
    - `error_tolerance`: flag (`RESULTS.inaccurate_estimate`) a relative error estimate
      above this; `None` turns the check off. Not applied to noisy dynamics, where the
      estimate also measures the noise.

    The complex phases need a holomorphic activation and cost.
    """

    beta: Array = eqx.field(converter=_as_beta)
    num_phases: int = eqx.field(static=True)
    nudged_relaxation: AbstractRelaxation | None = None
    error_tolerance: float | None = eqx.field(static=True, default=0.05)

    def __check_init__(self):
        _check_beta(self.beta, "HolomorphicEP", positive=True)
        if (
            not isinstance(self.num_phases, int)
            or isinstance(self.num_phases, bool)
            or self.num_phases < 1
        ):
            raise ValueError(
                f"HolomorphicEP: num_phases must be an integer >= 1, got {self.num_phases!r}."
            )

    def phase_factors(self):
        n = self.num_phases
        out = [1 + 0j] + [0j] * (n - 1)
        for i in range(1, n):
            if 2 * i == n:
                out[i] = -1 + 0j
            elif 2 * i < n:
                angle = 2 * math.pi * i / n
                out[i] = complex(math.cos(angle), math.sin(angle))
                out[n - i] = out[i].conjugate()  # exact conjugate pairs
        return tuple(out)
