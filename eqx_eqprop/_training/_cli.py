"""`eqprop-train`: train a network from a preset or a TOML file, with overrides.

With no arguments it trains an hEP MLP on the embedded digits set and, next to it, the
same network trained with implicit-differentiation gradients, and prints both test
accuracies (about a minute on 2 CPU cores, offline).
"""

import argparse
import os
import sys
import time
import tomllib

import jax

from ._config import TrainConfig
from ._presets import get_preset, preset_names
from ._registry import kinds
from ._schema import SECTIONS

SHORTCUTS = {  # flag -> setting
    "dataset": "data.kind",
    "data_dir": "data.data_dir",
    "estimator": "estimator.kind",
    "epochs": "loop.epochs",
    "batch_size": "data.batch_size",
    "seed": "loop.seed",
    "out": "loop.out_dir",
    "devices": "loop.devices",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eqprop-train",
        description=(__doc__ or "").splitlines()[0],
        epilog="Sections: " + ", ".join(SECTIONS) + ". Values are TOML: "
        '--set model.hidden=[256,256] --set estimator.rtol=\\"none\\" (or none).',
    )
    p.add_argument("--preset", help="a named configuration (see --list-presets)")
    p.add_argument("--config", help="a TOML file of settings (merged over the preset)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set estimator.beta=0.2 --set model.hidden=[256,256]",
    )
    p.add_argument("--dataset", help="data.kind: " + ", ".join(kinds("data")))
    p.add_argument("--data-dir", help="data.data_dir: MNIST-format IDX files, or a TFDS data_dir")
    p.add_argument(
        "--estimator",
        help="estimator.kind (keeps the arguments it takes): " + ", ".join(kinds("estimator")),
    )
    p.add_argument("--epochs", type=int, help="loop.epochs")
    p.add_argument("--batch-size", type=int, help="data.batch_size")
    p.add_argument("--seed", type=int, help="loop.seed")
    p.add_argument("--out", help="loop.out_dir (default runs/{name}/seed{seed})")
    p.add_argument("--devices", type=int, help="loop.devices: how many to use (0: all visible)")
    p.add_argument("--coordinator", help="multi-host: HOST:PORT of process 0 (every host)")
    p.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    p.add_argument("--process-id", type=int, help="multi-host: this process's index")
    p.add_argument(
        "--coordinator-timeout",
        type=float,
        default=120.0,
        help="multi-host: seconds to wait for the coordinator and the other processes",
    )
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-presets", action="store_true")
    p.add_argument("--show-config", action="store_true", help="print the TOML and exit")
    return p


def parse_value(text: str):
    """A TOML value (`0.2`, `[256, 256]`, `true`, `"sgd"`), else the bare string."""
    text = text.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_setting(item: str) -> tuple[str, object]:
    """`"section.key=value"` as `("section.key", value)`, the value read as TOML."""
    if "=" not in item:
        raise ValueError(f"--set takes SECTION.KEY=VALUE, got {item!r}.")
    k, v = item.split("=", 1)
    return k.strip().replace("-", "_"), parse_value(v)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    cfg = get_preset(args.preset) if args.preset else TrainConfig()
    if args.config:
        cfg = TrainConfig.from_file(args.config, cfg)
    changes = {}
    for flag, key in SHORTCUTS.items():
        value = getattr(args, flag)
        if value is not None:
            changes[key] = value
    changes.update(parse_setting(item) for item in args.set)
    # applied together and validated once (settings that must change together, such as
    # rtol and atol, may come as separate flags); a section's kind before its arguments
    kinds_first = sorted(changes, key=lambda k: not k.endswith(".kind"))
    return cfg.update({k: changes[k] for k in kinds_first})


def _summary(result: dict) -> str:
    f = result["final"]
    parts = [f"test top-1 {f['test_top1']:.4f}"]
    if "test_top5" in f:
        parts.append(f"top-5 {f['test_top5']:.4f}")
    parts.append(f"test loss {f['test_loss']:.4f}")
    return ", ".join(parts)


def _compare_default(args) -> int:
    from ._loop import train

    rows = []
    for name in ("digits-hep", "digits-bp"):
        cfg = resolve_config(argparse.Namespace(**{**vars(args), "preset": name}))
        start = time.perf_counter()
        result = train(cfg, resume=not args.fresh, progress=not args.no_progress)
        rows.append((name, cfg, result, time.perf_counter() - start))
    print("\nDigits (sklearn, 8x8, 1438 train / 359 test), MLP 64-128-64-10:")
    print(f"  {'gradient':42s} {'test top-1':>10s} {'seconds':>8s}")
    for name, cfg, result, seconds in rows:
        if name == "digits-hep":
            est = cfg.estimator
            radius = f"|beta|={est['beta']}"
            if est.get("target_error") not in (None, "none"):
                radius = f"|beta|<={est['beta']} adaptive"
            label = f"holomorphic EP (N={est['num_phases']}, {radius})"
        else:
            label = "implicit differentiation (BP)"
        print(f"  {label:42s} {result['final']['test_top1']:10.4f} {seconds:8.1f}")
    print(f"  runs and metrics: {rows[0][2]['run_dir']}, {rows[1][2]['run_dir']}")
    return 0


def _list_presets() -> None:
    for name in preset_names():
        cfg = get_preset(name)
        model = cfg.model
        size = model.get("hidden", model.get("channels", ""))
        print(
            f"{name:26s} {cfg.data['kind']:9s} {model['kind']}{list(size) if size else ''} "
            f"{cfg.estimator['kind']:11s} epochs={cfg.loop['epochs']} "
            f"batch={cfg.data['batch_size']}"
        )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    status = _run(args)
    if status and jax.process_count() > 1:
        # the other processes may be gone: JAX's exit handler would wait for them at its
        # shutdown barrier for minutes, so leave at once
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _run(args: argparse.Namespace) -> int:
    from ._devices import initialize_distributed
    from ._loop import TrainingDiverged, train

    cfg = None
    try:
        initialize_distributed(
            args.coordinator, args.num_processes, args.process_id, args.coordinator_timeout
        )
        if args.list_presets:
            _list_presets()
            return 0
        defaults = not (args.preset or args.config or args.set or args.show_config)
        if defaults and args.dataset is None and args.estimator is None:
            return _compare_default(args)
        cfg = resolve_config(args)
        if args.show_config:
            print(cfg.to_toml(), end="")
            return 0
        result = train(cfg, resume=not args.fresh, progress=not args.no_progress)
    except TrainingDiverged as e:
        print(f"eqprop-train: training diverged: {e}", file=sys.stderr)
        return 1
    except jax.errors.JaxRuntimeError as e:
        if jax.process_count() == 1:
            raise
        first = str(e).strip().splitlines()[0]
        where = f" ({cfg.run_dir / 'checkpoint.json'})" if cfg is not None else ""
        print(
            f"eqprop-train: process {jax.process_index()} of {jax.process_count()}: an "
            f"exchange with the other processes failed ({first}). Another process of the "
            "run has stopped or cannot be reached: see its output. Start the same commands "
            f"again on every process to resume from the last checkpoint{where}.",
            file=sys.stderr,
        )
        return 2
    except (ValueError, TypeError, OSError, RuntimeError) as e:  # OSError: a file or disk
        print(f"eqprop-train: {e}", file=sys.stderr)
        return 2
    print(f"{cfg.name}: {_summary(result)} (run directory {result['run_dir']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
