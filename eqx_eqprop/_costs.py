"""Readout costs `C(logits, label)` for one sample, holomorphic in the logits."""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Inexact, Int, Scalar


class AbstractCost(eqx.Module):
    """A per-sample cost of the readout `logits` (shape `(classes,)`) and an integer
    `label`. Holomorphic costs accept complex logits."""

    holomorphic: ClassVar[bool]

    @abc.abstractmethod
    def __call__(
        self, logits: Inexact[Array, " classes"], label: Int[Array, ""]
    ) -> Inexact[Scalar, ""]: ...


class CrossEntropy(AbstractCost):
    """`-log softmax(logits)[label]`, through a log-sum-exp that stays holomorphic
    (the shift by the real maximum is held constant under differentiation)."""

    holomorphic: ClassVar[bool] = True

    def __call__(self, logits, label):
        shift = jax.lax.stop_gradient(jnp.max(jnp.real(logits)))
        log_norm = shift + jnp.log(jnp.sum(jnp.exp(logits - shift)))
        # a one-hot product, not logits[label]: its derivative is no scatter under vmap
        target = jax.nn.one_hot(label, logits.shape[-1], dtype=logits.real.dtype)
        return log_norm - jnp.sum(target * logits)


class SquaredError(AbstractCost):
    """`0.5 * sum_k (logits_k - onehot(label)_k)^2` (no conjugation: holomorphic)."""

    holomorphic: ClassVar[bool] = True

    def __call__(self, logits, label):
        target = jax.nn.one_hot(label, logits.shape[-1], dtype=logits.real.dtype)
        return 0.5 * jnp.sum((logits - target) ** 2)
