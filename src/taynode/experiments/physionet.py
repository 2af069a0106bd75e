"""PhysioNet 2012 interpolation with the paper's latent ODE, unregularised, R_K-regularised or RNODE.

    taynode train physionet --preset cpu --reg taylor --order 2 --lam 1e-2
    taynode eval physionet results/physionet/<run>.json
    taynode sweep physionet --preset cpu

Data: `taynode.data.physionet.load_physionet` (37 features on the hourly grid of 49 points
rescaled to [0, 1], values scaled with training statistics, masks, an 80/20 split by a hash of
the RecordID; the split's seed is 0 for every run). The task is interpolation: the observed cells
are the encoder's input and the targets.

Model (`taynode.latent`, sizes as the paper's code): a masked GRU (hidden mean and std of 40,
gate MLPs of 50 units) run backwards over the series gives q(z0 | x) on a 20-d latent state;
`num_samples` = 3 samples z0 are drawn by reparameterisation; dynamics 4 × (tanh → Linear(50)) →
tanh → Linear(20) carry them over the grid, **each trajectory solved on its own** (one step size
per trajectory); a Linear decoder gives the 37 features. Loss: the paper's
`−logsumexp_s(loglik_s − β·KL)` with a Gaussian likelihood (σ = 0.01) over the observed cells
and the KL annealing `β = max(0, 1 − 0.99^(epoch − 10))`. Adamax, lr 1e-2 · 0.999^step floored at
1e-3; float64; Dopri5. The regularisers (R_K, RNODE) see the latent dynamics only, integrated over
the whole window alongside each trajectory (their state takes part in error control).

**Randomness.** The posterior samples of a batch come from one key per patient in the batch
(`batch["key"]`, shape `(batch, 2)`). A training step draws fresh keys from the step's key
(`training_batch`); the test arrays carry fixed keys (patient `i` of the test split always has
key `fold_in(PRNGKey(0), i)`), so every evaluation of a model sees the same samples, whichever
batch a patient is solved in. The paper's code drew the same noise at every step (a fixed key).

**Metrics** (test split; `evaluation.evaluate` adds NFE and penalties): the loss and the
interpolation MSE on observed cells (scaled units), in batches of `batch_size` patients at the
evaluation tolerance, with β of the last epoch; the mean log-likelihood per observed cell and
the KL beside them. The headline NFE is `test_nfe_per_example`: the mean NFE of one trajectory
(a posterior sample of a patient) of the unregularised dynamics solved alone with Dopri5 at
`eval_rtol`. `test_nfe` solves the `3 × batch_size` trajectories of a batch jointly.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._checks import check_ints, check_numbers
from ..configs import ExperimentConfig, field
from ..experiment import Experiment, Problem, solve_problem
from ..latent import (
    Decoder,
    Encoder,
    LatentDynamics,
    gaussian_kl,
    iwae_loss,
    kl_coefficient,
    masked_gaussian_loglik,
    masked_mse,
)
from ..models import as_field

__all__ = ["PhysioNetConfig", "PhysioNetExperiment", "EXPERIMENT", "PRESETS", "SWEEPS", "eval_keys", "posterior",
           "sample_z0"]

FEATURES = 37


@dataclasses.dataclass(frozen=True)
class PhysioNetConfig(ExperimentConfig):
    """One PhysioNet latent-ODE run; the defaults are the `cpu` preset.

    The `cpu` preset is the paper's model, loss, optimiser and batch on a reduced scale: all
    6391 training patients for 4 epochs (508 steps of 50 patients; the paper: 100 epochs),
    training solves at rtol = atol = 1e-5 (the paper: 1.4e-8), evaluation at 1.4e-8 on the
    first 400 test patients (of 1599; the per-trajectory NFE on the first 200, the penalties on
    the first 100). With 4 epochs the KL weight β stays 0 (the annealing starts after epoch 10),
    as in the first 11 epochs of the paper's schedule.
    """

    latent_dim: int = field(20, "dimension of the latent state z")
    rec_hidden: int = field(40, "size of the GRU's hidden mean (and of its std)")
    rec_units: int = field(50, "units of the GRU's gate MLPs and of the hidden-to-z0 MLP")
    dyn_units: int = field(50, "width of the latent dynamics' hidden layers")
    dyn_layers: int = field(4, "number of tanh → Linear(dyn_units) layers of the latent dynamics")
    num_samples: int = field(3, "posterior samples z0 per patient")
    obs_std: float = field(0.01, "standard deviation of the Gaussian likelihood")
    eval_test_size: int = field(400, "test patients of the reported loss and MSE (a multiple of batch_size)")
    # shared fields with this experiment's values
    train_size: int = field(6391, "training patients used (the first ones of the training split, by RecordID)")
    batch_size: int = field(50, "patients per training batch (and per joint NFE batch)")
    epochs: int = field(4, "passes over the training patients")
    optimizer: str = field("adamax", "one of ('sgd', 'adam', 'adamax', 'adamw')")
    lr: float = field(1e-2, "initial learning rate")
    lr_decay: float = field(0.999, "multiplicative learning-rate decay per step")
    lr_min: float = field(1e-3, "floor of the decayed learning rate")
    rtol: float = field(1e-5, "relative tolerance of the training solves")
    atol: float = field(1e-5, "absolute tolerance of the training solves")
    checkpoint_every: int = field(50, "write a resumable checkpoint every this many steps")
    nfe_examples: int = field(400, "test patients of the joint-batch NFE (in batches of batch_size)")
    nfe_per_example: int = field(200, "test patients whose trajectories are solved one at a time for the NFE")
    reg_examples: int = field(100, "test patients on which R_2, R_3, kinetic and Frobenius are reported")
    eval_chunk: int = field(50, "test patients solved jointly when penalties are evaluated")

    def __post_init__(self):
        super().__post_init__()
        check_ints(self, ("latent_dim", "rec_hidden", "rec_units", "dyn_units", "dyn_layers", "num_samples",
                          "eval_test_size"))
        check_numbers(self, ("obs_std",), positive=True)
        if self.eval_test_size % self.batch_size:
            raise ValueError(f"eval_test_size ({self.eval_test_size}) must be a multiple of batch_size "
                             f"({self.batch_size}): the test loss is a mean over whole batches")


PRESETS = {
    # well under 2 minutes on 2 CPU cores: 200 patients, 1 epoch, loose training tolerance, small evaluation
    "smoke": dict(train_size=200, epochs=1, rtol=1e-4, atol=1e-4, eval_test_size=50, nfe_examples=50,
                  nfe_per_example=10, reg_examples=10, eval_chunk=10, checkpoint_every=2),
    # <= 15 min per run on 2 CPU cores (see the PhysioNetConfig docstring)
    "cpu": dict(),
    # one H100/H200-class GPU: all training patients, 5 epochs, the paper's tolerance, the whole test split
    "gpu": dict(epochs=5, rtol=1.4e-8, atol=1.4e-8, eval_test_size=1550, nfe_examples=1550,
                nfe_per_example=400, reg_examples=400, checkpoint_every=50),
    # the paper's hyperparameters: 100 epochs, batch 50, all data, Dopri5 at 1.4e-8
    "paper": dict(epochs=100, rtol=1.4e-8, atol=1.4e-8, eval_test_size=1550, nfe_examples=1550,
                  nfe_per_example=1599, reg_examples=1599, checkpoint_every=500),
}

# The cpu-preset runs chapter 06 shows (seed 0), most telling first: unregularised; R_2 at a weight
# whose penalty is comparable to the others' (λ·R of the unregularised model's size); R_3 and RNODE
# at weights of a like penalty; then R_2 from weak (the README's weight) to that one.
FULL = (
    dict(reg="none"),
    dict(reg="taylor", order=2, lam=10.0),
    dict(reg="taylor", order=3, lam=1.0),
    dict(reg="rnode", lam_kin=1.0, lam_fro=1.0),
    dict(reg="taylor", order=2, lam=1.0),
    dict(reg="taylor", order=2, lam=1e-2),
)
# The unregularised run and the strongest R_2 at seeds 1 and 2.
HEADLINE = (dict(reg="none"), dict(reg="taylor", order=2, lam=10.0))
SWEEPS = {
    "full": tuple({**o, "seed": 0} for o in FULL),
    "repeat": tuple({**o, "seed": s} for s in (1, 2) for o in HEADLINE),
}


def eval_keys(n: int) -> np.ndarray:
    """The fixed posterior-sampling keys of the first `n` test patients, `(n, 2)` uint32."""
    return np.asarray(jax.vmap(lambda i: jr.fold_in(jr.PRNGKey(0), i))(jnp.arange(n)))


def _modules(cfg: PhysioNetConfig):
    return (Encoder(latent=cfg.latent_dim, hidden=cfg.rec_hidden, units=cfg.rec_units),
            LatentDynamics(latent=cfg.latent_dim, units=cfg.dyn_units, layers=cfg.dyn_layers),
            Decoder(FEATURES))


def _grid(values):
    """The union time grid of a batch of `(batch, T, D)` arrays: T evenly spaced points on [0, 1]."""
    return jnp.linspace(0.0, 1.0, values.shape[1], dtype=values.dtype)


def posterior(cfg, params, batch):
    """`(mu, sigma)` of q(z0 | x) for every patient of the batch, each `(batch, latent)`."""
    return _modules(cfg)[0].apply(params["enc"], batch["values"], batch["mask"], _grid(batch["values"]))


def sample_z0(cfg, mu, sigma, keys):
    """`num_samples` reparameterised samples per patient, sample-major: `(num_samples · batch, latent)`."""
    eps = jax.vmap(lambda k: jr.normal(k, (cfg.num_samples, cfg.latent_dim), mu.dtype))(keys)  # (B, S, L)
    z0 = mu[None] + sigma[None] * jnp.swapaxes(eps, 0, 1)  # (S, B, L)
    return z0.reshape(-1, cfg.latent_dim)


def _terms(cfg, params, batch, ys, kl_coef):
    """Loss, log-likelihood, KL and MSE of a batch from the latent states `ys` `(S·B, T, L)`."""
    values, mask = batch["values"], batch["mask"]
    pred = _modules(cfg)[2].apply(params["dec"], ys).reshape((cfg.num_samples,) + values.shape)
    loglik = masked_gaussian_loglik(values, mask, pred, cfg.obs_std)
    mu, sigma = posterior(cfg, params, batch)
    kl = gaussian_kl(mu, sigma)
    return {"loss": iwae_loss(loglik, kl, kl_coef), "loglik": jnp.mean(loglik), "kl": kl,
            "mse": masked_mse(values, mask, pred)}


@eqx.filter_jit
def _test_terms(exp, cfg, params, batch, kl_coef):
    problem = exp.problem(cfg, params, batch)
    sol = solve_problem(problem, solver=cfg.solver, rtol=cfg.eval_rtol, atol=cfg.eval_atol, max_steps=cfg.max_steps)
    return _terms(cfg, params, batch, sol.ys, kl_coef)


def _final_kl_coef(cfg) -> float:
    return float(kl_coefficient(cfg.epochs - 1))


class PhysioNetExperiment(Experiment):
    """The paper's latent ODE on PhysioNet 2012: interpolation of the observed cells."""

    name = "physionet"
    Config = PhysioNetConfig
    presets = PRESETS
    sweeps = SWEEPS
    description = "PhysioNet 2012 latent ODE, interpolation (chapter 06)"

    # --- data ---------------------------------------------------------------------------------
    def load_data(self, cfg, progress=True):
        from ..data.physionet import load_physionet

        data = load_physionet(progress=progress)
        np.testing.assert_allclose(data.train.times, np.linspace(0, 1, len(data.train.times)))
        return data

    def train_arrays(self, cfg, data):
        n, dtype = cfg.train_size, np.dtype(cfg.dtype)
        if n > len(data.train):
            raise ValueError(f"train_size ({n}) exceeds the {len(data.train)} training patients")
        return {"values": data.train.values[:n].astype(dtype), "mask": data.train.mask[:n].astype(dtype)}

    def eval_arrays(self, cfg, data):
        n = min(max(cfg.nfe_examples, cfg.nfe_per_example, cfg.reg_examples, cfg.eval_test_size), len(data.test))
        dtype = np.dtype(cfg.dtype)
        return {"values": data.test.values[:n].astype(dtype), "mask": data.test.mask[:n].astype(dtype),
                "key": eval_keys(n)}

    def training_batch(self, cfg, batch, key):
        """The batch with fresh posterior-sampling keys, one per patient, drawn from the step's key."""
        n = batch["values"].shape[0]
        return {**batch, "key": jr.split(jr.fold_in(key, 1), n)}

    # --- model ----------------------------------------------------------------------------------
    def init_params(self, cfg, key):
        enc, dyn, dec = _modules(cfg)
        dtype = jnp.dtype(cfg.dtype)
        k1, k2, k3 = jr.split(key, 3)
        x = jnp.zeros((1, 2, FEATURES), dtype)
        z = jnp.zeros((1, cfg.latent_dim), dtype)
        params = {"enc": enc.init(k1, x, x, jnp.linspace(0.0, 1.0, 2, dtype=dtype)),
                  "dyn": dyn.init(k2, jnp.zeros((), dtype), z), "dec": dec.init(k3, z)}
        return jax.tree_util.tree_map(lambda a: a.astype(dtype), params)

    def problem(self, cfg, params, batch):
        """Every posterior sample of every patient, one trajectory each, saved on the union grid."""
        mu, sigma = posterior(cfg, params, batch)
        z0 = sample_z0(cfg, mu, sigma, batch["key"])
        return Problem(as_field(_modules(cfg)[1]), z0, params["dyn"], per_example=True, ts=_grid(batch["values"]))

    # --- loss and metrics --------------------------------------------------------------------
    def loss(self, cfg, params, batch, sol, key, step):
        kl_coef = kl_coefficient(step // cfg.steps_per_epoch)
        terms = _terms(cfg, params, batch, sol.ys, kl_coef)
        return terms["loss"], {"loglik": terms["loglik"], "kl": terms["kl"], "mse": terms["mse"], "beta": kl_coef}

    def metrics(self, cfg, params, data):
        """Loss (with β of the last epoch), MSE, log-likelihood and KL on the first `eval_test_size` test
        patients, means over batches of `batch_size` solved at the evaluation tolerance."""
        x = self.eval_arrays(cfg, data)
        n = min(cfg.eval_test_size, len(x["key"])) // cfg.batch_size * cfg.batch_size
        kl_coef = _final_kl_coef(cfg)
        rows = [_test_terms(self, cfg, params, {k: jnp.asarray(v[i : i + cfg.batch_size]) for k, v in x.items()},
                            kl_coef) for i in range(0, n, cfg.batch_size)]
        mean = {k: float(np.mean([float(r[k]) for r in rows])) for k in rows[0]}
        return {"test_loss": mean["loss"], "test_mse": mean["mse"], "test_loglik": mean["loglik"],
                "test_kl": mean["kl"], "kl_coef": kl_coef, "trajectories_per_patient": cfg.num_samples,
                "eval_sizes": {"test": n, "loss_batch": cfg.batch_size}}

    def summary(self, metrics):
        return f"test loss {metrics['test_loss']:.4f}  test MSE {metrics['test_mse']:.3e}"


EXPERIMENT = PhysioNetExperiment()
