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
