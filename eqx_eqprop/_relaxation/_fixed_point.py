"""Discrete-time relaxations through optimistix: synchronous and even/odd iteration."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import optimistix as optx

from .._checks import check_integer, check_real
from .._models import AbstractDynamics
from .._results import RESULTS
from ._base import AbstractRelaxation, discrete_noise


def check_steps_and_tolerances(obj, max_steps, rtol, atol):
    """Checks shared by the discrete relaxations."""
    name = type(obj).__name__
    check_integer(max_steps, "max_steps", owner=name)
    check_real(rtol, "rtol", minimum=0.0, optional=True, owner=name)
    check_real(atol, "atol", minimum=0.0, optional=True, owner=name)
    if (rtol is None) != (atol is None):
        raise ValueError(
            f"{name}: give both rtol and atol (tolerance-based stopping) or neither "
            f"(exactly max_steps steps); got rtol={rtol!r}, atol={atol!r}."
        )
    if rtol is not None and rtol == 0 and atol == 0:
        raise ValueError(
            f"{name}: rtol = atol = 0 can never be met; give a positive tolerance, or "
            "rtol = atol = None for exactly max_steps steps."
        )


def promote_fixed_point_result(result: optx.RESULTS, fixed_steps: bool) -> RESULTS:
    """optimistix's outcome in our codes: running out of steps is `max_steps_reached`
    (our message), or success for a fixed-length relaxation; other codes are kept."""
    result = RESULTS.promote(result)
    ran_out = result == RESULTS.nonlinear_max_steps_reached
    return RESULTS.where(
        ran_out, RESULTS.successful if fixed_steps else RESULTS.max_steps_reached, result
    )


def scaled_change(new, old, rtol, atol, norm=optx.max_norm):
    """`norm(|new - old| / (atol + rtol |new|))`: below 1 means converged."""
    return norm(jtu.tree_map(lambda a, b: jnp.abs(a - b) / (atol + rtol * jnp.abs(a)), new, old))


def layer_parities(dynamics: AbstractDynamics, name: str) -> tuple[tuple[int, ...], ...]:
    """The groups of layers a block sweep updates in turn (the even and the odd layers
    of a chain, a colouring of a graph network's layers), or a clear error."""
    groups = dynamics.layer_groups()
    if groups is None:
        raise ValueError(
            f"{name} updates the even layers, then the odd ones: it needs a layered network "
            "(a state that is a tuple of layers). This network has no layers; use "
            "FixedPointRelaxation, or AndersonRelaxation(even_odd=False)."
        )
    return groups


def even_odd_sweep(dynamics: AbstractDynamics, s, noise=None):
    """Update the even layers, then the odd ones with the fresh even values (a
    block Gauss-Seidel sweep: for layered networks its contraction rate is the square
    of the synchronous one), or, on a graph network, each group of its colouring in
    turn. Costs one synchronous step."""
    for layers in layer_parities(dynamics, "EvenOddRelaxation"):
        s = dynamics.update_layers(s, layers, noise)
    return s


class AbstractDiscreteRelaxation(AbstractRelaxation):
    """Discrete-time iteration of a map (`sweep`) through `optimistix.fixed_point`:
    tolerance-based or fixed-length, damping, implicit adjoint, noise inside the
    activation at every step."""

    max_steps: eqx.AbstractVar[int]
    rtol: eqx.AbstractVar[float | None]
    atol: eqx.AbstractVar[float | None]
    damping: eqx.AbstractVar[float]
    adjoint: eqx.AbstractVar[optx.AbstractAdjoint]
    noise: eqx.AbstractVar[float]

    def __check_init__(self):
        name = type(self).__name__
        check_steps_and_tolerances(self, self.max_steps, self.rtol, self.atol)
        check_real(self.damping, "damping", minimum=0.0, owner=name)
        if not self.damping < 1:
            raise ValueError(f"{name}: damping must be in [0, 1), got {self.damping!r}.")
        check_real(self.noise, "noise (a standard deviation)", minimum=0.0, owner=name)
        if self.noise > 0 and self.rtol is not None:
            raise ValueError(
                "Noisy dynamics do not converge to a fixed point: use a fixed step count "
                "(rtol=None, atol=None) with noise > 0."
            )

    @property
    def fixed_steps(self) -> bool:
        return self.rtol is None

    @property
    def noisy(self) -> bool:
        return self.noise > 0

    def step_noise(self, key, step, like):
        return discrete_noise(key, step, like, self.noise) if self.noisy else None

    def _solve_noisy(self, dynamics, s0, key):
        def body(i, s):
            new = self.sweep(dynamics, s, self.step_noise(key, i, s))
            if not self.damping:
                return new
            return jtu.tree_map(lambda a, b: (1 - self.damping) * a + self.damping * b, new, s)

        s = jax.lax.fori_loop(0, self.max_steps, body, s0)
        return s, jnp.array(self.max_steps), RESULTS.successful

    def _solve(self, fn, y0, dynamics):
        solver = _Iteration(rtol=self.rtol, atol=self.atol, damp=self.damping)
        sol = optx.fixed_point(
            fn, solver, y0, dynamics, max_steps=self.max_steps, adjoint=self.adjoint, throw=False
        )
        result = promote_fixed_point_result(sol.result, self.fixed_steps)
        return sol.value, sol.stats["num_steps"], result


class FixedPointRelaxation(AbstractDiscreteRelaxation):
    """Discrete-time synchronous iteration `s <- T(s)` (Scellier & Bengio 2017),
    through `optimistix.fixed_point`.

    - `max_steps`: step budget.
    - `rtol`, `atol`: stop when `max|T(s) - s| < atol + rtol * max|T(s)|`. With both
      `None` it runs exactly `max_steps` steps (the papers' fixed-length phases) and
      counts as converged whatever the residual; the residual is still reported.
    - `damping`: `s <- (1 - damping) T(s) + damping s`.
    - `adjoint`: how `jax.grad` differentiates through the equilibrium (implicit
      function theorem by default).
    - `noise`: std of Gaussian noise added inside the activation at every step,
      independent per sample, phase, neuron and step (`s <- sigma(dPhi/ds + noise)`,
      Laborieux & Zenke 2022). Noisy dynamics have no fixed point: they need
      `rtol = atol = None`, and `gradient(..., key=...)`.
    """

    max_steps: int = eqx.field(static=True, default=500)
    rtol: float | None = eqx.field(static=True, default=1e-6)
    atol: float | None = eqx.field(static=True, default=1e-6)
    damping: float = eqx.field(static=True, default=0.0)
    adjoint: optx.AbstractAdjoint = optx.ImplicitAdjoint()
    noise: float = eqx.field(static=True, default=0.0)

    def unconverged_advice(self):
        return (
            *super().unconverged_advice(),
            "use an even/odd relaxation (half the sweeps on a layered network)",
        )


class EvenOddRelaxation(AbstractDiscreteRelaxation):
    """Even/odd ("asynchronous") iteration for layered networks (Scellier et al. 2023):
    each step updates the even layers, then the odd layers from the fresh even values.
    A step costs one synchronous step, and on a layered energy network (where a layer
    couples only to its neighbours) converges like two: the block Gauss-Seidel rate is
    the square of the synchronous one. Same fixed points, same arguments and stopping
    rule as `FixedPointRelaxation` (`steps` counts sweeps); a network without layers
    says so. On a graph network (`EnergyGraphNet`, skip couplings) a step updates the
    groups of the model's `layer_groups()` in turn, a colouring of its layer graph
    under which no coupling joins two layers of one group.
    """

    max_steps: int = eqx.field(static=True, default=250)
    rtol: float | None = eqx.field(static=True, default=1e-6)
    atol: float | None = eqx.field(static=True, default=1e-6)
    damping: float = eqx.field(static=True, default=0.0)
    adjoint: optx.AbstractAdjoint = optx.ImplicitAdjoint()
    noise: float = eqx.field(static=True, default=0.0)

    def sweep(self, dynamics, s, noise=None):
        return even_odd_sweep(dynamics, s, noise)


class _Iteration(optx.AbstractFixedPointSolver):
    """`y <- (1 - damp) fn(y) + damp y`, stopping once
    `max|y_new - y| / (atol + rtol |y_new|) < 1`. With `rtol = atol = None` there is no
    stopping test (no per-step norm, no batched loop predicate) and optimistix runs
    exactly `max_steps` steps. Keeps its state in the dtype of `y` (float32 stays
    float32 when x64 is enabled)."""

    rtol: float | None = eqx.field(static=True)
    atol: float | None = eqx.field(static=True)
    damp: float = eqx.field(static=True)
    norm: Callable = eqx.field(static=True, default=optx.max_norm)

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        if self.rtol is None:
            return None
        dtype = jnp.result_type(*jtu.tree_leaves(y))
        return jnp.array(jnp.inf, dtype)

    def step(self, fn, y, args, options, state, tags):
        new_y, aux = fn(y, args)
        if self.damp:
            new_y = jtu.tree_map(lambda a, b: (1 - self.damp) * a + self.damp * b, new_y, y)
        if self.rtol is None:
            return new_y, None, aux
        change = scaled_change(new_y, y, self.rtol, self.atol, self.norm)
        return new_y, change.astype(state.dtype), aux

    def terminate(self, fn, y, args, options, state, tags):
        done = jnp.array(False) if self.rtol is None else state < 1
        return done, optx.RESULTS.successful

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        return y, aux, {}
