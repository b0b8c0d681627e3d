from ._anderson import AndersonRelaxation as AndersonRelaxation
from ._base import (
    AbstractRelaxation as AbstractRelaxation,
    RelaxationStats as RelaxationStats,
    discrete_noise as discrete_noise,
    relaxation_stats as relaxation_stats,
)
from ._fixed_point import (
    AbstractDiscreteRelaxation as AbstractDiscreteRelaxation,
    EvenOddRelaxation as EvenOddRelaxation,
    FixedPointRelaxation as FixedPointRelaxation,
)
from ._mixed import MixedPrecisionRelaxation as MixedPrecisionRelaxation
from ._ode import ODERelaxation as ODERelaxation, SDERelaxation as SDERelaxation
from ._straggler import StragglerRelaxation as StragglerRelaxation
