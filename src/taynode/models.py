"""Flax modules for ODE vector fields and heads.

Vector fields are used as pure functions `f(t, y, params)` (diffrax style) via
`as_field(module)`, so that `jet`, diffrax and the regularisers all see the same function.
Activations come from `taynode.activations` (jet-safe).
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import flax.linen as nn
import jax.numpy as jnp

from .activations import get_activation, sigmoid

__all__ = ["ConcatDense", "MLPField", "MNISTDynamics", "MNISTHead", "FlaxField", "as_field"]


def _concat_t(t, h):
    tt = jnp.broadcast_to(jnp.asarray(t, h.dtype), h.shape[:-1] + (1,))
    return jnp.concatenate([h, tt], axis=-1)


class ConcatDense(nn.Module):
    """Dense layer on the input with time appended: W [h, t] + b."""

    features: int
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, t, h):
        return nn.Dense(self.features, kernel_init=self.kernel_init)(_concat_t(t, h))


class MLPField(nn.Module):
    """MLP vector field: ConcatDense → σ → ConcatDense → σ → … → ConcatDense(out_dim).

    **Arguments**
    - `hidden`: widths of the hidden layers.
    - `out_dim`: state dimension.
    - `activation`: name of a jet-safe activation (`taynode.activations`).
    - `init_scale`: variance scale of the (fan-in, normal) weight initialisation; 1 is
      LeCun normal, larger values start from rougher dynamics.
    """

    hidden: Sequence[int]
    out_dim: int
    activation: str = "tanh"
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, t, y):
        sigma = get_activation(self.activation)
        init = nn.initializers.variance_scaling(self.init_scale, "fan_in", "normal")
        h = y
        for width in self.hidden:
            h = sigma(ConcatDense(width, kernel_init=init)(t, h))
        return ConcatDense(self.out_dim, kernel_init=init)(t, h)


class FlaxField(eqx.Module):
    """The pure function f(t, y, params) = module.apply(params, t, y).

    A module, not a closure: two fields of equal flax modules compare equal, so solves of
    them share one compilation.
    """

    module: nn.Module = eqx.field(static=True)

    def __call__(self, t, y, params):
        return self.module.apply(params, t, y)


def as_field(module: nn.Module) -> FlaxField:
    """The pure function f(t, y, params) = module.apply(params, t, y) (a hashable `FlaxField`)."""
    return FlaxField(module)


class MNISTDynamics(nn.Module):
    """The paper's MNIST dynamics: sigmoid → concat t → Dense(hidden) → sigmoid → concat t → Dense(dim)."""

    hidden: int = 100
    dim: int = 784

    @nn.compact
    def __call__(self, t, y):
        h = sigmoid(y)
        h = ConcatDense(self.hidden)(t, h)
        h = sigmoid(h)
        return ConcatDense(self.dim)(t, h)


class MNISTHead(nn.Module):
    """The paper's classifier head: sigmoid → Dense(classes)."""

    classes: int = 10

    @nn.compact
    def __call__(self, z):
        return nn.Dense(self.classes)(sigmoid(z))
