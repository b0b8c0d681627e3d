"""Stability map: the residual |T(s) - s| of the nudged dynamics after a fixed budget of
steps, over a grid of complex beta (Laborieux & Zenke 2022).

The MNIST MLP 784-256-256-10 (random init, or a checkpoint of eqprop-train) relaxes one
input at each beta of a `resolution x resolution` grid, all vmapped, starting from
its free equilibrium. Near beta = 0 the complex dynamics converge; far from it they
oscillate or blow up, along a fractal-like boundary.

    python experiments/stability_map.py                 # 256 x 256
    python experiments/stability_map.py --resolution 512 --extent 4
"""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import eqx_eqprop as ep

from _util import images, mlp, parser, save


def stability_map(model, x, y, betas, steps: int, chunk: int):
    """Residual after `steps` nudged steps from the free equilibrium, per beta."""
    free, _ = ep.free_phase(model, x, ep.FixedPointRelaxation(500, 1e-6, 1e-6))
    budget = ep.FixedPointRelaxation(steps, None, None)

    @eqx.filter_jit
    def residuals(chunk_betas):
        def one(beta):
            _, stats = ep.nudged_phase(model, x, y, beta, relaxation=budget, start=free)
            return stats.residual[0]

        return jax.vmap(one)(chunk_betas)

    flat = betas.reshape(-1)
    out = [residuals(flat[i : i + chunk]) for i in range(0, flat.size, chunk)]
    return jnp.concatenate(out).reshape(betas.shape)


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--extent", type=float, default=3.0, help="grid covers [-extent, extent]^2")
    p.add_argument("--steps", type=int, default=60, help="budget of nudged steps")
    p.add_argument("--chunk", type=int, default=4096, help="betas relaxed at once")
    p.add_argument("--checkpoint", help="a run directory of eqprop-train (MNIST MLP)")
    args = p.parse_args(argv)
    if args.smoke:
        args.resolution, args.steps = 24, 10

    x, y, _ = images(None if args.smoke else args.data_dir, 1, args.seed)
    model = mlp(x.shape[1], (256, 256), 10, args.seed)
    if args.checkpoint:
        model = ep.load_trained_model(args.checkpoint)
    axis = np.linspace(-args.extent, args.extent, args.resolution)
    betas = jnp.asarray(axis[None, :] + 1j * axis[::-1, None], jnp.complex64)  # rows: Im descending
    start = time.perf_counter()
    res = stability_map(model, x, y, betas, args.steps, args.chunk)
    res = np.asarray(jax.block_until_ready(res))
    seconds = time.perf_counter() - start

    fig, ax = plt.subplots(figsize=(6, 5))
    shown = np.log10(np.where(np.isfinite(res), res, np.nan) + 1e-12)
    cmap = plt.get_cmap("magma_r").with_extremes(bad="deepskyblue")
    im = ax.imshow(
        shown,
        extent=[-args.extent, args.extent, -args.extent, args.extent],
        cmap=cmap,
        vmin=-7,
        vmax=1,
    )
    fig.colorbar(im, ax=ax, label="log10 residual |T(s) - s| (blue: non-finite)")
    circle = np.exp(2j * np.pi * np.linspace(0, 1, 200))
    for r, style in ((0.4, "c--"), (1.0, "c:")):
        ax.plot(r * circle.real, r * circle.imag, style, lw=0.9, label=f"|β| = {r}")
    ax.legend(loc="lower right", fontsize=8)
    ax.set(
        xlabel="Re β",
        ylabel="Im β",
        title=f"residual after {args.steps} nudged steps\n(MNIST MLP, {args.resolution}² β)",
    )
    converged = float(np.mean(res < 1e-4))
    record = {
        "resolution": args.resolution,
        "extent": args.extent,
        "steps": args.steps,
        "seconds": seconds,
        "fraction_below_1e-4": converged,
        "checkpoint": args.checkpoint,
        "data": "mnist" if x.shape[1] == 784 else "digits",
    }
    print(f"{args.resolution}^2 betas in {seconds:.1f} s; {100 * converged:.1f}% below 1e-4")
    save(fig, record, args.out, "stability_map", {"betas": np.asarray(betas), "residual": res})


if __name__ == "__main__":
    main()
