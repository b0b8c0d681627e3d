"""Relaxing a batch: the free phase and the nudged phases, vmapped over samples."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray, Scalar

from ._costs import AbstractCost
from ._misc import sample_keys
from ._models import AbstractModel, ClampedDynamics, Dynamics, Nudge, State, clamp
from ._relaxation import AbstractRelaxation, RelaxationStats


def free_phase(
    model: AbstractModel,
    x: Float[Array, "batch ..."],
    relaxation: AbstractRelaxation,
    key: PRNGKeyArray | None = None,
) -> tuple[State, RelaxationStats]:
    """Relax every sample of the batch at `beta = 0` from `model.init_state()`; returns
    the states `(batch, ...)` and their stats `(batch,)`. With noisy dynamics each
    sample draws from its own key (stream 0 of `key`)."""

    def dynamics(xi):
        return Dynamics(model, model.drive(xi))

    keys = sample_keys(key, 0, x.shape[0])
    start = jax.vmap(lambda _: model.init_state())(x)
    return relaxation.relax_batch(dynamics, start, (x,), keys)


def nudged_relax(
    model: AbstractModel,
    drives,
    start: State,
    y: Int[Array, " batch"],
    beta,
    cost: AbstractCost,
    relaxation: AbstractRelaxation,
    key: PRNGKeyArray | None = None,
    stream=1,
) -> tuple[State, RelaxationStats]:
    """Relax every sample at the nudge `beta` (real or complex scalar) from `start`,
    given the drives `vmap(model.drive)(x)` computed once. Noise comes from stream
    `stream` of `key` (one stream per phase), a key per sample."""

    def dynamics(di, yi):
        return Dynamics(model, di, Nudge(beta, yi, cost))

    keys = None if key is None else jax.random.split(jax.random.fold_in(key, stream), y.shape[0])
    return relaxation.relax_batch(dynamics, start, (drives, y), keys)


def mean_cost(model: AbstractModel, s: State, y, cost: AbstractCost) -> Scalar:
    """Mean over the batch of `C(readout(s), y)`."""
    return jnp.mean(jax.vmap(lambda si, yi: cost(model.readout(si), yi))(s, y))


def check_inputs(model: AbstractModel, x, y, *, runtime: bool = True) -> tuple[Array, Array]:
    """Shape and dtype checks at trace time; with `runtime`, also label range and
    finiteness at run time (`eqx.error_if`). Returns `x` in the model's dtype and `y`."""
    if not isinstance(model, AbstractModel):
        raise TypeError(f"model must be an AbstractModel, got {type(model).__name__}.")
    x, y = jnp.asarray(x), jnp.asarray(y)
    expected = ("batch", *model.input_shape)
    if x.ndim != len(expected) or x.shape[1:] != model.input_shape:
        hint = "Flatten images for an MLP, and add a batch axis for a single sample."
        if x.ndim == 4 and len(model.input_shape) == 3:
            h, w, c = model.input_shape
            if x.shape[1:] == (c, h, w):
                hint = (
                    "These look like NCHW (channels-first) images, but the model takes "
                    "NHWC (channels-last, like TFDS): transpose them with "
                    "x.transpose(0, 2, 3, 1)."
                )
        raise ValueError(f"x must have shape {expected} for this model, got {x.shape}. {hint}")
    if x.shape[0] == 0:
        raise ValueError("x holds an empty batch.")
    if jnp.iscomplexobj(x):
        raise TypeError("x must be real; only the states become complex under a nudge.")
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"y must hold one integer label per sample, shape ({x.shape[0]},), got shape {y.shape}."
        )
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}.")
    x = x.astype(model.dtype)
    if runtime:
        x = eqx.error_if(
            x, jnp.any(~jnp.isfinite(x)), "x contains NaN or inf values; clean the input data."
        )
        n = model.num_classes
        y = eqx.error_if(
            y,
            jnp.any((y < 0) | (y >= n)),
            f"labels y must lie in [0, {n}) for a model with {n} classes.",
        )
    return x, y


def clamped_relax(
    model: AbstractModel,
    drives,
    start: State,
    outputs: Float[Array, "batch classes"],
    relaxation: AbstractRelaxation,
    key: PRNGKeyArray | None = None,
    stream=1,
) -> tuple[State, RelaxationStats]:
    """Relax every sample with its output units (`model.output_layer`) held at
    `outputs`, from `start` with the outputs set (`ClampedDynamics`), given the drives
    `vmap(model.drive)(x)`. Noise comes from stream `stream` of `key`."""
    layer = model.output_layer
    if layer is None:
        raise ValueError(f"{type(model).__name__} has no output units in its state to clamp.")
    start = clamp(start, layer, outputs.astype(start[layer].dtype))

    def dynamics(di, oi):
        return ClampedDynamics(model, di, oi)

    keys = (
        None if key is None else jax.random.split(jax.random.fold_in(key, stream), outputs.shape[0])
    )
    return relaxation.relax_batch(dynamics, start, (drives, outputs), keys)
