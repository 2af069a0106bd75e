"""The paper's Fig. 1 toy: fit the map z(1) = z(0) + z(0)³ with a small MLP vector field.

Unregularised vs R_K-regularised training, and a λ sweep giving the loss-vs-NFE trade-off.

    python -m taynode.experiments.toy --preset cpu --lams 0 1e-4 1e-3 1e-2 1e-1 1 --seeds 0 1 2

writes one record per λ to results/toy/ (config, machine, metrics, history, final parameters).
"""

from __future__ import annotations

import argparse
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
from tqdm.auto import tqdm

from .._checks import check_ints, check_numbers
from ..machine import git_commit, machine_info, versions
from ..paths import write_json
from ..models import MLPField, as_field
from ..regularizers import TaylorRK
from ..solve import PAPER_TOL, evaluation_nfe, solve

__all__ = ["ToyConfig", "PRESETS", "make_problem", "train_toy", "evaluate_toy", "save_record", "load_record"]


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """Configuration of one toy run (frozen; override fields with `dataclasses.replace`)."""

    preset: str = "cpu"
    width: int = 64
    depth: int = 2
    activation: str = "tanh"
    init_scale: float = 2.0
    n_points: int = 32
    z_range: float = 1.0
    steps: int = 1000
    lr: float = 1e-2
    order: int = 3
    lam: float = 0.0
    solver: str = "dopri5"
    train_tol: float = 1e-5
    eval_tol: float = PAPER_TOL
    seed: int = 0

    def __post_init__(self):
        check_ints(self, ("width", "depth", "n_points", "steps", "order"))
        check_numbers(self, ("lr", "train_tol", "eval_tol", "z_range", "init_scale"), positive=True)
        if not (isinstance(self.lam, (int, float)) and self.lam >= 0):
            raise ValueError(f"lam must be >= 0, got {self.lam!r}")


PRESETS = {
    "smoke": ToyConfig(preset="smoke", steps=300),
    "cpu": ToyConfig(preset="cpu", steps=1000),
}


def make_problem(cfg: ToyConfig):
    """(module, field f(t, z, params), inputs z0 of shape (n, 1), targets z0 + z0³)."""
    module = MLPField(hidden=(cfg.width,) * cfg.depth, out_dim=1, activation=cfg.activation, init_scale=cfg.init_scale)
    z0 = jnp.linspace(-cfg.z_range, cfg.z_range, cfg.n_points)[:, None]
    return module, as_field(module), z0, z0 + z0**3


def train_toy(cfg: ToyConfig, progress: bool = True) -> dict:
    """Train one model with Adam on MSE + λ·mean R_K; returns params, history and timings.

    Float64 is required for the evaluation tolerance (enable `jax_enable_x64` first).
    """
    if not jax.config.jax_enable_x64:
        raise RuntimeError("the toy runs in float64: call jax.config.update('jax_enable_x64', True) first")
    module, f, z0, target = make_problem(cfg)
    params = module.init(jr.PRNGKey(cfg.seed), 0.0, z0)
    opt = optax.adam(cfg.lr)
    opt_state = opt.init(params)
    regs = [TaylorRK(cfg.order)] if cfg.lam > 0 else []
    name = f"R{cfg.order}"

    def loss_fn(p):
        sol = solve(f, z0, p, solver=cfg.solver, rtol=cfg.train_tol, atol=cfg.train_tol, regularizers=regs, batched=True)
        mse = jnp.mean((sol.y1 - target) ** 2)
        r = jnp.mean(sol.reg[name]) if regs else jnp.zeros(())
        return mse + cfg.lam * r, (mse, r, sol.nfe)

    @jax.jit
    def step(p, s):
        (_, (mse, r, nfe)), g = jax.value_and_grad(loss_fn, has_aux=True)(p)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, mse, r, nfe

    history = []
    t_start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=f"toy λ={cfg.lam:g}", disable=not progress, leave=False)
    for i in bar:
        params, opt_state, mse, r, nfe = step(params, opt_state)
        if i == 0:
            jax.block_until_ready(mse)
            t_compiled = time.perf_counter()
        if i % 25 == 0 or i == cfg.steps - 1:
            mse_f = float(mse)
            if not np.isfinite(mse_f):
                raise FloatingPointError(f"toy training diverged at step {i} (loss {mse_f}); lower lr or lam")
            history.append({"step": i, "mse": mse_f, "reg": float(r), "train_nfe": int(nfe)})
            bar.set_postfix(mse=f"{mse_f:.2e}", nfe=int(nfe))
    jax.block_until_ready(params)
    t_end = time.perf_counter()
    return {
        "params": params,
        "history": history,
        "compile_s": t_compiled - t_start,
        "train_time_s": t_end - t_compiled,
        "iter_time_s": (t_end - t_compiled) / max(cfg.steps - 1, 1),
    }


def evaluate_toy(cfg: ToyConfig, params) -> dict:
    """MSE, R_2 and R_3 (batch means), and NFE by the book's convention at `cfg.eval_tol`.

    NFE: unregularised dynamics, Dopri5, the n_points inputs solved jointly, and per example.
    """
    _, f, z0, target = make_problem(cfg)
    tol = cfg.eval_tol
    sol = solve(f, z0, params, rtol=tol, atol=tol, regularizers=[TaylorRK(2), TaylorRK(3)], batched=True)
    return {
        "mse": float(jnp.mean((sol.y1 - target) ** 2)),
        "r2": float(jnp.mean(sol.reg["R2"])),
        "r3": float(jnp.mean(sol.reg["R3"])),
        "nfe": int(evaluation_nfe(f, z0, params, rtol=tol, atol=tol)),
        "nfe_per_example_mean": float(jnp.mean(evaluation_nfe(f, z0, params, rtol=tol, atol=tol, per_example=True))),
        "nfe_by_tol": {
            str(t): int(evaluation_nfe(f, z0, params, rtol=t, atol=t)) for t in (1e-4, 1e-6, 1.4e-8, 1e-10)
        },
    }


def save_record(cfg: ToyConfig, run: dict, metrics: dict, out_dir: Path) -> Path:
    """Write `toy_K{order}_lam{lam}_seed{seed}.json` and its `.msgpack` parameters."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"toy_{cfg.preset}_K{cfg.order}_lam{cfg.lam:g}_seed{cfg.seed}"
    params_path = out_dir / f"{stem}.msgpack"
    params_path.write_bytes(flax.serialization.to_bytes(run["params"]))
    record = {
        "experiment": "toy",
        "config": dataclasses.asdict(cfg),
        "metrics": metrics,
        "history": run["history"],
        "train_time_s": run["train_time_s"],
        "iter_time_s": run["iter_time_s"],
        "compile_s": run["compile_s"],
        "params_file": params_path.name,
        "machine": machine_info(),
        "versions": versions(),
        "git_commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
    }
    return write_json(out_dir / f"{stem}.json", record)


def load_record(path: Path) -> tuple[dict, object]:
    """A saved record and its parameters (restored into the model's structure)."""
    path = Path(path)
    record = json.loads(path.read_text())
    cfg = ToyConfig(**record["config"])
    module, _, z0, _ = make_problem(cfg)
    template = module.init(jr.PRNGKey(0), 0.0, z0)
    params = flax.serialization.from_bytes(template, (path.parent / record["params_file"]).read_bytes())
    return record, params


def main(argv=None):
    ap = argparse.ArgumentParser(description="Train the Fig. 1 toy for several λ and write run records.")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--lams", type=float, nargs="+", default=[0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="results/toy")
    a = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    for seed, lam in [(s, l) for s in a.seeds for l in a.lams]:
        cfg = dataclasses.replace(PRESETS[a.preset], lam=lam, order=a.order, seed=seed)
        run = train_toy(cfg)
        metrics = evaluate_toy(cfg, run["params"])
        path = save_record(cfg, run, metrics, Path(a.out))
        print(f"seed {seed} λ={lam:g}: mse={metrics['mse']:.2e} R3={metrics['r3']:.3g} NFE={metrics['nfe']} "
              f"({run['iter_time_s'] * 1e3:.1f} ms/step) -> {path}", flush=True)


if __name__ == "__main__":
    main()
