"""PhysioNet latent ODE: model shapes, the loss terms against hand computations, the backwards
masked GRU, posterior sampling, a training step, config validation (all on synthetic arrays)."""

import math

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from taynode.data.physionet import PhysioNet, PhysioNetSplit
from taynode.experiments import REGISTRY
from taynode.experiments.physionet import eval_keys, sample_z0
from taynode.latent import (
    Encoder,
    GRUStep,
    encoder_inputs,
    gaussian_kl,
    iwae_loss,
    kl_coefficient,
    masked_gaussian_loglik,
    masked_mse,
)
from taynode.objective import make_train_step
from taynode.optim import make_optimizer

EXP = REGISTRY["physionet"]
T, D = 6, 37


def tiny(**kw):
    """A small model on a short grid: shapes and compilation stay cheap."""
    base = dict(train_size=16, batch_size=8, eval_test_size=8, nfe_examples=8, nfe_per_example=2, reg_examples=4,
                eval_chunk=4, rtol=1e-4, atol=1e-4, eval_rtol=1e-6, eval_atol=1e-6, rec_hidden=6, rec_units=8,
                dyn_units=8, dyn_layers=2, latent_dim=4, max_steps=256, checkpoint_every=2, epochs=1)
    return EXP.config("smoke", **{**base, **kw})


def synthetic_split(n, seed):
    rng = np.random.default_rng(seed)
    times = np.linspace(0.0, 1.0, T)
    mask = (rng.random((n, T, D)) < 0.3).astype(np.float64)
    mask[:, 0, :3] = 1.0  # every patient has an observation
    # smooth per-patient curves, so that there is something to interpolate
    phase = rng.uniform(0, 2 * np.pi, (n, 1, D))
    values = (0.5 + 0.3 * np.sin(2 * np.pi * times[None, :, None] + phase)) * mask
    return PhysioNetSplit(values=values, mask=mask, times=times, record_ids=np.arange(n) + 132539 + 1000 * seed,
                          in_hospital_death=np.zeros(n, np.int64))


def synthetic(n_train=16, n_test=8):
    return PhysioNet(train=synthetic_split(n_train, 0), test=synthetic_split(n_test, 1), features=("x",) * D,
                     data_min=np.zeros(D), data_max=np.ones(D), info={})


def training_batch(cfg, n=8, key=0):
    arrays = EXP.train_arrays(cfg, synthetic())
    return EXP.training_batch(cfg, {k: jnp.asarray(v[:n]) for k, v in arrays.items()}, jr.PRNGKey(key))


# --------------------------------------------------------------------------- loss terms


def test_masked_gaussian_loglik_matches_a_hand_computation():
    values = np.array([[[0.2, 0.5], [0.1, 0.9]]])  # (batch 1, T 2, D 2)
    mask = np.array([[[1.0, 0.0], [1.0, 1.0]]])
    pred = np.array([[[[0.25, 7.0], [0.1, 0.8]]], [[[0.2, 0.5], [0.0, 1.0]]]])  # (samples 2, 1, 2, 2)
    std = 0.1

    def logpdf(x, mu):
        return -((x - mu) ** 2) / (2 * std**2) - math.log(std * math.sqrt(2 * math.pi))

    # three observed cells; the unobserved prediction 7.0 must not count
    s0 = (logpdf(0.2, 0.25) + logpdf(0.1, 0.1) + logpdf(0.9, 0.8)) / 3
    s1 = (logpdf(0.2, 0.2) + logpdf(0.1, 0.0) + logpdf(0.9, 1.0)) / 3
    got = masked_gaussian_loglik(jnp.asarray(values), jnp.asarray(mask), jnp.asarray(pred), std)
    np.testing.assert_allclose(got, [s0, s1], rtol=1e-12)
    mse = ((0.05**2 + 0 + 0.1**2) / 3 + (0 + 0.1**2 + 0.1**2) / 3) / 2
    np.testing.assert_allclose(masked_mse(jnp.asarray(values), jnp.asarray(mask), jnp.asarray(pred)), mse, rtol=1e-12)


def test_gaussian_kl_matches_closed_form_and_numerical_integration():
    mu, sigma = jnp.array([[0.0, 1.0]]), jnp.array([[1.0, 2.0]])
    # KL(N(0,1)||N(0,1)) = 0; KL(N(1,4)||N(0,1)) = (4 + 1 - 1 - log 4) / 2
    np.testing.assert_allclose(gaussian_kl(mu, sigma), (0 + (4 - math.log(4)) / 2) / 2, rtol=1e-12)
    # against ∫ q log(q/p) on a fine grid
    x = np.linspace(-30, 30, 600001)
    q = np.exp(-((x - 1.0) ** 2) / 8) / math.sqrt(8 * math.pi)
    p = np.exp(-(x**2) / 2) / math.sqrt(2 * math.pi)
    kl = np.trapezoid(q * (np.log(q) - np.log(p)), x)
    np.testing.assert_allclose(gaussian_kl(jnp.array([[1.0]]), jnp.array([[2.0]])), kl, rtol=1e-6)


def test_iwae_loss_and_kl_annealing():
    loglik, kl = jnp.array([-3.0, 1.0, 0.5]), 2.0
    expected = -math.log(sum(math.exp(v - 0.5 * kl) for v in (-3.0, 1.0, 0.5)))
    np.testing.assert_allclose(iwae_loss(loglik, kl, 0.5), expected, rtol=1e-12)
    np.testing.assert_allclose(iwae_loss(jnp.array([1000.0, 1000.0]), 0.0, 0.0), -1000 - math.log(2), rtol=1e-12)
    coef = [float(kl_coefficient(e)) for e in (0, 10, 11, 20)]
    np.testing.assert_allclose(coef, [0.0, 0.0, 0.01, 1 - 0.99**10], rtol=1e-12)


# --------------------------------------------------------------------------- encoder


def _manual_encoder(enc, params, values, mask, times, backwards):
    """The GRU stepped by hand over the time points, then the hidden-to-z0 MLP (the Encoder's own)."""
    step = GRUStep(hidden=enc.hidden, units=enc.units)
    step_params = {"params": params["params"]["ScanGRUStep_0"]}
    x = encoder_inputs(values, mask, times)
    observed = jnp.any(mask > 0, axis=-1)
    carry = (jnp.zeros((values.shape[0], enc.hidden)),) * 2
    order = range(values.shape[1] - 1, -1, -1) if backwards else range(values.shape[1])
    for i in order:
        carry, _ = step.apply(step_params, carry, (x[:, i], observed[:, i]))
    p = params["params"]
    h = jnp.concatenate(carry, axis=-1)
    out = jnp.tanh(h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]) @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    return out[:, : enc.latent], jnp.abs(out[:, enc.latent :])


def test_encoder_runs_the_gru_backwards_over_time():
    cfg = tiny()
    split = synthetic_split(3, 2)
    values, mask, times = (jnp.asarray(a) for a in (split.values, split.mask, split.times))
    enc = Encoder(latent=cfg.latent_dim, hidden=cfg.rec_hidden, units=cfg.rec_units)
    params = EXP.init_params(cfg, jr.PRNGKey(1))["enc"]
    mu, sigma = enc.apply(params, values, mask, times)
    assert mu.shape == sigma.shape == (3, cfg.latent_dim) and bool(jnp.all(sigma >= 0))
    back = _manual_encoder(enc, params, values, mask, times, backwards=True)
    fwd = _manual_encoder(enc, params, values, mask, times, backwards=False)
    np.testing.assert_allclose(mu, back[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sigma, back[1], rtol=1e-10, atol=1e-12)
    assert float(jnp.max(jnp.abs(mu - fwd[0]))) > 1e-6
    # reversing the series in time changes the posterior
    mu_rev, _ = enc.apply(params, values[:, ::-1], mask[:, ::-1], times)
    assert float(jnp.max(jnp.abs(mu - mu_rev))) > 1e-6


def test_an_unobserved_time_point_leaves_the_gru_state_unchanged():
    step = GRUStep(hidden=5, units=7)
    carry = (jr.normal(jr.PRNGKey(0), (2, 5)), jnp.abs(jr.normal(jr.PRNGKey(1), (2, 5))))
    x = jr.normal(jr.PRNGKey(2), (2, 2 * D + 1))
    params = step.init(jr.PRNGKey(3), carry, (x, jnp.array([True, True])))
    (mean, std), _ = step.apply(params, carry, (x, jnp.array([False, True])))
    np.testing.assert_array_equal(mean[0], carry[0][0])
    np.testing.assert_array_equal(std[0], carry[1][0])
    assert float(jnp.max(jnp.abs(mean[1] - carry[0][1]))) > 1e-6


# --------------------------------------------------------------------------- problem and training


def test_problem_solves_every_posterior_sample_on_the_grid():
    cfg = tiny()
    params = EXP.init_params(cfg, jr.PRNGKey(0))
    batch = training_batch(cfg, n=8)
    problem = EXP.problem(cfg, params, batch)
    assert problem.per_example and problem.y0.shape == (cfg.num_samples * 8, cfg.latent_dim)
    np.testing.assert_allclose(problem.ts, np.linspace(0, 1, T))
    # the same keys give the same samples; fresh step keys give others
    again = EXP.problem(cfg, params, training_batch(cfg, n=8))
    np.testing.assert_array_equal(problem.y0, again.y0)
    other = EXP.problem(cfg, params, training_batch(cfg, n=8, key=1))
    assert not np.allclose(problem.y0, other.y0)


def test_samples_are_sample_major_and_test_keys_are_fixed_per_patient():
    cfg = tiny()
    mu = jnp.arange(3 * cfg.latent_dim, dtype=jnp.float64).reshape(3, cfg.latent_dim)
    keys = jnp.asarray(eval_keys(3))
    z0 = sample_z0(cfg, mu, jnp.zeros_like(mu), keys)
    np.testing.assert_array_equal(z0, jnp.tile(mu, (cfg.num_samples, 1)))
    z = sample_z0(cfg, mu, jnp.ones_like(mu), keys).reshape(cfg.num_samples, 3, -1)
    z_first = sample_z0(cfg, mu[:1], jnp.ones_like(mu[:1]), keys[:1]).reshape(cfg.num_samples, 1, -1)
    np.testing.assert_array_equal(z[:, :1], z_first)  # a patient's samples do not depend on its batch
    np.testing.assert_array_equal(eval_keys(3), eval_keys(5)[:3])
    arrays = EXP.eval_arrays(cfg, synthetic())
    assert arrays["key"].shape == (8, 2) and arrays["values"].shape == (8, T, D)


@pytest.mark.parametrize("reg", [
    dict(reg="none"),
    pytest.param(dict(reg="taylor", order=2, lam=1e-2), marks=pytest.mark.slow),
    pytest.param(dict(reg="rnode", lam_kin=1e-2, lam_fro=1e-2), marks=pytest.mark.slow),
], ids=["none", "taylor", "rnode"])
def test_a_training_step_lowers_the_loss_on_a_fixed_batch(reg):
    cfg = tiny(**reg)
    opt = make_optimizer(cfg)
    params = EXP.init_params(cfg, jr.PRNGKey(0))
    state = {"params": params, "opt_state": opt.init(params)}
    arrays = EXP.train_arrays(cfg, synthetic())
    batch = {k: jnp.asarray(v[:8]) for k, v in arrays.items()}
    key, step0 = jr.PRNGKey(5), jnp.asarray(0, jnp.int32)
    step = make_train_step(EXP, cfg, opt)
    losses = []
    for _ in range(4):  # each step reports the loss of the parameters it starts from
        state, metrics = step(state, batch, key, step0)
        losses.append(float(metrics["loss"]))
    assert (float(metrics["reg"]) > 0) == (cfg.reg != "none")
    assert float(metrics["beta"]) == 0.0 and float(metrics["nfe"]) > 0
    assert losses[-1] < losses[0], losses


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("kw,match", [
    (dict(eval_test_size=30, batch_size=20), "eval_test_size .* multiple of batch_size"),
    (dict(num_samples=0), "num_samples must be an int >= 1"),
    (dict(obs_std=0.0), "obs_std must be a positive number"),
    (dict(latent_dim=2.5), "latent_dim must be an int"),
])
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        EXP.config("smoke", **kw)


def test_presets_and_sweep():
    paper = EXP.config("paper")
    assert (paper.epochs, paper.batch_size, paper.rtol, paper.optimizer, paper.lr, paper.lr_decay, paper.lr_min) == (
        100, 50, 1.4e-8, "adamax", 1e-2, 0.999, 1e-3)
    assert EXP.config() == EXP.config("cpu") and EXP.config("cpu").eval_rtol == 1.4e-8
    assert {c["reg"] for c in EXP.sweeps["full"]} == {"none", "taylor", "rnode"}
    with pytest.raises(ValueError, match="train_size"):
        EXP.train_arrays(tiny(train_size=100, batch_size=10, eval_test_size=10), synthetic())


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_train_and_evaluate_on_synthetic_data(tmp_path):
    from taynode.runner import load_run, train

    cfg = tiny(epochs=2)
    record = train(EXP, cfg, data=synthetic(), out_dir=tmp_path, ckpt_root=tmp_path / "ckpt", progress=False)
    m = record["metrics"]
    assert m["eval_sizes"]["test"] == 8 and m["trajectories_per_patient"] == 3
    assert m["test_nfe_per_example"] >= 8 and m["test_nfe"] >= 8 and m["test_mse"] > 0
    assert set(m["penalties"]) == {"R2", "R3", "kinetic", "frobenius"}
    assert record["iter_time_s"] > 0 and len(record["history"]) > 0
    cfg2, params, _ = load_run(EXP, tmp_path / f"{record['run']}.json")
    assert cfg2 == cfg
    # penalties are means per trajectory: three per patient
    from taynode.evaluation import penalty_values
    from taynode.experiment import solve_problem
    from taynode.regularizers import Kinetic

    x = EXP.eval_arrays(cfg, synthetic())
    batch = {k: jnp.asarray(v[:4]) for k, v in x.items()}
    sol = solve_problem(EXP.problem(cfg, params, batch), solver="dopri5", rtol=1e-6, atol=1e-6, max_steps=256,
                        regularizers=(Kinetic(),))
    assert sol.reg["kinetic"].shape == (12,)
    np.testing.assert_allclose(penalty_values(EXP, cfg, params, synthetic(), n=4)["kinetic"],
                               float(jnp.mean(sol.reg["kinetic"])), rtol=1e-5)
