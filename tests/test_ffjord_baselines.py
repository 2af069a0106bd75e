"""The FFJORD chapter's reference numbers: the data's own NLL beside a 2-D flow's, the convergence
criterion, and the full-covariance Gaussian baselines of the tabular and image flows.

References are independent of the code under test: hand-built histories, scipy's multivariate
normal, closed forms of an identity flow, and Hutchinson's estimator being unbiased.
"""

import dataclasses

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from taynode.data.tabular import gaussian_nll, load_breast_cancer
from taynode.data.toy2d import data_nll, log_density
from taynode.evaluation import for_evaluation
from taynode.experiments import REGISTRY, ffjord2d, ffjord_mnist, ffjord_tabular

# ---------------------------------------------------------------------------------------------
# 2-D: presets, data NLL in the metrics, convergence
# ---------------------------------------------------------------------------------------------


def test_ffjord2d_cpu_preset_trains_in_float32_and_reports_in_float64_at_the_paper_tolerance():
    cfg = REGISTRY["ffjord2d"].config("cpu")
    assert (cfg.dtype, cfg.rtol, cfg.atol) == ("float32", 1e-5, 1e-5)
    assert (cfg.eval_dtype, cfg.eval_rtol, cfg.eval_atol) == ("float64", 1.4e-8, 1.4e-8)
    # `converged` needs an evaluation at or before the start of the final fifth
    assert 0 < cfg.eval_every <= cfg.num_steps * ffjord2d.CONVERGENCE_FRACTION
    # the learning rate is constant over the final fifth
    assert max(cfg.lr_boundaries) <= cfg.epochs * (1 - ffjord2d.CONVERGENCE_FRACTION)


def test_ffjord2d_headline_sweep_is_three_families_three_densities_three_seeds():
    runs = ffjord2d.SWEEPS["full"]
    assert len(runs) == 27
    assert {r["seed"] for r in runs} == {0, 1, 2} and {r["density"] for r in runs} == set(ffjord2d.DENSITIES)
    assert {r["reg"] for r in runs} == {"none", "taylor", "rnode"}


def test_ffjord2d_metrics_hold_the_data_nll_and_the_gap():
    """The identity flow (zero parameters) scores x under N(0, I): every derived number by hand."""
    exp = REGISTRY["ffjord2d"]
    cfg, _ = for_evaluation(exp.config("smoke", density="8gaussians"), None)
    params = jax.tree_util.tree_map(jnp.zeros_like, exp.init_params(cfg, jr.PRNGKey(0)))
    m = exp.metrics(cfg, params, {})
    x = exp.eval_arrays(cfg, {})
    model_nll = 0.5 * np.sum(x**2, axis=1) + np.log(2 * np.pi)
    true_nll = -log_density("8gaussians", x)
    ref = data_nll("8gaussians")
    assert m["test_nll"] == pytest.approx(model_nll.mean(), rel=1e-10)
    assert (m["data_nll"], m["data_nll_se"]) == (ref.value, ref.se)
    assert m["nll_gap"] == pytest.approx(model_nll.mean() - ref.value, rel=1e-10)
    assert m["test_data_nll"] == pytest.approx(true_nll.mean(), rel=1e-10)
    assert m["kl_estimate"] == pytest.approx(np.mean(model_nll - true_nll), rel=1e-10)
    assert m["kl_se"] == pytest.approx(np.std(model_nll - true_nll, ddof=1) / np.sqrt(len(x)), rel=1e-10)
    assert m["kl_estimate"] > 0  # N(0, I) is not the mixture


def test_ffjord2d_densities_without_an_exact_density_report_none():
    exp = REGISTRY["ffjord2d"]
    cfg, _ = for_evaluation(exp.config("smoke", density="rings", test_size=20), None)
    params = jax.tree_util.tree_map(jnp.zeros_like, exp.init_params(cfg, jr.PRNGKey(0)))
    m = exp.metrics(cfg, params, {})
    assert np.isfinite(m["test_nll"]) and m["data_nll"] is None and m["nll_gap"] is None


def _history(nlls, every=100):
    """A run's history: training entries, and an evaluation entry every `every` steps."""
    out = []
    for i, v in enumerate(nlls, start=1):
        out.append({"step": i * every - 50, "loss": 9.0})
        out.append({"step": i * every, "eval": {"test_nll": v}, "eval_time_s": 1.0})
    return out


@pytest.mark.parametrize(
    "nlls, improvement",
    [
        # ten evaluations to step 1000: the final fifth runs from step 800 (value 2.905) to the end
        ([3.5, 3.2, 3.0, 2.95, 2.93, 2.92, 2.91, 2.905, 2.9, 2.897], 2.905 - 2.897),
        ([3.5, 3.2, 3.0, 2.95, 2.93, 2.92, 2.91, 2.905, 2.89, 2.88], 2.905 - 2.88),
        ([3.5, 3.2, 3.0, 2.95, 2.93, 2.92, 2.91, 2.90, 2.92, 2.93], 2.90 - 2.92),  # it only rose
        ([3.5, 3.2, 3.0, 2.95, 2.93, 2.92, 2.91, 2.95, 2.80, 2.90], 2.95 - 2.80),  # the lowest, not the last
    ],
)
def test_nll_improvement_over_the_final_fifth(nlls, improvement):
    history = _history(nlls)
    assert ffjord2d.nll_improvement(history) == pytest.approx(improvement, abs=1e-12)
    assert ffjord2d.converged(history) == (improvement < 0.01)


def test_convergence_needs_evaluations_inside_and_before_the_final_fifth():
    with pytest.raises(ValueError, match=r"^history needs an evaluation at or before step 400 .*eval_every <="):
        ffjord2d.converged([{"step": 500, "eval": {"test_nll": 3.0}}])
    with pytest.raises(ValueError, match=r"^history holds no evaluation with 'test_nll': train with eval_every > 0$"):
        ffjord2d.converged([{"step": 10, "loss": 3.0}])
    with pytest.raises(ValueError, match=r"^fraction must be a number in \(0, 1\), got 1$"):
        ffjord2d.nll_improvement(_history([3.0, 2.0]), fraction=1)
    with pytest.raises(ValueError, match=r"^tol must be a positive number, got 0$"):
        ffjord2d.converged(_history([3.0, 2.0]), tol=0)


# ---------------------------------------------------------------------------------------------
# Tabular: the Gaussian baseline, the split seed
# ---------------------------------------------------------------------------------------------


def test_gaussian_nll_is_scipys_multivariate_normal():
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(0)
    train = rng.standard_normal((200, 4)) @ rng.standard_normal((4, 4)) + 1.0
    x = rng.standard_normal((7, 4))
    ref = -multivariate_normal(train.mean(0), np.cov(train, rowvar=False, ddof=0)).logpdf(x)
    np.testing.assert_allclose(gaussian_nll(train, x), ref, rtol=1e-12)


@pytest.mark.parametrize(
    "train, x, message",
    [
        (np.zeros((3, 4)), np.zeros((2, 4)), r"^train must be a 2-D array with more rows than columns"),
        (np.random.default_rng(0).normal(size=(20, 3)), np.zeros((2, 4)), r"^x must have shape \(rows, 3\)"),
        (np.c_[np.arange(20.0), 2 * np.arange(20.0)], np.zeros((2, 2)), r"^train has a singular covariance"),
    ],
)
def test_gaussian_nll_bad_inputs_are_one_line_errors(train, x, message):
    with pytest.raises(ValueError, match=message):
        gaussian_nll(train, x)


def test_the_validation_test_gap_at_split_seed_0_is_the_data_not_the_flow():
    """A full-covariance Gaussian shows the flow's gap (validation 6.84 vs test 10.92 nats), and the two
    most extreme of the 56 test rows (NLL 118 and 69) carry about three quarters of it."""
    s = load_breast_cancer(shuffle_seed=0)
    val, test = gaussian_nll(s.train, s.validation), gaussian_nll(s.train, s.test)
    assert val.mean() == pytest.approx(6.84, abs=0.005) and test.mean() == pytest.approx(10.92, abs=0.005)
    assert len(test) == 56
    without_two = np.sort(test)[:-2].mean()
    assert (test.mean() - without_two) > 0.7 * (test.mean() - val.mean())
    assert np.median(test) < 4  # a typical test row is unremarkable


def test_split_seed_gives_another_split_of_the_same_sizes():
    exp = REGISTRY["ffjord_tabular"]
    a = exp.load_data(exp.config("smoke"))
    b = exp.load_data(exp.config("smoke", split_seed=3))
    assert a.sizes() == b.sizes() == {"train": 462, "validation": 51, "test": 56}
    assert not np.allclose(a.test, b.test)
    np.testing.assert_array_equal(b.test, load_breast_cancer(shuffle_seed=3).test)
    assert exp.run_name(exp.config("smoke")) == "ffjord_tabular_breast_cancer_smoke_none_seed0"
    assert exp.run_name(exp.config("smoke", split_seed=3)) == "ffjord_tabular_breast_cancer_split3_smoke_none_seed0"


def test_the_splits_sweep_covers_five_split_seeds_for_each_regulariser():
    runs = ffjord_tabular.SWEEPS["splits"]
    assert {r["split_seed"] for r in runs} == set(range(5))
    assert len(runs) == 5 * len(ffjord_tabular.REGS)
    names = {REGISTRY["ffjord_tabular"].run_name(REGISTRY["ffjord_tabular"].config("cpu", **r)) for r in runs}
    assert len(names) == len(runs)  # every run writes its own record


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(split_seed=-1), r"^split_seed must be an int >= 0, got -1$"),
        (dict(data="miniboone", split_seed=2), r"^split_seed must be 0 for miniboone \(MAF's fixed split\), got 2$"),
    ],
)
def test_bad_split_seed_is_a_one_line_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        REGISTRY["ffjord_tabular"].config("smoke", **overrides)


def test_tabular_gaussian_baseline_uses_the_runs_training_rows():
    s = load_breast_cancer()
    got = ffjord_tabular.gaussian_baseline(s, 300)
    assert got["gaussian_test_nll"] == pytest.approx(gaussian_nll(s.train[:300], s.test).mean(), rel=1e-12)
    assert got["gaussian_val_nll"] == pytest.approx(gaussian_nll(s.train[:300], s.validation).mean(), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# MNIST: the test trace and the Gaussian baseline in logit space
# ---------------------------------------------------------------------------------------------


def _fake_mnist(n_train=300, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
            "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)}


def test_mnist_gaussian_baseline_is_the_logit_space_gaussian_in_bits_per_dim():
    """Independent: scipy's Gaussian fit to the logit-transformed dequantised training images, plus the
    test images' log-Jacobian, turned into bits/dim by hand."""
    from scipy.stats import multivariate_normal

    exp = REGISTRY["ffjord_mnist"]
    data = _fake_mnist()
    cfg = exp.config("smoke", images="mnist", image_size=14, train_size=300, test_size=4, dtype="float64")
    pixels = ffjord_mnist.downsample(data["train_images"], 14).reshape(300, 196).astype(np.float64)
    u = np.random.default_rng(ffjord_mnist.BASELINE_SEED).uniform(1e-15, 1 - 1e-15, size=pixels.shape)
    train, _ = (np.asarray(v) for v in ffjord_mnist.logit_transform(jnp.asarray((pixels + u) / 256), 1e-5))
    test = exp.eval_arrays(cfg, data)
    y = np.asarray(test["y"]).reshape(4, 196)
    logp = multivariate_normal(train.mean(0), np.cov(train, rowvar=False, ddof=0)).logpdf(y) + test["logdet"]
    expected = np.mean(-(logp / 196 - np.log(256)) / np.log(2))
    assert ffjord_mnist.gaussian_baseline_bpd(cfg, data) == pytest.approx(expected, rel=1e-9)
    assert ffjord_mnist.gaussian_baseline_bpd(dataclasses.replace(cfg, train_size=100), data) is None


def test_digits_gaussian_baseline_counts_17_grey_levels():
    """The digits' pixels take 17 values: dequantised as (pixel + u)/17 and scored per level of 17 (scipy's fit,
    bits/dim by hand); the split is 1200 / 197 / 400 images of 8×8 in 0…16."""
    from scipy.stats import multivariate_normal

    from taynode.cnf import inverse_logit_transform

    exp = REGISTRY["ffjord_mnist"]
    cfg = exp.config("cpu", dtype="float64")
    data = exp.load_data(cfg)
    assert [data[f"{s}_images"].shape for s in ("train", "validation", "test")] == [(1200, 8, 8), (197, 8, 8),
                                                                                     (400, 8, 8)]
    assert max(int(data[f"{s}_images"].max()) for s in ("train", "test")) == 16
    pixels = data["train_images"].reshape(1200, 64).astype(np.float64)
    u = np.random.default_rng(ffjord_mnist.BASELINE_SEED).uniform(1e-15, 1 - 1e-15, size=pixels.shape)
    train, _ = (np.asarray(v) for v in ffjord_mnist.logit_transform(jnp.asarray((pixels + u) / 17), 1e-5))
    test = exp.eval_arrays(cfg, data)
    x = np.asarray(inverse_logit_transform(jnp.asarray(test["y"]), 1e-5)).reshape(400, 64)
    assert np.array_equal(np.floor(x * 17), data["test_images"].reshape(400, 64))  # dequantised within its level
    y = np.asarray(test["y"]).reshape(400, 64)
    logp = multivariate_normal(train.mean(0), np.cov(train, rowvar=False, ddof=0)).logpdf(y) + test["logdet"]
    expected = np.mean(-(logp / 64 - np.log(17)) / np.log(2))
    assert ffjord_mnist.gaussian_baseline_bpd(cfg, data) == pytest.approx(expected, rel=1e-9)


def _perturbed_params(exp, cfg, scale=0.3):
    params = exp.init_params(cfg, jr.PRNGKey(0))
    leaves, tree = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(5)
    return jax.tree_util.tree_unflatten(tree, [v + scale * rng.standard_normal(v.shape) / np.sqrt(max(v.size, 1))
                                               for v in leaves])


@pytest.mark.slow
def test_mnist_test_trace_exact_is_deterministic_and_hutchinson_is_an_independent_probe_per_image():
    """16 copies of one image: the exact trace gives one value; Hutchinson gives a different value per
    copy (independent probes) whose mean is the exact value within 4 standard errors (unbiased)."""
    exp = REGISTRY["ffjord_mnist"]
    cfg = exp.config("smoke", images="mnist", image_size=14, test_size=4, dtype="float64", eval_rtol=1e-6,
                     eval_atol=1e-6)
    params = _perturbed_params(exp, cfg)
    y = jnp.broadcast_to(jnp.asarray(exp.eval_arrays(cfg, _fake_mnist())["y"][:1]), (16, 14, 14, 1))
    exact = np.asarray(ffjord_mnist.test_log_prob(cfg, params, y, jr.PRNGKey(0)))
    hutch = np.asarray(ffjord_mnist.test_log_prob(dataclasses.replace(cfg, test_trace="hutchinson"), params, y,
                                                  jr.PRNGKey(0)))
    np.testing.assert_allclose(exact, exact[0], rtol=1e-12)
    assert len(np.unique(hutch)) == 16
    assert abs(hutch.mean() - exact[0]) < 4 * hutch.std(ddof=1) / np.sqrt(16)
    assert hutch.std() > 1e-6  # the field is not trivial: the probes matter


def test_mnist_bad_test_trace_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^test_trace must be one of \('exact', 'hutchinson'\), got 'none'$"):
        REGISTRY["ffjord_mnist"].config("smoke", test_trace="none")


def test_tabular_runs_use_their_own_split_even_when_a_sweep_loaded_another():
    """A sweep loads data once (for its first run): a run at another split seed must still see its split."""
    exp = REGISTRY["ffjord_tabular"]
    first, other = exp.config("smoke"), exp.config("smoke", split_seed=2)
    data = exp.load_data(first)
    own = load_breast_cancer(shuffle_seed=2)
    np.testing.assert_array_equal(exp.train_arrays(other, data), own.train[: other.train_size])
    np.testing.assert_array_equal(exp.eval_arrays(other, data), own.test)
    np.testing.assert_array_equal(exp.eval_arrays(first, data), data.test)
