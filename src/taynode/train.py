"""A small, resumable training loop shared by the experiments.

- Steps are indexed globally; epoch `e` visits the training set in the order
  `np.random.default_rng([seed, e]).permutation(n)`, and step `s` uses the key
  `fold_in(PRNGKey(seed), s)`. A run resumed from a checkpoint therefore continues exactly as
  the uninterrupted run would have.
- Checkpoints are written with orbax (atomically: a run killed mid-save leaves the previous
  checkpoint intact) every `checkpoint_every` steps and at the end, together with the history
  and the accumulated training time.
- A non-finite loss or gradient, or a training solve that fails (it reaches its `max_steps`), stops
  the run with `TrainingDiverged`; no checkpoint is written after it, so the last good one is kept.
- Model selection (`select`): the parameters of the evaluation with the lowest value of one
  metric are kept, and checkpointed with their step and metrics, so a resumed run selects what
  the uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from ._checks import check_ints

__all__ = ["LoopConfig", "TrainingDiverged", "fit", "epoch_order", "latest_checkpoint", "restore_checkpoint"]


class TrainingDiverged(RuntimeError):
    """The loss became non-finite, or a training solve failed; the message names the step and the
    checkpoint kept.

    `cause`: `"loss"` (non-finite loss), `"gradient"` (finite loss, non-finite gradient) or `"solver"`
    (the step's solve reached its `max_steps`); `step`, `epoch`: where; `loss`: the step's loss (None for
    a solver failure); `last_good`: the step of the newest checkpoint kept (None if none was written);
    `resumed_from`: the checkpoint step this run (re)started from (None for a run from scratch)."""

    def __init__(self, message: str, *, step: int | None = None, epoch: int | None = None,
                 loss: float | None = None, last_good: int | None = None, cause: str = "loss",
                 resumed_from: int | None = None):
        super().__init__(message)
        self.step, self.epoch, self.loss, self.last_good, self.cause = step, epoch, loss, last_good, cause
        self.resumed_from = resumed_from


def equinox_message(error: BaseException) -> str | None:
    """The one-line message of an equinox run-time error raised inside a compiled function (its text
    also holds stack traces and advice), else None."""
    found = re.search(r"EquinoxRuntimeError: (.+)", str(error))
    return found.group(1).strip() if found else None


def solver_failure(error: BaseException) -> str | None:
    """The one-line reason when `error` is a compiled solve's max_steps failure (`taynode.solve`'s
    run-time check), else None."""
    line = equinox_message(error)
    return line if line and "max_steps" in line else None


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """How long to train and how often to log, evaluate and checkpoint (all in steps)."""

    num_steps: int
    steps_per_epoch: int
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    checkpoint_every: int = 100
    max_to_keep: int = 2

    def __post_init__(self):
        check_ints(self, ("num_steps", "steps_per_epoch", "log_every", "checkpoint_every", "max_to_keep"))
        check_ints(self, ("eval_every",), minimum=0)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of `range(n)` that epoch `epoch` visits (deterministic)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def _manager(ckpt_dir: Path, max_to_keep: int) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        Path(ckpt_dir).resolve(),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
    )


def latest_checkpoint(ckpt_dir) -> int | None:
    """The step of the newest complete checkpoint in `ckpt_dir`, or None."""
    if not Path(ckpt_dir).exists():
        return None
    with _manager(ckpt_dir, 2) as mngr:
        return mngr.latest_step()


def restore_checkpoint(ckpt_dir, template, step: int | None = None):
    """(state, meta) from `ckpt_dir` (newest step unless `step`); `template` gives the structure.

    Where the checkpoint holds selected parameters (`fit(..., select=...)`), `meta["best"]` has their
    `step`, `value` and `metrics`, and `meta["best"]["params"]` the parameters (`template["params"]`
    gives their structure).
    """
    with _manager(ckpt_dir, 2) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {ckpt_dir}: train first or pass the right directory")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        out = mngr.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        )
        meta = out["meta"]
        if meta.get("best") is not None:
            best = mngr.restore(step, args=ocp.args.Composite(
                best=ocp.args.StandardRestore({"params": abstract["params"]})))
            meta["best"]["params"] = best["best"]["params"]
    return out["state"], meta


def fit(
    state,
    train_step: Callable,
    get_batch: Callable[[np.ndarray], object],
    n_train: int,
    batch_size: int,
    loop: LoopConfig,
    *,
    ckpt_dir=None,
    resume: bool = False,
    eval_fn: Callable | None = None,
    select: str | None = None,
    progress: bool = True,
    desc: str = "train",
):
    """Run `loop.num_steps` steps of `state, metrics = train_step(state, batch, key, step)`.

    **Arguments**
    - `state`: pytree of arrays (parameters, optimiser state, …).
    - `train_step`: jitted step; `step` is the global step index (an int32 array);
      `metrics` must contain `"loss"` and may contain `"nfe"` and other scalars (all logged).
    - `get_batch(indices)`: the batch for these training-set indices.
    - `n_train`, `batch_size`: the training-set size and batch size (drop-last batching).
    - `loop`: a `LoopConfig`.
    - `ckpt_dir`: directory for orbax checkpoints (None: no checkpoints).
    - `resume`: continue from the newest checkpoint in `ckpt_dir` if there is one.
    - `eval_fn(state) -> dict`: evaluated every `loop.eval_every` steps and at the end.
    - `select`: a key of `eval_fn`'s metrics (e.g. `"val_loss"`): keep the parameters of the
      evaluation where it is lowest (the first such on ties), checkpointed with them (`state`
      must then be a dict with `"params"`).

    **Returns** `(state, history, info)`: the final state; the history (a list of dicts: a
    training entry every `log_every` steps, an evaluation entry whenever `eval_fn` ran);
    `info` with `train_time_s` (excluding evaluation and checkpointing), `iter_time_s`,
    `resumed_from`, `final_eval`, and `best` (with `select`: `{"step", "value", "metrics",
    "params"}` of the selected evaluation, None if no evaluation reported `select`).

    **Raises** `TrainingDiverged` on a non-finite loss.
    """
    if n_train < batch_size:
        raise ValueError(f"batch_size ({batch_size}) must not exceed the training-set size ({n_train})")
    history: list[dict] = []
    train_time = 0.0
    start = 0
    mngr = _manager(ckpt_dir, loop.max_to_keep) if ckpt_dir is not None else None
    resumed_from = None
    best = None  # the selected evaluation: {"step", "value", "metrics", "params"}
    if resume and mngr is not None and mngr.latest_step() is not None:
        start = mngr.latest_step()
        state, meta = restore_checkpoint(ckpt_dir, state, start)
        best = meta.get("best")
        history = meta["history"]
        train_time = meta["train_time_s"]
        timed_steps = meta["timed_steps"]
        resumed_from = start
    else:
        timed_steps = 0
    last_good = resumed_from
    base_key = jax.random.PRNGKey(loop.seed)

    def save(step):
        nonlocal last_good
        if mngr is None:
            return
        meta = {"history": history, "train_time_s": train_time, "timed_steps": timed_steps, "step": step,
                "best": None if best is None else {k: v for k, v in best.items() if k != "params"}}
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if best is not None:
            items["best"] = ocp.args.StandardSave({"params": best["params"]})
        mngr.save(step, args=ocp.args.Composite(**items), force=True)
        mngr.wait_until_finished()
        last_good = step

    def evaluate(step):
        nonlocal best
        if eval_fn is not None:
            t = time.perf_counter()
            metrics = eval_fn(state)
            history.append({"step": step, "eval": metrics, "eval_time_s": time.perf_counter() - t})
            value = metrics.get(select) if select is not None else None
            if value is not None and (best is None or value < best["value"]):
                best = {"step": step, "value": value, "metrics": metrics, "params": state["params"]}
            return metrics
        return None

    bar = tqdm(total=loop.num_steps, initial=start, desc=desc, disable=not progress, dynamic_ncols=True)
    order = None
    step = start
    try:
        while step < loop.num_steps:
            epoch, pos = divmod(step, loop.steps_per_epoch)
            if pos == 0 or order is None:
                order = epoch_order(n_train, loop.seed, epoch)
            idx = order[pos * batch_size : (pos + 1) * batch_size]
            batch = get_batch(idx)
            key = jax.random.fold_in(base_key, step)
            t0 = time.perf_counter()
            where = f"step {last_good} in {ckpt_dir}" if last_good is not None else "none was written"
            try:
                state_new, metrics = train_step(state, batch, key, jnp.asarray(step, jnp.int32))
                loss = float(metrics["loss"])  # blocks until the step is done
            except RuntimeError as e:
                reason = solver_failure(e)
                if reason is None:
                    raise
                raise TrainingDiverged(
                    f"the training solve failed at step {step} (epoch {epoch}): {reason}; the last good "
                    f"checkpoint ({where}) is kept", step=step, epoch=epoch, last_good=last_good, cause="solver",
                    resumed_from=resumed_from,
                ) from None
            dt = time.perf_counter() - t0
            if math.isfinite(loss) and float(metrics.get("grads_finite", 1.0)) == 0.0:
                raise TrainingDiverged(
                    f"the gradient became non-finite at step {step} (epoch {epoch}; loss {loss:.6g}); the update "
                    f"is not applied and the last good checkpoint ({where}) is kept: lower the learning rate or "
                    "λ, or tighten the solver tolerance",
                    step=step, epoch=epoch, loss=loss, last_good=last_good, cause="gradient", resumed_from=resumed_from,
                )
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss} at step {step} (epoch {epoch}); the last good checkpoint ({where}) is kept: "
                    "lower the learning rate or λ, or tighten the solver tolerance",
                    step=step, epoch=epoch, loss=loss, last_good=last_good, resumed_from=resumed_from,
                )
            state = state_new
            if step > start:  # the first step of a (re)start includes compilation
                train_time += dt
                timed_steps += 1
            step += 1
            bar.update(1)
            if step % loop.log_every == 0 or step == loop.num_steps:
                entry = {"step": step, "epoch": epoch, **{k: float(v) for k, v in metrics.items()}}
                history.append(entry)
                bar.set_postfix({k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in entry.items()
                                 if k in ("loss", "nfe", "reg")})
            if loop.eval_every and step % loop.eval_every == 0 and step != loop.num_steps:
                evaluate(step)
            if step % loop.checkpoint_every == 0 and step != loop.num_steps:
                save(step)
        if resumed_from is not None and resumed_from >= loop.num_steps:
            # training had finished (a later stage, e.g. the run's metrics, was interrupted): its final
            # evaluation and checkpoint are already there
            final_eval = next((h["eval"] for h in reversed(history) if "eval" in h), None)
            if final_eval is None:
                final_eval = evaluate(step)
        else:
            final_eval = evaluate(step)
            save(step)
    finally:
        bar.close()
        if mngr is not None:
            mngr.wait_until_finished()
            mngr.close()
    info = {
        "train_time_s": train_time,
        "iter_time_s": train_time / timed_steps if timed_steps else None,
        "resumed_from": resumed_from,
        "final_eval": final_eval,
        "best": best,
    }
    return state, history, info
