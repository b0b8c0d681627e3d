"""eqx_eqprop: equilibrium propagation and its holomorphic variant in JAX + Equinox."""

from ._activations import (
    AbstractActivation as AbstractActivation,
    ClippedReLU as ClippedReLU,
    HardSigmoid as HardSigmoid,
    ReLU as ReLU,
    Sigmoid as Sigmoid,
    SiLU as SiLU,
    SmoothClip as SmoothClip,
)
from ._costs import (
    AbstractCost as AbstractCost,
    CrossEntropy as CrossEntropy,
    SquaredError as SquaredError,
)
from ._data import Dataset as Dataset, load_dataset as load_dataset
from ._diagnostics import update_spectral_radius as update_spectral_radius
from ._estimators import (
    BPTT as BPTT,
    AbstractEstimator as AbstractEstimator,
    AbstractGradientInfo as AbstractGradientInfo,
    AbstractPhaseEstimator as AbstractPhaseEstimator,
    AbstractRadius as AbstractRadius,
    AdaptiveRadius as AdaptiveRadius,
    AdjointInfo as AdjointInfo,
    CenteredEP as CenteredEP,
    ClampedInfo as ClampedInfo,
    ClassicEP as ClassicEP,
    ConstantRadius as ConstantRadius,
    ContrastiveLearning as ContrastiveLearning,
    CoupledLearning as CoupledLearning,
    GeneralizedHEP as GeneralizedHEP,
    GradientInfo as GradientInfo,
    HolomorphicEP as HolomorphicEP,
    ImplicitDifferentiation as ImplicitDifferentiation,
    JacobianHomeostasis as JacobianHomeostasis,
    ModelNeeds as ModelNeeds,
    OscillatingEP as OscillatingEP,
    PhaseInfo as PhaseInfo,
    RecurrentBackprop as RecurrentBackprop,
    SymmetricEP as SymmetricEP,
)
from ._gradient import (
    equilibrium_loss as equilibrium_loss,
    gradient as gradient,
    gradient_step as gradient_step,
    nudged_phase as nudged_phase,
    predict as predict,
)
from ._inference import free_phase as free_phase
from ._layers import (
    AbstractPool as AbstractPool,
    AvgPool as AvgPool,
    Conv2d as Conv2d,
    Dense as Dense,
    IdentityPool as IdentityPool,
    MaxPool as MaxPool,
    SoftmaxPool as SoftmaxPool,
)
from ._metrics import MetricSpec as MetricSpec
from ._models import (
    AbstractDynamics as AbstractDynamics,
    AbstractEnergyModel as AbstractEnergyModel,
    AbstractModel as AbstractModel,
    AbstractVectorFieldModel as AbstractVectorFieldModel,
    ClampedDynamics as ClampedDynamics,
    Coupling as Coupling,
    Dynamics as Dynamics,
    EnergyConvNet as EnergyConvNet,
    EnergyGraphNet as EnergyGraphNet,
    EnergyMLP as EnergyMLP,
    Nudge as Nudge,
    VectorFieldNet as VectorFieldNet,
    colour_layers as colour_layers,
    feedback_angles as feedback_angles,
    hopfield_resnet_graph as hopfield_resnet_graph,
)
from ._relaxation import (
    AbstractDiscreteRelaxation as AbstractDiscreteRelaxation,
    AbstractRelaxation as AbstractRelaxation,
    AndersonRelaxation as AndersonRelaxation,
    EvenOddRelaxation as EvenOddRelaxation,
    FixedPointRelaxation as FixedPointRelaxation,
    MixedPrecisionRelaxation as MixedPrecisionRelaxation,
    ODERelaxation as ODERelaxation,
    RelaxationStats as RelaxationStats,
    SDERelaxation as SDERelaxation,
    StragglerRelaxation as StragglerRelaxation,
)
from ._results import RESULTS as RESULTS
from ._training import (
    PRESETS as PRESETS,
    CheckpointError as CheckpointError,
    EpochRecord as EpochRecord,
    Hook as Hook,
    Printer as Printer,
    ProgressBar as ProgressBar,
    TrainConfig as TrainConfig,
    TrainingDiverged as TrainingDiverged,
    TrainState as TrainState,
    TrainStep as TrainStep,
    get_preset as get_preset,
    initialize_distributed as initialize_distributed,
    kinds as kinds,
    load_trained_model as load_trained_model,
    make_train_step as make_train_step,
    preset_names as preset_names,
    register as register,
    train as train,
)

__version__ = "0.1.0"
