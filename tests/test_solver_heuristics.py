"""ERNODE, SRNODE and STEER (Pal et al. 2021; Ghosh et al. 2020) against references computed outside `solve`."""

import functools

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import mlp_field, mlp_params

from taynode import ErrorEstimate, Stiffness, TaylorRK, solve, steer_end_time

F = mlp_field("tanh")
P = mlp_params(jr.PRNGKey(3), 2, scale=3.0)  # strong enough for ~20 steps and a few rejections at TOL
Y0 = jnp.array([[0.7, -0.4], [0.2, 0.9], [-1.1, 0.3]])  # a batch of three 2-d states
TOL = 1e-6
# dt0 = 0.5 is far too long at this tolerance: the first attempts are rejected
KW = dict(t0=0.0, t1=1.0, rtol=TOL, atol=TOL, dt0=0.5, batched=True, save_steps=True)

# Dormand & Prince (1980): the stage coefficients, written out independently of diffrax
A_DP5 = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
]
C_DP5 = [0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1]


@functools.cache
def _solves():
    """The nonlinear batch solved with both heuristics, and without any regulariser (same settings)."""
    both = solve(F, Y0, P, regularizers=[ErrorEstimate(), Stiffness()], **KW)
    plain = solve(F, Y0, P, **KW)
    return both, plain


def _accepted_grid(sol):
    n = int(sol.num_accepted_steps)
    return np.concatenate([[0.0], np.asarray(sol.raw.ts[:n])])


def _per_step(sol, name):
    """The per-step contributions |h_j|·estimate_j, from the running sums saved at every step."""
    n = int(sol.num_accepted_steps)
    running = np.asarray(sol.raw.ys[1][name][:n])
    return np.diff(np.concatenate([np.zeros_like(running[:1]), running]), axis=0)


def _dp5_stages(f, t, y, h, args):
    """Stage states g_i and derivatives f_i of one Dormand–Prince step (numpy, by hand)."""
    gs, ks = [], []
    for i in range(7):
        g = y + h * sum(a * k for a, k in zip(A_DP5[i], ks))
        gs.append(g)
        ks.append(np.asarray(f(t + C_DP5[i] * h, jnp.asarray(g), args)))
    return gs, ks


def _stiffness_by_hand(f, grid, y0, args):
    """S_j = ‖k7 − k6‖ / ‖g7 − g6‖ per accepted step and example, stepping DP5 by hand along `grid`."""
    y, out = np.asarray(y0), []
    for ta, tb in zip(grid[:-1], grid[1:]):
        gs, ks = _dp5_stages(f, ta, y, tb - ta, args)
        out.append(np.linalg.norm(ks[6] - ks[5], axis=-1) / np.linalg.norm(gs[6] - gs[5], axis=-1))
        y = gs[6]
    return np.array(out)


def test_error_estimate_is_the_sum_over_the_accepted_steps_of_a_hand_stepped_solver():
    sol, _ = _solves()
    assert int(sol.num_rejected_steps) > 0  # rejected attempts happened, and must not count
    grid = _accepted_grid(sol)
    solver, term = diffrax.Dopri5(), diffrax.ODETerm(F)
    state = solver.init(term, grid[0], grid[1], Y0, P)
    y, total = Y0, np.zeros(Y0.shape[0])
    for ta, tb in zip(grid[:-1], grid[1:]):
        y1, err, _, state, _ = solver.step(term, ta, tb, y, P, state, False)
        scale = TOL + TOL * np.maximum(np.abs(y), np.abs(y1))
        total += np.sqrt(np.mean((np.asarray(err) / scale) ** 2, axis=-1)) * (tb - ta)  # RMS per example
        y = y1
    np.testing.assert_allclose(np.asarray(y), np.asarray(sol.y1), rtol=1e-12, atol=1e-14)  # the same path
    assert np.all(total > 0)
    np.testing.assert_allclose(np.asarray(sol.reg["ernode"]), total, rtol=1e-9)


def test_stiffness_per_step_matches_dormand_prince_stages_by_hand():
    sol, _ = _solves()
    grid = _accepted_grid(sol)
    reference = _stiffness_by_hand(F, grid, Y0, P)  # (steps, batch)
    per_step = _per_step(sol, "srnode") / np.diff(grid)[:, None]
    np.testing.assert_allclose(per_step, reference, rtol=1e-8)
    np.testing.assert_allclose(np.asarray(sol.reg["srnode"]), (reference * np.diff(grid)[:, None]).sum(0), rtol=1e-9)


def test_the_heuristics_leave_the_steps_and_the_solution_alone():
    sol, plain = _solves()
    assert int(sol.nfe) == int(plain.nfe)
    assert int(sol.num_steps) == int(plain.num_steps)
    assert int(sol.num_rejected_steps) == int(plain.num_rejected_steps) > 0
    np.testing.assert_array_equal(np.asarray(sol.raw.ts), np.asarray(plain.raw.ts))
    np.testing.assert_array_equal(np.asarray(sol.y1), np.asarray(plain.y1))
    assert set(sol.reg) == {"ernode", "srnode"} and set(plain.reg) == set()


def test_the_gradient_matches_finite_differences_on_a_fixed_grid():
    # fixed steps: the grid does not move with the parameters; ERNODE scales by its own tolerances
    kw = dict(t0=0.0, t1=1.0, rtol=None, atol=None, dt0=0.125, batched=True)
    regs = [ErrorEstimate(rtol=1e-3, atol=1e-3), Stiffness()]

    def values(p):
        sol = solve(F, Y0, p, regularizers=regs, **kw)
        return jnp.stack([jnp.mean(sol.reg["ernode"]), jnp.mean(sol.reg["srnode"])])

    jac = jax.jacrev(values)(P)
    direction = jax.tree_util.tree_map(lambda x: jr.normal(jr.PRNGKey(x.size), x.shape), P)
    # the stiffness ratio is strongly curved in the parameters (a second-order central difference at
    # eps = 1e-5 is still off by 2e-6): a fourth-order one, off by about 1e-9 here, rounding included
    eps = 1e-5
    at = lambda s: np.asarray(values(jax.tree_util.tree_map(lambda a, d: a + s * eps * d, P, direction)))  # noqa: E731
    fd = (8 * (at(1) - at(-1)) - (at(2) - at(-2))) / (12 * eps)
    ad = np.asarray(sum(jnp.tensordot(jac[k], direction[k], axes=direction[k].ndim) for k in P))
    assert np.all(ad != 0)
    np.testing.assert_allclose(ad, fd, rtol=1e-7)


def test_stiffness_approaches_the_spectral_radius_of_a_linear_field():
    # y' = A y, A = Q diag(-1, -10, -100) Qᵀ: spectral radius 100 in closed form. For a linear field
    # k7 − k6 = h A (g7 − g6) exactly, so S_j = ‖A d‖/‖d‖ <= ρ(A) for this normal A (up to rounding).
    # Once the step has settled at Dopri5's stability boundary for λ = −100 (h·ρ ≈ 3.3, the regime
    # Hairer & Wanner's argument assumes; from t ≈ 0.8 here), g7 − g6 is dominated by the stiff
    # mode and S_j is within 0.5 % of ρ(A) (observed within 0.07 % from t = 1 on: a 7× margin).
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    a = jnp.asarray(q @ np.diag([-1.0, -10.0, -100.0]) @ q.T)
    sol = solve(_linear, jnp.array([1.0, -0.5, 0.25]), a, t1=3.0, rtol=TOL, atol=TOL, regularizers=[Stiffness()],
                save_steps=True)
    grid = _accepted_grid(sol)
    h = np.diff(grid)
    rho = _per_step(sol, "srnode") / h
    radius = 100.0
    assert np.all(rho <= radius * (1 + 1e-9))
    settled = grid[:-1] >= 1.0
    settled[-1] = False  # the last step is cut short to end at t1
    assert settled.sum() >= 40 and np.all((2.5 < h[settled] * radius) & (h[settled] * radius < 4.0))
    np.testing.assert_allclose(rho[settled], radius, rtol=5e-3)
    assert np.min(rho) < 0.5 * radius  # in between, while the slow modes dominate, it does not


def _linear(t, y, a):
    return a @ y


def test_bad_heuristic_inputs():
    y0 = jnp.array([0.5, -0.3])
    with pytest.raises(ValueError, match=r"^Stiffness reads Dormand–Prince's last two stages, got solver=Tsit5: use "):
        solve(_linear, y0, jnp.eye(2), solver="tsit5", regularizers=[Stiffness()])
    with pytest.raises(ValueError, match=r"^ErrorEstimate needs a solver with an error estimate, got solver=Euler"):
        solve(_linear, y0, jnp.eye(2), solver="euler", rtol=None, atol=None, dt0=0.1, regularizers=[ErrorEstimate()])
    with pytest.raises(ValueError, match=r"^ErrorEstimate needs rtol and atol to scale its error in a fixed-step"):
        solve(_linear, y0, jnp.eye(2), rtol=None, atol=None, dt0=0.1, regularizers=[ErrorEstimate()])
    with pytest.raises(ValueError, match=r"^ErrorEstimate rtol must be a positive finite float or None, got -1"):
        ErrorEstimate(rtol=-1.0, atol=1e-3)
    with pytest.raises(ValueError, match=r"^ErrorEstimate needs both rtol and atol, or neither"):
        ErrorEstimate(rtol=1e-3)
    with pytest.raises(ValueError, match=r"^regularizers must have distinct names, got \['ernode', 'ernode'\]"):
        solve(_linear, y0, jnp.eye(2), regularizers=[ErrorEstimate(), ErrorEstimate(rtol=1e-3, atol=1e-3)])
    # beside an exact regulariser, and told which part of a tuple state it sees
    assert {TaylorRK(2).name, ErrorEstimate(part=0).name, Stiffness(part=0).name} == {"R2", "ernode", "srnode"}


def test_steer_end_times_are_uniform_on_the_interval(key):
    t1, b, n = 1.0, 0.5, 20_000
    draws = np.asarray(jax.jit(jax.vmap(lambda k: steer_end_time(k, t1, b)))(jr.split(key, n)))
    assert draws.min() >= t1 - b and draws.max() <= t1 + b
    assert draws.min() < t1 - 0.99 * b and draws.max() > t1 + 0.99 * b  # the whole interval is reached
    # U(t1 − b, t1 + b): mean t1, variance b²/3; each within 4 standard errors (fourth central moment b⁴/5)
    np.testing.assert_allclose(draws.mean(), t1, atol=4 * np.sqrt(b**2 / 3 / n))
    np.testing.assert_allclose(draws.var(), b**2 / 3, atol=4 * np.sqrt((b**4 / 5 - b**4 / 9) / n))
    assert float(steer_end_time(key, t1, 0.0)) == t1


def test_a_steer_end_time_drives_a_solve(key):
    # y' = −y to the drawn end time T: y(T) = exp(−T) in closed form
    t_end = steer_end_time(key, 1.0, 0.5)
    sol = solve(lambda t, y, args: -y, jnp.array([1.0]), t1=t_end, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(float(sol.y1[0]), np.exp(-float(t_end)), rtol=1e-8)


@pytest.mark.parametrize("b, t0", [(-0.1, 0.0), (1.0, 0.0), (0.6, 0.5)])
def test_bad_steer_half_width(key, b, t0):
    with pytest.raises(ValueError, match=r"^b must satisfy 0 <= b < t1 - t0 = .* so that the end time stays after t0"):
        steer_end_time(key, 1.0, b, t0=t0)
    with pytest.raises(ValueError, match=r"^t1 must be a finite number, got nan"):
        steer_end_time(key, float("nan"), 0.1)


# --- STEER as a regularisation choice: the training problem it poses, evaluation untouched ------


def test_steer_moves_the_training_end_time_and_nothing_else(key):
    from taynode.experiment import Problem
    from taynode.regularization import Regularization

    problem = Problem(F, Y0, P, t0=0.0, t1=1.0)
    reg = Regularization("steer", steer_b=0.3)
    ends = np.array([float(reg.steer(problem, k).t1) for k in jr.split(key, 2000)])
    assert ends.min() >= 0.7 and ends.max() <= 1.3
    assert abs(ends.mean() - 1.0) < 4 * 0.6 / np.sqrt(12 * 2000)  # U(0.7, 1.3): sd 0.6/sqrt(12)
    assert abs(ends.std() - 0.6 / np.sqrt(12)) < 0.01
    moved = reg.steer(problem, key)
    assert moved.y0 is problem.y0 and moved.t0 == 0.0 and moved.ts is None
    assert moved.t1.dtype == Y0.dtype
    # every other kind poses the problem unchanged
    assert Regularization("ernode", lam=1.0).steer(problem, key) is problem


def test_steer_moves_observation_times_within_their_gaps(key):
    from taynode.experiment import Problem
    from taynode.regularization import Regularization

    ts = jnp.array([0.0, 0.1, 0.3, 0.4, 1.0])
    problem = Problem(F, Y0, P, t0=0.0, t1=1.0, ts=ts)
    reg = Regularization("steer", steer_b=0.5)
    gaps = np.diff(np.asarray(ts))
    gaps = np.minimum(gaps, np.r_[gaps[1:], gaps[-1]])  # the smaller gap to a neighbour
    draws = np.stack([np.asarray(reg.steer(problem, k).ts) for k in jr.split(key, 500)])
    assert np.all(draws[:, 0] == 0.0)
    shift = draws[:, 1:] - np.asarray(ts)[1:]
    assert np.all(np.abs(shift) <= 0.5 * gaps + 1e-12)
    assert np.all(np.diff(draws, axis=1) >= 0) and draws.max() <= 1.0  # ordered, clipped to t1
    assert np.all(shift[:, :3].min(0) < -0.4 * gaps[:3]) and np.all(shift[:, :3].max(0) > 0.4 * gaps[:3])
    # the last time's upward draws are clipped
    assert np.all(draws[:, -1] <= 1.0) and np.mean(draws[:, -1] == 1.0) > 0.4
    with pytest.raises(ValueError, match="steer_b must be <= 0.5 where the loss reads"):
        Regularization("steer", steer_b=0.6).steer(problem, key)


def test_steer_training_loss_solves_to_the_drawn_end_time_and_evaluation_to_t1(key):
    from taynode.evaluation import evaluate
    from taynode.experiment import solve_problem
    from taynode.experiments import toy
    from taynode.objective import make_loss

    exp = toy.EXPERIMENT
    steer = exp.config("smoke", reg="steer", steer_b=0.4)
    plain = exp.config("smoke")
    params = exp.init_params(plain, jr.PRNGKey(0))
    data = exp.load_data(plain, progress=False)
    batch = jax.tree_util.tree_map(lambda a: jnp.asarray(a[:8]), exp.train_arrays(plain, data))
    loss = float(make_loss(exp, steer)(params, batch, key, 0)[0])
    problem = steer.regularization.steer(exp.problem(steer, params, batch), key)
    assert abs(float(problem.t1) - 1.0) > 1e-3  # this key draws an end time away from t1
    sol = solve_problem(problem, solver=steer.solver, rtol=steer.rtol, atol=steer.atol, max_steps=steer.max_steps)
    assert loss == pytest.approx(float(jnp.mean((sol.y1 - batch[1]) ** 2)), rel=1e-9)
    assert loss != pytest.approx(float(make_loss(exp, plain)(params, batch, key, 0)[0]), rel=1e-6)
    assert evaluate(exp, steer, params, data)["test_nfe"] == evaluate(exp, plain, params, data)["test_nfe"]


def test_stiffness_of_a_float32_step_whose_squares_underflow():
    # A float32 step on y' = −50 y (exact stiffness 50) whose stage differences are about 1e-20: their
    # squares (~1e-40, times h² ~1e-44) are below float32's smallest normal number, so a ratio formed in
    # float32 loses both terms. The estimate, formed in float64 where enabled, keeps S = 50. With the
    # stages held fixed, S = ‖k7 − k6‖ / (h‖y1 − g6‖) and g6 = 0, so dS/dy1 = −S · y1/‖y1‖² in closed form.
    from taynode.regularizers import SolverStep

    lam, h = 50.0, 1e-2
    y1 = jnp.asarray(np.array([1.0, -2.0, 0.5]) * 1e-20, jnp.float32)
    k = jnp.zeros((7, 3), jnp.float32).at[6].set(-h * lam * y1)  # k_i = h·f(g_i): g_1..g_6 = 0, g_7 = y1
    zero = jnp.zeros(3, jnp.float32)

    def estimate(y):
        step = SolverStep(diffrax.Dopri5(), jnp.float32(0.0), jnp.float32(h), zero, y, zero, k, TOL, TOL)
        return Stiffness().estimate(step, batched=False)

    assert float(jnp.sum(jnp.square(y1)) * h**2) == 0.0  # the squares underflow in float32
    value, grad = jax.value_and_grad(estimate)(y1)
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(float(value), lam, rtol=1e-6)
    y = np.asarray(y1, np.float64)
    np.testing.assert_allclose(np.asarray(grad, np.float64), -lam * y / np.sum(y**2), rtol=1e-5)
