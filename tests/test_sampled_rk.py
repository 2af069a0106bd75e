"""The sampled R_K estimator: unbiased given the step grid, outside the step-size control."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import mlp_field, mlp_params

from taynode.regularization import Regularization
from taynode.regularizers import TaylorRK, per_example_mean_square
from taynode.solve import solve
from taynode.taylor import derivatives_from

F = mlp_field("tanh")
P = mlp_params(jr.PRNGKey(3), 2)
Y0 = jnp.array([[0.7, -0.4], [0.2, 0.9], [-1.1, 0.3]])
KW = dict(t0=0.0, t1=1.0, rtol=1e-6, atol=1e-6, batched=True)


def _sampled(order, key, **kw):
    return solve(F, Y0, P, regularizers=[TaylorRK(order, estimator="sampled", key=key)], **KW, **kw)


def _integrand(order, t, y):
    dk = derivatives_from(F, t, y, P, order, F(t, y, P), method="jvp")[-1]
    return per_example_mean_square(dk, True)


def _quadrature_on_interpolant(sol, order, nodes=8):
    """∫ integrand(t, y(t)) dt along the dense interpolant, Gauss–Legendre on each step of its grid."""
    grid = np.asarray(sol.raw.interpolation.ts)
    grid = grid[np.isfinite(grid)]
    x, w = np.polynomial.legendre.leggauss(nodes)
    total = 0.0
    for a, b in zip(grid[:-1], grid[1:]):
        for xi, wi in zip(x, w):
            t = 0.5 * (a + b) + 0.5 * (b - a) * xi
            y = sol.raw.evaluate(t)[0][0]
            total = total + 0.5 * (b - a) * wi * _integrand(order, t, y)
    return np.asarray(total)


@pytest.mark.parametrize("order", [2, 3])
def test_mean_over_draws_is_the_integral_along_the_interpolant(order):
    reference = _quadrature_on_interpolant(_sampled(order, jr.PRNGKey(0), dense=True), order)
    draws = jax.jit(jax.vmap(lambda k: _sampled(order, k).reg[f"R{order}"]))(jr.split(jr.PRNGKey(1), 4000))
    draws = np.asarray(draws)  # (4000, 3): one estimate per draw and example
    mean, stderr = draws.mean(axis=0), draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(stderr > 0)  # the draws do differ
    np.testing.assert_array_less(np.abs(mean - reference), 4 * stderr + 1e-12)


def test_the_regulariser_leaves_the_steps_and_the_solution_alone():
    plain = solve(F, Y0, P, **KW)
    for key in (jr.PRNGKey(0), jr.PRNGKey(7)):
        sol = _sampled(2, key)
        assert int(sol.num_steps) == int(plain.num_steps)
        assert int(sol.nfe) == int(plain.nfe)
        np.testing.assert_array_equal(np.asarray(sol.y1), np.asarray(plain.y1))


def test_sampled_and_exact_estimators_side_by_side():
    exact = solve(F, Y0, P, regularizers=[TaylorRK(2), TaylorRK(3, estimator="sampled", key=jr.PRNGKey(0))], **KW)
    assert set(exact.reg) == {"R2", "R3"}
    assert np.all(np.asarray(exact.reg["R3"]) > 0)


def test_the_gradient_matches_finite_differences_on_a_fixed_grid():
    # fixed steps: the grid, and so the sample points, do not move with the parameters
    kw = dict(KW, rtol=None, atol=None, dt0=0.125)

    def loss(p):
        sol = solve(F, Y0, p, regularizers=[TaylorRK(2, estimator="sampled", key=jr.PRNGKey(0))], **kw)
        return jnp.mean(sol.reg["R2"])

    grad = jax.grad(loss)(P)
    direction = jax.tree_util.tree_map(lambda x: jr.normal(jr.PRNGKey(x.size), x.shape), P)
    eps = 1e-5
    shift = lambda s: jax.tree_util.tree_map(lambda a, d: a + s * eps * d, P, direction)  # noqa: E731
    fd = (loss(shift(1)) - loss(shift(-1))) / (2 * eps)
    ad = sum(jnp.vdot(grad[k], direction[k]) for k in P)
    assert float(ad) != 0
    np.testing.assert_allclose(float(ad), float(fd), rtol=1e-6)


def test_bad_estimator_inputs():
    with pytest.raises(ValueError, match=r"^estimator must be one of \('exact', 'sampled'\)"):
        TaylorRK(2, estimator="random")
    with pytest.raises(ValueError, match=r"^estimator='sampled' needs key="):
        TaylorRK(2, estimator="sampled")
    with pytest.raises(ValueError, match=r"^estimator='sampled' only applies to reg='taylor'"):
        Regularization("rnode", lam_kin=1.0, estimator="sampled")


def test_regularization_names_the_sampled_runs():
    reg = Regularization("taylor", order=2, lam=0.5, estimator="sampled")
    assert reg.name == "taylor_K2_lam0.5_sampled"
    assert "(sampled)" in reg.label
    (r,) = reg.regularizers(jr.PRNGKey(0))
    assert r.sampled and r.order == 2
    assert Regularization("taylor", order=2, lam=0.5).name == "taylor_K2_lam0.5"


@pytest.mark.slow
def test_toy_trains_with_the_sampled_estimator_through_the_cli(tmp_path):
    import json

    from taynode.cli import main

    out, ckpt = str(tmp_path / "out"), str(tmp_path / "ckpt")
    args = ["--reg", "taylor", "--order", "2", "--lam", "1e-2", "--estimator", "sampled", "--epochs", "2"]
    assert main(["train", "toy", "--preset", "smoke", *args, "--out", out, "--ckpt-root", ckpt, "--no-progress"]) == 0
    record = json.loads((tmp_path / "out" / "toy_smoke_taylor_K2_lam0.01_sampled_seed0.json").read_text())
    assert record["config"]["estimator"] == "sampled"
    assert all(np.isfinite(h["reg"]) and h["reg"] > 0 for h in record["history"])
    # the step's cost in units of one field evaluation, and per counted evaluation of the logged steps
    cost = record["cost"]
    nfes = [h["nfe"] for h in record["history"] if "nfe" in h]
    assert nfes and cost["train_nfe_mean"] == pytest.approx(sum(nfes) / len(nfes))
    assert cost["f_eval_s"] > 0
    assert cost["iter_f_units"] == pytest.approx(record["iter_time_s"] / cost["f_eval_s"])
    assert cost["iter_f_units_per_nfe"] == pytest.approx(cost["iter_f_units"] / cost["train_nfe_mean"])
