"""Gradient quality against the nudge: cosine and relative error of one-sided,
symmetric and N-phase holomorphic EP to the implicit gradient, versus |beta|, and of
hEP versus the number of phases N at fixed |beta| (with hEP's own error estimate).

The MNIST MLP 784-256-256-10 at its default initialisation, float64, a batch of MNIST
test images, free and nudged phases relaxed to 1e-11.

    python experiments/beta_sweep.py
"""

import warnings

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
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args(argv)
    model, x, y, hidden = problem(args, args.batch, 8, jnp.float64)
    batch = x.shape[0]
    truth, info = reference_gradient(model, x, y)
    radius = float(jnp.max(ep.update_spectral_radius(model, x, info.free_state)))

    @eqx.filter_jit
    def estimate(est):
        g, info = ep.gradient(model, x, y, estimator=est, relaxation=TIGHT, throw=False)
        return g, info.error_estimate, info.result == ep.RESULTS.successful

    def run(est):
        with warnings.catch_warnings():  # large |beta|: failures are recorded in "ok"
            warnings.simplefilter("ignore", RuntimeWarning)
            g, e, ok = jax.block_until_ready(estimate(est))
        return {**compare(g, truth), "estimate": None if e is None else float(e), "ok": bool(ok)}

    betas = np.geomspace(1e-3, 1.0, 4 if args.smoke else 10)
    families = {
        "one-sided EP": lambda b: ep.ClassicEP(b),
        "symmetric EP": lambda b: ep.SymmetricEP(b, error_tolerance=None),
        "hEP N=4": lambda b: ep.HolomorphicEP(b, 4, error_tolerance=None),
        "hEP N=10": lambda b: ep.HolomorphicEP(b, 10, error_tolerance=None),
    }
    if args.smoke:  # fewer compilations
        families = {k: families[k] for k in ("one-sided EP", "hEP N=4")}
    by_beta = {name: [run(make(float(b))) for b in betas] for name, make in families.items()}
    counts = [2, 4] if args.smoke else [2, 3, 4, 5, 6, 8, 10, 12, 16]
    radii = [0.1, 0.4] if args.smoke else [0.1, 0.4, 1.0]
    by_n = {r: [run(ep.HolomorphicEP(r, n, error_tolerance=None)) for n in counts] for r in radii}

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    for name, rows in by_beta.items():
        err = [r["relative_error"] for r in rows]
        axes[0].loglog(betas, err, "o-", label=name)
        axes[1].loglog(betas, [max(1 - r["cosine"], 1e-16) for r in rows], "o-", label=name)
    axes[0].set(xlabel="|β|", ylabel="relative error to implicit gradient", title="error vs |β|")
    axes[1].set(xlabel="|β|", ylabel="1 - cosine", title="direction vs |β|")
    for ax in axes[:2]:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for colour, (r, rows) in zip(plt.cm.viridis([0.1, 0.5, 0.85]), by_n.items()):
        axes[2].semilogy(
            counts, [q["relative_error"] for q in rows], "o-", color=colour, label=f"|β| = {r}"
        )
        axes[2].semilogy(counts, [q["estimate"] for q in rows], "x:", color=colour)
    axes[2].set(
        xlabel="number of phases N",
        ylabel="relative error (x: hEP's estimate)",
        title=f"hEP vs N (update Jacobian spectral radius {radius:.2f})",
    )
    axes[2].grid(True, which="both", alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    record = {
        "hidden": hidden,
        "batch": batch,
        "spectral_radius": radius,
        "betas": betas.tolist(),
        "by_beta": by_beta,
        "phases": counts,
        "by_num_phases": {str(r): rows for r, rows in by_n.items()},
    }
    save(fig, record, args.out, "beta_sweep")


if __name__ == "__main__":
    main()
