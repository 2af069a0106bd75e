"""Training-step time against the number of devices the batch is sharded over.

Runs in one process with `--host-devices` forced CPU devices (XLA_FLAGS) unless the machine
has accelerators; times the MNIST training step (the cpu preset's model, batch 100, float64,
Dopri5 at the given tolerance, unregularised and R_2) with the batch sharded over 1, 2, 4, …
devices of one mesh. On CPU the forced devices share the same cores, so this measures the
overhead of sharding, not a speed-up. Prints a table and writes results/bench/parallel_step.json.

    python benchmarks/parallel_step.py [--host-devices 4] [--repeats 10] [--tol 1e-5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host-devices", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "parallel_step.json"))
    a = ap.parse_args(argv)
    if a.host_devices < 1 or a.repeats < 2:
        ap.error("--host-devices must be >= 1 and --repeats >= 2")
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={a.host_devices}")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from taynode import parallel
    from taynode.experiments import REGISTRY
    from taynode.objective import make_train_step
    from taynode.optim import make_optimizer
    from taynode.records import cpu_clock, cpu_use, provenance, save_record

    exp = REGISTRY["mnist"]
    data = exp.load_data(exp.config(), progress=False)
    counts = [n for n in (1, 2, 4, 8, 16) if n <= jax.device_count() and 100 % n == 0]
    rows, clock = [], cpu_clock()
    for reg in ({"reg": "none"}, {"reg": "taylor", "order": 2, "lam": 1.0}):
        cfg = exp.config("cpu", rtol=a.tol, atol=a.tol, **reg)
        x, y = exp.train_arrays(cfg, data)
        batch_np = (x[:100], y[:100])
        params = exp.init_params(cfg, jax.random.PRNGKey(0))
        opt = make_optimizer(cfg)
        for n in counts:
            mesh = parallel.make_mesh(n)
            state = parallel.replicate({"params": params, "opt_state": opt.init(params)}, mesh)
            batch = parallel.shard_batch(batch_np, mesh)
            step = make_train_step(exp, cfg, opt)
            key, i = jax.random.PRNGKey(0), jnp.asarray(0)
            t = time.perf_counter()
            _, m = jax.block_until_ready(step(state, batch, key, i))
            compile_s = time.perf_counter() - t
            times = []
            for _ in range(a.repeats):
                t = time.perf_counter()
                jax.block_until_ready(step(state, batch, key, i))
                times.append(time.perf_counter() - t)
            rows.append({"reg": cfg.regularization.name, "devices": n, "nfe": float(m["nfe"]),
                         "median_s": statistics.median(times), "q25_s": sorted(times)[len(times) // 4],
                         "q75_s": sorted(times)[(3 * len(times)) // 4], "compile_s": compile_s})
            r = rows[-1]
            print(f"{r['reg']:<18} devices {n:2d}: {r['median_s'] * 1e3:8.1f} ms/step (NFE {r['nfe']:.0f}, "
                  f"first call {compile_s:.1f} s)", flush=True)
    base = {r["reg"]: r["median_s"] for r in rows if r["devices"] == 1}
    for r in rows:
        r["vs_one_device"] = r["median_s"] / base[r["reg"]]
    out = save_record(a.out, {**provenance(), "benchmark": "parallel_step", "platform": jax.default_backend(),
                              "forced_host_devices": a.host_devices if jax.default_backend() == "cpu" else None,
                              "tol": a.tol, "repeats": a.repeats, "batch": 100, **cpu_use(clock),
                              "rows": rows})
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
