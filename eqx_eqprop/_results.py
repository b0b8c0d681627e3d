"""Outcome codes. They extend diffrax's `RESULTS` (itself optimistix's and lineax's), so a
relaxation promotes its solver's own outcome (`RESULTS.promote`) instead of collapsing
it: a lineax breakdown, diffrax's `dt_min_reached` or optimistix's non-finite stop each
keep their name and message."""

import warnings

import diffrax
import jax.numpy as jnp

with warnings.catch_warnings():
    # `max_steps_reached` is diffrax's code; we give it a message that says what to do
    # in a relaxation (Equinox warns when a subclass rewords an inherited message)
    warnings.simplefilter("ignore")

    class RESULTS(diffrax.RESULTS):  # pyright: ignore[reportGeneralTypeIssues]
        """Outcome codes of a relaxation or a gradient estimate, as in optimistix.

        `info.result` of `gradient` is the most severe code over the batch and the
        phases; `gradient(..., throw=True)` raises with the message below when it is not
        `successful`. With `throw=False`, check it yourself:
        `info.result == RESULTS.successful`.
        """

        successful = ""
        max_steps_reached = (
            "A relaxation reached `max_steps` without meeting its tolerance. Raise "
            "`max_steps`, loosen `rtol`/`atol`, use an accelerated relaxation, or make "
            "the network more contractive (smaller weights). Per-sample residuals and "
            "codes are in `info.free_stats` (and `info.adjoint_stats` for recurrent "
            "backprop); pass `throw=False` to get the estimate anyway."
        )
        diverged = (
            "A relaxation produced non-finite states: a complex nudged phase diverged or "
            "the dynamics blew up. Lower |beta| (complex phases converge only in a region "
            "around beta = 0), or use smaller weights. See `info.free_stats.result` and "
            "`info.nudged_stats.result`."
        )
        nudged_phase_failed = (
            "A nudged phase did not converge or diverged. For complex nudges this usually "
            "means |beta| lies outside the region where the complex dynamics are stable "
            "(draw it with a stability map): lower beta. Otherwise raise the nudged "
            "relaxation's `max_steps`. Per-phase, per-sample codes and residuals are in "
            "`info.nudged_stats`, the nudges in `info.betas`."
        )
        inaccurate_estimate = (
            "The estimated aliasing error of the holomorphic EP gradient exceeds "
            "`error_tolerance`: the Fourier coefficients of the phase samples do not "
            "decay, so the circle |beta| probably reaches a singularity of the equilibrium "
            "as a function of beta (a near-critical network). Lower `beta` (or set "
            "`target_error` to let the estimator choose the radius), raise `num_phases`, "
            "or use an implicit-differentiation reference. The estimate is "
            "`info.error_estimate`; the coefficient norms are `info.fourier_norms`."
        )


# From least to most severe; codes not named here (a lineax breakdown, diffrax's
# dt_min_reached, ...) rank between `max_steps_reached` and `diverged`.
_ORDER = ("inaccurate_estimate", "nudged_phase_failed", "max_steps_reached")
_LAST = ("diverged",)


def _severity_order() -> list[RESULTS]:
    names = list(RESULTS._name_to_item)
    skip = {"successful", "event_occurred", *_ORDER, *_LAST}
    middle = [n for n in names if n not in skip]
    return [getattr(RESULTS, n) for n in (*_ORDER, *middle, *_LAST)]


def combine_results(*results: RESULTS) -> RESULTS:
    """The most severe code over any number of (batched) results, as a scalar."""
    out = RESULTS.successful
    for code in _severity_order():
        hit = jnp.any(jnp.stack([jnp.any(r == code) for r in results]))
        out = RESULTS.where(hit, code, out)
    return out
