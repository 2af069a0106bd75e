"""Cost of the K-th solution derivative: incremental Taylor mode, jet and nested jvp, against f.

Fields: the benchmark MLP 100-256-256-100 (tanh, time concatenated at each layer, batch 128) and
the paper's MNIST dynamics (`taynode.models.MNISTDynamics`, 784-100-784, batch 100). For each field,
order K and method it times the forward cost of y^(K) (all lower orders included), as a multiple of
one f evaluation, and value-and-gradient (with respect to the parameters) of mean (y^(K))², as a
multiple of value-and-gradient of mean f². Compile times are recorded beside them, and the machine's
load average (other work may share the cores) before and after the run.

Writes results/bench/taylor_cost.json; its top-level `f` and `rows` are the MLP's forward costs.

    python benchmarks/taylor_cost.py [--max-order 8] [--dtype float32] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr

from taynode.machine import timing
from taynode.models import MNISTDynamics, as_field
from taynode.records import provenance, save_record
from taynode.taylor import solution_derivatives

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("taylor", "jet", "jvp")


def make_field(key, dims=(100, 256, 256, 100), dtype=jnp.float32):
    """The benchmark MLP: tanh layers, time concatenated to every layer's input; returns (f, params)."""
    keys = jr.split(key, len(dims) - 1)
    params = []
    for k, (i, o) in zip(keys, zip(dims[:-1], dims[1:])):
        params.append((jr.normal(k, (i + 1, o), dtype) / jnp.sqrt(i + 1), jnp.zeros((o,), dtype)))

    def f(t, y, params):
        h = y
        for n, (w, b) in enumerate(params):
            tt = jnp.broadcast_to(t, h.shape[:-1] + (1,)).astype(h.dtype)
            h = jnp.concatenate([h, tt], axis=-1) @ w + b
            if n < len(params) - 1:
                h = jnp.tanh(h)
        return h

    return f, params


def make_mnist_field(key, batch, dtype=jnp.float32):
    """The paper's MNIST dynamics with random parameters and a batch of uniform [0, 1] states."""
    module = MNISTDynamics()
    y = jr.uniform(jr.fold_in(key, 1), (batch, module.dim), dtype)
    params = module.init(key, jnp.zeros((), dtype), y)
    return as_field(module), params, y


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _compile_and_time(fn, args, repeats):
    c0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - c0
    return compile_s, timing(fn, *args, repeats=repeats)


def bench_field(f, params, y, t, max_order, repeats, label):
    """Forward and value-and-gradient costs of y^(K) for K = 1..max_order and every method."""

    def sq_f(p, t, y):
        return jnp.mean(f(t, y, p) ** 2)

    _, f_time = _compile_and_time(jax.jit(lambda t, y, p: f(t, y, p)), (t, y, params), repeats)
    _, g_time = _compile_and_time(jax.jit(jax.value_and_grad(sq_f)), (params, t, y), repeats)
    print(f"\n{label}: f {f_time['median_s'] * 1e3:.3f} ms, "
          f"value-and-grad of mean f² {g_time['median_s'] * 1e3:.3f} ms")
    print(f"{'K':>2} {'method':>7} {'fwd ms':>9} {'fwd/f':>7} {'grad ms':>9} {'grad/gf':>8} {'compile fwd s':>14} "
          f"{'compile grad s':>15}")
    rows = []
    for k in range(1, max_order + 1):
        row = {"order": k}
        for m in METHODS:
            def fwd(t, y, p, m=m, k=k):
                return solution_derivatives(f, t, y, p, k, method=m)[-1]

            def sq(p, t, y, m=m, k=k):
                return jnp.mean(solution_derivatives(f, t, y, p, k, method=m)[-1] ** 2)

            row[f"compile_{m}_s"], row[m] = _compile_and_time(jax.jit(fwd), (t, y, params), repeats)
            row[f"compile_grad_{m}_s"], row[f"grad_{m}"] = _compile_and_time(
                jax.jit(jax.value_and_grad(sq)), (params, t, y), repeats
            )
            row[f"{m}_over_f"] = row[m]["median_s"] / f_time["median_s"]
            row[f"grad_{m}_over_grad_f"] = row[f"grad_{m}"]["median_s"] / g_time["median_s"]
            print(f"{k:>2} {m:>7} {row[m]['median_s'] * 1e3:>9.3f} {row[f'{m}_over_f']:>7.2f} "
                  f"{row[f'grad_{m}']['median_s'] * 1e3:>9.3f} {row[f'grad_{m}_over_grad_f']:>8.2f} "
                  f"{row[f'compile_{m}_s']:>14.2f} {row[f'compile_grad_{m}_s']:>15.2f}")
        rows.append(row)
    return {"f": f_time, "grad_f": g_time, "rows": rows}


def targets(rows):
    """The targets for orders K >= 2: Taylor mode within 1.1·K of f (forward and gradient), faster than jet and jvp."""
    out = []
    for r in rows:
        k = r["order"]
        if k < 2:
            continue
        out.append({
            "order": k,
            "forward_within_1.1K": r["taylor_over_f"] <= 1.1 * k,
            "gradient_within_1.1K": r["grad_taylor_over_grad_f"] <= 1.1 * k,
            "forward_fastest": all(r["taylor"]["median_s"] < r[m]["median_s"] for m in ("jet", "jvp")),
            "gradient_fastest": all(r["grad_taylor"]["median_s"] < r[f"grad_{m}"]["median_s"] for m in ("jet", "jvp")),
        })
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-order", type=int, default=8)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--batch", type=int, default=128, help="batch of the MLP")
    ap.add_argument("--mnist-batch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "taylor_cost.json"))
    a = ap.parse_args(argv)
    if a.max_order < 1:
        ap.error(f"--max-order must be >= 1, got {a.max_order}")
    if a.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.dtype(a.dtype)
    load_before = _load()
    start = time.perf_counter()

    f, params = make_field(jr.PRNGKey(0), dtype=dtype)
    y = jr.normal(jr.PRNGKey(1), (a.batch, 100), dtype)
    t = jnp.asarray(0.5, dtype)
    mlp = bench_field(f, params, y, t, a.max_order, a.repeats, f"MLP 100-256-256-100, batch {a.batch}")

    fm, pm, ym = make_mnist_field(jr.PRNGKey(2), a.mnist_batch, dtype)
    mnist = bench_field(fm, pm, ym, t, a.max_order, a.repeats, f"MNIST dynamics 784-100-784, batch {a.mnist_batch}")

    record = {
        **provenance(),
        "benchmark": "taylor_cost",
        "field": "MLP 100-256-256-100, tanh, time concatenated at each layer",
        "batch": a.batch,
        "dtype": a.dtype,
        "methods": {
            "taylor": "incremental Taylor mode (taynode.taylor_mode): one pass through f per order",
            "jet": "K - 1 calls of jax.experimental.jet, each recomputing the lower orders (the paper's)",
            "jvp": "nested forward-mode jvp",
        },
        "quantity": "time of one call computing y^(K) (all lower orders included), jit-compiled",
        "gradient_quantity": "value-and-gradient with respect to the parameters of mean (y^(K))², jit-compiled; "
        "grad_f is value-and-gradient of mean f²",
        "protocol": "compile first; block_until_ready; median and quartiles of repeated samples",
        "f": mlp["f"],
        "grad_f": mlp["grad_f"],
        "rows": mlp["rows"],
        "targets": targets(mlp["rows"]),
        "mnist": {
            "field": "taynode.models.MNISTDynamics: sigmoid, concat t, Dense(100), sigmoid, concat t, Dense(784)",
            "batch": a.mnist_batch,
            **mnist,
            "targets": targets(mnist["rows"]),
        },
        "load_average": {"before": load_before, "after": _load(), "cores": os.cpu_count(),
                         "note": "1/5/15-minute load averages before and after the run; the run itself adds about 1"},
        "wall_s": time.perf_counter() - start,
    }
    out = save_record(a.out, record)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
