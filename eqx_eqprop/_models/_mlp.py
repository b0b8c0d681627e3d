import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._activations import AbstractActivation, Sigmoid
from ._base import AbstractEnergyModel


def _matvec(w: Float[Array, "out inp"], v):
    """`w @ v` for a real matrix and a real or complex vector. A complex `v` is split
    into two real products rather than promoting `w` to complex (half the work)."""
    if jnp.iscomplexobj(v):
        return jax.lax.complex(w @ v.real, w @ v.imag)
    return w @ v


class EnergyMLP(AbstractEnergyModel):
    """Layered energy-based network (Scellier & Bengio 2017; Laborieux et al. 2021):

        Phi(x, s) = sum_l s_{l+1} . (W_l s_l + b_l),   s_0 = x,

    with hidden states `s_1..s_L` and a linear readout `W_out s_L + b_out` that lives
    inside the cost (it is not a neuron layer).

    **Arguments:**

    - `layer_sizes`: `(inputs, hidden_1, ..., hidden_L, classes)`, e.g. `(784, 256, 256, 10)`.
    - `activation`: `sigma`; default `Sigmoid()`, i.e. `1 / (1 + exp(-4 z + 2))`.
    - `weight_scale`: weights are truncated normal with std `weight_scale / sqrt(fan_in)`;
      biases start at zero. Scales below 1 make the dynamics more contractive.
    - `dtype`: floating dtype of the parameters and states (default: JAX's default float).
    - `key`: a PRNG key.
    """

    weights: tuple[Array, ...]
    biases: tuple[Array, ...]
    readout_weight: Array
    readout_bias: Array
    activation: AbstractActivation
    layer_sizes: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        layer_sizes: Sequence[int],
        *,
        activation: AbstractActivation = Sigmoid(),
        weight_scale: float = 1.0,
        dtype=None,
        key: PRNGKeyArray,
    ):
        sizes = tuple(int(n) for n in layer_sizes)
        if len(sizes) < 3 or min(sizes) < 1:
            raise ValueError(
                "layer_sizes must be (inputs, hidden..., classes) with at least one "
                f"hidden layer and positive sizes, got {tuple(layer_sizes)}."
            )
        dtype = jnp.dtype(dtype) if dtype is not None else jnp.zeros(()).dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"dtype must be a real floating dtype, got {dtype}.")
        keys = jax.random.split(key, len(sizes) - 1)

        def init(k, fan_in, fan_out):
            std = weight_scale / math.sqrt(fan_in)
            return std * jax.random.truncated_normal(k, -2.0, 2.0, (fan_out, fan_in), dtype)

        pairs = list(zip(sizes[:-2], sizes[1:-1]))
        self.weights = tuple(init(k, i, o) for k, (i, o) in zip(keys[:-1], pairs))
        self.biases = tuple(jnp.zeros(o, dtype) for _, o in pairs)
        self.readout_weight = init(keys[-1], sizes[-2], sizes[-1])
        self.readout_bias = jnp.zeros(sizes[-1], dtype)
        self.activation = activation
        self.layer_sizes = sizes

    @property
    def input_shape(self):
        return (self.layer_sizes[0],)

    @property
    def num_classes(self):
        return self.layer_sizes[-1]

    def init_state(self):
        return tuple(jnp.zeros(n, self.dtype) for n in self.layer_sizes[1:-1])

    def drive(self, x):
        first = _matvec(self.weights[0], x) + self.biases[0]
        return (first, *self.biases[1:])

    def coupling(self, s):
        total = jnp.zeros((), s[0].dtype)
        for w, lower, upper in zip(self.weights[1:], s[:-1], s[1:]):
            total = total + jnp.sum(upper * _matvec(w, lower))
        return total

    def readout(self, s):
        return _matvec(self.readout_weight, s[-1]) + self.readout_bias

    def param_groups(self):
        layers = tuple(f"layer{i}" for i in range(len(self.weights)))
        groups = eqx.filter(self, eqx.is_inexact_array)
        return eqx.tree_at(
            lambda m: (m.weights, m.biases, m.readout_weight, m.readout_bias),
            groups,
            (layers, layers, "readout", "readout"),
        )
