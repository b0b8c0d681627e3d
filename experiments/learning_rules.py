"""Compare learning rules from their training runs: final and best test accuracy, time,
sweeps per step, and the cosine of each rule's update to the implicit gradient at the
run's last checkpoint (the JSON `experiments/checkpoint_gradient.py` prints). Writes a
markdown table to stdout and a figure of test accuracy against epoch and time.

    python experiments/checkpoint_gradient.py runs/mnist-contrastive --batch 64 > cg.json
    python experiments/learning_rules.py --out fig.png \
        hEP=runs/mnist-mse-hep:cg_hep.json contrastive=runs/mnist-contrastive:cg.json
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_run(spec: str) -> dict:
    """`NAME=RUN_DIR[:GRADIENT_JSON]` -> the run's epochs and its gradient check."""
    name, _, rest = spec.partition("=")
    if not name or not rest:
        raise SystemExit(f"a run is NAME=RUN_DIR[:GRADIENT_JSON], got {spec!r}")
    run_dir, _, gradient = rest.partition(":")
    metrics = Path(run_dir) / "metrics.jsonl"
    if not metrics.is_file():
        raise SystemExit(f"{metrics} does not exist: is {run_dir} a run directory?")
    epochs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not epochs:
        raise SystemExit(f"{metrics} holds no epoch")
    check = json.loads(Path(gradient).read_text()) if gradient else None
    return {"name": name, "epochs": epochs, "gradient": check}


def sweeps(epoch: dict) -> float:
    """Mean sweeps per sample and step: the free phase and every other phase's."""
    second = ("nudged_steps", "clamped_steps")
    return epoch.get("free_steps", 0.0) + sum(epoch.get(k, 0.0) for k in second)


def table(runs: list[dict]) -> str:
    head = (
        "| rule | epochs | final test top-1 | best | training time (s) | sweeps per step "
        "(last epoch) | cosine to dL/dtheta (training setting) | (converged) |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for run in runs:
        e = run["epochs"]
        g = run["gradient"] or {}
        cos = g.get("training_setting", {}).get("cosine")
        conv = g.get("converged_relaxations", {}).get("cosine")
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        rows.append(
            f"| {run['name']} | {len(e)} | {100 * e[-1]['test_top1']:.2f} % | "
            f"{100 * max(r['test_top1'] for r in e):.2f} % | "
            f"{sum(r['seconds'] for r in e):.0f} | {sweeps(e[-1]):.1f} | {fmt(cos)} | {fmt(conv)} |"
        )
    return "\n".join(rows)


def figure(runs: list[dict], out: str, title: str) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for run in runs:
        e = run["epochs"]
        acc = [100 * r["test_top1"] for r in e]
        time, t = [], 0.0
        for r in e:
            t += r["seconds"]
            time.append(t)
        a.plot([r["epoch"] for r in e], acc, marker="o", label=run["name"])
        b.plot(time, acc, marker="o", label=run["name"])
    a.set(xlabel="epoch", ylabel="test top-1 (%)", title=title)
    b.set(xlabel="training time (s)")
    a.legend()
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="NAME=RUN_DIR[:GRADIENT_JSON]")
    p.add_argument("--out", help="the figure (png)")
    p.add_argument("--title", default="MNIST")
    args = p.parse_args(argv)
    runs = [read_run(spec) for spec in args.runs]
    print(table(runs))
    if args.out:
        figure(runs, args.out, args.title)


if __name__ == "__main__":
    main()
