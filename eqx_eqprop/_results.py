import equinox as eqx


class RESULTS(eqx.Enumeration):
    """Outcome codes of a relaxation or a gradient estimate, as in optimistix.

    `info.result` of `gradient` is the most severe code over the batch and the phases;
    `gradient(..., throw=True)` raises with the message below when it is not
    `successful`. With `throw=False`, check it yourself: `info.result == RESULTS.successful`.
    """

    successful = ""
    max_steps_reached = (
        "A relaxation reached `max_steps` without meeting its tolerance. Raise "
        "`max_steps`, loosen `rtol`/`atol`, or make the network more contractive "
        "(smaller weights). Per-sample residuals and codes are in `info.free_stats` "
        "(and `info.adjoint_stats` for recurrent backprop); pass `throw=False` to get "
        "the estimate anyway."
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
        "`error_tolerance`: the Fourier coefficients of the phase samples do not decay, "
        "so the circle |beta| probably reaches a singularity of the equilibrium as a "
        "function of beta (a near-critical network). Lower `beta`, raise "
        "`num_phases`, or use an implicit-differentiation reference. The estimate is "
        "`info.error_estimate`; the coefficient norms are `info.fourier_norms`."
    )
