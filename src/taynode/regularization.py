"""The regularisation choice of a run, in one place.

A `Regularization` (none / R_K with order and λ / RNODE with kinetic and Frobenius weights /
ERNODE or SRNODE with λ / STEER with its half-width b) turns into the regularisers a solve
integrates, the weighted penalty added to the loss, the change STEER makes to a training solve,
the run-name fragment and the label a chapter prints. A new kind is one more branch here.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import jax.random as jr

from .regularizers import ESTIMATORS, ErrorEstimate, JacobianFrobenius, Kinetic, Stiffness, TaylorRK, steer_end_time
from .taylor import METHODS, _check_order

__all__ = ["KINDS", "Regularization"]

KINDS = ("none", "taylor", "rnode", "ernode", "srnode", "steer")
#: the kinds weighted by `lam`
LAM_KINDS = ("taylor", "ernode", "srnode")
# folded into a training step's key for STEER's draw, so that it is independent of the other draws
_STEER_SALT = 0x57EE


def _weight(name, value):
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and value >= 0
    if not ok:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Regularization:
    """What a run adds to its loss.

    **Arguments**
    - `kind`: `"none"`, `"taylor"` (λ·R_K), `"rnode"` (λ_kin·kinetic + λ_fro·Frobenius),
      `"ernode"` (λ·R_E, `taynode.ErrorEstimate`), `"srnode"` (λ·R_S, `taynode.Stiffness`) or
      `"steer"` (STEER: no penalty; the training solve's end time is drawn, see `steer`).
    - `order`: K of R_K (`kind="taylor"`).
    - `lam`: λ of R_K, R_E or R_S (`kind` in `LAM_KINDS`, > 0).
    - `steer_b`: STEER's half-width b (`kind="steer"`, > 0): the training end time is drawn from
      U(t1 − b, t1 + b); where the loss reads the solution at observation times instead, each of
      them but the first moves by U(−b, b) times its gap to its neighbours (b ≤ 0.5 keeps their
      order), as the authors' latent-ODE code does with b = 0.5 (see `steer`).
    - `lam_kin`, `lam_fro`: RNODE's weights (`kind="rnode"`, at least one > 0).
    - `estimator`: `"exact"` (R_K as an ODE state) or `"sampled"` (one point per solver step;
      `TaylorRK`); `kind="taylor"` only.
    - `method`: how y^(K) is computed (`taynode.taylor.METHODS`; default `"taylor"`, the
      incremental Taylor mode). It changes the cost and the last bits, not the value.

    **Raises** `ValueError` naming the field for a weight that does not belong to `kind`, a
    missing weight, or a bad value.
    """

    kind: str = "none"
    order: int = 3
    lam: float = 0.0
    lam_kin: float = 0.0
    lam_fro: float = 0.0
    estimator: str = "exact"
    method: str = "taylor"
    steer_b: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"reg must be one of {KINDS}, got {self.kind!r}")
        _check_order(self.order)
        for name in ("lam", "lam_kin", "lam_fro", "steer_b"):
            _weight(name, getattr(self, name))
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        if self.kind in LAM_KINDS and self.lam == 0:
            raise ValueError(f"lam must be > 0 with reg={self.kind!r} (use reg='none' for an unregularised run)")
        if self.kind == "rnode" and self.lam_kin == 0 and self.lam_fro == 0:
            raise ValueError("lam_kin or lam_fro must be > 0 with reg='rnode'")
        if self.kind not in LAM_KINDS and self.lam != 0:
            raise ValueError(f"lam only applies to reg in {LAM_KINDS}, got reg={self.kind!r} with lam={self.lam}")
        if self.kind == "steer" and self.steer_b == 0:
            raise ValueError("steer_b must be > 0 with reg='steer' (use reg='none' for an unregularised run)")
        if self.kind != "steer" and self.steer_b != 0:
            raise ValueError(f"steer_b only applies to reg='steer', got reg={self.kind!r} with steer_b={self.steer_b}")
        if self.kind != "rnode" and (self.lam_kin or self.lam_fro):
            raise ValueError(f"lam_kin/lam_fro only apply to reg='rnode', got reg={self.kind!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.method not in METHODS:
            raise ValueError(f"taylor_method must be one of {METHODS}, got {self.method!r}")
        if self.kind != "taylor" and self.estimator != "exact":
            raise ValueError(f"estimator='sampled' only applies to reg='taylor', got reg={self.kind!r}")

    @classmethod
    def of(cls, cfg) -> Regularization:
        """The regularisation of a config with fields `reg`, `order`, `lam`, `lam_kin`, `lam_fro`, `estimator`,
        `taylor_method` and `steer_b`."""
        return cls(cfg.reg, cfg.order, cfg.lam, cfg.lam_kin, cfg.lam_fro, cfg.estimator, cfg.taylor_method,
                   cfg.steer_b)

    def regularizers(self, key, part=None) -> tuple:
        """The regularisers a training solve integrates (`key` draws RNODE's Hutchinson probe, or the
        sample points of a sampled R_K)."""
        if self.kind == "taylor":
            sampled = self.estimator == "sampled"
            return (TaylorRK(self.order, method=self.method, part=part, estimator=self.estimator,
                             key=key if sampled else None),)
        if self.kind == "rnode":
            return (Kinetic(part=part), JacobianFrobenius(key, part=part))
        if self.kind == "ernode":
            return (ErrorEstimate(part=part),)
        if self.kind == "srnode":
            return (Stiffness(part=part),)
        return ()

    def steer(self, problem, key):
        """The training problem STEER poses (the problem itself for every other kind).

        Without observation times, the end time t1 becomes T ~ U(t1 − b, t1 + b)
        (`taynode.steer_end_time`). With observation times `ts` (the loss reads the solution
        there), each time but the first moves by U(−b, b) times the smaller of its gaps to its
        neighbours (the last time: its gap to the previous one) and the times are clipped to
        [t0, t1]; on an evenly spaced grid this is the authors' latent-ODE code (RegNeuralDE.jl,
        `sample_tbounds`, b = 0.5). b must be ≤ 0.5 so that the times keep their order.
        Evaluation never calls this: it solves to t1 at the recorded times.
        """
        if self.kind != "steer":
            return problem
        key = jr.fold_in(key, _STEER_SALT)
        if problem.ts is None:
            dtype = jnp.result_type(*jax.tree_util.tree_leaves(problem.y0))
            t1 = steer_end_time(key, problem.t1, self.steer_b, t0=problem.t0).astype(dtype)
            return dataclasses.replace(problem, t1=t1)
        if self.steer_b > 0.5:
            raise ValueError(f"steer_b must be <= 0.5 where the loss reads the solution at observation times (it "
                             f"moves each by at most b times its gap), got steer_b={self.steer_b}")
        ts = jnp.asarray(problem.ts)
        gaps = jnp.diff(ts)
        # each time's scale: the smaller gap to its neighbours (the last: to the previous one)
        scale = jnp.minimum(gaps, jnp.concatenate([gaps[1:], gaps[-1:]]))
        u = jr.uniform(key, gaps.shape, ts.dtype, minval=-1.0, maxval=1.0)
        moved = jnp.clip(ts[1:] + self.steer_b * u * scale, problem.t0, problem.t1)
        return dataclasses.replace(problem, ts=jnp.concatenate([ts[:1], moved]))

    def penalty(self, reg: dict):
        """λ-weighted batch means of the integrated regularisers (`Solution.reg`); 0 for `none`."""
        if self.kind == "taylor":
            return self.lam * jnp.mean(reg[f"R{self.order}"])
        if self.kind == "rnode":
            return self.lam_kin * jnp.mean(reg["kinetic"]) + self.lam_fro * jnp.mean(reg["frobenius"])
        if self.kind in ("ernode", "srnode"):
            return self.lam * jnp.mean(reg[self.kind])
        return jnp.zeros(())

    @property
    def name(self) -> str:
        """Run-name fragment: `none`, `taylor_K2_lam1`, `taylor_K2_lam1_sampled`, `rnode_kin1_fro1`,
        `ernode_lam0.1`, `srnode_lam0.1`, `steer_b0.5`."""
        if self.kind == "taylor":
            return f"taylor_K{self.order}_lam{self.lam:g}" + ("_sampled" if self.estimator == "sampled" else "")
        if self.kind == "rnode":
            return f"rnode_kin{self.lam_kin:g}_fro{self.lam_fro:g}"
        if self.kind in ("ernode", "srnode"):
            return f"{self.kind}_lam{self.lam:g}"
        if self.kind == "steer":
            return f"steer_b{self.steer_b:g}"
        return "none"

    @property
    def label(self) -> str:
        """What a chapter prints: `unregularised`, `$R_2$, λ = 1`, `RNODE, λ_kin = 1, λ_fro = 1`."""
        if self.kind == "taylor":
            sampled = " (sampled)" if self.estimator == "sampled" else ""
            return f"$R_{self.order}${sampled}, λ = {self.lam:g}"
        if self.kind == "rnode":
            return f"RNODE, λ_kin = {self.lam_kin:g}, λ_fro = {self.lam_fro:g}"
        if self.kind in ("ernode", "srnode"):
            return f"{self.kind.upper()}, λ = {self.lam:g}"
        if self.kind == "steer":
            return f"STEER, b = {self.steer_b:g}"
        return "unregularised"
