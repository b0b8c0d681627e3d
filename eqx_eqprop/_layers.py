"""Layers: the couplings between the states of a network, as Equinox modules.

Each says whether it is holomorphic (`holomorphic`), i.e. whether it may take the
complex states of a complex nudge and stay analytic in them (no `abs`, `conj`, `max`).
Parameters are real; states may be complex, and a complex state is multiplied as two
real products rather than by promoting the weights (half the work).
"""

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Inexact, PRNGKeyArray


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
