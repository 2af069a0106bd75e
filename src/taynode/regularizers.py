"""Regularisers integrated alongside the ODE state.

Each regulariser is a small frozen object (an `equinox.Module`) with a `name` and an
`integrand(t, y, args, vector_field, dy, batched)` that returns the *integrand* at (t, y):
a scalar, or one value per example (shape `(batch,)`) when the field is batched along
the leading axis. `taynode.solve` integrates it from t0 to t1 as an extra, zero-initialised
state. The convention is the original code's: a per-example **mean over state dimensions**.

**Part of a state.** Every regulariser takes `part=`: an index (int or key) into a tuple, list
or dict state, so that it sees `y[part]` only. A continuous normalising flow's state is
(z, log p) and `TaylorRK(2, part=0)` regularises z, never the log-density. The selected part
is differentiated along the field `z ↦ f(t, y with y[part] = z)[part]` with the rest of the
state held at its current value: these are the total derivatives of `y[part]` whenever its
dynamics do not depend on the rest (true for a CNF, where dz/dt never reads log p).
"""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu

from .taylor import METHODS, _check_order, derivatives_from

__all__ = ["AbstractRegularizer", "ESTIMATORS", "TaylorRK", "Kinetic", "JacobianFrobenius", "per_example_mean_square"]


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


class _PartField(eqx.Module):
    """`z ↦ f(t, y with y[part] = z, args)[part]`, the rest of the state held fixed."""

    vector_field: Any = eqx.field(static=True)
    part: Any = eqx.field(static=True)
    state: Any

    def __call__(self, t, z, args):
        return _select(self.vector_field(t, _replace(self.state, self.part, z), args), self.part)


def _select(y, part):
    try:
        return y[part]
    except (KeyError, IndexError, TypeError):
        raise ValueError(
            f"part={part!r} does not index the state (a {type(y).__name__}); pass an index or key of a "
            "tuple, list or dict state, or part=None for the whole state"
        ) from None


def _replace(y, part, z):
    if isinstance(y, dict):
        return {**y, part: z}
    items = list(y)
    items[part] = z
    return type(y)(items) if isinstance(y, list) else tuple(items)


class AbstractRegularizer(eqx.Module):
    """Base class: subclasses define `name` and `integrand`; `part` selects what they see."""

    part: Any = eqx.field(static=True, default=None, kw_only=True)

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The key of this regulariser in `Solution.reg`."""

    @abc.abstractmethod
    def integrand(self, t, y, args, vector_field, dy, batched: bool):
        """The integrand at (t, y) for the state this regulariser sees; `dy = vector_field(t, y, args)`."""

    def __call__(self, t, y, args, vector_field, dy, batched: bool):
        if self.part is None:
            return self.integrand(t, y, args, vector_field, dy, batched)
        z, dz = _select(y, self.part), _select(dy, self.part)
        return self.integrand(t, z, args, _PartField(vector_field, self.part, y), dz, batched)


ESTIMATORS = ("exact", "sampled")


class TaylorRK(AbstractRegularizer):
    """R_K: the integrand mean_D (d^K y/dt^K)², the K-th *total* time derivative of the solution.

    **Arguments**
    - `order`: K, an int >= 1 (K = 1 is the kinetic energy of the field).
    - `method`: `"taylor"` (incremental Taylor mode, default), `"jet"` (the paper's
      `jax.experimental.jet`) or `"jvp"` (nested jvp reference); see `taynode.taylor`.
    - `part`: which part of a pytree state it sees (see the module docstring).
    - `estimator`: `"exact"` (default): the integral is an extra ODE state, its integrand
      evaluated at every stage of every step and part of the step-size control. `"sampled"`:
      one evaluation per attempted step, at t_i + u·h_i with u ~ U(0, 1), on the solver's
      dense interpolant, weighted by h_i, and left out of the step-size control (see
      `taynode.solve`). Given the step grid its expectation is the integral along the
      interpolated solution.
    - `key`: a `jax.random` key, required by `estimator="sampled"` (draws the points u).

    Name: `"R{K}"`.
    """

    order: int = eqx.field(static=True)
    method: str = eqx.field(static=True, default="taylor")
    estimator: str = eqx.field(static=True, default="exact")
    key: Any = None

    def __check_init__(self):
        _check_order(self.order)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.estimator == "sampled" and self.key is None:
            raise ValueError("estimator='sampled' needs key=jax.random.PRNGKey(...) to draw its sample points")

    @property
    def sampled(self) -> bool:
        return self.estimator == "sampled"

    @property
    def name(self) -> str:
        return f"R{self.order}"

    def integrand(self, t, y, args, vector_field, dy, batched: bool):
        dk = derivatives_from(vector_field, t, y, args, self.order, dy, method=self.method)[-1]
        return per_example_mean_square(dk, batched)


class Kinetic(AbstractRegularizer):
    """RNODE's kinetic energy integrand mean_D f(t, y)². Name: `"kinetic"`."""

    @property
    def name(self) -> str:
        return "kinetic"

    def integrand(self, t, y, args, vector_field, dy, batched: bool):
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

    def integrand(self, t, y, args, vector_field, dy, batched: bool):
        _, jeps = jax.jvp(lambda y_: vector_field(t, y_, args), (y,), (self.epsilon(y),))
        return per_example_mean_square(jeps, batched)
