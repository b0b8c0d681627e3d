"""Continuous hEP (OscillatingEP): how fast the time average of the rotating teaching
signal converges to the implicit gradient. (a) cosine against the number of periods
averaged, started cold (no warm-up), for several period lengths; (b) after one warm-up
period, the relative error against the period length (the lag of the state behind
the nudge costs O(1/period^2)).

The MNIST MLP 784-256-256-10, float64, |beta| = 0.1 (at 0.4 the circle of this
near-critical network reaches a singularity, see beta_sweep), a batch of MNIST images.

    python experiments/oscillation_convergence.py
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import eqx_eqprop as ep

from _util import TIGHT, compare, parser, problem, reference_gradient, save


def main(argv=None):
    jax.config.update("jax_enable_x64", True)
    p = parser(__doc__)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--beta", type=float, default=0.1)
    args = p.parse_args(argv)
    model, x, y, hidden = problem(args, args.batch, 4, jnp.float64)
    batch = x.shape[0]
    truth, _ = reference_gradient(model, x, y)

    def quality(**kw):
        est = ep.OscillatingEP(args.beta, **kw)
        g, _ = eqx.filter_jit(ep.gradient)(model, x, y, estimator=est, relaxation=TIGHT)
        return compare(g, truth)

    periods = [10] if args.smoke else [50, 100, 200, 400]
    counts = [1, 2] if args.smoke else [1, 2, 4, 8, 16]
    cold = {
        p_: [quality(period=p_, num_periods=n, warmup_periods=0) for n in counts] for p_ in periods
    }
    lengths = [10, 20] if args.smoke else [25, 50, 100, 200, 400, 800, 1600]
    warm = [quality(period=p_, num_periods=1, warmup_periods=1) for p_ in lengths]
    # the asymptotic regime: periods long against the relaxation time of the network
    tail = slice(-3, None)
    errors = [w["relative_error"] for w in warm]
    slope = float(np.polyfit(np.log(lengths[tail]), np.log(errors[tail]), 1)[0])

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    for colour, (p_, rows) in zip(plt.cm.viridis(np.linspace(0, 0.85, len(periods))), cold.items()):
        axes[0].semilogx(
            counts, [1 - r["cosine"] for r in rows], "o-", color=colour, label=f"period {p_} steps"
        )
    axes[0].set(
        xlabel="periods averaged (no warm-up)",
        ylabel="1 - cosine to implicit gradient",
        yscale="log",
        title="cold start: the transient averages out",
    )
    axes[0].legend(fontsize=8)
    axes[1].loglog(lengths, errors, "o-", label=f"slope over the 3 longest: {slope:.2f}")
    axes[1].set(
        xlabel="period (steps)",
        ylabel="relative error to implicit gradient",
        title=f"after one warm-up period, |β| = {args.beta}",
    )
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    record = {
        "hidden": hidden,
        "batch": batch,
        "beta": args.beta,
        "cold": {str(k): v for k, v in cold.items()},
        "counts": counts,
        "lengths": lengths,
        "warm": warm,
        "slope_error_vs_period_last3": slope,
    }
    save(fig, record, args.out, "oscillation_convergence")


if __name__ == "__main__":
    main()
