"""Total time derivatives of ODE solutions by Taylor-mode AD.

For y' = f(t, y, args) the solution through (t, y) has derivatives
y' = f, y'' = ∂f/∂t + ∂f/∂y · f, ... . Time dependence is handled by augmenting the
state with t (t' = 1, t'' = t''' = ... = 0), which makes the system autonomous.

Conventions: derivatives are *derivatives* (not Taylor coefficients divided by k!),
so for y' = y², `solution_derivatives(...)[k-1] == k! · y^(k+1)`.

Methods: `"taylor"` (the default: incremental Taylor mode, `taynode.taylor_mode`: one pass through f per order,
every lower order kept), `"jet"` (the paper's: `order - 1` calls of `jax.experimental.jet`, each
recomputing the lower orders) and `"jvp"` (nested forward mode, the reference).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax.experimental.jet import jet

from .taylor_mode import taylor_derivatives

__all__ = ["solution_derivatives", "derivatives_from", "METHODS"]

METHODS = ("taylor", "jet", "jvp")


def _check_order(order) -> int:
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be an int >= 1, got {order!r}")
    return order


def _check_method(method) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def _t_series(t, n: int):
    """Derivatives of t along the flow: (1, 0, 0, ...), n terms."""
    one = jnp.ones_like(t)
    zero = jnp.zeros_like(t)
    return (one,) + (zero,) * (n - 1)


def derivatives_from(vector_field: Callable, t, y, args, order: int, dy, method: str = "taylor"):
    """Like `solution_derivatives`, but starting from a known first derivative `dy = f(t, y, args)`.

    Used inside solves, where `f(t, y, args)` has already been evaluated for the state.
    Returns the tuple (y', ..., y^(order)).
    """
    if order == 1:
        return (dy,)
    t = jnp.asarray(t, dtype=jnp.result_type(float))
    if method == "jvp":
        return _nested_jvp(vector_field, t, y, args, order, dy)
    if method == "taylor":
        return (dy,) + taylor_derivatives(vector_field, t, y, args, order, dy=dy)[1:]
    y_leaves, treedef = jtu.tree_flatten(y)

    def flat_g(t_, *leaves):
        return jtu.tree_leaves(vector_field(t_, jtu.tree_unflatten(treedef, list(leaves)), args))

    derivs = [jtu.tree_leaves(dy)]  # derivs[k][i]: derivative k+1 of leaf i
    # jet fed a series correct to order k returns f's series correct to order k,
    # i.e. the solution's derivatives up to order k + 1.
    for k in range(1, order):
        leaf_series = tuple(tuple(d[i] for d in derivs) for i in range(len(y_leaves)))
        _, out_series = jet(flat_g, (t, *y_leaves), (_t_series(t, k), *leaf_series))
        derivs.append([s[k - 1] for s in out_series])
    derivs = [jtu.tree_unflatten(treedef, d) for d in derivs]
    return tuple(derivs)


def _nested_jvp(vector_field, t, y, args, order, dy):
    """Reference: d_{k+1}(t, y) = jvp of d_k along the flow direction (1, f(t, y))."""

    def d1(t_, y_):
        return vector_field(t_, y_, args)

    fns = [d1]
    for _ in range(order - 1):
        prev = fns[-1]

        def nxt(t_, y_, prev=prev):
            f = vector_field(t_, y_, args)
            return jax.jvp(prev, (t_, y_), (jnp.ones_like(t_), f))[1]

        fns.append(nxt)
    return (dy,) + tuple(fn(t, y) for fn in fns[1:])


def solution_derivatives(
    vector_field: Callable,
    t,
    y,
    args,
    order: int,
    *,
    method: Literal["taylor", "jet", "jvp"] = "taylor",
):
    """Total time derivatives (y', y'', ..., y^(order)) of the solution of y' = f(t, y, args) through (t, y).

    **Arguments**
    - `vector_field`: `f(t, y, args)`, diffrax style; `y` an array or a pytree of arrays.
    - `t`: scalar time. `y`: state. `args`: passed through to the field.
    - `order`: int >= 1, the highest derivative returned.
    - `method`: `"taylor"` (default; incremental Taylor mode: `order` passes through f, one order
      each, the fastest of the three), `"jet"` (the paper's Taylor mode, `order - 1` jet calls, each
      recomputing the lower orders) or `"jvp"` (nested forward-mode jvp; exponential in `order`, kept
      as the reference).

    **Returns** a tuple of `order` pytrees shaped like `y`: plain derivatives, not Taylor
    coefficients (no division by k!).

    **Raises** `ValueError` for a bad `order` or `method`, or if `f(t, y, args)` is not
    shaped like `y`; `NotImplementedError` (method `"taylor"`) naming a primitive of f that has no
    Taylor rule.
    """
    _check_order(order)
    _check_method(method)
    t = jnp.asarray(t, dtype=jnp.result_type(float))
    if jnp.ndim(t) != 0:
        raise ValueError(f"t must be a scalar, got shape {jnp.shape(t)}")
    if method == "taylor":  # checks the field's output itself; f_0 comes from its own first pass
        return taylor_derivatives(vector_field, t, y, args, order)
    dy = vector_field(t, y, args)
    ys, ds = jtu.tree_structure(y), jtu.tree_structure(dy)
    if ys != ds or any(
        jnp.shape(a) != jnp.shape(b) for a, b in zip(jtu.tree_leaves(y), jtu.tree_leaves(dy))
    ):
        raise ValueError(
            "vector_field(t, y, args) must return a pytree shaped like y; got "
            f"{jtu.tree_map(jnp.shape, dy)} for y of {jtu.tree_map(jnp.shape, y)}"
        )
    return derivatives_from(vector_field, t, y, args, order, dy, method=method)
