from ._base import (
    AbstractEstimator as AbstractEstimator,
    AbstractGradientInfo as AbstractGradientInfo,
    AdjointInfo as AdjointInfo,
    GradientInfo as GradientInfo,
    PhaseInfo as PhaseInfo,
)
from ._clamped import (
    ClampedInfo as ClampedInfo,
    ContrastiveLearning as ContrastiveLearning,
    CoupledLearning as CoupledLearning,
)
from ._ep import (
    AbstractPhaseEstimator as AbstractPhaseEstimator,
    CenteredEP as CenteredEP,
    ClassicEP as ClassicEP,
    HolomorphicEP as HolomorphicEP,
    SymmetricEP as SymmetricEP,
)
from ._generalized import (
    GeneralizedHEP as GeneralizedHEP,
    JacobianHomeostasis as JacobianHomeostasis,
)
from ._needs import ModelNeeds as ModelNeeds
from ._oscillating import OscillatingEP as OscillatingEP
from ._radius import (
    AbstractRadius as AbstractRadius,
    AdaptiveRadius as AdaptiveRadius,
    ConstantRadius as ConstantRadius,
)
from ._reference import (
    BPTT as BPTT,
    ImplicitDifferentiation as ImplicitDifferentiation,
    RecurrentBackprop as RecurrentBackprop,
)
