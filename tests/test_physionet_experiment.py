"""PhysioNet latent ODE: model shapes, the loss terms against hand computations, the backwards
masked GRU, posterior sampling, the dynamics' initialisation, a training step, the test metrics on
every patient (partial last batch), the per-patient-mean baseline and per-patient MSE, config
validation (all on synthetic arrays)."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from taynode.data.physionet import PhysioNet, PhysioNetSplit
from taynode.experiment import solve_problem
from taynode.experiments import REGISTRY
from taynode.experiments.physionet import baseline_mse, eval_keys, patient_means, patient_mse, sample_z0
from taynode.latent import (
    DYN_INITS,
    Encoder,
    GRUStep,
    LatentDynamics,
    encoder_inputs,
    gaussian_kl,
    iwae_loss,
    kl_coefficient,
    masked_gaussian_loglik,
    masked_mse,
    masked_sq_errors,
)
from taynode.objective import make_train_step
from taynode.optim import make_optimizer

EXP = REGISTRY["physionet"]
T, D = 6, 37


def tiny(**kw):
    """A small model on a short grid: shapes and compilation stay cheap."""
    base = dict(train_size=16, batch_size=8, eval_test_size=8, nfe_examples=8, nfe_per_example=2, reg_examples=4,
                eval_chunk=4, rtol=1e-4, atol=1e-4, eval_rtol=1e-6, eval_atol=1e-6, rec_hidden=6, rec_units=8,
                dyn_units=8, dyn_layers=2, latent_dim=4, max_steps=256, checkpoint_every=2, epochs=1,
                dtype="float64")
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


def synthetic(n_train=16, n_test=8, info=None):
    return PhysioNet(train=synthetic_split(n_train, 0), test=synthetic_split(n_test, 1), features=("x",) * D,
                     data_min=np.zeros(D), data_max=np.ones(D), info=info or {})


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
    sq, cells = masked_sq_errors(jnp.asarray(values), jnp.asarray(mask), jnp.asarray(pred))
    np.testing.assert_allclose(sq, [((0.05**2 + 0.1**2) + (0.1**2 + 0.1**2)) / 2], rtol=1e-12)
    np.testing.assert_array_equal(cells, [3.0])
    np.testing.assert_allclose(sq / cells, mse, rtol=1e-12)


def test_masked_sq_errors_per_example():
    rng = np.random.default_rng(0)
    values, pred = rng.normal(size=(3, 4, 2)), rng.normal(size=(2, 3, 4, 2))
    mask = (rng.random((3, 4, 2)) < 0.5).astype(float)
    mask[:, 0, 0] = 1.0
    sq, cells = masked_sq_errors(jnp.asarray(values), jnp.asarray(mask), jnp.asarray(pred))
    for b in range(3):
        seen = mask[b] > 0
        want = np.mean([np.sum((values[b][seen] - pred[s, b][seen]) ** 2) for s in range(2)])
        assert cells[b] == seen.sum()
        np.testing.assert_allclose(sq[b], want, rtol=1e-12)
    # pooled over the batch they give masked_mse
    np.testing.assert_allclose(jnp.sum(sq) / jnp.sum(cells),
                               masked_mse(jnp.asarray(values), jnp.asarray(mask), jnp.asarray(pred)), rtol=1e-12)


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
    pytest.param(dict(reg="ernode", lam=1.0), marks=pytest.mark.slow),
    pytest.param(dict(reg="srnode", lam=0.1), marks=pytest.mark.slow),
    pytest.param(dict(reg="steer", steer_b=0.5), marks=pytest.mark.slow),
], ids=["none", "taylor", "rnode", "ernode", "srnode", "steer"])
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
    assert (float(metrics["reg"]) > 0) == (cfg.reg not in ("none", "steer"))  # STEER adds no penalty
    assert float(metrics["beta"]) == 0.0 and float(metrics["nfe"]) > 0
    assert losses[-1] < losses[0], losses


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("kw,match", [
    (dict(eval_test_size=-1), "eval_test_size must be an int >= 0"),
    (dict(dyn_init="xavier"), r"dyn_init must be one of \('haiku', 'lecun'\), got 'xavier': use 'haiku'"),
    (dict(implausible="clip"), r"implausible must be one of \('physiological', 'drop', 'keep'\), got 'clip'"),
    (dict(num_samples=0), "num_samples must be an int >= 1"),
    (dict(obs_std=0.0), "obs_std must be a positive number"),
    (dict(latent_dim=2.5), "latent_dim must be an int"),
    (dict(reg="steer", steer_b=0.6), r"steer_b must be <= 0.5 for PhysioNet, got 0.6"),
])
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match) as e:
        EXP.config("smoke", **kw)
    assert "\n" not in str(e.value)


def test_presets_and_sweep():
    paper = EXP.config("paper")
    assert (paper.epochs, paper.batch_size, paper.rtol, paper.optimizer, paper.lr, paper.lr_decay, paper.lr_min) == (
        100, 50, 1.4e-8, "adamax", 1e-2, 0.999, 1e-3)
    assert paper.dtype == "float64" and paper.eval_test_size == 0 and paper.reg_examples >= 1599
    cpu = EXP.config("cpu")
    assert EXP.config() == cpu
    # the trained tier: the paper's schedule and epochs, float32 training at 1e-5, float64 evaluation at 1.4e-8
    assert (cpu.epochs, cpu.batch_size, cpu.train_size, cpu.optimizer, cpu.lr, cpu.lr_decay, cpu.lr_min) == (
        100, 50, 6391, "adamax", 1e-2, 0.999, 1e-3)
    assert (cpu.dtype, cpu.rtol, cpu.atol, cpu.eval_dtype, cpu.eval_rtol, cpu.eval_atol) == (
        "float32", 1e-5, 1e-5, "float64", 1.4e-8, 1.4e-8)
    assert (cpu.dyn_init, cpu.implausible, cpu.eval_test_size) == ("haiku", "physiological", 0)
    assert cpu.checkpoint_every == cpu.steps_per_epoch == 127
    assert 3 <= cpu.num_steps // cpu.eval_every <= 6  # a curve of a few evaluations
    assert min(cpu.nfe_examples, cpu.nfe_per_example, cpu.reg_examples) >= 1599  # every number on the whole split
    gpu = EXP.config("gpu")
    assert (gpu.dtype, gpu.rtol, gpu.epochs, gpu.eval_every, gpu.eval_test_size) == ("float64", 1.4e-8, 5, 0, 0)
    smoke = EXP.config("smoke")
    assert smoke.num_steps <= 4 and smoke.eval_test_size == 50 and smoke.eval_every == 0
    with pytest.raises(ValueError, match="train_size"):
        EXP.train_arrays(tiny(train_size=100, batch_size=10, eval_test_size=10), synthetic())


def test_sweeps_headline_first_then_the_rest():
    headline, full = EXP.sweeps["headline"], EXP.sweeps["full"]
    assert set(EXP.sweeps) == {"headline", "full", "heuristics"}
    assert full[: len(headline)] == headline and len(headline) == 9
    runs = {(c["reg"], c.get("order"), c.get("lam"), c.get("lam_kin"), c.get("lam_fro")) for c in headline}
    assert runs == {("none", None, None, None, None), ("taylor", 2, 10.0, None, None), ("rnode", None, None, 1.0, 1.0)}
    assert sorted(c["seed"] for c in headline) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    rest = full[len(headline):]
    assert [(c["reg"], c["order"], c["lam"], c["seed"]) for c in rest] == [
        ("taylor", 2, 1.0, 0),
        ("taylor", 3, 1.0, 0),
        ("taylor", 2, 0.1, 0),
    ]
    names = [EXP.run_name(EXP.config("cpu", **c)) for c in full]
    assert len(set(names)) == len(names)
    # chapter 8: three weights of ERNODE, SRNODE and STEER and the sampled R_2, seed 0, none of them a headline run
    heur = [EXP.run_name(EXP.config("cpu", **c)) for c in EXP.sweeps["heuristics"]]
    assert len(set(heur)) == len(heur) == 10 and not set(heur) & set(names)
    assert {c["reg"] for c in EXP.sweeps["heuristics"]} == {"ernode", "srnode", "steer", "taylor"}


def test_data_loaded_with_another_rule_is_refused():
    data = synthetic(info={"implausible_rule": "drop"})
    with pytest.raises(ValueError, match="implausible: the data were loaded with implausible='drop'") as e:
        EXP.eval_arrays(tiny(), data)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="implausible"):
        EXP.train_arrays(tiny(), data)
    assert EXP.eval_arrays(tiny(implausible="drop"), data)["values"].shape[0] == 8


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
    assert record["iter_time_s"] > 0 and record["eval_time_s"] > 0 and len(record["history"]) > 0
    assert m["mse_ratio"] == pytest.approx(m["test_mse"] / m["baseline_mse"])
    assert (record["config"]["dyn_init"], record["config"]["implausible"]) == ("haiku", "physiological")
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


# --------------------------------------------------------------------------- initialisation of the dynamics


def _truncated_std(a: float = 2.0) -> float:
    """Standard deviation of a standard normal truncated to [-a, a], in closed form."""
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    return math.sqrt(1 - 2 * a * phi / math.erf(a / math.sqrt(2)))


@pytest.mark.parametrize("fan_in", [20, 50])
def test_haiku_init_is_a_normal_of_std_one_over_sqrt_fan_in_truncated_at_two_sigma(fan_in):
    """Haiku's default Linear init: TruncatedNormal(stddev=1/sqrt(fan_in)), cut at ±2 stddev."""
    assert _truncated_std() == pytest.approx(0.87962566103423978, rel=1e-12)
    w = np.asarray(DYN_INITS["haiku"](jr.PRNGKey(0), (fan_in, 20000), jnp.float64))
    sigma = 1 / math.sqrt(fan_in)
    assert w.std() == pytest.approx(0.8796 * sigma, rel=5e-3)
    assert np.abs(w).max() <= 2 * sigma and np.abs(w).max() > 0.999 * 2 * sigma
    assert abs(w.mean()) < 0.01 * sigma
    # the same distribution as rejection sampling of N(0, sigma²) outside ±2 sigma (an independent sampler)
    ref = np.random.default_rng(0).normal(0, sigma, 4 * w.size)
    ref = ref[np.abs(ref) <= 2 * sigma][: w.size]
    assert w.std() == pytest.approx(ref.std(), rel=5e-3)
    np.testing.assert_allclose(np.quantile(w, [0.1, 0.25, 0.5, 0.75, 0.9]),
                               np.quantile(ref, [0.1, 0.25, 0.5, 0.75, 0.9]), atol=0.01 * sigma)
    # flax's default (LeCun normal) has that standard deviation after truncation instead
    lecun = np.asarray(DYN_INITS["lecun"](jr.PRNGKey(0), (fan_in, 20000), jnp.float64))
    assert lecun.std() == pytest.approx(sigma, rel=5e-3)


@pytest.mark.parametrize("dyn_init", ["haiku", "lecun"])
def test_dynamics_init_is_the_config_field(dyn_init):
    cfg = tiny(dyn_init=dyn_init, dyn_units=64, latent_dim=16)
    dyn = EXP.init_params(cfg, jr.PRNGKey(0))["dyn"]["params"]
    factor = 0.8796 if dyn_init == "haiku" else 1.0
    kernels = [np.asarray(dyn[f"Dense_{i}"]["kernel"]) for i in range(cfg.dyn_layers + 1)]
    stds = [k.std() * math.sqrt(k.shape[0]) for k in kernels]
    np.testing.assert_allclose(stds, factor, rtol=0.08)
    assert all(np.abs(k).max() <= 2 / math.sqrt(k.shape[0]) * (1 if dyn_init == "haiku" else 1 / 0.8796) + 1e-12
               for k in kernels)
    assert all(not np.any(dyn[f"Dense_{i}"]["bias"]) for i in range(cfg.dyn_layers + 1))
    # the encoder and decoder keep the paper's N(0, 0.1²) whatever dyn_init says
    dec = np.asarray(EXP.init_params(cfg, jr.PRNGKey(0))["dec"]["params"]["Dense_0"]["kernel"])
    assert dec.std() == pytest.approx(0.1, rel=0.1)
    with pytest.raises(ValueError, match="weight_init must be one of"):
        LatentDynamics(weight_init="orthogonal").init(jr.PRNGKey(0), 0.0, jnp.zeros((1, 4)))


# --------------------------------------------------------------------------- float32 training


def test_float32_training_stays_float32_with_float64_enabled():
    from taynode.evaluation import cast_floats
    from taynode.objective import make_loss

    cfg = tiny(dtype="float32", rtol=1e-5, atol=1e-5, reg="taylor", order=2, lam=0.1, epochs=12)
    params = cast_floats(EXP.init_params(cfg, jr.PRNGKey(0)), "float32")
    arrays = EXP.train_arrays(cfg, synthetic())
    assert {a.dtype for a in arrays.values()} == {np.dtype(np.float32)}
    batch = {k: jnp.asarray(v[:8]) for k, v in arrays.items()}
    step = 11 * cfg.steps_per_epoch  # epoch 11: β > 0
    (loss, aux), grads = jax.value_and_grad(make_loss(EXP, cfg), has_aux=True)(params, batch, jr.PRNGKey(0), step)
    assert float(aux["beta"]) > 0
    assert loss.dtype == jnp.float32 and aux["beta"].dtype == jnp.float32
    assert {g.dtype for g in jax.tree_util.tree_leaves(grads)} == {jnp.dtype(jnp.float32)}


# --------------------------------------------------------------------------- test metrics, baseline, per patient


def test_patient_means_and_baseline_mse_by_hand():
    # two patients, three hours, two features
    values = np.array([[[1.0, 5.0], [3.0, 0.0], [2.0, 7.0]],
                       [[4.0, 0.0], [0.0, 0.0], [6.0, 0.0]]])
    mask = np.array([[[1, 1], [1, 0], [0, 1]],
                     [[1, 0], [0, 0], [1, 0]]], dtype=float)
    # patient 0: feature 0 observed 1, 3 (mean 2); feature 1 observed 5, 7 (mean 6)
    # patient 1: feature 0 observed 4, 6 (mean 5); feature 1 never observed (not scored)
    np.testing.assert_allclose(patient_means(values, mask), [[2.0, 6.0], [5.0, 0.0]])
    errors = [(1 - 2) ** 2, (3 - 2) ** 2, (5 - 6) ** 2, (7 - 6) ** 2, (4 - 5) ** 2, (6 - 5) ** 2]
    assert baseline_mse(values, mask) == pytest.approx(sum(errors) / 6, rel=1e-15)
    # an unobserved cell's value never matters
    assert baseline_mse(values + 100 * (1 - mask), mask) == pytest.approx(1.0, rel=1e-15)
    with pytest.raises(ValueError, match="mask has no observed cell"):
        baseline_mse(values, 0 * mask)


def _solve_patient(cfg, params, x, i):
    """Patient `i` of the evaluation arrays solved alone: its decoded trajectories `(S, 1, T, D)`."""
    from taynode.experiments.physionet import _decode

    batch = {k: jnp.asarray(v[i : i + 1]) for k, v in x.items()}
    sol = solve_problem(EXP.problem(cfg, params, batch), solver=cfg.solver, rtol=cfg.eval_rtol, atol=cfg.eval_atol,
                        max_steps=cfg.max_steps)
    return np.asarray(_decode(cfg, params, batch, sol.ys))


@pytest.fixture(scope="module")
def eleven():
    """An untrained float32 model judged in float64 on 11 synthetic test patients (batches 4, 4, 3)."""
    from taynode.evaluation import for_evaluation

    cfg = tiny(dtype="float32", rtol=1e-5, atol=1e-5, batch_size=4, eval_test_size=0, nfe_examples=11,
               nfe_per_example=11, reg_examples=4)
    data = synthetic(n_test=11)
    params = EXP.init_params(cfg, jr.PRNGKey(2))
    ecfg, eparams = for_evaluation(cfg, params)
    return cfg, params, ecfg, eparams, data, EXP.metrics(ecfg, eparams, data)


def test_metrics_cover_every_test_patient_with_a_partial_last_batch(eleven):
    from taynode.experiments.physionet import _terms

    cfg, params, ecfg, eparams, data, m = eleven
    assert m["eval_sizes"] == {"test": 11, "loss_batch": 4, "loss_batches": 3}
    x = EXP.eval_arrays(ecfg, data)
    assert x["values"].dtype == np.float64 and x["values"].shape[0] == 11
    # independent: every patient solved alone (per-trajectory solves do not depend on the batch)
    preds = np.concatenate([_solve_patient(ecfg, eparams, x, i) for i in range(11)], axis=1)  # (S, 11, T, D)
    seen = x["mask"] > 0
    sq = np.mean(((x["values"][None] - preds) ** 2 * x["mask"][None]).sum(axis=(2, 3)), axis=0)
    assert m["test_mse"] == pytest.approx(sq.sum() / seen.sum(), rel=1e-9)
    # the loss: each batch's loss (4, 4 and 3 patients) weighted by its patients
    kl_coef = float(kl_coefficient(ecfg.epochs - 1))
    losses = []
    for lo, hi in ((0, 4), (4, 8), (8, 11)):
        batch = {k: jnp.asarray(v[lo:hi]) for k, v in x.items()}
        losses.append(float(_terms(ecfg, eparams, batch, jnp.asarray(preds[:, lo:hi]), kl_coef)["loss"]))
    assert m["test_loss"] == pytest.approx((4 * losses[0] + 4 * losses[1] + 3 * losses[2]) / 11, rel=1e-9)
    assert m["baseline_mse"] == pytest.approx(baseline_mse(data.test.values, data.test.mask), rel=1e-12)
    assert m["mse_ratio"] == pytest.approx(m["test_mse"] / m["baseline_mse"], rel=1e-12)


def test_test_mse_kl_and_loglik_do_not_depend_on_the_loss_batch(eleven):
    cfg, params, ecfg, eparams, data, m = eleven
    other = EXP.metrics(dataclasses.replace(ecfg, batch_size=11), eparams, data)
    assert other["eval_sizes"]["loss_batches"] == 1
    for k in ("test_mse", "test_kl", "test_loglik", "baseline_mse"):
        assert other[k] == pytest.approx(m[k], rel=1e-9), k


def test_patient_mse_is_each_patients_own_mse(eleven):
    cfg, params, ecfg, eparams, data, m = eleven
    got = patient_mse(cfg, params, data)  # cast to the evaluation dtype inside
    assert got.shape == (11,)
    x = EXP.eval_arrays(ecfg, data)
    for i in (0, 5, 10):
        pred = _solve_patient(ecfg, eparams, x, i)[:, 0]
        seen = x["mask"][i] > 0
        want = np.mean([np.mean((x["values"][i][seen] - pred[s][seen]) ** 2) for s in range(cfg.num_samples)])
        assert got[i] == pytest.approx(want, rel=1e-9)
    # weighted by their observed cells, the patients' MSEs give the test MSE
    cells = data.test.mask.sum(axis=(1, 2))
    assert np.sum(got * cells) / cells.sum() == pytest.approx(m["test_mse"], rel=1e-12)
    assert patient_mse(tiny(eval_test_size=3), EXP.init_params(tiny(), jr.PRNGKey(2)), data).shape == (3,)


def test_train_split_mse_scores_the_patients_the_run_trained_on():
    """Each of the first `train_size` training patients solved alone (independent of the batched pass);
    the patients after them, scrambled, change nothing."""
    from taynode.evaluation import for_evaluation
    from taynode.experiments.physionet import train_split_mse

    cfg = tiny(dtype="float32", rtol=1e-5, atol=1e-5, batch_size=4, train_size=7)
    data = synthetic(n_train=12)
    params = EXP.init_params(cfg, jr.PRNGKey(3))
    got = train_split_mse(cfg, params, data)
    assert got["train_patients"] == 7
    ecfg, eparams = for_evaluation(cfg, params)
    own = dataclasses.replace(data, test=data.train)  # the training rows where eval_arrays reads
    x = EXP.eval_arrays(dataclasses.replace(ecfg, eval_test_size=0), own)
    preds = np.concatenate([_solve_patient(ecfg, eparams, x, i) for i in range(7)], axis=1)  # (S, 7, T, D)
    vals, mask = x["values"][:7], x["mask"][:7]
    sq = np.mean(((vals[None] - preds) ** 2 * mask[None]).sum(axis=(2, 3)), axis=0)
    assert got["train_mse"] == pytest.approx(sq.sum() / mask.sum(), rel=1e-9)
    assert got["train_baseline_mse"] == pytest.approx(baseline_mse(data.train.values[:7], data.train.mask[:7]),
                                                      rel=1e-12)
    assert got["train_mse_ratio"] == pytest.approx(got["train_mse"] / got["train_baseline_mse"], rel=1e-12)
    rest = np.arange(12)
    rest[7:] = rest[7:][::-1]
    scrambled = dataclasses.replace(data, train=dataclasses.replace(
        data.train, values=data.train.values[rest] * 3.0, mask=data.train.mask[rest]))
    scrambled.train.values[:7] = data.train.values[:7]
    assert train_split_mse(cfg, params, scrambled) == got
    with pytest.raises(ValueError, match="train_size .13. exceeds the 12 training patients"):
        train_split_mse(tiny(train_size=13), params, data)
