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

**Where a sampled R_K's overhead goes.** Two more variants take apart the sampled step:
`sampled, no integrand` runs the same wrapper (the draw of the point, the dense interpolant at
it, the per-step sum carried beside the state) with an integrand that reads y(t*) but evaluates
nothing (0·mean y(t*)², so that nothing is pruned), and `R1 sampled` adds the one evaluation of
f at the point. Beside them, `point_s[K]` times the value and gradient (with respect to the
field's parameters and the state) of the integrand mean (d^K y/dt^K)² at one point, and its
forward pass alone: a sampled R_K adds per attempted step one forward pass, and in the backward
pass (which recomputes every step from its checkpoint) another forward pass and the gradient.
`bound` is the unregularised step plus that work once per attempted step of its solve (Dopri5:
(NFE − 2) / 6), over the unregularised step: the ratio a wrapper costing nothing else would reach.

`--dtype float64` (default) solves at the paper's 1.4e-8, `--dtype float32` at 1e-5 (the
training setting of the trained presets), both from the same parameters; `--tol` sets another
tolerance (the toy trains in float64 at 1e-5).

    python benchmarks/step_cost.py [--experiment mnist] [--record RECORD.json] [--dtype float32] [--tol 1e-5]
"""

from __future__ import annotations

import argparse
import dataclasses
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
from taynode.records import cpu_clock, cpu_use, provenance, save_record  # noqa: E402
from taynode.regularization import Regularization  # noqa: E402
from taynode.regularizers import TaylorRK, per_example_mean_square  # noqa: E402
from taynode.runner import load_run  # noqa: E402
from taynode.taylor import derivatives_from  # noqa: E402
from taynode.train import epoch_order  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

METHODS = {
    "none": dict(reg="none"),
    "R2 exact": dict(reg="taylor", order=2, lam=1.0),
    "R2 sampled": dict(reg="taylor", order=2, lam=1.0, estimator="sampled"),
    "R3 exact": dict(reg="taylor", order=3, lam=1.0),
    "R3 sampled": dict(reg="taylor", order=3, lam=1.0, estimator="sampled"),
    "RNODE": dict(reg="rnode", lam_kin=1.0, lam_fro=1.0),
    "ERNODE": dict(reg="ernode", lam=1.0),
    "SRNODE": dict(reg="srnode", lam=1.0),
    "STEER": dict(reg="steer", steer_b=0.5),
    "sampled, no integrand": dict(reg="taylor", order=2, lam=1.0, estimator="sampled"),
    "R1 sampled": dict(reg="taylor", order=1, lam=1.0, estimator="sampled"),
}
PAPER_TOL, FLOAT32_TOL = 1.4e-8, 1e-5


class _NoIntegrand(TaylorRK):
    """The sampled wrapper's machinery alone: reads y(t*), evaluates nothing (0 · mean y(t*)²)."""

    def integrand(self, t, y, args, vector_field, dy, batched: bool):
        return 0 * per_example_mean_square(y, batched)


class _NoIntegrandRegularization(Regularization):
    def regularizers(self, key, part=None) -> tuple:
        return (_NoIntegrand(self.order, method=self.method, part=part, estimator="sampled", key=key),)


def _regularization(name, cfg):
    if name != "sampled, no integrand":
        return None
    r = cfg.regularization
    return _NoIntegrandRegularization(r.kind, r.order, r.lam, r.lam_kin, r.lam_fro, r.estimator, r.method, r.steer_b)


def point_cost(exp, cfg, params, batch, key, order):
    """Jitted calls at (t0, y0) of the batch's problem: the integrand mean (d^K y/dt^K)² (`fwd`), and its
    value and gradient with respect to the field's parameters (the problem's args) and y0 (`vg`)."""
    problem = exp.problem(cfg, params, exp.training_batch(cfg, batch, key))

    def value(args, y0):
        dy = problem.field(problem.t0, y0, args)
        dk = derivatives_from(problem.field, problem.t0, y0, args, order, dy, method=cfg.taylor_method)[-1]
        return jnp.mean(per_example_mean_square(dk, True))

    fwd = jax.jit(value)
    vg = jax.jit(jax.value_and_grad(value, argnums=(0, 1)))
    calls = {"fwd": lambda: fwd(problem.args, problem.y0), "vg": lambda: vg(problem.args, problem.y0)}
    for call in calls.values():
        jax.block_until_ready(call())
    return calls


def _median(f, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def build(exp, cfg, params, batch, key, regularization=None):
    """The three timed calls of one configuration, compiled; returns (calls, nfe, compile_s)."""
    opt = make_optimizer(cfg)
    state = {"params": params, "opt_state": opt.init(params)}
    step = make_train_step(exp, cfg, opt, regularization)
    loss = jax.jit(make_loss(exp, cfg, regularization))
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
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                    help="float64 at the paper's 1.4e-8 (default) or float32 at 1e-5")
    ap.add_argument("--tol", type=float, default=None,
                    help="rtol = atol of the solves instead of the dtype's default (e.g. the toy's training 1e-5)")
    ap.add_argument("--orders", type=int, nargs="+", default=[1, 2, 3], help="K of the point costs")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    exp = REGISTRY[a.experiment]
    record = Path(a.record or ROOT / "results" / a.experiment / f"{a.experiment}_cpu_none_seed0.json")
    base_cfg, params, _ = load_run(exp, record)
    if a.tol is not None and not 0 < a.tol < 1:
        raise SystemExit(f"--tol must lie in (0, 1), got {a.tol}")
    tol = a.tol if a.tol is not None else PAPER_TOL if a.dtype == "float64" else FLOAT32_TOL
    base_cfg = dataclasses.replace(base_cfg, reg="none", estimator="exact", rtol=tol, atol=tol, dtype=a.dtype,
                                   eval_dtype="float64", seed=0)
    params = jtu.tree_map(lambda x: jnp.asarray(x, a.dtype), params)
    data = exp.load_data(base_cfg, progress=False)
    arrays = exp.train_arrays(base_cfg, data)
    idx = epoch_order(base_cfg.train_size, 0, 0)[: base_cfg.batch_size]
    batch = jtu.tree_map(lambda x: jnp.asarray(x[idx]), arrays)
    key = jr.PRNGKey(0)

    built = {}
    for name in a.methods:
        cfg = dataclasses.replace(base_cfg, **METHODS[name])
        built[name] = build(exp, cfg, params, batch, key, _regularization(name, cfg))
        print(f"compiled {name:<11} NFE {built[name][1]:5.0f}  first step {built[name][2]:6.1f} s", flush=True)

    points = {k: point_cost(exp, base_cfg, params, batch, key, k) for k in a.orders}
    samples = {name: {k: [] for k in ("f_s", "forward_s", "step_s")} for name in a.methods}
    point_samples = {k: {"fwd": [], "vg": []} for k in a.orders}
    load_before = os.getloadavg()[0]
    clock = cpu_clock()  # what this process and every other one kept busy during the timed calls
    for _ in range(a.rounds):
        for name in a.methods:
            for k, call in built[name][0].items():
                samples[name][k].append(_median(call, a.repeats))
        for k, calls in points.items():
            for part, call in calls.items():
                point_samples[k][part].append(_median(call, a.repeats))
    use = cpu_use(clock)
    # one unit for every method: the field is the same computation in each
    unit = statistics.median(x for name in a.methods for x in samples[name]["f_s"])
    point = {k: {part: statistics.median(v) for part, v in parts.items()} for k, parts in point_samples.items()}
    # what a sampled R_K adds per attempted step: the integrand's forward pass, then in the backward pass
    # (which recomputes each step from its checkpoint) its forward pass again and its gradient
    point_s = {k: p["fwd"] + p["vg"] for k, p in point.items()}
    rows = []
    for name in a.methods:
        med = {k: statistics.median(v) for k, v in samples[name].items()}
        nfe = built[name][1]
        rows.append({
            "method": name, **METHODS[name], "nfe": nfe, "compile_and_first_step_s": built[name][2], **med,
            "forward_f_units": med["forward_s"] / unit, "step_f_units": med["step_s"] / unit,
            "step_f_units_per_nfe": med["step_s"] / unit / nfe, "rounds": samples[name],
        })
    base = next((r for r in rows if r["method"] == "none"), None)
    print(f"\n{exp.name}, batch {base_cfg.batch_size}, {base_cfg.solver} at rtol=atol={base_cfg.rtol:g} in "
          f"{base_cfg.dtype}, parameters of {record.name}; other processes kept "
          f"{use['other_processes_cores_used']} of {use['cores']} cores busy; f {1e3 * unit:.3f} ms")
    print(f"{'method':<22} {'NFE':>5} {'forward (s)':>12} {'step (s)':>9} {'fwd f-units':>12} "
          f"{'step f-units':>13} {'per NFE':>8} {'step ÷ none':>12} {'bound':>6}")
    steps = (base["nfe"] - 2) / 6 if base else float("nan")  # attempted Dopri5 steps (FSAL: 6 new f each)
    for r in rows:
        ratio = r["step_s"] / base["step_s"] if base else float("nan")
        r["step_over_none"] = ratio
        k = r.get("order") if r.get("estimator") == "sampled" and r["method"] != "sampled, no integrand" else None
        r["bound"] = (base["step_s"] + steps * point_s[k]) / base["step_s"] if base and k in point_s else None
        bound = f"{r['bound']:6.2f}" if r["bound"] is not None else ""
        print(f"{r['method']:<22} {r['nfe']:5.0f} {r['forward_s']:12.4f} {r['step_s']:9.4f} "
              f"{r['forward_f_units']:12.1f} {r['step_f_units']:13.1f} {r['step_f_units_per_nfe']:8.2f} "
              f"{ratio:12.2f} {bound}")
    print("mean (d^K y/dt^K)^2 at one point, forward + value and gradient: "
          + ", ".join(f"K={k} {1e3 * p['fwd']:.2f} + {1e3 * p['vg']:.2f} ms ({point_s[k] / unit:.1f} f units)"
                      for k, p in point.items())
          + f"; {steps:.1f} attempted steps per unregularised solve")
    suffix = ("" if a.dtype == "float64" else f"_{a.dtype}") + ("" if a.tol is None else f"_tol{a.tol:g}")
    out = Path(a.out or ROOT / "results" / "bench" / f"step_cost_{exp.name}{suffix}.json")
    save_record(out, {
        **provenance(), "benchmark": "step_cost", "experiment": exp.name, "params_of": record.name,
        "config": {"preset": base_cfg.preset, "batch_size": base_cfg.batch_size, "solver": base_cfg.solver,
                   "rtol": base_cfg.rtol, "atol": base_cfg.atol, "dtype": base_cfg.dtype,
                   "optimizer": base_cfg.optimizer, "taylor_method": base_cfg.taylor_method},
        "protocol": f"each call compiled first; {a.rounds} interleaved rounds over the methods, each the median "
                    f"of {a.repeats} calls (block_until_ready); the value is the median of the rounds",
        "unit": "one forward evaluation of the field on the batch at t0: the median of every method's f_s",
        "f_unit_s": unit, "attempted_steps": steps,
        "point_s": {str(k): v for k, v in point_s.items()},
        "point": {str(k): v for k, v in point.items()},
        "point_rounds": {str(k): v for k, v in point_samples.items()},
        "bound": "the unregularised step plus point_s[K] per attempted step, over the unregularised step",
        "load_before": load_before, "load_after": os.getloadavg()[0], "cores": use["cores"],
        "own_cores_used": use["own_cores_used"], "other_processes_cores_used": use["other_processes_cores_used"],
        "rows": rows,
    })
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
