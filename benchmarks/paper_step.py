"""Time per training step of each experiment's `paper` preset on this machine, and the projection.

For every registered experiment with a `paper` preset: build the training step at the paper's
configuration (unregularised and the paper's regulariser where the README of the original code
names one), run it once to compile, then time `--steps` steps on real batches (median), and
project the full run as median × the preset's number of steps. The projection is a lower bound
where the NFE grows during training (it does for MNIST). Prints a table and writes
results/bench/paper_step.json.

    python benchmarks/paper_step.py [--steps 3] [--experiments mnist physionet]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import jax.tree_util as jtu  # noqa: E402

from taynode.experiments import REGISTRY  # noqa: E402
from taynode.objective import make_train_step  # noqa: E402
from taynode.optim import make_optimizer  # noqa: E402
from taynode.records import cpu_clock, cpu_use, provenance, save_record  # noqa: E402
from taynode.train import epoch_order  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# the regulariser of the original code's README command for each experiment
PAPER_REG = {
    "mnist": dict(reg="taylor", order=3, lam=6e-5),
    "physionet": dict(reg="taylor", order=3, lam=1e-2),
    "ffjord_mnist": dict(reg="taylor", order=2, lam=3e-4),
    "ffjord_tabular": dict(reg="taylor", order=2, lam=1e-2),
}


def time_steps(exp, cfg, data, steps):
    arrays = exp.train_arrays(cfg, data)
    opt = make_optimizer(cfg)
    params = exp.init_params(cfg, jr.PRNGKey(0))
    state = {"params": params, "opt_state": opt.init(params)}
    step = make_train_step(exp, cfg, opt)
    order = epoch_order(cfg.train_size, cfg.seed, 0)
    times, nfes = [], []
    for i in range(steps + 1):
        idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
        batch = jtu.tree_map(lambda a: jnp.asarray(a[idx]), arrays)
        key = jax.random.fold_in(jr.PRNGKey(cfg.seed), i)
        t = time.perf_counter()
        state, m = step(state, batch, key, jnp.asarray(i, jnp.int32))
        jax.block_until_ready(m["loss"])
        if i:  # the first call compiles
            times.append(time.perf_counter() - t)
        nfes.append(float(m["nfe"]))
    return statistics.median(times), nfes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--experiments", nargs="+", default=None)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "paper_step.json"))
    a = ap.parse_args(argv)
    names = a.experiments or [n for n in REGISTRY if "paper" in REGISTRY[n].presets and n != "toy"]
    rows, clock = [], cpu_clock()
    for name in names:
        exp = REGISTRY[name]
        for reg in (dict(reg="none"), PAPER_REG.get(name)):
            if reg is None:
                continue
            cfg = exp.config("paper", **reg)
            data = exp.load_data(cfg, progress=False)
            t0 = time.perf_counter()
            med, nfes = time_steps(exp, cfg, data, a.steps)
            rows.append({"experiment": name, "run": exp.run_name(cfg), "s_per_step": med, "nfe": nfes,
                         "num_steps": cfg.num_steps, "projected_h": med * cfg.num_steps / 3600,
                         "measured_wall_s": time.perf_counter() - t0})
            r = rows[-1]
            print(f"{r['run']:<40} {med:8.2f} s/step  NFE {nfes[-1]:5.0f}  {cfg.num_steps:7d} steps  "
                  f"≥ {r['projected_h']:7.1f} h", flush=True)
    out = save_record(a.out, {**provenance(), "benchmark": "paper_step", "steps_timed": a.steps,
                              **cpu_use(clock), "rows": rows})
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
