"""Continuous normalising flows (FFJORD): density estimation with a neural ODE.

**The flow.** Data x = z(t0) is carried by dz/dt = f(t, z, θ) to z(t1), which is scored under a
standard normal. Along a solution the log-density obeys the instantaneous change of variables

    d log p_t(z(t)) / dt = −tr(∂f/∂z (t, z(t))),

so log p(x) = log N(z(t1); 0, I) + ∫_{t0}^{t1} tr(∂f/∂z) dt. `CNF.log_prob` solves the state
(z, a) with (z, a)' = (f, −tr ∂f/∂z) from (x, 0) and returns log N(z(t1)) − a(t1) (FFJORD's
`logpx = logpz − delta_logp`). Sampling runs the flow backwards: z ~ N(0, I) is carried from t1
to t0 by solving the *time-reversed* field g(s, z) = −f(t0 + t1 − s, z) forward in s ∈ [t0, t1].

**Divergence.** `divergence="exact"` takes the full Jacobian trace, one jvp per state dimension
(vmapped; for small dimensions, e.g. 2-D densities). `"rademacher"` or `"gaussian"` use
Hutchinson's estimator εᵀ(∂f/∂z)ε with one jvp, ε drawn once per solve from a key and held
fixed over time (as FFJORD). Both assume that f acts on each example of the batch separately
(no coupling between rows), as every field in this module does.

**Regularisers.** The state is the tuple (z, a) (or (z, a, e), below). R_K, the kinetic energy
and the Jacobian term must see z only, never the log-density: pass them with `part=0`, e.g.
`TaylorRK(2, part=0)`, `Kinetic(part=0)`. `frobenius=True` adds RNODE's Jacobian term without a
second jvp: the Hutchinson jvp already gives Jε, whose per-example mean square mean_D (Jε)² is an
unbiased estimate of ‖∂f/∂z‖_F² / D (the convention of `JacobianFrobenius`); it is integrated as
a third state e and reported as `reg["frobenius"]`, with the same ε as the trace (as RNODE). With
the exact divergence the same term is computed exactly from the Jacobian columns.

**Images.** Pixels in {0, …, 255} are dequantised, x = (pixel + u)/256 with u ~ U(0, 1)
(`dequantize`), and mapped to the real line by FFJORD's logit transform
y = logit(α + (1 − 2α) x), α = 1e-5 (`logit_transform`, which returns log|dy/dx| so that
log p(x) = log p_flow(y) + log|dy/dx|). `bits_per_dim` turns the log-density of x ∈ [0, 1)^D into
bits per dimension of the 256-level data: −(log p(x)/D − log 256)/log 2.

**Layers.** FFJORD's time-conditioned layers as flax modules (`ConcatSquashLinear`,
`ConcatConv2D`) and the fields built from them (`ConcatSquashMLP`, `ConcatConvField`), using
only jet-safe activations from `taynode.activations`. Use a module as a field with
`taynode.models.as_field(module)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import jax.random as jr

from .activations import get_activation, sigmoid
from .regularizers import AbstractRegularizer
from .solve import solve

__all__ = [
    "CNF",
    "FlowResult",
    "AugmentedFlowField",
    "TimeReversedField",
    "DIVERGENCES",
    "exact_divergence",
    "hutchinson_divergence",
    "draw_probe",
    "standard_normal_log_prob",
    "dequantize",
    "logit_transform",
    "inverse_logit_transform",
    "bits_per_dim",
    "ConcatSquashLinear",
    "ConcatSquashMLP",
    "ConcatConv2D",
    "ConcatConvField",
    "CONV_IMPLS",
]

#: divergence estimators: the exact trace, or Hutchinson's with a Rademacher or Gaussian probe
DIVERGENCES = ("exact", "rademacher", "gaussian")
PROBES = ("rademacher", "gaussian")


# ---------------------------------------------------------------------------------------------
# Divergence
# ---------------------------------------------------------------------------------------------


def _per_example_sum(x):
    return jnp.sum(jnp.reshape(x, (x.shape[0], -1)), axis=1)


def _per_example_mean(x):
    return jnp.mean(jnp.reshape(x, (x.shape[0], -1)), axis=1)


def exact_divergence(fn: Callable, z, block: int | None = None):
    """f(z), the exact per-example trace of ∂f/∂z, and ‖∂f/∂z‖_F² / D, from D jvps.

    **Arguments**
    - `fn`: z ↦ f(z) on a batch `z` of shape `(batch, *event)`, acting on each row separately.
    - `z`: the batch.
    - `block`: how many jvps run at once (vmapped); the blocks run one after another
      (`jax.lax.map`), so memory grows with `block`, not with D. None (default): all D at once.

    **Returns** `(f(z), div, frob)`: `div[b] = tr(∂f_b/∂z_b)` and `frob[b] = ‖∂f_b/∂z_b‖_F² / D`
    (D = size of one example), both of shape `(batch,)`.

    Column i of every example's Jacobian is the jvp along the i-th basis vector broadcast over the
    batch; the trace is the sum of the i-th entries of the i-th columns. Cost: D jvps.

    **Raises** `ValueError` naming `block` when it is not None or an int >= 1.
    """
    event = z.shape[1:]
    d = math.prod(event)
    if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
        raise ValueError(f"block must be None or an int >= 1, got {block!r}")
    block = d if block is None else min(block, d)
    blocks = -(-d // block)
    # basis vectors, padded with zero vectors to whole blocks (a zero tangent adds nothing)
    basis = jnp.eye(blocks * block, d, dtype=z.dtype).reshape((blocks, block) + event)

    def column(e):
        return jax.jvp(fn, (z,), (jnp.broadcast_to(e, z.shape),))

    def sums(es):
        fz, cols = jax.vmap(column, out_axes=(None, 0))(es)  # cols: (block, batch, *event)
        diag = jnp.sum(jnp.reshape(cols * es[:, None], (block, z.shape[0], d)), axis=(0, 2))
        frob = jnp.sum(jnp.reshape(cols**2, (block, z.shape[0], d)), axis=(0, 2))
        return fz, diag, frob

    if blocks == 1:
        fz, diag, frob = sums(basis[0])
    else:
        fzs, diags, frobs = jax.lax.map(sums, basis)
        fz, diag, frob = fzs[0], jnp.sum(diags, axis=0), jnp.sum(frobs, axis=0)
    return fz, diag, frob / d


def hutchinson_divergence(fn: Callable, z, eps):
    """f(z), Hutchinson's estimate εᵀ(∂f/∂z)ε of the per-example trace, and mean_D (∂f/∂z ε)², from one jvp.

    **Arguments**
    - `fn`: z ↦ f(z) on a batch `z` of shape `(batch, *event)`, acting on each row separately.
    - `z`: the batch. `eps`: the probe, shaped like `z` (one independent probe per example).

    **Returns** `(f(z), div, frob)`, `div` and `frob` of shape `(batch,)`. With E[εεᵀ] = I,
    E[div] = tr(∂f/∂z) and E[frob] = ‖∂f/∂z‖_F² / D.
    """
    fz, jeps = jax.jvp(fn, (z,), (eps,))
    return fz, _per_example_sum(eps * jeps), _per_example_mean(jeps**2)


def _check_probe(noise) -> str:
    if noise not in PROBES:
        raise ValueError(f"noise must be one of {PROBES}, got {noise!r}")
    return noise


def draw_probe(key, shape, dtype, noise: str = "rademacher"):
    """A Hutchinson probe ε: `"rademacher"` (±1 with probability 1/2) or `"gaussian"` (N(0, 1)).

    **Raises** `ValueError` naming `noise` when it is not one of `PROBES`.
    """
    _check_probe(noise)
    if noise == "rademacher":
        return jr.rademacher(key, shape, dtype=dtype)
    return jr.normal(key, shape, dtype=dtype)


def standard_normal_log_prob(z):
    """Per-example log N(z; 0, I): −(D log 2π + ‖z‖²)/2 summed over all axes but the first."""
    return _per_example_sum(-0.5 * (z**2 + math.log(2 * math.pi)))


# ---------------------------------------------------------------------------------------------
# The flow
# ---------------------------------------------------------------------------------------------


class FlowResult(eqx.Module):
    """What `CNF.log_prob` and `CNF.sample_and_log_prob` return.

    - `x`: the data-space points, `(batch, *event)`.
    - `z`: the base-space points z(t1), `(batch, *event)`.
    - `log_prob`: log p(x) in nats, `(batch,)` (a Hutchinson estimate unless the divergence is exact).
    - `reg`: regulariser name → integrated value per example (`(batch,)`), `"frobenius"` included
      when asked for.
    - `nfe`: exact number of evaluations of the augmented field in the forward solve.
    """

    x: Any
    z: Any
    log_prob: jax.Array
    reg: dict
    nfe: jax.Array


def _check_regularizers(regularizers, frobenius: bool) -> tuple:
    if isinstance(regularizers, AbstractRegularizer):
        regularizers = (regularizers,)
    regularizers = tuple(regularizers)
    if frobenius and any(isinstance(r, AbstractRegularizer) and r.name == "frobenius" for r in regularizers):
        raise ValueError(
            "regularizers must not hold a 'frobenius' regulariser when frobenius=True "
            "(the flow integrates that term from its own jvp)"
        )
    return regularizers


class AugmentedFlowField(eqx.Module):
    """(t, (z, a[, e]), (params, eps)) ↦ (f(t, z), −div f[, mean_D (∂f/∂z ε)²]): the flow's augmented dynamics.

    A module rather than a closure, so that equal flows share one compilation of the solve.
    """

    field: Callable = eqx.field(static=True)
    divergence: str = eqx.field(static=True)
    frobenius: bool = eqx.field(static=True, default=False)
    exact_block: int | None = eqx.field(static=True, default=None)

    def __call__(self, t, state, args):
        params, eps = args
        z = state[0]

        def fn(z_):
            return self.field(t, z_, params)

        if self.divergence == "exact":
            dz, div, frob = exact_divergence(fn, z, self.exact_block)
        else:
            dz, div, frob = hutchinson_divergence(fn, z, eps)
        out = (dz, -div.astype(state[1].dtype))
        return out + (frob.astype(state[1].dtype),) if self.frobenius else out


class TimeReversedField(eqx.Module):
    """g(s, z, params) = −f(t0 + t1 − s, z, params): solving g forward over [t0, t1] runs f backwards."""

    field: Callable = eqx.field(static=True)
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)

    def __call__(self, s, z, params):
        return jax.tree_util.tree_map(jnp.negative, self.field(self.t0 + self.t1 - s, z, params))


class CNF(eqx.Module):
    """A continuous normalising flow: x = z(t0) → z(t1) ~ N(0, I) under dz/dt = f(t, z, params).

    **Arguments**
    - `field`: `f(t, z, params)` on a batch `z` of shape `(batch, *event_shape)`, acting on each
      example separately (e.g. `taynode.models.as_field(ConcatSquashMLP())`). It must be jet-safe
      for R_K (activations from `taynode.activations`).
    - `event_shape`: shape of one example, e.g. `(2,)`, `(43,)` or `(28, 28, 1)`.
    - `divergence`: `"exact"` (full Jacobian trace, D jvps), `"rademacher"` or `"gaussian"`
      (Hutchinson, one jvp).
    - `t0`, `t1`: the integration interval (default [0, 1], as FFJORD's and the paper's code).
    - `solver`, `rtol`, `atol`, `adjoint`, `max_steps`: passed to `taynode.solve` (default Dopri5
      at 1e-5, the original MNIST script's tolerance; the tabular script used 1.4e-8, float64).
    - `exact_block`: with the exact divergence, how many of the D jvps run at once (None: all;
      see `exact_divergence`): bounds the memory of the exact trace of an image.

    The module holds no arrays; parameters are passed to each method.

    **Raises** `ValueError` naming `divergence`, `event_shape`, `t0`/`t1` or `solver` when bad.
    """

    field: Callable = eqx.field(static=True)
    event_shape: tuple = eqx.field(static=True)
    divergence: str = eqx.field(static=True, default="exact")
    t0: float = eqx.field(static=True, default=0.0)
    t1: float = eqx.field(static=True, default=1.0)
    solver: str = eqx.field(static=True, default="dopri5")
    rtol: float | None = eqx.field(static=True, default=1e-5)
    atol: float | None = eqx.field(static=True, default=1e-5)
    adjoint: Any = eqx.field(static=True, default="recursive")
    max_steps: int = eqx.field(static=True, default=4096)
    exact_block: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}, got {self.divergence!r}")
        shape = self.event_shape
        if not isinstance(shape, tuple) or not shape or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape
        ):
            raise ValueError(f"event_shape must be a non-empty tuple of ints >= 1, got {shape!r}")
        if not (isinstance(self.t0, (int, float)) and isinstance(self.t1, (int, float)) and self.t1 > self.t0):
            raise ValueError(f"t1 must be greater than t0, got t0={self.t0!r}, t1={self.t1!r}")
        block = self.exact_block
        if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
            raise ValueError(f"exact_block must be None or an int >= 1, got {block!r}")

    # -- the augmented dynamics ---------------------------------------------------------------

    def augmented(self, field: Callable | None = None, *, frobenius: bool = False) -> AugmentedFlowField:
        """The augmented field (t, (z, a[, e]), (params, eps)) ↦ (f, −div[, frobenius integrand]).

        `field` defaults to the flow's own; `eps` is the Hutchinson probe (None when exact).
        """
        return AugmentedFlowField(self.field if field is None else field, self.divergence, frobenius, self.exact_block)

    def _reversed_field(self) -> TimeReversedField:
        return TimeReversedField(self.field, self.t0, self.t1)

    def _check_batch(self, x, name: str):
        shape = jnp.shape(x)
        if len(shape) != len(self.event_shape) + 1 or tuple(shape[1:]) != self.event_shape:
            raise ValueError(
                f"{name} must have shape (batch, {', '.join(map(str, self.event_shape))}), got {tuple(shape)}"
            )
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise ValueError(f"{name} must be a floating-point array, got dtype {jnp.result_type(x)}")

    def _probe(self, key, z):
        if self.divergence == "exact":
            return None
        if key is None:
            raise ValueError(
                f"key must be a jax.random key for the Hutchinson divergence ({self.divergence!r}), got None"
            )
        return draw_probe(key, z.shape, z.dtype, self.divergence)

    def _solve(self, field, y0, params, key, regularizers, frobenius):
        regularizers = _check_regularizers(regularizers, frobenius)
        z0 = y0
        zero = jnp.zeros(z0.shape[:1], z0.dtype)
        state0 = (z0, zero, zero) if frobenius else (z0, zero)
        eps = self._probe(key, z0)
        sol = solve(
            self.augmented(field, frobenius=frobenius),
            state0,
            (params, eps),
            t0=self.t0,
            t1=self.t1,
            solver=self.solver,
            rtol=self.rtol,
            atol=self.atol,
            regularizers=regularizers,
            batched=True,
            adjoint=self.adjoint,
            max_steps=self.max_steps,
        )
        reg = dict(sol.reg)
        if frobenius:
            reg["frobenius"] = sol.y1[2]
        return sol.y1[0], sol.y1[1], reg, sol.nfe

    # -- density and sampling -----------------------------------------------------------------

    def log_prob(
        self,
        params,
        x,
        *,
        key=None,
        regularizers: Sequence[AbstractRegularizer] = (),
        frobenius: bool = False,
    ) -> FlowResult:
        """log p(x) per example (nats), the base point z(t1), regularisers and NFE.

        **Arguments**
        - `params`: the field's parameters. `x`: a batch `(batch, *event_shape)`, floating point.
        - `key`: draws the Hutchinson probe (required unless the divergence is exact).
        - `regularizers`: integrated alongside (see `taynode.solve`); give each `part=0` so it sees
          z only, e.g. `(TaylorRK(2, part=0),)`.
        - `frobenius`: also integrate RNODE's Jacobian term from the divergence's own jvp
          (`reg["frobenius"]`, per example mean_D (Jε)²).

        **Returns** a `FlowResult`; `log_prob = log N(z(t1)) + ∫ tr(∂f/∂z) dt`.

        **Raises** `ValueError` naming `x` (wrong shape or dtype), `key` (missing for Hutchinson)
        or `regularizers`; at run time an error when `x` holds a non-finite value.
        """
        self._check_batch(x, "x")
        x = jnp.asarray(x)
        x = eqx.error_if(x, ~jnp.all(jnp.isfinite(x)), "x holds a non-finite value (nan or inf)")
        z, a, reg, nfe = self._solve(self.field, x, params, key, regularizers, frobenius)
        return FlowResult(x=x, z=z, log_prob=standard_normal_log_prob(z) - a, reg=reg, nfe=nfe)

    def sample(self, params, key, num: int, *, dtype=None):
        """`num` samples x = z(t0), z(t1) ~ N(0, I), by solving the time-reversed field.

        Only z is solved (no divergence). **Returns** an array `(num, *event_shape)`.
        """
        z1 = self._base_sample(key, num, dtype)
        sol = solve(
            self._reversed_field(),
            z1,
            params,
            t0=self.t0,
            t1=self.t1,
            solver=self.solver,
            rtol=self.rtol,
            atol=self.atol,
            batched=True,
            adjoint=self.adjoint,
            max_steps=self.max_steps,
        )
        return sol.y1

    def sample_and_log_prob(self, params, key, num: int, *, dtype=None) -> FlowResult:
        """`num` samples with their log-density, integrating the divergence along the reversed solve.

        With g(s, z) = −f(t0 + t1 − s, z) the augmented state (x, a) has a' = −div g = div f, so
        log p(x) = log N(z) + a(t1). `key` draws the base points (the same as `sample` with that key)
        and, through `jax.random.fold_in(key, 1)`, the Hutchinson probe.
        **Returns** a `FlowResult` (`x` the samples, `z` the base points).
        """
        z1 = self._base_sample(key, num, dtype)
        x, a, reg, nfe = self._solve(self._reversed_field(), z1, params, jr.fold_in(key, 1), (), False)
        return FlowResult(x=x, z=z1, log_prob=standard_normal_log_prob(z1) + a, reg=reg, nfe=nfe)

    def _base_sample(self, key, num, dtype):
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"num must be an int >= 1, got {num!r}")
        dtype = jnp.result_type(float) if dtype is None else dtype
        return jr.normal(key, (num,) + self.event_shape, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Images: dequantisation, logit transform, bits per dimension
# ---------------------------------------------------------------------------------------------


def dequantize(key, pixels, *, levels: int = 256, dtype=None):
    """Uniform dequantisation: x = (pixel + u) / levels, u ~ U(0, 1), so x ∈ (0, 1).

    As the original code, u is drawn from [1e-15, 1 − 1e-15] so that x never reaches 0 or 1.
    **Arguments**: `pixels` integers in {0, …, levels − 1} (any shape). **Returns** floats.
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    pixels = jnp.asarray(pixels).astype(dtype)
    u = jr.uniform(key, pixels.shape, dtype=dtype, minval=1e-15, maxval=1 - 1e-15)
    return (pixels + u) / levels


def logit_transform(x, alpha: float = 1e-5):
    """FFJORD's logit transform y = log s − log(1 − s), s = α + (1 − 2α) x, and its log-Jacobian.

    **Arguments**: `x` a batch `(batch, …)` in [0, 1]; `alpha` (FFJORD: 1e-5).
    **Returns** `(y, log_det)` with `log_det[b] = Σ_i log|dy_i/dx_i| = Σ_i [log(1 − 2α) − log s_i − log(1 − s_i)]`,
    so that log p(x) = log p(y) + log_det.
    """
    s = alpha + (1 - 2 * alpha) * x
    y = jnp.log(s) - jnp.log1p(-s)
    return y, _per_example_sum(math.log(1 - 2 * alpha) - jnp.log(s) - jnp.log1p(-s))


def inverse_logit_transform(y, alpha: float = 1e-5):
    """x = (sigmoid(y) − α) / (1 − 2α), the inverse of `logit_transform` (samples back to [0, 1])."""
    return (sigmoid(y) - alpha) / (1 - 2 * alpha)


def bits_per_dim(log_prob, dims: int, *, levels: int = 256):
    """Bits per dimension of `levels`-level data from the log-density of x ∈ [0, 1)^D (nats).

    The density of the dequantised pixel values v = levels · x ∈ [0, levels)^D is
    p(x) / levels^D, so bits/dim = −(log p(x)/D − log levels) / log 2 (FFJORD's formula).
    Works per example or on a mean log-density.
    """
    if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
        raise ValueError(f"dims must be an int >= 1, got {dims!r}")
    return -(log_prob / dims - math.log(levels)) / math.log(2)


# ---------------------------------------------------------------------------------------------
# Layers (flax, jet-safe)
# ---------------------------------------------------------------------------------------------


class ConcatSquashLinear(nn.Module):
    """FFJORD's ConcatSquashLinear: out = (W h + b) ⊙ σ(a t + c) + d t.

    W, b: a dense layer on the input; a, c ∈ R^features: the "hyper gate" (a dense layer on the
    scalar t, with bias), squashed by the logistic sigmoid σ; d ∈ R^features: the "hyper bias" (a
    dense layer on t without bias). As FFJORD's `diffeq_layers.ConcatSquashLinear`
    (`_layer(x) * sigmoid(_hyper_gate(t)) + _hyper_bias(t)`). Initialisation: flax's defaults
    (LeCun normal weights, zero biases), the same as the Haiku defaults of the paper's
    `ffjord_tabular.py`; FFJORD's PyTorch code used PyTorch's uniform defaults.

    Applies to `h` of shape `(..., in_features)`; `t` a scalar.
    """

    features: int

    @nn.compact
    def __call__(self, t, h):
        tt = jnp.reshape(jnp.asarray(t, h.dtype), (1,))
        gate = sigmoid(nn.Dense(self.features, name="hyper_gate")(tt))
        shift = nn.Dense(self.features, use_bias=False, name="hyper_bias")(tt)
        return nn.Dense(self.features, name="layer")(h) * gate + shift


class ConcatSquashMLP(nn.Module):
    """A time-conditioned MLP field of ConcatSquashLinear layers (FFJORD's 2-D and tabular fields).

    ConcatSquashLinear(hidden[0]) → σ → … → ConcatSquashLinear(hidden[-1]) → σ →
    ConcatSquashLinear(D), D = the input's last dimension. FFJORD's 2-D runs: hidden (64, 64, 64);
    the paper's MINIBOONE run: hidden (20·43, 20·43) = (860, 860), softplus.

    **Arguments**
    - `hidden`: widths of the hidden layers.
    - `activation`: a jet-safe activation name from `taynode.activations` (default softplus).
    """

    hidden: Sequence[int] = (64, 64, 64)
    activation: str = "softplus"

    @nn.compact
    def __call__(self, t, z):
        sigma = get_activation(self.activation)
        h = z
        for width in self.hidden:
            h = sigma(ConcatSquashLinear(width)(t, h))
        return ConcatSquashLinear(z.shape[-1])(t, h)


CONV_IMPLS = ("conv", "im2col")


def _conv_same(h, kernel, impl: str):
    """Stride-1 convolution with 'same' zero padding, channels last, kernel (k, k, in, out)."""
    if impl == "conv":
        return jax.lax.conv_general_dilated(
            h, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    k = kernel.shape[0]
    lo = (k - 1) // 2
    hp = jnp.pad(h, ((0, 0), (lo, k - 1 - lo), (lo, k - 1 - lo), (0, 0)))
    height, width = h.shape[1], h.shape[2]
    patches = jnp.concatenate(
        [hp[:, i : i + height, j : j + width, :] for i in range(k) for j in range(k)], axis=-1
    )
    return patches @ kernel.reshape(-1, kernel.shape[-1])


class ConcatConv2D(nn.Module):
    """FFJORD's ConcatConv2d: a convolution of [t, h], t broadcast to one extra input channel.

    Channels-last (`h` of shape `(batch, height, width, channels)`); the time channel comes
    first, as FFJORD and the paper's `ffjord_mnist.py`. `kernel_size × kernel_size`, stride 1,
    zero padding that keeps the image size (padding 1 for 3×3). Parameters `kernel`
    `(k, k, channels + 1, features)` (LeCun normal by default) and `bias` (zeros).

    `impl` chooses how the convolution is computed; both give the same values and parameters:
    `"conv"` is XLA's convolution; `"im2col"` concatenates the k² shifted copies of the padded
    input and does one matrix product. On CPU, XLA's convolution *gradients* inside a loop (as in
    the backward pass of an ODE solve) are more than ten times slower than outside one, and
    `"im2col"` avoids that (`benchmarks/ffjord_step.py` measures both).
    """

    features: int
    kernel_size: int = 3
    impl: str = "conv"
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, t, h):
        if self.impl not in CONV_IMPLS:
            raise ValueError(f"impl must be one of {CONV_IMPLS}, got {self.impl!r}")
        tt = jnp.ones_like(h[..., :1]) * jnp.asarray(t, h.dtype)
        x = jnp.concatenate([tt, h], axis=-1)
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), h.dtype)
        bias = self.param("bias", self.bias_init, (self.features,), h.dtype)
        return _conv_same(x, kernel, self.impl) + bias


class ConcatConvField(nn.Module):
    """The single-scale image field of the paper's `ffjord_mnist.py`: ConcatConv2D 64-64-64-C.

    ConcatConv2D(hidden[0]) → σ → … → ConcatConv2D(hidden[-1]) → σ → ConcatConv2D(C), 3×3,
    C = the input's channels; the last layer's kernel and bias start at zero (so the flow starts
    as the identity, as the original). Input `(batch, height, width, channels)`.

    **Arguments**
    - `hidden`: channels of the hidden layers (original: (64, 64, 64)).
    - `activation`: a jet-safe activation name (original: softplus).
    - `impl`: how `ConcatConv2D` computes its convolution (`"conv"` or `"im2col"`, same values and
      parameters; `"im2col"` trains much faster on CPU).
    """

    hidden: Sequence[int] = (64, 64, 64)
    activation: str = "softplus"
    impl: str = "conv"

    @nn.compact
    def __call__(self, t, z):
        sigma = get_activation(self.activation)
        h = z
        for width in self.hidden:
            h = sigma(ConcatConv2D(width, impl=self.impl)(t, h))
        zeros = nn.initializers.zeros_init()
        return ConcatConv2D(z.shape[-1], impl=self.impl, kernel_init=zeros, bias_init=zeros)(t, h)
