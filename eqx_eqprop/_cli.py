"""`eqprop-train`: train a network from a preset or a config file, with overrides.

With no arguments it trains an hEP MLP on the embedded digits set and, next to it, the
same network trained with implicit-differentiation gradients, and prints both test
accuracies (about a minute on 2 CPU cores, offline).
"""

import argparse
import sys
import time

from ._config import PRESETS, TrainConfig, config_from_mapping, get_preset, load_config_file

SHORTCUTS = {  # flag -> config key
    "dataset": "dataset",
    "data_dir": "data_dir",
    "estimator": "estimator",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "seed": "seed",
    "out": "out_dir",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eqprop-train",
        description=__doc__.splitlines()[0],
        epilog="Settings: " + ", ".join(TrainConfig.__dataclass_fields__),
    )
    p.add_argument("--preset", help="a named configuration (see --list-presets)")
    p.add_argument("--config", help="a TOML or JSON file of settings")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set beta=0.2 --set hidden=256,256",
    )
    p.add_argument("--dataset", help="digits, mnist, fashion_mnist, cifar10, cifar100, imagenet32")
    p.add_argument("--data-dir", help="directory with MNIST-format IDX files, or a TFDS data_dir")
    p.add_argument("--estimator", help="hep, classic, symmetric, implicit, bptt, rbp")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="output directory (default runs/{name}/seed{seed})")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-presets", action="store_true")
    return p


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    cfg = get_preset(args.preset) if args.preset else TrainConfig()
    if args.config:
        cfg = load_config_file(args.config, cfg)
    overrides = {}
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}.")
        k, v = item.split("=", 1)
        overrides[k.strip().replace("-", "_")] = v.strip()
    for flag, key in SHORTCUTS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    return config_from_mapping(overrides, cfg)


def _summary(result: dict) -> str:
    f = result["final"]
    parts = [f"test top-1 {f['test_top1']:.4f}"]
    if "test_top5" in f:
        parts.append(f"top-5 {f['test_top5']:.4f}")
    parts.append(f"test loss {f['test_loss']:.4f}")
    return ", ".join(parts)


def _compare_default(args) -> int:
    from ._training import train

    rows = []
    for name in ("digits-hep", "digits-bp"):
        a = argparse.Namespace(**{**vars(args), "preset": name})
        cfg = resolve_config(a)
        start = time.perf_counter()
        result = train(cfg, resume=not args.fresh, progress=not args.no_progress)
        rows.append((name, cfg, result, time.perf_counter() - start))
    print("\nDigits (sklearn, 8x8, 1438 train / 359 test), MLP 64-128-64-10:")
    print(f"  {'gradient':36s} {'test top-1':>10s} {'seconds':>8s}")
    for name, cfg, result, seconds in rows:
        label = {
            "digits-hep": f"holomorphic EP (N={cfg.num_phases}, |beta|={cfg.beta})",
            "digits-bp": "implicit differentiation (BP)",
        }[name]
        print(f"  {label:36s} {result['final']['test_top1']:10.4f} {seconds:8.1f}")
    print(f"  runs and metrics: {rows[0][2]['run_dir']}, {rows[1][2]['run_dir']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list_presets:
        for name, cfg in PRESETS.items():
            print(
                f"{name:24s} {cfg.dataset:8s} {cfg.estimator:9s} hidden={cfg.hidden} "
                f"epochs={cfg.epochs} batch={cfg.batch_size}"
            )
        return 0
    from ._training import TrainingDiverged, train

    try:
        if (
            not args.preset
            and not args.config
            and not args.set
            and args.dataset is None
            and args.estimator is None
        ):
            return _compare_default(args)
        cfg = resolve_config(args)
        result = train(cfg, resume=not args.fresh, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        if isinstance(e, TrainingDiverged):
            print(f"eqprop-train: training diverged: {e}", file=sys.stderr)
            return 1
        print(f"eqprop-train: {e}", file=sys.stderr)
        return 2
    print(f"{cfg.name}: {_summary(result)} (run directory {result['run_dir']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
