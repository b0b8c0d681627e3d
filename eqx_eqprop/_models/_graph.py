"""Energy networks on a graph of couplings: chains, skip couplings (the Hopfield-ResNets of
Elayedam & Srinivasan 2025), any graph of feature maps and vectors."""

import dataclasses
import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from .._activations import AbstractActivation, SmoothClip
from .._checks import check_integer, check_sizes
from .._layers import AbstractPool, AvgPool, Conv2d, Dense, IdentityPool
from ._base import State
from ._energy import AbstractEnergyModel
from ._mlp import check_float_dtype, check_weight_scale

Shape = tuple[int, ...]


class Coupling(eqx.Module):
    """One term `<feed(s_source), s_target>` of an `EnergyGraphNet`'s energy.

    Between two feature maps `feed` is a convolution (SAME padding) followed by pooling
    where the target map is smaller; where either end is a vector it is a dense map of
    the flattened source. `source = -1` is the input (its term is part of the drive).
    """

    op: Conv2d | Dense
    pool: AbstractPool
    source: int = eqx.field(static=True)
    target: int = eqx.field(static=True)
    target_shape: Shape = eqx.field(static=True)

    def __call__(self, v):
        """`feed(v)`, shaped like the target layer (no bias: biases are the layers')."""
        if isinstance(self.op, Conv2d):
            return self.pool(self.op.linear(v))
        return self.op.linear(v.reshape(-1)).reshape(self.target_shape)


def _layer_shape(value, i: int) -> Shape:
    if isinstance(value, int) and not isinstance(value, bool):
        return (check_integer(value, f"layers[{i}]", owner="EnergyGraphNet"),)
    shape = check_sizes(value, f"layers[{i}]", owner="EnergyGraphNet")
    if len(shape) != 3:
        raise ValueError(
            f"EnergyGraphNet: layers[{i}] is a number of units or (height, width, channels), "
            f"got {value!r}."
        )
    return shape


def colour_layers(num_layers: int, edges: Sequence[tuple[int, int]]) -> tuple[tuple[int, ...], ...]:
    """A colouring of the layer graph: groups of layers no coupling joins, each layer
    in the first group it fits (greedy, in layer order). For a chain it is the even and
    the odd layers."""
    neighbours: list[set[int]] = [set() for _ in range(num_layers)]
    for a, b in edges:
        if a >= 0:
            neighbours[a].add(b)
            neighbours[b].add(a)
    colour: list[int] = []
    for layer in range(num_layers):
        taken = {colour[n] for n in neighbours[layer] if n < layer}
        colour.append(next(c for c in range(num_layers) if c not in taken))
    return tuple(
        tuple(layer for layer in range(num_layers) if colour[layer] == c)
        for c in range(max(colour) + 1)
    )


class EnergyGraphNet(AbstractEnergyModel):
    """An energy network on a graph of couplings, for one sample:

        Phi(x, s) = sum_(a -> b) < feed_ab(s_a), s_b > + sum_l < b_l, s_l >,   s_-1 = x,

    a layer being a feature map `(height, width, channels)` or a vector, a coupling
    `(a, b)` a convolution (plus pooling where `b` is smaller) or a dense map, and each
    layer its own bias (per channel for maps). A chain `(-1, 0), (0, 1), ...` is a
    layered network like `EnergyConvNet`; couplings that skip layers make a
    Hopfield-ResNet (Elayedam & Srinivasan 2025). The readout of the last layer lives in
    the cost.

    Even/odd relaxations become block relaxations over a colouring of the layer graph
    (`layer_groups()`: no coupling joins two layers of one group, each group updated
    with the fresh values of the others); for a chain it is today's even/odd.

    **Arguments:**

    - `input_shape`: `(height, width, channels)` of an image, or `(features,)`.
    - `layers`: each layer's shape, `(height, width, channels)` or a number of units.
    - `couplings`: `(source, target)` pairs, `source = -1` for the input, or
      `(source, target, kernel_size)` for a convolution of its own size (a 1x1 skip);
      every layer must be reachable from the input.
    - `num_classes`: readout units.
    - `kernel_size`: of the convolutions whose coupling names none.
    - `pooling`: the pooling where a map shrinks (its window is set to the ratio of
      the sizes; default `AvgPool()`).
    - `weight_scale`: the init std times `sqrt(fan_in)` (truncated normal), one number
      for every weight, or one per weight: a scale for each coupling in the order of
      `couplings`, then the readout's (the per-weight gains of Elayedam & Srinivasan
      2025; their uniform `+-gain/sqrt(fan_in)` draw has the std of our scale
      `gain / sqrt(3)`).
    - `activation`, `dtype`, `key`: as for `EnergyConvNet`.
    """

    couplings: tuple[Coupling, ...]
    biases: tuple[jax.Array, ...]
    readout_layer: Dense
    activation: AbstractActivation
    image_shape: Shape = eqx.field(static=True)
    layer_shapes: tuple[Shape, ...] = eqx.field(static=True)

    def __init__(
        self,
        input_shape: Sequence[int],
        layers: Sequence,
        couplings: Sequence[tuple[int, int] | tuple[int, int, int]],
        num_classes: int,
        *,
        kernel_size: int = 3,
        pooling: AbstractPool = AvgPool(),
        activation: AbstractActivation = SmoothClip(width=2.0),
        weight_scale: float | Sequence[float] = 1.0,
        dtype=None,
        key: PRNGKeyArray,
    ):
        owner = "EnergyGraphNet"
        input_shape = check_sizes(input_shape, "input_shape", owner=owner)
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
            raise ValueError(
                f"{owner}: layers is a non-empty list of layer shapes, got {layers!r}."
            )
        shapes = tuple(_layer_shape(v, i) for i, v in enumerate(layers))
        check_integer(num_classes, "num_classes", owner=owner)
        check_integer(kernel_size, "kernel_size", owner=owner)
        if not isinstance(pooling, AbstractPool):
            raise TypeError(f"{owner}: pooling must be an AbstractPool, got {pooling!r}.")
        dtype = check_float_dtype(dtype)
        edges = _check_edges(couplings, len(shapes), kernel_size)
        scales = weight_scales(weight_scale, len(edges) + 1, owner)
        keys = jax.random.split(key, len(edges) + 1)
        made = []
        for k, scale, (a, b, size) in zip(keys[:-1], scales, edges):
            source = input_shape if a < 0 else shapes[a]
            made.append(_coupling(a, b, source, shapes[b], size, pooling, scale, dtype, k))
        self.couplings = tuple(made)
        self.biases = tuple(jnp.zeros(s[-1] if len(s) == 3 else s, dtype) for s in shapes)
        self.readout_layer = Dense(
            math.prod(shapes[-1]), num_classes, weight_scale=scales[-1], dtype=dtype, key=keys[-1]
        )
        self.activation = activation
        self.image_shape = input_shape
        self.layer_shapes = shapes

    @property
    def input_shape(self):
        return self.image_shape

    @property
    def num_classes(self):
        return self.readout_layer.out_features

    @property
    def num_layers(self):
        return len(self.layer_shapes)

    @property
    def quadratic_coupling(self):
        # bilinear when every pooling is linear (average, identity)
        return all(isinstance(c.pool, (AvgPool, IdentityPool)) for c in self.couplings)

    def layer_groups(self):
        return colour_layers(self.num_layers, [(c.source, c.target) for c in self.couplings])

    def init_state(self) -> State:
        return tuple(jnp.zeros(shape, self.dtype) for shape in self.layer_shapes)

    def drive(self, x):
        out = [jnp.broadcast_to(b, shape) for b, shape in zip(self.biases, self.layer_shapes)]
        for c in self.couplings:
            if c.source < 0:
                out[c.target] = out[c.target] + c(x)
        return tuple(out)

    def coupling(self, s):
        total = jnp.zeros((), s[0].dtype)
        for c in self.couplings:
            if c.source >= 0:
                total = total + jnp.sum(c(s[c.source]) * s[c.target])
        return total

    def readout(self, s):
        return self.readout_layer(s[-1].reshape(-1))


def weight_scales(value, count: int, owner: str) -> tuple[float, ...]:
    """`count` init scales from one number or a sequence of `count` (couplings, then
    the readout), each finite and positive."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if len(value) != count:
            where = f"{owner}: " if owner else ""
            raise ValueError(
                f"{where}weight_scale has {len(value)} entries; give one number, or one "
                f"per weight: {count - 1} couplings (in the order given), then the readout."
            )
        return tuple(check_weight_scale(v, owner) for v in value)
    return (check_weight_scale(value, owner),) * count


def _check_edges(couplings, n: int, kernel_size: int) -> tuple[tuple[int, int, int], ...]:
    owner = "EnergyGraphNet"
    if isinstance(couplings, (str, bytes)) or not isinstance(couplings, Sequence):
        raise ValueError(f"{owner}: couplings is a list of (source, target) pairs.")
    edges, seen = [], set()
    for pair in couplings:
        if (
            not isinstance(pair, Sequence)
            or len(pair) not in (2, 3)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
        ):
            raise ValueError(
                f"{owner}: a coupling is a (source, target) pair of ints, or (source, "
                f"target, kernel_size), got {pair!r}."
            )
        a, b = pair[:2]
        size = check_integer(pair[2], "kernel_size", owner=owner) if len(pair) == 3 else kernel_size
        if not (-1 <= a < n and 0 <= b < n):
            raise ValueError(
                f"{owner}: coupling {pair!r} names a layer outside -1 (the input) .. {n - 1}."
            )
        if a == b:
            raise ValueError(f"{owner}: coupling {pair!r} joins a layer to itself.")
        key = (a, b) if a < 0 else tuple(sorted((a, b)))
        if key in seen:
            raise ValueError(
                f"{owner}: layers {a} and {b} are coupled twice (a coupling is symmetric: "
                "(a, b) and (b, a) are the same term)."
            )
        seen.add(key)
        edges.append((a, b, size))
    reached, frontier = set(), {-1}
    while frontier:
        reached |= frontier
        frontier = {
            y for a, b, _ in edges for x, y in ((a, b), (b, a)) if x in reached and y not in reached
        } - {-1}
    missing = [i for i in range(n) if i not in reached]
    if missing:
        raise ValueError(
            f"{owner}: layers {missing} are not connected to the input through any coupling."
        )
    return tuple(edges)


def _coupling(a, b, source: Shape, target: Shape, kernel, pooling, scale, dtype, key) -> Coupling:
    if len(source) == 3 and len(target) == 3:
        (hs, ws, cs), (ht, wt, ct) = source, target
        if hs % ht or ws % wt or hs // ht != ws // wt:
            raise ValueError(
                f"EnergyGraphNet: coupling ({a}, {b}) joins a {hs}x{ws} map to a {ht}x{wt} "
                "one: the target must be the source pooled by one integer factor (write "
                "the pair as (larger map, smaller map), or make one end a vector)."
            )
        ratio = hs // ht
        op = Conv2d(cs, ct, kernel, use_bias=False, weight_scale=scale, dtype=dtype, key=key)
        pool = IdentityPool() if ratio == 1 else dataclasses.replace(pooling, window=ratio)
        return Coupling(op, pool, a, b, target)
    op = Dense(
        math.prod(source),
        math.prod(target),
        use_bias=False,
        weight_scale=scale,
        dtype=dtype,
        key=key,
    )
    return Coupling(op, IdentityPool(), a, b, target)


def hopfield_resnet_graph(
    input_shape: Sequence[int], channels: Sequence[int]
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """The layers and couplings of a Hopfield-ResNet (Elayedam & Srinivasan 2025): one
    block per entry of `channels`, each two maps, `a` at the block input's size and `b`
    at half of it, coupled input -> a (3x3), a -> b (3x3, then 2x2 pooling) and the skip
    input -> b (1x1, then pooling). Four blocks of (128, 256, 512, 512) on 32x32x3 images
    are Hopfield-ResNet13's 8 maps and 12 convolutional couplings (the 13th weight, the
    dense head, is the readout). The paper halves the size with stride-2 convolutions;
    here a convolution is followed by pooling, as in the other conv nets."""
    h, w, _ = check_sizes(input_shape, "input_shape", owner="hopfield_resnet")
    channels = check_sizes(channels, "channels", owner="hopfield_resnet")
    layers: list[tuple[int, int, int]] = []
    couplings: list[tuple[int, int, int]] = []
    source = -1
    for c in channels:
        if h % 2 or w % 2:
            raise ValueError(
                f"hopfield_resnet: a block halves the map, but it receives {h}x{w}; use fewer "
                "blocks or a larger input."
            )
        a, b = len(layers), len(layers) + 1
        layers += [(h, w, c), (h // 2, w // 2, c)]
        couplings += [(source, a, 3), (a, b, 3), (source, b, 1)]
        source, h, w = b, h // 2, w // 2
    return layers, couplings
