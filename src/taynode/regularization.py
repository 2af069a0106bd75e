"""The regularisation choice of a run, in one place.

A `Regularization` (none / R_K with order and λ / RNODE with kinetic and Frobenius weights)
turns into the regularisers a solve integrates, the weighted penalty added to the loss, the
run-name fragment and the label a chapter prints. A new kind is one more branch here.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from .regularizers import ESTIMATORS, JacobianFrobenius, Kinetic, TaylorRK
from .taylor import METHODS, _check_order

__all__ = ["KINDS", "Regularization"]

KINDS = ("none", "taylor", "rnode")


def _weight(name, value):
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and value >= 0
    if not ok:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Regularization:
    """What a run adds to its loss.

    **Arguments**
    - `kind`: `"none"`, `"taylor"` (λ·R_K) or `"rnode"` (λ_kin·kinetic + λ_fro·Frobenius).
    - `order`: K of R_K (`kind="taylor"`).
    - `lam`: λ of R_K (`kind="taylor"`, > 0).
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

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"reg must be one of {KINDS}, got {self.kind!r}")
        _check_order(self.order)
        for name in ("lam", "lam_kin", "lam_fro"):
            _weight(name, getattr(self, name))
        if self.kind == "taylor" and self.lam == 0:
            raise ValueError("lam must be > 0 with reg='taylor' (use reg='none' for an unregularised run)")
        if self.kind == "rnode" and self.lam_kin == 0 and self.lam_fro == 0:
            raise ValueError("lam_kin or lam_fro must be > 0 with reg='rnode'")
        if self.kind != "taylor" and self.lam != 0:
            raise ValueError(f"lam only applies to reg='taylor', got reg={self.kind!r} with lam={self.lam}")
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
        """The regularisation of a config with fields `reg`, `order`, `lam`, `lam_kin`, `lam_fro`, `estimator`
        and `taylor_method`."""
        return cls(cfg.reg, cfg.order, cfg.lam, cfg.lam_kin, cfg.lam_fro, cfg.estimator, cfg.taylor_method)

    def regularizers(self, key, part=None) -> tuple:
        """The regularisers a training solve integrates (`key` draws RNODE's Hutchinson probe, or the
        sample points of a sampled R_K)."""
        if self.kind == "taylor":
            sampled = self.estimator == "sampled"
            return (TaylorRK(self.order, method=self.method, part=part, estimator=self.estimator,
                             key=key if sampled else None),)
        if self.kind == "rnode":
            return (Kinetic(part=part), JacobianFrobenius(key, part=part))
        return ()

    def penalty(self, reg: dict):
        """λ-weighted batch means of the integrated regularisers (`Solution.reg`); 0 for `none`."""
        if self.kind == "taylor":
            return self.lam * jnp.mean(reg[f"R{self.order}"])
        if self.kind == "rnode":
            return self.lam_kin * jnp.mean(reg["kinetic"]) + self.lam_fro * jnp.mean(reg["frobenius"])
        return jnp.zeros(())

    @property
    def name(self) -> str:
        """Run-name fragment: `none`, `taylor_K2_lam1`, `taylor_K2_lam1_sampled`, `rnode_kin1_fro1`."""
        if self.kind == "taylor":
            return f"taylor_K{self.order}_lam{self.lam:g}" + ("_sampled" if self.estimator == "sampled" else "")
        if self.kind == "rnode":
            return f"rnode_kin{self.lam_kin:g}_fro{self.lam_fro:g}"
        return "none"

    @property
    def label(self) -> str:
        """What a chapter prints: `unregularised`, `$R_2$, λ = 1`, `RNODE, λ_kin = 1, λ_fro = 1`."""
        if self.kind == "taylor":
            sampled = " (sampled)" if self.estimator == "sampled" else ""
            return f"$R_{self.order}${sampled}, λ = {self.lam:g}"
        if self.kind == "rnode":
            return f"RNODE, λ_kin = {self.lam_kin:g}, λ_fro = {self.lam_fro:g}"
        return "unregularised"
