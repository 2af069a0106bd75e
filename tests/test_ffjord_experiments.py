"""The FFJORD experiments (2-D densities, tabular) through the shared experiment shape."""

import dataclasses

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

from taynode.experiment import solve_problem
from taynode.experiments import REGISTRY
from taynode.objective import make_loss, make_train_step
from taynode.optim import make_optimizer
from taynode.regularizers import JacobianFrobenius, Kinetic, TaylorRK

FFJORD = ("ffjord2d", "ffjord_tabular", "ffjord_mnist")


@pytest.mark.parametrize("name", FFJORD)
def test_presets_are_valid_and_the_default_is_cpu(name):
    exp = REGISTRY[name]
    assert exp.Config() == exp.config("cpu") == exp.config()
    for preset in ("smoke", "cpu", "gpu", "paper"):
        assert exp.config(preset).preset == preset
    for cfg in (c for runs in exp.sweeps.values() for c in runs):
        exp.config("cpu", **cfg)  # every sweep run is a valid config


def _smoke(name):
    exp = REGISTRY[name]
    cfg = exp.config("smoke")
    return exp, cfg, exp.load_data(cfg, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", FFJORD)
def test_one_training_step_lowers_the_loss_on_a_fixed_batch(name):
    exp, cfg, data = _smoke(name)
    cfg = dataclasses.replace(cfg, lr=1e-2)
    opt = make_optimizer(cfg)
    params = exp.init_params(cfg, jr.PRNGKey(0))
    batch = exp.train_arrays(cfg, data)[: cfg.batch_size]
    key = jr.PRNGKey(3)  # the same probe before and after (tabular)
    loss_fn = jax.jit(make_loss(exp, cfg))
    before = float(loss_fn(params, batch, key, 0)[0])
    state, metrics = make_train_step(exp, cfg, opt)({"params": params, "opt_state": opt.init(params)}, batch, key, 0)
    after = float(loss_fn(state["params"], batch, key, 0)[0])
    assert float(metrics["loss"]) == pytest.approx(before)
    assert after < before


@pytest.mark.slow
@pytest.mark.parametrize("name", FFJORD)
def test_metrics_report_the_test_nll_in_nats(name):
    exp, cfg, data = _smoke(name)
    params = exp.init_params(cfg, jr.PRNGKey(0))
    m = exp.metrics(cfg, params, data)
    nll = "test_bpd" if name == "ffjord_mnist" else "test_nll"
    assert {nll, "eval_sizes"} <= set(m)
    assert np.isfinite(m[nll])
    if name == "ffjord_tabular":
        assert "not MINIBOONE" in m["data_label"]
        assert np.isfinite(exp.validation_loss(cfg, params, data))


def test_ffjord2d_initial_nll_is_that_of_the_standard_normal():
    """With zero parameters the field is 0 (the identity flow): NLL = mean ‖x‖²/2 + log 2π in 2-D."""
    from taynode.evaluation import for_evaluation

    exp, cfg, data = _smoke("ffjord2d")
    cfg, _ = for_evaluation(cfg, None)  # as reported: float64
    params = jax.tree_util.tree_map(jnp.zeros_like, exp.init_params(cfg, jr.PRNGKey(0)))
    x = exp.eval_arrays(cfg, data)
    expected = float(np.mean(0.5 * np.sum(x**2, axis=1) + np.log(2 * np.pi)))
    assert exp.metrics(cfg, params, data)["test_nll"] == pytest.approx(expected, rel=1e-10)


def test_ffjord2d_points_follow_the_config_not_the_loaded_data():
    """A sweep loads data once for all its runs: the points must still be the run's density."""
    from taynode.data.toy2d import sample_toy2d

    exp = REGISTRY["ffjord2d"]
    first, other = exp.config("smoke"), exp.config("smoke", density="pinwheel", seed=3)
    data = exp.load_data(first)
    dtype = np.dtype(other.dtype)  # float32: the cpu preset's training dtype
    np.testing.assert_array_equal(exp.train_arrays(other, data), sample_toy2d("pinwheel", 500, seed=3, dtype=dtype))
    np.testing.assert_array_equal(exp.eval_arrays(other, data), sample_toy2d("pinwheel", 200, seed=12345, dtype=dtype))


def test_unknown_density_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^density must be one of .*got 'moons'$"):
        REGISTRY["ffjord2d"].config("smoke", density="moons")


def test_unknown_tabular_data_set_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^data must be one of .*got 'power'$"):
        REGISTRY["ffjord_tabular"].config("smoke", data="power")


def test_miniboone_of_the_wrong_dimension_is_a_one_line_error(tmp_path):
    path = tmp_path / "data.npy"
    np.save(path, np.random.default_rng(0).normal(size=(200, 5)))
    exp = REGISTRY["ffjord_tabular"]
    cfg = exp.config("smoke", data="miniboone", data_path=str(path))
    with pytest.raises(ValueError, match=r"MINIBOONE must have 43 columns .*got shape \(200, 5\)") as err:
        exp.load_data(cfg)
    assert "\n" not in str(err.value)


def test_missing_miniboone_names_where_to_put_it(tmp_path):
    exp = REGISTRY["ffjord_tabular"]
    cfg = exp.config("smoke", data="miniboone", data_path=str(tmp_path / "nope.npy"))
    with pytest.raises(FileNotFoundError, match="MINIBOONE not found"):
        exp.load_data(cfg)


def test_train_size_beyond_the_split_is_an_error():
    exp = REGISTRY["ffjord_tabular"]
    with pytest.raises(ValueError, match=r"^train_size must be at most the 462 training rows"):
        exp.load_data(exp.config("smoke", train_size=1000, batch_size=50))


@pytest.mark.parametrize("name", ["ffjord2d", "ffjord_tabular", pytest.param("ffjord_mnist", marks=pytest.mark.slow)])
def test_the_regularisers_see_z_only(name):
    """Penalties do not change when the log-density's initial value does (its dynamics read z only)."""
    exp, cfg, data = _smoke(name)
    cfg = dataclasses.replace(cfg, dtype="float64")  # solved at 1e-8 below
    params = exp.init_params(cfg, jr.PRNGKey(1))
    # the training problem (Hutchinson for the tabular and image models, exact in 2-D)
    problem = exp.problem(cfg, params, exp.training_batch(cfg, exp.train_arrays(cfg, data)[:8], jr.PRNGKey(2)))
    assert problem.part == 0
    regs = (TaylorRK(2, part=0), Kinetic(part=0), JacobianFrobenius(jr.PRNGKey(0), part=0))
    kw = dict(solver="dopri5", rtol=1e-8, atol=1e-8, max_steps=4096, regularizers=regs)
    z0, a0 = problem.y0
    base = solve_problem(problem, **kw)
    shifted = solve_problem(dataclasses.replace(problem, y0=(z0, a0 + 5.0)), **kw)
    for k in ("R2", "kinetic", "frobenius"):
        # equal up to the solve's tolerance (a's value enters the step-size control, not the integrands)
        np.testing.assert_allclose(shifted.reg[k], base.reg[k], rtol=1e-7)
    np.testing.assert_allclose(shifted.y1[1], base.y1[1] + 5.0, rtol=1e-7)


def test_tabular_training_uses_the_hutchinson_probe_and_evaluation_the_exact_trace():
    exp, cfg, data = _smoke("ffjord_tabular")
    params = exp.init_params(cfg, jr.PRNGKey(0))
    x = exp.eval_arrays(cfg, data)[:4]
    train_problem = exp.problem(cfg, params, exp.training_batch(cfg, x, jr.PRNGKey(0)))
    eval_problem = exp.problem(cfg, params, x)
    assert train_problem.field.divergence == "gaussian" and train_problem.args[1].shape == x.shape
    assert eval_problem.field.divergence == "exact" and eval_problem.args[1] is None


def test_adamw_is_the_tabular_optimiser():
    cfg = REGISTRY["ffjord_tabular"].config("cpu")
    assert cfg.optimizer == "adamw" and cfg.weight_decay == 1e-6
    assert isinstance(make_optimizer(cfg), optax.GradientTransformation)


def test_mnist_downsample_is_the_rounded_block_mean():
    from taynode.experiments.ffjord_mnist import downsample

    img = np.arange(28 * 28, dtype=np.int64).reshape(1, 28, 28) % 256
    small = downsample(img.astype(np.uint8), 14)
    assert small.shape == (1, 14, 14) and small.dtype == np.uint8
    assert small[0, 0, 0] == np.rint(np.mean(img[0, :2, :2]))
    assert downsample(img.astype(np.uint8), 28) is not None


def test_mnist_bad_image_size_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^image_size must be 28 or 14 for images='mnist', got 20$"):
        REGISTRY["ffjord_mnist"].config("smoke", images="mnist", image_size=20)
    with pytest.raises(ValueError, match=r"^image_size must be 8 for images='digits', got 14$"):
        REGISTRY["ffjord_mnist"].config("smoke", image_size=14)
    with pytest.raises(ValueError, match=r"^images must be one of \('mnist', 'digits'\), got 'cifar'$"):
        REGISTRY["ffjord_mnist"].config("smoke", images="cifar")
    exp = REGISTRY["ffjord_mnist"]
    cfg = exp.config("smoke", train_size=1201)
    with pytest.raises(ValueError, match=r"^train_size must be at most the 1200 train images of images='digits', "
                                         r"got 1201$"):
        exp.train_arrays(cfg, exp.load_data(cfg))


@pytest.mark.slow
def test_mnist_flow_starts_as_the_identity():
    """The last layer is zero-initialised: f = 0, so bits/dim is that of N(0, I) on the logit-transformed pixels."""
    from taynode.cnf import bits_per_dim, standard_normal_log_prob

    exp, cfg, data = _smoke("ffjord_mnist")
    params = exp.init_params(cfg, jr.PRNGKey(0))
    arrays = exp.eval_arrays(cfg, data)
    expected = np.mean(bits_per_dim(standard_normal_log_prob(jnp.asarray(arrays["y"])) + arrays["logdet"], 64,
                                    levels=17))
    assert exp.metrics(cfg, params, data)["test_bpd"] == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.slow
def test_tabular_run_keeps_the_parameters_with_the_lowest_validation_nll(tmp_path):
    from taynode import runner

    exp = REGISTRY["ffjord_tabular"]
    cfg = exp.config("smoke", epochs=3, eval_every=1, lr=0.05)
    record = runner.train(exp, cfg, out_dir=tmp_path, ckpt_root=tmp_path / "ckpt", progress=False)
    assert record["data"] == exp.data_provenance(cfg) and list(record["data"]["files"]) == ["breast_cancer.csv"]
    vals = [h["eval"]["val_loss"] for h in record["history"] if "eval" in h]
    assert len(vals) == cfg.num_steps
    assert record["metrics"]["val_loss"] == min(vals)
    _, params, _ = runner.load_run(exp, tmp_path / f"{record['run']}.json")
    data = exp.load_data(cfg, progress=False)
    assert exp.validation_loss(cfg, params, data) == pytest.approx(min(vals), rel=1e-10)
    # `eval --check` recomputes the kept validation loss too, and reproduces the record exactly
    from taynode.cli import main

    assert main(["eval", "ffjord_tabular", str(tmp_path / f"{record['run']}.json"), "--check"]) == 0
