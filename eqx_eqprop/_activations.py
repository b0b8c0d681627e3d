"""Activation functions `sigma` of the neurons.

Holomorphic ones (analytic in a neighbourhood of the real axis) are what make the
complex-nudge estimators of Laborieux & Zenke (2022) exact; the others are here for
comparison with real-valued EP and raise when they meet a complex state.
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Inexact

from ._checks import check_real


class AbstractActivation(eqx.Module):
    """Elementwise activation `sigma`. Subclasses set `holomorphic`."""

    holomorphic: ClassVar[bool]

    @abc.abstractmethod
    def __call__(self, z: Inexact[Array, "*shape"]) -> Inexact[Array, "*shape"]: ...


def _logistic(z):
    return jax.lax.logistic(z)


class Sigmoid(AbstractActivation):
    """`logistic(gain * (z - center))`, holomorphic.

    The defaults give `1 / (1 + exp(-4 z + 2))`, the activation of the MNIST MLP of
    Laborieux et al. (2021) and Laborieux & Zenke (2022). Its poles sit at
    `center + i pi (2k + 1) / gain`, a distance `pi / 4` from the real axis by default.
    """

    holomorphic: ClassVar[bool] = True
    gain: float = eqx.field(static=True, default=4.0)
    center: float = eqx.field(static=True, default=0.5)

    def __check_init__(self):
        check_real(self.gain, "gain", minimum=0.0, strict=True, owner="Sigmoid")
        check_real(self.center, "center", owner="Sigmoid")

    def __call__(self, z):
        return _logistic(self.gain * (z - self.center))


class SmoothClip(AbstractActivation):
    """Holomorphic clip to `[0, 1]` with a linear ramp of the given width:
    `(z / w) sig(a z) + (1 - z / w) sig(a (z - w))`, close to `clip(z / w, 0, 1)`.

    `width=1` is the holomorphic clip to [0, 1]; `width=2` the 0..2 variant used by the
    convolutional networks of Laborieux & Zenke (2022), which at `sharpness=1` equals
    `(silu(z) - silu(z - 2)) / 2`.
    """

    holomorphic: ClassVar[bool] = True
    width: float = eqx.field(static=True, default=1.0)
    sharpness: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        check_real(self.width, "width", minimum=0.0, strict=True, owner="SmoothClip")
        check_real(self.sharpness, "sharpness", minimum=0.0, strict=True, owner="SmoothClip")

    def __call__(self, z):
        a, w = self.sharpness, self.width
        return (z / w) * _logistic(a * z) + (1 - z / w) * _logistic(a * (z - w))


class SiLU(AbstractActivation):
    """`z * logistic(z)`, holomorphic."""

    holomorphic: ClassVar[bool] = True

    def __call__(self, z):
        return z * _logistic(z)


def _require_real(name: str, z):
    if jnp.iscomplexobj(z):
        raise TypeError(
            f"{name} is not holomorphic, so it cannot take the complex states of a "
            "complex nudge (HolomorphicEP and friends). Use a holomorphic activation "
            "such as Sigmoid() or SmoothClip(width=2.0) instead."
        )


class HardSigmoid(AbstractActivation):
    """`clip(z / 2, 0, 1)`. Not holomorphic: for real-valued EP only."""

    holomorphic: ClassVar[bool] = False

    def __call__(self, z):
        _require_real("HardSigmoid", z)
        return jnp.clip(z / 2, 0, 1)


class ReLU(AbstractActivation):
    """`max(z, 0)`. Not holomorphic: for real-valued EP only."""

    holomorphic: ClassVar[bool] = False

    def __call__(self, z):
        _require_real("ReLU", z)
        return jnp.maximum(z, 0)


class ClippedReLU(AbstractActivation):
    """`clip(z, 0, ceiling)`, ReLU6 by default: the clipped ReLU of the Hopfield-ResNets
    (Elayedam & Srinivasan 2025). Not holomorphic: for real-valued EP only."""

    holomorphic: ClassVar[bool] = False
    ceiling: float = eqx.field(static=True, default=6.0)

    def __check_init__(self):
        check_real(self.ceiling, "ceiling", minimum=0.0, strict=True, owner="ClippedReLU")

    def __call__(self, z):
        _require_real("ClippedReLU", z)
        return jnp.clip(z, 0, self.ceiling)
