"""The end-of-epoch warning about steps that failed, with the advice of the objects that
failed (relaxations, the model's components, the estimator)."""

import warnings
from collections.abc import Sequence

from .._estimators import AbstractEstimator
from .._metrics import MetricSpec
from .._models import AbstractModel
from .._relaxation import AbstractRelaxation


def failure_advice(
    relaxations: Sequence[AbstractRelaxation], model: AbstractModel, estimator: AbstractEstimator
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What the objects of a run suggest when its relaxations miss their tolerance (the
    relaxations and the model's components) and when its estimates are flagged
    inaccurate (the estimator): `(unconverged, inaccurate)`, each piece of advice once."""
    unconverged = [a for r in relaxations for a in r.unconverged_advice()]
    unconverged += model.unconverged_advice()
    once = tuple(dict.fromkeys(unconverged))
    return once, tuple(dict.fromkeys(estimator.inaccurate_advice()))


def warn_failed(
    name: str,
    epoch: int,
    record: dict,
    steps: int,
    specs: dict[str, MetricSpec],
    advice: tuple[tuple[str, ...], tuple[str, ...]],
) -> None:
    """The end-of-epoch warning about steps whose relaxations missed their tolerance or
    whose estimate was flagged inaccurate, with the `advice` of the objects that failed
    (`failure_advice`)."""
    parts = []
    for key, spec in specs.items():
        if spec.unconverged and record.get(key):
            parts.append(f"{100 * record[key]:.2g} % of the {spec.unconverged} relaxations")
    if parts:
        missed = " and ".join(parts) + " did not reach their tolerance"
        suggestions = advice[0]
    else:
        missed = "the estimator flagged its estimate as inaccurate (error_tolerance)"
        suggestions = advice[1]
    fields = " and ".join(["failed_steps", ", ".join(k for k, s in specs.items() if s.unconverged)])
    warnings.warn(
        f"{name}, epoch {epoch}: in {record['failed_steps']} of {steps} steps {missed} "
        f"({fields} in metrics.jsonl)."
        + (f" To change it: {'; '.join(suggestions)}." if suggestions else ""),
        RuntimeWarning,
        stacklevel=3,
    )
