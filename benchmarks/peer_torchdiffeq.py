"""One unregularised MNIST ODE-Net training step in taynode and in torchdiffeq, timed against each other.

The step is the paper's MNIST model (`taynode.experiments.mnist`): z(0) = pixels/255 of a batch
of training images, dynamics sigmoid → concat t → Dense(100) → sigmoid → concat t → Dense(784) on
t ∈ [0, 1] (the batch solved as one system), head sigmoid → Dense(10), softmax cross-entropy,
one Adam update (lr 1e-3). Both frameworks run it with Dopri5 in float64 at rtol = atol = 1.4e-8
(`--dtype float64`, the default) or in float32 at 1e-5 (`--dtype float32`, the training solves
of the trained tier)
from the same parameters (those of a committed run record, so the dynamics are a trained
model's) on the same batch:

- taynode: its jitted training step (`make_train_step`); the gradient backpropagates through the
  solver's operations (diffrax `RecursiveCheckpointAdjoint`, discretise-then-optimise);
- torchdiffeq `odeint`: autograd through the solver's operations (discretise-then-optimise);
- torchdiffeq `odeint_adjoint` (unless `--no-adjoint`): the continuous adjoint, solved backwards
  at the same tolerances (torchdiffeq's default adjoint options).

Each torch solver is timed at every thread count of `--threads` (default: the cores this process
may use, and 1); JAX uses all cores. Unless the environment sets `OMP_WAIT_POLICY`, it is set to
PASSIVE before torch loads: with OpenMP's spinning wait, torch at 2 threads on a 2-core machine
where another process keeps one core busy runs the step many times slower (seconds, not a
fraction of a second). Run with `OMP_WAIT_POLICY=ACTIVE` to time torch's default.

First the forward results are compared (z(1), the loss, the gradient and the updated parameters);
then taynode's first call (jit compilation and one step) and a torch warm-up call are timed on their
own, and the frameworks are interleaved over `--rounds` rounds of `--calls` calls each, every call
one value-and-gradient and one Adam update from the same starting state. Reported: the median per
framework, the ratio taynode ÷ torch from the same run, the forward NFE of each (taynode's exact
count; torchdiffeq's counted in the dynamics' forward) and the time per NFE. Prints a table and
writes results/bench/peer_torchdiffeq.json. Needs the `bench` extra (`pip install -e .[bench]`).

    python benchmarks/peer_torchdiffeq.py [--rounds 5] [--calls 5] [--threads N ...] [--no-adjoint] [--dtype float32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# OpenMP threads that spin while they wait (torch's default) slow torch down many times over when another
# process holds a core; they sleep instead unless the environment chooses otherwise (recorded)
_OMP_POLICY_GIVEN = os.environ.get("OMP_WAIT_POLICY")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import jax.tree_util as jtu  # noqa: E402
import numpy as np  # noqa: E402

from taynode.experiment import solve_problem  # noqa: E402
from taynode.experiments import REGISTRY  # noqa: E402
from taynode.objective import make_loss, make_train_step  # noqa: E402
from taynode.optim import make_optimizer  # noqa: E402
from taynode.records import cpu_clock, cpu_use, provenance, save_record  # noqa: E402
from taynode.runner import load_run  # noqa: E402
from taynode.solve import PAPER_TOL  # noqa: E402
from taynode.train import epoch_order  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECORD = ROOT / "results" / "mnist" / "short" / "mnist_cpu_none_seed0.json"
LR = 1e-3
FLOAT32_TOL = 1e-5  # the training tolerance of the trained tier (float32 cannot honour 1.4e-8)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _import_torch():
    try:
        import torch
        import torchdiffeq
    except ImportError as e:
        raise SystemExit(f"error: this benchmark needs torch and torchdiffeq ({e}): pip install -e .[bench]") from None
    return torch, torchdiffeq


def _dense(p, dtype=np.float64):
    """(kernel (in, out), bias) of a flax Dense as numpy arrays of `dtype`."""
    return np.array(p["kernel"], dtype), np.array(p["bias"], dtype)


def build_torch(torch, torchdiffeq, params, rtol, atol, dtype="float64"):
    """The torch ODE-Net with the flax parameters copied in; returns (net, dynamics)."""
    nn = torch.nn

    class Dynamics(nn.Module):
        """sigmoid → Linear on [h, t] → sigmoid → Linear on [h, t]; counts its evaluations."""

        def __init__(self, dim, hidden):
            super().__init__()
            self.fc1 = nn.Linear(dim + 1, hidden)
            self.fc2 = nn.Linear(hidden + 1, dim)
            self.nfe = 0

        def forward(self, t, y):
            self.nfe += 1
            tt = t.expand(y.shape[0], 1)
            h = torch.sigmoid(self.fc1(torch.cat([torch.sigmoid(y), tt], dim=-1)))
            return self.fc2(torch.cat([h, tt], dim=-1))

    class ODENet(nn.Module):
        def __init__(self, dim, hidden, classes):
            super().__init__()
            self.dyn = Dynamics(dim, hidden)
            self.head = nn.Linear(dim, classes)
            self.register_buffer("t", torch.tensor([0.0, 1.0], dtype=getattr(torch, dtype)))

        def forward(self, x, adjoint=False):
            solve = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
            z1 = solve(self.dyn, x, self.t, method="dopri5", rtol=rtol, atol=atol)[-1]
            return z1, self.head(torch.sigmoid(z1))

    k1, b1 = _dense(params["dyn"]["params"]["ConcatDense_0"]["Dense_0"], dtype)
    k2, b2 = _dense(params["dyn"]["params"]["ConcatDense_1"]["Dense_0"], dtype)
    kh, bh = _dense(params["head"]["params"]["Dense_0"], dtype)
    dim, hidden, classes = k2.shape[1], k1.shape[1], kh.shape[1]
    if k1.shape[0] != dim + 1 or k2.shape[0] != hidden + 1 or kh.shape[0] != dim:
        raise ValueError(f"parameters are not those of the MNIST ODE-Net: kernels {k1.shape}, {k2.shape}, {kh.shape}")
    net = ODENet(dim, hidden, classes).to(getattr(torch, dtype))
    with torch.no_grad():
        for layer, (k, b) in ((net.dyn.fc1, (k1, b1)), (net.dyn.fc2, (k2, b2)), (net.head, (kh, bh))):
            layer.weight.copy_(torch.from_numpy(k.T.copy()))  # flax kernel (in, out) → torch weight (out, in)
            layer.bias.copy_(torch.from_numpy(b))
    return net, net.dyn


def torch_grads_as_flax(net):
    """The gradients of the torch parameters in the flax layout (for the comparison)."""
    def d(layer):
        return {"kernel": layer.weight.grad.detach().numpy().T, "bias": layer.bias.grad.detach().numpy()}
    return {"dyn": {"params": {"ConcatDense_0": {"Dense_0": d(net.dyn.fc1)},
                               "ConcatDense_1": {"Dense_0": d(net.dyn.fc2)}}},
            "head": {"params": {"Dense_0": d(net.head)}}}


def torch_params_as_flax(net):
    def d(layer):
        return {"kernel": layer.weight.detach().numpy().T.copy(), "bias": layer.bias.detach().numpy().copy()}
    return {"dyn": {"params": {"ConcatDense_0": {"Dense_0": d(net.dyn.fc1)},
                               "ConcatDense_1": {"Dense_0": d(net.dyn.fc2)}}},
            "head": {"params": {"Dense_0": d(net.head)}}}


def max_abs_diff(a, b):
    """max |a − b| over all leaves of two pytrees of arrays of the same structure."""
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jtu.tree_leaves(a), jtu.tree_leaves(b), strict=True))


def rel_diff(a, b):
    """max |a − b| / max |b| over all leaves of two pytrees of arrays."""
    return max_abs_diff(a, b) / max(float(np.max(np.abs(np.asarray(y)))) for y in jtu.tree_leaves(b))


def _notes(cores, own_cores, other_cores):
    text = ("load_before/load_after are the 1-, 5- and 15-minute load averages and include this process; "
            "own_cores_used and other_processes_cores_used are the mean number of cores busy with this process and "
            "with everything else during the timed calls (/proc/stat); the frameworks were interleaved, so both "
            "saw the same background load")
    if other_cores is not None and other_cores > 0.25:
        text += (f"; other processes kept {other_cores:.2f} of the {cores} cores busy during the timed calls, so the "
                 "absolute times are higher than on an idle machine and the ratio is that of a shared machine")
    return text


def main(argv=None):
    cores = len(os.sched_getaffinity(0))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", default=str(DEFAULT_RECORD), help="MNIST run record whose parameters are used "
                    "(default: the cpu unregularised seed-0 run)")
    ap.add_argument("--rounds", type=_positive_int, default=5, help="interleaved rounds over the frameworks")
    ap.add_argument("--calls", type=_positive_int, default=5, help="timed calls per framework and round")
    ap.add_argument("--threads", type=_positive_int, nargs="+", default=[cores, 1] if cores > 1 else [1],
                    help="torch intra-op thread counts, one torch row each (default: the cores this process may "
                    "use, and 1)")
    ap.add_argument("--no-adjoint", action="store_true", help="leave out the torchdiffeq odeint_adjoint rows")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                    help="float64 at rtol = atol = 1.4e-8 (the paper's) or float32 at 1e-5 (the trained tier's "
                    "training)")
    ap.add_argument("--out", default=None, help="record path (default results/bench/peer_torchdiffeq.json, or "
                    "peer_torchdiffeq_float32.json for --dtype float32)")
    a = ap.parse_args(argv)
    a.out = a.out or str(ROOT / "results" / "bench" / ("peer_torchdiffeq.json" if a.dtype == "float64"
                                                        else "peer_torchdiffeq_float32.json"))
    threads = list(dict.fromkeys(a.threads))
    torch, torchdiffeq = _import_torch()

    exp = REGISTRY["mnist"]
    record = Path(a.record)
    try:
        base_cfg, params, _ = load_run(exp, record)
    except ValueError as e:
        ap.error(str(e))
    tol = PAPER_TOL if a.dtype == "float64" else FLOAT32_TOL
    cfg = exp.config(base_cfg.preset, reg="none", seed=0, solver="dopri5", rtol=tol, atol=tol, dtype=a.dtype,
                     eval_dtype="float64", optimizer="adam", lr=LR, lr_values=(), lr_boundaries=())
    params = jtu.tree_map(lambda x: jnp.asarray(x, a.dtype), params)
    data = exp.load_data(cfg, progress=False)
    arrays = exp.train_arrays(cfg, data)
    idx = epoch_order(cfg.train_size, 0, 0)[: cfg.batch_size]
    x_np, y_np = (np.array(v[idx]) for v in arrays)
    batch = (jnp.asarray(x_np), jnp.asarray(y_np))
    key = jr.PRNGKey(0)
    step_i = jnp.asarray(0, jnp.int32)

    # taynode: the training step, and (for the comparison) the forward solve and the gradient
    opt = make_optimizer(cfg)
    state = {"params": params, "opt_state": opt.init(params)}
    step = make_train_step(exp, cfg, opt)
    t = time.perf_counter()
    new_state, m = jax.block_until_ready(step(state, batch, key, step_i))
    first_call_s = time.perf_counter() - t
    tay_nfe = float(m["nfe"])
    tay_loss = float(m["loss"])
    z1_fn = jax.jit(lambda p, x: solve_problem(exp.problem(cfg, p, (x, None)), solver=cfg.solver, rtol=cfg.rtol,
                                               atol=cfg.atol, max_steps=cfg.max_steps).y1)
    tay_z1 = np.asarray(z1_fn(params, batch[0]))
    grad_fn = jax.jit(jax.grad(lambda p: make_loss(exp, cfg)(p, batch, key, step_i)[0]))
    tay_grads = jax.device_get(grad_fn(params))
    tay_new_params = jax.device_get(new_state["params"])

    # torchdiffeq: the same network, parameters, batch and optimiser
    net, dyn = build_torch(torch, torchdiffeq, params, cfg.rtol, cfg.atol, cfg.dtype)
    start = [p.detach().clone() for p in net.parameters()]
    x_t, y_t = torch.from_numpy(x_np.astype(a.dtype)), torch.from_numpy(y_np.astype(np.int64))

    def torch_reset(n_threads):
        torch.set_num_threads(n_threads)
        with torch.no_grad():
            for p, p0 in zip(net.parameters(), start):
                p.copy_(p0)
            (x_t @ x_t.T).sum()  # start the thread pool at this size outside the timer
        dyn.nfe = 0
        return torch.optim.Adam(net.parameters(), lr=LR)

    def torch_step(topt, adjoint):
        """One value-and-gradient and one Adam update; returns (z1, loss, forward NFE, total NFE)."""
        topt.zero_grad(set_to_none=True)
        z1, logits = net(x_t, adjoint)
        loss = torch.nn.functional.cross_entropy(logits, y_t)
        nfe_forward = dyn.nfe
        loss.backward()
        topt.step()
        return z1, loss, nfe_forward, dyn.nfe

    solvers = {"odeint": False} if a.no_adjoint else {"odeint": False, "odeint_adjoint": True}
    variants = {f"torchdiffeq {s}, {n} thr": (adj, n) for s, adj in solvers.items() for n in threads}
    checks, warmup, torch_nfe = {}, {}, {}
    for name, (adjoint, n_threads) in variants.items():
        topt = torch_reset(n_threads)
        t = time.perf_counter()
        z1, loss, nfe_forward, nfe_total = torch_step(topt, adjoint)
        warmup[name] = {"s": time.perf_counter() - t, "threads": torch.get_num_threads()}
        torch_nfe[name] = {"forward": nfe_forward, "forward_and_backward": nfe_total}
        torch_z1, torch_loss = z1.detach().numpy(), loss.item()
        # after the step, the .grad fields hold the gradient and the parameters are the updated ones
        checks[name] = {
            "z1_max_abs_diff": max_abs_diff(torch_z1, tay_z1),
            "z1_rel_diff": rel_diff(torch_z1, tay_z1),
            "loss_taynode": tay_loss, "loss_torch": torch_loss,
            "loss_rel_diff": abs(torch_loss - tay_loss) / abs(tay_loss),
            "grad_rel_diff": rel_diff(torch_grads_as_flax(net), tay_grads),
            "updated_params_max_abs_diff_over_lr": max_abs_diff(torch_params_as_flax(net), tay_new_params) / LR,
        }
        c = checks[name]
        print(f"{name}: z(1) rel diff {c['z1_rel_diff']:.2e}, loss {torch_loss:.10f} vs taynode {tay_loss:.10f} "
              f"(rel {c['loss_rel_diff']:.2e}), grad rel diff {c['grad_rel_diff']:.2e}, NFE {nfe_forward} "
              f"(taynode {tay_nfe:.0f}), warm-up call {warmup[name]['s']:.2f} s", flush=True)

    def time_taynode():
        t = time.perf_counter()
        jax.block_until_ready(step(state, batch, key, step_i))
        return time.perf_counter() - t

    def time_torch(adjoint, n_threads):
        topt = torch_reset(n_threads)
        t = time.perf_counter()
        torch_step(topt, adjoint)
        return time.perf_counter() - t

    timers = {"taynode (diffrax)": time_taynode}
    timers.update({n: (lambda v=v: time_torch(*v)) for n, v in variants.items()})
    time_taynode()  # one call after compilation, not timed
    samples = {n: [] for n in timers}
    load_before = os.getloadavg()
    clock, t_run = cpu_clock(), time.perf_counter()
    for _ in range(a.rounds):
        for n, timer in timers.items():
            samples[n].append([timer() for _ in range(a.calls)])
    timed_wall_s = time.perf_counter() - t_run
    use = cpu_use(clock)
    load_after = os.getloadavg()
    own_cores, other_cores = use["own_cores_used"], use["other_processes_cores_used"]

    rows = []
    for n in timers:
        flat = [s for r in samples[n] for s in r]
        med = statistics.median(flat)
        nfe = tay_nfe if n in ("taynode (diffrax)",) else float(torch_nfe[n]["forward"])
        row = {"framework": n, "median_step_s": med, "min_step_s": min(flat), "max_step_s": max(flat),
               "nfe_forward": nfe, "s_per_forward_nfe": med / nfe,
               "round_medians_s": [statistics.median(r) for r in samples[n]], "samples_s": samples[n]}
        if n in variants:
            adjoint, n_threads = variants[n]
            row.update(solver="odeint_adjoint" if adjoint else "odeint", torch_threads=warmup[n]["threads"],
                       warmup_call_s=warmup[n]["s"], nfe_forward_and_backward=torch_nfe[n]["forward_and_backward"],
                       forward_check=checks[n])
        else:
            row.update(first_call_s=first_call_s, compile_s_estimate=first_call_s - med)
        rows.append(row)
    tay = rows[0]
    for r in rows:
        r["taynode_over_this"] = tay["median_step_s"] / r["median_step_s"]

    print(f"\nMNIST ODE-Net training step, batch {cfg.batch_size}, {cfg.dtype}, dopri5 at rtol=atol={cfg.rtol:g}, "
          f"parameters of {record.name}; {a.rounds} rounds x {a.calls} calls; OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY')}; load {load_before[0]:.2f} -> {load_after[0]:.2f}")
    if other_cores is not None:
        print(f"during the timed calls this process used {own_cores:.2f} of {cores} cores, other processes "
              f"{other_cores:.2f}")
    width = max(len(n) for n in timers)
    print(f"{'framework':<{width}} {'NFE':>5} {'+adjoint':>8} {'median (s)':>11} {'min (s)':>9} {'ms/NFE':>8} "
          f"{'taynode/this':>13}")
    for r in rows:
        extra = r.get("nfe_forward_and_backward", r["nfe_forward"]) - r["nfe_forward"]
        print(f"{r['framework']:<{width}} {r['nfe_forward']:5.0f} {extra:8.0f} {r['median_step_s']:11.4f} "
              f"{r['min_step_s']:9.4f} {1e3 * r['s_per_forward_nfe']:8.2f} {r['taynode_over_this']:13.3f}")
    print("NFE: forward solve; +adjoint: evaluations of the backward (adjoint) solve; ms/NFE: median / forward NFE; "
          "taynode/this: taynode's median over the row's")
    print(f"taynode first call (jit compile + one step): {first_call_s:.1f} s")

    out = save_record(a.out, {
        **provenance(), "benchmark": "peer_torchdiffeq", "experiment": exp.name, "params_of": record.name,
        "config": {"preset": cfg.preset, "batch_size": cfg.batch_size, "solver": cfg.solver, "rtol": cfg.rtol,
                   "atol": cfg.atol, "dtype": cfg.dtype, "optimizer": "adam", "lr": LR, "t_span": [0.0, 1.0],
                   "batch": "the first batch of epoch 0 of seed 0 (taynode.train.epoch_order)"},
        "peer": {"torch": torch.__version__, "torchdiffeq": torchdiffeq.__version__, "torch_threads": threads,
                 "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                 "omp_wait_policy_set_by_benchmark": _OMP_POLICY_GIVEN is None},
        "protocol": (f"forward check and warm-up first (taynode's first call compiles: first_call_s); then {a.rounds} "
                     f"rounds interleaving the frameworks, {a.calls} calls each per round, every call one "
                     "value-and-gradient and one Adam update from the same parameters and a fresh optimiser state "
                     "(taynode: the jitted train step, block_until_ready on its whole output; torch: parameters "
                     "reset, thread count set and a new torch.optim.Adam before the timer starts); median of all "
                     "calls"),
        "nfe_convention": ("forward solve only; taynode: its exact count (2 + 6 x attempted steps for dopri5); "
                           "torchdiffeq: evaluations of the dynamics module during the forward solve (the same "
                           "convention: f(t0), one for the initial step, 6 per attempted step). The initial step "
                           "rule, step-size controller and end of the solve (torchdiffeq steps past t1 and "
                           "interpolates, diffrax clips the last step to t1) differ, so the NFE may differ; "
                           "nfe_forward_and_backward adds the adjoint solve's evaluations for odeint_adjoint"),
        "ratio_taynode_over_torch": {r["framework"]: r["taynode_over_this"] for r in rows[1:]},
        "load_before": list(load_before), "load_after": list(load_after), "timed_wall_s": timed_wall_s,
        "cores": cores, "own_cores_used": own_cores, "other_processes_cores_used": other_cores,
        "notes": _notes(cores, own_cores, other_cores),
        "rows": rows,
    })
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
