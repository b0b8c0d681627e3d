"""What an estimator needs of the network and the cost, declared by the estimator
(`needs()`) and checked in one place, before any work (`check_needs`, called by
`ep.gradient`, `ep.gradient_step` and the training step)."""

from typing import NamedTuple

from .._costs import AbstractCost
from .._models import AbstractEnergyModel, AbstractModel, AbstractVectorFieldModel


class ModelNeeds(NamedTuple):
    """What an estimator needs of the network it estimates for.

    - `energy`: an energy network (`AbstractEnergyModel`), whose local learning signal
      `dF/dtheta` the EP family samples.
    - `vector_field`: a vector-field network (`AbstractVectorFieldModel`).
    - `feedback`: a connection from a higher layer to a lower one, so that a nudge at
      the output reaches the hidden layers (`model.has_feedback`).
    - `holomorphic`: every part of the network and the cost holomorphic, for nudges at
      complex beta.
    - `output_units`: output units in the state (`model.output_layer`) and a cost with
      a finite minimiser (`cost.target`), for rules that clamp the outputs.
    """

    energy: bool = False
    vector_field: bool = False
    feedback: bool = False
    holomorphic: bool = False
    output_units: bool = False


def require_energy_model(model: AbstractModel, name: str) -> None:
    if not isinstance(model, AbstractEnergyModel):
        raise TypeError(
            f"{name} samples the local learning signal dF/dtheta of an energy-based network "
            f"(an AbstractEnergyModel); {type(model).__name__} has no energy. For a "
            "vector-field network use GeneralizedHEP; ImplicitDifferentiation and "
            "RecurrentBackprop work on any network."
        )


def require_vector_field(model: AbstractModel, name: str) -> None:
    if not isinstance(model, AbstractVectorFieldModel):
        raise TypeError(
            f"{name} differentiates the activities of a vector-field network (an "
            f"AbstractVectorFieldModel, e.g. VectorFieldNet); {type(model).__name__} is not "
            "one. For an energy network use HolomorphicEP: on it, generalized hEP is hEP."
        )


def require_feedback(model: AbstractModel, name: str) -> None:
    if not model.has_feedback:
        raise ValueError(
            f"{name}: this network has no feedback connection (its graph has no edge from a "
            "higher layer to a lower one), so the nudge at the output never reaches the "
            "hidden layers and EP has nothing to measure: EP needs feedback. Use "
            "graph='symmetric' or 'loop', or train it with ImplicitDifferentiation."
        )


def require_holomorphic(model: AbstractModel, cost: AbstractCost, name: str) -> None:
    """Complex nudges need every part of the network and the cost to be holomorphic."""
    parts = list(model.non_holomorphic_parts())
    if not type(cost).holomorphic:
        parts.append(f"cost ({type(cost).__name__})")
    if parts:
        raise ValueError(
            f"{name} relaxes complex nudges, which needs a holomorphic network and cost; "
            f"not holomorphic: {', '.join(parts)}. Use a holomorphic activation (Sigmoid(), "
            "SmoothClip()), SoftmaxPool() instead of max pooling, or real phases only "
            "(ClassicEP, SymmetricEP, HolomorphicEP with num_phases <= 2)."
        )


def require_output_units(model: AbstractModel, cost: AbstractCost, name: str) -> None:
    """Clamping holds output units of the state at the cost's minimiser."""
    if model.output_layer is None:
        raise ValueError(
            f"{name} clamps the output units, which must be neurons of the network's state; "
            f"this {type(model).__name__} reads its outputs out inside the cost (a readout "
            "layer, not neurons). Build it with output_units=True (in a config: "
            "model.output_units = true) and train it with a SquaredError cost."
        )
    if not type(cost).has_target():
        raise ValueError(
            f"{name} clamps the outputs at the target the cost is smallest at, and "
            f"{type(cost).__name__} has none (no finite minimiser). Use SquaredError() "
            '(in a config: cost = "squared_error"), as Movellan (1991) and Stern et al. '
            "(2021) do."
        )


def check_needs(needs: ModelNeeds, model: AbstractModel, cost: AbstractCost, name: str) -> None:
    """Raise, naming the estimator, if `model` or `cost` lacks what `needs` declares."""
    if needs.energy:
        require_energy_model(model, name)
    if needs.vector_field:
        require_vector_field(model, name)
    if needs.feedback:
        require_feedback(model, name)
    if needs.holomorphic:
        require_holomorphic(model, cost, name)
    if needs.output_units:
        require_output_units(model, cost, name)
