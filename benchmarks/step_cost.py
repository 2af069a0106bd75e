"""What a training step costs, in f-evaluation units, beside wall-clock and NFE, for every regulariser.

NFE counts the solver's evaluations of the field, but an evaluation of d^K z/dt^K costs several
evaluations of f, and the backward pass costs more again. This benchmark takes one experiment's
`cpu` configuration, the parameters of one of its committed runs (so that the dynamics are those
of a trained model) and one training batch, and for each regulariser measures, on the same
batch, key and parameters:

- `f_s`: one evaluation of the field on the batch (forward, jitted): the **unit**;
- `forward_s`: the training loss (forward solve with the regularisers, no gradient);
- `step_s`: the whole training step (value and gradient, optimiser update);

and reports each in seconds and in f units (seconds ÷ `f_s`), the NFE of the training solve,
and the step's f units per NFE. A sampled R_K takes the unregularised solve's steps (it is left
out of the step-size control), so its step time over the unregularised one is its overhead at the
same NFE. Calls are interleaved over the methods, each compiled first; medians of `--repeats`.

    python benchmarks/step_cost.py [--experiment mnist] [--record results/mnist/short/mnist_cpu_none_seed0.json]
"""

from __future__ import annotations

import argparse
import os
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
from taynode.objective import make_loss, make_train_step  # noqa: E402
from taynode.optim import make_optimizer  # noqa: E402
from taynode.records import provenance, save_record  # noqa: E402
from taynode.runner import load_run  # noqa: E402
from taynode.train import epoch_order  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

METHODS = {
    "none": dict(reg="none"),
    "R2 exact": dict(reg="taylor", order=2, lam=1.0),
    "R2 sampled": dict(reg="taylor", order=2, lam=1.0, estimator="sampled"),
    "R3 exact": dict(reg="taylor", order=3, lam=1.0),
    "R3 sampled": dict(reg="taylor", order=3, lam=1.0, estimator="sampled"),
    "RNODE": dict(reg="rnode", lam_kin=1.0, lam_fro=1.0),
}


def _median(f, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def build(exp, cfg, params, batch, key):
    """The three timed calls of one configuration, compiled; returns (calls, nfe, compile_s)."""
    opt = make_optimizer(cfg)
    state = {"params": params, "opt_state": opt.init(params)}
    step = make_train_step(exp, cfg, opt)
    loss = jax.jit(make_loss(exp, cfg))
    problem = exp.problem(cfg, params, exp.training_batch(cfg, batch, key))
    field = jax.jit(lambda y: problem.field(problem.t0, y, problem.args))
    i = jnp.asarray(0, jnp.int32)
    t = time.perf_counter()
    _, m = step(state, batch, key, i)
    jax.block_until_ready(m["loss"])
    compile_s = time.perf_counter() - t
    jax.block_until_ready(loss(params, batch, key, i))
    jax.block_until_ready(field(problem.y0))
    calls = {
        "f_s": lambda: field(problem.y0),
        "forward_s": lambda: loss(params, batch, key, i)[0],
        "step_s": lambda: step(state, batch, key, i)[1]["loss"],
    }
    return calls, float(m["nfe"]), compile_s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="mnist")
    ap.add_argument("--record", default=None, help="run record whose parameters are used (default: the cpu "
                    "unregularised seed-0 run)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of --repeats calls each")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    exp = REGISTRY[a.experiment]
    record = Path(a.record or ROOT / "results" / a.experiment / f"{a.experiment}_cpu_none_seed0.json")
    base_cfg, params, _ = load_run(exp, record)
    data = exp.load_data(base_cfg, progress=False)
    arrays = exp.train_arrays(base_cfg, data)
    idx = epoch_order(base_cfg.train_size, 0, 0)[: base_cfg.batch_size]
    batch = jtu.tree_map(lambda x: jnp.asarray(x[idx]), arrays)
    key = jr.PRNGKey(0)

    built = {}
    for name in a.methods:
        cfg = exp.config(base_cfg.preset, **{**METHODS[name], "seed": 0})
        built[name] = build(exp, cfg, params, batch, key)
        print(f"compiled {name:<11} NFE {built[name][1]:5.0f}  first step {built[name][2]:6.1f} s", flush=True)

    samples = {name: {k: [] for k in ("f_s", "forward_s", "step_s")} for name in a.methods}
    load_before = os.getloadavg()[0]
    for _ in range(a.rounds):
        for name in a.methods:
            for k, call in built[name][0].items():
                samples[name][k].append(_median(call, a.repeats))
    rows = []
    for name in a.methods:
        med = {k: statistics.median(v) for k, v in samples[name].items()}
        unit = med["f_s"]
        nfe = built[name][1]
        rows.append({
            "method": name, **METHODS[name], "nfe": nfe, "compile_and_first_step_s": built[name][2], **med,
            "forward_f_units": med["forward_s"] / unit, "step_f_units": med["step_s"] / unit,
            "step_f_units_per_nfe": med["step_s"] / unit / nfe, "rounds": samples[name],
        })
    base = next((r for r in rows if r["method"] == "none"), None)
    print(f"\n{exp.name}, cpu configuration, batch {base_cfg.batch_size}, {base_cfg.solver} at "
          f"rtol=atol={base_cfg.rtol:g}, parameters of {record.name}; load {load_before:.1f}")
    print(f"{'method':<11} {'NFE':>5} {'f (ms)':>8} {'forward (s)':>12} {'step (s)':>9} {'fwd f-units':>12} "
          f"{'step f-units':>13} {'per NFE':>8} {'step ÷ none':>12}")
    for r in rows:
        ratio = r["step_s"] / base["step_s"] if base else float("nan")
        r["step_over_none"] = ratio
        print(f"{r['method']:<11} {r['nfe']:5.0f} {1e3 * r['f_s']:8.3f} {r['forward_s']:12.4f} {r['step_s']:9.4f} "
              f"{r['forward_f_units']:12.1f} {r['step_f_units']:13.1f} {r['step_f_units_per_nfe']:8.2f} "
              f"{ratio:12.2f}")
    out = Path(a.out or ROOT / "results" / "bench" / f"step_cost_{exp.name}.json")
    save_record(out, {
        **provenance(), "benchmark": "step_cost", "experiment": exp.name, "params_of": record.name,
        "config": {"preset": base_cfg.preset, "batch_size": base_cfg.batch_size, "solver": base_cfg.solver,
                   "rtol": base_cfg.rtol, "atol": base_cfg.atol, "dtype": base_cfg.dtype},
        "protocol": f"each call compiled first; {a.rounds} interleaved rounds over the methods, each the median "
                    f"of {a.repeats} calls (block_until_ready); the value is the median of the rounds",
        "unit": "f_s: one forward evaluation of the field on the batch at t0", "load_before": load_before,
        "load_after": os.getloadavg()[0], "rows": rows,
    })
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
