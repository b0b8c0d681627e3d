"""Anderson acceleration of a relaxation's iteration map, safeguarded per sample."""

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import optimistix as optx
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int

from .._checks import check_integer, check_real
from ._base import AbstractRelaxation
from ._fixed_point import check_steps_and_tolerances, even_odd_sweep, promote_fixed_point_result


class AndersonRelaxation(AbstractRelaxation):
    """Anderson acceleration (type II, Walker & Ni 2011) of the synchronous or the
    even/odd map `G`, safeguarded per sample.

    Each step evaluates `g = G(x)` and `f = g - x` once, keeps the last `history` pairs,
    and extrapolates `x <- g - dG gamma` with `gamma` the regularised least-squares fit
    `min |f - dF gamma|^2 + lambda |gamma|^2`, `lambda = regularisation * |dF|^2` (never
    a singular system); `mixing < 1` takes `x - dX gamma + mixing (f - dF gamma)`.

    Plain Anderson is fast and fragile: it can stall or blow up on a sample where the
    map itself converges. The safeguard works per sample: an extrapolated point whose
    residual `|f|` exceeds `growth` times that of the last accepted point is rejected
    (the step returns to the plain step from that point and the history is cleared),
    and so is a run of `patience` steps that each cut the residual by less than 1 %.
    After a rejection it takes plain steps, twice as many as after the one before
    (1, 2, 4, ...), before extrapolating again, so a sample where acceleration does not
    help costs a few steps more than the plain map, not many.

    - `history`: pairs kept (m); `mixing`: see above; `regularisation`: relative.
    - `even_odd`: accelerate the even/odd map (layered networks) instead of the
      synchronous one.
    - `max_steps`, `rtol`, `atol`: the budget of map evaluations and the stopping rule
      of `FixedPointRelaxation`, on `|G(x) - x|`; `steps` counts map evaluations.
    - `adjoint`: differentiation through the equilibrium (implicit function theorem).
    """

    history: int = eqx.field(static=True, default=5)
    max_steps: int = eqx.field(static=True, default=500)
    rtol: float = eqx.field(static=True, default=1e-6)
    atol: float = eqx.field(static=True, default=1e-6)
    mixing: float = eqx.field(static=True, default=1.0)
    regularisation: float = eqx.field(static=True, default=1e-8)
    even_odd: bool = eqx.field(static=True, default=True)
    growth: float = eqx.field(static=True, default=1.0)
    patience: int = eqx.field(static=True, default=4)
    adjoint: optx.AbstractAdjoint = optx.ImplicitAdjoint()

    def __check_init__(self):
        name = "AndersonRelaxation"
        check_steps_and_tolerances(self, self.max_steps, self.rtol, self.atol)
        if self.rtol is None:
            raise ValueError(f"{name} stops on a tolerance: give rtol and atol.")
        check_integer(self.history, "history", owner=name)
        check_real(self.mixing, "mixing", minimum=0.0, maximum=1.0, strict=True, owner=name)
        check_real(self.regularisation, "regularisation", minimum=0.0, strict=True, owner=name)
        check_real(self.growth, "growth", minimum=1.0, owner=name)
        check_integer(self.patience, "patience", owner=name)

    def sweep(self, dynamics, s, noise=None):
        return even_odd_sweep(dynamics, s, noise) if self.even_odd else dynamics(s, noise)

    def _solve(self, fn, y0, dynamics):
        solver = _Anderson(
            m=self.history,
            rtol=self.rtol,
            atol=self.atol,
            mixing=self.mixing,
            reg=self.regularisation,
            growth=self.growth,
            patience=self.patience,
        )
        sol = optx.fixed_point(
            fn, solver, y0, dynamics, max_steps=self.max_steps, adjoint=self.adjoint, throw=False
        )
        return sol.value, sol.stats["num_steps"], promote_fixed_point_result(sol.result, False)


class _AndersonState(eqx.Module):
    d_f: Float[Array, "m n"]  # differences of consecutive residuals (a ring buffer)
    d_g: Float[Array, "m n"]  # and of map values
    gram: Float[Array, "m m"]  # d_f d_f^T, updated a row at a time
    valid: Bool[Array, " m"]  # rows written since the last restart
    slot: Int[Array, ""]  # the row written next
    f_prev: Float[Array, " n"]  # residual and map value of the previous point
    g_prev: Float[Array, " n"]
    has_prev: Bool[Array, ""]
    best_residual: Float[Array, ""]  # |f| at the reference point
    best_g: Float[Array, " n"]  # G at the reference point (where a rejection returns)
    extrapolated: Bool[Array, ""]  # whether the current point is an extrapolation
    plain_left: Int[Array, ""]  # plain steps to take before extrapolating again
    backoff: Int[Array, ""]  # plain steps after the next restart
    stall: Int[Array, ""]  # consecutive extrapolations with < 1 % progress
    converged: Bool[Array, ""]


class _Anderson(optx.AbstractFixedPointSolver):
    m: int = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    mixing: float = eqx.field(static=True)
    reg: float = eqx.field(static=True)
    growth: float = eqx.field(static=True)
    patience: int = eqx.field(static=True)
    norm: Callable = eqx.field(static=True, default=optx.max_norm)

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        flat, _ = ravel_pytree(y)
        dtype = flat.dtype
        rows = jnp.zeros((self.m, flat.size), dtype)
        int0, false = jnp.array(0, jnp.int32), jnp.array(False)
        return _AndersonState(
            d_f=rows,
            d_g=rows,
            gram=jnp.zeros((self.m, self.m), dtype),
            valid=jnp.zeros(self.m, bool),
            slot=int0,
            f_prev=jnp.zeros_like(flat),
            g_prev=jnp.zeros_like(flat),
            has_prev=false,
            best_residual=jnp.array(jnp.inf, dtype),
            best_g=flat,
            extrapolated=false,
            plain_left=int0,
            backoff=jnp.array(1, jnp.int32),
            stall=int0,
            converged=false,
        )

    def step(self, fn, y, args, options, state, tags):
        x, unravel = ravel_pytree(y)
        g_tree, aux = fn(y, args)
        g = ravel_pytree(g_tree)[0]
        f = g - x
        residual = jnp.linalg.norm(f)
        converged = jnp.max(jnp.abs(f) / (self.atol + self.rtol * jnp.abs(g))) < 1

        # The safeguard. The reference is the best point of the current run of
        # extrapolations, or the last plain step (the plain map is the fallback, so its
        # steps are taken whatever their residual). An extrapolated point whose
        # residual exceeds `growth` times the reference's is rejected: the next point
        # is the plain step from the reference. A run of extrapolations that stalls
        # restarts from here with plain steps.
        grew = state.extrapolated & ~(residual <= self.growth * state.best_residual) & ~converged
        slow = state.extrapolated & (residual > 0.99 * state.best_residual)
        stall = jnp.where(slow, state.stall + 1, 0)
        stalled = (stall >= self.patience) & ~grew & ~converged
        restart = grew | stalled
        keep = grew | (state.extrapolated & ~(residual < state.best_residual))

        # one new row of differences (none across a restart); the Gram matrix follows
        write = state.has_prev & ~restart
        # (writes of one row, so that XLA updates the buffers in place)
        slot = state.slot
        row_f = jnp.where(write, f - state.f_prev, state.d_f[slot])
        row_g = jnp.where(write, g - state.g_prev, state.d_g[slot])
        d_f = state.d_f.at[slot].set(row_f)
        d_g = state.d_g.at[slot].set(row_g)
        gram_row = jnp.where(write, d_f @ row_f, state.gram[slot])
        gram = state.gram.at[slot].set(gram_row).at[:, slot].set(gram_row)
        valid = jnp.where(restart, False, state.valid.at[slot].set(state.valid[slot] | write))
        slot = jnp.where(write, (slot + 1) % self.m, slot)

        plain = (state.plain_left > 0) | ~jnp.any(valid) | restart
        extrapolated = self._extrapolate(x, g, f, d_f, d_g, gram, valid)
        # a least-squares system too ill-conditioned for the dtype can give a non-finite
        # point: never step there; take the plain step and restart, like a rejection
        broken = ~plain & ~jnp.all(jnp.isfinite(extrapolated))
        plain = plain | broken
        restart_next = restart | broken
        valid = jnp.where(broken, False, valid)
        x_next = jnp.where(plain, g, extrapolated)
        x_next = jnp.where(grew, state.best_g, x_next)
        x_next = jnp.where(converged, g, x_next)

        new_state = _AndersonState(
            d_f=d_f,
            d_g=d_g,
            gram=gram,
            valid=valid,
            slot=slot,
            f_prev=f,
            g_prev=g,
            has_prev=~grew,
            best_residual=jnp.where(keep, state.best_residual, residual),
            best_g=jnp.where(keep, state.best_g, g),
            extrapolated=~plain & ~converged,
            plain_left=jnp.where(restart_next, state.backoff, jnp.maximum(state.plain_left - 1, 0)),
            backoff=jnp.where(restart_next, 2 * state.backoff, state.backoff),
            stall=jnp.where(restart_next, 0, stall),
            converged=converged,
        )
        return unravel(x_next), new_state, aux

    def _extrapolate(self, x, g, f, d_f, d_g, gram, valid):
        """`g - d_g gamma` with `gamma` the regularised least-squares coefficients over
        the valid rows (the others get gamma = 0)."""
        mask = valid[:, None] & valid[None, :]
        gram = jnp.where(mask, gram, 0)
        # relative to the trace, and never below the dtype's resolution (a smaller
        # regularisation does not regularise: in float32, 1e-8 vanishes next to 1)
        reg = max(self.reg, float(jnp.finfo(gram.dtype).eps))
        lam = reg * (jnp.trace(gram) + jnp.finfo(gram.dtype).tiny)
        rhs = jnp.where(valid, d_f @ f, 0)
        gamma = jnp.linalg.solve(gram + lam * jnp.eye(self.m, dtype=gram.dtype), rhs)
        if self.mixing == 1:
            return g - gamma @ d_g
        return x - gamma @ (d_g - d_f) + self.mixing * (f - gamma @ d_f)

    def terminate(self, fn, y, args, options, state, tags):
        return state.converged, optx.RESULTS.successful

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        return y, aux, {}
