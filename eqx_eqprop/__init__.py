"""eqx_eqprop: equilibrium propagation and its holomorphic variant in JAX + Equinox."""

from ._activations import (
    AbstractActivation as AbstractActivation,
    HardSigmoid as HardSigmoid,
    ReLU as ReLU,
    Sigmoid as Sigmoid,
    SiLU as SiLU,
    SmoothClip as SmoothClip,
)
from ._config import PRESETS as PRESETS, TrainConfig as TrainConfig, get_preset as get_preset
from ._costs import (
    AbstractCost as AbstractCost,
    CrossEntropy as CrossEntropy,
    SquaredError as SquaredError,
)
from ._data import Dataset as Dataset, load_dataset as load_dataset
from ._diagnostics import update_spectral_radius as update_spectral_radius
from ._estimators import (
    BPTT as BPTT,
    ClassicEP as ClassicEP,
    HolomorphicEP as HolomorphicEP,
    ImplicitDifferentiation as ImplicitDifferentiation,
    OscillatingEP as OscillatingEP,
    RecurrentBackprop as RecurrentBackprop,
    SymmetricEP as SymmetricEP,
)
from ._gradient import (
    AbstractEstimator as AbstractEstimator,
    GradientInfo as GradientInfo,
    equilibrium_loss as equilibrium_loss,
    free_phase as free_phase,
    gradient as gradient,
    nudged_phase as nudged_phase,
    predict as predict,
)
from ._models import AbstractEnergyModel as AbstractEnergyModel, EnergyMLP as EnergyMLP
from ._relaxation import (
    AbstractRelaxation as AbstractRelaxation,
    FixedPointRelaxation as FixedPointRelaxation,
    ODERelaxation as ODERelaxation,
    RelaxationStats as RelaxationStats,
    SDERelaxation as SDERelaxation,
)
from ._results import RESULTS as RESULTS
from ._training import (
    TrainingDiverged as TrainingDiverged,
    load_trained_model as load_trained_model,
    make_train_step as make_train_step,
    train as train,
)

__version__ = "0.1.0"
