"""Activations that Taylor-mode AD (`jax.experimental.jet`) can propagate through.

`jet` has no rule for `jax.custom_jvp` functions, so `jax.nn.relu`, `jax.nn.softplus`,
`jax.nn.silu` and `jnp.logaddexp` raise inside it. The functions here compute the same
values from primitives that do have jet rules (`max`, `abs`, `exp`, `log1p`, `logistic`,
`tanh`, `select_n`). Each one is tested against its `jax.nn` counterpart in value and in
derivatives up to order 4.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["relu", "softplus", "sigmoid", "tanh", "silu", "logaddexp", "ACTIVATIONS", "get_activation"]


def relu(x):
    """max(x, 0), written with `lax.max` (jet-safe; `jax.nn.relu` is a custom_jvp)."""
    return jnp.maximum(x, jnp.zeros_like(x))


def softplus(x):
    """log(1 + exp(x)) in the overflow-safe form log1p(exp(-|x|)) + max(x, 0)."""
    return jnp.log1p(jnp.exp(-jnp.abs(x))) + relu(x)


def sigmoid(x):
    """1 / (1 + exp(-x)) via the `logistic` primitive (has a jet rule)."""
    return jax.lax.logistic(x)


def tanh(x):
    """Hyperbolic tangent (already jet-safe; listed for a uniform lookup)."""
    return jnp.tanh(x)


def silu(x):
    """x · sigmoid(x) (`jax.nn.silu` is a custom_jvp)."""
    return x * jax.lax.logistic(x)


def logaddexp(a, b):
    """log(exp(a) + exp(b)) as max(a, b) + log1p(exp(-|a - b|)) (`jnp.logaddexp` is a custom_jvp)."""
    return jnp.maximum(a, b) + jnp.log1p(jnp.exp(-jnp.abs(a - b)))


ACTIVATIONS = {"relu": relu, "softplus": softplus, "sigmoid": sigmoid, "tanh": tanh, "silu": silu}


def get_activation(name: str):
    """Look up a jet-safe activation by name.

    **Raises** `ValueError` naming the unknown activation and the known ones.
    """
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}"
        ) from None
