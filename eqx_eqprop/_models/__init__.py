from ._base import (
    AbstractDynamics as AbstractDynamics,
    AbstractModel as AbstractModel,
    ClampedDynamics as ClampedDynamics,
    Dynamics as Dynamics,
    Nudge as Nudge,
    State as State,
    clamp as clamp,
)
from ._conv import EnergyConvNet as EnergyConvNet
from ._energy import AbstractEnergyModel as AbstractEnergyModel
from ._graph import (
    Coupling as Coupling,
    EnergyGraphNet as EnergyGraphNet,
    colour_layers as colour_layers,
    hopfield_resnet_graph as hopfield_resnet_graph,
)
from ._mlp import EnergyMLP as EnergyMLP, check_float_dtype as check_float_dtype
from ._vector_field import (
    AbstractVectorFieldModel as AbstractVectorFieldModel,
    VectorFieldNet as VectorFieldNet,
    feedback_angles as feedback_angles,
    vector_field_from_energy_mlp as vector_field_from_energy_mlp,
)
