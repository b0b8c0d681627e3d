"""Neural oscillations of holomorphic EP (Laborieux & Zenke 2022): (a) the complex
equilibria s*(beta) of a few neurons as beta goes around the circle |beta| = r, with the
N = 10 phases of hEP marked; (b) the real part of the same neurons over time while the
teaching signal beta(t) = r exp(i w t) rotates (continuous hEP), and with beta held on
N = 10 blocks per period.

    python experiments/oscillations.py
"""

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import eqx_eqprop as ep

from _util import images, mlp, parser, save


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--radius", type=float, default=0.4)
    p.add_argument("--period", type=int, default=100)
    args = p.parse_args(argv)
    hidden = (16, 16) if args.smoke else (256, 256)
    period = 20 if args.smoke else args.period
    x, y, _ = images(None if args.smoke else args.data_dir, 1, args.seed)
    model = mlp(x.shape[1], hidden, 10, args.seed)
    tight = ep.FixedPointRelaxation(2000, 1e-6, 1e-6)
    free, _ = ep.free_phase(model, x, tight)
    angles = np.linspace(0, 2 * np.pi, 73)
    betas = jnp.asarray(args.radius * np.exp(1j * angles), jnp.complex64)
    states, stats = jax.vmap(
        lambda b: ep.nudged_phase(model, x, y, b, relaxation=tight, start=free)
    )(betas)
    layer = np.asarray(states[1][:, 0, :])  # (angles, units) of the last hidden layer
    centre = np.asarray(free[1][0])
    # the units that move most under the nudge
    neurons = np.argsort(-np.abs(layer - centre[None]).max(axis=0))[:4]

    osc = ep.OscillatingEP(args.radius, period=period, num_periods=3, warmup_periods=1)
    blocks = ep.OscillatingEP(
        args.radius, period=period, num_periods=3, warmup_periods=1, num_blocks=10
    )
    traj, nudges = osc.trajectory(model, x, y)
    traj_b, _ = blocks.trajectory(model, x, y)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    colours = plt.cm.tab10(np.arange(4))
    for c, n in zip(colours, neurons):
        z = layer[:, n] - centre[n]
        axes[0].plot(z.real, z.imag, "-", color=c, label=f"unit {n}")
        phases = np.arange(10) * (len(angles) - 1) // 10
        axes[0].plot(z.real[phases], z.imag[phases], "o", color=c, ms=4)
    axes[0].axhline(0, color="0.8", lw=0.5)
    axes[0].axvline(0, color="0.8", lw=0.5)
    axes[0].set(
        xlabel="Re (s*(β) - s*(0))",
        ylabel="Im (s*(β) - s*(0))",
        title=f"complex equilibria on the circle |β| = {args.radius}\n"
        "(dots: the N = 10 phases of hEP)",
    )
    axes[0].legend(fontsize=8)
    steps = np.arange(len(nudges))
    for c, n in zip(colours, neurons):
        axes[1].plot(steps, np.real(np.asarray(traj[1][:, 0, n])), color=c, lw=1.2)
        axes[1].plot(steps, np.real(np.asarray(traj_b[1][:, 0, n])), color=c, lw=0.8, ls=":")
    axes[1].axvspan(0, period, color="0.92")
    axes[1].set(
        xlabel="step",
        ylabel="Re s(t)",
        title="rotating teaching signal β(t)\ncontinuous (solid), 10 blocks per period (dotted)",
    )
    axes[1].text(period / 2, axes[1].get_ylim()[1], "warm-up", ha="center", va="top", fontsize=8)
    record = {
        "radius": args.radius,
        "period": period,
        "hidden": hidden,
        "neurons": neurons.tolist(),
        "nudged_converged": bool(jnp.all(stats.result == ep.RESULTS.successful)),
    }
    arrays = {
        "betas": np.asarray(betas),
        "equilibria": layer[:, neurons],
        "free": centre[neurons],
        "trajectory": np.asarray(traj[1][:, 0, neurons]),
        "nudges": np.asarray(nudges),
    }
    save(fig, record, args.out, "oscillations", arrays)


if __name__ == "__main__":
    main()
