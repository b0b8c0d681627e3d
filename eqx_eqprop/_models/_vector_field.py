"""Vector-field networks: dynamics without an energy, feedback weights of their own
(Laborieux & Zenke 2024, "Improving equilibrium propagation without weight symmetry
through Jacobian homeostasis")."""

import abc
import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PRNGKeyArray, PyTree

from .._activations import AbstractActivation, Sigmoid
from .._checks import check_real
from .._layers import Conv2d, Dense
from ._base import AbstractModel, Nudge, State
from ._mlp import check_float_dtype, check_weight_scale

Node = int | str  # "in", 1..L, or "out" (= L, the last neuron layer)


class AbstractVectorFieldModel(AbstractModel):
    """A network defined by a vector field on pre-activations `u`, with activities
    `s = sigma(u)`: `du/dt = f(u) = T(u) - u`, its discrete map `u <- T(u) = u + f(u)`.

    Implement `activity_update(s, drive, nudge)`, the map written in terms of the
    activities (`T` as a function of `s = sigma(u)`), and `activation`; `update`
    follows. Its Jacobian with respect to the activities, `J = dT/ds = df/ds`, is what
    generalized EP and Jacobian homeostasis look at: when `J` is symmetric, the
    derivative of the activities in the nudge is the adjoint of recurrent backprop, and
    generalized hEP is exact.
    """

    activation: eqx.AbstractVar[AbstractActivation]

    @abc.abstractmethod
    def activity_update(self, s: State, drive: PyTree, nudge: Nudge | None = None) -> State:
        """`T` as a function of the activities `s` (pre-activations out)."""

    def activities(self, u: State) -> State:
        return jtu.tree_map(self.activation, u)

    def update(self, u, drive, nudge=None, noise=None, *, layers=None):
        new = self.activity_update(self.activities(u), drive, nudge)
        if noise is not None:
            new = jtu.tree_map(jnp.add, new, noise)
        if layers is None:
            return new
        return tuple(new[i] if i in layers else u[i] for i in range(len(u)))


def _node_index(node: Node, n_layers: int, where: str) -> int:
    """ "in" -> 0, 1..L -> itself, "out" -> L."""
    if node == "in":
        return 0
    if node == "out":
        return n_layers
    if isinstance(node, int) and not isinstance(node, bool) and 1 <= node <= n_layers:
        return node
    raise ValueError(
        f"{where}: unknown layer {node!r}; layers are 'in', 1..{n_layers} and 'out' "
        f"(= {n_layers}, the last neuron layer, which the readout reads)."
    )


def standard_graph(kind: str, n_layers: int) -> list[tuple[int, int]]:
    """`"symmetric"`: in->1, 1->2, 2->1, ..., (L-1)->L, L->(L-1). `"loop"`: in->1, 1->2,
    ..., (L-1)->L, L->1 (no reciprocal pairs for L >= 3)."""
    forward = [(i, i + 1) for i in range(n_layers)]
    if kind == "symmetric":
        return forward + [(i + 1, i) for i in range(1, n_layers)]
    if kind == "loop":
        return forward + ([(n_layers, 1)] if n_layers >= 2 else [])
    raise ValueError(f"graph must be 'symmetric', 'loop' or a list of edges, got {kind!r}.")


Shape = tuple[int, ...]


def _layer_shape(size, where: str) -> Shape:
    """An int `n` (a vector layer) or `(height, width, channels)` (a feature map)."""
    if isinstance(size, int) and not isinstance(size, bool):
        shape = (size,)
    elif isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 3:
        shape = tuple(size)
    else:
        shape = ()
    if not shape or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
        raise ValueError(
            f"{where}: a layer is an int (units) or (height, width, channels), got {size!r}."
        )
    if min(shape) < 1:
        raise ValueError(f"{where}: sizes must be positive, got {size!r}.")
    return shape


def _connection(pre: Shape, post: Shape, *, bias: bool, kernel_size: int, scale, dtype, key):
    """A `Conv2d` (SAME, stride 1) between feature maps of one height and width, else a
    `Dense` between the flattened layers."""
    if len(pre) == 3 and len(post) == 3 and pre[:2] == post[:2]:
        return Conv2d(
            pre[2], post[2], kernel_size, use_bias=bias, weight_scale=scale, dtype=dtype, key=key
        )
    return Dense(
        math.prod(pre), math.prod(post), use_bias=bias, weight_scale=scale, dtype=dtype, key=key
    )


def _apply(conn, v, shape: Shape, *, bias: bool):
    """`conn` on one sample's layer `v`, the result shaped like the receiving layer."""
    if isinstance(conn, Conv2d):
        return conn(v) if bias else conn.linear(v)
    out = conn(v.reshape(-1)) if bias else conn.linear(v.reshape(-1))
    return out.reshape(shape)


def transposed_weight(conn):
    """The weight of the adjoint map: `W^T` for `Dense`; for a SAME, stride-1 `Conv2d`
    with an odd kernel, the kernel flipped in space with its channels swapped."""
    if isinstance(conn, Conv2d):
        return jnp.flip(conn.weight, (0, 1)).transpose(0, 1, 3, 2)
    return conn.weight.T


class VectorFieldNet(AbstractVectorFieldModel):
    """A layered vector-field network with feedback weights independent of the forward
    ones (Laborieux & Zenke 2024):

        f_post(u) = sum_{pre -> post} conn(s_pre) - u_post,    s = sigma(u),

    and the nudge `-beta dC/ds_out` added at the output layer. Discrete dynamics
    `u <- u + f(u)` (`FixedPointRelaxation`), continuous `du/dt = f(u)`
    (`ODERelaxation`). Forward connections (from a lower layer, or the input) have a
    bias, feedback connections (from a higher layer) none. As in `EnergyMLP`, the
    readout `W_out s_out + b_out` lives inside the cost. With every feedback weight the
    transpose of its forward partner, the network is an `EnergyMLP` written in
    pre-activations: same equilibria, same gradients.

    **Arguments:**

    - `layer_sizes`: `(inputs, n_1, ..., n_L, classes)`; layer `L` is the output layer
      `"out"` (nudged, read by the readout). The inputs and each layer are an int
      (units) or `(height, width, channels)` (a feature map, NHWC). An edge between
      feature maps of one height and width is a convolution (`Conv2d`, SAME, stride 1,
      `kernel_size`; the transpose of a convolution is the convolution with the
      flipped kernel); any other edge is dense, on the flattened layers.
    - `graph`: `"symmetric"` (in->1, 1->2, 2->1, ..., (L-1)->out, out->(L-1)), `"loop"`
      (in->1, 1->2, ..., (L-1)->out, out->1: no reciprocal pairs from L = 3 on), or a
      list of edges `(pre, post)` among `"in"`, `1..L`, `"out"`.
    - `feedback_angle`: degrees in [0, 90]. A feedback connection whose reverse is a
      forward connection starts as `sin(a) B + cos(a) W_forward^T` (`B` random with the
      norm of `W_forward`): 0 is symmetric, 90 independent. `feedback_angles(model)`
      reports the current angles.
    - `activation`: `sigma`, default `Sigmoid()`.
    - `weight_scale`: forward weights truncated normal with std `weight_scale / sqrt(fan_in)`.
    - `kernel_size`: odd, for the convolutional edges (default 3).
    - `dtype`, `key`.
    """

    connections: tuple[Dense | Conv2d, ...]
    readout_layer: Dense
    activation: AbstractActivation
    edges: tuple[tuple[int, int], ...] = eqx.field(static=True)
    layer_sizes: tuple[int | Shape, ...] = eqx.field(static=True)

    def __init__(
        self,
        layer_sizes: Sequence[int | Sequence[int]],
        *,
        graph: str | Sequence[tuple[Node, Node]] = "symmetric",
        feedback_angle: float = 90.0,
        activation: AbstractActivation = Sigmoid(),
        weight_scale: float = 1.0,
        kernel_size: int = 3,
        dtype=None,
        key: PRNGKeyArray,
    ):
        if isinstance(layer_sizes, (str, bytes)) or not isinstance(layer_sizes, Sequence):
            raise ValueError(
                "VectorFieldNet: layer_sizes must be a sequence (inputs, n_1, ..., n_L, "
                f"classes), got {layer_sizes!r}."
            )
        if len(layer_sizes) < 3:
            raise ValueError(
                "layer_sizes must be (inputs, n_1, ..., n_L, classes) with at least one "
                f"neuron layer, got {tuple(layer_sizes)}."
            )
        shapes = tuple(_layer_shape(n, f"layer_sizes[{i}]") for i, n in enumerate(layer_sizes))
        if len(shapes[-1]) != 1:
            raise ValueError(f"the classes must be an int, got {layer_sizes[-1]!r}.")
        if not (isinstance(kernel_size, int) and kernel_size >= 1 and kernel_size % 2 == 1):
            raise ValueError(
                f"kernel_size must be odd (its transpose is then a SAME convolution too), "
                f"got {kernel_size!r}."
            )
        check_real(feedback_angle, "feedback_angle", minimum=0, maximum=90, owner="VectorFieldNet")
        check_weight_scale(weight_scale, "VectorFieldNet")
        n_layers = len(shapes) - 2
        if isinstance(graph, str):
            edges = standard_graph(graph, n_layers)
        else:
            edges = []
            for k, edge in enumerate(graph):
                if len(edge) != 2:
                    raise ValueError(f"edge {k} must be a pair (pre, post), got {edge!r}.")
                pre = _node_index(edge[0], n_layers, f"edge {k} {tuple(edge)}")
                post = _node_index(edge[1], n_layers, f"edge {k} {tuple(edge)}")
                if post == 0:
                    raise ValueError(f"edge {k} {tuple(edge)}: nothing connects into the input.")
                if pre == post:
                    raise ValueError(f"edge {k} {tuple(edge)}: a layer cannot feed itself.")
                edges.append((pre, post))
        if len(set(edges)) != len(edges):
            raise ValueError("the graph lists an edge twice.")
        for layer in range(1, n_layers + 1):
            if not any(post == layer for _, post in edges):
                raise ValueError(
                    f"layer {layer} has no incoming edge: its state would never change. "
                    "Connect something into it."
                )
        dtype = check_float_dtype(dtype)
        keys = jax.random.split(key, len(edges) + 1)
        # feedforward edges carry the bias; feedback edges start near the transpose of
        # their partner (the adjoint, for a convolution), rotated by `feedback_angle`
        raw = {
            (pre, post): _connection(
                shapes[pre],
                shapes[post],
                bias=pre < post,
                kernel_size=kernel_size,
                scale=weight_scale,
                dtype=dtype,
                key=keys[k],
            )
            for k, (pre, post) in enumerate(edges)
        }
        a = math.radians(feedback_angle)
        connections = []
        for pre, post in edges:
            layer = raw[(pre, post)]
            partner = raw.get((post, pre))
            if pre > post and partner is not None:
                w_t = transposed_weight(partner)
                b = layer.weight * (jnp.linalg.norm(w_t) / jnp.linalg.norm(layer.weight))
                layer = eqx.tree_at(
                    lambda d: d.weight, layer, (math.sin(a) * b + math.cos(a) * w_t).astype(dtype)
                )
            connections.append(layer)
        self.connections = tuple(connections)
        self.readout_layer = Dense(
            math.prod(shapes[-2]),
            shapes[-1][0],
            weight_scale=weight_scale,
            dtype=dtype,
            key=keys[-1],
        )
        self.activation = activation
        self.edges = tuple(edges)
        self.layer_sizes = tuple(n[0] if len(n) == 1 else n for n in shapes)

    @property
    def layer_shapes(self) -> tuple[Shape, ...]:
        """The shape of one sample's inputs, of each layer, and `(classes,)`."""
        return tuple((n,) if isinstance(n, int) else n for n in self.layer_sizes)

    @property
    def input_shape(self):
        return self.layer_shapes[0]

    @property
    def num_classes(self):
        return self.layer_sizes[-1]

    @property
    def num_layers(self):
        return len(self.layer_sizes) - 2

    @property
    def has_feedback(self) -> bool:
        return any(pre > post for pre, post in self.edges)

    def init_state(self):
        return tuple(jnp.zeros(n, self.dtype) for n in self.layer_shapes[1:-1])

    def drive(self, x):
        """Per layer: what the input feeds it, plus the biases of its forward edges."""
        shapes = self.layer_shapes
        out = [jnp.zeros(n, self.dtype) for n in shapes[1:-1]]
        for (pre, post), conn in zip(self.edges, self.connections):
            if pre == 0:
                out[post - 1] = out[post - 1] + _apply(conn, x, shapes[post], bias=True)
            elif conn.bias is not None:
                out[post - 1] = out[post - 1] + jnp.broadcast_to(
                    conn.bias if isinstance(conn, Conv2d) else conn.bias.reshape(shapes[post]),
                    shapes[post],
                )
        return tuple(out)

    def activity_update(self, s, drive, nudge=None):
        shapes = self.layer_shapes
        new = list(drive)
        for (pre, post), conn in zip(self.edges, self.connections):
            if pre > 0:
                new[post - 1] = new[post - 1] + _apply(conn, s[pre - 1], shapes[post], bias=False)
        if nudge is not None:
            # -beta dC/ds_out, holomorphic in s_out (a vjp with cotangent 1)
            cost, vjp = jax.vjp(
                lambda v: nudge.cost(self.readout_layer(v.reshape(-1)), nudge.label), s[-1]
            )
            (dc,) = vjp(jnp.ones_like(cost))
            new[-1] = new[-1] - nudge.beta * dc
        return tuple(new)

    def readout(self, u):
        return self.readout_layer(self.activation(u[-1]).reshape(-1))

    def param_groups(self):
        """`"forward{pre}-{post}"`, `"feedback{pre}-{post}"` (pre `in` for the input) per
        connection, `"readout"`."""

        def label(edge, conn):
            pre, post = edge
            kind = "feedback" if pre > post else "forward"
            name = f"{kind}{'in' if pre == 0 else pre}-{post}"
            return jtu.tree_map(lambda _: name, eqx.filter(conn, eqx.is_inexact_array))

        groups = eqx.filter(self, eqx.is_inexact_array)
        connections = tuple(label(e, c) for e, c in zip(self.edges, self.connections))
        readout = jtu.tree_map(lambda _: "readout", groups.readout_layer)
        return eqx.tree_at(
            lambda m: (m.connections, m.readout_layer), groups, (connections, readout)
        )


def feedback_angles(model: VectorFieldNet) -> dict[tuple[Node, Node], float]:
    """The angle in degrees between each feedback weight and the transpose of its forward
    partner, `{(pre, post): angle}` for the feedback edges that have one (0: symmetric)."""
    forward = {e: c for e, c in zip(model.edges, model.connections) if e[0] < e[1]}
    out = {}
    n = model.num_layers
    for (pre, post), conn in zip(model.edges, model.connections):
        partner = forward.get((post, pre))
        if pre > post and partner is not None:
            b, w_t = conn.weight, transposed_weight(partner)
            cos = jnp.sum(b * w_t) / (jnp.linalg.norm(b) * jnp.linalg.norm(w_t))
            name = "out" if pre == n else pre
            out[(name, post)] = float(jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0))))
    return out


def vector_field_from_energy_mlp(mlp, *, key: PRNGKeyArray | None = None) -> VectorFieldNet:
    """The `VectorFieldNet` with the weights of an `EnergyMLP` and every feedback weight
    the transpose of its forward partner: the same network, written in pre-activations."""
    sizes = mlp.layer_sizes
    net = VectorFieldNet(
        sizes,
        graph="symmetric",
        feedback_angle=0.0,
        activation=mlp.activation,
        dtype=mlp.dtype,
        key=jax.random.key(0) if key is None else key,
    )
    weights = []
    forward = {(i, i + 1): layer for i, layer in enumerate(mlp.layers)}
    for pre, post in net.edges:
        layer = forward.get((pre, post))
        if layer is not None:
            weights.append((layer.weight, layer.bias))
        else:
            weights.append((forward[(post, pre)].weight.T, None))

    def where(m):
        return tuple(c.weight for c in m.connections) + tuple(
            c.bias for c in m.connections if c.bias is not None
        )

    values = tuple(w for w, _ in weights) + tuple(b for _, b in weights if b is not None)
    net = eqx.tree_at(where, net, values)
    return eqx.tree_at(lambda m: m.readout_layer, net, mlp.readout_layer)
