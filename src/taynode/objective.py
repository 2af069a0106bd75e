"""The training objective every experiment shares: task loss + weighted regularisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from .experiment import Experiment, solve_problem

__all__ = ["make_loss", "make_train_step"]


def make_loss(exp: Experiment, cfg, regularization=None):
    """`loss_fn(params, batch, key, step) -> (loss, aux)`.

    The batch (as `exp.training_batch` makes it from the step's key) poses an ODE
    (`exp.problem`), solved at the training tolerance with the regularisers of
    `cfg.regularization` (on the part of the state the problem names; STEER draws the end time
    or moves the observation times, `Regularization.steer`); the loss is the
    experiment's task loss plus the weighted penalty. `aux` holds the experiment's scalars and
    `reg` (the weighted penalty) and `nfe` (of the augmented training solve). `regularization`
    replaces `cfg.regularization` (an object with its `regularizers`, `steer` and `penalty`; the
    benchmarks use it to time variants of a regulariser).
    """
    reg = cfg.regularization if regularization is None else regularization

    def loss_fn(params, batch, key, step):
        batch = exp.training_batch(cfg, batch, key)
        problem = reg.steer(exp.problem(cfg, params, batch), key)
        sol = solve_problem(problem, solver=cfg.solver, rtol=cfg.rtol, atol=cfg.atol, max_steps=cfg.max_steps,
                            regularizers=reg.regularizers(key, part=problem.part))
        task, aux = exp.loss(cfg, params, batch, sol, key, step)
        penalty = reg.penalty(sol.reg).astype(task.dtype)
        return task + penalty, {**aux, "reg": penalty, "nfe": jnp.mean(sol.nfe)}

    return loss_fn


def make_train_step(exp: Experiment, cfg, opt: optax.GradientTransformation, regularization=None):
    """The jitted `step(state, batch, key, step) -> (state, metrics)` with `state = {params, opt_state}`
    (`regularization`: as `make_loss`'s). `metrics["grads_finite"]` is 1.0 when every gradient entry is
    finite, else 0.0 (the training loop stops on it: a non-finite gradient makes the parameters so)."""
    loss_fn = make_loss(exp, cfg, regularization)

    @jax.jit
    def train_step(state, batch, key, step):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, key, step)
        updates, opt_state = opt.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]))
        metrics = {"loss": loss, **aux, "grads_finite": finite.astype(loss.dtype)}
        return {"params": params, "opt_state": opt_state}, metrics

    return train_step
