"""Learning rules that clamp the output units: contrastive Hebbian learning (Movellan
1991) and coupled learning (Stern et al. 2021), as Scellier et al. (2023) compare them
with EP.

Both relax a free phase, then a clamped phase from the free equilibrium with the output
units held fixed, and return the change of the learning signal `dE/dtheta` between the
two equilibria (`E = -Phi`, the parameter-dependent energy; the cost enters only
through the clamp target). They need output units in the state (`output_units=True`)
and a cost with a finite minimiser (`SquaredError`).
"""

import abc
from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jaxtyping import Array, Real, Scalar

from .._checks import check_real
from .._inference import clamped_relax, free_phase, mean_cost
from .._models import AbstractEnergyModel, State
from .._relaxation import RelaxationStats
from .._results import RESULTS, combine_results
from ._base import (
    AbstractEstimator,
    AbstractGradientInfo,
    _all_converged,
    _steps_metrics,
    _steps_specs,
)
from ._needs import ModelNeeds


def _check_eta(eta) -> Array:
    """`eta` as an array, checked on the host when concrete (a traced one, a sweep
    under jit or vmap, passes through)."""
    if isinstance(eta, Tracer):
        return eta
    value = eta
    if isinstance(eta, (np.ndarray, Array)) and eta.shape == () and not np.iscomplexobj(eta):
        value = float(eta)
    check_real(value, "eta", minimum=0.0, maximum=1.0, strict=True, owner="CoupledLearning")
    return jnp.asarray(eta)


class ClampedInfo(AbstractGradientInfo):
    """Diagnostics of `ContrastiveLearning` and `CoupledLearning`: those of
    `AbstractGradientInfo`, and `clamped_state`, `clamped_stats`, the clamped
    equilibria `(batch, ...)` and their stats `(batch,)`."""

    loss: Real[Scalar, ""]
    result: RESULTS
    free_state: State
    free_stats: RelaxationStats
    clamped_state: State
    clamped_stats: RelaxationStats

    def metrics(self):
        return {**super().metrics(), **_steps_metrics("clamped", self.clamped_stats)}

    def metric_specs(self):
        return {**super().metric_specs(), **_steps_specs("clamped")}

    def converged(self):
        return super().converged() & _all_converged(self.clamped_stats)


class AbstractClampedEstimator(AbstractEstimator):
    """Free phase, clamped phase (outputs held at `clamp_values`), and the change of
    the learning signal between them divided by `scale()`. The clamped phase runs with
    the `nudged_relaxation` from the free equilibrium."""

    def needs(self) -> ModelNeeds:
        return ModelNeeds(energy=True, output_units=True)

    @abc.abstractmethod
    def clamp_values(self, free_outputs: Array, target: Array) -> Array:
        """The values the outputs are held at, `(batch, classes)`."""

    @abc.abstractmethod
    def scale(self) -> Array | float:
        """What the change of the learning signal is divided by."""

    def step(self, model, x, y, state, *, relaxation, nudged_relaxation, cost, key):
        noisy = relaxation.noisy or nudged_relaxation.noisy
        key = key if noisy else None
        s_free, free_stats = jax.lax.stop_gradient(free_phase(model, x, relaxation, key))
        layer = model.output_layer
        target = jax.vmap(lambda yi: cost.target(yi, model.num_classes, model.dtype))(y)
        outputs = jax.lax.stop_gradient(self.clamp_values(s_free[layer], target))
        drives = jax.lax.stop_gradient(jax.vmap(model.drive)(x))
        s_clamped, clamped_stats = jax.lax.stop_gradient(
            clamped_relax(
                jax.lax.stop_gradient(model), drives, s_free, outputs, nudged_relaxation, key
            )
        )
        energy_model = cast(AbstractEnergyModel, model)  # needs() declares it, checked before step
        change = energy_model.learning_signal_change(x, s_free, s_clamped, None)
        grads = jax.tree_util.tree_map(lambda g: g / self.scale(), change)
        info = ClampedInfo(
            loss=mean_cost(model, s_free, y, cost),
            result=combine_results(free_stats.result, clamped_stats.result),
            free_state=s_free,
            free_stats=free_stats,
            clamped_state=s_clamped,
            clamped_stats=clamped_stats,
        )
        return grads, info, state


class ContrastiveLearning(AbstractClampedEstimator):
    """Contrastive Hebbian learning (Movellan 1991; compared with EP by Scellier et al.
    2023): a free phase, a clamped phase with the outputs held at the target (the
    cost's minimiser, the one-hot label for `SquaredError`), and

        g = dE/dtheta(s_clamped) - dE/dtheta(s_free),

    the gradient of the contrastive objective `J = E(s_clamped*) - E(s_free*)` (each
    energy at its equilibrium, the clamped one over the other layers): by the envelope
    theorem the equilibria's own dependence on `theta` drops out, since each is
    stationary in the layers that move and the clamped outputs do not depend on
    `theta`. `J >= 0` for a free equilibrium that is a global minimum; it is not the
    loss, so learning rates differ from EP's (`g` is about `|target - output|` times
    larger than `dL/dtheta`, with no `1 / beta`).

    Needs output units in the state (`output_units=True`) and a `SquaredError` cost.
    """

    def clamp_values(self, free_outputs, target):
        del free_outputs
        return target

    def scale(self):
        return 1.0


class CoupledLearning(AbstractClampedEstimator):
    """Coupled learning (Stern et al. 2021): the clamped phase holds the outputs at
    `o_f + eta (target - o_f)`, a step `eta` from the free outputs `o_f` towards the
    target, and `g = (dE/dtheta(s_clamped) - dE/dtheta(s_free)) / eta`. `eta = 1` is
    contrastive learning.

    **The limit `eta -> 0`.** Let `D = target - o_f` and split the state into the
    outputs `o` and the other layers `h`. The clamped equilibrium satisfies
    `h = T_h(h, o)`, so to first order in `eta` it moves by
    `dh = (I - J_hh)^{-1} J_ho D eta`, `J = dT/ds` at the free equilibrium (for an
    energy network `-H_hh^{-1} H_ho D eta`, `H` the Hessian of the energy including the
    activations' term), and

        g -> d2E/(dtheta ds) [v],    v = (v_h, v_o) = ((I - J_hh)^{-1} J_ho D, D),

    with an error O(eta). EP's gradient is the same expression with the equilibrium's
    response to the cost, `v_EP = H^{-1} (0, D)` for a squared error; by the block
    inverse, `v = H^{-1} (0, S D)` with `S = H_oo - H_oh H_hh^{-1} H_ho` the Schur
    complement on the outputs. So the limit is the EP gradient of a cost whose output
    gradient is `-S D` instead of `-D`: in general not `dL/dtheta` (the two agree in
    direction only where `S` is a multiple of the identity on `D`).
    `tests/test_learning_rules.py` checks the limit and its first-order convergence.

    - `eta`: the clamping step, in (0, 1].

    Needs output units in the state (`output_units=True`) and a `SquaredError` cost.
    """

    eta: Array = eqx.field(converter=lambda eta: _check_eta(eta))

    def clamp_values(self, free_outputs, target):
        eta = self.eta.astype(free_outputs.dtype)
        return free_outputs + eta * (target - free_outputs)

    def scale(self):
        return self.eta
