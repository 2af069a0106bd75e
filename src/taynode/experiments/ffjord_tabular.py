"""FFJORD on tabular data: the model of the paper's `ffjord_tabular.py`, with validation-based model selection.

    taynode train ffjord_tabular --reg taylor --order 2 --lam 1e-2     # breast-cancer stand-in
    taynode train ffjord_tabular --data miniboone --train-size 29556 --batch-size 1000 --epochs 500

**Data.** `data="breast_cancer"` (default): scikit-learn's breast cancer features (569 × 30), the
stand-in that exists offline — **not MINIBOONE**. `data="miniboone"`: the MAF-preprocessed
MINIBOONE file (d = 43), which cannot be downloaded here: copy `miniboone/data.npy` under the data
directory (`$TAYNODE_DATA` or `<repo>/data`) or name it with `data_path`. Both are split as MAF
(last 10 % test, last 10 % of the rest validation) and standardised with train + validation
statistics (`taynode.data.tabular`). The first `train_size` training rows are used. The stand-in's
rows are permuted by `split_seed` before the split (0: the 462 / 51 / 56 rows of the `full` sweep);
the `splits` sweep repeats the three regularisations at split seeds 0-4, because 56 test rows
are few: at split seed 0 two of them have per-row NLL near 70 and dominate the test mean.

**Model.** As the original script: ConcatSquashLinear layers of width `hidden_mult × d`
(original and the `gpu`/`paper` presets: 20 × d, MINIBOONE 2 × 860; the `cpu` preset: 5 × d,
150 for the stand-in, with 480 epochs of batch 56 (3840 steps) at lr 2e-3, sized for 2 CPU
cores; the validation NLL stops improving well before the end, so early stopping picks the
model), softplus, Hutchinson's trace estimate with a Gaussian probe drawn afresh every step from
the step's key. Training minimises the NLL in nats (a Hutchinson estimate); the regularisers see z only (`part=0`).

**Evaluation.** Test and validation NLL use the **exact** trace (d jvps; cheap at d ≤ 43), so
they are log-likelihoods, not estimates; the NFE is that of the same exact-trace flow. Every
`eval_every` steps and at the end the run evaluates the validation NLL and keeps the parameters
where it is lowest (`Experiment.validation_loss`: early stopping by model selection); the record
reports those parameters' metrics. Beside the flow's, the metrics hold the NLL of a full-covariance
Gaussian fit to the same training rows (`gaussian_val_nll`, `gaussian_test_nll`; same units and
standardisation) and the median and largest per-row test NLL of the flow, which show how much a few
rows weigh in the test mean.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np

from .._checks import check_ints
from ..cnf import CNF, ConcatSquashMLP, draw_probe, standard_normal_log_prob
from ..configs import ExperimentConfig, field
from ..data.tabular import (
    breast_cancer_provenance,
    gaussian_nll,
    load_breast_cancer,
    load_miniboone,
    miniboone_provenance,
)
from ..evaluation import final_state
from ..experiment import Experiment, Problem
from ..models import as_field

__all__ = ["FFJORDTabularConfig", "FFJORDTabular", "EXPERIMENT", "PRESETS", "SWEEPS", "DATASETS", "LABELS",
           "SPLIT_SEEDS", "gaussian_baseline"]

DATASETS = ("breast_cancer", "miniboone")
#: how a chapter names each data set (the stand-in is never called MINIBOONE)
LABELS = {"breast_cancer": "breast cancer (scikit-learn, 569 × 30; not MINIBOONE)", "miniboone": "MINIBOONE"}


@dataclasses.dataclass(frozen=True)
class FFJORDTabularConfig(ExperimentConfig):
    """One tabular run; the defaults are the `cpu` preset (breast-cancer stand-in, not MINIBOONE)."""

    data: str = field("breast_cancer", f"the data set, one of {DATASETS} (breast_cancer is not MINIBOONE)")
    data_path: str = field("", "the MINIBOONE .npy file (default: <data dir>/miniboone/data.npy)")
    split_seed: int = field(0, "breast_cancer: seed of the row permutation before the split (MINIBOONE: MAF's "
                               "fixed split, 0 only)")
    hidden_mult: int = field(5, "hidden width = hidden_mult × data dimension (original: 20; cpu: 5)")
    depth: int = field(2, "number of ConcatSquashLinear hidden layers (original: 2)")
    activation: str = field("softplus", "jet-safe activation (original: softplus)")
    noise: str = field("gaussian", "Hutchinson probe of the training solves: gaussian (original) | rademacher")
    # shared fields with this experiment's values
    optimizer: str = field("adamw", "adamw: Adam with decoupled weight decay (original: 1e-6)")
    weight_decay: float = field(1e-6, "decoupled weight decay")
    lr: float = field(2e-3, "learning rate (original: 1e-3 over 500 epochs)")
    train_size: int = field(462, "training rows used (breast cancer: all 462; MINIBOONE: 29556)")
    batch_size: int = field(56, "training batch size (original: 1000; cpu: 56, the test rows, so one joint NFE batch)")
    epochs: int = field(480, "passes over the training rows (cpu: 480 epochs of 8 steps; the validation NLL "
                             "reaches its lowest well inside them, and early stopping keeps that model)")
    rtol: float = field(1e-5, "relative tolerance of the training solves")
    atol: float = field(1e-5, "absolute tolerance of the training solves")
    eval_rtol: float = field(1e-6, "relative tolerance of evaluation (FFJORD's tabular runs: 1e-6)")
    eval_atol: float = field(1e-8, "absolute tolerance of evaluation (FFJORD's tabular runs: 1e-8)")
    eval_every: int = field(160, "evaluate (validation NLL for model selection) every this many steps")
    checkpoint_every: int = field(160, "write a resumable checkpoint every this many steps")
    nfe_examples: int = field(56, "test rows of the joint-batch NFE (in batches of batch_size)")
    nfe_per_example: int = field(10, "test rows solved one at a time for the per-example NFE")
    reg_examples: int = field(1000, "test rows on which R_2, R_3, kinetic and Frobenius are reported")
    eval_chunk: int = field(1000, "rows solved jointly for test/validation NLL and penalties")

    def __post_init__(self):
        super().__post_init__()
        if self.data not in DATASETS:
            raise ValueError(f"data must be one of {DATASETS}, got {self.data!r}")
        if self.noise not in ("gaussian", "rademacher"):
            raise ValueError(f"noise must be 'gaussian' or 'rademacher', got {self.noise!r}")
        check_ints(self, ("hidden_mult", "depth"))
        check_ints(self, ("split_seed",), minimum=0)
        if self.data == "miniboone" and self.split_seed != 0:
            raise ValueError(f"split_seed must be 0 for miniboone (MAF's fixed split), got {self.split_seed}")


PRESETS = {
    "smoke": dict(train_size=100, batch_size=50, epochs=2, hidden_mult=2, eval_every=2, nfe_examples=50,
                  nfe_per_example=3, reg_examples=50),
    "cpu": dict(),
    "gpu": dict(hidden_mult=20, lr=1e-3, epochs=2000, eval_every=300, checkpoint_every=300),
    # the original script on MINIBOONE (it needs the file): batch 1000, 500 epochs, lr 1e-3 → 1e-4 → 1e-5
    # at iterations 9000 and 12750 (epochs 310 and 440 of 29 steps), dopri5 1.4e-8, float64
    "paper": dict(data="miniboone", hidden_mult=20, lr=1e-3, train_size=29556, batch_size=1000, epochs=500,
                  rtol=1.4e-8, atol=1.4e-8,
                  eval_rtol=1.4e-8, eval_atol=1.4e-8, lr_boundaries=(310, 440), lr_values=(1e-3, 1e-4, 1e-5),
                  eval_every=290, checkpoint_every=290, nfe_examples=1000, nfe_per_example=100),
}

#: the regularisers of the sweeps (R_2 as the paper's tabular script; RNODE with both weights)
REGS = ({"reg": "none"}, {"reg": "taylor", "order": 2, "lam": 1e-2}, {"reg": "rnode", "lam_kin": 1e-2, "lam_fro": 1e-2})
#: split seeds of the `splits` sweep
SPLIT_SEEDS = (0, 1, 2, 3, 4)
SWEEPS = {
    "full": tuple({**r, "seed": 0} for r in REGS),
    "splits": tuple({**r, "seed": 0, "split_seed": s} for s in SPLIT_SEEDS for r in REGS),
}


@functools.lru_cache(maxsize=8)
def _breast_cancer(split_seed: int, dtype: str):
    return load_breast_cancer(shuffle_seed=split_seed, dtype=np.dtype(dtype))


def _module(cfg, dim: int) -> ConcatSquashMLP:
    return ConcatSquashMLP(hidden=(cfg.hidden_mult * dim,) * cfg.depth, activation=cfg.activation)


def _nll(y1):
    z, a = y1
    return -(standard_normal_log_prob(z) - a)


class FFJORDTabular(Experiment):
    """Density estimation on tabular data with the original FFJORD tabular model."""

    name = "ffjord_tabular"
    Config = FFJORDTabularConfig
    presets = PRESETS
    sweeps = SWEEPS
    description = "FFJORD on tabular data, stand-in or MINIBOONE (chapter 07)"

    def run_name(self, cfg) -> str:
        """`ffjord_tabular_{data}[_split{split_seed}]_{preset}_{regularisation}_seed{seed}` (split only when not 0)."""
        split = f"_split{cfg.split_seed}" if cfg.split_seed else ""
        return f"{self.name}_{cfg.data}{split}_{cfg.preset}_{cfg.regularization.name}_seed{cfg.seed}"

    def load_data(self, cfg, progress=True):
        """The splits in the evaluation dtype (the training rows are cast to the training dtype)."""
        dtype = np.dtype(cfg.eval_dtype)
        if cfg.data == "miniboone":
            splits = load_miniboone(cfg.data_path or None, dtype=dtype)
        else:
            splits = _breast_cancer(cfg.split_seed, cfg.eval_dtype)
        if cfg.train_size > len(splits.train):
            raise ValueError(f"train_size must be at most the {len(splits.train)} training rows of {cfg.data}, "
                             f"got {cfg.train_size}")
        return splits

    def data_provenance(self, cfg):
        """The data set's file (MINIBOONE's `data_path`, or the CSV of the installed scikit-learn), the
        split seed, and the first `train_size` training rows; the split rule (MAF's) is fixed."""
        if cfg.data == "miniboone":
            out = miniboone_provenance(cfg.data_path or None)
            settings = {"data_path": cfg.data_path}
        else:
            out = breast_cancer_provenance(cfg.split_seed)
            settings = {}
        return {"source": out["source"], "files": out["files"],
                "settings": {"data": cfg.data, **settings, "split_seed": cfg.split_seed, "train_size": cfg.train_size}}

    def _splits(self, cfg, data):
        """`data` when it is the run's split, else the run's split loaded afresh (a sweep loads data once
        for runs at several split seeds)."""
        if cfg.data == "breast_cancer" and getattr(data, "shuffle_seed", None) != cfg.split_seed:
            return _breast_cancer(cfg.split_seed, cfg.eval_dtype)
        return data

    def train_arrays(self, cfg, data):
        return self._splits(cfg, data).train[: cfg.train_size].astype(cfg.dtype)

    def eval_arrays(self, cfg, data):
        return self._splits(cfg, data).test.astype(cfg.dtype)

    def _dim(self, cfg):
        return 43 if cfg.data == "miniboone" else 30

    def init_params(self, cfg, key):
        d = self._dim(cfg)
        return _module(cfg, d).init(key, jnp.zeros((), cfg.dtype), jnp.zeros((1, d), cfg.dtype))

    def training_batch(self, cfg, batch, key):
        """The rows with the key of this step's Hutchinson probe."""
        return {"x": batch, "key": key}

    def problem(self, cfg, params, batch):
        """Training batches (a dict with a probe key): Hutchinson; evaluation arrays: the exact trace."""
        x = jnp.asarray(batch["x"] if isinstance(batch, dict) else batch)
        if x.ndim != 2 or x.shape[1] != self._dim(cfg):
            raise ValueError(f"x must have shape (batch, {self._dim(cfg)}) for {cfg.data}, got {x.shape}")
        divergence, eps = "exact", None
        if isinstance(batch, dict):
            divergence = cfg.noise
            eps = draw_probe(batch["key"], x.shape, x.dtype, cfg.noise)
        flow = CNF(as_field(_module(cfg, x.shape[1])), (x.shape[1],), divergence=divergence)
        zero = jnp.zeros(x.shape[:1], x.dtype)
        return Problem(flow.augmented(), (x, zero), (params, eps), part=0)

    def loss(self, cfg, params, batch, sol, key, step):
        nll = jnp.mean(_nll(sol.y1))
        return nll, {"nll": nll}

    def _row_nll(self, cfg, params, x):
        x = x.astype(cfg.dtype)
        return np.concatenate([np.asarray(_nll(final_state(self, cfg, params, x[i:i + cfg.eval_chunk])))
                               for i in range(0, len(x), cfg.eval_chunk)]).astype(np.float64)

    def validation_loss(self, cfg, params, data):
        """Validation NLL (nats, exact trace): the model-selection criterion."""
        return float(np.mean(self._row_nll(cfg, params, self._splits(cfg, data).validation)))

    def metrics(self, cfg, params, data):
        """Test NLL (nats per row, exact trace) at the evaluation tolerance, its median and largest row,
        and the full-covariance Gaussian baseline (`gaussian_baseline`)."""
        data = self._splits(cfg, data)
        rows = self._row_nll(cfg, params, data.test)
        return {"test_nll": float(np.mean(rows)), "test_nll_median": float(np.median(rows)),
                "test_nll_max": float(np.max(rows)), **gaussian_baseline(data, cfg.train_size),
                "data_label": LABELS[cfg.data],
                "eval_sizes": {"test": len(data.test), "validation": len(data.validation)}}

    def summary(self, metrics):
        return (f"test NLL {metrics['test_nll']:.3f} nats (Gaussian {metrics['gaussian_test_nll']:.3f}; "
                f"{metrics['data_label']})")


def gaussian_baseline(data, train_size: int | None = None) -> dict:
    """NLL (nats per row) of a full-covariance Gaussian fit to the first `train_size` training rows (all: None).

    Same rows, units and standardisation as the flow. **Returns** `{"gaussian_val_nll": …,
    "gaussian_test_nll": …}` (means over the validation and test rows).
    """
    train = data.train if train_size is None else data.train[:train_size]
    return {"gaussian_val_nll": float(np.mean(gaussian_nll(train, data.validation))),
            "gaussian_test_nll": float(np.mean(gaussian_nll(train, data.test)))}


EXPERIMENT = FFJORDTabular()
