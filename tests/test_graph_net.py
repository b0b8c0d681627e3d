"""Energy networks on a graph of couplings: skip couplings (Hopfield-ResNets) are exact under
hEP, block relaxation over a colouring of the layer graph reaches the synchronous
equilibrium in fewer sweeps, a chain is today's conv net, bad graphs are named."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqx_eqprop as ep

from .helpers import fit_slope, implicit_gradient, rel_error

TIGHT = ep.FixedPointRelaxation(max_steps=5000, rtol=1e-13, atol=1e-13)
BLOCK = ep.EvenOddRelaxation(max_steps=5000, rtol=1e-13, atol=1e-13)
SKIPS = [(-1, 0), (0, 1), (1, 2), (2, 3), (0, 2), (1, 3)]  # a chain and two skip couplings


def skip_net(dtype=jnp.float64, couplings=SKIPS, **kw):
    net = ep.EnergyGraphNet(
        (8, 8, 2),
        [(8, 8, 3), (4, 4, 4), (4, 4, 4), 6],
        couplings,
        3,
        weight_scale=0.5,
        dtype=dtype,
        key=jax.random.key(0),
        **kw,
    )
    x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 2), dtype)
    y = jnp.arange(4) % 3
    return net, x, y


def with_biases(net):
    """Non-zero biases, so that a bug that drops one shows."""
    keys = jax.random.split(jax.random.key(5), len(net.biases))
    biases = tuple(0.3 * jax.random.normal(k, b.shape, b.dtype) for k, b in zip(keys, net.biases))
    return eqx.tree_at(lambda m: m.biases, net, biases)


def test_hep_on_a_skip_coupled_conv_net_is_exact_and_its_orders_hold():
    net, x, y = skip_net()
    net = with_biases(net)
    truth = implicit_gradient(net, x, y, relaxation=TIGHT)
    g, _ = ep.gradient(net, x, y, estimator=ep.HolomorphicEP(0.05, num_phases=6), relaxation=TIGHT)
    assert rel_error(g, truth) <= 1e-6
    # the bias of N phases falls as beta^N: the fitted slope for N = 3
    betas = [0.2, 0.1, 0.05]
    for n in (3,):
        errors = [
            rel_error(
                ep.gradient(
                    net,
                    x,
                    y,
                    estimator=ep.HolomorphicEP(b, num_phases=n, error_tolerance=None),
                    relaxation=TIGHT,
                )[0],
                truth,
            )
            for b in betas
        ]
        assert n - 0.3 < fit_slope(betas, errors) < n + 0.3, (n, errors)


def test_the_colouring_separates_coupled_layers():
    net, _, _ = skip_net()
    groups = net.layer_groups()
    assert groups == ((0, 3), (1,), (2,))  # three colours: 0-1-2 is a triangle
    # a chain is even/odd; every coupling of random graphs joins two colours
    assert ep.colour_layers(5, [(-1, 0), (0, 1), (1, 2), (2, 3), (3, 4)]) == ((0, 2, 4), (1, 3))
    rng = np.random.default_rng(0)
    for n in (3, 6, 9):
        pairs = [p for p in itertools.combinations(range(n), 2) if rng.random() < 0.4]
        groups = ep.colour_layers(n, [(-1, 0), *pairs])
        colour = {layer: c for c, group in enumerate(groups) for layer in group}
        assert sorted(colour) == list(range(n))
        assert all(colour[a] != colour[b] for a, b in pairs)


def test_block_relaxation_reaches_the_synchronous_equilibrium_in_fewer_sweeps():
    net, x, _ = skip_net()
    net = with_biases(net)
    s_sync, sync = ep.free_phase(net, x, TIGHT)
    s_block, block = ep.free_phase(net, x, BLOCK)
    for a, b in zip(s_sync, s_block):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-11)
    assert np.all(block.steps < sync.steps), (block.steps, sync.steps)
    # Anderson over the block map reaches it too
    anderson = ep.AndersonRelaxation(max_steps=500, rtol=1e-13, atol=1e-13)
    s_and, _ = ep.free_phase(net, x, anderson)
    for a, b in zip(s_sync, s_and):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-11)


def test_a_chain_is_the_conv_net():
    """A chain graph with the conv net's weights has its dynamics and its gradient."""
    conv = ep.EnergyConvNet(
        (8, 8, 2), (3, 4), 3, pooling=ep.AvgPool(), weight_scale=0.5, dtype=jnp.float64,
        key=jax.random.key(3),
    )  # fmt: skip
    chain = ep.EnergyGraphNet(
        (8, 8, 2), [(4, 4, 3), (2, 2, 4)], [(-1, 0), (0, 1)], 3, dtype=jnp.float64,
        key=jax.random.key(4),
    )  # fmt: skip
    biases = tuple(0.1 * (i + 1) * jnp.ones_like(c.bias) for i, c in enumerate(conv.convs))
    conv = eqx.tree_at(lambda m: tuple(c.bias for c in m.convs), conv, biases)
    weights = tuple(c.weight for c in conv.convs)
    chain = eqx.tree_at(lambda m: tuple(c.op.weight for c in m.couplings), chain, weights)
    chain = eqx.tree_at(lambda m: m.biases, chain, biases)
    chain = eqx.tree_at(lambda m: m.readout_layer, chain, conv.readout_layer)
    assert chain.layer_groups() == ((0,), (1,))
    x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 2), jnp.float64)
    y = jnp.arange(4) % 3
    s_conv, _ = ep.free_phase(conv, x, TIGHT)
    s_chain, _ = ep.free_phase(chain, x, TIGHT)
    for a, b in zip(s_conv, s_chain):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    g_conv = implicit_gradient(conv, x, y, relaxation=TIGHT)
    g_chain = implicit_gradient(chain, x, y, relaxation=TIGHT)
    for a, b in zip(g_conv.convs, g_chain.couplings):
        np.testing.assert_allclose(a.weight, b.op.weight, rtol=1e-9, atol=1e-13)


def test_it_trains_in_float32_with_every_relaxation():
    net, x, y = skip_net(jnp.float32)
    # (float64 above covers the synchronous, block and Anderson relaxations)
    for relaxation in (
        ep.EvenOddRelaxation(max_steps=200, rtol=1e-5, atol=1e-5),
        ep.MixedPrecisionRelaxation(),
    ):
        g, info = ep.gradient(
            net, x.astype(jnp.float32), y, estimator=ep.SymmetricEP(0.1), relaxation=relaxation,
            nudged_relaxation=ep.EvenOddRelaxation(max_steps=200, rtol=1e-5, atol=1e-5),
        )  # fmt: skip
        assert jax.tree_util.tree_leaves(g)[0].dtype == jnp.float32
        assert info.result == ep.RESULTS.successful


@pytest.mark.parametrize(
    "couplings, message",
    [
        ([(-1, 0), (0, 0)], "joins a layer to itself"),
        ([(-1, 0), (0, 1), (1, 0)], "coupled twice"),
        ([(-1, 0), (0, 5)], "outside -1"),
        ([(-1, 0), (1, -1)], "outside -1"),
        ([(-1, 0), (0, 1)], "not connected to the input"),
        ([(-1, 0), ("0", 1)], "pair of ints"),
        ([(-1, 0), (0, 1), (1, 2), (2, 3), (2, 0)], "integer factor"),
    ],
)
def test_bad_graphs_are_named(couplings, message):
    with pytest.raises(ValueError, match=message):
        skip_net(couplings=couplings)


def test_each_weight_takes_its_own_scale():
    """One scale per weight (couplings in order, then the readout), as the paper's
    per-weight gains: each weight's std is its scale over sqrt(fan_in) (checked on
    wide layers), one number is the same as that number repeated, and a list of the
    wrong length is refused."""
    couplings = [(-1, 0), (0, 1), (-1, 1, 1)]
    layers, scales = [(16, 16, 32), (8, 8, 64)], [0.3, 1.2, 0.6, 2.0]
    net = ep.EnergyGraphNet((16, 16, 16), layers, couplings, 10, weight_scale=scales,
                            key=jax.random.key(0))  # fmt: skip
    fan_ins = [3 * 3 * 16, 3 * 3 * 32, 1 * 1 * 16, 8 * 8 * 64]
    weights = [c.op.weight for c in net.couplings] + [net.readout_layer.weight]
    for w, scale, fan_in in zip(weights, scales, fan_ins, strict=True):
        # a truncated normal's std is within a few per cent of its nominal std
        np.testing.assert_allclose(float(jnp.std(w)) * fan_in**0.5, scale, rtol=0.15)
    one = ep.EnergyGraphNet((16, 16, 16), layers, couplings, 10, weight_scale=0.7,
                            key=jax.random.key(0))  # fmt: skip
    same = ep.EnergyGraphNet((16, 16, 16), layers, couplings, 10, weight_scale=[0.7] * 4,
                             key=jax.random.key(0))  # fmt: skip
    for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(same)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="one per weight: 3 couplings"):
        ep.EnergyGraphNet((16, 16, 16), layers, couplings, 10, weight_scale=[0.7] * 3,
                          key=jax.random.key(0))  # fmt: skip
    with pytest.raises(ValueError, match="weight_scale"):
        ep.EnergyGraphNet((16, 16, 16), layers, couplings, 10, weight_scale=[0.7, 0.7, 0, 1],
                          key=jax.random.key(0))  # fmt: skip


@pytest.mark.parametrize(
    "preset",
    # with the long tests: the default suite builds both presets and traces their step
    # (test_every_preset_builds_its_run)
    [
        pytest.param("cifar10-hopfield-resnet13", marks=pytest.mark.slow),
        pytest.param("cifar100-hopfield-resnet13", marks=pytest.mark.slow),
    ],
)
def test_hopfield_resnet13_presets_run_a_step_on_mock_data(tmp_path, capsys, preset):
    """The presets' own pipeline (TFDS, the graph model kind, centered EP, Nesterov
    momentum), at the paper's 8 maps and 12 couplings with 2 channels each."""
    import json

    import tensorflow_datasets as tfds

    from eqx_eqprop.internal import cli_main

    argv = [
        "--preset", preset, "--set", "model.channels=[2, 2, 2, 2]",
        "--set", "relaxation.max_steps=3", "--set", "nudged_relaxation.max_steps=2",
        "--set", "data.eval_batch_size=4", "--epochs", "1", "--batch-size", "4",
        "--out", str(tmp_path / "run"), "--no-progress",
    ]  # fmt: skip
    with tfds.testing.mock_data(num_examples=8):
        assert cli_main(argv) == 0
    assert f"{preset}: test top-1" in capsys.readouterr().out
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 2
    model = ep.load_trained_model(tmp_path / "run")
    assert isinstance(model, ep.EnergyGraphNet) and len(model.couplings) == 12
    assert len(model.layer_groups()) == 3
