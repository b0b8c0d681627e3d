"""At what depth does EP stop training a chain of conv layers, and do skip couplings move
that depth (Elayedam & Srinivasan 2025)? Chains of increasing depth on MNIST, with and
without 1x1 skip couplings from each layer to the one after next (Hopfield-ResNet style),
trained by symmetric (centered) EP and by hEP for the same short budget; each net's
gradient is compared with the implicit gradient (float64) at initialisation and at the
end, and the sweeps its relaxations took are recorded.

    python experiments/depth.py --depths 3 5 7 9 --out experiments/results/figures

Network of depth D: a 14x14 map (3x3 convolution of the image, 2x2 average pooling),
then D - 1 maps of 7x7 (the first pooled again), `--channels` channels each, the
holomorphic clip activation, the readout of the last map in a cross-entropy cost.
"""

import dataclasses
import json
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from checkpoint_gradient import converged  # the reference relaxation of a run's own

import eqx_eqprop as ep
from eqx_eqprop.internal import (
    build_cost,
    build_data,
    build_estimator,
    build_model,
    build_relaxations,
)

from _util import compare, parser, plt, training_batch, with_dtype  # the scripts' plumbing


def graph(depth: int, channels: int, skips: bool) -> tuple[list, list]:
    """Layers and couplings of a chain of `depth` maps, with 1x1 skips `l -> l + 2`."""
    layers = [[14, 14, channels]] + [[7, 7, channels]] * (depth - 1)
    couplings = [[-1, 0]] + [[i, i + 1] for i in range(depth - 1)]
    if skips:
        couplings += [[i, i + 2, 1] for i in range(depth - 2)]
    return layers, couplings


ESTIMATORS = {
    "centered EP": {"kind": "centered", "beta": 0.2, "error_tolerance": "none"},
    "hEP (N=4)": {"kind": "hep", "beta": 0.4, "num_phases": 4, "error_tolerance": "none"},
}


def config(args, depth: int, skips: bool, estimator: dict, run_dir: Path) -> ep.TrainConfig:
    layers, couplings = graph(depth, args.channels, skips)
    return ep.TrainConfig(
        {
            "name": run_dir.name,
            "data": {
                "kind": "mnist",
                "data_dir": args.data_dir,
                "batch_size": args.batch,
                "eval_batch_size": 500,
            },
            "model": {
                "kind": "graph",
                "layers": layers,
                "couplings": couplings,
                "weight_scale": args.weight_scale,
            },
            "estimator": estimator,
            "relaxation": {
                "kind": "even_odd",
                "max_steps": args.free_steps,
                "rtol": 1e-3,
                "atol": 1e-3,
            },
            "nudged_relaxation": {
                "kind": "even_odd",
                "max_steps": args.nudged_steps,
                "rtol": 1e-3,
                "atol": 1e-3,
            },
            "optimizer": {"kind": "adam", "lr": args.lr, "schedule": "cosine"},
            "loop": {
                "epochs": args.epochs,
                "seed": args.seed,
                "out_dir": str(run_dir),
                "checkpoint_every": 10_000,
            },
        }
    )


def subset(data, train: int, test: int, seed: int):
    rng = np.random.default_rng(seed)
    i, j = rng.permutation(len(data.x_train))[:train], rng.permutation(len(data.x_test))[:test]
    return dataclasses.replace(
        data, x_train=data.x_train[i], y_train=data.y_train[i], x_test=data.x_test[j],
        y_test=data.y_test[j],
    )  # fmt: skip


def gradient_cosine(cfg, model, data, n: int, seed: int) -> dict:
    """The run's estimator with its relaxations (the model's dtype) against the
    implicit gradient in float64 (free phase to 1e-8), on `n` training images."""
    x, y = training_batch(model, data, n, seed + 1)
    estimator, cost = build_estimator(cfg), build_cost(cfg)
    free, nudged = build_relaxations(cfg)
    model64 = with_dtype(model, jnp.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        truth, ref = ep.gradient(
            model64, jnp.asarray(x, jnp.float64), y, estimator=ep.ImplicitDifferentiation(),
            relaxation=converged(free, 3000, 1e-8), cost=cost, throw=False,
        )  # fmt: skip
        g, info = ep.gradient(
            model, jnp.asarray(x), y, estimator=estimator, relaxation=free,
            nudged_relaxation=nudged, cost=cost, key=jax.random.key(seed), throw=False,
        )  # fmt: skip
    return {
        **compare(g, truth),
        "free_sweeps": float(np.mean(info.free_stats.steps)),
        "nudged_sweeps": float(np.mean(info.nudged_stats.steps)),
        "reference_sweeps_median": float(np.median(ref.free_stats.steps)),
        "reference_unconverged": int(np.sum(ref.free_stats.result != ep.RESULTS.successful)),
    }


def main(argv=None) -> dict:
    p = parser(__doc__)
    p.add_argument("--depths", type=int, nargs="+", default=[3, 5, 7, 9])
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--train", type=int, default=6000, help="training images (a subset)")
    p.add_argument("--test", type=int, default=2000, help="test images (a subset)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--free-steps", type=int, default=60)
    p.add_argument("--nudged-steps", type=int, default=20)
    p.add_argument("--check-batch", type=int, default=32, help="images of the gradient check")
    p.add_argument("--estimators", nargs="+", default=list(ESTIMATORS))
    p.add_argument(
        "--weight-scale", type=float, default=1.0,
        help="init std x sqrt(fan_in) of every coupling (PyTorch's default uniform is 0.577)",
    )  # fmt: skip
    p.add_argument("--kinds", nargs="+", choices=["chain", "skip"], default=["chain", "skip"])
    p.add_argument("--runs-dir", default="runs/depth")
    args = p.parse_args(argv)
    if args.smoke:
        args.depths, args.channels, args.train, args.test = [2, 3], 2, 128, 100
        args.batch, args.free_steps, args.nudged_steps, args.check_batch = 32, 10, 4, 4
    jax.config.update("jax_enable_x64", True)  # the reference gradient is float64
    base = config(args, 2, False, ESTIMATORS["centered EP"], Path(args.runs_dir) / "probe")
    data = subset(build_data(base), args.train, args.test, args.seed)
    rows = []
    for name in args.estimators:
        for skips in [kind == "skip" for kind in args.kinds]:
            for depth in args.depths:
                kind = "skip" if skips else "chain"
                run_dir = Path(args.runs_dir) / f"{name.split()[0]}-d{depth}-{kind}"
                cfg = config(args, depth, skips, ESTIMATORS[name], run_dir)
                model0 = build_model(cfg, data.sample_shape, data.num_classes)
                colours = len(model0.layer_groups())
                init = gradient_cosine(cfg, model0, data, args.check_batch, args.seed)
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    result = ep.train(cfg, data=data, progress=False, verbose=False, resume=False)
                seconds = time.perf_counter() - start
                end = gradient_cosine(cfg, result["model"], data, args.check_batch, args.seed)
                last = result["history"][-1]
                row = {
                    "estimator": name, "depth": depth, "skips": skips, "colours": colours,
                    "test_top1": last["test_top1"], "train_accuracy": last["train_accuracy"],
                    "seconds": round(seconds, 1), "free_steps": last["free_steps"],
                    "nudged_steps": last.get("nudged_steps"),
                    "failed_steps": last["failed_steps"], "init": init, "end": end,
                }  # fmt: skip
                rows.append(row)
                print(
                    f"{name:12s} depth {depth} {'skip ' if skips else 'chain'}: test "
                    f"{100 * row['test_top1']:.1f} %, cosine {init['cosine']:.3f} -> "
                    f"{end['cosine']:.3f}, {row['free_steps']:.0f} free sweeps, {seconds:.0f} s",
                    flush=True,
                )
    record = {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "runs": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "depth.json").write_text(json.dumps(record, indent=1))
    figure(rows, args.estimators, out / "depth.png")
    return record


def figure(rows, estimators, path) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name in estimators:
        for skips, style in ((False, "o-"), (True, "s--")):
            sel = [r for r in rows if r["estimator"] == name and r["skips"] == skips]
            depths = [r["depth"] for r in sel]
            label = f"{name}, {'skips' if skips else 'chain'}"
            a.plot(depths, [100 * r["test_top1"] for r in sel], style, label=label)
            b.plot(depths, [r["end"]["cosine"] for r in sel], style, label=label)
    a.set(xlabel="conv layers", ylabel="test top-1 (%)", title="accuracy after the budget")
    b.set(xlabel="conv layers", ylabel="cosine to dL/dθ", title="gradient at the end")
    a.legend(fontsize=7)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
