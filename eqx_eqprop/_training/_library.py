"""The library's own configuration kinds: the model factories (with their argument
checks), the optimisers and schedules, and every class registered under its
configuration name (`register_library`, run when this module is imported)."""

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import lineax as lx
import optax
import optimistix as optx

from .. import _activations as act, _costs as costs
from .._checks import check_flag, check_integer, check_real, check_sizes, describe
from .._data import load_dataset
from .._estimators import (
    BPTT,
    ClassicEP,
    ContrastiveLearning,
    CoupledLearning,
    GeneralizedHEP,
    HolomorphicEP,
    ImplicitDifferentiation,
    JacobianHomeostasis,
    OscillatingEP,
    RecurrentBackprop,
    SymmetricEP,
)
from .._layers import AvgPool, IdentityPool, MaxPool, SoftmaxPool
from .._models import (
    EnergyConvNet,
    EnergyGraphNet,
    EnergyMLP,
    VectorFieldNet,
    hopfield_resnet_graph,
)
from .._models._graph import weight_scales
from .._models._mlp import check_weight_scale
from .._relaxation import (
    AndersonRelaxation,
    EvenOddRelaxation,
    FixedPointRelaxation,
    MixedPrecisionRelaxation,
    ODERelaxation,
    SDERelaxation,
    StragglerRelaxation,
)
from ._registry import register


def _check_dtype(dtype) -> None:
    if dtype is None:
        return
    try:
        ok = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(
            f"dtype must name a real floating dtype (float32, float64, ...), got {describe(dtype)}."
        )


def _hidden(hidden) -> tuple[int, ...]:
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, (list, tuple)):
        raise ValueError(
            "hidden is a list of layer sizes, e.g. [256, 256] (one hidden layer: [16]), "
            f"got {describe(hidden)}."
        )
    return check_sizes(hidden, "hidden")


def check_mlp(
    *, hidden=(64,), activation=None, weight_scale=1.0, output_units=False, dtype="float32"
):
    """The arguments of the `mlp` factory, checked without building anything."""
    del activation
    _hidden(hidden)
    check_weight_scale(weight_scale, "")
    check_flag(output_units, "output_units")
    _check_dtype(dtype)


def mlp(
    sample_shape,
    num_classes,
    *,
    key,
    hidden=(64,),
    activation=act.Sigmoid(),
    weight_scale=1.0,
    output_units=False,
    dtype="float32",
):
    """`EnergyMLP((prod(sample_shape), *hidden, num_classes))`: images are flattened."""
    features = math.prod(sample_shape)
    return EnergyMLP(
        (features, *_hidden(hidden), num_classes),
        activation=activation,
        weight_scale=weight_scale,
        output_units=output_units,
        dtype=dtype,
        key=key,
    )


def check_conv(
    *,
    channels=(32, 64),
    kernel_sizes=3,
    paddings="SAME",
    pooling=None,
    activation=None,
    weight_scale=1.0,
    output_units=False,
    dtype="float32",
):
    """The arguments of the `conv` factory, checked without building anything (the
    sizes that depend on the image are checked when the model is built)."""
    del pooling, activation
    if isinstance(channels, (str, bytes)) or not isinstance(channels, (list, tuple)):
        raise ValueError(
            f"channels is a list of channel counts, one per layer, e.g. [32, 64], got "
            f"{describe(channels)}."
        )
    check_sizes(channels, "channels")
    kernels = kernel_sizes if isinstance(kernel_sizes, (list, tuple)) else [kernel_sizes]
    for k in kernels:
        check_integer(k, "kernel_sizes")
    check_weight_scale(weight_scale, "")
    check_flag(output_units, "output_units")
    _check_dtype(dtype)


def conv(
    sample_shape,
    num_classes,
    *,
    key,
    channels=(32, 64),
    kernel_sizes=3,
    paddings="SAME",
    pooling=MaxPool(),
    activation=act.SmoothClip(width=2.0),
    weight_scale=1.0,
    output_units=False,
    dtype="float32",
):
    """`EnergyConvNet(sample_shape, channels, num_classes, ...)` on NHWC images."""
    return EnergyConvNet(
        tuple(sample_shape),
        channels,
        num_classes,
        kernel_sizes=kernel_sizes,
        paddings=paddings,
        pooling=pooling,
        activation=activation,
        weight_scale=weight_scale,
        output_units=output_units,
        dtype=dtype,
        key=key,
    )


def _graph_layers(layers) -> list:
    if isinstance(layers, (str, bytes)) or not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError(
            "layers is a list of layer shapes, each [height, width, channels] or a number of "
            f"units, e.g. [[14, 14, 16], [7, 7, 32]], got {describe(layers)}."
        )
    return [n if isinstance(n, int) else tuple(n) for n in layers]


def check_graph(
    *, layers=None, couplings=None, kernel_size=3, pooling=None, activation=None,
    weight_scale=1.0, dtype="float32",
):  # fmt: skip
    """The arguments of the `graph` factory that can be checked without the data's shape."""
    del pooling, activation
    _graph_layers(layers)
    if isinstance(couplings, (str, bytes)) or not isinstance(couplings, (list, tuple)):
        raise ValueError(
            "couplings is a list of [source, target] pairs (source -1: the input), e.g. "
            f"[[-1, 0], [0, 1], [-1, 1, 1]], got {describe(couplings)}."
        )
    check_integer(kernel_size, "kernel_size")
    weight_scales(weight_scale, len(couplings) + 1, "")
    _check_dtype(dtype)


def graph(
    sample_shape, num_classes, *, key, layers=None, couplings=None, kernel_size=3,
    pooling=AvgPool(), activation=act.SmoothClip(width=2.0), weight_scale=1.0, dtype="float32",
):  # fmt: skip
    """`EnergyGraphNet(sample_shape, layers, couplings, num_classes, ...)`: layers are
    `[height, width, channels]` maps or numbers of units, couplings `[source, target]`
    or `[source, target, kernel_size]`."""
    check_graph(layers=layers, couplings=couplings, kernel_size=kernel_size)
    assert layers is not None and couplings is not None
    return EnergyGraphNet(
        tuple(sample_shape), _graph_layers(layers), [tuple(c) for c in couplings], num_classes,
        kernel_size=kernel_size, pooling=pooling, activation=activation,
        weight_scale=weight_scale, dtype=dtype, key=key,
    )  # fmt: skip


def check_hopfield_resnet(
    *, channels=(16, 32), pooling=None, activation=None, weight_scale=1.0, dtype="float32"
):
    del pooling, activation
    channels = check_sizes(channels, "channels")
    weight_scales(weight_scale, 3 * len(channels) + 1, "")
    _check_dtype(dtype)


def hopfield_resnet(
    sample_shape, num_classes, *, key, channels=(16, 32), pooling=AvgPool(),
    activation=act.ClippedReLU(), weight_scale=1.0, dtype="float32",
):  # fmt: skip
    """A Hopfield-ResNet (`hopfield_resnet_graph`): one block of two maps per entry of
    `channels`, with 1x1 skip couplings; four blocks of (128, 256, 512, 512) on 32x32
    images are Hopfield-ResNet13 (Elayedam & Srinivasan 2025). `weight_scale` is one
    number or one per weight: each block's input -> a, a -> b and skip, then the
    readout."""
    layers, couplings = hopfield_resnet_graph(tuple(sample_shape), channels)
    return EnergyGraphNet(
        tuple(sample_shape), layers, couplings, num_classes, pooling=pooling,
        activation=activation, weight_scale=weight_scale, dtype=dtype, key=key,
    )  # fmt: skip


def implicit_lu():
    """The implicit function theorem with a dense LU solve (exact; the Jacobian is
    materialised, so for small states)."""
    return optx.ImplicitAdjoint()


def implicit_gmres(rtol=1e-6, atol=1e-6, restart=40):
    """The implicit function theorem with GMRES (matrix-free: vector-Jacobian products
    only); for large states. On the MNIST MLP, 7x faster than LU at batch 128."""
    return optx.ImplicitAdjoint(lx.GMRES(rtol=rtol, atol=atol, restart=restart))


def check_vector_field(
    *,
    hidden=(64,),
    graph="symmetric",
    feedback_angle=90.0,
    activation=None,
    weight_scale=1.0,
    kernel_size=3,
    dtype="float32",
):
    """The arguments of the `vector_field` factory that can be checked without the
    data's shape."""
    del graph, activation
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, (list, tuple)) or not hidden:
        raise ValueError(
            "hidden is a list of layers, each a number of units or [height, width, "
            f"channels], e.g. [64] or [[28, 28, 8], 128], got {describe(hidden)}."
        )
    for i, n in enumerate(hidden):
        sizes = n if isinstance(n, (list, tuple)) else [n]
        check_sizes(sizes, f"hidden[{i}]")
    check_real(feedback_angle, "feedback_angle", minimum=0.0, maximum=90.0)
    check_weight_scale(weight_scale, "")
    check_integer(kernel_size, "kernel_size")
    _check_dtype(dtype)


def vector_field(
    sample_shape,
    num_classes,
    *,
    key,
    hidden: Sequence[Any] = (64,),
    graph: Any = "symmetric",
    feedback_angle=90.0,
    activation=act.Sigmoid(),
    weight_scale=1.0,
    kernel_size=3,
    dtype="float32",
):
    """`VectorFieldNet((inputs, *hidden, num_classes), ...)`. A hidden layer is a number
    of units or `[height, width, channels]` (a feature map, convolutions between maps of
    one size). With only units the images are flattened; with a feature map they stay
    NHWC. `graph` is "symmetric", "loop" or a list of `[pre, post]` edges."""
    check_vector_field(hidden=hidden, weight_scale=weight_scale, kernel_size=kernel_size)
    if not isinstance(graph, str):
        graph = [tuple(edge) for edge in graph]
    hidden = [n if isinstance(n, int) else tuple(n) for n in hidden]
    maps = any(isinstance(n, tuple) for n in hidden)
    inputs: Any = tuple(sample_shape) if maps else math.prod(sample_shape)
    if maps and len(inputs) != 3:
        raise ValueError(
            f"feature-map layers need (height, width, channels) samples, got {inputs}."
        )
    return VectorFieldNet(
        (inputs, *hidden, num_classes),
        graph=graph,
        feedback_angle=feedback_angle,
        activation=activation,
        weight_scale=weight_scale,
        kernel_size=kernel_size,
        dtype=dtype,
        key=key,
    )


def _check_lr(value, what="lr"):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}.")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{what} must be finite and non-negative, got {value!r}.")


def sgd(learning_rate, *, nesterov=False):
    """Plain stochastic gradient descent."""
    return optax.sgd(learning_rate, nesterov=nesterov)


def momentum(learning_rate, *, momentum=0.9, nesterov=False):
    """SGD with (heavy-ball or Nesterov) momentum."""
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
    return optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)


def adam(learning_rate, *, b1=0.9, b2=0.999, eps=1e-8):
    return optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)


def adamw(learning_rate, *, b1=0.9, b2=0.999, eps=1e-8, decoupled_weight_decay=1e-4):
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=decoupled_weight_decay)


def constant(lr, total_steps):
    del total_steps
    return lr


def cosine(lr, total_steps, *, final_fraction=0.0):
    """Cosine decay from `lr` to `final_fraction * lr` over the whole run."""
    return optax.cosine_decay_schedule(lr, max(1, total_steps), alpha=final_fraction)


def warmup_cosine(lr, total_steps, *, warmup_fraction=0.05, final_fraction=0.0):
    """Linear warm-up over `warmup_fraction` of the run, then cosine decay."""
    warmup = int(warmup_fraction * total_steps)
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup, max(warmup + 1, total_steps), end_value=final_fraction * lr
    )


def register_library():
    """Register the library's own kinds (runs once, when this module is imported)."""
    for kind, factory, check in (
        ("mlp", mlp, check_mlp),
        ("conv", conv, check_conv),
        ("vector_field", vector_field, check_vector_field),
        ("graph", graph, check_graph),
        ("hopfield_resnet", hopfield_resnet, check_hopfield_resnet),
    ):
        register("model", kind, factory, check=check)
    for kind, cls in {
        "max": MaxPool,
        "avg": AvgPool,
        "softmax": SoftmaxPool,
        "identity": IdentityPool,
    }.items():
        register("pooling", kind, cls)
    estimators = {
        "hep": HolomorphicEP,
        "classic": ClassicEP,
        "symmetric": SymmetricEP,
        "centered": SymmetricEP,  # the name of Scellier et al. (2023)
        "oscillating": OscillatingEP,
        "implicit": ImplicitDifferentiation,
        "bptt": BPTT,
        "rbp": RecurrentBackprop,
        "generalized_hep": GeneralizedHEP,
        "contrastive": ContrastiveLearning,
        "coupled": CoupledLearning,
    }
    for kind, cls in estimators.items():
        register("estimator", kind, cls)
    for kind, cls in {
        "fixed_point": FixedPointRelaxation,
        "even_odd": EvenOddRelaxation,
        "anderson": AndersonRelaxation,
        "mixed_precision": MixedPrecisionRelaxation,
        "ode": ODERelaxation,
        "sde": SDERelaxation,
        "straggler": StragglerRelaxation,
    }.items():
        register("relaxation", kind, cls)
    for kind, cls in {
        "sigmoid": act.Sigmoid,
        "smooth_clip": act.SmoothClip,
        "silu": act.SiLU,
        "hard_sigmoid": act.HardSigmoid,
        "relu": act.ReLU,
        "clipped_relu": act.ClippedReLU,
    }.items():
        register("activation", kind, cls)
    for kind, cls in {
        "cross_entropy": costs.CrossEntropy,
        "squared_error": costs.SquaredError,
    }.items():
        register("cost", kind, cls)
    register("homeostasis", "jacobian", JacobianHomeostasis)
    for kind, fn in {"lu": implicit_lu, "gmres": implicit_gmres}.items():
        register("adjoint", kind, fn)
    for kind, fn in {"sgd": sgd, "momentum": momentum, "adam": adam, "adamw": adamw}.items():
        register("optimizer", kind, fn)
    for kind, fn in {
        "constant": constant,
        "cosine": cosine,
        "warmup_cosine": warmup_cosine,
    }.items():
        register("schedule", kind, fn)
    from .._data import DATASETS

    for name in DATASETS:
        register("data", name, functools.partial(load_dataset, name))


register_library()
