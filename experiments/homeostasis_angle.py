"""Generalized hEP against the true gradient as the feedback weights turn away from the
transposed forward weights, with and without Jacobian homeostasis (Laborieux & Zenke
2024, Fig. 2-3).

A vector-field MLP 784-128-64 (readout 10, symmetric graph) starts with each feedback
weight at `feedback_angle` from the transpose of its forward partner. For each angle it
reports the cosine between generalized hEP (N = 4, |beta| = 0.1) and the implicit
gradient at initialisation, and after `--steps` training steps with the estimate alone
and with homeostasis added, with the feedback angle and the Jacobian symmetry ratio
reached.

    python experiments/homeostasis_angle.py            # ~3 minutes on 2 CPU cores
"""

import time

import equinox as eqx
import jax
import matplotlib.pyplot as plt
import numpy as np
import optax

import eqx_eqprop as ep
from eqx_eqprop.internal import init_train_state

from _util import images, parser, save


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--strength", type=float, default=1.0)
    args = p.parse_args(argv)
    angles = [0.0, 45.0, 90.0] if args.smoke else [0.0, 15.0, 30.0, 45.0, 60.0, 75.0, 90.0]
    steps = 5 if args.smoke else args.steps
    hidden = (16, 12) if args.smoke else (128, 64)
    x_eval, y_eval, _ = images(None if args.smoke else args.data_dir, 64, args.seed)
    x_train, y_train, _ = images(
        None if args.smoke else args.data_dir, 512, args.seed, split="train"
    )
    relaxation = ep.EvenOddRelaxation(max_steps=500, rtol=1e-5, atol=1e-5)
    reference = ep.ImplicitDifferentiation()
    probe = ep.GeneralizedHEP(0.1, 4, error_tolerance=None, reference=reference)

    @eqx.filter_jit
    def cosine_to_truth(model):
        _, info = ep.gradient(
            model, x_eval, y_eval, estimator=probe, relaxation=relaxation, throw=False
        )
        return info.diagnostics["reference_cosine"]

    optimizer = optax.adam(1e-3)
    estimators = {
        flag: ep.GeneralizedHEP(
            0.1,
            4,
            error_tolerance=None,
            homeostasis=ep.JacobianHomeostasis(args.strength, 4) if flag else None,
        )
        for flag in (False, True)
    }
    # one compiled step per estimator, reused for every angle (the model is an argument)
    train_steps = {
        flag: ep.make_train_step(est, relaxation, ep.CrossEntropy(), optimizer)
        for flag, est in estimators.items()
    }

    def train(model, homeostasis):
        step = train_steps[homeostasis]
        state = init_train_state(
            model,
            optimizer,
            estimators[homeostasis],
            jax.random.key(args.seed),
            x_train[:64],
            y_train[:64],
        )
        for k in range(steps):
            rows = slice((k % 8) * 64, (k % 8 + 1) * 64)
            state, metrics = step(state, x_train[rows], y_train[rows])
        return state.model, metrics

    rows = []
    start = time.perf_counter()
    for angle in angles:
        model = ep.VectorFieldNet(
            (x_eval.shape[1], *hidden, 10),
            feedback_angle=angle,
            key=jax.random.key(args.seed),
        )
        row = {"initial_angle": angle, "cosine_init": float(cosine_to_truth(model))}
        for name, homeostasis in (("plain", False), ("homeostasis", True)):
            trained, metrics = train(model, homeostasis)
            row[f"cosine_{name}"] = float(cosine_to_truth(trained))
            row[f"angle_{name}"] = float(np.mean(list(ep.feedback_angles(trained).values())))
            if homeostasis:
                row["symmetry_ratio_homeostasis"] = float(metrics["symmetry_ratio"])
        rows.append(row)
        print({k: round(v, 4) for k, v in row.items()}, flush=True)
    seconds = time.perf_counter() - start

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    a = [r["initial_angle"] for r in rows]
    axes[0].plot(a, [r["cosine_init"] for r in rows], "o-", label="at initialisation")
    axes[0].plot(a, [r["cosine_plain"] for r in rows], "s-", label=f"after {steps} steps")
    axes[0].plot(
        a, [r["cosine_homeostasis"] for r in rows], "^-", label=f"after {steps} steps + homeostasis"
    )
    axes[0].set(
        xlabel="initial angle between feedback and forward^T (degrees)",
        ylabel="cosine(generalized hEP, implicit gradient)",
        title="gradient alignment",
    )
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    axes[1].plot(a, a, "k:", lw=0.8, label="initial")
    axes[1].plot(a, [r["angle_plain"] for r in rows], "s-", label="trained")
    axes[1].plot(a, [r["angle_homeostasis"] for r in rows], "^-", label="trained + homeostasis")
    axes[1].set(xlabel="initial angle (degrees)", ylabel="feedback angle after training")
    axes[1].legend(fontsize=8)
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    record = {
        "hidden": list(hidden),
        "steps": steps,
        "strength": args.strength,
        "estimator": "GeneralizedHEP(0.1, 4)",
        "data": "mnist" if x_eval.shape[1] == 784 else "digits",
        "seconds": seconds,
        "rows": rows,
    }
    save(fig, record, args.out, "homeostasis_angle")


if __name__ == "__main__":
    main()
