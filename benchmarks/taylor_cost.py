"""Cost of the K-th solution derivative: Taylor mode (jet) vs nested jvp, against one f evaluation.

Field: MLP 100-256-256-100 with tanh, time concatenated to the input, batch 128.
Prints a table and writes results/bench/taylor_cost.json with the machine it ran on.

    python benchmarks/taylor_cost.py [--max-order 8] [--dtype float32] [--repeats 30]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr

from taynode.machine import git_commit, machine_info, timing, versions
from taynode.paths import write_json
from taynode.taylor import solution_derivatives

ROOT = Path(__file__).resolve().parents[1]


def make_field(key, dims=(100, 256, 256, 100), dtype=jnp.float32):
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-order", type=int, default=8)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "taylor_cost.json"))
    a = ap.parse_args(argv)
    if a.max_order < 1:
        ap.error(f"--max-order must be >= 1, got {a.max_order}")
    if a.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.dtype(a.dtype)
    f, params = make_field(jr.PRNGKey(0), dtype=dtype)
    y = jr.normal(jr.PRNGKey(1), (a.batch, 100), dtype)
    t = jnp.asarray(0.5, dtype)

    f_time = timing(jax.jit(lambda t, y: f(t, y, params)), t, y, repeats=a.repeats)
    rows = []
    print(f"f: {f_time['median_s'] * 1e3:.3f} ms   (machine: {machine_info()['cpu']}, {a.dtype}, batch {a.batch})")
    print(f"{'K':>2} {'jet ms':>9} {'jvp ms':>9} {'jet/f':>7} {'jvp/f':>7} {'compile jet s':>14} {'compile jvp s':>14}")
    for k in range(1, a.max_order + 1):
        row = {"order": k}
        for method in ("jet", "jvp"):
            fn = jax.jit(lambda t, y, m=method, k=k: solution_derivatives(f, t, y, params, k, method=m)[-1])
            c0 = time.perf_counter()
            jax.block_until_ready(fn(t, y))
            row[f"compile_{method}_s"] = time.perf_counter() - c0
            row[method] = timing(fn, t, y, repeats=a.repeats)
        rows.append(row)
        print(
            f"{k:>2} {row['jet']['median_s'] * 1e3:>9.3f} {row['jvp']['median_s'] * 1e3:>9.3f} "
            f"{row['jet']['median_s'] / f_time['median_s']:>7.2f} {row['jvp']['median_s'] / f_time['median_s']:>7.2f} "
            f"{row['compile_jet_s']:>14.2f} {row['compile_jvp_s']:>14.2f}"
        )
    record = {
        "benchmark": "taylor_cost",
        "field": "MLP 100-256-256-100, tanh, time concatenated at each layer",
        "batch": a.batch,
        "dtype": a.dtype,
        "quantity": "time of one call computing y^(K) (all lower orders included), jit-compiled",
        "protocol": "compile first; block_until_ready; median and quartiles of repeated samples",
        "f": f_time,
        "rows": rows,
        "machine": machine_info(),
        "versions": versions(),
        "git_commit": git_commit(ROOT),
        "date": time.strftime("%Y-%m-%d"),
    }
    out = write_json(a.out, record)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
