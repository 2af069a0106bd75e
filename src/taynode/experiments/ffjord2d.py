"""FFJORD on two-dimensional densities: a continuous normalising flow fit by maximum likelihood.

    taynode train ffjord2d --density pinwheel --reg taylor --order 2 --lam 0.1
    taynode sweep ffjord2d --runs full     # none / R_2 / RNODE × three densities × seeds 0, 1, 2 (27 runs)

**Data.** `train_size` points drawn from the sampler of `taynode.data.toy2d` with the run's
seed (the training set; a fixed set, shuffled every epoch), and `test_size` fresh points drawn
with the fixed seed `TEST_SEED` (the same test set for every run of a density).

**Scale.** The `cpu` preset trains in float32 at rtol = atol = 1e-5 (width 64, 3200 steps of 250
points, learning rate 5e-3 → 1e-3 → 2e-4 at epochs 20 and 30 of 40) and reports every number in
float64 at the paper's tolerance 1.4e-8; a run fits in about 15 minutes on one core.

**Model.** The state is (z, a): z carries the data point x = z(0) to z(1), scored under N(0, I),
and a integrates −tr ∂f/∂z, computed exactly (two jvps in 2-D); `taynode.cnf` explains the flow.
The field is FFJORD's time-conditioned MLP of ConcatSquashLinear layers (`ConcatSquashMLP`).
The loss is the negative log-likelihood in nats, −mean log p(x). The regularisers see z only
(`part=0`), never the log-density.

**Metrics.** Test NLL (nats) at the evaluation tolerance; NFE and penalties as every experiment
(`taynode.evaluation`), of the augmented flow (z, a) — the solve that evaluating log p(x) costs.
Beside it, the data's own NLL (`taynode.data.toy2d.data_nll`: the entropy of the true density,
closed form for checkerboard, a Monte-Carlo estimate with its standard error for 8 gaussians and
pinwheel) and `nll_gap` = test NLL − data NLL; and the true density's NLL on the same test points
(`test_data_nll`), so that `kl_estimate` = test NLL − test_data_nll estimates KL(p ‖ model) with the
test set's sampling noise paired out (`kl_se` its standard error).

**Convergence.** `nll_improvement(history)` is how much the test NLL fell over the last fifth of
training (from the run's evaluation entries); `converged(history)` says whether that is under
0.01 nats. The `cpu` preset evaluates every `eval_every` steps (ten times a run) so it can be computed.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from .._checks import check_ints
from ..cnf import CNF, ConcatSquashMLP, standard_normal_log_prob
from ..configs import ExperimentConfig, field
from ..data.toy2d import TOY_DENSITIES, TOY_LOG_DENSITIES, data_nll, log_density, sample_toy2d
from ..evaluation import final_state
from ..experiment import Experiment, Problem
from ..models import as_field

__all__ = ["FFJORD2DConfig", "FFJORD2D", "EXPERIMENT", "PRESETS", "SWEEPS", "TEST_SEED", "DENSITIES", "flow",
           "nll_improvement", "converged", "CONVERGENCE_TOL", "CONVERGENCE_FRACTION"]

#: seed of every density's test set (the training set uses the run's seed)
TEST_SEED = 12345
#: the densities of the `full` sweep
DENSITIES = ("8gaussians", "pinwheel", "checkerboard")


@dataclasses.dataclass(frozen=True)
class FFJORD2DConfig(ExperimentConfig):
    """One 2-D density run; the defaults are the `cpu` preset."""

    density: str = field("8gaussians", f"the 2-D density, one of {TOY_DENSITIES}")
    width: int = field(64, "width of each ConcatSquashLinear hidden layer (FFJORD's 2-D runs: 64)")
    depth: int = field(3, "number of hidden layers (FFJORD's 2-D runs: 3 of width 64)")
    activation: str = field("tanh", "jet-safe activation (taynode.activations)")
    test_size: int = field(10000, "fresh test points (seed TEST_SEED)")
    # shared fields with this experiment's values
    train_size: int = field(20000, "training points (drawn with the run's seed)")
    batch_size: int = field(250, "training batch size (also the joint batch of the NFE evaluation)")
    epochs: int = field(40, "passes over the training points (cpu: 3200 steps)")
    lr: float = field(5e-3, "learning rate (the first of lr_values)")
    lr_boundaries: tuple = field((20, 30), "epochs at which the learning rate drops (the last before the final fifth, "
                                           "so that `converged` sees a constant rate)")
    lr_values: tuple = field((5e-3, 1e-3, 2e-4), "piecewise-constant learning rates")
    dtype: str = field("float32", "training dtype (reported numbers: eval_dtype, float64)")
    rtol: float = field(1e-5, "relative tolerance of the training solves")
    atol: float = field(1e-5, "absolute tolerance of the training solves")
    eval_rtol: float = field(1.4e-8, "relative tolerance of evaluation (test NLL, NFE, penalties; the paper's)")
    eval_atol: float = field(1.4e-8, "absolute tolerance of evaluation (test NLL, NFE, penalties; the paper's)")
    eval_every: int = field(320, "evaluate every this many steps (ten times a cpu run, for `converged`)")
    checkpoint_every: int = field(320, "write a resumable checkpoint every this many steps")
    nfe_examples: int = field(1000, "test points of the joint-batch NFE (in batches of batch_size)")
    nfe_per_example: int = field(50, "test points solved one at a time for the per-example NFE")
    reg_examples: int = field(1000, "test points on which R_2, R_3, kinetic and Frobenius are reported")
    eval_chunk: int = field(2000, "points solved jointly for the test NLL and penalties")

    def __post_init__(self):
        super().__post_init__()
        if self.density not in TOY_DENSITIES:
            raise ValueError(f"density must be one of {TOY_DENSITIES}, got {self.density!r}")
        check_ints(self, ("width", "depth", "test_size"))


PRESETS = {
    "smoke": dict(train_size=500, batch_size=100, epochs=2, test_size=200, nfe_examples=200, nfe_per_example=5,
                  reg_examples=200, eval_chunk=200, width=16, depth=2, eval_every=0, lr_boundaries=(),
                  lr_values=()),
    # 3200 steps; one core (CPU time): 0.1-0.25 s a step (R_2 the dearest), ten evaluations of a few seconds
    "cpu": dict(),
    "gpu": dict(epochs=100, train_size=20000, batch_size=500, lr_boundaries=(50, 70), nfe_per_example=200),
    # FFJORD's 2-D runs: 3 hidden layers of 64, Adam 1e-3, a fresh batch every step (here: a large set)
    "paper": dict(width=64, activation="tanh", lr=1e-3, lr_boundaries=(), lr_values=(), epochs=100,
                  train_size=100000, batch_size=1000, rtol=1e-5, atol=1e-5, eval_every=2000,
                  checkpoint_every=1000, nfe_per_example=200),
}

#: the regularisers of the headline sweep (R_2 as the FFJORD scripts of the paper; RNODE with both weights)
REGS = ({"reg": "none"}, {"reg": "taylor", "order": 2, "lam": 0.1}, {"reg": "rnode", "lam_kin": 0.1, "lam_fro": 0.1})
#: the seeds of the headline sweep
SEEDS = (0, 1, 2)
SWEEPS = {
    "full": tuple({**r, "density": d, "seed": s} for s in SEEDS for d in DENSITIES for r in REGS),
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

    def data_provenance(self, cfg):
        """No files: `train_size` points of `cfg.density` drawn with the run's `seed`, `test_size` with `TEST_SEED`."""
        return {"source": f"taynode.data.toy2d sampler {cfg.density!r} (no files)", "files": {},
                "settings": {"density": cfg.density, "seed": cfg.seed, "train_size": cfg.train_size,
                             "test_size": cfg.test_size, "test_seed": TEST_SEED}}

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
        """Test NLL (nats, mean over the `test_size` fresh points) at the evaluation tolerance, and the data's own.

        `data_nll` (± `data_nll_se`, by `data_nll_method`) is the entropy of the true density and
        `nll_gap` = test NLL − data NLL; `test_data_nll` is the true density's NLL on the same test
        points and `kl_estimate` = test NLL − test_data_nll (± `kl_se`) the paired estimate of
        KL(p ‖ model). The last three are None for densities without an exact density (2spirals, rings).
        """
        x = self.eval_arrays(cfg, data)
        nll = np.concatenate([np.asarray(_nll_per_example(final_state(self, cfg, params, x[i:i + cfg.eval_chunk])))
                              for i in range(0, len(x), cfg.eval_chunk)]).astype(np.float64)
        out = {"test_nll": float(np.mean(nll)), "data_nll": None, "data_nll_se": None, "data_nll_method": None,
               "nll_gap": None, "test_data_nll": None, "kl_estimate": None, "kl_se": None}
        if cfg.density in TOY_LOG_DENSITIES:
            ref = data_nll(cfg.density)
            true_nll = -log_density(cfg.density, np.asarray(x, np.float64))
            diff = nll - true_nll
            out.update(data_nll=ref.value, data_nll_se=ref.se, data_nll_method=ref.method,
                       nll_gap=out["test_nll"] - ref.value, test_data_nll=float(np.mean(true_nll)),
                       kl_estimate=float(np.mean(diff)), kl_se=float(np.std(diff, ddof=1) / math.sqrt(len(diff))))
        return {**out, "eval_sizes": {"test": len(x)}}

    def summary(self, metrics):
        gap = metrics.get("nll_gap")
        return f"test NLL {metrics['test_nll']:.4f} nats" + ("" if gap is None else f" (data NLL {gap:+.4f})")


#: `converged`: the test NLL must improve by less than this (nats) over the last `CONVERGENCE_FRACTION` of training
CONVERGENCE_TOL = 0.01
CONVERGENCE_FRACTION = 0.2


def nll_improvement(history, *, fraction: float = CONVERGENCE_FRACTION, key: str = "test_nll") -> float:
    """How much the test NLL fell over the last `fraction` of training, from a run's evaluation entries.

    With T the step of the last evaluation, the reference is the evaluation at the latest step
    ≤ (1 − fraction)·T; the improvement is its NLL minus the lowest NLL evaluated after it (negative
    when the NLL only rose).

    **Arguments**
    - `history`: `record["history"]` (entries with an `"eval"` dict holding `key` count; others are skipped).
    - `fraction`: the final part of training looked at, in (0, 1) (default 1/5).
    - `key`: the metric (default `"test_nll"`).

    **Raises** `ValueError` naming `history` when it has no evaluation at or before (1 − fraction)·T
    or none after it (train with `eval_every` ≤ fraction × the run's steps).
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"fraction must be a number in (0, 1), got {fraction!r}")
    evals = sorted((h["step"], h["eval"][key]) for h in history if isinstance(h.get("eval"), dict) and key in h["eval"])
    if not evals:
        raise ValueError(f"history holds no evaluation with {key!r}: train with eval_every > 0")
    start = (1 - fraction) * evals[-1][0]
    before = [e for e in evals if e[0] <= start]
    after = [v for step, v in evals if step > start]
    if not before or not after:
        raise ValueError(f"history needs an evaluation at or before step {start:g} and one after it "
                         f"(evaluations at steps {[e[0] for e in evals]}): train with eval_every <= "
                         f"{fraction:g} × the run's steps")
    return before[-1][1] - min(after)


def converged(history, *, tol: float = CONVERGENCE_TOL, fraction: float = CONVERGENCE_FRACTION) -> bool:
    """Whether the test NLL improved by less than `tol` nats (0.01) over the last `fraction` (1/5) of training.

    See `nll_improvement` for the reference points and the errors it raises.
    """
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    return bool(nll_improvement(history, fraction=fraction) < tol)


EXPERIMENT = FFJORD2D()
