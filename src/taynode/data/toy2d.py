"""Two-dimensional toy densities of the continuous-normalising-flow literature, as seeded samplers.

    x = sample_toy2d("8gaussians", 1000, seed=0)      # (1000, 2) float64 numpy array

Each density is defined by the formula in its sampler's docstring (the shapes of FFJORD's
`toy_data.py`, written here so that every number is stated; where FFJORD fixes the count per
component, these samplers draw the component at random, so any `n` works). All randomness comes
from one `numpy.random.Generator`: the same `seed` gives the same points.
"""

from __future__ import annotations

from collections.abc import Callable

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
