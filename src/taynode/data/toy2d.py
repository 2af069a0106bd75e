"""Two-dimensional toy densities of the continuous-normalising-flow literature, as seeded samplers.

    x = sample_toy2d("8gaussians", 1000, seed=0)      # (1000, 2) float64 numpy array

Each density is defined by the formula in its sampler's docstring (the shapes of FFJORD's
`toy_data.py`, written here so that every number is stated; where FFJORD fixes the count per
component, these samplers draw the component at random, so any `n` works). All randomness comes
from one `numpy.random.Generator`: the same `seed` gives the same points.

**Exact densities and the data's own NLL.** Where the sampler's formula gives the density in closed
form (`TOY_LOG_DENSITIES`: 8 gaussians, pinwheel, checkerboard), `log_density(name, x)` evaluates
it, and `data_nll(name)` is the entropy H(p) = −E_p log p(x): the NLL (nats) of a model that *is*
the data's density, the floor a flow's test NLL approaches. Checkerboard: log 32 in closed form;
8 gaussians and pinwheel: a Monte-Carlo estimate −mean log p(x) over fresh samples, with its
standard error (no closed form for a mixture's entropy).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = [
    "TOY_DENSITIES",
    "sample_toy2d",
    "eight_gaussians",
    "pinwheel",
    "checkerboard",
    "two_spirals",
    "rings",
    "EIGHT_GAUSSIANS_CENTERS",
    "RING_RADII",
    "TOY_LOG_DENSITIES",
    "log_density",
    "DataNLL",
    "data_nll",
    "DATA_NLL_SEED",
]

#: the centres of the eight Gaussians: radius 4/√2 = 2√2, angles kπ/4, k = 0..7
EIGHT_GAUSSIANS_CENTERS = (4 / np.sqrt(2)) * np.stack(
    [np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], axis=1
)

#: radii of the four rings
RING_RADII = (0.75, 1.5, 2.25, 3.0)


def eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    """A mixture of eight Gaussians on a circle.

    x = (4 u_k + 0.5 ε) / √2, with k uniform on {0, …, 7}, u_k = (cos kπ/4, sin kπ/4) and
    ε ~ N(0, I₂): equal weights, means `EIGHT_GAUSSIANS_CENTERS` (radius 2√2 ≈ 2.83), standard
    deviation 0.5/√2 ≈ 0.354 in each coordinate.
    """
    k = rng.integers(0, 8, size=n)
    return EIGHT_GAUSSIANS_CENTERS[k] + (0.5 / np.sqrt(2)) * rng.standard_normal((n, 2))


def pinwheel(rng: np.random.Generator, n: int) -> np.ndarray:
    """Five curved arms.

    For arm k uniform on {0, …, 4}: r = 1 + 0.3 ε₁ (radial), s = 0.1 ε₂ (tangential), ε ~ N(0, I₂);
    angle θ = 2πk/5 + 0.25 eʳ; x = 2 R(θ) (r, s)ᵀ with R(θ) the rotation by θ. The arm bends
    because the angle grows with the radius.
    """
    k = rng.integers(0, 5, size=n)
    r = 1.0 + 0.3 * rng.standard_normal(n)
    s = 0.1 * rng.standard_normal(n)
    theta = 2 * np.pi * k / 5 + 0.25 * np.exp(r)
    c, si = np.cos(theta), np.sin(theta)
    return 2 * np.stack([c * r - si * s, si * r + c * s], axis=1)


def checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform on the eight dark squares of a 4 × 4 board on [−4, 4)².

    a ~ U[−2, 2); b = v − 2B + (⌊a⌋ mod 2) with v ~ U[0, 1), B ~ Bernoulli(1/2); x = 2 (a, b).
    Equivalently: uniform on the points of [−4, 4)² with ⌊x₁/2⌋ + ⌊x₂/2⌋ even (density 1/32 there).
    """
    a = rng.uniform(-2.0, 2.0, size=n)
    b = rng.uniform(0.0, 1.0, size=n) - 2 * rng.integers(0, 2, size=n) + np.mod(np.floor(a), 2)
    return 2 * np.stack([a, b], axis=1)


def two_spirals(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two interleaved spirals.

    m = √u · 3π with u ~ U[0, 1) (the angle, up to 540°); the point p = (−m cos m + 0.5 v₁,
    m sin m + 0.5 v₂), v ~ U[0, 1)²; a sign S = ±1 with probability 1/2 picks the spiral;
    x = S p / 3 + 0.1 ε, ε ~ N(0, I₂).
    """
    m = np.sqrt(rng.uniform(size=n)) * 3 * np.pi
    v = rng.uniform(size=(n, 2))
    p = np.stack([-np.cos(m) * m + 0.5 * v[:, 0], np.sin(m) * m + 0.5 * v[:, 1]], axis=1)
    sign = np.where(rng.integers(0, 2, size=n) == 1, 1.0, -1.0)[:, None]
    return sign * p / 3 + 0.1 * rng.standard_normal((n, 2))


def rings(rng: np.random.Generator, n: int) -> np.ndarray:
    """Four concentric rings.

    Radius ρ uniform on `RING_RADII` = (0.75, 1.5, 2.25, 3.0), angle φ ~ U[0, 2π);
    x = ρ (cos φ, sin φ) + 0.08 ε, ε ~ N(0, I₂). (FFJORD spaces the angles evenly; here they are random.)
    """
    rho = np.asarray(RING_RADII)[rng.integers(0, 4, size=n)]
    phi = rng.uniform(0.0, 2 * np.pi, size=n)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi)], axis=1) + 0.08 * rng.standard_normal((n, 2))


#: name → sampler `(rng, n) -> (n, 2)` array
TOY_DENSITIES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "8gaussians": eight_gaussians,
    "pinwheel": pinwheel,
    "checkerboard": checkerboard,
    "2spirals": two_spirals,
    "rings": rings,
}


def sample_toy2d(name: str, n: int, *, seed: int | np.random.Generator = 0, dtype=np.float64) -> np.ndarray:
    """`n` points of the toy density `name`.

    **Arguments**
    - `name`: one of `TOY_DENSITIES`: `"8gaussians"`, `"pinwheel"`, `"checkerboard"`,
      `"2spirals"`, `"rings"`.
    - `n`: number of points, an int >= 1.
    - `seed`: an int >= 0 (→ `numpy.random.default_rng(seed)`) or a `numpy.random.Generator`
      (advanced in place, for a stream of fresh batches).
    - `dtype`: a numpy floating dtype (default float64).

    **Returns** an array of shape `(n, 2)`.

    **Raises** `ValueError` naming `name`, `n` or `seed` when one is bad.
    """
    if not isinstance(name, str) or name not in TOY_DENSITIES:
        raise ValueError(f"name must be one of {sorted(TOY_DENSITIES)}, got {name!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if isinstance(seed, np.random.Generator):
        rng = seed
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        rng = np.random.default_rng(int(seed))
    else:
        raise ValueError(f"seed must be an int >= 0 or a numpy.random.Generator, got {seed!r}")
    return TOY_DENSITIES[name](rng, int(n)).astype(dtype)


# ---------------------------------------------------------------------------------------------
# Exact densities and the entropy (the data's own NLL)
# ---------------------------------------------------------------------------------------------

#: standard deviation of each coordinate of an 8-gaussians component
_EIGHT_GAUSSIANS_SIGMA = 0.5 / np.sqrt(2)
#: pinwheel: arms, radial and tangential standard deviations, angle rate (θ = 2πk/5 + rate·eʳ)
_PINWHEEL_ARMS, _PINWHEEL_RADIAL_SD, _PINWHEEL_TANGENTIAL_SD, _PINWHEEL_RATE = 5, 0.3, 0.1, 0.25
#: points of the ψ grid on which the pinwheel's preimages are bracketed (see `_pinwheel_log_density`)
_PINWHEEL_GRID = 128


def _normal_logpdf(v, mean, sd):
    return -0.5 * ((v - mean) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)


def _eight_gaussians_log_density(x):
    """log of (1/8) Σ_k N(x; μ_k, σ² I), σ = 0.5/√2 (log-sum-exp over the components)."""
    sq = np.sum((x[:, None, :] - EIGHT_GAUSSIANS_CENTERS[None]) ** 2, axis=-1)
    logc = -sq / (2 * _EIGHT_GAUSSIANS_SIGMA**2) - math.log(2 * math.pi * _EIGHT_GAUSSIANS_SIGMA**2) - math.log(8)
    top = logc.max(axis=1)
    return top + np.log(np.sum(np.exp(logc - top[:, None]), axis=1))


def _checkerboard_log_density(x):
    """log(1/32) on the dark squares (⌊x₁/2⌋ + ⌊x₂/2⌋ even, inside [−4, 4)²), −inf elsewhere."""
    inside = np.all((x >= -4) & (x < 4), axis=1)
    dark = np.mod(np.floor(x[:, 0] / 2) + np.floor(x[:, 1] / 2), 2) == 0
    return np.where(inside & dark, -math.log(32.0), -np.inf)


def _pinwheel_h(rho, psi):
    """h_ρ(ψ) = ψ + 0.25 exp(ρ cos ψ): the angle of x, less the arm's 2πk/5, at polar (ρ, ψ) of (r, s)."""
    return psi + _PINWHEEL_RATE * np.exp(rho * np.cos(psi))


def _pinwheel_root(rho, target, lo, hi):
    """ψ in [lo, hi] with h_ρ(ψ) = target (bracketed): 8 bisections, then 4 Newton steps kept in the bracket."""
    rising = _pinwheel_h(rho, hi) > _pinwheel_h(rho, lo)
    for _ in range(8):
        mid = 0.5 * (lo + hi)
        go_low = (_pinwheel_h(rho, mid) > target) == rising
        hi, lo = np.where(go_low, mid, hi), np.where(go_low, lo, mid)
    psi = 0.5 * (lo + hi)
    for _ in range(4):
        slope = 1 - _PINWHEEL_RATE * rho * np.sin(psi) * np.exp(rho * np.cos(psi))
        psi = np.clip(psi - (_pinwheel_h(rho, psi) - target) / slope, lo, hi)
    return psi


def _pinwheel_log_density(x, chunk: int = 8192):
    """The pinwheel's density as the push-forward of its Gaussian (r, s), summed over arms and preimages.

    For arm k write (r, s) = ρ (cos ψ, sin ψ). The sampler maps it to x = 2ρ (cos φ, sin φ) with
    φ = 2πk/5 + h_ρ(ψ), h_ρ(ψ) = ψ + 0.25 exp(ρ cos ψ). So a point x (|x| = 2ρ, angle φ) comes from
    the ψ ∈ (−π, π] with h_ρ(ψ) ≡ φ − 2πk/5 (mod 2π), and the Jacobian determinant of (r, s) ↦ x is
    det = 4 (1 − 0.25 eʳ s) = 4 h_ρ'(ψ). Hence

        p(x) = (1/5) Σ_k Σ_ψ N(r; 1, 0.3²) N(s; 0, 0.1²) / (4 |h_ρ'(ψ)|).

    h_ρ rises by exactly 2π over (−π, π]; it is monotone (one preimage per arm) unless ρ is large
    (|x| ≳ 4, where the density is below e^-20), where it may have three. The preimages are
    bracketed on a grid of `_PINWHEEL_GRID` ψ values (h_ρ moves by less than 2π between grid points
    wherever the density is not negligible) and refined by bisection and Newton steps (`_pinwheel_root`).
    """
    out = np.empty(len(x))
    psi_grid = np.linspace(-np.pi, np.pi, _PINWHEEL_GRID + 1)
    arms = 2 * np.pi * np.arange(_PINWHEEL_ARMS) / _PINWHEEL_ARMS
    for start in range(0, len(x), chunk):
        xc = x[start:start + chunk]
        rho = np.linalg.norm(xc, axis=1) / 2
        phi = np.arctan2(xc[:, 1], xc[:, 0])
        # u = (h_ρ(ψ) − φ + 2πk/5) / 2π on the grid: a preimage where u crosses an integer
        h = _pinwheel_h(rho[:, None], psi_grid[None, :]) - phi[:, None]
        u = np.floor((h[:, None, :] + arms[None, :, None]) / (2 * np.pi))
        i, k, j = np.nonzero(u[..., 1:] != u[..., :-1])
        m = np.maximum(u[i, k, j], u[i, k, j + 1])  # the integer crossed (at most one per grid interval)
        psi = _pinwheel_root(rho[i], phi[i] - arms[k] + 2 * np.pi * m, psi_grid[j], psi_grid[j + 1])
        r, s = rho[i] * np.cos(psi), rho[i] * np.sin(psi)
        jac = 4 * np.abs(1 - _PINWHEEL_RATE * np.exp(r) * s)
        logc = (_normal_logpdf(r, 1.0, _PINWHEEL_RADIAL_SD) + _normal_logpdf(s, 0.0, _PINWHEEL_TANGENTIAL_SD)
                - np.log(jac) - math.log(_PINWHEEL_ARMS))
        top = np.full(len(xc), -np.inf)
        np.maximum.at(top, i, logc)
        total = np.zeros(len(xc))
        np.add.at(total, i, np.exp(logc - top[i]))
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start:start + chunk] = np.where(total > 0, top + np.log(total), -np.inf)
    return out


#: name → exact log-density `x (n, 2) -> (n,)`, for the densities whose formula gives one
TOY_LOG_DENSITIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "8gaussians": _eight_gaussians_log_density,
    "pinwheel": _pinwheel_log_density,
    "checkerboard": _checkerboard_log_density,
}


def log_density(name: str, x) -> np.ndarray:
    """The exact log-density (nats) of the toy density `name` at the points `x`.

    **Arguments**
    - `name`: one of `TOY_LOG_DENSITIES` (`"8gaussians"`, `"pinwheel"`, `"checkerboard"`);
      2spirals and rings have no closed-form density here.
    - `x`: points, an array of shape `(n, 2)` (computed in float64).

    **Returns** an array `(n,)` of log p(x) (−inf off the support).

    **Raises** `ValueError` naming `name` or `x` when one is bad.
    """
    if not isinstance(name, str) or name not in TOY_LOG_DENSITIES:
        raise ValueError(f"name must be one of {sorted(TOY_LOG_DENSITIES)} (the densities with an exact "
                         f"log-density), got {name!r}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (n, 2), got {x.shape}")
    return TOY_LOG_DENSITIES[name](x)


class DataNLL(NamedTuple):
    """The data's own NLL H(p) = −E_p log p(x) in nats, its standard error (0: closed form), and how."""

    value: float
    se: float
    method: str


#: seed of the Monte-Carlo samples of `data_nll` (independent of every training and test set)
DATA_NLL_SEED = 271828


@functools.lru_cache(maxsize=16)
def data_nll(name: str, n: int = 1_000_000, seed: int = DATA_NLL_SEED) -> DataNLL:
    """The entropy of the toy density `name`: the NLL (nats) of a model equal to the data's density.

    - checkerboard: uniform on 8 squares of side 2 (area 32): H = log 32, exactly.
    - 8 gaussians, pinwheel: −mean log p(x) over `n` fresh samples (drawn with `seed`) under the
      exact density (`log_density`), with its standard error std(log p)/√n.

    **Returns** a `DataNLL(value, se, method)`.

    **Raises** `ValueError` naming `name` or `n` when one is bad.
    """
    if not isinstance(name, str) or name not in TOY_LOG_DENSITIES:
        raise ValueError(f"name must be one of {sorted(TOY_LOG_DENSITIES)} (the densities with an exact "
                         f"log-density), got {name!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    if name == "checkerboard":
        return DataNLL(math.log(32.0), 0.0, "closed form: log 32 (uniform on 8 squares of side 2)")
    logp = log_density(name, sample_toy2d(name, int(n), seed=seed))
    return DataNLL(float(-np.mean(logp)), float(np.std(logp, ddof=1) / np.sqrt(n)),
                   f"Monte Carlo: -mean log p(x) over {int(n)} samples (seed {seed}) under the exact density")
