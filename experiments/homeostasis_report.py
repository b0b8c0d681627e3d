"""Summarise the homeostasis runs (presets mnist-vf90, mnist-loop and their -homeostasis
variants): per-epoch metrics from each run directory, and, on the final models, the
Jacobian symmetry ratio (the same probe estimate for every run), the feedback angles
and the cosine of generalized hEP to the implicit gradient on 256 test images. Writes
`homeostasis_report.png`, `homeostasis_report.json` and the metrics files.

    python experiments/homeostasis_report.py RUNS_DIR
"""

import json
import shutil
from pathlib import Path

import jax
import matplotlib.pyplot as plt

import eqx_eqprop as ep

from _util import ROOT, images, parser, save

RUNS = ("mnist-vf90", "mnist-vf90-homeostasis", "mnist-loop", "mnist-loop-homeostasis")


def final_checks(model, x, y) -> dict:
    relaxation = ep.EvenOddRelaxation(max_steps=2000, rtol=1e-5, atol=1e-5)
    estimator = ep.GeneralizedHEP(
        0.2, 4, error_tolerance=None, reference=ep.ImplicitDifferentiation()
    )
    _, info = ep.gradient(model, x, y, estimator=estimator, relaxation=relaxation, throw=False)
    activities = jax.vmap(model.activities)(info.free_state)
    ratio = ep.JacobianHomeostasis(num_probes=64).symmetry_ratio(
        model, x, activities, jax.random.key(0)
    )
    return {
        "cosine_to_implicit": float(info.diagnostics["reference_cosine"]),
        "symmetry_ratio": float(ratio),
        "feedback_angles": {str(k): round(v, 2) for k, v in ep.feedback_angles(model).items()},
    }


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("runs_dir")
    p.add_argument("--results", default=str(ROOT / "experiments" / "results"))
    args = p.parse_args(argv)
    x, y, _ = images(args.data_dir, 256, args.seed)
    report = {}
    for name in RUNS:
        run = Path(args.runs_dir) / name
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        target = Path(args.results) / "homeostasis_metrics"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / "metrics.jsonl", target / f"{name}.jsonl")
        model = ep.load_trained_model(run)
        report[name] = {
            "history": history,
            "final": history[-1],
            **final_checks(model, x.astype(model.dtype), y),
        }
        print(name, {k: v for k, v in report[name].items() if k not in ("history", "final")})

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    styles = {"mnist-vf90": "C0", "mnist-loop": "C1"}
    for name, entry in report.items():
        base = name.replace("-homeostasis", "")
        style = "-" if name == base else "--"
        label = ("90-degree MLP" if base == "mnist-vf90" else "loop") + (
            " + homeostasis" if name != base else ""
        )
        h = entry["history"]
        epochs = [e["epoch"] for e in h]
        axes[0].plot(epochs, [e["test_top1"] for e in h], style, color=styles[base], label=label)
        axes[1].plot(epochs, [e["reference_cosine"] for e in h], style, color=styles[base])
        if "symmetry_ratio" in h[0]:
            axes[2].plot(epochs, [e["symmetry_ratio"] for e in h], style, color=styles[base])
        axes[2].plot([epochs[-1]], [entry["symmetry_ratio"]], "o", color=styles[base])
    axes[0].set(xlabel="epoch", ylabel="test accuracy", title="MNIST, generalized hEP")
    axes[1].set(xlabel="epoch", ylabel="cosine to the true gradient (RBP)")
    axes[2].set(
        xlabel="epoch", ylabel="Jacobian symmetry ratio", title="dots: final models, 64 probes"
    )
    axes[0].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    summary = {
        name: {
            "test_top1": entry["final"]["test_top1"],
            "cosine_to_implicit": entry["cosine_to_implicit"],
            "symmetry_ratio": entry["symmetry_ratio"],
            "feedback_angles": entry["feedback_angles"],
            "seconds": sum(e["seconds"] for e in entry["history"]),
        }
        for name, entry in report.items()
    }
    save(fig, {"runs": summary, "runs_dir": args.runs_dir}, args.out, "homeostasis_report")


if __name__ == "__main__":
    main()
