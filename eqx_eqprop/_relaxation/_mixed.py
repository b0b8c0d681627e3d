"""Mixed precision: most of a relaxation in a 16-bit float, the end in the model's dtype."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._misc import is_complex_tree
from ._base import AbstractRelaxation, relaxation_stats
from ._fixed_point import EvenOddRelaxation

_LOW = {"bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _cast(tree, dtype):
    def cast(v):
        if eqx.is_inexact_array(v) and not jnp.iscomplexobj(v):
            return v.astype(dtype)
        return v

    return jtu.tree_map(cast, tree)


class MixedPrecisionRelaxation(AbstractRelaxation):
    """Relax in `dtype` (bfloat16 or float16) with `low`, then polish in the model's own
    dtype with `high`, starting from the low-precision state (Scellier et al. 2023 train
    in 16 bits). The polish removes the 16-bit rounding from the equilibrium, so the
    learning signal and the nudged phases, which should relax in full precision, see a
    full-precision free state; gradients (the implicit adjoint) go through the polish
    only. (With N >= 2 phases the free phase's own error cancels out of the hEP estimate,
    but one-sided EP and the loss see it.) Real states only: complex nudges (hEP's
    complex phases) have no 16-bit type, so use it as the free relaxation. Pays off
    where 16-bit arithmetic is fast (GPUs, TPUs); a CPU emulates it.

    - `low`: the relaxation run in `dtype` (default 60 even/odd sweeps, tolerance 1e-2).
    - `high`: the polish (default even/odd to tolerance 1e-5 within 100 sweeps).
    - `dtype`: `"bfloat16"` or `"float16"`.

    `steps` counts the sweeps of both.
    """

    low: AbstractRelaxation = EvenOddRelaxation(max_steps=60, rtol=1e-2, atol=1e-2)
    high: AbstractRelaxation = EvenOddRelaxation(max_steps=100, rtol=1e-5, atol=1e-5)
    dtype: str = eqx.field(static=True, default="bfloat16")

    def __check_init__(self):
        for name in ("low", "high"):
            if not isinstance(getattr(self, name), AbstractRelaxation):
                raise TypeError(
                    f"MixedPrecisionRelaxation: {name} must be a relaxation, got "
                    f"{getattr(self, name)!r}."
                )
        if self.dtype not in _LOW:
            raise ValueError(f"dtype must be one of {', '.join(_LOW)}, got {self.dtype!r}.")
        if self.low.noisy or self.high.noisy:
            raise ValueError("MixedPrecisionRelaxation takes noise-free relaxations.")

    def _solve(self, fn, y0, dynamics):  # pragma: no cover - relax is overridden
        raise NotImplementedError

    def relax(self, dynamics, s0, key=None):
        if is_complex_tree((s0, dynamics)):
            raise ValueError(
                "MixedPrecisionRelaxation relaxes real states only (there is no 16-bit "
                "complex type): use it for the free phase, e.g. gradient(..., relaxation="
                "MixedPrecisionRelaxation(), nudged_relaxation=EvenOddRelaxation())."
            )
        low = _LOW[self.dtype]
        s_low, low_stats = self.low.relax(
            jax.lax.stop_gradient(_cast(dynamics, low)), _cast(s0, low)
        )
        start = jtu.tree_map(lambda a, b: a.astype(b.dtype), jax.lax.stop_gradient(s_low), s0)
        s, high_stats = self.high.relax(dynamics, start)
        steps = low_stats.steps + high_stats.steps
        return s, relaxation_stats(dynamics, s, steps, high_stats.result)
