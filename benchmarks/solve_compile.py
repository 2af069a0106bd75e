"""Does a repeated solve reuse its compilation? Wall-clock of repeated eager calls.

1. `taynode.solve` called eagerly (no outer jit) again and again on one small problem (an MLP
   field 2-16-2, batch 8, Dopri5 at 1e-6, float64), against a bare `diffrax.diffeqsolve` of
   the same field. The first call includes compilation; the median of the later calls is
   what a repeated call costs.
2. Three successive evaluations of an MNIST model (the committed R_2, λ = 1 record) on 100
   test images: accuracy, joint and per-example NFE, penalties.

Prints a table and writes results/bench/solve_compile.json with the machine it ran on.

    python benchmarks/solve_compile.py [--repeats 10] [--label after]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr

jax.config.update("jax_enable_x64", True)

import taynode  # noqa: E402
from taynode.machine import machine_info, versions  # noqa: E402
from taynode.paths import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# the record of the checkout whose taynode is imported (its schema matches that code)
RECORD = (Path(taynode.__file__).resolve().parents[2] / "results" / "mnist" / "short"
          / "mnist_cpu_taylor_K2_lam1_seed0.json")


def field(t, y, p):
    h = jnp.tanh(jnp.concatenate([y, jnp.broadcast_to(t, y.shape[:-1] + (1,))], -1) @ p["w1"] + p["b1"])
    return h @ p["w2"]


def _params():
    k1, k2, k3 = jr.split(jr.PRNGKey(0), 3)
    return {"w1": jr.normal(k1, (3, 16)), "b1": 0.1 * jr.normal(k2, (16,)), "w2": jr.normal(k3, (16, 2)) / 4}


def _timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return {"first_s": times[0], "median_later_s": statistics.median(times[1:]), "times_s": times}


def bench_solve(repeats):
    p, y0 = _params(), jr.normal(jr.PRNGKey(1), (8, 2))
    tol = 1e-6

    def ours():
        return taynode.solve(field, y0, p, rtol=tol, atol=tol, batched=True).y1

    def ours_rk():
        return taynode.solve(field, y0, p, rtol=tol, atol=tol, batched=True, regularizers=[taynode.TaylorRK(2)]).y1

    def bare():
        return diffrax.diffeqsolve(diffrax.ODETerm(field), diffrax.Dopri5(), 0.0, 1.0, None, y0, p,
                                   stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol)).ys

    return {"taynode.solve": _timed(ours, repeats), "taynode.solve + R2": _timed(ours_rk, repeats),
            "diffrax.diffeqsolve": _timed(bare, repeats)}


def bench_evaluate():
    from taynode.data import load_mnist

    data = load_mnist(progress=False)
    try:  # the shared evaluation
        from taynode.evaluation import evaluate
        from taynode.experiments import mnist
        from taynode.runner import load_run

        exp = mnist.EXPERIMENT
        cfg, params, _ = load_run(exp, RECORD)
        cfg = dataclasses.replace(cfg, eval_test_size=100, eval_train_size=100, nfe_examples=100,
                                  nfe_per_example=10, reg_examples=100)

        def call():
            return evaluate(exp, cfg, params, data)
    except ImportError:  # the per-experiment evaluation it replaces
        from taynode.experiments import mnist

        cfg, params, _ = mnist.load_run(RECORD)
        cfg = dataclasses.replace(cfg, eval_test_size=100, eval_train_size=100, nfe_examples=100,
                                  nfe_per_example=10, reg_examples=100)

        def call():
            return mnist.evaluate(cfg, params, data)

    times = []
    for _ in range(3):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return {"times_s": times}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--label", default="current")
    ap.add_argument("--out", default=None, help="default results/bench/solve_compile_<label>.json")
    a = ap.parse_args(argv)
    if a.repeats < 2:
        ap.error(f"--repeats must be >= 2, got {a.repeats}")
    solve_rows = bench_solve(a.repeats)
    ev = bench_evaluate()
    print(f"{'call':<24} {'first s':>9} {'median later s':>15}")
    for k, v in solve_rows.items():
        print(f"{k:<24} {v['first_s']:9.3f} {v['median_later_s']:15.4f}")
    print("MNIST evaluate on 100 test images, three successive calls (s): "
          + ", ".join(f"{t:.2f}" for t in ev["times_s"]))
    out = Path(a.out or ROOT / "results" / "bench" / f"solve_compile_{a.label}.json")
    body = {"benchmark": "solve_compile", "label": a.label, "taynode_source": taynode.__file__, "repeats": a.repeats,
            "solve": solve_rows, "mnist_evaluate_100": ev}
    try:
        from taynode.records import provenance, save_record
    except ImportError:  # the code before run records had a module of their own
        from taynode.machine import git_commit

        write_json(out, {"git_commit": git_commit(), "machine": machine_info(), "versions": versions(), **body})
    else:
        save_record(out, {**provenance(), **body})
    print(f"written: {out}")


if __name__ == "__main__":
    main()
