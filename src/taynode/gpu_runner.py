"""One prepared command for a GPU machine without network: `taynode gpu-runs OUT`.

It prints the device and library versions, runs the jet canary at sizes that trigger the CPU
miscompile of jaxlib 0.10.2 (`jit(sum(b @ zeros))`, and a jet R_3 of a wide MLP against nested
jvp), then trains the `gpu`-preset runs it is given, each in its own process with a time budget
(a run over budget is stopped; its checkpoints stay, `--resume` continues it), and writes every
run record into OUT with a summary `OUT/gpu_runs.json` (device, versions, canary, each run's
status and wall time). Records name the GPU (`machine.devices`).

    taynode gpu-runs results/gpu --budget 300                 # the default runs below
    taynode gpu-runs results/gpu --runs mnist:reg=none mnist:reg=taylor,order=2,lam=1

A run is `experiment:field=value,field=value` (the `gpu` preset with those overrides); runs of
experiments this installation does not have are reported as skipped. Data must be present
(the data dir or `$TAYNODE_MIRROR`): the machine has no network.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["DEFAULT_RUNS", "parse_run", "jet_canary", "gpu_runs"]

DEFAULT_RUNS = (
    "mnist:reg=none",
    "mnist:reg=taylor,order=2,lam=1",
    "mnist:reg=taylor,order=3,lam=1",
    "physionet:reg=none",
    "physionet:reg=taylor,order=2,lam=0.01",
    "ffjord_mnist:reg=none",
    "ffjord_mnist:reg=taylor,order=2,lam=0.0003",
)


def parse_run(spec: str) -> tuple[str, dict]:
    """`"mnist:reg=taylor,order=2,lam=1"` → `("mnist", {"reg": "taylor", "order": "2", "lam": "1"})`."""
    name, _, rest = spec.partition(":")
    if not name:
        raise ValueError(f"runs: {spec!r} must look like experiment:field=value,field=value")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"runs: {item!r} in {spec!r} must be field=value")
        overrides[key] = value
    return name, overrides


def jet_canary() -> dict:
    """The computations jaxlib 0.10.2 miscompiles on CPU, on this machine's default device."""
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    from .taylor import solution_derivatives

    out = {}
    for n in (64, 128, 256):
        b = jr.normal(jr.PRNGKey(0), (n, n))
        out[f"sum_b_at_zeros_{n}"] = float(jax.jit(lambda b, a: jnp.sum(b @ jnp.zeros_like(a)))(b, jnp.ones((n, n))))

    k1, k2, k3 = jr.split(jr.PRNGKey(1), 3)
    w1, w2 = jr.normal(k1, (101, 256)) / 10, jr.normal(k2, (256, 100)) / 16
    y = jr.normal(k3, (128, 100))

    def f(t, y, p):
        h = jnp.tanh(jnp.concatenate([y, jnp.broadcast_to(t, y.shape[:-1] + (1,))], -1) @ p[0])
        return h @ p[1]

    jet3 = jax.jit(lambda y: solution_derivatives(f, 0.5, y, (w1, w2), 3)[-1])(y)
    ref = solution_derivatives(f, 0.5, y, (w1, w2), 3, method="jvp")[-1]
    out["jet_r3_finite"] = bool(jnp.all(jnp.isfinite(jet3)))
    out["jet_r3_rel_err"] = float(jnp.linalg.norm(jet3 - ref) / jnp.linalg.norm(ref))
    out["ok"] = all(v == 0.0 for k, v in out.items() if k.startswith("sum_")) and out["jet_r3_finite"] and (
        out["jet_r3_rel_err"] < 1e-4)
    return out


def gpu_runs(out_dir, runs=DEFAULT_RUNS, budget_s: float = 300.0, preset: str = "gpu") -> dict:
    """Print the device, run the canary, train each run within `budget_s`; write `out_dir/gpu_runs.json`."""
    from .experiments import REGISTRY
    from .paths import ROOT
    from .records import provenance, save_record

    out_dir = Path(out_dir)
    parsed = [parse_run(s) for s in runs]  # every spec checked before anything runs
    head = provenance()
    print(json.dumps({"machine": head["machine"], "versions": head["versions"]}, indent=2), flush=True)
    canary = jet_canary()
    print(f"jet canary: {canary}", flush=True)
    rows = []
    for spec, (name, overrides) in zip(runs, parsed):
        if name not in REGISTRY:
            rows.append({"run": spec, "status": "skipped: no such experiment here"})
            print(f"{spec}: skipped (no experiment {name!r})", flush=True)
            continue
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in overrides.items()]
        cmd = [sys.executable, "-m", "taynode.cli", "train", name, "--preset", preset, *flags, "--out", str(out_dir),
               "--ckpt-root", str(out_dir / "checkpoints"), "--no-progress", "--resume"]
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget_s)
            status = "done" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
            tail = (proc.stdout + proc.stderr)[-2000:]
        except subprocess.TimeoutExpired as e:
            status = f"stopped at the {budget_s:g} s budget (checkpoints kept; --resume continues)"
            tail = ((e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""))[-2000:]
        rows.append({"run": spec, "status": status, "wall_s": time.perf_counter() - t, "log_tail": tail})
        print(f"{spec}: {status} in {rows[-1]['wall_s']:.0f} s", flush=True)
    bench = ROOT / "benchmarks" / "taylor_cost.py"
    if bench.exists():
        t = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, str(bench), "--out", str(out_dir / "taylor_cost.json")],
                                  capture_output=True, text=True, timeout=budget_s)
            status = "done" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            status = f"stopped at the {budget_s:g} s budget"
        rows.append({"run": "benchmarks/taylor_cost.py", "status": status, "wall_s": time.perf_counter() - t})
        print(f"taylor_cost benchmark: {status}", flush=True)
    summary = {**head, "benchmark": "gpu_runs", "preset": preset, "budget_s": budget_s, "canary": canary,
               "runs": rows}
    save_record(out_dir / "gpu_runs.json", summary)
    return summary
