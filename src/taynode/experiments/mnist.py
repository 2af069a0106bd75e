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
import json
import time
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from .._checks import check_ints, check_numbers
from ..machine import git_commit, machine_info, versions
from ..paths import write_json
from ..models import MNISTDynamics, MNISTHead, as_field
from ..regularizers import JacobianFrobenius, Kinetic, TaylorRK
from ..solve import PAPER_TOL, SOLVERS, evaluation_nfe, solve
from ..train import LoopConfig, fit

__all__ = ["MNISTConfig", "PRESETS", "make_config", "init_params", "train", "evaluate", "run_name", "load_run"]

REGS = ("none", "taylor", "rnode")
OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class MNISTConfig:
    """One MNIST run. Tolerances are for training (`rtol`, `atol`) and evaluation (`eval_*`)."""

    preset: str = "cpu"
    reg: str = "none"
    order: int = 3
    lam: float = 0.0
    lam_kin: float = 0.0
    lam_fro: float = 0.0
    seed: int = 0
    solver: str = "dopri5"
    rtol: float = PAPER_TOL
    atol: float = PAPER_TOL
    eval_rtol: float = PAPER_TOL
    eval_atol: float = PAPER_TOL
    dtype: str = "float64"
    epochs: int = 3
    batch_size: int = 100
    train_size: int = 60000
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    lr_boundaries: tuple = ()  # epochs at which the learning rate switches to the next lr_values entry
    lr_values: tuple = ()
    hidden: int = 100
    eval_every: int = 0  # steps; 0 = only at the end
    eval_test_size: int = 10000
    eval_train_size: int = 60000
    nfe_examples: int = 1000  # test images for the joint-batch NFE (in batches of batch_size)
    nfe_per_example: int = 100  # test images solved one by one for the per-example NFE
    reg_examples: int = 1000  # test images on which R_K, kinetic and Frobenius are reported
    checkpoint_every: int = 100
    max_steps: int = 4096

    def __post_init__(self):
        if self.preset not in PRESET_NAMES:
            raise ValueError(f"preset must be one of {PRESET_NAMES}, got {self.preset!r}")
        if self.reg not in REGS:
            raise ValueError(f"reg must be one of {REGS}, got {self.reg!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {self.solver!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        check_ints(self, ("order", "epochs", "batch_size", "train_size", "hidden", "eval_test_size",
                          "eval_train_size", "nfe_examples", "nfe_per_example", "reg_examples", "checkpoint_every",
                          "max_steps"))
        check_numbers(self, ("lam", "lam_kin", "lam_fro"), positive=False)
        check_numbers(self, ("rtol", "atol", "eval_rtol", "eval_atol", "lr"), positive=True)
        if len(self.lr_boundaries) != max(len(self.lr_values) - 1, 0):
            raise ValueError("lr_values must have one more entry than lr_boundaries")
        if self.reg == "taylor" and self.lam == 0:
            raise ValueError("lam must be > 0 with reg='taylor' (use reg='none' for an unregularised run)")
        if self.reg == "rnode" and self.lam_kin == 0 and self.lam_fro == 0:
            raise ValueError("lam_kin or lam_fro must be > 0 with reg='rnode'")
        if self.reg != "taylor" and self.lam != 0:
            raise ValueError(f"lam only applies to reg='taylor', got reg={self.reg!r} with lam={self.lam}")
        if self.reg != "rnode" and (self.lam_kin or self.lam_fro):
            raise ValueError(f"lam_kin/lam_fro only apply to reg='rnode', got reg={self.reg!r}")
        if self.batch_size > self.train_size:
            raise ValueError(f"batch_size ({self.batch_size}) must not exceed train_size ({self.train_size})")
        if self.dtype == "float32" and min(self.rtol, self.atol, self.eval_rtol, self.eval_atol) < 1e-6:
            raise ValueError("tolerances below 1e-6 need dtype='float64' (float32 cannot honour them)")

    @property
    def steps_per_epoch(self) -> int:
        return self.train_size // self.batch_size

    @property
    def num_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


PRESET_NAMES = ("smoke", "cpu", "paper")

PRESETS = {
    # seconds to ~2 minutes: 1000 training images, 1 epoch, loose training tolerance
    "smoke": dict(preset="smoke", epochs=1, train_size=1000, rtol=1e-5, atol=1e-5, eval_test_size=1000,
                  eval_train_size=1000, nfe_examples=200, nfe_per_example=10, reg_examples=200, checkpoint_every=5),
    # <= ~30 min per run on 2 CPU cores; Adam (see REFERENCES: NFE grows fastest under Adam)
    "cpu": dict(preset="cpu", epochs=2, eval_train_size=10000),
    # the paper's hyperparameters (SGD + momentum, lr schedule, 160 epochs); meant for a GPU
    "paper": dict(preset="paper", epochs=160, optimizer="sgd", lr=0.1, momentum=0.9,
                  lr_boundaries=(60, 100, 140), lr_values=(0.1, 0.01, 1e-3, 1e-4), eval_every=3000),
}


def make_config(preset: str = "cpu", **overrides) -> MNISTConfig:
    """The preset's configuration with fields overridden (unknown fields are an error)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESET_NAMES}, got {preset!r}")
    fields = {f.name for f in dataclasses.fields(MNISTConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"unknown config field(s) {bad}; known: {sorted(fields)}")
    return MNISTConfig(**{**PRESETS[preset], **overrides})


def _modules(cfg: MNISTConfig):
    return MNISTDynamics(hidden=cfg.hidden, dim=784), MNISTHead(10)


def init_params(cfg: MNISTConfig, key):
    dyn, head = _modules(cfg)
    k1, k2 = jr.split(key)
    dtype = jnp.dtype(cfg.dtype)
    x = jnp.zeros((1, 784), dtype)
    params = {"dyn": dyn.init(k1, jnp.zeros((), dtype), x), "head": head.init(k2, x)}
    return jax.tree_util.tree_map(lambda a: a.astype(dtype), params)


def _prepare(images: np.ndarray, dtype) -> np.ndarray:
    return (images.reshape(len(images), 784) / 255.0).astype(dtype)


def _regularizers(cfg: MNISTConfig, key):
    if cfg.reg == "taylor":
        return [TaylorRK(cfg.order)]
    if cfg.reg == "rnode":
        return [Kinetic(), JacobianFrobenius(key)]
    return []


def _forward(cfg, params, x, regs, rtol, atol):
    dyn, head = _modules(cfg)
    f = as_field(dyn)
    sol = solve(f, x, params["dyn"], solver=cfg.solver, rtol=rtol, atol=atol, regularizers=regs,
                batched=True, max_steps=cfg.max_steps)
    return head.apply(params["head"], sol.y1), sol


def _lr_schedule(cfg: MNISTConfig):
    if not cfg.lr_values:
        return cfg.lr
    spe = cfg.steps_per_epoch
    return optax.piecewise_constant_schedule(
        cfg.lr_values[0],
        {int(b * spe): cfg.lr_values[i + 1] / cfg.lr_values[i] for i, b in enumerate(cfg.lr_boundaries)},
    )


def make_optimizer(cfg: MNISTConfig):
    lr = _lr_schedule(cfg)
    if cfg.optimizer == "sgd":
        return optax.sgd(lr, momentum=cfg.momentum)
    return optax.adam(lr)


def make_train_step(cfg: MNISTConfig, opt):
    def loss_fn(params, x, y, key):
        regs = _regularizers(cfg, key)
        logits, sol = _forward(cfg, params, x, regs, cfg.rtol, cfg.atol)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        reg = jnp.zeros((), ce.dtype)
        if cfg.reg == "taylor":
            reg = cfg.lam * sol.reg[f"R{cfg.order}"].mean()
        elif cfg.reg == "rnode":
            reg = cfg.lam_kin * sol.reg["kinetic"].mean() + cfg.lam_fro * sol.reg["frobenius"].mean()
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        return ce + reg, {"ce": ce, "reg": reg, "nfe": sol.nfe, "acc": acc}

    @jax.jit
    def step(state, batch, key):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], *batch, key)
        updates, opt_state = opt.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state}, {"loss": loss, **aux}

    return step


def evaluate(cfg: MNISTConfig, params, data: dict, progress: bool = False) -> dict:
    """Test accuracy/loss, train accuracy, R_K / kinetic / Frobenius, and NFE (book convention).

    NFE: the *unregularised* dynamics, `cfg.solver` at `cfg.eval_rtol`/`cfg.eval_atol`;
    `test_nfe` = mean over the first `nfe_examples` test images in joint batches of
    `batch_size`; `test_nfe_per_example` = mean over the first `nfe_per_example` test images
    each solved alone.
    """
    dtype = jnp.dtype(cfg.dtype)
    dyn, head = _modules(cfg)
    f = as_field(dyn)
    rtol, atol = cfg.eval_rtol, cfg.eval_atol
    chunk = 1000

    @jax.jit
    def logits_nfe(p, x):
        logits, sol = _forward(cfg, p, x, [], rtol, atol)
        return logits, sol.nfe

    def accuracy_loss(images, labels, n):
        correct, total_loss = 0, 0.0
        for i in range(0, n, chunk):
            x = jnp.asarray(_prepare(images[i : min(i + chunk, n)], dtype))
            y = jnp.asarray(labels[i : min(i + chunk, n)])
            logits, _ = logits_nfe(params, x)
            correct += int(jnp.sum(jnp.argmax(logits, -1) == y))
            total_loss += float(optax.softmax_cross_entropy_with_integer_labels(logits, y).sum())
        return correct / n, total_loss / n

    n_test = min(cfg.eval_test_size, len(data["test_labels"]))
    n_train = min(cfg.eval_train_size, len(data["train_labels"]))
    test_acc, test_loss = accuracy_loss(data["test_images"], data["test_labels"], n_test)
    train_acc, train_loss = accuracy_loss(data["train_images"], data["train_labels"], n_train)

    bs = cfg.batch_size
    nfe_x = _prepare(data["test_images"][: cfg.nfe_examples], dtype)
    nfes = [int(logits_nfe(params, jnp.asarray(nfe_x[i : i + bs]))[1]) for i in range(0, len(nfe_x) - bs + 1, bs)]

    per_ex = evaluation_nfe(f, jnp.asarray(_prepare(data["test_images"][: cfg.nfe_per_example], dtype)), params["dyn"],
                            solver=cfg.solver, rtol=rtol, atol=atol, per_example=True, max_steps=cfg.max_steps)
    per_ex = [int(n) for n in per_ex]

    pen = penalty_values(cfg, params, data, orders=(cfg.order,))
    return {
        "test_acc": test_acc,
        "test_loss": test_loss,
        "train_acc": train_acc,
        "train_loss": train_loss,
        "test_nfe": float(np.mean(nfes)),
        "test_nfe_batches": nfes,
        "test_nfe_per_example": float(np.mean(per_ex)),
        "r_k": pen[f"R{cfg.order}"],
        "r_k_order": cfg.order,
        "kinetic": pen["kinetic"],
        "frobenius": pen["frobenius"],
        "eval_sizes": {"test": n_test, "train": n_train, "nfe_joint": len(nfes) * bs, "nfe_batch": bs,
                       "nfe_per_example": len(per_ex), "reg": pen["n"]},
        "eval_tol": {"rtol": rtol, "atol": atol, "solver": cfg.solver},
    }


def penalty_values(cfg: MNISTConfig, params, data: dict, orders=(2, 3), n: int | None = None) -> dict:
    """R_K for each K in `orders`, kinetic energy and Frobenius estimate of a model, on test images.

    Means over the first `n` test images (default `cfg.reg_examples`), solved in joint chunks of
    1000 at the evaluation tolerance; the Frobenius probe is drawn from `PRNGKey(0)`. Returns
    `{"R2": ..., "R3": ..., "kinetic": ..., "frobenius": ..., "n": n}`.
    """
    orders = tuple(int(k) for k in orders)
    if not orders or any(k < 1 for k in orders):
        raise ValueError(f"orders must be integers >= 1, got {orders}")
    n = cfg.reg_examples if n is None else int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    dtype = jnp.dtype(cfg.dtype)
    regs = [TaylorRK(k) for k in sorted(set(orders))] + [Kinetic(), JacobianFrobenius(jr.PRNGKey(0))]

    @jax.jit
    def reg_sums(p, x):
        _, sol = _forward(cfg, p, x, regs, cfg.eval_rtol, cfg.eval_atol)
        return {k: v.sum() for k, v in sol.reg.items()}

    x_all = _prepare(data["test_images"][:n], dtype)
    sums: dict[str, float] = {}
    for i in range(0, len(x_all), 1000):
        for k, v in reg_sums(params, jnp.asarray(x_all[i : i + 1000])).items():
            sums[k] = sums.get(k, 0.0) + float(v)
    out = {k: v / len(x_all) for k, v in sums.items()}
    out["n"] = len(x_all)
    return out


def penalty_table(paths, orders=(2, 3), n: int | None = None, data: dict | None = None,
                  progress: bool = True) -> dict:
    """`penalty_values` of the final model of every run record in `paths`, as one comparable table.

    Every record's own `r_k` is at its own K; this puts all models on the same penalties.
    Returns a JSON-ready dict with commit, machine, versions and one row per run.
    """
    from tqdm.auto import tqdm

    from ..data import load_mnist

    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("paths: no run records given; pass results/mnist/mnist_cpu_*.json")
    for p in paths:
        if not p.exists():
            raise ValueError(f"{p} does not exist: pass a run record (.json) or a checkpoint directory")
    data = load_mnist(progress=False) if data is None else data
    rows, t0 = [], time.perf_counter()
    for p in tqdm(paths, desc="penalties", disable=not progress):
        cfg, params, record = load_run(p)
        vals = penalty_values(cfg, params, data, orders=orders, n=n)
        rows.append({"run": record["run"] if record else str(p), "record": p.name,
                     "test_nfe": record["metrics"]["test_nfe"] if record else None, **vals})
    return {"experiment": "mnist_penalties", "git_commit": git_commit(), "date": time.strftime("%Y-%m-%d"),
            "machine": machine_info(), "versions": versions(), "wall_time_s": time.perf_counter() - t0,
            "orders": sorted(set(int(k) for k in orders)), "rows": rows}


def run_name(cfg: MNISTConfig) -> str:
    if cfg.reg == "taylor":
        reg = f"taylor_K{cfg.order}_lam{cfg.lam:g}"
    elif cfg.reg == "rnode":
        reg = f"rnode_kin{cfg.lam_kin:g}_fro{cfg.lam_fro:g}"
    else:
        reg = "none"
    return f"mnist_{cfg.preset}_{reg}_seed{cfg.seed}"


def train(cfg: MNISTConfig, *, data: dict | None = None, out_dir="results/mnist", ckpt_root="checkpoints",
          resume: bool = False, progress: bool = True) -> dict:
    """Train, evaluate on the test split, and write the run record and final parameters.

    **Returns** the run record (also written to `out_dir/<run_name>.json`, with the final
    parameters in `out_dir/<run_name>.msgpack`).
    """
    if cfg.dtype == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    if data is None:
        from ..data import load_mnist

        data = load_mnist(progress=progress)
    t_wall = time.perf_counter()
    commit = git_commit()  # the code that trains, even if the tree changes during the run
    dtype = np.dtype(cfg.dtype)
    train_x = _prepare(data["train_images"][: cfg.train_size], dtype)
    train_y = data["train_labels"][: cfg.train_size].astype(np.int32)
    opt = make_optimizer(cfg)
    params = init_params(cfg, jr.PRNGKey(cfg.seed))
    state = {"params": params, "opt_state": opt.init(params)}
    step = make_train_step(cfg, opt)
    name = run_name(cfg)
    loop = LoopConfig(num_steps=cfg.num_steps, steps_per_epoch=cfg.steps_per_epoch, seed=cfg.seed,
                      log_every=max(1, min(10, cfg.num_steps // 10)), eval_every=cfg.eval_every,
                      checkpoint_every=cfg.checkpoint_every)
    eval_fn = (lambda s: evaluate(cfg, s["params"], data)) if cfg.eval_every else None
    ckpt_dir = Path(ckpt_root) / name
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (ckpt_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    state, history, info = fit(
        state, step, lambda idx: (jnp.asarray(train_x[idx]), jnp.asarray(train_y[idx])),
        cfg.train_size, cfg.batch_size, loop, ckpt_dir=ckpt_dir, resume=resume,
        eval_fn=eval_fn, progress=progress, desc=name,
    )
    metrics = info["final_eval"] or evaluate(cfg, state["params"], data)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params_path = out_dir / f"{name}.msgpack"
    params_path.write_bytes(flax.serialization.to_bytes(state["params"]))
    record = {
        "experiment": "mnist",
        "run": name,
        "git_commit": commit,
        "machine": machine_info(),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d"),
        "wall_time_s": time.perf_counter() - t_wall,
        "train_time_s": info["train_time_s"],
        "iter_time_s": info["iter_time_s"],
        "resumed_from": info["resumed_from"],
        "config": dataclasses.asdict(cfg),
        "metrics": metrics,
        "history": history,
        "params_file": params_path.name,
    }
    write_json(out_dir / f"{name}.json", record)
    return record


def _config_from_dict(c: dict) -> MNISTConfig:
    return MNISTConfig(**{**c, "lr_boundaries": tuple(c["lr_boundaries"]), "lr_values": tuple(c["lr_values"])})


def load_run(path) -> tuple[MNISTConfig, dict, dict | None]:
    """(config, params, record) from a run record JSON, or from a checkpoint directory."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist: pass a run record (.json) or a checkpoint directory")
    if path.suffix == ".json":
        record = json.loads(path.read_text())
        c = record["config"]
        cfg = _config_from_dict(c)
        template = init_params(cfg, jr.PRNGKey(0))
        params = flax.serialization.from_bytes(template, (path.parent / record["params_file"]).read_bytes())
        return cfg, params, record
    if path.is_dir():
        from ..train import restore_checkpoint

        config_file = path / "config.json"
        if not config_file.exists():
            raise ValueError(f"{path} has no config.json: pass a run record (.json) or a checkpoint directory written by taynode train")
        c = json.loads(config_file.read_text())
        cfg = _config_from_dict(c)
        params = init_params(cfg, jr.PRNGKey(0))
        opt = make_optimizer(cfg)
        state, _ = restore_checkpoint(path, {"params": params, "opt_state": opt.init(params)})
        return cfg, state["params"], None
    raise ValueError(f"{path}: expected a run record (.json) or a checkpoint directory")


def add_train_arguments(ap) -> None:
    """Command-line flags of `taynode train mnist` (every config field that a user may override)."""
    ap.add_argument("--preset", default="cpu", help=f"one of {PRESET_NAMES}")
    ap.add_argument("--reg", help="none | taylor | rnode")
    ap.add_argument("--order", type=int, help="K of R_K (reg=taylor; also the R_K reported at evaluation)")
    ap.add_argument("--lam", type=float, help="λ of R_K (reg=taylor)")
    ap.add_argument("--lam-kin", type=float, help="RNODE kinetic weight (reg=rnode)")
    ap.add_argument("--lam-fro", type=float, help="RNODE Frobenius weight (reg=rnode)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--solver", help=f"one of {sorted(SOLVERS)}")
    ap.add_argument("--rtol", type=float)
    ap.add_argument("--atol", type=float)
    ap.add_argument("--eval-rtol", type=float)
    ap.add_argument("--eval-atol", type=float)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--train-size", type=int)
    ap.add_argument("--optimizer", help="sgd | adam")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--dtype", help="float64 | float32")
    ap.add_argument("--eval-every", type=int)
    ap.add_argument("--checkpoint-every", type=int)
    ap.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of this run")
    ap.add_argument("--out", default="results/mnist", help="directory of the run record and final parameters")
    ap.add_argument("--ckpt-root", default="checkpoints", help="root directory of checkpoints")
    ap.add_argument("--no-progress", action="store_true")


_CLI_FIELDS = ("reg", "order", "lam", "lam_kin", "lam_fro", "seed", "solver", "rtol", "atol", "eval_rtol",
               "eval_atol", "epochs", "batch_size", "train_size", "optimizer", "lr", "dtype", "eval_every",
               "checkpoint_every")


def config_from_args(a) -> MNISTConfig:
    overrides = {k: getattr(a, k) for k in _CLI_FIELDS if getattr(a, k) is not None}
    return make_config(a.preset, **overrides)


def summary_line(record: dict) -> str:
    m = record["metrics"]
    return (f"{record.get('run', '')}: test acc {m['test_acc'] * 100:.2f}%  train acc {m['train_acc'] * 100:.2f}%  "
            f"test loss {m['test_loss']:.4f}  test NFE {m['test_nfe']:.1f} (joint, batch {m['eval_sizes']['nfe_batch']}) / "
            f"{m['test_nfe_per_example']:.1f} (per example)  R{m['r_k_order']} {m['r_k']:.4g}  "
            f"kinetic {m['kinetic']:.4g}  frobenius {m['frobenius']:.4g}")


# The cpu-preset runs chapter 05 shows (seed 0): unregularised, R_2 and R_3 from weak to strong, RNODE.
CPU_SWEEP = (
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

# The headline runs (unregularised, the strongest R_2, the strongest RNODE) repeated at more seeds,
# so that chapter 05 can show how far the seed alone moves accuracy and NFE.
CPU_REPEAT = (
    dict(reg="none"),
    dict(reg="taylor", order=2, lam=1.0),
    dict(reg="rnode", lam_kin=1.0, lam_fro=1.0),
)
CPU_REPEAT_SEEDS = (1, 2)
SWEEPS = {"full": CPU_SWEEP, "repeat": CPU_REPEAT}


def sweep(preset: str = "cpu", runs=CPU_SWEEP, seed: int = 0, out_dir="results/mnist", ckpt_root="checkpoints",
          progress: bool = True) -> list[Path]:
    """Train every configuration of `runs` in turn; skip those whose record exists, resume the rest.

    Safe to kill and restart: finished runs are kept, the interrupted one resumes from its
    newest checkpoint.
    """
    done = []
    for overrides in runs:
        cfg = make_config(preset, seed=seed, **overrides)
        path = Path(out_dir) / f"{run_name(cfg)}.json"
        if path.exists():
            print(f"{path}: exists, skipped", flush=True)
        else:
            record = train(cfg, out_dir=out_dir, ckpt_root=ckpt_root, resume=True, progress=progress)
            print(summary_line(record), flush=True)
        done.append(path)
    return done
