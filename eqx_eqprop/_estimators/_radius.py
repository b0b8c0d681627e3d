"""How a phase estimator chooses its radius |beta| at each call: a strategy with its own
state across calls, in the pattern of diffrax's step-size controllers (`init` makes the
state, `choose` samples the phases and returns the next state)."""

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._checks import check_integer, check_real
from .._results import RESULTS


def diverged(samples) -> Array:
    """A nudged phase blew up (non-finite states): the circle left the region where the
    complex dynamics converge. (A phase that ran out of steps is not the radius's fault.)"""
    return jnp.any(samples.stats.result == RESULTS.diverged)


def check_radius_settings(
    target_error, max_retries, min_radius_fraction, owner: str, optional: bool = False
) -> None:
    """The settings of an adaptive radius (`target_error` may be `None` when
    `optional`: a constant radius), each named in the error with its `owner`."""
    check_real(
        target_error, "target_error", minimum=0.0, strict=True, optional=optional, owner=owner
    )
    if target_error is not None and not target_error < 1:
        raise ValueError(f"{owner}: target_error must be in (0, 1), got {target_error!r}.")
    check_integer(max_retries, "max_retries", minimum=0, owner=owner)
    check_real(
        min_radius_fraction,
        "min_radius_fraction",
        minimum=0.0,
        maximum=1.0,
        strict=True,
        owner=owner,
    )


class AbstractRadius(eqx.Module):
    """The rule by which a phase estimator (`ClassicEP`, `SymmetricEP`, `HolomorphicEP`,
    `GeneralizedHEP`) chooses the radius of its nudges at each call.

    `sample(radius)` relaxes the phases at `radius` and returns their samples (with the
    aliasing estimate `.error` and the phases' `.stats`); `choose` returns `(samples,
    radius, retries, next state)`.
    """

    adaptive: ClassVar[bool] = False

    def init(self, beta: Array) -> Any:
        """The state before the first call (`beta`: the estimator's nudge)."""
        del beta
        return None

    @abc.abstractmethod
    def choose(
        self, sample: Callable[[Array], Any], beta: Array, state: Any, num_phases: int
    ) -> tuple[Any, Array, Array, Any]: ...


class ConstantRadius(AbstractRadius):
    """The estimator's `beta`, every call."""

    def choose(self, sample, beta, state, num_phases):
        del num_phases
        return sample(beta), jnp.abs(beta), jnp.array(0, jnp.int32), state


class AdaptiveRadius(AbstractRadius):
    """A radius held under an aliasing-error target, `|beta|` the largest.

    - `target_error`: the relative aliasing estimate to stay under, in (0, 1).
    - `max_retries`: smaller radii tried within one call.
    - `min_radius_fraction`: the radius never goes below this fraction of `|beta|`.

    The state is the radius `r` (`init`: `|beta|`). A call samples the phases at `r`;
    while the estimate exceeds the target or a complex phase diverged, it retries at
    `r * 0.9 (target / error)^(1/N)` clipped to [0.2, 0.9] (0.5 after a diverged phase),
    at most `max_retries` times inside the same compiled call, like a rejected step of an
    adaptive ODE solver, and keeps the attempt with the smallest estimate. The next call
    starts from `r * 0.9 (target / error)^(1/N)` clipped to [0.5, 2], at most `|beta|`.
    It needs the aliasing estimate (N >= 2) and noise-free dynamics.
    """

    target_error: float = eqx.field(static=True)
    max_retries: int = eqx.field(static=True, default=3)
    min_radius_fraction: float = eqx.field(static=True, default=0.01)
    adaptive: ClassVar[bool] = True

    def __check_init__(self):
        check_radius_settings(
            self.target_error, self.max_retries, self.min_radius_fraction, "AdaptiveRadius"
        )

    def init(self, beta):
        return jnp.abs(beta)

    def choose(self, sample, beta, state, num_phases):
        largest = jnp.abs(beta)
        floor = self.min_radius_fraction * largest
        radius = jnp.clip(jnp.asarray(state, beta.dtype), floor, largest)
        samples, radius, retries = self._retry(sample, radius, floor, num_phases)
        grow = self._factor(samples, num_phases, grow=True)
        return samples, radius, retries, jnp.clip(radius * grow, floor, largest)

    def _factor(self, samples, num_phases: int, grow: bool):
        """The radius change the estimate asks for: the aliasing error scales like
        radius^N, so `0.9 (target / error)^(1/N)`, within [0.2, 0.9] to shrink after a
        rejected attempt (0.5 when a complex phase diverged) and [0.5, 2] between calls
        (the safety factor 0.9 keeps the next radius a little inside the target, so that
        few calls retry)."""
        error = jnp.maximum(samples.error, jnp.finfo(samples.error.dtype).tiny)
        factor = 0.9 * (self.target_error / error) ** (1.0 / num_phases)
        factor = jnp.where(diverged(samples) | ~jnp.isfinite(factor), 0.5, factor)
        return jnp.clip(factor, 0.5, 2.0) if grow else jnp.clip(factor, 0.2, 0.9)

    def _retry(self, sample, radius, floor, num_phases):
        """While the estimate exceeds the target (or a complex phase diverged), retry at
        a smaller radius, at most `max_retries` times, never below `floor`. The best
        attempt is kept: the estimate need not fall monotonically with the radius (it
        can rise while the circle still encloses a singularity, and it rises again once
        the relaxations' tolerance dominates it, about tolerance / radius)."""

        def bad(samples):
            return diverged(samples) | ~(samples.error <= self.target_error)

        def better(new, old):
            return ~diverged(new) & (diverged(old) | (new.error < old.error))

        def cond(carry):
            radius, _, best, _, retries = carry
            return bad(best) & (retries < self.max_retries) & (radius > floor)

        def body(carry):
            radius, samples, best, best_radius, retries = carry
            shrink = self._factor(samples, num_phases, grow=False)
            radius = jnp.maximum(radius * shrink, floor)
            samples = sample(radius)
            keep = better(samples, best)
            best = jax.tree.map(lambda a, b: jnp.where(keep, a, b), samples, best)
            best_radius = jnp.where(keep, radius, best_radius)
            return radius, samples, best, best_radius, retries + 1

        first = sample(radius)
        init = (radius, first, first, radius, jnp.array(0, jnp.int32))
        _, _, best, best_radius, retries = jax.lax.while_loop(cond, body, init)
        return best, best_radius, retries
