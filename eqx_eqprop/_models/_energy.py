"""Energy-based networks: the dynamics and the learning signal from one scalar."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Inexact, PyTree, Scalar

from .._activations import AbstractActivation
from .._misc import complex_dtype, is_complex_tree, tree_dot
from ._base import AbstractModel, Nudge, State


def _select(s, layers):
    return tuple(s[i] for i in layers)


def _replace(s, layers, values):
    out = list(s)
    for i, v in zip(layers, values):
        out[i] = v
    return tuple(out)


class AbstractEnergyModel(AbstractModel):
    """An energy-based network (Scellier & Bengio 2017) for one sample.

    Implement `drive`, `coupling` and `readout` (plus `input_shape`, `num_classes`,
    `init_state` and an `activation` field); the dynamics and the learning signal follow.
    The primitive is split into a part linear in the state, whose coefficients (input
    drive and biases) are computed once per relaxation, and a coupling between states:

        Phi(x, s) = <drive(x), s> + coupling(s).

    The dynamics are `s <- sigma(dPhi_beta/ds)` with `Phi_beta = Phi - beta C(readout(s), y)`,
    and `dF_beta/dtheta = d/dtheta [-Phi + beta C]` is the local EP learning signal.
    `coupling` and `readout` must be holomorphic in `s` (no `abs`, `conj`, `real`).
    """

    activation: eqx.AbstractVar[AbstractActivation]

    @abc.abstractmethod
    def drive(self, x: Inexact[Array, "..."]) -> State:
        """The state-shaped coefficients of `Phi` that do not depend on `s`."""

    @abc.abstractmethod
    def coupling(self, s: State) -> Inexact[Scalar, ""]:
        """The part of `Phi` that couples states (bilinear for layered networks)."""

    def primitive(self, x, s: State) -> Inexact[Scalar, ""]:
        """`Phi(x, s)`."""
        return tree_dot(self.drive(x), s) + self.coupling(s)

    def update(self, s, drive, nudge=None, noise=None, *, layers=None):
        """`s <- sigma(dPhi_beta/ds + noise)`, on every layer or on `layers` only (the
        gradient is then taken with respect to those layers alone, so the other
        layers' terms cost nothing)."""
        if layers is None:
            own = lambda v: v  # noqa: E731
            sub, sub_drive, sub_noise = s, drive, noise
        else:
            own = lambda v: _replace(s, layers, v)  # noqa: E731
            sub, sub_drive = _select(s, layers), _select(drive, layers)
            sub_noise = None if noise is None else _select(noise, layers)

        def phi_beta(v):
            full = own(v)
            phi = self.coupling(full)
            if nudge is not None:
                phi = phi - nudge.beta * nudge.cost(self.readout(full), nudge.label)
            return phi

        phi, vjp = jax.vjp(phi_beta, sub)
        (dphi,) = vjp(jnp.ones_like(phi))
        pre = jtu.tree_map(jnp.add, sub_drive, dphi)
        if sub_noise is not None:
            pre = jtu.tree_map(jnp.add, pre, sub_noise)
        return own(jtu.tree_map(self.activation, pre))

    def energy(self, x, s: State, nudge: Nudge | None) -> Inexact[Scalar, ""]:
        """The parameter-dependent part of `F_beta`: `-Phi(x, s) + beta C(readout(s), y)`
        (no cost term for `nudge=None`)."""
        e = -self.primitive(x, s)
        if nudge is not None:
            e = e + nudge.beta * nudge.cost(self.readout(s), nudge.label)
        return e

    @property
    def quadratic_coupling(self) -> bool:
        """Whether `coupling` is a polynomial of degree at most 2 in the state (bilinear
        between layers, as in a layered network with linear couplings). Then the
        change of the learning signal between two states is computed from their
        difference alone (`learning_signal_change`), without cancellation. Default
        `False` (always correct, only less accurate in low precision)."""
        return False

    def learning_signal(
        self, x: Inexact[Array, "batch ..."], s: State, nudge: Nudge | None, weight=None
    ) -> PyTree:
        """The EP learning signal `dF_beta/dtheta` averaged over a batch (`x`: `(batch,
        ...)`, `s`: `(batch, ...)`, `nudge.label`: `(batch,)`), at fixed states: one
        batched backward pass, so weight gradients are batch-contracted matmuls, never
        per-sample outer products. Complex states (a complex `beta`) give the complex
        derivative `d Re F + i d Im F`. Shaped like `eqx.filter(model, eqx.is_inexact_array)`.

        With a (complex) scalar `weight` it is the real `d/dtheta Re(weight F)` instead,
        in one backward pass (what an online learning rule accumulates).
        """

        def energies(model):
            if nudge is None:
                return jax.vmap(lambda xi, si: model.energy(xi, si, None))(x, s)
            beta, cost = nudge.beta, nudge.cost
            return jax.vmap(lambda xi, si, yi: model.energy(xi, si, Nudge(beta, yi, cost)))(
                x, s, nudge.label
            )

        complex_ = is_complex_tree((s, None if nudge is None else nudge.beta))
        return self._mean_gradient(energies, complex_, weight)

    def learning_signal_change(
        self, x: Inexact[Array, "batch ..."], s0: State, s: State, nudge: Nudge | None
    ) -> PyTree:
        """`learning_signal(x, s, nudge) - learning_signal(x, s0, None)`: the change of
        the batch-averaged learning signal from the free states `s0` (real) to the
        states `s` (real or complex) at the nudge.

        Each phase's signal is large (e.g. norm 87 on the MNIST MLP) and their
        combination small (3e-3), so subtracting the two batch averages loses the
        digits that float32 rounded away. With a `quadratic_coupling` the change is
        computed from the displacement `d = s - s0` alone, exactly:
        `F(s0 + d) - F(s0) = -<drive, d> - dcoupling(s0 + d/2)[d] + beta C(s)` (the
        midpoint rule is exact for a quadratic), one backward pass through a
        Jacobian-vector product, with every term small; the free phase's `s0 x s0`
        terms never appear. Otherwise it is the plain difference.
        """
        if not self.quadratic_coupling:
            return jtu.tree_map(
                jnp.subtract, self.learning_signal(x, s, nudge), self.learning_signal(x, s0, None)
            )

        def energies(model):
            if nudge is None:
                return jax.vmap(lambda xi, a, b: model.energy_change(xi, a, b, None))(x, s0, s)
            beta, cost = nudge.beta, nudge.cost
            return jax.vmap(
                lambda xi, a, b, yi: model.energy_change(xi, a, b, Nudge(beta, yi, cost))
            )(x, s0, s, nudge.label)

        complex_ = is_complex_tree((s, None if nudge is None else nudge.beta))
        return self._mean_gradient(energies, complex_)

    def energy_change(self, x, s0: State, s: State, nudge: Nudge | None) -> Inexact[Scalar, ""]:
        """`energy(x, s, nudge) - energy(x, s0, None)` for one sample, written through
        `d = s - s0` (exact for a `quadratic_coupling` only)."""
        d = jtu.tree_map(jnp.subtract, s, s0)
        mid = jtu.tree_map(lambda a, b: a + b / 2, s0, d)
        _, coupling_change = jax.jvp(self.coupling, (mid,), (d,))
        e = -(tree_dot(self.drive(x), d) + coupling_change)
        if nudge is not None:
            e = e + nudge.beta * nudge.cost(self.readout(s), nudge.label)
        return e

    def _mean_gradient(self, energies, complex_: bool, weight=None) -> PyTree:
        """`d/dtheta mean(energies(model))`, complex as `d Re + i d Im` when `complex_`
        (or the real `d/dtheta Re(weight mean)` for a given `weight`)."""
        params, static = eqx.partition(self, eqx.is_inexact_array)

        def mean_energy(params, weight):
            return jnp.real(weight * jnp.mean(energies(eqx.combine(params, static))))

        if weight is not None:
            return jax.grad(mean_energy)(params, weight)
        if not complex_:
            return jax.grad(mean_energy)(params, 1.0)
        weights = jnp.array([1.0, -1.0j], complex_dtype(self.dtype))  # Re F and Im F
        g = jax.vmap(jax.grad(mean_energy), (None, 0))(params, weights)
        return jtu.tree_map(lambda v: jax.lax.complex(v[0], v[1]), g)
