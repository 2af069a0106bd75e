"""MNIST classification with the paper's ODE-Net, unregularised, R_K-regularised or RNODE.

    taynode train mnist --preset cpu --reg taylor --order 3 --lam 6e-5 --seed 0
    taynode eval mnist results/mnist/<run>.json

Model (as the paper's code): pixels/255 flattened to 784 = z(0); dynamics sigmoid → concat t →
Dense(100) → sigmoid → concat t → Dense(784) on t ∈ [0, 1]; head sigmoid → Dense(10).
The batch is one ODE system (solved jointly), as in the paper's code. Evaluation uses the
*test* split (the paper's code evaluated on the training split only).
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pandas as pd

from ..configs import ExperimentConfig, field
from ..evaluation import final_state
from ..experiment import Experiment, Problem
from ..models import MNISTDynamics, MNISTHead, as_field

__all__ = ["MNISTConfig", "MNIST", "EXPERIMENT", "PRESETS", "SWEEPS", "RK_UNREG", "rq2_best"]


@dataclasses.dataclass(frozen=True)
class MNISTConfig(ExperimentConfig):
    """One MNIST run; the defaults are the `cpu` preset (2 epochs of Adam on all 60,000 images)."""

    train_size: int = field(60000, "training images used (the first ones of the training split)")
    hidden: int = field(100, "width of the dynamics' hidden layer")
    eval_test_size: int = field(10000, "test images of the reported test accuracy and loss")
    eval_train_size: int = field(10000, "training images of the reported training accuracy and loss")

    def __post_init__(self):
        super().__post_init__()
        from .._checks import check_ints

        check_ints(self, ("hidden", "eval_test_size", "eval_train_size"))


PRESETS = {
    # seconds to ~2 minutes: 1000 training images, 1 epoch, loose training tolerance
    "smoke": dict(epochs=1, train_size=1000, rtol=1e-5, atol=1e-5, eval_test_size=1000, eval_train_size=1000,
                  nfe_examples=200, nfe_per_example=10, reg_examples=200, checkpoint_every=5),
    # <= ~30 min per run on 2 CPU cores; Adam (see REFERENCES: NFE grows fastest under Adam)
    "cpu": dict(),
    # a few minutes a run on one H100/H200-class GPU: the cpu preset at more epochs
    "gpu": dict(epochs=10, eval_train_size=60000),
    # the paper's hyperparameters (SGD + momentum, lr schedule, 160 epochs)
    "paper": dict(epochs=160, optimizer="sgd", lr=0.1, momentum=0.9, lr_boundaries=(60, 100, 140),
                  lr_values=(0.1, 0.01, 1e-3, 1e-4), eval_every=3000, eval_train_size=60000),
}

# The cpu-preset runs chapter 05 shows (seed 0): unregularised, R_2 and R_3 from weak to strong, RNODE.
FULL = (
    dict(reg="none"),
    dict(reg="taylor", order=2, lam=1e-2),
    dict(reg="taylor", order=2, lam=1e-1),
    dict(reg="taylor", order=2, lam=1.0),
    dict(reg="taylor", order=3, lam=1e-2),
    dict(reg="taylor", order=3, lam=1e-1),
    dict(reg="taylor", order=3, lam=1.0),
    dict(reg="rnode", lam_kin=1e-2, lam_fro=1e-2),
    dict(reg="rnode", lam_kin=1e-1, lam_fro=1e-1),
    dict(reg="rnode", lam_kin=1.0, lam_fro=1.0),
)
# The headline runs (unregularised, the strongest R_2, the strongest RNODE) at seeds 1 and 2.
HEADLINE = (dict(reg="none"), dict(reg="taylor", order=2, lam=1.0), dict(reg="rnode", lam_kin=1.0, lam_fro=1.0))
# The sampled R_K (chapter 04) at the strongest λ of the exact runs it is compared with.
SAMPLED = (dict(reg="taylor", order=2, lam=1.0, estimator="sampled"),
           dict(reg="taylor", order=3, lam=1.0, estimator="sampled"))
# RQ2 (chapter 04): K ∈ {2, 3, 4} × {Bosh3, Dopri5}, trained and judged at rtol = atol = 1e-6 (a
# third-order solver at 1.4e-8 would make the grid far too slow for two cores), sampled R_K. One λ per K:
# λ_K = 1 / R_K of the unregularised cpu model (results/mnist/mnist_cpu_none_seed0, first 100 test
# images, Dopri5 at 1e-6; tests/test_mnist.py recomputes RK_UNREG), one significant figure, so the
# penalty starts at the same weight relative to its unregularised value for every K.
RK_UNREG = {2: 1.011, 3: 2.245, 4: 37.08}
RQ2_TOL = {"rtol": 1e-6, "atol": 1e-6, "eval_rtol": 1e-6, "eval_atol": 1e-6}
RQ2 = tuple(dict(reg="none", solver=sol, **RQ2_TOL) for sol in ("bosh3", "dopri5")) + tuple(
    dict(reg="taylor", order=k, lam=float(f"{1 / RK_UNREG[k]:.0e}"), estimator="sampled", solver=sol, **RQ2_TOL)
    for sol in ("bosh3", "dopri5") for k in (2, 3, 4)
)


def rq2_best(records, max_acc_drop: float = 1.0):
    """The MNIST RQ2 grid (run records as `taynode.records.load_record` gives) as a DataFrame.

    Columns `solver`, `order` (0 = unregularised), `lam`, `nfe` (joint test NFE), `nfe_per_example`,
    `acc` (test accuracy, %), `ratio` (NFE ÷ the same solver's unregularised NFE) and `best`: True for the
    regularised runs with the lowest NFE of their solver among those whose accuracy is at most
    `max_acc_drop` points below the unregularised run's.
    """
    records = list(records)
    if not records or any(r.get("experiment") != "mnist" for r in records):
        raise ValueError("records must be a non-empty list of mnist run records (results/mnist/rq2)")
    df = pd.DataFrame([
        dict(solver=r["config"]["solver"], order=r["config"]["order"] if r["config"]["reg"] != "none" else 0,
             lam=r["config"]["lam"], nfe=r["metrics"]["test_nfe"], acc=100 * r["metrics"]["test_acc"],
             nfe_per_example=r["metrics"].get("test_nfe_per_example", np.nan))
        for r in records
    ]).sort_values(["solver", "order"], ignore_index=True)
    df["ratio"], df["best"] = np.nan, False
    for solver, g in df.groupby("solver"):
        unreg = g[g["order"] == 0]
        if len(unreg) != 1:
            raise ValueError(f"records need one unregularised {solver} run, got {len(unreg)}")
        base = unreg.iloc[0]
        df.loc[g.index, "ratio"] = g["nfe"] / base.nfe
        ok = g[(g["order"] > 0) & (g["acc"] >= base.acc - max_acc_drop)]
        if len(ok):
            df.loc[ok.index[ok["nfe"] == ok["nfe"].min()], "best"] = True
    return df


SWEEPS = {
    "full": tuple({**o, "seed": 0} for o in FULL),
    "rq2": tuple({**o, "seed": 0} for o in RQ2),
    "repeat": tuple({**o, "seed": s} for s in (1, 2) for o in HEADLINE),
    "sampled": tuple({**o, "seed": 0} for o in SAMPLED),
}


def _modules(cfg: MNISTConfig):
    return MNISTDynamics(hidden=cfg.hidden, dim=784), MNISTHead(10)


def _prepare(images: np.ndarray, dtype) -> np.ndarray:
    return (images.reshape(len(images), 784) / 255.0).astype(dtype)


@eqx.filter_jit
def _logits(exp, cfg, params, x):
    return _modules(cfg)[1].apply(params["head"], final_state(exp, cfg, params, (x, None)))


class MNIST(Experiment):
    """The paper's MNIST classifier: data, ODE-Net, cross-entropy, accuracy."""

    name = "mnist"
    Config = MNISTConfig
    presets = PRESETS
    sweeps = SWEEPS
    description = "MNIST ODE-Net classifier (chapter 05)"

    def load_data(self, cfg, progress=True):
        from ..data import load_mnist

        return load_mnist(progress=progress)

    def train_arrays(self, cfg, data):
        n = cfg.train_size
        return (_prepare(data["train_images"][:n], np.dtype(cfg.dtype)), data["train_labels"][:n].astype(np.int32))

    def eval_arrays(self, cfg, data):
        n = max(cfg.nfe_examples, cfg.nfe_per_example, cfg.reg_examples)
        return (_prepare(data["test_images"][:n], np.dtype(cfg.dtype)), data["test_labels"][:n].astype(np.int32))

    def init_params(self, cfg, key):
        dyn, head = _modules(cfg)
        k1, k2 = jr.split(key)
        dtype = jnp.dtype(cfg.dtype)
        x = jnp.zeros((1, 784), dtype)
        params = {"dyn": dyn.init(k1, jnp.zeros((), dtype), x), "head": head.init(k2, x)}
        return jax.tree_util.tree_map(lambda a: a.astype(dtype), params)

    def problem(self, cfg, params, batch):
        return Problem(as_field(_modules(cfg)[0]), batch[0], params["dyn"])

    def loss(self, cfg, params, batch, sol, key, step):
        logits = _modules(cfg)[1].apply(params["head"], sol.y1)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()
        return ce, {"ce": ce, "acc": jnp.mean(jnp.argmax(logits, -1) == batch[1])}

    def metrics(self, cfg, params, data):
        """Accuracy and mean cross-entropy on the first `eval_test_size` test and `eval_train_size` training images."""
        dtype = np.dtype(cfg.dtype)
        chunk = cfg.eval_chunk

        def accuracy_loss(images, labels, n):
            correct, total_loss = 0, 0.0
            for i in range(0, n, chunk):
                x = jnp.asarray(_prepare(images[i : min(i + chunk, n)], dtype))
                y = jnp.asarray(labels[i : min(i + chunk, n)])
                logits = _logits(self, cfg, params, x)
                correct += int(jnp.sum(jnp.argmax(logits, -1) == y))
                total_loss += float(optax.softmax_cross_entropy_with_integer_labels(logits, y).sum())
            return correct / n, total_loss / n

        n_test = min(cfg.eval_test_size, len(data["test_labels"]))
        n_train = min(cfg.eval_train_size, len(data["train_labels"]))
        test_acc, test_loss = accuracy_loss(data["test_images"], data["test_labels"], n_test)
        train_acc, train_loss = accuracy_loss(data["train_images"], data["train_labels"], n_train)
        return {"test_acc": test_acc, "test_loss": test_loss, "train_acc": train_acc, "train_loss": train_loss,
                "eval_sizes": {"test": n_test, "train": n_train}}

    def summary(self, metrics):
        return (f"test acc {metrics['test_acc'] * 100:.2f}%  train acc {metrics['train_acc'] * 100:.2f}%  "
                f"test loss {metrics['test_loss']:.4f}")


EXPERIMENT = MNIST()
