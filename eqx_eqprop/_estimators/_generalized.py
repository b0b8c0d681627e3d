"""Generalized holomorphic EP for vector-field networks, and Jacobian homeostasis
(Laborieux & Zenke 2024)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PRNGKeyArray

from .._checks import check_integer, check_real
from .._inference import free_phase, mean_cost, nudged_relax
from .._misc import tree_dot, tree_norm
from .._models import AbstractVectorFieldModel, Dynamics
from .._results import RESULTS, combine_results
from ._base import AbstractEstimator, PhaseInfo, call_step
from ._ep import (
    AbstractAdaptiveEstimator,
    beta_field,
    check_target,
    circle_factors,
)
from ._needs import ModelNeeds


class JacobianHomeostasis(eqx.Module):
    """The homeostatic loss of Laborieux & Zenke (2024): the antisymmetric part of the
    Jacobian `J = df/ds` of the vector field with respect to the activities, at the free
    equilibrium,

        H = E_eps [ |J eps|^2 - eps^T J^2 eps ] = |J - J^T|_F^2 / 2,

    estimated with `num_probes` Gaussian probes and two Jacobian-vector products per
    probe, and averaged over the batch. Its parameter gradient, times `strength`, is
    added to the estimator's: it pulls the feedback weights towards the transposes of
    the forward ones, which is what makes generalized EP exact.

    - `strength`: the coefficient of `H` in the training objective (>= 0; 0 measures `H`
      and the symmetry ratio without training on them).
    - `num_probes`: probes per sample (the estimate's relative std is about
      `sqrt(2 / num_probes)` for a dense J).
    """

    strength: float = eqx.field(static=True, default=1.0)
    num_probes: int = eqx.field(static=True, default=4)

    def __check_init__(self):
        check_real(self.strength, "strength", minimum=0.0, owner="JacobianHomeostasis")
        check_integer(self.num_probes, "num_probes", owner="JacobianHomeostasis")

    def loss(self, model: AbstractVectorFieldModel, x, s, key: PRNGKeyArray) -> Array:
        """`H` averaged over the batch (`x`, activities `s`: `(batch, ...)`)."""
        probes = _probes(key, s, self.num_probes)

        def one(xi, si, eps):
            jvp = _jacobian_product(model, xi, si)

            def per_probe(e):
                je = jvp(e)
                jje = jvp(je)
                return tree_dot(je, je) - tree_dot(e, jje)

            return jnp.mean(jax.vmap(per_probe)(eps))

        return jnp.mean(jax.vmap(one)(x, s, probes))

    def symmetry_ratio(self, model: AbstractVectorFieldModel, x, s, key: PRNGKeyArray) -> Array:
        """`|J_sym| / (|J_sym| + |J_anti|)` (1: symmetric, 0.5 ... : asymmetric), the
        Frobenius norms estimated with the probes (`J eps` and `J^T eps`)."""
        probes = _probes(key, s, self.num_probes)

        def one(xi, si, eps):
            jvp = _jacobian_product(model, xi, si)
            vjp = _jacobian_transpose_product(model, xi, si)

            def per_probe(e):
                je, jte = jvp(e), vjp(e)
                sym = jtu.tree_map(lambda a, b: (a + b) / 2, je, jte)
                anti = jtu.tree_map(lambda a, b: (a - b) / 2, je, jte)
                return tree_dot(sym, sym), tree_dot(anti, anti)

            return jax.vmap(per_probe)(eps)

        sym, anti = jax.vmap(one)(x, s, probes)
        sym, anti = jnp.sqrt(jnp.mean(sym)), jnp.sqrt(jnp.mean(anti))
        return sym / (sym + anti)


def _probes(key, s, num_probes):
    """Gaussian probes `(batch, num_probes, ...)` shaped like the activities."""
    leaves, treedef = jtu.tree_flatten(s)
    keys = jax.random.split(key, len(leaves))
    draws = [
        jax.random.normal(k, (v.shape[0], num_probes, *v.shape[1:]), v.dtype)
        for k, v in zip(keys, leaves)
    ]
    return jtu.tree_unflatten(treedef, draws)


def _field_of_activities(model, xi):
    drive = model.drive(xi)

    def field(s):  # f as a function of the activities: T(s) - s (the DESIGN's J = W - I)
        return jtu.tree_map(jnp.subtract, model.activity_update(s, drive), s)

    return field


def _jacobian_product(model, xi, si):
    field = _field_of_activities(model, xi)
    return lambda e: jax.jvp(field, (si,), (e,))[1]


def _jacobian_transpose_product(model, xi, si):
    _, vjp = jax.vjp(_field_of_activities(model, xi), si)
    return lambda e: vjp(e)[0]


class GeneralizedHEP(AbstractAdaptiveEstimator):
    """Generalized holomorphic EP (Laborieux & Zenke 2024) for a vector-field network
    `du/dt = f(u) - beta dC/ds_out` with activities `s = sigma(u)`:

        g = dC/dtheta - (df/dtheta)^T ds*/dbeta,

    `df/dtheta` at the free equilibrium, `ds*/dbeta` of the activities estimated by the
    Cauchy sum over `num_phases >= 1` vmapped phases on the circle |beta| (the error
    estimate of the phase estimators applies), or exactly by forward-mode
    differentiation in beta (`num_phases=0`, through the relaxation's implicit adjoint).

    **Why the activities.** The true gradient is `dC/dtheta + (df/dtheta)^T lambda` with
    the adjoint `lambda = (I - J_u)^{-T} dC/du`, `J_u = dT/du = W D` (`W` the weight
    graph, `J = dT/ds = W` the Jacobian in the activities, `D = diag sigma'(u*)`,
    `dC/du = D c`, `c = dC/ds`). The nudge moves the equilibrium by
    `du*/dbeta = -(I - W D)^{-1} c`, so the activities move by
    `ds*/dbeta = D du*/dbeta = -(I - D W)^{-1} D c`, while
    `lambda = (I - D W^T)^{-1} D c` (by `(I - X Y)^{-1} X = X (I - Y X)^{-1}`). When
    `W` is symmetric (feedback the transpose of the forward weights, J symmetric) the
    two are equal up to the sign, `lambda = -ds*/dbeta`, and the estimate is exact; the
    pre-activations instead move by `du*/dbeta = -(I - W D)^{-1} c != -lambda` even then.
    The antisymmetric part of J is the bias, which `homeostasis` reduces.

    - `beta`: the radius |beta| > 0 (not used by `num_phases=0` beyond its sign).
    - `num_phases`: N >= 1 phases, or 0 for forward mode.
    - `error_tolerance`, `target_error`, `max_retries`, `min_radius_fraction`: as for
      `HolomorphicEP` (N >= 2).
    - `homeostasis`: a `JacobianHomeostasis` whose gradient is added, or `None`.
    - `reference`: an estimator of the true gradient (e.g. `RecurrentBackprop()`) to
      report `info.diagnostics["reference_cosine"]` each step (costs a second estimate).
    """

    beta: Array = beta_field("GeneralizedHEP")
    num_phases: int = eqx.field(static=True, default=8)
    error_tolerance: float | None = eqx.field(static=True, default=0.05)
    target_error: float | None = eqx.field(static=True, default=None)
    max_retries: int = eqx.field(static=True, default=3)
    min_radius_fraction: float = eqx.field(static=True, default=0.01)
    homeostasis: JacobianHomeostasis | None = None
    reference: AbstractEstimator | None = None

    def __check_init__(self):
        check_target(self, "GeneralizedHEP")
        n = check_integer(self.num_phases, "num_phases", minimum=0, owner="GeneralizedHEP")
        if self.homeostasis is not None and not isinstance(self.homeostasis, JacobianHomeostasis):
            raise TypeError(
                "GeneralizedHEP: homeostasis must be a JacobianHomeostasis or None, got "
                f"{self.homeostasis!r}."
            )
        if self.reference is not None and not isinstance(self.reference, AbstractEstimator):
            raise TypeError(
                f"GeneralizedHEP: reference must be an estimator or None, got {self.reference!r}."
            )
        if self.target_error is not None and n < 2:
            raise ValueError("GeneralizedHEP: target_error needs num_phases >= 2.")

    def phase_factors(self):
        return circle_factors(self.num_phases)

    def needs(self):
        """A vector-field network with feedback; holomorphic with complex phases."""
        complex_ = any(u.imag != 0 for u in self.phase_factors())
        return ModelNeeds(vector_field=True, feedback=True, holomorphic=complex_)

    def observable(self, model, x, s, nudge):
        return jax.vmap(model.activities)(s)

    def observable_change(self, model, x, s_free, f0, s, nudge):
        # per sample and neuron: no batch sum, so no cancellation to avoid
        return jtu.tree_map(jnp.subtract, self.observable(model, x, s, nudge), f0)

    def finish(self, model, x, y, s_free, cost, coefficient):
        """`dC/dtheta - (dT/dtheta)^T v` with `v = ds*/dbeta`, as the gradient of one
        surrogate (batch-contracted products, no per-sample outer products)."""
        v = jax.lax.stop_gradient(coefficient)

        def surrogate(model):
            def one(xi, ui, vi, yi):
                t = Dynamics(model, model.drive(xi))(ui)
                return cost(model.readout(ui), yi) - tree_dot(vi, t)

            return jnp.mean(jax.vmap(one)(x, s_free, v, y))

        return eqx.filter_grad(surrogate)(model), None

    def step(self, model, x, y, state, *, relaxation, nudged_relaxation, cost, key):
        own_key = jax.random.key(0) if key is None else jax.random.fold_in(key, 7919)
        if self.num_phases == 0:
            grads, info = self._forward_mode(model, x, y, relaxation, nudged_relaxation, cost)
        else:
            grads, info, state = super().step(
                model,
                x,
                y,
                state,
                relaxation=relaxation,
                nudged_relaxation=nudged_relaxation,
                cost=cost,
                key=key,
            )
        diagnostics = {}
        if self.reference is not None:
            truth, _, _ = call_step(
                self.reference,
                model,
                x,
                y,
                self.reference.init(model, x, y),
                relaxation=relaxation,
                nudged_relaxation=nudged_relaxation,
                cost=cost,
                key=key,
            )
            diagnostics["reference_cosine"] = _cosine(grads, truth)
        if self.homeostasis is not None:
            h = self.homeostasis
            activities = jax.lax.stop_gradient(jax.vmap(model.activities)(info.free_state))
            h_key, r_key = jax.random.split(own_key)
            if h.strength:
                value, h_grads = eqx.filter_value_and_grad(
                    lambda m: h.loss(m, x, activities, h_key)
                )(model)
                grads = jtu.tree_map(lambda a, b: a + h.strength * b, grads, h_grads)
            else:  # strength 0: measure only
                value = h.loss(model, x, activities, h_key)
            diagnostics["homeostasis_loss"] = value
            diagnostics["symmetry_ratio"] = h.symmetry_ratio(model, x, activities, r_key)
        if diagnostics:
            info = eqx.tree_at(lambda i: i.diagnostics, info, diagnostics, is_leaf=_is_none)
        return grads, info, state

    def _forward_mode(self, model, x, y, relaxation, nudged_relaxation, cost):
        """`ds*/dbeta` exactly, by a Jacobian-vector product in beta through the nudged
        relaxation's implicit adjoint (from the free equilibrium, at beta = 0)."""
        if relaxation.noisy or nudged_relaxation.noisy:
            raise ValueError("GeneralizedHEP(num_phases=0) needs noise-free dynamics.")
        s_free, free_stats = jax.lax.stop_gradient(free_phase(model, x, relaxation))
        frozen = jax.lax.stop_gradient(model)
        drives = jax.lax.stop_gradient(jax.vmap(model.drive)(x))

        def activities_at(beta):
            s, stats = nudged_relax(frozen, drives, s_free, y, beta, cost, nudged_relaxation)
            return jax.vmap(frozen.activities)(s), (s, stats)

        zero = jnp.zeros((), model.dtype)
        _, ds_dbeta, (s_nudged, stats) = jax.jvp(
            activities_at, (zero,), (jnp.ones_like(zero),), has_aux=True
        )
        grads, _ = self.finish(model, x, y, s_free, cost, ds_dbeta)
        info = PhaseInfo(
            loss=mean_cost(model, s_free, y, cost),
            result=_combine(free_stats, stats),
            free_state=s_free,
            free_stats=free_stats,
            betas=jnp.zeros((1,), jnp.result_type(model.dtype, jnp.complex64)),
            nudged_state=jtu.tree_map(lambda v: v[None], s_nudged),
            nudged_stats=jtu.tree_map(lambda v: v[None], stats),
            error_estimate=None,
            fourier_norms=None,
            radius=zero,
            retries=jnp.array(0, jnp.int32),
        )
        return grads, info


def _is_none(v):
    return v is None


def _combine(free_stats, stats):
    nudged_failed = jnp.any(stats.result != RESULTS.successful)
    return combine_results(
        free_stats.result,
        RESULTS.where(nudged_failed, RESULTS.nudged_phase_failed, RESULTS.successful),
    )


def _cosine(a, b) -> Array:
    num = sum(jnp.sum(u * v) for u, v in zip(jtu.tree_leaves(a), jtu.tree_leaves(b)))
    return num / (tree_norm(a) * tree_norm(b))
