"""What `train` calls at its events: the `Hook` interface, the progress bar, the line
per epoch, and the record an epoch ends with."""

import sys
from collections.abc import Mapping

from tqdm import tqdm

from .._metrics import MetricSpec
from .._models import AbstractModel
from ._config import TrainConfig


class Hook:
    """Called by `train` at its events; override what you need. `summary` holds the
    step metrics since the last call, reduced as their `MetricSpec`s say (means unless
    declared otherwise); `record` is an `EpochRecord`."""

    def on_start(self, cfg: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> None:
        pass

    def on_log(self, step: int, summary: dict) -> None:
        pass

    def on_epoch_end(self, record: dict, model: AbstractModel) -> None:
        pass

    def on_end(self) -> None:
        pass


class ProgressBar(Hook):
    """A tqdm bar per epoch with the live loss, accuracy and residual."""

    def on_start(self, cfg, epoch, step, steps_per_epoch):
        self.cfg, self.per_epoch = cfg, steps_per_epoch
        self.bar = None
        self._open(epoch, step % steps_per_epoch if step else 0)

    def _open(self, epoch, initial):
        if self.bar is not None:
            self.bar.close()
        self.bar = tqdm(
            total=self.per_epoch,
            initial=initial,
            leave=False,
            desc=f"{self.cfg.name} epoch {epoch + 1}/{self.cfg.loop['epochs']}",
            dynamic_ncols=True,
        )

    def on_log(self, step, summary):
        assert self.bar is not None  # opened by on_start and on_epoch_end
        done = step % self.per_epoch or self.per_epoch
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix(
            loss=f"{summary['loss']:.3f}",
            acc=f"{summary['accuracy']:.3f}",
            res=f"{summary['residual']:.1e}",
        )

    def on_epoch_end(self, record, model):
        if record["epoch"] < self.cfg.loop["epochs"]:
            self._open(record["epoch"], 0)
        else:  # the last epoch: no bar for an epoch that will not run
            self.on_end()

    def on_end(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochRecord(dict):
    """What hooks get at the end of an epoch: the epoch's metrics, as `metrics.jsonl`
    holds them, and `specs`, how each metric was reduced and what it is called
    (`MetricSpec`, declared by the estimator's diagnostics)."""

    def __init__(self, record: Mapping, specs: Mapping[str, MetricSpec] | None = None):
        super().__init__(record)
        self.specs = dict(specs or {})


class Printer(Hook):
    """One line per epoch, with every metric whose `MetricSpec` has a `label`."""

    def __init__(self, name: str):
        self.name = name

    def on_epoch_end(self, record, model):
        extra = ""
        converged = record.get("converged_steps", 1.0)
        for key, spec in getattr(record, "specs", {}).items():
            if spec.label is None:
                continue
            if key in record:
                extra += f", {spec.label} {record[key]:.1e}"
                if spec.reduce == "converged_mean" and converged < 1.0:
                    extra += f" (over the {100 * converged:.2g} % of steps that converged)"
            elif spec.reduce == "converged_mean" and "converged_steps" in record:
                extra += f", {spec.label} n/a (every step had a relaxation stop at its budget)"
        tqdm.write(
            f"{self.name} epoch {record['epoch']:3d}: test top1 {record['test_top1']:.4f}, "
            f"loss {record['test_loss']:.4f}, {record['seconds']:.1f} s{extra}",
            file=sys.stdout,
        )
