from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from .._activations import AbstractActivation, Sigmoid
from .._checks import check_flag, check_real, check_sizes
from .._layers import Dense
from ._base import layered_param_groups
from ._energy import AbstractEnergyModel


def check_float_dtype(dtype) -> jnp.dtype:
    """The dtype asked for (JAX's default float when `None`), which must be real floating."""
    dtype = jnp.dtype(dtype) if dtype is not None else jnp.zeros(()).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a real floating dtype, got {dtype}.")
    return dtype


def check_weight_scale(value, owner: str) -> float:
    """The init scale: a finite positive number (NaN or 0 would build useless weights)."""
    return check_real(value, "weight_scale", minimum=0.0, strict=True, owner=owner)


class EnergyMLP(AbstractEnergyModel):
    """Layered energy-based network (Scellier & Bengio 2017; Laborieux et al. 2021):

        Phi(x, s) = sum_l s_{l+1} . (W_l s_l + b_l),   s_0 = x,

    with hidden states `s_1..s_L` and a linear readout `W_out s_L + b_out` that lives
    inside the cost (it is not a neuron layer). With `output_units=True` the readout
    coupling is part of the energy instead, `Phi += s_o . (W_out s_L + b_out)`, and the
    outputs `s_o = sigma(...)` are the last layer of the state, read out as they are
    (Scellier & Bengio 2017; what clamping rules such as `ContrastiveLearning` need;
    use a `SquaredError` cost on them). The parameters are the same either way.

    **Arguments:**

    - `layer_sizes`: `(inputs, hidden_1, ..., hidden_L, classes)`, e.g. `(784, 256, 256, 10)`.
    - `activation`: `sigma`; default `Sigmoid()`, i.e. `1 / (1 + exp(-4 z + 2))`.
    - `weight_scale`: weights are truncated normal with std `weight_scale / sqrt(fan_in)`;
      biases start at zero. Scales below 1 make the dynamics more contractive.
    - `output_units`: the outputs are neurons of the state (see above); default `False`.
    - `dtype`: floating dtype of the parameters and states (default: JAX's default float).
    - `key`: a PRNG key.

    **Fields:** `layers[l]` is the `Dense` coupling `s_l -> s_{l+1}` (`layers[0]` reads
    the input), `readout_layer` the readout (the coupling to the output units with
    `output_units=True`).
    """

    layers: tuple[Dense, ...]
    readout_layer: Dense
    activation: AbstractActivation
    layer_sizes: tuple[int, ...] = eqx.field(static=True)
    output_units: bool = eqx.field(static=True)

    def __init__(
        self,
        layer_sizes: Sequence[int],
        *,
        activation: AbstractActivation = Sigmoid(),
        weight_scale: float = 1.0,
        output_units: bool = False,
        dtype=None,
        key: PRNGKeyArray,
    ):
        sizes = check_sizes(layer_sizes, "layer_sizes", owner="EnergyMLP")
        check_flag(output_units, "output_units", owner="EnergyMLP")
        if len(sizes) < 3:
            raise ValueError(
                "EnergyMLP: layer_sizes must be (inputs, hidden..., classes) with at least one "
                f"hidden layer, got {sizes}."
            )
        if not isinstance(activation, AbstractActivation):
            raise TypeError(f"activation must be an AbstractActivation, got {activation!r}.")
        check_weight_scale(weight_scale, "EnergyMLP")
        dtype = check_float_dtype(dtype)
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(
            Dense(i, o, weight_scale=weight_scale, dtype=dtype, key=k)
            for k, i, o in zip(keys[:-1], sizes[:-2], sizes[1:-1])
        )
        self.readout_layer = Dense(
            sizes[-2], sizes[-1], weight_scale=weight_scale, dtype=dtype, key=keys[-1]
        )
        self.activation = activation
        self.layer_sizes = sizes
        self.output_units = output_units

    @property
    def input_shape(self):
        return (self.layer_sizes[0],)

    @property
    def num_classes(self):
        return self.layer_sizes[-1]

    @property
    def num_layers(self):
        return len(self.layers) + self.output_units

    @property
    def output_layer(self):
        return len(self.layers) if self.output_units else None

    @property
    def quadratic_coupling(self):
        return True  # sum_l s_{l+1} . W_l s_l

    def _couplings(self) -> tuple[Dense, ...]:
        """The couplings between states: `layers[1:]`, and the readout with output units."""
        return self.layers[1:] + ((self.readout_layer,) if self.output_units else ())

    def init_state(self):
        sizes = self.layer_sizes[1:] if self.output_units else self.layer_sizes[1:-1]
        return tuple(jnp.zeros(n, self.dtype) for n in sizes)

    def drive(self, x):
        return (self.layers[0](x), *(layer.bias for layer in self._couplings()))

    def coupling(self, s):
        total = jnp.zeros((), s[0].dtype)
        for layer, lower, upper in zip(self._couplings(), s[:-1], s[1:]):
            total = total + jnp.sum(upper * layer.linear(lower))
        return total

    def readout(self, s):
        return s[-1] if self.output_units else self.readout_layer(s[-1])

    def param_groups(self):
        return layered_param_groups(self, "layers")
