"""FFJORD on two-dimensional densities: a continuous normalising flow fit by maximum likelihood.

    taynode train ffjord2d --density pinwheel --reg taylor --order 2 --lam 0.1
    taynode sweep ffjord2d --runs full     # none / R_2 / RNODE on three densities (9 runs)

**Data.** `train_size` points drawn from the sampler of `taynode.data.toy2d` with the run's
seed (the training set; a fixed set, shuffled every epoch), and `test_size` fresh points drawn
with the fixed seed `TEST_SEED` (the same test set for every run of a density).

**Model.** The state is (z, a): z carries the data point x = z(0) to z(1), scored under N(0, I),
and a integrates −tr ∂f/∂z, computed exactly (two jvps in 2-D); `taynode.cnf` explains the flow.
The field is FFJORD's time-conditioned MLP of ConcatSquashLinear layers (`ConcatSquashMLP`).
The loss is the negative log-likelihood in nats, −mean log p(x). The regularisers see z only
(`part=0`), never the log-density.

**Metrics.** Test NLL (nats) at the evaluation tolerance; NFE and penalties as every experiment
(`taynode.evaluation`), of the augmented flow (z, a) — the solve that evaluating log p(x) costs.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from .._checks import check_ints
from ..cnf import CNF, ConcatSquashMLP, standard_normal_log_prob
from ..configs import ExperimentConfig, field
from ..data.toy2d import TOY_DENSITIES, sample_toy2d
from ..evaluation import final_state
from ..experiment import Experiment, Problem
from ..models import as_field

__all__ = ["FFJORD2DConfig", "FFJORD2D", "EXPERIMENT", "PRESETS", "SWEEPS", "TEST_SEED", "DENSITIES", "flow"]

#: seed of every density's test set (the training set uses the run's seed)
TEST_SEED = 12345
#: the densities of the `full` sweep
DENSITIES = ("8gaussians", "pinwheel", "checkerboard")


@dataclasses.dataclass(frozen=True)
class FFJORD2DConfig(ExperimentConfig):
    """One 2-D density run; the defaults are the `cpu` preset."""

    density: str = field("8gaussians", f"the 2-D density, one of {TOY_DENSITIES}")
    width: int = field(32, "width of each ConcatSquashLinear hidden layer")
    depth: int = field(3, "number of hidden layers (FFJORD's 2-D runs: 3 of width 64)")
    activation: str = field("tanh", "jet-safe activation (taynode.activations)")
    test_size: int = field(2000, "fresh test points (seed TEST_SEED)")
    # shared fields with this experiment's values
    train_size: int = field(5000, "training points (drawn with the run's seed)")
    batch_size: int = field(250, "training batch size (also the joint batch of the NFE evaluation)")
    epochs: int = field(30, "passes over the training points")
    lr: float = field(5e-3, "learning rate")
    rtol: float = field(1e-5, "relative tolerance of the training solves")
    atol: float = field(1e-5, "absolute tolerance of the training solves")
    eval_rtol: float = field(1e-5, "relative tolerance of evaluation (test NLL, NFE, penalties)")
    eval_atol: float = field(1e-5, "absolute tolerance of evaluation (test NLL, NFE, penalties)")
    checkpoint_every: int = field(100, "write a resumable checkpoint every this many steps")
    nfe_examples: int = field(1000, "test points of the joint-batch NFE (in batches of batch_size)")
    nfe_per_example: int = field(50, "test points solved one at a time for the per-example NFE")
    reg_examples: int = field(1000, "test points on which R_2, R_3, kinetic and Frobenius are reported")
    eval_chunk: int = field(1000, "points solved jointly for the test NLL and penalties")

    def __post_init__(self):
        super().__post_init__()
        if self.density not in TOY_DENSITIES:
            raise ValueError(f"density must be one of {TOY_DENSITIES}, got {self.density!r}")
        check_ints(self, ("width", "depth", "test_size"))


PRESETS = {
    "smoke": dict(train_size=500, batch_size=100, epochs=2, test_size=200, nfe_examples=200, nfe_per_example=5,
                  reg_examples=200, eval_chunk=200, width=16, depth=2),
    "cpu": dict(),
    "gpu": dict(width=64, epochs=100, train_size=20000, batch_size=500, test_size=10000, nfe_per_example=200),
    # FFJORD's 2-D runs: 3 hidden layers of 64, Adam 1e-3, a fresh batch every step (here: a large set)
    "paper": dict(width=64, activation="tanh", lr=1e-3, epochs=100, train_size=100000, batch_size=1000,
                  test_size=10000, rtol=1e-5, atol=1e-5, nfe_per_example=200),
}

#: the regularisers of the `full` sweep (R_2 as the FFJORD scripts of the paper; RNODE with both weights)
REGS = ({"reg": "none"}, {"reg": "taylor", "order": 2, "lam": 0.1}, {"reg": "rnode", "lam_kin": 0.1, "lam_fro": 0.1})
SWEEPS = {
    "full": tuple({**r, "density": d, "seed": 0} for d in DENSITIES for r in REGS),
    "one": tuple({**r, "density": "8gaussians", "seed": 0} for r in REGS),
}


def _module(cfg: FFJORD2DConfig) -> ConcatSquashMLP:
    return ConcatSquashMLP(hidden=(cfg.width,) * cfg.depth, activation=cfg.activation)


def flow(cfg: FFJORD2DConfig) -> CNF:
    """The run's flow (exact divergence) at the evaluation tolerance, for `log_prob` and sampling."""
    return CNF(as_field(_module(cfg)), (2,), divergence="exact", solver=cfg.solver, rtol=cfg.eval_rtol,
               atol=cfg.eval_atol, max_steps=cfg.max_steps)


def _nll_per_example(y1):
    z, a = y1
    return -(standard_normal_log_prob(z) - a)


class FFJORD2D(Experiment):
    """Fit a 2-D density with a CNF: NLL in nats, exact trace."""

    name = "ffjord2d"
    Config = FFJORD2DConfig
    presets = PRESETS
    sweeps = SWEEPS
    description = "FFJORD on 2-D toy densities (chapter 07)"

    def run_name(self, cfg) -> str:
        return f"{self.name}_{cfg.density}_{cfg.preset}_{cfg.regularization.name}_seed{cfg.seed}"

    def load_data(self, cfg, progress=True):
        """Nothing to load: the points are drawn from `cfg` (a sweep shares this over densities)."""
        return {}

    def train_arrays(self, cfg, data):
        """`train_size` points of `cfg.density` drawn with the run's seed."""
        return sample_toy2d(cfg.density, cfg.train_size, seed=cfg.seed, dtype=np.dtype(cfg.dtype))

    def eval_arrays(self, cfg, data):
        """`test_size` fresh points of `cfg.density` drawn with `TEST_SEED` (the same for every run)."""
        return sample_toy2d(cfg.density, cfg.test_size, seed=TEST_SEED, dtype=np.dtype(cfg.dtype))

    def init_params(self, cfg, key):
        return _module(cfg).init(key, jnp.zeros((), cfg.dtype), jnp.zeros((1, 2), cfg.dtype))

    def problem(self, cfg, params, batch):
        x = jnp.asarray(batch)
        zero = jnp.zeros(x.shape[:1], x.dtype)
        return Problem(flow(cfg).augmented(), (x, zero), (params, None), part=0)

    def loss(self, cfg, params, batch, sol, key, step):
        nll = jnp.mean(_nll_per_example(sol.y1))
        return nll, {"nll": nll}

    def metrics(self, cfg, params, data):
        """Test NLL (nats, mean over the `test_size` fresh points) at the evaluation tolerance."""
        x = self.eval_arrays(cfg, data)
        total = 0.0
        for i in range(0, len(x), cfg.eval_chunk):
            total += float(jnp.sum(_nll_per_example(final_state(self, cfg, params, x[i:i + cfg.eval_chunk]))))
        return {"test_nll": total / len(x), "eval_sizes": {"test": len(x)}}

    def summary(self, metrics):
        return f"test NLL {metrics['test_nll']:.4f} nats"


EXPERIMENT = FFJORD2D()
