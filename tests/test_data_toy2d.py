"""Toy 2-D samplers: shapes, seeding, and statistics implied by each documented formula."""

import numpy as np
import pytest

from taynode.data.toy2d import EIGHT_GAUSSIANS_CENTERS, RING_RADII, TOY_DENSITIES, sample_toy2d

N = 40000


@pytest.mark.parametrize("name", sorted(TOY_DENSITIES))
def test_shape_dtype_and_seeding(name):
    x = sample_toy2d(name, 101, seed=3)
    assert x.shape == (101, 2) and x.dtype == np.float64 and np.all(np.isfinite(x))
    np.testing.assert_array_equal(x, sample_toy2d(name, 101, seed=3))
    assert not np.array_equal(x, sample_toy2d(name, 101, seed=4))
    assert sample_toy2d(name, 7, seed=3, dtype=np.float32).dtype == np.float32
    rng = np.random.default_rng(3)
    first, second = sample_toy2d(name, 5, seed=rng), sample_toy2d(name, 5, seed=rng)
    assert not np.array_equal(first, second)  # a Generator is advanced: a stream of fresh batches


def test_eight_gaussians_components():
    """Nearest-centre assignment: weights 1/8 (±0.01), means at the centres (±0.02), σ = 0.5/√2 (±3 %)."""
    x = sample_toy2d("8gaussians", N, seed=0)
    np.testing.assert_allclose(np.linalg.norm(EIGHT_GAUSSIANS_CENTERS, axis=1), 2 * np.sqrt(2))
    k = np.argmin(((x[:, None, :] - EIGHT_GAUSSIANS_CENTERS[None]) ** 2).sum(-1), axis=1)
    for j in range(8):
        comp = x[k == j]
        assert abs(len(comp) / N - 1 / 8) < 0.01
        np.testing.assert_allclose(comp.mean(0), EIGHT_GAUSSIANS_CENTERS[j], atol=0.02)
        np.testing.assert_allclose(comp.std(0), 0.5 / np.sqrt(2), rtol=0.03)


def test_pinwheel_arms_follow_the_formula():
    """Undo the formula: θ − 0.25·exp(|x|/2) lies near a multiple of 2π/5 for almost every point."""
    x = sample_toy2d("pinwheel", N, seed=1)
    r = np.linalg.norm(x, axis=1) / 2
    resid = np.arctan2(x[:, 1], x[:, 0]) - 0.25 * np.exp(r)
    step = 2 * np.pi / 5
    resid = (resid + step / 2) % step - step / 2
    assert np.mean(np.abs(resid) < 0.35) > 0.97
    assert abs(np.median(r) - 1) < 0.02
    arm = np.round((np.arctan2(x[:, 1], x[:, 0]) - 0.25 * np.exp(r)) / step) % 5
    np.testing.assert_allclose(np.bincount(arm.astype(int), minlength=5) / N, 0.2, atol=0.01)


def test_checkerboard_support_and_squares():
    x = sample_toy2d("checkerboard", N, seed=2)
    assert x.min() >= -4 and x.max() < 4
    cells = np.floor(x / 2).astype(int)  # in {-2, -1, 0, 1}²
    assert np.all((cells[:, 0] + cells[:, 1]) % 2 == 0)
    _, counts = np.unique(cells, axis=0, return_counts=True)
    assert len(counts) == 8
    np.testing.assert_allclose(counts / N, 1 / 8, atol=0.01)


def test_two_spirals_symmetry_and_extent():
    x = sample_toy2d("2spirals", N, seed=3)
    se = x.std(0) / np.sqrt(N)
    assert np.all(np.abs(x.mean(0)) < 5 * se)  # S·p/3 with a random sign S: symmetric about 0
    # |x| ≈ m/3 with m = 3π√u, so E|x| ≈ 2π/3 up to the shift and the noise
    assert abs(np.linalg.norm(x, axis=1).mean() - 2 * np.pi / 3) < 0.15
    assert np.linalg.norm(x, axis=1).max() < (3 * np.pi + 0.5 * np.sqrt(2)) / 3 + 0.6


def test_rings_radii():
    x = sample_toy2d("rings", N, seed=4)
    rho = np.linalg.norm(x, axis=1)
    nearest = np.argmin(np.abs(rho[:, None] - np.asarray(RING_RADII)[None]), axis=1)
    assert np.mean(np.abs(rho - np.asarray(RING_RADII)[nearest]) < 0.3) > 0.999  # noise σ = 0.08
    np.testing.assert_allclose(np.bincount(nearest, minlength=4) / N, 0.25, atol=0.01)
    np.testing.assert_allclose(np.abs(x.mean(0)), 0, atol=0.03)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="moons", n=10), "name must be one of"),
        (dict(name=None, n=10), "name must be one of"),
        (dict(name="rings", n=0), "n must be an int >= 1"),
        (dict(name="rings", n=2.5), "n must be an int >= 1"),
        (dict(name="rings", n=True), "n must be an int >= 1"),
        (dict(name="rings", n=10, seed=-1), "seed must be an int >= 0"),
        (dict(name="rings", n=10, seed="a"), "seed must be an int >= 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_toy2d(**kwargs)


# ---------------------------------------------------------------------------------------------
# Exact densities and the data's own NLL, against quadrature on a grid and the sampler itself
# ---------------------------------------------------------------------------------------------

from taynode.data.toy2d import TOY_LOG_DENSITIES, data_nll, log_density  # noqa: E402

# (half-width of the square grid, spacing): the densities vanish (< e^-30) outside; the spacing
# resolves the narrowest feature (pinwheel's tangential σ = 0.2 after the factor 2)
GRIDS = {"8gaussians": (6.0, 0.04), "pinwheel": (6.0, 0.05), "checkerboard": (4.0, 0.02)}


def _grid(name):
    half, h = GRIDS[name]
    g = np.arange(-half + h / 2, half, h)  # cell midpoints
    xx, yy = np.meshgrid(g, g, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1), h


@pytest.fixture(scope="module")
def grid_log_density():
    return {name: (*_grid(name), log_density(name, _grid(name)[0])) for name in TOY_LOG_DENSITIES}


@pytest.mark.parametrize("name", sorted(TOY_LOG_DENSITIES))
def test_exact_density_integrates_to_one(name, grid_log_density):
    _, h, logp = grid_log_density[name]
    assert np.sum(np.exp(logp)) * h * h == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", sorted(TOY_LOG_DENSITIES))
def test_data_nll_is_the_entropy_by_quadrature(name, grid_log_density):
    """H = −∫ p log p dx on the grid agrees with `data_nll` (Monte Carlo: within 4 standard errors)."""
    _, h, logp = grid_log_density[name]
    p = np.exp(logp)
    entropy = -np.sum(np.where(p > 0, p * np.where(p > 0, logp, 0.0), 0.0)) * h * h
    ref = data_nll(name, 200_000)
    assert abs(ref.value - entropy) < 4 * ref.se + 1e-6
    if name == "checkerboard":
        assert ref.se == 0 and ref.value == pytest.approx(np.log(32), abs=1e-15)
    else:
        assert 0 < ref.se < 0.005 and "Monte Carlo" in ref.method


@pytest.mark.parametrize("name", sorted(TOY_LOG_DENSITIES))
def test_exact_density_matches_the_sampler_cell_by_cell(name, grid_log_density):
    """The mass the density puts in each 1×1 cell matches the sampler's frequencies (binomial 5σ bound)."""
    pts, h, logp = grid_log_density[name]
    edges = np.arange(-8.0, 8.5, 1.0)
    cell = lambda x: np.clip(np.floor(x + 8.0), 0, 15).astype(int)  # noqa: E731
    mass = np.zeros((16, 16))
    np.add.at(mass, (cell(pts[:, 0]), cell(pts[:, 1])), np.exp(logp) * h * h)
    n = 100_000
    x = sample_toy2d(name, n, seed=11)
    freq = np.zeros((16, 16))
    np.add.at(freq, (cell(x[:, 0]), cell(x[:, 1])), 1.0 / n)
    assert len(edges) == 17
    bound = 5 * np.sqrt(mass * (1 - mass) / n) + 1e-4
    assert np.all(np.abs(freq - mass) <= bound)


def test_eight_gaussians_density_is_the_mixture_formula():
    """At a centre: (1/8)·N(0; 0, σ²I) plus the other components' (independent sum, σ = 0.5/√2)."""
    from taynode.data.toy2d import EIGHT_GAUSSIANS_CENTERS as C

    sigma2 = 0.125
    x = C[:1]
    d2 = np.sum((C - x) ** 2, axis=1)
    expected = np.sum(np.exp(-d2 / (2 * sigma2)) / (2 * np.pi * sigma2)) / 8
    assert log_density("8gaussians", x)[0] == pytest.approx(np.log(expected), rel=1e-12)


def test_pinwheel_density_on_the_arm_is_the_change_of_variables():
    """At r = 1, s = 0 of arm 0 (x = 2(cos θ, sin θ), θ = 0.25e): p = N(1; 1, 0.09)·N(0; 0, 0.01)/(5·4),
    the other arms' contributions being negligible there."""
    theta = 0.25 * np.e
    x = np.array([[2 * np.cos(theta), 2 * np.sin(theta)]])
    expected = 1 / (2 * np.pi * 0.3 * 0.1) / 20
    assert log_density("pinwheel", x)[0] == pytest.approx(np.log(expected), abs=1e-9)


def test_checkerboard_density_is_zero_off_the_dark_squares():
    logp = log_density("checkerboard", np.array([[1.0, 1.0], [3.0, 1.0], [-1.0, -1.0], [4.5, 0.5]]))
    np.testing.assert_array_equal(logp, [-np.log(32), -np.inf, -np.log(32), -np.inf])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: log_density("rings", np.zeros((2, 2))), r"^name must be one of .*got 'rings'$"),
        (lambda: log_density("pinwheel", np.zeros((2, 3))), r"^x must have shape \(n, 2\), got \(2, 3\)$"),
        (lambda: data_nll("2spirals"), r"^name must be one of .*got '2spirals'$"),
        (lambda: data_nll("8gaussians", 1), r"^n must be an int >= 2, got 1$"),
    ],
)
def test_bad_density_arguments_are_one_line_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
