"""The optimiser and learning-rate schedule of a run, from its config."""

from __future__ import annotations

import optax

__all__ = ["lr_schedule", "make_optimizer"]


def lr_schedule(cfg):
    """The learning rate as a function of the step (or a constant).

    Piecewise constant (`lr_values` switching at the epochs `lr_boundaries`, the paper's MNIST
    schedule), else `lr · lr_decay^step` floored at `lr_min` (the latent ODE's schedule);
    `warmup_steps` prepends a linear warm-up from 0 (FFJORD's).
    """
    if cfg.lr_values:
        spe = cfg.steps_per_epoch
        base = optax.piecewise_constant_schedule(
            cfg.lr_values[0],
            {int(b * spe): cfg.lr_values[i + 1] / cfg.lr_values[i] for i, b in enumerate(cfg.lr_boundaries)},
        )
    elif cfg.lr_decay != 1.0:
        base = optax.exponential_decay(cfg.lr, transition_steps=1, decay_rate=cfg.lr_decay,
                                       end_value=cfg.lr_min or None)
    else:
        base = cfg.lr
    if not cfg.warmup_steps:
        return base
    warm = optax.linear_schedule(0.0, cfg.lr_values[0] if cfg.lr_values else cfg.lr, cfg.warmup_steps)
    rest = base if callable(base) else optax.constant_schedule(base)
    return optax.join_schedules([warm, rest], [cfg.warmup_steps])


def make_optimizer(cfg) -> optax.GradientTransformation:
    """`optax.sgd` (with momentum), `adam`, `adamax` or `adamw` at the config's schedule."""
    lr = lr_schedule(cfg)
    if cfg.optimizer == "sgd":
        return optax.sgd(lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamax":
        return optax.adamax(lr)
    if cfg.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=cfg.weight_decay)
    return optax.adam(lr)
