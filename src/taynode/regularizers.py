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

**Solver heuristics.** `ErrorEstimate` (ERNODE) and `Stiffness` (SRNODE) are not integrands:
they are read off the solver's own accepted steps (`AbstractSolverHeuristic`), as Pal et al.
(2021) do. `steer_end_time` draws STEER's random end time (Ghosh et al. 2020).
"""

from __future__ import annotations

import abc
import math
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu

from .taylor import METHODS, _check_order, derivatives_from

__all__ = [
    "AbstractRegularizer",
    "ESTIMATORS",
    "TaylorRK",
    "Kinetic",
    "JacobianFrobenius",
    "per_example_mean_square",
    "AbstractSolverHeuristic",
    "SolverStep",
    "ErrorEstimate",
    "Stiffness",
    "steer_end_time",
]


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


def _safe_sqrt(x):
    """sqrt(x) with value and gradient 0 at x = 0 (an exact step has no error and no stiffness)."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1)), 0)


class SolverStep(eqx.Module):
    """One step [t0, t1] of a Runge–Kutta solver, as a solver heuristic sees it.

    - `solver`: the diffrax solver that took the step.
    - `t0`, `t1`: the step's ends (h = t1 − t0).
    - `y0`, `y1`: the state before and after the step.
    - `y_error`: the solver's embedded local error estimate of `y1` (unscaled).
    - `k`: the stages, each h·f(t0 + c_i h, g_i), stacked along a leading axis of every leaf
      (diffrax's dense information `k` of a Runge–Kutta step).
    - `rtol`, `atol`: the tolerances of the solve (None for fixed steps).
    """

    solver: diffrax.AbstractSolver = eqx.field(static=True)
    t0: Any
    t1: Any
    y0: Any
    y1: Any
    y_error: Any
    k: Any
    rtol: float | None = eqx.field(static=True)
    atol: float | None = eqx.field(static=True)

    def select(self, part):
        """The same step seen through `part` of a pytree state (see the module docstring)."""
        if part is None:
            return self
        y0, y1, y_error, k = (_select(v, part) for v in (self.y0, self.y1, self.y_error, self.k))
        return SolverStep(self.solver, self.t0, self.t1, y0, y1, y_error, k, self.rtol, self.atol)


class AbstractSolverHeuristic(eqx.Module):
    """Base class of the regularisers read off the solver's accepted steps (Pal et al. 2021).

    A subclass defines `name`, `check_solver` and `estimate`, the solver's own cost heuristic on
    one step. `taynode.solve` adds |h_j| · estimate_j of every accepted step j to a sum held in the
    solver's state and left out of the step-size control, so the regulariser does not change the
    steps or the NFE of the solve; a rejected step leaves the state, and so the sum, as it was.
    `part` selects what the estimate sees, as for `AbstractRegularizer`.
    """

    part: Any = eqx.field(static=True, default=None, kw_only=True)

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The key of this regulariser in `Solution.reg`."""

    @abc.abstractmethod
    def check_solver(self, solver: diffrax.AbstractSolver, adaptive: bool) -> None:
        """Raise a one-line `ValueError` unless `solver` provides this heuristic."""

    @abc.abstractmethod
    def estimate(self, step: SolverStep, batched: bool):
        """The heuristic on one step: a scalar, or one value per example when `batched`."""

    def __call__(self, step: SolverStep, batched: bool):
        """The step's contribution |t1 − t0| · estimate."""
        return jnp.abs(step.t1 - step.t0) * self.estimate(step.select(self.part), batched)


def _check_tolerances(rtol, atol):
    for name, v in (("rtol", rtol), ("atol", atol)):
        ok = v is None or (not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v > 0)
        if not ok:
            raise ValueError(f"ErrorEstimate {name} must be a positive finite float or None, got {v!r}")
    if (rtol is None) != (atol is None):
        raise ValueError("ErrorEstimate needs both rtol and atol, or neither (then the solve's are used)")


class ErrorEstimate(AbstractSolverHeuristic):
    """ERNODE's regulariser R_E = Σ_j E_j · |h_j|, the solver's local error estimates over its accepted steps.

    Pal, Ma, Shah & Rackauckas, "Opening the Blackbox: Accelerating Neural Differential Equations
    by Regularizing Internal Solver Heuristics", ICML 2021 (the loss adds λ · R_E). On the
    accepted step j from y_{j−1} to y_j of length h_j, with e_j the embedded error estimate,

        E_j = sqrt( mean_i ( e_{j,i} / (atol + rtol · max(|y_{j−1,i}|, |y_{j,i}|)) )² ),

    the RMS norm of the scaled error: OrdinaryDiffEq's `EEst` (`calculate_residuals` with its
    default `internalnorm`, the RMS), which the authors' code (avik-pal/RegNeuralDE.jl) records
    as `integrator.EEst * integrator.dt` at the accepted steps, and the quantity diffrax's
    `PIDController` compares with 1 under its default `rms_norm`. This is the paper's sum; the
    authors' experiment scripts weight λ by the mean of the recorded values. The error estimate
    e_j is the solver's own (diffrax's Dopri5 uses Shampine's embedded weights, which differ from
    those of Hairer's code). Batched: the mean runs over each example's dimensions, one E_j per
    example (the joint solve still takes one step for all). E_j is scaled by the solve's
    tolerances unless `rtol` and `atol` are given here (they must be for a fixed-step solve,
    which has none). The sum does not take part in the step-size control.

    **Arguments**
    - `rtol`, `atol`: tolerances of the scaling (default None: the solve's `rtol`, `atol`).
    - `part`: which part of a pytree state it sees (see the module docstring).

    **Raises** `ValueError` for a bad tolerance, for only one of `rtol`/`atol`; in `solve`, for a
    solver without an error estimate or a fixed-step solve without tolerances here.

    Name: `"ernode"`.
    """

    rtol: float | None = eqx.field(static=True, default=None)
    atol: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_tolerances(self.rtol, self.atol)

    @property
    def name(self) -> str:
        return "ernode"

    def check_solver(self, solver, adaptive: bool) -> None:
        if isinstance(solver, diffrax.Euler) or solver.error_order(diffrax.ODETerm(lambda t, y, a: y)) is None:
            raise ValueError(
                f"ErrorEstimate needs a solver with an error estimate, got solver={type(solver).__name__}: "
                "use an embedded Runge–Kutta pair such as 'dopri5'"
            )
        if not adaptive and self.rtol is None:
            raise ValueError(
                "ErrorEstimate needs rtol and atol to scale its error in a fixed-step solve: "
                "pass ErrorEstimate(rtol=..., atol=...)"
            )

    def estimate(self, step: SolverStep, batched: bool):
        rtol = step.rtol if self.rtol is None else self.rtol
        atol = step.atol if self.atol is None else self.atol
        scaled = jtu.tree_map(
            lambda e, a, b: e / (atol + rtol * jnp.maximum(jnp.abs(a), jnp.abs(b))), step.y_error, step.y0, step.y1
        )
        return _safe_sqrt(per_example_mean_square(scaled, batched))


class Stiffness(AbstractSolverHeuristic):
    """SRNODE's regulariser R_S = Σ_j S_j · |h_j|, Dormand–Prince's stiffness estimates over its accepted steps.

    Pal, Ma, Shah & Rackauckas, "Opening the Blackbox", ICML 2021 (the loss adds λ · R_S). On the
    accepted step j of `diffrax.Dopri5`, with g_i the stage states and k_i = f(t + c_i h, g_i),

        S_j = ‖k_7 − k_6‖ / ‖g_7 − g_6‖,

    where g_7 = y_j is the new state and c_6 = c_7 = 1, so k_7 − k_6 ≈ ∂f/∂y · (g_7 − g_6) and S_j
    estimates the modulus of the dominant eigenvalue of the Jacobian (Hairer & Wanner, *Solving
    Ordinary Differential Equations II*, 2nd ed., Sect. IV.2, pp. 21–22; their `dopri5` code flags
    stiffness when h·S_j > 3.25). This is OrdinaryDiffEq's `DP5` `eigen_est` (the ratio of two
    `internalnorm`s, so of Euclidean norms; later versions take max_i |Δk_i / Δg_i|), which the
    authors' code records as `integrator.eigen_est * integrator.dt`, there from Tsit5 stages
    (`AutoTsit5`), whose last two stages also sit at c = 1. Batched: one S_j per example, the norms
    over that example's dimensions. S_j is 0 on a step with g_7 = g_6.

    **Arguments**
    - `part`: which part of a pytree state it sees (see the module docstring).

    **Raises** in `solve`, `ValueError` for a solver other than Dopri5.

    Name: `"srnode"`.
    """

    @property
    def name(self) -> str:
        return "srnode"

    def check_solver(self, solver, adaptive: bool) -> None:
        if not isinstance(solver, diffrax.Dopri5):
            raise ValueError(
                f"Stiffness reads Dormand–Prince's last two stages, got solver={type(solver).__name__}: "
                "use solver='dopri5'"
            )

    def estimate(self, step: SolverStep, batched: bool):
        a6 = step.solver.tableau.a_lower[4]  # g_6 = y0 + Σ_{i<6} a_6i k_i
        g6 = jtu.tree_map(lambda y, k: y + jnp.tensordot(jnp.asarray(a6, k.dtype), k[:5], axes=1), step.y0, step.k)
        dk = jtu.tree_map(lambda k: k[6] - k[5], step.k)  # h·(f(t1, g_7) − f(t1, g_6))
        dg = jtu.tree_map(jnp.subtract, step.y1, g6)
        # The ratio of two small squares, in the widest float available: in float32, ‖g_7 − g_6‖²·h² can
        # come near the smallest normal number, where the ratio's gradient (∝ 1/den²) overflows.
        wide = jnp.promote_types(jnp.result_type(*jtu.tree_leaves(dg)), jnp.float64 if jax.config.jax_enable_x64
                                 else jnp.float32)
        dk, dg = (jtu.tree_map(lambda x: x.astype(wide), t) for t in (dk, dg))
        h = jnp.asarray(step.t1 - step.t0, wide)
        num = per_example_mean_square(dk, batched)
        den = per_example_mean_square(dg, batched) * h**2
        positive = den > 0
        out = _safe_sqrt(num / jnp.where(positive, den, 1)) * positive
        return out.astype(jnp.result_type(*jtu.tree_leaves(step.y1)))


def steer_end_time(key, t1: float, b: float, *, t0: float = 0.0):
    """STEER's training end time T ~ U(t1 − b, t1 + b); evaluation keeps t1.

    Ghosh, Behl, Dupont, Torr & Namboodiri, "STEER: Simple Temporal Regularization For Neural
    ODEs", NeurIPS 2020. Solve the training forward pass to T (e.g. `solve(..., t1=T)`), a fresh
    draw per iteration.

    **Arguments**
    - `key`: a `jax.random` key (may be traced, e.g. vmapped over).
    - `t1`: the nominal end time; `t0`: the start time.
    - `b`: the half-width, 0 <= b < t1 − t0 so that T > t0 (b = 0 gives t1).

    **Returns** a scalar array, T.

    **Raises** `ValueError` for a b outside [0, t1 − t0) or a non-number t0, t1, b.
    """
    for name, v in (("t0", t0), ("t1", t1), ("b", b)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if not 0 <= b < t1 - t0:
        raise ValueError(f"b must satisfy 0 <= b < t1 - t0 = {t1 - t0:g} so that the end time stays after t0, "
                         f"got b={b!r}")
    u = jr.uniform(key, (), minval=-1.0, maxval=1.0, dtype=jnp.result_type(float))
    return t1 + b * u
