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

    def target(self, label: Int[Array, ""], num_classes: int, dtype) -> Array:
        """The readout at which the cost of `label` is smallest: what rules that clamp
        the outputs (`ContrastiveLearning`, `CoupledLearning`) clamp them to. Costs
        without a finite minimiser (`CrossEntropy`) have none and raise."""
        del label, num_classes, dtype
        raise NotImplementedError(f"{type(self).__name__} has no finite minimiser.")

    @classmethod
    def has_target(cls) -> bool:
        """Whether `target` is defined (the cost has a finite minimiser)."""
        return cls.target is not AbstractCost.target


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

    def target(self, label, num_classes, dtype):
        """The one-hot vector of `label`."""
        return jax.nn.one_hot(label, num_classes, dtype=dtype)
