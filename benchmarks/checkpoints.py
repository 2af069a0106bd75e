"""How many checkpoints the backward pass of a training solve should keep: the MNIST step timed at each.

diffrax's `RecursiveCheckpointAdjoint` (discretise-then-optimise) keeps `checkpoints` copies of
the solver loop's state for the backward pass; its default is about sqrt(2 · max_steps) (90 for
max_steps = 4096). `taynode.solve.recursive_checkpoints` keeps as many as 32 MiB holds, at most 16.
This script times the unregularised MNIST training step (the jitted `make_train_step`: one
value-and-gradient and one Adam update, batch 100, Dopri5) of a committed run's parameters with
each choice, interleaved, and checks that every choice gives the same updated parameters. Run on
an idle machine; prints a table and writes results/bench/checkpoints.json.

    python benchmarks/checkpoints.py [--record results/mnist/mnist_cpu_none_seed0.json] [--rounds 5]
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
import numpy as np  # noqa: E402

import taynode  # noqa: E402, F401
from taynode.experiments import REGISTRY  # noqa: E402
from taynode.objective import make_train_step  # noqa: E402
from taynode.optim import make_optimizer  # noqa: E402
from taynode.records import provenance, save_record  # noqa: E402
from taynode.runner import load_run  # noqa: E402
from taynode.solve import PAPER_TOL  # noqa: E402
from taynode.train import epoch_order  # noqa: E402

SOLVE = sys.modules["taynode.solve"]  # the module (taynode.solve is also the function)
ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"float64": PAPER_TOL, "float32": 1e-5}  # the paper's tolerance; the trained tier's training


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", default=str(ROOT / "results" / "mnist" / "mnist_cpu_none_seed0.json"))
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (3 calls per choice each)")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "checkpoints.json"))
    a = ap.parse_args(argv)
    if a.rounds < 1:
        ap.error(f"--rounds must be >= 1, got {a.rounds}")
    exp = REGISTRY["mnist"]
    _, params0, _ = load_run(exp, Path(a.record))
    rule = SOLVE.recursive_checkpoints
    choices = {"diffrax default": lambda y0, m: None, "taynode rule": rule, "8": lambda y0, m: 8,
               "32": lambda y0, m: 32}
    rows = []
    for dtype, tol in SETTINGS.items():
        cfg = exp.config("cpu", seed=0, rtol=tol, atol=tol, dtype=dtype, eval_dtype="float64", optimizer="adam",
                         lr=1e-3, lr_values=(), lr_boundaries=())
        params = jtu.tree_map(lambda x: jnp.asarray(x, dtype), params0)
        data = exp.load_data(cfg, progress=False)
        arrays = exp.train_arrays(cfg, data)
        idx = epoch_order(cfg.train_size, 0, 0)[: cfg.batch_size]
        batch = tuple(jnp.asarray(np.array(v[idx])) for v in arrays)
        opt = make_optimizer(cfg)
        state = {"params": params, "opt_state": opt.init(params)}
        steps, outs, counts = {}, {}, {}
        for name, fn in choices.items():
            SOLVE.recursive_checkpoints = fn
            steps[name] = make_train_step(exp, cfg, opt)
            outs[name] = jax.block_until_ready(steps[name](state, batch, jr.PRNGKey(0), 0))
            counts[name] = fn(batch[0], cfg.max_steps)
        SOLVE.recursive_checkpoints = rule
        ref = jtu.tree_leaves(outs["diffrax default"][0]["params"])
        same = {k: all(bool(jnp.array_equal(x, y)) for x, y in zip(ref, jtu.tree_leaves(o[0]["params"])))
                for k, o in outs.items()}
        times = {k: [] for k in steps}
        for _ in range(a.rounds):
            for name, st in steps.items():
                for _ in range(3):
                    t = time.perf_counter()
                    jax.block_until_ready(st(state, batch, jr.PRNGKey(0), 0))
                    times[name].append(time.perf_counter() - t)
        base = statistics.median(times["diffrax default"])
        # equinox's checkpointed_while_loop default for checkpoints=None
        n_default = int(np.floor(-1.5 + np.sqrt(2 * cfg.max_steps + 0.25)) + 1)
        for name in steps:
            med = statistics.median(times[name])
            rows.append({"dtype": dtype, "rtol": tol, "choice": name,
                         "checkpoints": n_default if counts[name] is None else int(counts[name]),
                         "nfe": float(outs[name][1]["nfe"]), "median_step_s": med, "ratio_to_default": med / base,
                         "same_update_as_default": same[name], "samples_s": times[name]})
    print(f"MNIST training step, batch 100, parameters of {Path(a.record).name}, {a.rounds} rounds x 3 calls")
    print(f"{'dtype':8} {'choice':16} {'checkpoints':>11} {'NFE':>5} {'median (ms)':>12} {'÷ default':>10}  same")
    for r in rows:
        print(f"{r['dtype']:8} {r['choice']:16} {r['checkpoints']:>11} {r['nfe']:>5.0f} "
              f"{1e3 * r['median_step_s']:>12.1f} {r['ratio_to_default']:>10.3f}  {r['same_update_as_default']}")
    out = save_record(a.out, {**provenance(), "benchmark": "checkpoints", "params_of": Path(a.record).name,
                              "protocol": "compile first; rounds interleave the choices, 3 calls each; median",
                              "rows": rows})
    print(f"written: {out}")


if __name__ == "__main__":
    main()
