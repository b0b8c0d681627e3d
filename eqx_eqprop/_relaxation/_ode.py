"""Continuous-time relaxations through diffrax: an ODE to a steady state, and an SDE."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx

from .._checks import check_integer, check_real
from .._misc import SplitComplex, is_complex_tree, merge_complex, split_complex, tree_max_abs
from .._results import RESULTS
from ._base import AbstractRelaxation, SweepFn


class _VectorField(eqx.Module):
    """`ds/dt = T(s) - s` in diffrax's convention `f(t, y, args)`, `args` the dynamics."""

    fn: SweepFn

    def __call__(self, t, y, args):
        del t
        return jtu.tree_map(jnp.subtract, self.fn(y, args), y)


def promote_ode_result(result: diffrax.RESULTS) -> RESULTS:
    """diffrax's outcome in our codes: the steady-state event is success, other codes
    (max_steps_reached, dt_min_reached, ...) are kept."""
    result = RESULTS.promote(result)
    return RESULTS.where(result == RESULTS.event_occurred, RESULTS.successful, result)


class ODERelaxation(AbstractRelaxation):
    """Continuous time `ds/dt = T(s) - s` (for energy networks
    `ds/dt = -s + sigma(dPhi_beta/ds)`), integrated with diffrax to a steady state.

    - `solver`: a diffrax solver (explicit Runge-Kutta by default).
    - `rtol`, `atol`: step-size control and the steady-state criterion
      `max|ds/dt| < atol + rtol * max|s|`.
    - `max_steps`: solver step budget.
    - `dt0`: initial step (`None`: chosen by the solver).
    - `adjoint`: differentiation through the steady state (`diffrax.ImplicitAdjoint`).
    """

    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    rtol: float = eqx.field(static=True, default=1e-6)
    atol: float = eqx.field(static=True, default=1e-6)
    max_steps: int = eqx.field(static=True, default=4096)
    dt0: float | None = eqx.field(static=True, default=None)
    adjoint: diffrax.AbstractAdjoint = diffrax.ImplicitAdjoint()

    def __check_init__(self):
        name = "ODERelaxation"
        check_integer(self.max_steps, "max_steps", owner=name)
        check_real(self.rtol, "rtol", minimum=0.0, owner=name)
        check_real(self.atol, "atol", minimum=0.0, owner=name)
        check_real(self.dt0, "dt0", minimum=0.0, strict=True, optional=True, owner=name)
        if not self.rtol + self.atol > 0:
            raise ValueError(f"{name}: rtol and atol must not both be zero.")

    def _solve(self, fn, y0, dynamics):
        event = diffrax.Event(
            diffrax.steady_state_event(rtol=self.rtol, atol=self.atol, norm=tree_max_abs)
        )
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_VectorField(fn)),
            self.solver,
            t0=0.0,
            t1=jnp.inf,
            dt0=self.dt0,
            y0=y0,
            args=dynamics,
            stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
            event=event,
            saveat=diffrax.SaveAt(t1=True),
            max_steps=self.max_steps,
            adjoint=self.adjoint,
            throw=False,
        )
        y = jtu.tree_map(lambda v: v[-1], sol.ys)
        return y, sol.stats["num_steps"], promote_ode_result(sol.result)


class SDERelaxation(AbstractRelaxation):
    """Noisy continuous time: the Ito SDE `ds = (T(s) - s) dt + noise dW`, integrated
    with diffrax over a fixed duration, with a Brownian path (`VirtualBrownianTree`)
    drawn from the key of each sample and phase. Complex states get the noise on their
    real part (the noise is that of the physical, real dynamics).

    - `duration`: integration time (the papers' time unit is the neuron time constant).
    - `dt`: step of the solver.
    - `noise`: diffusion coefficient (0 gives a deterministic fixed-step ODE solve).
    - `solver`: an SDE-capable diffrax solver (Euler-Maruyama by default).
    """

    duration: float = eqx.field(static=True, default=20.0)
    dt: float = eqx.field(static=True, default=0.05)
    noise: float = eqx.field(static=True, default=0.04)
    solver: diffrax.AbstractSolver = diffrax.Euler()

    def __check_init__(self):
        name = "SDERelaxation"
        check_real(self.duration, "duration", minimum=0.0, strict=True, owner=name)
        check_real(self.dt, "dt", minimum=0.0, maximum=self.duration, strict=True, owner=name)
        check_real(self.noise, "noise (a standard deviation)", minimum=0.0, owner=name)

    @property
    def noisy(self) -> bool:
        return self.noise > 0

    @property
    def num_steps(self) -> int:
        return int(round(self.duration / self.dt))

    def _integrate(self, fn, y0, dynamics, key):
        terms = drift = diffrax.ODETerm(_VectorField(fn))
        if key is not None:
            shapes = jtu.tree_map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), y0)
            brownian = diffrax.VirtualBrownianTree(
                0.0, self.duration, tol=self.dt / 2, shape=shapes, key=key
            )
            diagonal = _noise_diagonal(y0, self.noise)
            scale = dynamics.noise_scale(y0)
            if scale is not None:  # held units (a clamped phase) get none
                diagonal = jtu.tree_map(jnp.multiply, diagonal, scale)
            diffusion = diffrax.ControlTerm(
                lambda t, y, args: lx.DiagonalLinearOperator(diagonal), brownian
            )
            terms = diffrax.MultiTerm(drift, diffusion)
        sol = diffrax.diffeqsolve(
            terms,
            self.solver,
            t0=0.0,
            t1=self.duration,
            dt0=self.dt,
            y0=y0,
            args=dynamics,
            saveat=diffrax.SaveAt(t1=True),
            max_steps=self.num_steps + 2,
            throw=False,
        )
        y = jtu.tree_map(lambda v: v[-1], sol.ys)
        return y, sol.stats["num_steps"], RESULTS.promote(sol.result)

    def _solve(self, fn, y0, dynamics):
        return self._integrate(fn, y0, dynamics, None)

    def _solve_noisy(self, dynamics, s0, key):
        if is_complex_tree((s0, dynamics)):
            fn = SweepFn(self, split=True)
            y, steps, result = self._integrate(fn, split_complex(s0), split_complex(dynamics), key)
            return merge_complex(y), steps, result
        return self._integrate(SweepFn(self), s0, dynamics, key)


def _noise_diagonal(y0, noise):
    """`noise` on real leaves and on the real part of split complex leaves, 0 on the
    imaginary parts."""

    def diag(v):
        if isinstance(v, SplitComplex):
            return SplitComplex(jnp.full_like(v.re, noise), jnp.zeros_like(v.im))
        return jnp.full_like(v, noise)

    return jtu.tree_map(diag, y0, is_leaf=lambda v: isinstance(v, SplitComplex))
