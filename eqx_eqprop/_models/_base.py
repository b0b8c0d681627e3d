"""The small interface every energy-based network implements."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Inexact, PyTree, Scalar

from .._activations import AbstractActivation
from .._costs import AbstractCost
from .._misc import tree_dot

State = PyTree[Inexact[Array, "..."]]


class AbstractEnergyModel(eqx.Module):
    """An energy-based network (Scellier & Bengio 2017) for one sample.

    The primitive is split into a part linear in the state, whose coefficients (input
    drive and biases) are computed once per relaxation, and a coupling between states:

        Phi(x, s) = <drive(x), s> + coupling(s).

    The dynamics are `s <- sigma(dPhi_beta/ds)` with `Phi_beta = Phi - beta * C(readout(s), y)`,
    and `-dPhi/dtheta` is the local EP learning signal. Implementations must keep
    `coupling` and `readout` holomorphic in `s` (no `abs`, `conj`, `real`).
    """

    activation: eqx.AbstractVar[AbstractActivation]

    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample."""

    @property
    @abc.abstractmethod
    def num_classes(self) -> int:
        """Number of readout units (classes)."""

    @abc.abstractmethod
    def init_state(self) -> State:
        """The state the free phase starts from (zeros), real dtype of the model."""

    @abc.abstractmethod
    def drive(self, x: Inexact[Array, "..."]) -> State:
        """The state-shaped coefficients of `Phi` that do not depend on `s`."""

    @abc.abstractmethod
    def coupling(self, s: State) -> Inexact[Scalar, ""]:
        """The part of `Phi` that couples states (bilinear for layered networks)."""

    @abc.abstractmethod
    def readout(self, s: State) -> Inexact[Array, " classes"]:
        """Logits that enter the cost."""

    @abc.abstractmethod
    def param_groups(self) -> PyTree[str]:
        """A label per trainable array (`"layer0"`, ..., `"readout"`), shaped like
        `eqx.filter(model, eqx.is_inexact_array)`: for per-layer optax transforms."""

    @property
    def dtype(self) -> jnp.dtype:
        """Real floating dtype of the states (that of the model's arrays)."""
        leaves = [v for v in jtu.tree_leaves(self) if eqx.is_inexact_array(v)]
        return leaves[0].dtype

    def primitive(self, x, s: State) -> Inexact[Scalar, ""]:
        """`Phi(x, s)`."""
        return tree_dot(self.drive(x), s) + self.coupling(s)


def update(
    model: AbstractEnergyModel,
    s: State,
    drive: State,
    beta=None,
    label=None,
    cost: AbstractCost | None = None,
    noise: State | None = None,
) -> State:
    """One synchronous step `s <- sigma(dPhi_beta/ds + noise)` for one sample.

    `drive` is `model.drive(x)`, computed once per relaxation. `beta=None` is the free
    phase (the cost is not evaluated); otherwise `beta` may be real or complex.
    `noise` (state-shaped, real) is added inside the activation (noisy dynamics).
    """

    def phi_beta(s):
        phi = model.coupling(s)
        if beta is not None:
            phi = phi - beta * cost(model.readout(s), label)
        return phi

    phi, vjp = jax.vjp(phi_beta, s)
    (dphi,) = vjp(jnp.ones_like(phi))
    pre = jtu.tree_map(jnp.add, drive, dphi)
    if noise is not None:
        pre = jtu.tree_map(jnp.add, pre, noise)
    return jtu.tree_map(model.activation, pre)


def free_update(s: State, args, noise: State | None = None) -> State:
    """`update` in the calling convention of the relaxations (free phase)."""
    model, drive = args
    return update(model, s, drive, noise=noise)


def nudged_update(s: State, args, noise: State | None = None) -> State:
    """`update` in the calling convention of the relaxations (nudged phase)."""
    model, drive, beta, label, cost = args
    return update(model, s, drive, beta, label, cost, noise)


def energy(model: AbstractEnergyModel, x, s: State, beta, label, cost) -> Inexact[Scalar, ""]:
    """The parameter-dependent part of `F_beta`: `-Phi(x, s) + beta * C(readout(s), y)`.

    Its gradient in the parameters at `s*_beta` is the EP learning signal
    `dF_beta/dtheta`. `beta=None` drops the cost term.
    """
    e = -model.primitive(x, s)
    if beta is not None:
        e = e + beta * cost(model.readout(s), label)
    return e
