"""Noise robustness: quality of the gradient estimate when Gaussian noise is added
inside the activation at every step (independent per sample, phase, unit and step),
for one-sided EP (beta = 0.1 and 0.4), hEP (N = 10, |beta| = 0.4) and continuous hEP
(|beta| = 0.4, periods of 200 steps) averaged over 4 periods. Quality: cosine to the
noise-free implicit gradient, mean and spread over noise draws.

The MNIST MLP 784-256-256-10, float32, the paper's phase lengths (200 free steps,
50 per nudged phase).

    python experiments/noise_robustness.py
"""

import warnings

import equinox as eqx
import jax
import matplotlib.pyplot as plt
import numpy as np

import eqx_eqprop as ep

from _util import compare, parser, problem, reference_gradient, save


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--draws", type=int, default=5)
    args = p.parse_args(argv)
    draws = 1 if args.smoke else args.draws
    free_steps, nudged_steps = (40, 10) if args.smoke else (200, 50)
    model, x, y, hidden = problem(args, args.batch, 8)
    batch = x.shape[0]
    truth, _ = reference_gradient(model, x, y, ep.FixedPointRelaxation(5000, 1e-6, 1e-6))  # float32
    levels = [0.0, 0.04] if args.smoke else [0.0, 0.005, 0.01, 0.02, 0.04, 0.08]
    period = 20 if args.smoke else 200  # several relaxation times of this network
    # estimator, and whether its nudged phases are short (False: as long as the free one)
    estimators = {  # (the smoke run keeps the first and the third)
        "one-sided EP β=0.1": (ep.ClassicEP(0.1), False),
        "one-sided EP β=0.4": (ep.ClassicEP(0.4), True),
        "hEP N=10 |β|=0.4": (ep.HolomorphicEP(0.4, 10, error_tolerance=None), True),
        "continuous hEP, 4 periods": (ep.OscillatingEP(0.4, period=period, num_periods=4), True),
    }

    if args.smoke:
        estimators = {k: v for k, v in list(estimators.items())[::2]}

    @eqx.filter_jit
    def estimate(est, free, nudged, key):
        g, _ = ep.gradient(
            model,
            x,
            y,
            estimator=est,
            relaxation=free,
            nudged_relaxation=nudged,
            key=key,
            throw=False,
        )
        return g

    results = {}
    for name, (est, short_nudged) in estimators.items():
        rows = []
        for noise in levels:
            free = ep.FixedPointRelaxation(free_steps, None, None, noise=noise)
            nudged = ep.FixedPointRelaxation(
                nudged_steps if short_nudged else free_steps, None, None, noise=noise
            )
            with warnings.catch_warnings():  # noisy phases need not meet a tolerance
                warnings.simplefilter("ignore", RuntimeWarning)
                cos = [
                    compare(estimate(est, free, nudged, jax.random.key(k)), truth)["cosine"]
                    for k in range(draws if noise else 1)
                ]
            rows.append(
                {
                    "noise": noise,
                    "cosine_mean": float(np.mean(cos)),
                    "cosine_std": float(np.std(cos)),
                }
            )
        results[name] = rows
        print(name, [round(r["cosine_mean"], 4) for r in rows])

    fig, ax = plt.subplots(figsize=(6.5, 4.3))
    for name, rows in results.items():
        mean = np.array([r["cosine_mean"] for r in rows])
        std = np.array([r["cosine_std"] for r in rows])
        ax.errorbar(levels, mean, yerr=std, marker="o", capsize=3, label=name)
    ax.set(
        xlabel="noise std inside the activation",
        ylabel="cosine to noise-free implicit gradient",
        title="gradient estimates under noisy dynamics",
        ylim=(-0.1, 1.05),
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    record = {
        "hidden": hidden,
        "batch": batch,
        "draws": draws,
        "free_steps": free_steps,
        "nudged_steps": nudged_steps,
        "levels": levels,
        "results": results,
    }
    save(fig, record, args.out, "noise_robustness")


if __name__ == "__main__":
    main()
