"""Layers: the couplings between the states of a network, as Equinox modules.

Each says whether it is holomorphic (`holomorphic`), i.e. whether it may take the
complex states of a complex nudge and stay analytic in them (no `abs`, `conj`, `max`).
Parameters are real; states may be complex, and a complex state is multiplied as two
real products rather than by promoting the weights (half the work).
"""

import abc
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Inexact, PRNGKeyArray

from ._checks import check_integer, check_real


def real_matmul(w: Float[Array, "out inp"], v: Inexact[Array, " inp"]) -> Inexact[Array, " out"]:
    """`w @ v` for a real matrix and a real or complex vector."""
    if jnp.iscomplexobj(v):
        return jax.lax.complex(w @ v.real, w @ v.imag)
    return w @ v


def truncated_normal_init(key, shape, fan_in: int, scale: float, dtype):
    """Truncated normal (at 2 std) with std `scale / sqrt(fan_in)`."""
    std = scale / math.sqrt(fan_in)
    return std * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


class Dense(eqx.Module):
    """`v -> W v + b`, `W` of shape `(out_features, in_features)`.

    - `in_features`, `out_features`: sizes.
    - `use_bias`: whether there is a `b` (zero at initialisation).
    - `weight_scale`: `W` is truncated normal with std `weight_scale / sqrt(in_features)`.
    - `dtype`: real floating dtype of the parameters.
    - `key`: a PRNG key.
    """

    weight: Float[Array, "out inp"]
    bias: Float[Array, " out"] | None
    holomorphic: ClassVar[bool] = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        weight_scale: float = 1.0,
        dtype=jnp.float32,
        key: PRNGKeyArray,
    ):
        check_integer(in_features, "in_features", owner="Dense")
        check_integer(out_features, "out_features", owner="Dense")
        self.weight = truncated_normal_init(
            key, (out_features, in_features), in_features, weight_scale, dtype
        )
        self.bias = jnp.zeros(out_features, dtype) if use_bias else None

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def __call__(self, v: Inexact[Array, " inp"]) -> Inexact[Array, " out"]:
        out = real_matmul(self.weight, v)
        return out if self.bias is None else out + self.bias

    def linear(self, v: Inexact[Array, " inp"]) -> Inexact[Array, " out"]:
        """`W v` without the bias."""
        return real_matmul(self.weight, v)


def _conv(v, w, padding):
    """Samples `(n, H, W, C_in)` convolved with `w` `(k, k, C_in, C_out)`, NHWC, stride 1.

    On the CPU as one matrix product of the `k * k` shifted views of the input (its
    patches) with the kernel: XLA's CPU convolution inside the `while` loop of a
    relaxation runs 2x slower than this (measured: a 3x3, 32 -> 64 channel layer on
    14x14 at batch 64, forward and transposed, 31 against 16 ms per sweep on one core).
    Elsewhere `lax.conv_general_dilated`, which cuDNN and TPUs implement natively.
    """
    if _CONV_METHOD == "patches" or (_CONV_METHOD == "auto" and jax.default_backend() == "cpu"):
        return _conv_patches(v, w, padding)
    return jax.lax.conv_general_dilated(
        v, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


_CONV_METHOD = "auto"  # "auto", "patches" or "lax"; tests and benchmarks switch it


def _conv_patches(v, w, padding):
    k = w.shape[0]
    if padding == "SAME":
        low = (k - 1) // 2
        pads = [(0, 0)] * (v.ndim - 3) + [(low, k - 1 - low), (low, k - 1 - low), (0, 0)]
        v = jnp.pad(v, pads)
    height, width = v.shape[-3] - k + 1, v.shape[-2] - k + 1
    patches = jnp.concatenate(
        [v[..., i : i + height, j : j + width, :] for i in range(k) for j in range(k)], axis=-1
    )
    return patches @ w.reshape(k * k * w.shape[2], w.shape[3])


class Conv2d(eqx.Module):
    """`v -> conv(v, W) + b` on one sample `(height, width, channels)` (NHWC, stride 1).

    - `in_channels`, `out_channels`, `kernel_size`: sizes (square kernels).
    - `padding`: `"SAME"` or `"VALID"`.
    - `use_bias`: whether there is a bias (zero at initialisation).
    - `weight_scale`: `W` is truncated normal with std `weight_scale / sqrt(k * k * in)`.

    A complex input is convolved as its real and imaginary parts in one call (a batch
    of two), not by promoting the real kernel.
    """

    weight: Float[Array, "k k inp out"]
    bias: Float[Array, " out"] | None
    padding: str = eqx.field(static=True)
    holomorphic: ClassVar[bool] = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        padding: str = "SAME",
        use_bias: bool = True,
        weight_scale: float = 1.0,
        dtype=jnp.float32,
        key: PRNGKeyArray,
    ):
        if padding not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}.")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            check_integer(value, name, owner="Conv2d")
        check_integer(kernel_size, "kernel_size", owner="Conv2d")
        fan_in = kernel_size * kernel_size * in_channels
        shape = (kernel_size, kernel_size, in_channels, out_channels)
        self.weight = truncated_normal_init(key, shape, fan_in, weight_scale, dtype)
        self.bias = jnp.zeros(out_channels, dtype) if use_bias else None
        self.padding = padding

    @property
    def kernel_size(self) -> int:
        return self.weight.shape[0]

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        if self.padding == "SAME":
            return height, width
        k = self.kernel_size
        return height - k + 1, width - k + 1

    def linear(self, v: Inexact[Array, "h w c"]) -> Inexact[Array, "h2 w2 out"]:
        """The convolution without the bias."""
        if jnp.iscomplexobj(v):
            out = _conv(jnp.stack([v.real, v.imag]), self.weight, self.padding)
            return jax.lax.complex(out[0], out[1])
        return _conv(v[None], self.weight, self.padding)[0]

    def __call__(self, v):
        out = self.linear(v)
        return out if self.bias is None else out + self.bias[None, None, :]


# ---------------------------------------------------------------------------- pooling


def _windows(v, window: int):
    """`(H, W, C)` -> `(H // k, W // k, C, k * k)`: the non-overlapping k x k windows
    (a trailing row or column that does not fill a window is dropped)."""
    h, w, c = v.shape
    hh, ww = h // window, w // window
    v = v[: hh * window, : ww * window]
    v = v.reshape(hh, window, ww, window, c).transpose(0, 2, 4, 1, 3)
    return v.reshape(hh, ww, c, window * window)


class AbstractPool(eqx.Module):
    """Pooling over non-overlapping `window x window` windows (stride = window) of a
    `(height, width, channels)` state. Subclasses say whether they are holomorphic."""

    window: eqx.AbstractVar[int]
    holomorphic: ClassVar[bool]

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        return height // self.window, width // self.window

    def __check_init__(self):
        check_integer(self.window, "window", owner=type(self).__name__)

    @abc.abstractmethod
    def __call__(self, v: Inexact[Array, "height width channels"]) -> Inexact[Array, "h w c"]:
        """The pooled state `(height / window, width / window, channels)`."""


class IdentityPool(AbstractPool):
    """No pooling."""

    window: int = eqx.field(static=True, default=1, init=False)
    holomorphic: ClassVar[bool] = True

    def __call__(self, v):
        return v


class AvgPool(AbstractPool):
    """Mean over each window (linear, so holomorphic)."""

    window: int = eqx.field(static=True, default=2)
    holomorphic: ClassVar[bool] = True

    def __call__(self, v):
        return jnp.mean(_windows(v, self.window), axis=-1)


class MaxPool(AbstractPool):
    """Maximum over each window. Not holomorphic: with complex nudges, use SoftmaxPool
    (or real phases only: ClassicEP, SymmetricEP, HolomorphicEP with num_phases <= 2).

    - `window`: the window's side (stride = window).
    - `ties`: where the feedback of a window whose maximum is tied goes (the derivative
      of the pooling, which the energy's update and the learning signal use). `"first"`
      (default): all of it to the first maximal element in row-major window order, as
      the papers' code does (Haiku's `max_pool`, XLA's select-and-scatter). `"split"`:
      shared evenly among the tied elements (the derivative of `jnp.max`). On flat image
      regions ties are common (1059 of 9216 layer-2 windows of a small MNIST conv net
      after one step), and the two rules reach different equilibria.
    """

    window: int = eqx.field(static=True, default=2)
    ties: str = eqx.field(static=True, default="first")
    holomorphic: ClassVar[bool] = False
    convergence_advice: ClassVar[str | None] = (
        'use average or softmax pooling (model.pooling = "avg" or "softmax"): max pooling '
        "makes the update discontinuous, so a relaxation can cycle between window maxima "
        "and never reach a tolerance"
    )

    def __check_init__(self):
        super().__check_init__()
        if self.ties not in ("first", "split"):
            raise ValueError(f'MaxPool: ties must be "first" or "split", got {self.ties!r}.')

    def __call__(self, v):
        if jnp.iscomplexobj(v):
            raise TypeError(
                "MaxPool is not holomorphic, so it cannot take the complex states of a "
                "complex nudge. Use SoftmaxPool() instead, or real phases only."
            )
        windows = _windows(v, self.window)
        if self.ties == "split":
            return jnp.max(windows, axis=-1)
        first = jax.lax.stop_gradient(jnp.argmax(windows, axis=-1))
        return jnp.take_along_axis(windows, first[..., None], axis=-1)[..., 0]


class SoftmaxPool(AbstractPool):
    """The holomorphic softmax pooling of Laborieux & Zenke (2022):
    `P(v) = sum_i v_i exp(v_i / T) / sum_i exp(v_i / T)` over each window; `T -> 0` gives
    max pooling, `T -> inf` average pooling. The window maximum (of the real part) is
    subtracted under `stop_gradient`, which changes nothing but the overflow."""

    temperature: float = eqx.field(static=True, default=1.0)
    window: int = eqx.field(static=True, default=2)
    holomorphic: ClassVar[bool] = True

    def __check_init__(self):
        super().__check_init__()
        check_real(self.temperature, "temperature", minimum=0.0, strict=True, owner="SoftmaxPool")

    def __call__(self, v):
        w = _windows(v, self.window) / self.temperature
        shift = jax.lax.stop_gradient(jnp.max(jnp.real(w), axis=-1, keepdims=True))
        e = jnp.exp(w - shift)
        return self.temperature * jnp.sum(w * e, axis=-1) / jnp.sum(e, axis=-1)
