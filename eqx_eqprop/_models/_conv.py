"""Layered convolutional energy networks (Laborieux et al. 2021; Laborieux & Zenke 2022)."""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PRNGKeyArray

from .._activations import AbstractActivation, SmoothClip
from .._checks import check_flag, check_integer, check_sizes
from .._layers import AbstractPool, Conv2d, Dense, MaxPool
from .._misc import is_complex_tree, tree_dot
from ._base import layered_param_groups
from ._energy import AbstractEnergyModel
from ._mlp import check_float_dtype, check_weight_scale


def _per_layer(value, n: int, name: str) -> tuple:
    """One value for every layer, or one per layer."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(
                f"EnergyConvNet: {name} needs one value per layer ({n}), got {len(value)}."
            )
        return tuple(value)
    return (value,) * n


class EnergyConvNet(AbstractEnergyModel):
    """A layered convolutional energy network for one NHWC sample:

        Phi(x, s) = sum_l < P_l(conv_l(s_l)) + b_l, s_{l+1} >,   s_0 = x,

    with a linear readout of the last state inside the cost (not a neuron layer). With
    `output_units=True` the readout coupling is part of the energy instead,
    `Phi += <s_o, W_out flatten(s_L) + b_out>`, and the outputs `s_o` (a vector) are the
    last layer of the state, read out as they are (what clamping rules such as
    `ContrastiveLearning` need; use a `SquaredError` cost on them). The parameters are
    the same either way. The bias is added after the pooling (it commutes with max,
    average and softmax pooling).
    VGG-4 of Laborieux et al. (2021) on 32x32x3 is
    `EnergyConvNet((32, 32, 3), (128, 256, 512, 512), 10, paddings=("SAME",) * 3 +
    ("VALID",))`: states 16x16x128, 8x8x256, 4x4x512, 1x1x512.

    **Arguments:**

    - `input_shape`: `(height, width, channels)` of one image (NHWC, like the data).
    - `channels`: the output channels of each convolution.
    - `num_classes`: readout units.
    - `kernel_sizes`, `paddings` (`"SAME"` / `"VALID"`), `pooling` (`MaxPool()`,
      `AvgPool()`, `SoftmaxPool(temperature)`, `IdentityPool()`): one value, or one per
      layer.
    - `activation`: `sigma`; default the holomorphic clip to [0, 1] over [0, 2],
      `SmoothClip(width=2.0)`.
    - `weight_scale`: weights truncated normal with std `weight_scale / sqrt(fan_in)`.
    - `output_units`: the outputs are neurons of the state (see above); default `False`.
    - `dtype`: real floating dtype (default: JAX's default float).
    - `key`: a PRNG key.
    """

    convs: tuple[Conv2d, ...]
    pools: tuple[AbstractPool, ...]
    readout_layer: Dense
    activation: AbstractActivation
    image_shape: tuple[int, int, int] = eqx.field(static=True)
    state_shapes: tuple[tuple[int, int, int], ...] = eqx.field(static=True)
    output_units: bool = eqx.field(static=True)

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int],
        num_classes: int,
        *,
        kernel_sizes=3,
        paddings="SAME",
        pooling: AbstractPool = MaxPool(),
        activation: AbstractActivation = SmoothClip(width=2.0),
        weight_scale: float = 1.0,
        output_units: bool = False,
        dtype=None,
        key: PRNGKeyArray,
    ):
        owner = "EnergyConvNet"
        check_flag(output_units, "output_units", owner=owner)
        input_shape = check_sizes(input_shape, "input_shape", owner=owner)
        if len(input_shape) != 3:
            raise ValueError(
                f"{owner}: input_shape must be (height, width, channels), got {input_shape}."
            )
        channels = check_sizes(channels, "channels", owner=owner)
        check_integer(num_classes, "num_classes", owner=owner)
        check_weight_scale(weight_scale, owner)
        n = len(channels)
        kernels = _per_layer(kernel_sizes, n, "kernel_sizes")
        for i, k in enumerate(kernels):
            check_integer(k, f"kernel_sizes[{i}]" if n > 1 else "kernel_sizes", owner=owner)
        paddings = _per_layer(paddings, n, "paddings")
        for pad in paddings:
            if pad not in ("SAME", "VALID"):
                raise ValueError(f'{owner}: paddings are "SAME" or "VALID", got {pad!r}.')
        pools = _per_layer(pooling, n, "pooling")
        for pool in pools:
            if not isinstance(pool, AbstractPool):
                raise TypeError(f"pooling must be an AbstractPool, got {pool!r}.")
        dtype = check_float_dtype(dtype)
        keys = jax.random.split(key, n + 1)
        convs, shapes = [], []
        h, w, c = input_shape
        for i, (k, pad, pool, out) in enumerate(zip(kernels, paddings, pools, channels)):
            conv = Conv2d(
                c, out, k, padding=pad, weight_scale=weight_scale, dtype=dtype, key=keys[i]
            )
            ch, cw = conv.out_size(h, w)
            if min(ch, cw) < 1:
                raise ValueError(
                    f"layer {i}: a VALID {k}x{k} convolution needs inputs of at least {k}x{k}, "
                    f"but this layer receives {h}x{w}; use SAME padding, fewer layers or a "
                    "larger input."
                )
            h, w = pool.out_size(ch, cw)
            if min(h, w) < 1:
                raise ValueError(
                    f"layer {i}: {type(pool).__name__}(window={pool.window}) cannot pool the "
                    f"{ch}x{cw} output of its convolution; use IdentityPool() there, fewer "
                    "layers or a larger input."
                )
            convs.append(conv)
            shapes.append((h, w, out))
            c = out
        self.convs = tuple(convs)
        self.pools = pools
        self.readout_layer = Dense(
            h * w * c, num_classes, weight_scale=weight_scale, dtype=dtype, key=keys[-1]
        )
        self.activation = activation
        self.image_shape = input_shape
        self.state_shapes = tuple(shapes)
        self.output_units = output_units

    @property
    def input_shape(self):
        return self.image_shape

    @property
    def num_classes(self):
        return self.readout_layer.out_features

    @property
    def num_layers(self):
        return len(self.convs) + self.output_units

    @property
    def output_layer(self):
        return len(self.convs) if self.output_units else None

    def init_state(self):
        maps = tuple(jnp.zeros(shape, self.dtype) for shape in self.state_shapes)
        if not self.output_units:
            return maps
        return (*maps, jnp.zeros(self.num_classes, self.dtype))

    def _feed(self, i: int, v):
        """`P_i(conv_i(v))` without the bias."""
        return self.pools[i](self.convs[i].linear(v))

    def drive(self, x):
        biases = [c.bias for c in self.convs if c.bias is not None]
        assert len(biases) == len(self.convs)  # every coupling of the net has one
        first = self._feed(0, x) + biases[0][None, None, :]
        rest = (jnp.broadcast_to(b, s) for b, s in zip(biases[1:], self.state_shapes[1:]))
        outputs = (self.readout_layer.bias,) if self.output_units else ()
        return (first, *rest, *outputs)

    def coupling(self, s):
        total = jnp.zeros((), s[0].dtype)
        for i in range(1, len(self.convs)):
            total = total + jnp.sum(self._feed(i, s[i - 1]) * s[i])
        if self.output_units:
            total = total + jnp.sum(self.readout_layer.linear(s[-2].reshape(-1)) * s[-1])
        return total

    def readout(self, s):
        if self.output_units:
            return s[-1]
        return self.readout_layer(s[-1].reshape(-1))

    def learning_signal_change(self, x, s0, s, nudge):
        """`learning_signal(x, s, nudge) - learning_signal(x, s0, None)` without the
        cancellation of two large batch averages, exactly, for any pooling. A coupling
        term `<P(conv(s_a)), s_b>` has the weight gradient `conv^*(s_a, u)` with
        `u = P'(conv(s_a))^T s_b`, bilinear in `(s_a, u)`: its change is
        `conv^*(d_a, u) + conv^*(s0_a, u - u0)`, every operand small (`d = s - s0`, and
        `u - u0` taken per element before any batch sum)."""
        n = len(self.convs)

        def cotangent(i, below, above):
            _, vjp = jax.vjp(self.pools[i], self.convs[i].linear(below))
            return vjp(above)[0]

        def changes(s0_i, s_i):
            out = []
            for i in range(1, n):
                u = cotangent(i, s_i[i - 1], s_i[i])
                out.append((u, u - cotangent(i, s0_i[i - 1], s0_i[i])))
            return out

        consts = jax.lax.stop_gradient(jax.vmap(changes)(s0, s))

        def energy_change(model, xi, s0_i, s_i, c, label):
            d = jtu.tree_map(jnp.subtract, s_i, s0_i)
            e = -tree_dot(model.drive(xi), d)
            for i in range(1, n):
                u, du = c[i - 1]
                e = e - jnp.sum(model.convs[i].linear(d[i - 1]) * u)
                e = e - jnp.sum(model.convs[i].linear(s0_i[i - 1]) * du)
            if (
                model.output_units
            ):  # <W flat(s_a), s_b>: changes by W flat(d_a) s_b + W flat(s0_a) d_b
                read = model.readout_layer.linear
                e = e - jnp.sum(read(d[n - 1].reshape(-1)) * s_i[n])
                e = e - jnp.sum(read(s0_i[n - 1].reshape(-1)) * d[n])
            if nudge is not None:
                e = e + nudge.beta * nudge.cost(model.readout(s_i), label)
            return e

        labels = jnp.zeros(x.shape[0], jnp.int32) if nudge is None else nudge.label

        def energies(model):
            return jax.vmap(lambda *a: energy_change(model, *a))(x, s0, s, consts, labels)

        complex_ = is_complex_tree((s, None if nudge is None else nudge.beta))
        return self._mean_gradient(energies, complex_)

    def param_groups(self):
        return layered_param_groups(self, "convs")
