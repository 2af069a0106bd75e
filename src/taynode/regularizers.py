"""Regularisers integrated alongside the ODE state.

Each regulariser is a small frozen object (an `equinox.Module`) with a `name` and a
`__call__(t, y, args, vector_field, dy, batched)` that returns the *integrand* at (t, y):
a scalar, or one value per example (shape `(batch,)`) when the field is batched along
the leading axis. `taynode.solve` integrates it from t0 to t1 as an extra, zero-initialised
state. The convention is the original code's: a per-example **mean over state dimensions**.
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu

from .taylor import METHODS, _check_order, derivatives_from

__all__ = ["AbstractRegularizer", "TaylorRK", "Kinetic", "JacobianFrobenius", "per_example_mean_square"]


def per_example_mean_square(tree, batched: bool):
    """Mean of squares over the state dimensions of a pytree.

    **Arguments**
    - `tree`: array or pytree of arrays.
    - `batched`: if True, the leading axis of every leaf is the batch axis and the mean
      is taken over the remaining axes (returns shape `(batch,)`); else a scalar.
    """
    leaves = jtu.tree_leaves(tree)
    if batched:
        sums = sum(jnp.sum(jnp.reshape(x**2, (x.shape[0], -1)), axis=1) for x in leaves)
        count = sum(int(x[0].size) for x in leaves)
    else:
        sums = sum(jnp.sum(x**2) for x in leaves)
        count = sum(int(x.size) for x in leaves)
    return sums / count


class AbstractRegularizer(eqx.Module):
    """Base class: subclasses define `name` and `__call__`."""

    @property
    def name(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, t, y, args, vector_field, dy, batched: bool):  # pragma: no cover
        raise NotImplementedError


class TaylorRK(AbstractRegularizer):
    """R_K: the integrand mean_D (d^K y/dt^K)², the K-th *total* time derivative of the solution.

    **Arguments**
    - `order`: K, an int >= 1 (K = 1 is the kinetic energy of the field).
    - `method`: `"jet"` (Taylor mode, default) or `"jvp"` (nested jvp reference).

    Name: `"R{K}"`.
    """

    order: int = eqx.field(static=True)
    method: str = eqx.field(static=True, default="jet")

    def __check_init__(self):
        _check_order(self.order)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

    @property
    def name(self) -> str:
        return f"R{self.order}"

    def __call__(self, t, y, args, vector_field, dy, batched: bool):
        dk = derivatives_from(vector_field, t, y, args, self.order, dy, method=self.method)[-1]
        return per_example_mean_square(dk, batched)


class Kinetic(AbstractRegularizer):
    """RNODE's kinetic energy integrand mean_D f(t, y)². Name: `"kinetic"`."""

    @property
    def name(self) -> str:
        return "kinetic"

    def __call__(self, t, y, args, vector_field, dy, batched: bool):
        return per_example_mean_square(dy, batched)


class JacobianFrobenius(AbstractRegularizer):
    """RNODE's Jacobian term: a Hutchinson estimate mean_D (∂f/∂y · ε)² of ‖∂f/∂y‖_F² / D.

    ε is drawn once from `key` (the same ε at every time of a solve, as the original code).

    **Arguments**
    - `key`: a `jax.random` key.
    - `noise`: `"rademacher"` (±1) or `"gaussian"` (standard normal).

    Name: `"frobenius"`.
    """

    key: jax.Array
    noise: str = eqx.field(static=True, default="rademacher")

    def __check_init__(self):
        if self.noise not in ("rademacher", "gaussian"):
            raise ValueError(f"noise must be 'rademacher' or 'gaussian', got {self.noise!r}")

    @property
    def name(self) -> str:
        return "frobenius"

    def epsilon(self, y):
        """The probe vector ε, a pytree shaped like `y`."""
        leaves, treedef = jtu.tree_flatten(y)
        keys = jr.split(self.key, len(leaves))
        if self.noise == "rademacher":
            eps = [jr.rademacher(k, x.shape, dtype=x.dtype) for k, x in zip(keys, leaves)]
        else:
            eps = [jr.normal(k, x.shape, dtype=x.dtype) for k, x in zip(keys, leaves)]
        return jtu.tree_unflatten(treedef, eps)

    def __call__(self, t, y, args, vector_field, dy, batched: bool):
        _, jeps = jax.jvp(lambda y_: vector_field(t, y_, args), (y,), (self.epsilon(y),))
        return per_example_mean_square(jeps, batched)
