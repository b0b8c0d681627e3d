"""Continuous holomorphic EP: a rotating teaching signal, no separate phases."""

import math
from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array

from .._checks import check_integer, check_real
from .._costs import CrossEntropy
from .._inference import check_inputs, mean_cost
from .._misc import complex_dtype, sample_keys, tree_astype
from .._models import AbstractEnergyModel, Dynamics, Nudge
from .._relaxation import FixedPointRelaxation, relaxation_stats
from .._results import RESULTS, combine_results
from ._base import AbstractEstimator, GradientInfo
from ._ep import beta_field
from ._needs import ModelNeeds, check_needs


class OscillatingEP(AbstractEstimator):
    """Continuous hEP (Laborieux & Zenke 2022): the nudge `beta(t) = |beta| exp(i w t)`
    rotates while the network runs, and the gradient is the time average, over whole
    periods, of `dF/dtheta(s(t)) / beta(t)`, the first Fourier coefficient of the
    neural activity. It is accumulated online, step by step, as a synapse would; there
    is no free phase and no separate nudged phases.

    The dynamics are `s <- (1 - dt) s + dt T_beta(s)`: `dt = 1` is the synchronous
    discrete-time update, `dt < 1` the forward-Euler integration of
    `ds/dt = T_beta(s) - s` (a period then lasts `period * dt` time units). The noise
    of each step is the relaxation's (`FixedPointRelaxation(noise=...)`, through its
    `step_noise`); nothing else of the relaxation is used.

    - `beta`: the radius |beta| > 0.
    - `period`: steps per rotation; slow rotations (long periods) let the state track
      `s*_beta(t)`, and the error shrinks like 1 / period^2.
    - `num_periods`: periods averaged over; `warmup_periods`: periods run first from
      `model.init_state()`, not averaged.
    - `num_blocks`: `None` rotates continuously; `N` holds beta piecewise constant
      on N blocks per period (N sequential phases without resets).
    - `dt`: step size (see above).

    `info.free_state` is the period-averaged state (the zeroth Fourier coefficient,
    close to the free equilibrium), and `info.loss` the cost there.
    """

    beta: Array = beta_field("OscillatingEP")
    period: int = eqx.field(static=True, default=100)
    num_periods: int = eqx.field(static=True, default=1)
    warmup_periods: int = eqx.field(static=True, default=1)
    num_blocks: int | None = eqx.field(static=True, default=None)
    dt: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        owner = "OscillatingEP"
        check_integer(self.period, "period", owner=owner)
        check_integer(self.num_periods, "num_periods", owner=owner)
        check_integer(self.warmup_periods, "warmup_periods", minimum=0, owner=owner)
        check_real(self.dt, "dt", minimum=0.0, maximum=1.0, strict=True, owner=owner)
        if self.num_blocks is not None and (
            not isinstance(self.num_blocks, int) or not 2 <= self.num_blocks <= self.period
        ):
            raise ValueError(
                "OscillatingEP: num_blocks must be None (continuous rotation) or an integer "
                f"between 2 and period={self.period}, got {self.num_blocks!r}."
            )
        if not 0 < self.dt <= 1:
            raise ValueError(f"OscillatingEP: dt must be in (0, 1], got {self.dt!r}.")

    def needs(self):
        """An energy network, holomorphic with its cost: the nudge rotates in the complex
        plane."""
        return ModelNeeds(energy=True, holomorphic=True)

    def _stepper(self, model, x, y, relaxation, cost, key):
        """`step(t, s) -> (s_next, beta_t)` for a batch of complex states."""
        cdtype = complex_dtype(model.dtype)
        frozen = jax.lax.stop_gradient(model)
        drives = jax.lax.stop_gradient(jax.vmap(model.drive)(x))
        keys = sample_keys(key, 0, x.shape[0]) if relaxation.noisy else None
        beta = jnp.asarray(self.beta).astype(model.dtype)

        def step(t, s):
            b = (beta * jnp.exp(2j * math.pi * self._position(t))).astype(cdtype)

            def one(si, di, yi, ki):
                noise = None if ki is None else relaxation.step_noise(ki, t, si)
                new = Dynamics(frozen, di, Nudge(b, yi, cost))(si, noise)
                return jtu.tree_map(lambda a, c: (1 - self.dt) * c + self.dt * a, new, si)

            return jax.vmap(one, (0, 0, 0, None if keys is None else 0))(s, drives, y, keys), b

        s0 = tree_astype(jax.vmap(lambda _: model.init_state())(x), cdtype)
        return step, s0, drives

    def trajectory(self, model, x, y, *, relaxation=None, cost=CrossEntropy(), key=None):
        """The states at every step of warm-up and averaging, `(steps, batch, ...)`
        (complex), and the nudges `beta_t`, `(steps,)`: for plotting the oscillations.
        `relaxation` supplies the noise (none by default)."""
        x, y = check_inputs(model, x, y)
        check_needs(self.needs(), model, cost, "OscillatingEP")
        relaxation = FixedPointRelaxation() if relaxation is None else relaxation
        step, s0, _ = self._stepper(model, x, y, relaxation, cost, key)
        total = (self.warmup_periods + self.num_periods) * self.period

        def body(s, t):
            s, b = step(t, s)
            return s, (s, b)

        _, (states, betas) = jax.lax.scan(body, s0, jnp.arange(total))
        return states, betas

    step_inputs = ("relaxation", "key")

    def step(self, model, x, y, state, *, relaxation, cost, key):
        step, s0, drives = self._stepper(model, x, y, relaxation, cost, key)
        energy_model = cast(AbstractEnergyModel, model)  # needs() declares it, checked before step
        frozen = jax.lax.stop_gradient(model)

        def signal(s, b):
            # d/dtheta Re(F(theta, s, b) / b), batch mean: one real backward pass per step
            return energy_model.learning_signal(x, s, Nudge(b, y, cost), weight=1 / b)

        warm = self.warmup_periods * self.period
        s_warm = jax.lax.fori_loop(0, warm, lambda t, s: step(t, s)[0], s0)

        def accumulate(t, carry):
            s, acc, s_sum = carry
            s, b = step(t, s)
            acc = jtu.tree_map(jnp.add, acc, signal(s, b))
            return s, acc, jtu.tree_map(jnp.add, s_sum, s)

        zeros = jtu.tree_map(jnp.zeros_like, eqx.filter(model, eqx.is_inexact_array))
        total = self.num_periods * self.period
        _, acc, s_sum = jax.lax.fori_loop(
            warm, warm + total, accumulate, (s_warm, zeros, jtu.tree_map(jnp.zeros_like, s_warm))
        )
        grads = jtu.tree_map(lambda a: a / total, acc)
        s_mean = jtu.tree_map(lambda v: jnp.real(v) / total, s_sum)
        stats = jax.vmap(
            lambda si, di: relaxation_stats(
                Dynamics(frozen, di), si, warm + total, RESULTS.successful
            )
        )(s_mean, drives)
        info = GradientInfo(
            loss=mean_cost(model, jax.lax.stop_gradient(s_mean), y, cost),
            result=combine_results(stats.result),
            free_state=s_mean,
            free_stats=stats,
        )
        return grads, info, state

    def _position(self, step):
        position = jnp.mod(step, self.period) / self.period
        if self.num_blocks is not None:
            position = jnp.floor(position * self.num_blocks) / self.num_blocks
        return position
