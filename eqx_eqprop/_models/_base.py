"""The interface every network kind implements, and the dynamics a relaxation runs.

A network kind owns its dynamics: its state, the update map `s <- T(s)` (free, or
nudged by a real or complex `beta`, with optional noise inside), its readout and its
local learning signal. Relaxations and estimators use nothing else, so a new network
kind plugs into every estimator, relaxation and the training loop by implementing
`AbstractModel` (or, for an energy-based network, the smaller `AbstractEnergyModel`).
"""

import abc

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Inexact, Int, PyTree, Scalar

from .._costs import AbstractCost

State = PyTree[Inexact[Array, "..."]]


class Nudge(eqx.Module):
    """The teaching signal `beta * C(readout(s), label)` of one sample.

    - `beta`: real or complex scalar (a complex `beta` makes the states complex).
    - `label`: the integer class label (`(batch,)` where a method says it is batched).
    - `cost`: the readout cost `C`.
    """

    beta: Inexact[Scalar, ""]
    label: Int[Array, "..."]
    cost: AbstractCost


class AbstractModel(eqx.Module):
    """A network whose inference is a relaxation to an equilibrium `s* = T(s*)`, for one
    sample (batches are `vmap`ped around it).

    To add a network kind, implement:

    - `input_shape`, `num_classes`: shape of one input sample; number of classes.
    - `init_state()`: the state the free phase starts from (real, the model's dtype).
    - `drive(x)`: whatever depends on the input only (e.g. `W_0 x + b`), computed once
      per relaxation and handed back to `update`.
    - `update(s, drive, nudge=None, noise=None, *, layers=None)`: one synchronous step
      `T(s)`. `nudge` is a `Nudge` (or `None`: the free phase); a complex `beta` gives
      complex states, so `update` must stay holomorphic in `s` (no `abs`, `conj`,
      `real`) wherever the model claims to be. `noise` (state-shaped, real) is added
      inside the activation. `layers` (for a state that is a tuple of layers) updates
      only those layers and keeps the others: what even/odd relaxations use.
    - `readout(s)`: the logits `(classes,)` that enter the cost.

    Estimators of the equilibrium-propagation family also need the model's local
    learning signal: energy networks derive it from their energy
    (`AbstractEnergyModel.learning_signal`).

    Components (activations, layers, pooling, costs) say whether they are holomorphic;
    `non_holomorphic_parts()` lists those that are not, for the estimators that relax
    complex nudges.
    """

    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample."""

    @property
    @abc.abstractmethod
    def num_classes(self) -> int:
        """Number of readout units (classes)."""

    @abc.abstractmethod
    def init_state(self) -> State:
        """The state the free phase starts from (zeros), real dtype of the model."""

    @abc.abstractmethod
    def drive(self, x: Inexact[Array, "..."]) -> PyTree:
        """The part of the dynamics that depends on the input only."""

    @abc.abstractmethod
    def update(
        self,
        s: State,
        drive: PyTree,
        nudge: Nudge | None = None,
        noise: State | None = None,
        *,
        layers: tuple[int, ...] | None = None,
    ) -> State:
        """One synchronous step `T(s)` (see the class docstring)."""

    @abc.abstractmethod
    def readout(self, s: State) -> Inexact[Array, " classes"]:
        """Logits that enter the cost."""

    @property
    def has_feedback(self) -> bool:
        """Whether a nudge at the output reaches the hidden layers (a connection from a
        higher layer to a lower one): what EP measures. True for energy networks, whose
        couplings are symmetric."""
        return True

    @property
    def output_layer(self) -> int | None:
        """The index of the layer of the state that holds the output units, which rules
        that clamp the outputs (`ContrastiveLearning`, `CoupledLearning`) hold fixed;
        `None` (the default) when the readout lives in the cost, not in the state."""
        return None

    @property
    def num_layers(self) -> int | None:
        """Number of layers of a layered state (a tuple of arrays), else `None`."""
        s = self.init_state()
        return len(s) if isinstance(s, tuple) else None

    def layer_groups(self) -> tuple[tuple[int, ...], ...] | None:
        """Groups of layers that block relaxations (`EvenOddRelaxation`, Anderson over
        its map) update in turn, each with the fresh values of the others: layers no
        coupling joins. For a chain, the even and the odd layers (the default); a graph
        network gives a colouring of its graph. `None` without layers."""
        return even_odd_groups(self.num_layers)

    @property
    def dtype(self) -> jnp.dtype:
        """Real floating dtype of the states (that of the model's arrays)."""
        leaves = [v for v in jtu.tree_leaves(self) if eqx.is_inexact_array(v)]
        return leaves[0].dtype

    def param_groups(self) -> PyTree[str]:
        """A label per trainable array, shaped like `eqx.filter(model,
        eqx.is_inexact_array)`: for per-group optax transforms. By default the path of
        the module that holds the array (`"layers[0]"`, `"readout_layer"`)."""

        def label(path, leaf):
            if not eqx.is_inexact_array(leaf):
                return None
            return jtu.keystr(path[:-1] or path).lstrip(".")

        return jtu.tree_map_with_path(label, self)

    def non_holomorphic_parts(self) -> tuple[str, ...]:
        """Names of the components that declare `holomorphic = False`, e.g.
        `("activation (HardSigmoid)",)`."""
        found = []

        def is_component(v):
            return isinstance(v, eqx.Module) and hasattr(type(v), "holomorphic")

        for path, leaf in jtu.tree_flatten_with_path(self, is_leaf=is_component)[0]:
            if is_component(leaf) and not type(leaf).holomorphic:
                found.append(f"{jtu.keystr(path).lstrip('.')} ({type(leaf).__name__})")
        return tuple(found)

    def unconverged_advice(self) -> tuple[str, ...]:
        """What the components that can keep a relaxation from converging (they declare
        a class attribute `convergence_advice`, e.g. `MaxPool`) suggest, each once."""
        found: list[str] = []

        def advice_of(v) -> str | None:
            return getattr(type(v), "convergence_advice", None)

        def is_component(v) -> bool:
            return isinstance(v, eqx.Module) and advice_of(v) is not None

        for leaf in jtu.tree_leaves(self, is_leaf=is_component):
            advice = advice_of(leaf) if is_component(leaf) else None
            if advice is not None and advice not in found:
                found.append(advice)
        return tuple(found)


def layered_param_groups(model: eqx.Module, layers: str, readout: str = "readout_layer"):
    """`"layer{i}"` for every array of `getattr(model, layers)[i]`, `"readout"` for the
    readout's: the labels of a layered network's `param_groups`."""
    groups = eqx.filter(model, eqx.is_inexact_array)
    labels = tuple(
        jtu.tree_map(lambda _, i=i: f"layer{i}", layer)
        for i, layer in enumerate(getattr(groups, layers))
    )
    readout_labels = jtu.tree_map(lambda _: "readout", getattr(groups, readout))
    return eqx.tree_at(
        lambda m: (getattr(m, layers), getattr(m, readout)), groups, (labels, readout_labels)
    )


def even_odd_groups(num_layers: int | None) -> tuple[tuple[int, ...], ...] | None:
    """The even and the odd layers (one group for a single layer); `None` without layers."""
    if num_layers is None:
        return None
    even, odd = tuple(range(0, num_layers, 2)), tuple(range(1, num_layers, 2))
    return (even, odd) if odd else (even,)


class AbstractDynamics(eqx.Module):
    """The map `s <- T(s)` of one sample that a relaxation iterates or integrates. Its
    arrays (parameters, drive, nudge) are what the implicit adjoint differentiates."""

    @abc.abstractmethod
    def __call__(self, s: State, noise: State | None = None) -> State:
        """`T(s)`, with `noise` added inside the activation."""

    @property
    def num_layers(self) -> int | None:
        """Layers that `update_layers` can update separately, or `None`."""
        return None

    def layer_groups(self) -> tuple[tuple[int, ...], ...] | None:
        """The groups a block relaxation updates in turn (see
        `AbstractModel.layer_groups`); `None` without layers."""
        return even_odd_groups(self.num_layers)

    def noise_scale(self, s: State) -> State | None:
        """A factor on the noise of each unit in a continuous-time noisy relaxation
        (`SDERelaxation`), shaped like `s`: 0 for units held fixed. `None` (the
        default): every unit is noisy."""
        del s
        return None

    def update_layers(self, s: State, layers: tuple[int, ...], noise: State | None = None):
        """`T(s)` on `layers` only; the other layers keep their values."""
        raise ValueError(
            f"{type(self).__name__} has no layered structure: use a synchronous relaxation."
        )


def clamp(s: State, layer: int, value: Inexact[Array, "..."]) -> State:
    """The layered state `s` with layer `layer` replaced by `value`."""
    return tuple(value if i == layer else v for i, v in enumerate(s))


class _ModelDynamics(AbstractDynamics):
    """Dynamics of a model's state: its layers and their groups are the model's."""

    model: eqx.AbstractVar[AbstractModel]

    @property
    def num_layers(self):
        return self.model.num_layers

    def layer_groups(self):
        return self.model.layer_groups()


class ClampedDynamics(_ModelDynamics):
    """A model's free dynamics for one sample with its output units held at `outputs`
    (the clamped phase of contrastive Hebbian learning, Movellan 1991, and of coupled
    learning, Stern et al. 2021): `T(s)` on every other layer, `outputs` on the model's
    `output_layer`. A relaxation started from a clamped state keeps the outputs
    exactly; its equilibrium is that of the other layers given the outputs."""

    model: AbstractModel
    drive: PyTree
    outputs: Inexact[Array, "..."]

    def __call__(self, s, noise=None):
        return clamp(self.model.update(s, self.drive, None, noise), self._layer, self.outputs)

    def noise_scale(self, s):
        """No noise on the held outputs."""
        return tuple(
            jnp.zeros_like(v) if i == self._layer else jnp.ones_like(v) for i, v in enumerate(s)
        )

    @property
    def _layer(self) -> int:
        layer = self.model.output_layer
        assert layer is not None, "ClampedDynamics needs a model with output units"
        return layer

    def update_layers(self, s, layers, noise=None):
        free = tuple(i for i in layers if i != self._layer)
        if free:
            s = self.model.update(s, self.drive, None, noise, layers=free)
        # the outputs are set on every sweep, so a start whose outputs are not the
        # clamp (a 16-bit first pass, a user's own start) is clamped too
        return clamp(s, self._layer, self.outputs)


class Dynamics(_ModelDynamics):
    """A model's dynamics for one sample: the model, its input drive, and the nudge
    (`None` for the free phase)."""

    model: AbstractModel
    drive: PyTree
    nudge: Nudge | None = None

    def __call__(self, s, noise=None):
        return self.model.update(s, self.drive, self.nudge, noise)

    def update_layers(self, s, layers, noise=None):
        if self.model.num_layers is None:
            return super().update_layers(s, layers, noise)
        return self.model.update(s, self.drive, self.nudge, noise, layers=layers)
