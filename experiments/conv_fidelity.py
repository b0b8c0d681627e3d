"""How exact is the hEP gradient of VGG-4 at cheaper relaxation settings? Each setting's
float32 gradient against the exact one: implicit differentiation in float64, the free
phase relaxed by even/odd sweeps to 1e-10, the adjoint by GMRES.

The network and estimator are a preset's (`--preset`, default cifar10-hep-softmax: the
VGG-4 of Laborieux & Zenke 2022, Table 2, 128, 256, 512, 512 channels, the holomorphic
clip, softmax pooling, hEP N = 4 at |beta| = 1), at initialisation or from a run
directory (`--run-dir`); the images are real: MNIST padded to 32x32 and repeated over 3
channels, normalised (CIFAR-10 is not at hand offline). A setting is
`KIND:FREE/NUDGED[@TOL]`: `fp` synchronous fixed-point or `eo` even/odd sweeps, `aa`
Anderson acceleration of the even/odd map, `mp` a free phase of even/odd sweeps in
bfloat16 polished in float32 (the nudged phases even/odd: there is no 16-bit complex
type); budgets in sweeps, a tolerance (rtol = atol) for both phases, optional for `fp`
and `eo`; `paper` is the preset's
own relaxations (250 and 60 synchronous sweeps). With max pooling (cifar10-hep) there
may be no exact gradient to compare with: the relaxation can cycle between window
maxima for ever, and only the samples whose exact free phase converges are used.

Reports per setting: the cosine and relative error to the exact gradient (all
parameters, and the worst layer), the sweeps the batch ran (the slowest sample of each
phase: a batch sweeps until its last sample stops) and the sweeps per image per step
(free + 2 nudged), and the fraction of relaxations that missed a tolerance.

    python experiments/conv_fidelity.py --batch 4 --settings paper eo:60/20 eo:40/12
"""

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

import eqx_eqprop as ep
from eqx_eqprop.internal import (
    build_estimator,
    build_model,
    build_relaxations,
    load_idx_directory,
    parse_setting as parse_override,
)

from _util import print_record, with_dtype

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def mnist32(data_dir, n_train: int = 10000) -> ep.Dataset:
    """MNIST as CIFAR-shaped images `(32, 32, 3)`: padded by 2, repeated over 3 channels,
    normalised with the mean and std of the first `n_train` training images (the
    training split); the whole test split."""
    data = load_idx_directory(data_dir)

    def cifar_shaped(x):
        return np.repeat(np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)

    x_train = cifar_shaped(data.x_train[:n_train])
    sample = x_train[:10000].astype(np.float32) / 255.0
    mean, std = np.full(3, sample.mean()), np.full(3, sample.std())
    return ep.Dataset(
        "mnist32", x_train, data.y_train[:n_train], cifar_shaped(data.x_test), data.y_test,
        10, pixel_max=255.0, mean=mean, std=std,
    )  # fmt: skip


def sample(data: ep.Dataset, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` preprocessed test images (never trained on) and their labels."""
    idx = np.random.default_rng(seed).choice(len(data.x_test), n, replace=False)
    return data.preprocess(data.x_test[idx]), data.y_test[idx]


def train_briefly(
    cfg, data: ep.Dataset, setting: str, steps: int, batch: int, out: str, overrides=()
):
    """`cfg`'s network trained for `steps` steps of `batch` images with the relaxations
    of `setting` (the estimator, optimiser and schedule of `cfg`, one epoch, unless
    `overrides`, `"section.key=value"` strings, change them)."""
    free, nudged = parse_setting(setting, cfg)
    as_dict = {
        "kind": "fixed_point" if isinstance(free, ep.FixedPointRelaxation) else "even_odd",
        "rtol": "none" if free.rtol is None else free.rtol,
        "atol": "none" if free.atol is None else free.atol,
    }
    n = steps * batch  # evaluated on 1000 test images (the whole split takes long on a CPU)
    data = dataclasses.replace(
        data,
        x_train=data.x_train[:n],
        y_train=data.y_train[:n],
        x_test=data.x_test[:1000],
        y_test=data.y_test[:1000],
    )
    cfg = cfg.update(
        {
            "data.batch_size": batch,
            "data.eval_batch_size": 500,
            "data.augment": "none",
            "relaxation": {**as_dict, "max_steps": free.max_steps},
            "nudged_relaxation": {**as_dict, "max_steps": nudged.max_steps},
            "loop.epochs": 1,
            "loop.log_every": 10,
            "loop.out_dir": out,
            **dict(parse_override(item) for item in overrides),
        }
    )
    return ep.train(cfg, data=data, resume=False, verbose=True, progress=True)


def parse_setting(text: str, cfg=None):
    """`(free, nudged)` relaxations of a setting string (see the module docstring);
    `paper` is `cfg`'s."""
    if text == "paper":
        return build_relaxations(cfg) if cfg is not None else (None, None)
    try:
        kind, rest = text.split(":")
        budgets, _, tol = rest.partition("@")
        free_steps, nudged_steps = (int(b) for b in budgets.split("/"))
        tol = float(tol) if tol else None
        make = SETTING_KINDS[kind]
        if kind in ("aa", "mp") and tol is None:
            raise ValueError
    except (ValueError, KeyError):
        raise ValueError(
            f"setting {text!r}: write KIND:FREE/NUDGED[@TOL] with KIND fp or eo (a "
            "tolerance optional), aa or mp (a tolerance needed), e.g. eo:60/20, "
            "eo:200/60@1e-4, aa:100/40@1e-4, or 'paper'."
        ) from None
    nudged = (SETTING_KINDS["eo"] if kind == "mp" else make)(nudged_steps, tol)
    return make(free_steps, tol), nudged


SETTING_KINDS = {
    "fp": lambda steps, tol: ep.FixedPointRelaxation(steps, tol, tol),
    "eo": lambda steps, tol: ep.EvenOddRelaxation(steps, tol, tol),
    # Anderson over the even/odd map
    "aa": lambda steps, tol: ep.AndersonRelaxation(max_steps=steps, rtol=tol, atol=tol),
    # even/odd in bfloat16 to 1e-2, then polished in the model's dtype to the tolerance
    # (the free phase; the nudged phases, complex, relax even/odd in the model's dtype)
    "mp": lambda steps, tol: ep.MixedPrecisionRelaxation(
        low=ep.EvenOddRelaxation(steps, 1e-2, 1e-2),
        high=ep.EvenOddRelaxation(steps, tol, tol),
    ),
}


def sweeps(stats) -> int:
    """Sweeps a batch ran: its slowest sample's (per phase, summed over phases)."""
    steps = np.asarray(stats.steps)
    return int(steps.max(axis=-1).sum()) if steps.ndim > 1 else int(steps.max())


def layer_cosines(g, truth) -> list[float]:
    out = []
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(truth), strict=True):
        a, b = jnp.ravel(a).astype(jnp.float64), jnp.ravel(b).astype(jnp.float64)
        out.append(float(a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b) + 1e-300)))
    return out


def compare(g, truth) -> dict:
    a = jnp.concatenate([jnp.ravel(v).astype(jnp.float64) for v in jax.tree_util.tree_leaves(g)])
    b = jnp.concatenate([jnp.ravel(v) for v in jax.tree_util.tree_leaves(truth)])
    cos = layer_cosines(g, truth)
    return {
        "cosine": float(a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b))),
        "relative_error": float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)),
        "worst_leaf_cosine": min(cos),
    }


def measure(model, x, y, settings, cfg, *, batch=None, max_steps=5000, tol=1e-10) -> dict:
    """The record of `settings` on the first `batch` samples of `(x, y)` whose exact free
    phase converges (with max pooling a sample can cycle between window maxima, where
    the gradient is not defined); all of them if `batch` is None."""
    jax.config.update("jax_enable_x64", True)
    model64 = with_dtype(model, jnp.float64)
    adjoint = optx.ImplicitAdjoint(lx.GMRES(tol, tol, max_steps=max_steps))
    tight = ep.EvenOddRelaxation(max_steps, tol, tol, adjoint=adjoint)
    _, stats = eqx.filter_jit(ep.free_phase)(model64, jnp.asarray(x, jnp.float64), tight)
    ok = np.flatnonzero(np.asarray(stats.result == ep.RESULTS.successful))
    dropped = int(len(x) - len(ok))
    keep = ok[: batch or len(x)]
    if batch and len(keep) < batch:
        raise RuntimeError(
            f"only {len(keep)} of {len(x)} samples reach {tol:g} within {max_steps} sweeps; "
            "draw more (--pool) or raise --max-steps."
        )
    x, y = x[keep], y[keep]
    model32 = with_dtype(model, jnp.float32)
    start = time.perf_counter()
    truth, info = ep.gradient(
        model64,
        jnp.asarray(x, jnp.float64),
        jnp.asarray(y),
        estimator=ep.ImplicitDifferentiation(),
        relaxation=tight,
        throw=False,
    )
    truth = eqx.filter(truth, eqx.is_inexact_array)
    record = {
        "reference": f"implicit differentiation, float64, even/odd to {tol:g} within "
        f"{max_steps} sweeps, GMRES adjoint",
        "reference_sweeps_max": sweeps(info.free_stats),
        "reference_unconverged": int(np.sum(info.free_stats.result != ep.RESULTS.successful)),
        "pool_cycling": dropped,  # of the pool, samples whose exact free phase never converged
        "reference_seconds": round(time.perf_counter() - start, 1),
        "settings": {},
    }
    estimator = build_estimator(cfg)
    for text in settings:
        free, nudged = parse_setting(text, cfg)
        start = time.perf_counter()
        g, info = ep.gradient(
            model32,
            jnp.asarray(x, jnp.float32),
            jnp.asarray(y),
            estimator=estimator,
            relaxation=free,
            nudged_relaxation=nudged,
            throw=False,
        )
        g = eqx.filter(g, eqx.is_inexact_array)
        free_sweeps, nudged_sweeps = sweeps(info.free_stats), sweeps(info.nudged_stats)
        record["settings"][text] = {
            **compare(g, truth),
            "free_sweeps": free_sweeps,
            "nudged_sweeps": nudged_sweeps,  # over the relaxed phases together
            "sweeps_per_step": free_sweeps + nudged_sweeps,
            "unconverged": float(
                np.mean(
                    np.concatenate(
                        [
                            np.ravel(info.free_stats.result != ep.RESULTS.successful),
                            np.ravel(info.nudged_stats.result != ep.RESULTS.successful),
                        ]
                    )
                )
            )
            if getattr(free, "rtol", 0.0) is not None
            else None,
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(text, json.dumps(record["settings"][text]), flush=True)
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cifar10-hep-softmax", help="network and estimator")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--pool", type=int, default=None, help="samples drawn (default 2 x batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=str(DEFAULT_MNIST))
    p.add_argument("--run-dir", default=None, help="a trained VGG-4 run (else initialisation)")
    p.add_argument("--channels", type=int, nargs="*", default=None, help="narrower, for tests")
    p.add_argument("--max-steps", type=int, default=5000)
    p.add_argument("--tol", type=float, default=1e-10)
    p.add_argument("--settings", nargs="*", default=["paper", "eo:60/20"])
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--train-steps", type=int, default=0, help="train this long first")
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--train-setting", default="eo:60/20", help="relaxations to train with")
    p.add_argument("--out-run", default=None, help="run directory of that training")
    p.add_argument(
        "--train-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="change that training's configuration, e.g. --train-set optimizer.kind=adam",
    )  # fmt: skip
    args = p.parse_args(argv)
    for text in args.settings:
        parse_setting(text)  # a bad one fails before the slow reference
    cfg = ep.get_preset(args.preset).set("loop.seed", args.seed)
    if args.channels:
        cfg = cfg.set("model.channels", list(args.channels))
    data = mnist32(args.data_dir, max(10000, args.train_steps * args.train_batch))
    trained = None
    if args.run_dir:
        model = ep.load_trained_model(args.run_dir)
    elif args.train_steps:
        trained = train_briefly(
            cfg, data, args.train_setting, args.train_steps, args.train_batch,
            args.out_run or "runs/conv_fidelity", args.train_set,
        )  # fmt: skip
        model = trained["model"]
    else:
        model = build_model(cfg, (32, 32, 3), 10)
    x, y = sample(data, args.pool or 2 * args.batch, args.seed)
    if args.run_dir:
        state = "from " + args.run_dir
    elif trained:
        final = trained["final"]
        state = (
            f"after {args.train_steps} steps of {args.train_batch} MNIST32 images with "
            f"{args.train_setting}{''.join(' ' + t for t in args.train_set)} "
            f"(test top-1 {final['test_top1']:.4f})"
        )
    else:
        state = "at initialisation"
    record = {
        "preset": args.preset,
        "estimator": json.loads(json.dumps(dict(cfg.estimator), default=str)),
        "model": "VGG-4 " + state,
        "channels": list(cfg.model["channels"]),
        "batch": args.batch,
        "data": "MNIST test images padded to 32x32x3",
        **measure(
            model,
            x,
            y,
            args.settings,
            cfg,
            batch=args.batch,
            max_steps=args.max_steps,
            tol=args.tol,
        ),
        "command": "python experiments/conv_fidelity.py " + " ".join(argv or os.sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} "
        f"({jax.default_backend()})",
    }
    print_record(record, args.out)
    return record


if __name__ == "__main__":
    main()
