"""Evaluation every experiment shares: NFE by the book's convention and the penalties of a model.

- **NFE**: forward solves of the *unregularised* dynamics at the evaluation tolerance
  (`cfg.eval_rtol`, `cfg.eval_atol`, `cfg.solver`) on the first test examples: `test_nfe` is
  the mean over joint batches of `cfg.batch_size` (the paper's convention), and
  `test_nfe_per_example` the mean over examples solved one at a time.
- **Penalties**: R_K for K in {2, 3} and the run's own K, RNODE's kinetic energy and its
  Frobenius estimate (probe drawn from `PRNGKey(0)`), integrated in one solve per chunk of
  `cfg.eval_chunk` test examples and averaged over the first `cfg.reg_examples` (a mean per
  trajectory where an example poses several, as the latent ODE's posterior samples).

**Precision.** Every reported number is computed in `cfg.eval_dtype`: a model trained in float32
(at a loose training tolerance) is judged in float64 at the paper's tolerance from the same
parameters cast to float64 (`for_evaluation`).

The compiled functions take the experiment and the config as static arguments, so repeated
evaluations of a model compile once.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from . import parallel
from .experiment import Experiment, batch_size_of, batch_slice, solve_problem
from .regularizers import JacobianFrobenius, Kinetic, TaylorRK

__all__ = ["evaluate", "final_state", "nfe_values", "whole_split_nfe", "penalty_values", "PENALTY_ORDERS",
           "cast_floats", "for_evaluation", "metrics_match", "metrics_diff", "METHOD_RTOL"]

PENALTY_ORDERS = (2, 3)
# How far two evaluations of one model may differ when R_K is computed by another Taylor method: the
# methods agree to rounding, but inside an adaptive solve at rtol 1.4e-8 a rounding-level change of the
# integrand can flip a step's acceptance and move a penalty by about the tolerance.
METHOD_RTOL = 1e-6


def cast_floats(tree, dtype):
    """Every floating-point leaf of `tree` cast to `dtype` (integer leaves untouched)."""
    dtype = jnp.dtype(dtype)
    return jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a, tree)


def for_evaluation(cfg, params):
    """`(cfg, params)` as evaluation sees them: both in `cfg.eval_dtype`.

    The returned config has `dtype = cfg.eval_dtype` (so the experiment prepares its test data in that
    dtype) and the parameters are cast to it. Idempotent; a no-op where the two dtypes agree.
    """
    if cfg.dtype == cfg.eval_dtype:
        return cfg, params
    return dataclasses.replace(cfg, dtype=cfg.eval_dtype), cast_floats(params, cfg.eval_dtype)


def _eval_solve(exp, cfg, params, batch, regularizers=()):
    problem = exp.problem(cfg, params, batch)
    regs = tuple(r(problem.part) for r in regularizers)
    return solve_problem(problem, solver=cfg.solver, rtol=cfg.eval_rtol, atol=cfg.eval_atol,
                         max_steps=cfg.max_steps, regularizers=regs)


@eqx.filter_jit
def final_state(exp: Experiment, cfg, params, batch):
    """The state at t1 of the unregularised dynamics, at the evaluation tolerance."""
    return _eval_solve(exp, cfg, params, batch).y1


@eqx.filter_jit
def _nfe(exp, cfg, params, batch, per_example):
    problem = exp.problem(cfg, params, batch)
    problem = dataclasses.replace(problem, per_example=per_example, ts=None)
    return solve_problem(problem, solver=cfg.solver, rtol=cfg.eval_rtol, atol=cfg.eval_atol,
                         max_steps=cfg.max_steps).nfe


def _penalty_makers(orders, method):
    makers = [lambda part, k=k: TaylorRK(k, method=method, part=part) for k in orders]
    return tuple(makers) + (lambda part: Kinetic(part=part), lambda part: JacobianFrobenius(jr.PRNGKey(0), part=part))


@eqx.filter_jit
def _penalty_sums(exp, cfg, params, batch, orders):
    sol = _eval_solve(exp, cfg, params, batch, _penalty_makers(orders, cfg.taylor_method))
    # the mean over the batch's trajectories (several per example in a latent ODE), times its examples
    return {k: jnp.mean(v) * batch_size_of(batch) for k, v in sol.reg.items()}


def _sharded(cfg, params, tree):
    """`(params, tree)` placed for a chunk: sharded over the run's devices where they divide it."""
    mesh = parallel.eval_mesh(cfg.devices, cfg.batch_size, batch_size_of(tree))
    return parallel.replicate(params, mesh), parallel.shard_batch(tree, mesh)


def nfe_values(exp: Experiment, cfg, params, data) -> dict:
    """Joint-batch and per-example NFE of the unregularised dynamics on the first test examples."""
    cfg, params = for_evaluation(cfg, params)
    x = exp.eval_arrays(cfg, data)
    n = min(cfg.nfe_examples, batch_size_of(x))
    bs = cfg.batch_size
    joint = [int(_nfe(exp, cfg, *_sharded(cfg, params, batch_slice(x, i, i + bs)), False))
             for i in range(0, n - bs + 1, bs)]
    m = min(cfg.nfe_per_example, batch_size_of(x))
    per_ex = [int(v) for v in parallel.to_host(_nfe(exp, cfg, *_sharded(cfg, params, batch_slice(x, 0, m)), True))]
    return {"test_nfe": float(np.mean(joint)) if joint else None, "test_nfe_batches": joint,
            "test_nfe_per_example": float(np.mean(per_ex)), "sizes": {"nfe_joint": len(joint) * bs,
                                                                      "nfe_batch": bs, "nfe_per_example": m}}


def whole_split_nfe(exp: Experiment, cfg, params, data, examples: int | None = None) -> dict:
    """The joint-batch NFE of `nfe_values`, over every test example instead of the first `cfg.nfe_examples`.

    The test examples `exp.eval_arrays` gives (all of them, or the first `examples`) in consecutive joint
    batches of `cfg.batch_size`, the unregularised dynamics at the evaluation tolerance in the evaluation
    dtype, as `nfe_values` solves them; a last batch with fewer examples is solved too and reported apart
    (a smaller joint system needs no more steps than its batch would, so it is not averaged in).

    **Returns** `{"batches": [NFE of each full batch], "batch": batch size, "examples": examples covered,
    "remainder": {"examples": k, "nfe": NFE} or None, "mean", "sd", "min", "max"}` (over the full
    batches; `sd` the population standard deviation).

    **Raises** `ValueError` when `examples` is not a positive integer, exceeds the test split, or is
    smaller than one batch.
    """
    if examples is not None and (isinstance(examples, bool) or not isinstance(examples, (int, np.integer))
                                 or examples < 1):
        raise ValueError(f"examples must be a positive integer (or None: the whole test split), got {examples!r}")
    cfg, params = for_evaluation(cfg, params)
    # eval_arrays takes as many test examples as the largest of its count fields (at most the split)
    every = exp.eval_arrays(dataclasses.replace(cfg, nfe_examples=np.iinfo(np.int32).max), data)
    available = batch_size_of(every)
    n = available if examples is None else int(examples)
    if n > available:
        raise ValueError(f"examples={n} exceeds the {available} test examples; pass at most {available}")
    bs = cfg.batch_size
    if n < bs:
        raise ValueError(f"examples={n} is smaller than one batch ({bs}); pass at least {bs}")
    full = n - n % bs
    joint = [int(_nfe(exp, cfg, *_sharded(cfg, params, batch_slice(every, i, i + bs)), False))
             for i in range(0, full, bs)]
    rest = None
    if full < n:
        rest = {"examples": n - full,
                "nfe": int(_nfe(exp, cfg, *_sharded(cfg, params, batch_slice(every, full, n)), False))}
    arr = np.asarray(joint, float)
    return {"batches": joint, "batch": bs, "examples": n, "remainder": rest, "mean": float(arr.mean()),
            "sd": float(arr.std()), "min": int(arr.min()), "max": int(arr.max())}


def penalty_values(exp: Experiment, cfg, params, data, orders=None, n: int | None = None) -> dict:
    """R_K for each K in `orders` (default {2, 3} and the run's K), kinetic and Frobenius.

    Means over the first `n` test examples (default `cfg.reg_examples`), solved in joint
    chunks of `cfg.eval_chunk` at the evaluation tolerance. Returns
    `{"R2": ..., "R3": ..., "kinetic": ..., "frobenius": ..., "n": n}`.
    """
    cfg, params = for_evaluation(cfg, params)
    orders = tuple(sorted(set(PENALTY_ORDERS) | {cfg.order})) if orders is None else tuple(orders)
    if not orders or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in orders):
        raise ValueError(f"orders must be integers >= 1, got {orders}")
    orders = tuple(sorted({int(k) for k in orders}))
    x = exp.eval_arrays(cfg, data)
    n = cfg.reg_examples if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    n = min(n, batch_size_of(x))
    sums: dict[str, float] = {}
    for i in range(0, n, cfg.eval_chunk):
        chunk = _sharded(cfg, params, batch_slice(x, i, min(i + cfg.eval_chunk, n)))
        for k, v in _penalty_sums(exp, cfg, *chunk, orders).items():
            sums[k] = sums.get(k, 0.0) + float(v)
    return {**{k: v / n for k, v in sums.items()}, "n": n}


def evaluate(exp: Experiment, cfg, params, data) -> dict:
    """Every reported metric of a model (in `cfg.eval_dtype`): the experiment's task metrics, NFE and penalties."""
    cfg, params = for_evaluation(cfg, parallel.local_copy(params))  # several processes: each evaluates its copy
    metrics = dict(exp.metrics(cfg, params, data))
    nfe = nfe_values(exp, cfg, params, data)
    pen = penalty_values(exp, cfg, params, data)
    sizes = {**metrics.pop("eval_sizes", {}), **nfe.pop("sizes"), "reg": pen.pop("n")}
    return {**metrics, **nfe, "penalties": pen, "eval_sizes": sizes,
            "eval_tol": {"rtol": cfg.eval_rtol, "atol": cfg.eval_atol, "solver": cfg.solver}}


def metrics_match(a, b, rtol: float = 0.0) -> bool:
    """Whether two metric trees (as JSON loads them) agree: the same keys and list lengths, equal integers
    and strings, and floats equal within `rtol` relative (0: exactly)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(metrics_match(a[k], b[k], rtol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(metrics_match(x, y, rtol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return a == b or abs(a - b) <= rtol * max(abs(a), abs(b))
    return type(a) is type(b) and a == b


def metrics_diff(a, b, rtol: float = 0.0, path: str = "") -> list[dict]:
    """Where two metric trees disagree by `metrics_match`'s rule: one `{"key", "got", "recorded", "rel"}` per
    differing leaf (`key` a dotted path, `[i]` for a list index; `rel` the relative difference of two numbers,
    else None), a missing or extra key as one entry with `got` or `recorded` None. Empty exactly when
    `metrics_match(a, b, rtol)`."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            key = f"{path}.{k}" if path else str(k)
            if k not in b or k not in a:
                out.append({"key": key, "got": a.get(k), "recorded": b.get(k), "rel": None})
            else:
                out += metrics_diff(a[k], b[k], rtol, key)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in metrics_diff(x, y, rtol, f"{path}[{i}]")]
    if metrics_match(a, b, rtol):
        return []
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    rel = abs(a - b) / max(abs(a), abs(b)) if numbers and max(abs(a), abs(b)) > 0 else None
    return [{"key": path, "got": a, "recorded": b, "rel": rel}]
