"""The training plumbing against independent computations: the optimiser's weight decay
and schedules against their formulas, the whole optimiser and estimator state across a
resume, when a checkpoint is due, the augmentation's range and freshness, metrics
against hand counts, the rows a process loads, and the step counts and first sweeps of
the relaxations against hand-written loops. Each of these once let a realistic bug
through that changed what a user sees."""

import json
import math
import threading

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqx_eqprop as ep
from eqx_eqprop.internal import (
    Placement,
    build_estimator,
    build_model,
    build_optimizer,
    build_relaxations,
    eval_batches,
    evaluate,
    init_train_state,
    load_digits,
    make_eval_step,
    train_batches,
    vector_field_from_energy_mlp,
)

from .helpers import TIGHT, implicit_gradient, problem, rel_error, tiny_run, train_quietly
from .test_paths import pre_activation, sigmoid


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def small(tmp_path, **changes):
    return tiny_run(tmp_path, "p", **changes)


run = train_quietly


def leaves(tree):
    return [np.asarray(v) for v in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


# ------------------------------------------------------------------ the optimiser


def _updates(cfg, params, grads, steps, per_epoch=10):
    """The optimiser's updates for `steps` steps with the given gradients each step."""
    model = ep.EnergyMLP((3, 4, 2), key=jax.random.key(0))
    tx = build_optimizer(cfg, model, per_epoch)
    state = tx.init(params)
    out = []
    for t in range(steps):
        update, state = tx.update(grads(t), state, params)
        out.append(update)
    return out


@pytest.fixture
def params():
    model = ep.EnergyMLP((3, 4, 2), key=jax.random.key(0))
    return eqx.filter(model, eqx.is_inexact_array)


def test_sgd_with_cosine_schedule_and_weight_decay_follows_the_formula(params):
    lr, wd, epochs = 0.1, 0.01, 3
    cfg = ep.TrainConfig().update(
        {
            "optimizer": {"kind": "sgd", "lr": lr, "schedule": "cosine", "weight_decay": wd},
            "loop.epochs": epochs,
        }
    )
    total = epochs * 10
    g = jax.tree.map(lambda p: 0.5 * jnp.ones_like(p), params)
    updates = _updates(cfg, params, lambda t: g, total)
    for t in (0, 1, 13, total - 1):
        rate = lr * 0.5 * (1 + math.cos(math.pi * t / total))
        for u, p in zip(jax.tree.leaves(updates[t]), jax.tree.leaves(params)):
            # decoupled L2 decay added to the gradient, then the scheduled step
            np.testing.assert_allclose(u, -rate * (0.5 + wd * p), rtol=2e-6, atol=1e-9)


def test_momentum_with_warmup_and_clipping_follows_the_formula(params):
    lr, mu, clip = 0.2, 0.9, 1.0
    cfg = ep.TrainConfig().update(
        {
            "optimizer": {
                "kind": "momentum",
                "lr": lr,
                "momentum": mu,
                "clip_norm": clip,
                "schedule": {"kind": "warmup_cosine", "warmup_fraction": 0.2},
            },
            "loop.epochs": 1,
        }
    )
    total, warmup = 10, 2
    big = jax.tree.map(lambda p: 3.0 * jnp.ones_like(p), params)  # clipped to norm 1
    norm = math.sqrt(sum(9.0 * p.size for p in jax.tree.leaves(params)))
    updates = _updates(cfg, params, lambda t: big, total)
    velocity = 0.0
    for t in range(total):
        if t < warmup:
            rate = lr * t / warmup
        else:
            rate = lr * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))
        velocity = mu * velocity + 3.0 / norm
        got = jax.tree.leaves(updates[t])[0]
        np.testing.assert_allclose(got, -rate * velocity, rtol=2e-5, atol=1e-9)


# ---------------------------------------------------------------- state on resume


@pytest.mark.parametrize(
    "optimizer",
    [
        {"kind": "momentum", "lr": 0.05, "schedule": "cosine", "weight_decay": 1e-3},
        pytest.param(
            {"kind": "adam", "lr": 3e-3, "schedule": "warmup_cosine"},
            marks=pytest.mark.slow,  # 17 s; momentum's state is restored by the same path
        ),
    ],
    ids=["momentum", "adam"],
)
def test_a_resume_restores_the_whole_optimiser_and_estimator_state(tmp_path, digits, optimizer):
    changes = {
        "optimizer": optimizer,
        "estimator": {"kind": "hep", "beta": 0.3, "num_phases": 2, "target_error": 0.05},
    }
    changes["loop.epochs"] = 1
    whole = run(small(tmp_path / "whole", **changes), digits)
    cfg = small(tmp_path / "killed", **changes)
    run(cfg, digits, stop_after_steps=7)  # 11 steps an epoch: after the step-4 checkpoint
    resumed = run(cfg, digits)
    a, b = whole["state"], resumed["state"]
    for name in ("model", "opt_state", "estimator_state", "step"):
        for u, v in zip(leaves(getattr(a, name)), leaves(getattr(b, name))):
            np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(jax.random.key_data(a.key), jax.random.key_data(b.key))
    # the state is really stateful: moments away from zero, a radius away from beta
    moments = [v for v in leaves(a.opt_state) if v.ndim and v.size > 1]
    assert max(float(np.max(np.abs(v))) for v in moments) > 1e-4
    assert float(a.estimator_state) != 0.3


def test_the_loop_threads_the_estimator_state_from_step_to_step(tmp_path, digits):
    est = {"kind": "hep", "beta": 0.3, "num_phases": 2, "target_error": 0.01}
    cfg = small(tmp_path, estimator=est, **{"loop.epochs": 1})
    result = run(cfg, digits)
    # the same 11 steps by hand, each starting from the estimator state of the last
    estimator = build_estimator(cfg)
    relaxation, nudged = build_relaxations(cfg)
    net = build_model(cfg, (8, 8, 1), 10)
    tx = build_optimizer(cfg, net, 11)
    batches = [(x.reshape(128, -1), y) for x, y in train_batches(digits, 128, seed=0, epoch=0)]
    state = init_train_state(net, tx, estimator, jax.random.key(0), *batches[0])
    step = ep.make_train_step(estimator, relaxation, ep.CrossEntropy(), tx, nudged)
    radii = []
    for x, y in batches:
        state, _ = step(state, x, y)
        radii.append(float(state.estimator_state))
    assert len(set(radii)) > 3  # the radius moves from step to step
    np.testing.assert_allclose(result["state"].estimator_state, state.estimator_state, rtol=1e-5)
    for u, v in zip(leaves(result["state"].model), leaves(state.model)):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)


# -------------------------------------------------------------- checkpoint timing


@pytest.mark.parametrize(
    "log_every,checkpoint_every,stop,expected",
    [
        (2, 5, 5, None),  # reads at 2 and 4: nothing due yet
        (2, 5, 6, 6),  # the first read after 5 steps
        (2, 6, 6, 6),  # exactly at the boundary
        (2, 7, 7, None),  # not due at 6 (6 < 7), and step 7 is no read
        (2, 5, 13, 11),  # the epoch's end (step 11) checkpoints; 13 - 11 < 5
    ],
)
def test_a_checkpoint_is_written_at_the_first_read_after_checkpoint_every_steps(
    tmp_path, digits, log_every, checkpoint_every, stop, expected
):
    cfg = small(
        tmp_path, **{"loop.log_every": log_every, "loop.checkpoint_every": checkpoint_every}
    )
    run(cfg, digits, stop_after_steps=stop)
    # the batches' prefetch thread stopped with the run (none left transferring)
    assert not [t for t in threading.enumerate() if t.name.endswith("(work)")]
    path = tmp_path / "checkpoint.json"
    if expected is None:
        assert not path.exists()
    else:
        progress = json.loads(path.read_text())["progress"]
        assert progress["step"] == expected
        # 11 steps an epoch (1438 // 128): step 11 is epoch 2's start
        assert (progress["epoch"], progress["batch"]) == divmod(expected, 11)


# ------------------------------------------------------------------- augmentation


def test_random_shifts_cover_their_range_and_change_every_epoch():
    n, pad = 2000, 2
    x = np.zeros((n, 9, 9, 1), np.float32)
    x[:, 4, 4, 0] = 1.0  # one bright pixel in the middle of every image
    data = ep.Dataset("dots", x, np.zeros(n, np.int32), x[:1], np.zeros(1, np.int32), 1,
                      augment=True, pad=pad, flip=False)  # fmt: skip

    def shifts(seed, epoch):
        xs, _ = next(train_batches(data, n, seed=seed, epoch=epoch))
        rows, cols = np.nonzero(xs[..., 0])[1:]
        assert len(rows) == n  # the pixel never leaves the image (pad 2 of 4)
        return rows - 4, cols - 4

    dy, dx = shifts(0, 0)
    assert set(dy) == set(dx) == set(range(-pad, pad + 1))
    counts = np.bincount(dy + pad, minlength=2 * pad + 1)
    expected = n / (2 * pad + 1)  # uniform over the 5 offsets
    assert np.sum((counts - expected) ** 2 / expected) < 20  # chi-square, 4 dof, p ~ 5e-4
    again = shifts(0, 0)
    np.testing.assert_array_equal(again[0], dy)  # a pure function of (seed, epoch, index)
    for other in (shifts(0, 1), shifts(1, 0)):  # fresh per epoch and per seed
        assert np.mean(other[0] == dy) < 0.4


def test_flips_mirror_about_half_of_the_images():
    n = 1000
    x = np.zeros((n, 4, 6, 1), np.float32)
    x[:, 1, 0, 0] = 1.0  # a pixel on the left edge
    data = ep.Dataset("edge", x, np.zeros(n, np.int32), x[:1], np.zeros(1, np.int32), 1,
                      augment=True, pad=0, flip=True)  # fmt: skip
    xs, _ = next(train_batches(data, n, seed=3, epoch=0))
    right = xs[:, 1, 5, 0] == 1.0
    assert np.all(right | (xs[:, 1, 0, 0] == 1.0))
    assert abs(np.mean(right) - 0.5) < 4 * 0.5 / math.sqrt(n)


# ---------------------------------------------------------------------- metrics


def test_evaluation_metrics_against_hand_counts(digits):
    model = ep.EnergyMLP((64, 16, 10), key=jax.random.key(5))
    model = eqx.tree_at(
        lambda m: m.readout_layer.bias, model, jnp.linspace(-1, 1, 10, dtype=jnp.float32)
    )
    relaxation = ep.FixedPointRelaxation(max_steps=30, rtol=None, atol=None)
    cost = ep.CrossEntropy()
    out = evaluate(model, digits, make_eval_step(relaxation, cost), 100, jax.random.key(0))
    x = digits.preprocess(digits.x_test).reshape(len(digits.x_test), -1)
    logits, stats = ep.predict(model, x, relaxation)
    logits, y = np.asarray(logits, np.float64), digits.y_test
    rank = np.sum(logits > logits[np.arange(len(y)), y][:, None], axis=1)
    log_norm = np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1)) + logits.max(1)
    assert out["top1"] == pytest.approx(np.mean(rank == 0), abs=1e-6)
    assert out["top5"] == pytest.approx(np.mean(rank < 5), abs=1e-6)
    assert out["loss"] == pytest.approx(np.mean(log_norm - logits[np.arange(len(y)), y]), rel=1e-5)
    assert out["free_steps"] == 30 and out["free_steps_max"] == 30
    # 359 samples in batches of 100: the padded last batch counts its 59 samples once
    assert sum(n for _, _, n in eval_batches(digits, 100)) == 359


def test_epoch_metrics_against_hand_counts(tmp_path, digits):
    # relaxations that can miss their tolerance: failed_steps, the unconverged share and
    # the mean steps against counts of the same steps made by hand
    cfg = small(tmp_path, **{"loop.epochs": 1, "loop.log_every": 3}).update(
        {"relaxation": {"kind": "even_odd", "max_steps": 4, "rtol": 1e-6, "atol": 1e-6}}
    )
    with pytest.warns(RuntimeWarning, match="did not reach their tolerance"):
        record = run(cfg, digits)["history"][0]
    model = build_model(cfg, (8, 8, 1), 10)
    relaxation = ep.EvenOddRelaxation(max_steps=4, rtol=1e-6, atol=1e-6)
    tx = build_optimizer(cfg, model, 11)
    estimator = ep.SymmetricEP(0.2, error_tolerance=None)
    batches = list(train_batches(digits, 128, seed=0, epoch=0))
    x0, y0 = batches[0][0].reshape(128, -1), batches[0][1]
    state = init_train_state(model, tx, estimator, jax.random.key(0), x0, y0)
    step = ep.make_train_step(estimator, relaxation, ep.CrossEntropy(), tx)
    failed, unconverged, free_steps, hits = 0, [], [], 0
    for x, y in batches:
        before = state.model
        state, metrics = step(state, x.reshape(128, -1), y)
        s, stats = ep.free_phase(before, jnp.asarray(x.reshape(128, -1)), relaxation)
        logits = jax.vmap(before.readout)(s)
        hits += int(jnp.sum(jnp.argmax(logits, -1) == y))
        bad = np.asarray(stats.result != ep.RESULTS.successful)
        unconverged.append(bad.mean())
        free_steps.append(float(np.mean(np.asarray(stats.steps))))
        failed += int(metrics["failed"] > 0)
    assert record["failed_steps"] == failed and failed > 0
    assert record["free_unconverged"] == pytest.approx(np.mean(unconverged), abs=1e-6)
    assert record["free_steps"] == pytest.approx(np.mean(free_steps), rel=1e-6)
    assert record["train_accuracy"] == pytest.approx(hits / (128 * len(batches)), abs=1e-6)


# ------------------------------------------------------------------ data rows


def test_each_process_loads_its_own_rows_of_every_batch(digits, monkeypatch):
    full = list(train_batches(digits, 64, seed=4, epoch=1))[:3]
    parts = []
    monkeypatch.setattr(jax, "process_count", lambda: 4)
    for index in range(4):
        monkeypatch.setattr(jax, "process_index", lambda index=index: index)
        rows = Placement(1).local_rows(64)
        assert rows == slice(16 * index, 16 * (index + 1))
        parts.append(list(train_batches(digits, 64, seed=4, epoch=1, rows=rows))[:3])
    monkeypatch.undo()
    for b, (x, y) in enumerate(full):
        np.testing.assert_array_equal(np.concatenate([p[b][0] for p in parts]), x)
        np.testing.assert_array_equal(np.concatenate([p[b][1] for p in parts]), y)


# -------------------------------------------------------------- relaxation paths


def test_even_odd_updates_the_even_layers_first_then_the_odd_ones():
    model, x, y = problem(4, sizes=(5, 6, 7, 8, 3), batch=2)  # three hidden layers
    for steps in (1, 3):
        relaxation = ep.EvenOddRelaxation(steps, None, None)
        s, stats = ep.free_phase(model, x, relaxation)
        assert bool(jnp.all(stats.steps == steps))
        for b in range(2):
            state = list(model.init_state())
            for _ in range(steps):
                for layers in ((0, 2), (1,)):
                    pre = pre_activation(model, x[b], state)
                    for i in layers:
                        state[i] = sigmoid(pre[i])
            for got, want in zip(s, state):
                np.testing.assert_allclose(got[b], want, rtol=0, atol=1e-14)


def test_reported_steps_are_the_sweeps_a_hand_loop_needs_to_the_tolerance():
    model, x, y = problem(1, sizes=(7, 9, 8, 3), batch=4, scale=1.0)
    tol = 1e-6
    for relaxation, layer_groups in (
        (ep.FixedPointRelaxation(500, tol, tol), ((0, 1),)),
        (ep.EvenOddRelaxation(500, tol, tol), ((0,), (1,))),
    ):
        s, stats = ep.free_phase(model, x, relaxation)
        for b in range(x.shape[0]):
            state, sweeps = list(model.init_state()), 0
            while True:
                old = list(state)
                for layers in layer_groups:
                    pre = pre_activation(model, x[b], state if len(layer_groups) > 1 else old)
                    for i in layers:
                        state[i] = sigmoid(pre[i])
                sweeps += 1
                change = max(
                    float(jnp.max(jnp.abs(n - o) / (tol + tol * jnp.abs(n))))
                    for n, o in zip(state, old)
                )
                if change < 1:
                    break
            assert int(stats.steps[b]) == sweeps
            for got, want in zip(s, state):
                np.testing.assert_allclose(got[b], want, rtol=0, atol=1e-12)


def test_straggler_passes_give_the_large_budget_result_in_as_many_steps():
    model, x, y = problem(2, sizes=(13, 17, 11, 5), batch=24, scale=1.6)
    tol = 1e-8
    big = ep.EvenOddRelaxation(20000, tol, tol)
    s_big, st_big = ep.free_phase(model, x, big)
    assert bool(jnp.all(st_big.result == ep.RESULTS.successful))
    budget = int(np.quantile(np.asarray(st_big.steps), 0.7))
    slow = int(np.sum(np.asarray(st_big.steps) > budget))
    assert 4 <= slow <= 12  # a batch with a few slow samples
    straggler = ep.StragglerRelaxation(ep.EvenOddRelaxation(budget, tol, tol), 20000, slots=slow)
    s, st = ep.free_phase(model, x, straggler)
    np.testing.assert_array_equal(st.steps, st_big.steps)
    assert bool(jnp.all(st.result == ep.RESULTS.successful))
    for a, b in zip(s, s_big):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
    # too few slots: the slowest keep their code; two passes share the work instead
    short = ep.StragglerRelaxation(ep.EvenOddRelaxation(budget, tol, tol), 20000, slots=slow - 2)
    _, st = ep.free_phase(model, x, short)
    assert int(jnp.sum(st.result == ep.RESULTS.max_steps_reached)) == 2
    two = ep.StragglerRelaxation(
        ep.EvenOddRelaxation(budget, tol, tol), max_steps=(5, 20000), slots=(slow, 3)
    )
    _, st = ep.free_phase(model, x, two)
    still = int(np.sum(np.asarray(st_big.steps) > budget + 5))
    assert int(jnp.sum(st.result != ep.RESULTS.successful)) == max(0, still - 3)
    # and the gradient through it is the implicit gradient of the converged batch
    truth = implicit_gradient(model, x, y, relaxation=big)
    grads = implicit_gradient(model, x, y, relaxation=straggler)
    assert rel_error(grads, truth) < 1e-10


def test_straggler_relaxation_arguments():
    with pytest.raises(ValueError, match="fixed number of steps"):
        ep.StragglerRelaxation(ep.EvenOddRelaxation(10, None, None))
    with pytest.raises(ValueError, match="one max_steps per pass"):
        ep.StragglerRelaxation(ep.EvenOddRelaxation(10, 1e-4, 1e-4), (10, 20), (4,))
    with pytest.raises(ValueError, match="noise-free"):
        ep.StragglerRelaxation(ep.FixedPointRelaxation(10, None, None, noise=0.1))
    with pytest.raises(ValueError, match=r"slots\[1\] must be a positive integer"):
        ep.StragglerRelaxation(ep.EvenOddRelaxation(10, 1e-4, 1e-4), (10, 20), (4, 0))


def test_anderson_first_steps_follow_the_formula():
    model, x, y = problem(5, sizes=(6, 7, 5, 3), batch=1)
    tiny = 1e-30  # never met: the steps run as far as the budget
    for steps in (1, 2):
        relaxation = ep.AndersonRelaxation(max_steps=steps, rtol=tiny, atol=tiny, even_odd=False)
        s, stats = ep.free_phase(model, x, relaxation)
        assert int(stats.steps[0]) == steps

        def g(v):
            return jnp.concatenate(
                [sigmoid(p) for p in pre_activation(model, x[0], [v[:7], v[7:]])]
            )

        x0 = jnp.zeros(12, x.dtype)
        g0 = g(x0)
        if steps == 1:
            want = g0  # the first step is a plain one
        else:
            g1 = g(g0)
            df, dg = (g1 - g0) - (g0 - x0), g1 - g0
            lam = 1e-8 * (df @ df)
            gamma = (df @ (g1 - g0)) / (df @ df + lam)
            want = g1 - gamma * dg
        got = jnp.concatenate([v[0] for v in s])
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def test_forward_mode_generalized_hep_uses_the_free_relaxation_for_the_free_phase():
    mlp, x, y = problem(0, sizes=(6, 8, 7, 4), batch=3)
    vf = vector_field_from_energy_mlp(mlp)
    free = ep.FixedPointRelaxation(7, None, None)
    nudged = ep.FixedPointRelaxation(3, None, None)
    _, info = ep.gradient(
        vf, x, y, estimator=ep.GeneralizedHEP(0.1, 0), relaxation=free, nudged_relaxation=nudged
    )
    assert bool(jnp.all(info.free_stats.steps == 7)) and bool(jnp.all(info.nudged_stats.steps == 3))


# --------------------------------------------------------------- adaptive radius


class _ErrorGrowsAsTheRadiusShrinks(ep.HolomorphicEP):
    """hEP whose aliasing estimate is made to read 1e-3 / radius: every smaller radius
    looks worse, so the first attempt is the best one."""

    def sample_phases(self, model, x, y, s_free, f0, beta, nudged_relaxation, cost, key):
        samples = super().sample_phases(model, x, y, s_free, f0, beta, nudged_relaxation, cost, key)
        return eqx.tree_at(lambda s: s.error, samples, 1e-3 / jnp.abs(beta))


def test_the_adaptive_radius_keeps_the_first_attempt_when_it_is_the_best():
    model, x, y = problem(0, sizes=(6, 9, 7, 4), batch=4)
    relaxation = ep.FixedPointRelaxation(500, 1e-10, 1e-10)
    rigged = _ErrorGrowsAsTheRadiusShrinks(0.3, 4, error_tolerance=None, target_error=1e-4)
    fixed = ep.HolomorphicEP(0.3, 4, error_tolerance=None)
    g_fixed, _ = ep.gradient(model, x, y, estimator=fixed, relaxation=relaxation)
    g, info = ep.gradient(model, x, y, estimator=rigged, relaxation=relaxation)
    assert int(info.retries) == 3  # as many as allowed (max_retries), none met the target
    assert float(info.radius) == pytest.approx(0.3)  # ... and the first attempt kept
    assert float(info.error_estimate) == pytest.approx(1e-3 / 0.3)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_fixed)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    # the radius the next step starts from shrinks by the rule's factor, from the kept one
    state = rigged.init(model, x, y)
    _, _, state = ep.gradient_step(model, x, y, state, estimator=rigged, relaxation=relaxation)
    factor = 0.9 * (1e-4 / (1e-3 / 0.3)) ** (1 / 4)
    assert float(state) == pytest.approx(0.3 * max(factor, 0.5))


# ---------------------------------------------------------- vector-field details


def test_a_vector_field_copy_of_an_energy_mlp_with_biases_matches_it():
    mlp, x, y = problem(0, sizes=(13, 17, 11, 5), batch=6)
    biases = [jax.random.normal(jax.random.key(i), layer.bias.shape, mlp.dtype) * 0.3
              for i, layer in enumerate(mlp.layers)]  # fmt: skip
    mlp = eqx.tree_at(lambda m: [layer.bias for layer in m.layers], mlp, biases)
    vf = vector_field_from_energy_mlp(mlp)
    s, _ = ep.free_phase(mlp, x, TIGHT)
    u, _ = ep.free_phase(vf, x, TIGHT)
    for a, b in zip(s, u):
        np.testing.assert_allclose(vf.activation(b), a, atol=1e-12)
    truth = implicit_gradient(mlp, x, y)
    vf_truth = implicit_gradient(vf, x, y)
    np.testing.assert_allclose(vf_truth.connections[0].bias, truth.layers[0].bias, rtol=1e-8)


@pytest.mark.parametrize("angle", [0.0, 30.0, 60.0, 90.0])
def test_the_feedback_angle_built_is_the_one_asked_for(angle):
    vf = ep.VectorFieldNet((30, 60, 50, 10), feedback_angle=angle, key=jax.random.key(1))
    (measured,) = ep.feedback_angles(vf).values()
    # a random B is orthogonal to W^T only up to about 1 / sqrt(60 * 50) rad
    assert abs(measured - angle) < 3.0, measured


# ------------------------------------------------------------------- max pooling


def test_max_pooling_sends_a_tied_windows_feedback_to_its_first_maximum():
    # a 4x4 map, two channels: window (0, 0) of channel 0 has a tie at its first and last
    # elements (row-major), window (1, 1) of channel 1 a three-way tie
    v = jnp.zeros((4, 4, 2)).at[0, 0, 0].set(2.0).at[1, 1, 0].set(2.0)
    v = v.at[2, 3, 1].set(5.0).at[3, 2, 1].set(5.0).at[3, 3, 1].set(5.0).at[2, 2, 1].set(1.0)
    cotangent = jnp.arange(1.0, 9.0).reshape(2, 2, 2)
    for ties in ("first", "split"):
        pool = ep.MaxPool(ties=ties)
        out, vjp = jax.vjp(pool, v)
        np.testing.assert_array_equal(out, jnp.max(v.reshape(2, 2, 2, 2, 2), axis=(1, 3)))
        (grad,) = vjp(cotangent)
        if ties == "first":
            # all of it to the first maximum in row-major window order, none to the rest
            assert float(grad[0, 0, 0]) == 1.0 and float(grad[1, 1, 0]) == 0.0
            assert float(grad[2, 3, 1]) == 8.0
            assert float(grad[3, 2, 1]) == float(grad[3, 3, 1]) == 0.0
        else:
            assert float(grad[0, 0, 0]) == float(grad[1, 1, 0]) == 0.5
            np.testing.assert_allclose(grad[2, 3, 1], 8.0 / 3)
        # every window passes on exactly its cotangent
        np.testing.assert_allclose(
            jnp.sum(grad.reshape(2, 2, 2, 2, 2), axis=(1, 3)), cotangent, rtol=1e-6
        )
    assert ep.MaxPool().ties == "first"
