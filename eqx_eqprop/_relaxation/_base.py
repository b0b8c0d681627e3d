"""What every relaxation shares: the calling convention, complex states as real pairs,
per-step noise, and the statistics of a relaxed state."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Int, PRNGKeyArray, Real

from .._misc import (
    gaussian_like,
    is_complex_tree,
    merge_complex,
    real_dtype,
    split_complex,
    tree_all_finite,
    tree_max_abs,
)
from .._models import AbstractDynamics, State
from .._results import RESULTS


class RelaxationStats(eqx.Module):
    """Diagnostics of one relaxation (leading batch/phase axes added by `vmap`).

    - `steps`: solver steps taken (sweeps of the update map for discrete relaxations).
    - `residual`: `max |T(s) - s|` at the returned state.
    - `result`: a `RESULTS` code (`successful`, `max_steps_reached`, `diverged`, or the
      solver's own code, e.g. diffrax's `dt_min_reached`).
    """

    steps: Int[Array, "*batch"]
    residual: Real[Array, "*batch"]
    result: RESULTS


def relaxation_stats(dynamics: AbstractDynamics, s: State, steps, result) -> RelaxationStats:
    """Residual `max|T(s) - s|` of a relaxed state `s` (one sample), and its code:
    `diverged` when anything is non-finite, else the solver's `result`."""
    s = jax.lax.stop_gradient(s)
    t = jax.lax.stop_gradient(dynamics)(s)
    residual = tree_max_abs(jtu.tree_map(jnp.subtract, t, s))
    finite = tree_all_finite(s) & jnp.isfinite(residual)
    result = RESULTS.where(finite, result, RESULTS.diverged)
    return RelaxationStats(jnp.asarray(steps), residual.astype(real_dtype(s)), result)


class SweepFn(eqx.Module):
    """One application of a relaxation's iteration map, `fn(y, dynamics)` in optimistix's
    and diffrax's convention; with `split`, states and dynamics travel as real pairs."""

    relaxation: "AbstractRelaxation"
    split: bool = eqx.field(static=True, default=False)

    def __call__(self, y, dynamics):
        if self.split:
            out = self.relaxation.sweep(merge_complex(dynamics), merge_complex(y))
            return split_complex(out)
        return self.relaxation.sweep(dynamics, y)


class AbstractRelaxation(eqx.Module):
    """Finds the equilibrium `s* = T(s*)` of one sample's dynamics.

    `relax(dynamics, s0, key)` returns `(s*, RelaxationStats)`. Complex states (complex
    nudges) are handed to the solvers as real pairs `(Re s, Im s)`. The result is
    differentiable with respect to the arrays of `dynamics` (the model's parameters,
    the drive, the nudge) by the implicit function theorem; never through `s0`.
    Subclasses implement `_solve` on real states.
    """

    @abc.abstractmethod
    def _solve(
        self, fn, y0: State, dynamics: AbstractDynamics
    ) -> tuple[State, Int[Array, ""], RESULTS]:
        """Real states only: `fn(y, dynamics)` is one `sweep`. Returns (state, steps,
        result)."""

    @property
    def noisy(self) -> bool:
        """Whether the dynamics draw noise (then `relax` needs a `key`)."""
        return False

    def unconverged_advice(self) -> tuple[str, ...]:
        """What to change when this relaxation misses its tolerance in training: what
        the end-of-epoch warning suggests."""
        return (
            "give the few slow samples the sweeps they need without the batch waiting for "
            'them: relaxation = {kind = "straggler", relaxation = {...}, max_steps = 2000, '
            "slots = 16} (StragglerRelaxation), or raise the relaxations' max_steps (a "
            "looser rtol/atol silences this warning but can leave the gradient inexact; "
            "`python experiments/checkpoint_gradient.py RUN_DIR` measures how far it is "
            "from the true one)",
        )

    def relax(
        self, dynamics: AbstractDynamics, s0: State, key: PRNGKeyArray | None = None
    ) -> tuple[State, RelaxationStats]:
        """Relax `s0` under `dynamics`; returns `(s*, stats)`. `key` drives the noise
        of noisy dynamics and is ignored otherwise."""
        if not isinstance(dynamics, AbstractDynamics):
            raise TypeError(f"relax needs an AbstractDynamics, got {type(dynamics).__name__}.")
        if self.noisy:
            if key is None:
                raise ValueError(
                    f"{type(self).__name__} has noisy dynamics and needs a PRNG key: pass "
                    "key=jax.random.key(...) to gradient()."
                )
            s, steps, result = self._solve_noisy(dynamics, s0, key)
        elif is_complex_tree((s0, dynamics)):
            fn = SweepFn(self, split=True)
            y, steps, result = self._solve(fn, split_complex(s0), split_complex(dynamics))
            s = merge_complex(y)
        else:
            s, steps, result = self._solve(SweepFn(self), s0, dynamics)
        return s, relaxation_stats(dynamics, s, steps, result)

    def relax_batch(self, dynamics_fn, start: State, args, keys=None):
        """Relax a batch: sample `i` under `dynamics_fn(*args_i)` from `start_i` (leading
        axes of `start`, `args` and `keys`). By default `vmap(relax)`; a relaxation
        that treats the batch as a whole (`StragglerRelaxation`) overrides it."""

        def one(s0, a, k):
            return self.relax(dynamics_fn(*a), s0, k)

        return jax.vmap(one, (0, 0, None if keys is None else 0))(start, args, keys)

    def sweep(self, dynamics: AbstractDynamics, s: State, noise: State | None = None) -> State:
        """One application of the map the relaxation iterates (`T(s)`; even/odd
        relaxations update half the layers, then the other half)."""
        return dynamics(s, noise)

    def _solve_noisy(self, dynamics, s0, key):
        raise NotImplementedError(f"{type(self).__name__} has no noisy dynamics.")

    def step_noise(self, key: PRNGKeyArray, step, like: State) -> State | None:
        """The noise of discrete step `step` (inside the activation), or `None` for
        noise-free dynamics. For estimators that step the dynamics themselves
        (`OscillatingEP`); only discrete-time relaxations define it."""
        if self.noisy:
            raise ValueError(
                f"{type(self).__name__} has continuous-time noise, which a discrete-time "
                "estimator cannot step; use FixedPointRelaxation(noise=...) for noise "
                "inside the activation at every step."
            )
        return None


def discrete_noise(key: PRNGKeyArray, step, like: State, std) -> State:
    """Gaussian noise of std `std` for step `step`, state-shaped and real: independent
    across steps (`fold_in(key, step)`), layers and neurons."""
    return gaussian_like(jax.random.fold_in(key, step), like, std)
