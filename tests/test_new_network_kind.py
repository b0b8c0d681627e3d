"""A network kind defined here, in a few dozen lines, touching no library file: an energy
network with one hidden layer and symmetric lateral connections (a Hopfield-like
coupling `0.5 h^T S h`). Through the model interface alone it gets exact holomorphic EP
gradients, and trains through the configuration registry and the library's loop."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqx_eqprop as ep
from eqx_eqprop.internal import REGISTRY, load_digits

from .helpers import TIGHT, implicit_gradient, rel_error


class LateralNet(ep.AbstractEnergyModel):
    """`Phi = <W x + b, h> + 0.5 h^T S h`, `S = (L + L^T) / 2` with zero diagonal."""

    input_layer: ep.Dense
    lateral: jax.Array
    readout_layer: ep.Dense
    activation: ep.AbstractActivation

    def __init__(self, n_in, n_hidden, n_classes, *, scale=0.5, dtype=jnp.float32, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.input_layer = ep.Dense(n_in, n_hidden, dtype=dtype, key=k1)
        self.lateral = scale * jax.random.normal(k2, (n_hidden, n_hidden), dtype)
        self.lateral = self.lateral / math.sqrt(n_hidden)
        self.readout_layer = ep.Dense(n_hidden, n_classes, dtype=dtype, key=k3)
        self.activation = ep.Sigmoid()

    @property
    def input_shape(self):
        return (self.input_layer.in_features,)

    @property
    def num_classes(self):
        return self.readout_layer.out_features

    def init_state(self):
        return (jnp.zeros(self.input_layer.out_features, self.dtype),)

    def drive(self, x):
        return (self.input_layer(x),)

    def coupling(self, s):
        sym = 0.5 * (self.lateral + self.lateral.T)
        sym = sym - jnp.diag(jnp.diag(sym))
        return 0.5 * s[0] @ (sym @ s[0])

    def readout(self, s):
        return self.readout_layer(s[0])


def lateral_net(sample_shape, num_classes, *, key, hidden=32, scale=0.5, dtype="float32"):
    """The registry's factory: `(sample_shape, num_classes, *, key, **args)`."""
    n_in = math.prod(sample_shape)
    return LateralNet(n_in, hidden, num_classes, scale=scale, dtype=jnp.dtype(dtype), key=key)


@pytest.fixture
def registered():
    ep.register("model", "lateral", lateral_net)
    yield
    REGISTRY["model"].pop("lateral")


def test_holomorphic_ep_is_exact_on_the_new_kind():
    model = LateralNet(9, 14, 4, dtype=jnp.float64, key=jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (6, 9), jnp.float64)
    y = jnp.arange(6) % 4
    truth = implicit_gradient(model, x, y)
    grads, info = ep.gradient(model, x, y, estimator=ep.HolomorphicEP(0.1, 8), relaxation=TIGHT)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(
        eqx.filter(model, eqx.is_inexact_array)
    )
    assert rel_error(grads, truth) <= 1e-6
    assert float(info.error_estimate) <= 1e-6
    # the order of the symmetric EP bias on it is 2
    errors = [
        rel_error(
            ep.gradient(
                model, x, y, estimator=ep.SymmetricEP(b, error_tolerance=None), relaxation=TIGHT
            )[0],
            truth,
        )
        for b in (0.1, 0.05, 0.025)
    ]
    slope = np.polyfit(np.log([0.1, 0.05, 0.025]), np.log(errors), 1)[0]
    assert abs(slope - 2) < 0.2, (slope, errors)


def test_the_new_kind_trains_through_the_registry_and_the_loop(tmp_path, registered):
    cfg = ep.get_preset("digits-hep").update(
        {
            "name": "lateral",
            "model": {"kind": "lateral", "hidden": 24},
            "optimizer.lr": 0.5,
            "loop.epochs": 5,
            "loop.out_dir": str(tmp_path / "{name}"),
        }
    )
    result = ep.train(cfg, data=load_digits(), progress=False, verbose=False)
    history = result["history"]
    assert history[-1]["test_loss"] < 0.8 * history[0]["test_loss"]
    assert history[-1]["test_top1"] > 0.5
    assert isinstance(result["model"], LateralNet)
    # the checkpoint names the kind and its arguments: the model comes back from it
    reloaded = ep.load_trained_model(result["run_dir"])
    assert isinstance(reloaded, LateralNet)
    np.testing.assert_array_equal(reloaded.lateral, result["model"].lateral)
