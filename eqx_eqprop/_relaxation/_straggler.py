"""The few slow samples of a batch get the sweeps they need, without the batch waiting."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._checks import check_integer
from .._results import RESULTS
from ._base import AbstractRelaxation, RelaxationStats


def _as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


class StragglerRelaxation(AbstractRelaxation):
    """`relaxation` with a budget sized for the typical sample, and further budgets
    that only the samples that did not meet their tolerance use.

    Under `vmap` a batch relaxes until its slowest sample is done: a budget large enough
    for the rare near-critical sample (a few per thousand, hundreds of sweeps) makes
    every batch pay for it, and a budget sized for the median leaves those samples
    unconverged. Here the batch relaxes with `relaxation`; then the (at most) `slots`
    samples that stopped at its budget (`max_steps_reached`), the worst first, continue
    from where they stopped, as a batch of `slots`, with up to `max_steps` more steps,
    and are written back. A pass over `slots` samples costs about `slots / batch` of a
    batch sweep per sweep (54 us against 478 us for 16 of 256 samples of the MNIST MLP
    on a 2-core CPU). Samples beyond `slots` that did not converge keep their result
    code: raise `slots`.

    - `relaxation`: the relaxation of the batch (discrete, tolerance-based, noise-free).
    - `max_steps`: the further budget, or one per pass (e.g. `(50, 2000)`).
    - `slots`: the samples a pass takes, or one count per pass (e.g. `(64, 8)`: up to
      64 samples continue for 50 steps, then the 8 worst still unconverged for 2000).
      Under the phase estimators each phase has its own slots.

    Each sample reaches the state `relaxation` reaches with its budget plus those of
    the passes it took part in, in as many steps (`stats.steps` counts all of them).
    A single sample (`relax`) continues in place. Gradients go through the implicit
    adjoint of the pass that produced each sample.
    """

    relaxation: AbstractRelaxation
    max_steps: int | tuple[int, ...] = eqx.field(static=True, default=2000)
    slots: int | tuple[int, ...] = eqx.field(static=True, default=8)

    def __check_init__(self):
        name = "StragglerRelaxation"
        if not isinstance(self.relaxation, AbstractRelaxation):
            raise TypeError(f"{name}: relaxation must be a relaxation, got {self.relaxation!r}.")
        if self.relaxation.noisy:
            raise ValueError(f"{name} continues relaxations to a tolerance: give a noise-free one.")
        if not hasattr(self.relaxation, "max_steps") or not hasattr(self.relaxation, "rtol"):
            raise TypeError(
                f"{name}: the relaxation must have a max_steps budget and a tolerance, got "
                f"{type(self.relaxation).__name__}."
            )
        if getattr(self.relaxation, "rtol") is None:
            raise ValueError(
                f"{name}: the relaxation runs a fixed number of steps (rtol = atol = None), "
                "so no sample is ever unconverged; give it a tolerance."
            )
        budgets, slots = _as_tuple(self.max_steps), _as_tuple(self.slots)
        if len(budgets) != len(slots):
            raise ValueError(
                f"{name}: give one max_steps per pass and one slots count per pass, got "
                f"{len(budgets)} and {len(slots)}."
            )
        for i, (budget, count) in enumerate(zip(budgets, slots)):
            where = f"[{i}]" if len(budgets) > 1 else ""
            check_integer(budget, f"max_steps{where}", owner=name)
            check_integer(count, f"slots{where}", owner=name)

    @property
    def passes(self) -> tuple[tuple[AbstractRelaxation, int], ...]:
        """`(relaxation with the pass's budget, slots)` for each further pass."""
        return tuple(
            (dataclasses.replace(self.relaxation, max_steps=budget), count)
            for budget, count in zip(_as_tuple(self.max_steps), _as_tuple(self.slots))
        )

    def _solve(self, fn, y0, dynamics):  # pragma: no cover - relax is overridden
        raise NotImplementedError

    def relax(self, dynamics, s0, key=None):
        s, stats = self.relaxation.relax(dynamics, s0, key)
        for relaxation, _ in self.passes:
            again = stats.result == RESULTS.max_steps_reached
            s2, stats2 = relaxation.relax(dynamics, s, key)
            s, stats = _choose(again, s2, stats2, s, stats)
        return s, stats

    def relax_batch(self, dynamics_fn, start, args, keys=None):
        s, stats = self.relaxation.relax_batch(dynamics_fn, start, args, keys)
        batch = stats.steps.shape[0]
        for relaxation, count in self.passes:
            ran_out = stats.result == RESULTS.max_steps_reached
            # the samples that ran out of steps, the worst first (then any others)
            score = jnp.where(ran_out, stats.residual, -jnp.inf)
            _, idx = jax.lax.top_k(score, min(count, batch))

            def take(tree, idx=idx):
                return jtu.tree_map(lambda v: v[idx], tree)

            sub_keys = None if keys is None else keys[idx]
            s2, stats2 = relaxation.relax_batch(dynamics_fn, take(s), take(args), sub_keys)
            sub_s, sub_stats = _choose(ran_out[idx], s2, stats2, take(s), take(stats))
            s = jtu.tree_map(lambda v, w, idx=idx: v.at[idx].set(w), s, sub_s)
            stats = jtu.tree_map(lambda v, w, idx=idx: v.at[idx].set(w), stats, sub_stats)
        return s, stats


def _choose(again, s2, stats2, s, stats):
    """Per sample: the continued relaxation (its steps added to the earlier ones) where
    `again`, else the earlier one."""

    def pick(a, b):
        return jnp.where(jnp.reshape(again, again.shape + (1,) * (a.ndim - again.ndim)), a, b)

    where = jax.vmap(RESULTS.where) if jnp.ndim(again) else RESULTS.where
    merged = RelaxationStats(
        steps=jnp.where(again, stats2.steps + stats.steps, stats.steps),
        residual=jnp.where(again, stats2.residual, stats.residual),
        result=where(again, stats2.result, stats.result),
    )
    return jtu.tree_map(pick, s2, s), merged
