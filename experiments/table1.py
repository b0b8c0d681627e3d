"""Table 1 of Laborieux & Zenke (2022): MNIST MLP 784-256-256-10 trained by classic EP
(beta 0.1 and 0.4), symmetric EP, holomorphic EP (N = 10, |beta| = 0.4), continuous hEP
(a rotating teaching signal) and the implicit-gradient (BP) baseline, with and without
noise 0.04 in the dynamics.

Runs a chosen subset of presets over seeds (each run resumable in its own directory)
and writes a markdown table: test accuracy at the last epoch and the best epoch
(mean +- std over seeds) and wall time per epoch.

    python experiments/table1.py --data-dir ../shared/data/mnist \\
        --presets mnist-hep mnist-classic-0.1 --seeds 0 1 2 --epochs 50
    python experiments/table1.py --presets mnist-hep --epochs 1 --set data.batch_size=100
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax

import eqx_eqprop as ep
from eqx_eqprop.internal import parse_setting

TABLE1 = [n for n in ep.preset_names() if n.startswith("mnist-") and "fast" not in n]


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def markdown(rows: dict, args) -> str:
    lines = [
        "| preset | estimator | noise | seeds | epochs | test acc. last (%) "
        "| test acc. best (%) | s / epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in rows.items():
        if not runs:
            continue
        cfg = runs[0][0]
        last = [h[-1]["test_top1"] for _, h in runs]
        best = [max(e["test_top1"] for e in h) for _, h in runs]
        seconds = [e["seconds"] for _, h in runs for e in h]
        est = cfg.estimator
        estimator = {
            "hep": f"hEP N={est.get('num_phases')}, \\|β\\|={est.get('beta')}",
            "classic": f"EP β={est.get('beta')}",
            "symmetric": f"symmetric EP β={est.get('beta')}",
            "oscillating": f"continuous hEP \\|β\\|={est.get('beta')}, period {est.get('period')}",
            "implicit": "implicit (BP)",
        }.get(est["kind"], est["kind"])
        noise = cfg.relaxation.get("noise", 0.0)
        lines.append(
            f"| {name} | {estimator} | {noise} | {len(runs)} | {len(runs[0][1])} | "
            f"{_mean_std(last)} | {_mean_std(best)} | {statistics.fmean(seconds):.0f} |"
        )
    lines += [
        "",
        f"Command: `python {' '.join(sys.argv)}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"JAX backend {jax.default_backend()}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=TABLE1, help=f"default: {' '.join(TABLE1)}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, help="override the presets' epochs")
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override for every run",
    )
    p.add_argument("--runs-dir", default="runs/table1")
    p.add_argument("--output", default="experiments/results/table1.md")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    overrides = dict(parse_setting(item) for item in args.set)
    rows: dict = {}
    for name in args.presets:
        rows[name] = []
        for seed in args.seeds:
            cfg = ep.get_preset(name)
            changes = {
                **overrides,
                "loop.seed": seed,
                "loop.out_dir": f"{args.runs_dir}/{{name}}/seed{{seed}}",
            }
            if cfg.data["kind"] in ("mnist", "fashion_mnist"):
                changes["data.data_dir"] = args.data_dir
            if args.epochs:
                changes["loop.epochs"] = args.epochs
            for key, value in changes.items():
                cfg = cfg.set(key, value)
            start = time.perf_counter()
            result = ep.train(cfg, progress=not args.no_progress)
            print(
                f"{name} seed {seed}: test top-1 {result['final']['test_top1']:.4f} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            rows[name].append((cfg, result["history"]))
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(args.output + ".tmp")
            tmp.write_text(markdown(rows, args))
            os.replace(tmp, args.output)
    print(Path(args.output).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
