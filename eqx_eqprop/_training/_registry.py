"""One registry from configuration names to the library's classes and builders.

A configuration section is a `kind` plus keyword arguments; `build(section, spec)`
looks the kind up here and calls it with the arguments, after checking them against
its signature (an argument it does not take is an error, never silently ignored).
Arguments that are themselves strategies (an activation, a pooling) are given as a
kind name or a table with a `kind`. TOML has no null: the string `"none"` stands for
`None`.
"""

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import lineax as lx
import optax
import optimistix as optx

from .. import _activations as act, _costs as costs
from .._data import load_dataset
from .._estimators import (
    BPTT,
    ClassicEP,
    GeneralizedHEP,
    HolomorphicEP,
    ImplicitDifferentiation,
    JacobianHomeostasis,
    OscillatingEP,
    RecurrentBackprop,
    SymmetricEP,
)
from .._layers import AvgPool, IdentityPool, MaxPool, SoftmaxPool
from .._models import EnergyConvNet, EnergyMLP, VectorFieldNet
from .._relaxation import (
    AndersonRelaxation,
    EvenOddRelaxation,
    FixedPointRelaxation,
    MixedPrecisionRelaxation,
    ODERelaxation,
    SDERelaxation,
)

REGISTRY: dict[str, dict[str, Callable]] = {}

# arguments whose values are strategies of another section
NESTED = {
    "activation": "activation",
    "pooling": "pooling",
    "cost": "cost",
    "low": "relaxation",
    "high": "relaxation",
    "adjoint": "adjoint",
    "homeostasis": "homeostasis",
    "reference": "estimator",
}


def register(section: str, kind: str, factory: Callable, *, overwrite: bool = False) -> None:
    """Make `factory` available as `kind` in configuration section `section`.

    Sections: `model` (a factory `(sample_shape, num_classes, *, key, **args) -> model`),
    `estimator`, `relaxation`, `activation`, `cost`, `pooling` (classes), `optimizer`
    (`(learning_rate, **args) -> optax.GradientTransformation`), `schedule`
    (`(lr, total_steps, **args) -> lr or optax schedule`), `data` (`(data_dir) -> Dataset`).
    """
    table = REGISTRY.setdefault(section, {})
    if kind in table and not overwrite and table[kind] is not factory:
        raise ValueError(f"{section} kind {kind!r} is already registered; pass overwrite=True.")
    table[kind] = factory


def kinds(section: str) -> tuple[str, ...]:
    """The registered kinds of a section."""
    if section not in REGISTRY:
        raise ValueError(f"unknown section {section!r}; valid: {', '.join(REGISTRY)}.")
    return tuple(REGISTRY[section])


def lookup(section: str, kind: str) -> Callable:
    table = REGISTRY.get(section)
    if table is None:
        raise ValueError(f"unknown section {section!r}; valid: {', '.join(REGISTRY)}.")
    if kind not in table:
        raise ValueError(f"unknown {section} {kind!r}; valid: {', '.join(table)}.")
    return table[kind]


def _none(value):
    return None if isinstance(value, str) and value.lower() in ("none", "null") else value


def parameters(factory: Callable) -> dict[str, inspect.Parameter]:
    """The keyword arguments a factory takes (for a class: its `__init__`, or its
    dataclass fields for an Equinox module)."""
    sig = inspect.signature(factory)
    return {
        name: p
        for name, p in sig.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def check_arguments(section: str, kind: str, args: Mapping[str, Any], reserved=()) -> None:
    """Every argument must be one the factory takes (and not one the caller supplies)."""
    params = parameters(lookup(section, kind))
    takes_any = any(
        p.kind == p.VAR_KEYWORD
        for p in inspect.signature(lookup(section, kind)).parameters.values()
    )
    valid = [n for n in params if n not in reserved]
    for name in args:
        if name in reserved or (name not in params and not takes_any):
            raise ValueError(
                f"{section} {kind!r} takes no argument {name!r}; valid: {', '.join(valid)}."
            )


def resolve(value, section: str):
    """A strategy given as a kind name or a `{kind = ..., ...}` table, built."""
    if isinstance(value, str):
        return build(section, {"kind": value})
    if isinstance(value, Mapping):
        return build(section, value)
    return value


def build(section: str, spec: Mapping[str, Any], **supplied):
    """Call the factory of `spec["kind"]` with the other entries of `spec` (nested
    strategies built, `"none"` read as `None`) and the `supplied` arguments."""
    if "kind" not in spec:
        raise ValueError(
            f"the {section} section needs a `kind`; valid: {', '.join(kinds(section))}."
        )
    kind = spec["kind"]
    args = {k: v for k, v in spec.items() if k != "kind"}
    check_arguments(section, kind, args, reserved=tuple(supplied))
    args = {k: _none(v) for k, v in args.items()}
    for name, nested in NESTED.items():
        if name in args and isinstance(args[name], list):  # one per layer
            args[name] = tuple(resolve(v, nested) for v in args[name])
        elif name in args and args[name] is not None:
            args[name] = resolve(args[name], nested)
    for name, value in args.items():
        if isinstance(value, list):
            args[name] = tuple(value)
    try:
        return lookup(section, kind)(**args, **supplied)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{section} {kind!r}: {e}") from e


# ---------------------------------------------------------------------- the library


def mlp(
    sample_shape,
    num_classes,
    *,
    key,
    hidden=(64,),
    activation=act.Sigmoid(),
    weight_scale=1.0,
    dtype="float32",
):
    """`EnergyMLP((prod(sample_shape), *hidden, num_classes))`: images are flattened."""
    features = math.prod(sample_shape)
    return EnergyMLP(
        (features, *hidden, num_classes),
        activation=activation,
        weight_scale=weight_scale,
        dtype=dtype,
        key=key,
    )


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
        dtype=dtype,
        key=key,
    )


def implicit_lu():
    """The implicit function theorem with a dense LU solve (exact; the Jacobian is
    materialised, so for small states)."""
    return optx.ImplicitAdjoint()


def implicit_gmres(rtol=1e-6, atol=1e-6, restart=40):
    """The implicit function theorem with GMRES (matrix-free: vector-Jacobian products
    only); for large states. On the MNIST MLP, 7x faster than LU at batch 128."""
    return optx.ImplicitAdjoint(lx.GMRES(rtol=rtol, atol=atol, restart=restart))


def vector_field(
    sample_shape,
    num_classes,
    *,
    key,
    hidden=(64,),
    graph="symmetric",
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
    if not isinstance(graph, str):
        graph = [tuple(edge) for edge in graph]
    hidden = [n if isinstance(n, int) else tuple(n) for n in hidden]
    maps = any(isinstance(n, tuple) for n in hidden)
    inputs = tuple(sample_shape) if maps else math.prod(sample_shape)
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


def _register_library():
    for kind, factory in {"mlp": mlp, "conv": conv, "vector_field": vector_field}.items():
        register("model", kind, factory)
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
        "oscillating": OscillatingEP,
        "implicit": ImplicitDifferentiation,
        "bptt": BPTT,
        "rbp": RecurrentBackprop,
        "generalized_hep": GeneralizedHEP,
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
    }.items():
        register("relaxation", kind, cls)
    for kind, cls in {
        "sigmoid": act.Sigmoid,
        "smooth_clip": act.SmoothClip,
        "silu": act.SiLU,
        "hard_sigmoid": act.HardSigmoid,
        "relu": act.ReLU,
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


_register_library()


def model_key(seed: int):
    """The key a run's model is initialised from."""
    return jax.random.fold_in(jax.random.key(seed), 0)
