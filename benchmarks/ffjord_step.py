"""Wall-clock of one FFJORD training step on images: the paper's single-scale MNIST CNF and reductions.

One step = value_and_grad of the mean bits/dim (uniform dequantisation, logit transform α = 1e-5,
Hutchinson trace with a Rademacher probe, Dopri5 at rtol = atol = 1e-5, discretise-then-optimise)
and one Adam update, float32, jit-compiled once per configuration. The field is ConcatConv2D
hidden-hidden-hidden-1 (3×3, softplus), as `ffjord_mnist.py`.

Two states of the field are timed, because the cost follows the number of evaluations (NFE):
`init`, the original initialisation (last layer zero: f = 0, the NFE at the start of training),
and `rough`, the last layer drawn like the others (LeCun normal): a field far from the identity,
a stand-in for the larger NFE of a model in training. `ms/NFE` (step time over forward NFE) is what
carries over to other NFE. Beside the wall-clock, the process CPU time per step is recorded: on a
shared machine it is less sensitive to other load (an idle 2-core machine needs between half of it
and all of it in wall-clock).

Images: MNIST training images from the data cache (`make data`), or random pixels if absent
(the JSON says which); 14×14 images are 2×2 block means of the 28×28 ones, rounded to 256 levels.
If a configuration's batch-20 step predicts more than `--max-step-s` seconds at its full batch,
it is measured at batch 20 only and the time scaled linearly to the full batch (marked `scaled`).

    python benchmarks/ffjord_step.py [--configs paper,c28_32_b100,c14_64_b100,c14_32_b100]
                                     [--repeats 3] [--max-step-s 120]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from taynode.cnf import CNF, ConcatConvField, bits_per_dim, dequantize, logit_transform
from taynode.machine import machine_info
from taynode.models import as_field
from taynode.records import cpu_clock, cpu_use, provenance, save_record

ROOT = Path(__file__).resolve().parents[1]

#: name → (image side, hidden channels, batch)
CONFIGS = {
    "paper": (28, (64, 64, 64), 200),
    "c28_32_b100": (28, (32, 32, 32), 100),
    "c14_64_b100": (14, (64, 64, 64), 100),
    "c14_32_b100": (14, (32, 32, 32), 100),
    "c14_16_b100": (14, (16, 16, 16), 100),
}
#: what is timed by default: config:conv implementation:field state
DEFAULT_CASES = (
    "paper:im2col:init,paper:im2col:rough,"
    "c28_32_b100:im2col:init,c14_64_b100:im2col:init,"
    "c14_32_b100:im2col:init,c14_32_b100:im2col:rough,"
    "c14_16_b100:im2col:init,c14_16_b100:conv:init"
)
PROBE_BATCH = 20


def mnist_pixels(n: int, side: int, rng: np.random.Generator):
    """`n` MNIST training images (uint8, `(n, side, side, 1)`) and where they came from."""
    try:
        from taynode.data import load_mnist

        images = load_mnist()["train_images"][:n]
        source = "MNIST training images"
    except Exception:  # any failure: fall back to random pixels, said in the record
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        source = "random pixels (MNIST not in the data cache)"
    if side == 14:
        images = np.rint(images.reshape(n, 14, 2, 14, 2).mean(axis=(2, 4))).astype(np.uint8)
        source += ", 2x2 block means"
    return images[..., None], source


def build_step(side: int, hidden, impl: str, state: str):
    module = ConcatConvField(hidden=tuple(hidden), impl=impl)
    cnf = CNF(as_field(module), (side, side, 1), "rademacher", solver="dopri5", rtol=1e-5, atol=1e-5)
    params = module.init(jr.PRNGKey(0), 0.0, jnp.zeros((1, side, side, 1), jnp.float32))
    if state == "rough":  # redraw the zero-initialised last layer like the others
        last = f"ConcatConv2D_{len(hidden)}"
        kernel = params["params"][last]["kernel"]
        fan_in = kernel.shape[0] * kernel.shape[1] * kernel.shape[2]
        params["params"][last]["kernel"] = jr.normal(jr.PRNGKey(1), kernel.shape) / np.sqrt(fan_in)
    opt = optax.adam(1e-3)
    dims = side * side

    def loss(p, pixels, key):
        k_noise, k_probe = jr.split(key)
        y, log_det = logit_transform(dequantize(k_noise, pixels, dtype=jnp.float32), 1e-5)
        out = cnf.log_prob(p, y, key=k_probe)
        return bits_per_dim(jnp.mean(out.log_prob + log_det), dims), out.nfe

    @jax.jit
    def step(p, opt_state, pixels, key):
        (value, nfe), grads = jax.value_and_grad(loss, has_aux=True)(p, pixels, key)
        updates, opt_state = opt.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, value, nfe

    return step, params, opt.init(params)


def time_step(step, params, opt_state, pixels, repeats: int, *, compiled: dict | None = None):
    """Time one training step: a first call (compiles; timed apart), then `repeats` timed calls.

    All calls use the same batch and key. `compiled`: the result of an earlier `time_step` of the
    same step and batch shape; its first call and samples are reused and no first call is made.
    """
    key = jr.PRNGKey(2)
    if compiled is None:
        t = time.perf_counter()
        out = jax.block_until_ready(step(params, opt_state, pixels, key))
        first, samples, cpu = time.perf_counter() - t, [], []
        nfe, value = int(out[3]), float(out[2])
    else:
        first, samples, cpu = compiled["first_call_s"], list(compiled["samples_s"]), list(compiled["cpu_samples_s"])
        nfe, value = compiled["nfe"], compiled["bits_per_dim"]
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(step(params, opt_state, pixels, key))
        samples.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    q25, med, q75 = np.percentile(samples, [25, 50, 75])
    return {
        "median_s": float(med),
        "q25_s": float(q25),
        "q75_s": float(q75),
        "samples_s": [float(s) for s in samples],
        "cpu_median_s": float(np.median(cpu)),
        "cpu_samples_s": [float(s) for s in cpu],
        "first_call_s": first,
        "nfe": nfe,
        "bits_per_dim": value,
    }


def parse_cases(text: str):
    cases = []
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) != 3 or parts[0] not in CONFIGS or parts[1] not in ("conv", "im2col") or parts[2] not in (
            "init",
            "rough",
        ):
            raise ValueError(
                f"--cases entries must be config:impl:state with config in {sorted(CONFIGS)}, impl conv or "
                f"im2col, state init or rough; got {item!r}"
            )
        cases.append(tuple(parts))
    return cases


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated config:impl:state")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-step-s", type=float, default=120.0)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "ffjord_step.json"))
    a = ap.parse_args(argv)
    try:
        cases = parse_cases(a.cases)
    except ValueError as err:
        ap.error(str(err))
    if a.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {a.repeats}")

    rng = np.random.default_rng(0)
    rows, clock = [], cpu_clock()
    header = (f"{'config':<12} {'image':>6} {'hidden':>9} {'batch':>5} {'impl':>6} {'state':>5} {'NFE':>4} "
              f"{'step s':>8} {'cpu s':>8} {'ms/NFE':>7} {'1st call s':>10} {'load':>5}  note")
    print(f"machine: {machine_info()['cpu']}, {os.cpu_count()} cores; jax {jax.__version__} ({jax.default_backend()})")
    print(header)
    for name, impl, state in cases:
        side, hidden, batch = CONFIGS[name]
        pixels_all, source = mnist_pixels(batch, side, rng)
        step, params, opt_state = build_step(side, hidden, impl, state)
        row = {"config": name, "image": side, "hidden": list(hidden), "batch": batch, "impl": impl, "state": state,
               "data": source, "load_before": os.getloadavg()[0]}
        # the original size is probed at batch 20 first and measured there if the full batch is too slow
        probe = time_step(step, params, opt_state, pixels_all[:PROBE_BATCH], 1) if name == "paper" else None
        if probe and probe["median_s"] * batch / PROBE_BATCH > a.max_step_s:
            # measure at batch 20 (the probe's timed call counts as the first sample), scale linearly
            measured = time_step(step, params, opt_state, pixels_all[:PROBE_BATCH], a.repeats - 1, compiled=probe)
            scale = batch / PROBE_BATCH
            row.update(measured, scaled=True, measured_batch=PROBE_BATCH, measured=dict(measured))
            row.update(median_s=measured["median_s"] * scale, q25_s=measured["q25_s"] * scale,
                       q75_s=measured["q75_s"] * scale, cpu_median_s=measured["cpu_median_s"] * scale)
            note = f"batch {PROBE_BATCH}, x{batch // PROBE_BATCH} (scaled)"
        else:
            res = time_step(step, params, opt_state, pixels_all, a.repeats)
            row.update(res, scaled=False, measured_batch=batch, probe=probe)
            note = ""
        row["ms_per_nfe"] = 1e3 * row["median_s"] / max(row["nfe"], 1)
        row["load_after"] = os.getloadavg()[0]
        rows.append(row)
        print(f"{name:<12} {side:>3}x{side:<2} {'-'.join(map(str, hidden)):>9} {batch:>5} {impl:>6} {state:>5} "
              f"{row['nfe']:>4} {row['median_s']:>8.2f} {row['cpu_median_s']:>8.2f} {row['ms_per_nfe']:>7.1f} "
              f"{row['first_call_s']:>10.1f} "
              f"{row['load_after']:>5.2f}  {note}", flush=True)

    record = {
        **provenance(),
        "benchmark": "ffjord_step",
        "quantity": "seconds per training step: value_and_grad of mean bits/dim + one Adam update",
        "model": "ConcatConv2D hidden-hidden-hidden-1, 3x3, softplus; Hutchinson (Rademacher); "
                 "dopri5 rtol=atol=1e-5; float32; RecursiveCheckpointAdjoint",
        "impls": {"conv": "XLA convolution", "im2col": "shifted copies concatenated, one matrix product"},
        "states": {"init": "original initialisation, last layer zero (f = 0)",
                   "rough": "last layer LeCun normal instead of zero"},
        "cpu_median_s": "median process CPU time (all threads) per step: less sensitive to other load than wall time",
        "protocol": "compile (first call, timed separately), block_until_ready, median and quartiles of "
                    "repeated calls on the same batch and key; a step predicted (from a batch-20 call) to "
                    "exceed max_step_s is measured at batch 20 and scaled linearly",
        "max_step_s": a.max_step_s,
        **cpu_use(clock),
        "rows": rows,
    }
    out = save_record(a.out, record)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
