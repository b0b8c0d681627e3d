"""How a training run reduces and reports the scalars of an estimate: each metric
declares it (`MetricSpec`), so that the training loop names no estimator's metric."""

from typing import Literal, NamedTuple


class MetricSpec(NamedTuple):
    """How an epoch reduces a metric of `info.metrics()` and how reports name it.

    - `reduce`: `"mean"` over the steps (the default for a metric without a spec),
      `"max"`, or `"converged_mean"`: the mean over the steps whose relaxations all met
      their tolerance (a relaxation stopped at its budget spoils such a metric, e.g. the
      aliasing estimate); absent from the epoch's record when no step converged.
    - `label`: the name the epoch line prints it under; `None`: not printed.
    - `unconverged`: set on the fraction of a phase's relaxations that missed their
      tolerance, naming the phase (`"free"`, `"nudged"`, ...) for the end-of-epoch
      warning.
    """

    reduce: Literal["mean", "max", "converged_mean"] = "mean"
    label: str | None = None
    unconverged: str | None = None
