import functools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import Counter, mlp_field, mlp_params, reference_integral, rk4_reference, simpson

from taynode import JacobianFrobenius, Kinetic, TaylorRK, evaluation_nfe, solve
from taynode.taylor import solution_derivatives


@pytest.fixture
def problem():
    f = mlp_field("tanh")
    p = mlp_params(jr.PRNGKey(7), 3)
    y0 = jnp.array([0.5, -0.3, 0.8])
    return f, p, y0


@pytest.fixture(scope="module")
def rk_reference():
    """Simpson quadrature of mean (y^(K))² along an RK4 solution, K = 1..4 (nested jvp), computed once."""
    f = mlp_field("tanh")
    p = mlp_params(jr.PRNGKey(7), 3)
    y0 = jnp.array([0.5, -0.3, 0.8])
    ts, ys = rk4_reference(f, y0, p, 0.0, 1.0, 2000)
    derivs = jax.jit(jax.vmap(lambda t, y: jnp.stack([jnp.mean(d**2) for d in
                                                        solution_derivatives(f, t, y, p, 4, method="jvp")])))
    return simpson(derivs(ts, ys), ts)


@functools.cache
def _rk_solve(solver):
    """One solve per solver integrating R_1..R_4 together (they share the solution)."""
    f = mlp_field("tanh")
    p = mlp_params(jr.PRNGKey(7), 3)
    y0 = jnp.array([0.5, -0.3, 0.8])
    return solve(f, y0, p, solver=solver, rtol=1e-10, atol=1e-10, regularizers=[TaylorRK(k) for k in (1, 2, 3, 4)])


@pytest.mark.parametrize("solver", ["tsit5", "dopri5", "dopri8"])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_rk_matches_quadrature(rk_reference, solver, order):
    ref = float(rk_reference[order - 1])
    assert abs(float(_rk_solve(solver).reg[f"R{order}"]) - ref) <= 1e-6 * abs(ref)


def test_kinetic_and_frobenius_match_quadrature(problem):
    f, p, y0 = problem
    key = jr.PRNGKey(3)
    for noise in ["rademacher", "gaussian"]:
        fro = JacobianFrobenius(key, noise=noise)
        sol = solve(f, y0, p, rtol=1e-10, atol=1e-10, regularizers=[Kinetic(), fro])
        eps = fro.epsilon(y0)
        if noise == "rademacher":
            assert set(np.unique(np.asarray(eps))) <= {-1.0, 1.0}
        kin = reference_integral(f, y0, p, lambda t, y: jnp.mean(f(t, y, p) ** 2))
        jac = reference_integral(f, y0, p, lambda t, y: jnp.mean((jax.jacfwd(lambda z: f(t, z, p))(y) @ eps) ** 2))
        np.testing.assert_allclose(sol.reg["kinetic"], kin, rtol=1e-6)
        np.testing.assert_allclose(sol.reg["frobenius"], jac, rtol=1e-6)


def test_batched_regularisers_are_per_example():
    f = mlp_field("sigmoid")
    p = mlp_params(jr.PRNGKey(1), 2)
    y0 = jr.normal(jr.PRNGKey(2), (4, 2))
    sol = solve(f, y0, p, rtol=1e-10, atol=1e-10, regularizers=[TaylorRK(2)], batched=True)
    assert sol.reg["R2"].shape == (4,)
    integrand = jax.jit(jax.vmap(lambda t, y: jnp.mean(solution_derivatives(f, t, y, p, 2, method="jvp")[-1] ** 2)))
    for i in range(4):
        ts, ys = rk4_reference(f, y0[i], p, 0.0, 1.0, 2000)
        np.testing.assert_allclose(sol.reg["R2"][i], simpson(integrand(ts, ys), ts), rtol=1e-6)


@pytest.mark.parametrize("adjoint", ["recursive", "backsolve"])
@pytest.mark.parametrize("order", [None, 2, 3])
def test_rk_gradient_matches_finite_differences(adjoint, order):
    """order None: no regulariser (the continuous adjoint of an empty regulariser tuple once raised
    diffrax's TypeError on equinox's `_DistinctTuple`)."""
    f = mlp_field("tanh")
    p = mlp_params(jr.PRNGKey(11), 2, hidden=8)
    y0 = jnp.array([0.4, -0.9])
    regs = [] if order is None else [TaylorRK(order)]

    def loss(p):
        sol = solve(f, y0, p, rtol=1e-12, atol=1e-12, regularizers=regs, adjoint=adjoint)
        return sum(sol.reg.values()) + jnp.sum(sol.y1**2)

    grad = jax.jit(jax.grad(loss))(p)
    loss_j = jax.jit(loss)
    leaves, treedef = jax.tree_util.tree_flatten(p)
    direction = jax.tree_util.tree_unflatten(
        treedef, [jr.normal(jr.PRNGKey(i), x.shape) for i, x in enumerate(leaves)]
    )
    eps = 1e-4
    plus = jax.tree_util.tree_map(lambda a, d: a + eps * d, p, direction)
    minus = jax.tree_util.tree_map(lambda a, d: a - eps * d, p, direction)
    fd = (loss_j(plus) - loss_j(minus)) / (2 * eps)
    ad = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(direction)))
    assert abs(float(ad) - float(fd)) <= 1e-5 * abs(float(fd)), (float(ad), float(fd))


def test_regularisers_take_part_in_error_control(problem):
    """The regulariser states are part of the solver's error norm: the steps change, the accuracy does not."""
    f, p, y0 = problem
    tol = 1e-8
    plain = solve(f, y0, p, rtol=tol, atol=tol, save_steps=True)
    reg = solve(f, y0, p, rtol=tol, atol=tol, regularizers=[TaylorRK(3), Kinetic()], save_steps=True)
    n_plain, n_reg = int(plain.num_accepted_steps), int(reg.num_accepted_steps)
    assert (n_plain, int(plain.num_steps)) != (n_reg, int(reg.num_steps)) or not np.allclose(
        plain.ts[:n_plain], reg.ts[:n_reg])
    _, ys = rk4_reference(f, y0, p, 0.0, 1.0, 2000)
    exact = ys[-1]
    scale = tol * (1 + np.abs(np.asarray(exact)))
    assert np.all(np.abs(np.asarray(plain.y1) - np.asarray(exact)) <= 10 * scale)
    assert np.all(np.abs(np.asarray(reg.y1) - np.asarray(exact)) <= 10 * scale)


@pytest.mark.parametrize("part,make_state,take", [
    (0, lambda z: (z, jnp.zeros(())), lambda y: y[0]),
    ("z", lambda z: {"z": z, "logp": jnp.zeros(())}, lambda y: y["z"]),
])
def test_regulariser_sees_only_its_part(problem, part, make_state, take):
    """A CNF-like state (z, log p): R_K, kinetic and Frobenius of z alone, against quadrature of z."""
    f, p, z0 = problem

    def field(t, y, args):  # log p' = −tr(∂f/∂z): depends on z, never feeds back into z
        z = take(y)
        div = jnp.trace(jax.jacfwd(lambda zz: f(t, zz, args))(z))
        return _like(y, f(t, z, args), -div)

    def _like(y, dz, dl):
        return (dz, dl) if isinstance(y, tuple) else {"z": dz, "logp": dl}

    key = jr.PRNGKey(3)
    regs = [TaylorRK(2, part=part), Kinetic(part=part), JacobianFrobenius(key, part=part)]
    sol = solve(field, make_state(z0), p, rtol=1e-11, atol=1e-11, regularizers=regs)
    eps = JacobianFrobenius(key).epsilon(z0)

    def integrand(t, z):
        fz = f(t, z, p)
        _, z2 = jax.jvp(lambda tt, zz: f(tt, zz, p), (t, z), (jnp.ones_like(t), fz))
        _, jeps = jax.jvp(lambda zz: f(t, zz, p), (z,), (eps,))
        return jnp.stack([jnp.mean(z2**2), jnp.mean(fz**2), jnp.mean(jeps**2)])

    ref = reference_integral(f, z0, p, integrand)
    got = jnp.stack([sol.reg["R2"], sol.reg["kinetic"], sol.reg["frobenius"]])
    np.testing.assert_allclose(got, ref, rtol=1e-8)


def test_bad_part_is_a_one_line_error(problem):
    f, p, z0 = problem
    with pytest.raises(ValueError, match="part=5 does not index the state"):
        solve(lambda t, y, a: (f(t, y[0], a), jnp.zeros(())), (z0, jnp.zeros(())), p,
              regularizers=[Kinetic(part=5)])


def test_saved_times_match_closed_form():
    A = jnp.array([[0.0, 1.0], [-1.0, 0.0]])
    y0 = jnp.array([1.0, 0.0])
    ts = jnp.linspace(0.0, 2.0, 5)
    sol = solve(lambda t, y, a: A @ y, y0, None, t1=2.0, ts=ts, rtol=1e-11, atol=1e-11)
    exact = jnp.stack([jnp.cos(ts), -jnp.sin(ts)], axis=1)
    np.testing.assert_allclose(sol.ys, exact, atol=1e-9)
    np.testing.assert_allclose(sol.y1, exact[-1], atol=1e-9)
    steps = solve(lambda t, y, a: A @ y, y0, None, t1=2.0, save_steps=True, rtol=1e-6, atol=1e-6)
    n = int(steps.num_accepted_steps)
    np.testing.assert_allclose(steps.raw.ts[n - 1], 2.0)
    np.testing.assert_allclose(steps.y1, exact[-1], atol=1e-5)


# --- exact NFE -------------------------------------------------------------------------

CASES = [
    ("euler", None), ("heun", None), ("midpoint", None), ("bosh3", None), ("tsit5", None),
    ("dopri5", None), ("dopri8", None),
    ("heun", 1e-3), ("midpoint", 1e-3), ("bosh3", 1e-3), ("bosh3", 1.4e-8), ("tsit5", 1e-3),
    ("tsit5", 1.4e-8), ("dopri5", 1e-3), ("dopri5", 1.4e-8), ("dopri8", 1e-3), ("dopri8", 1.4e-8),
]


def oscillator(t, y, a):
    A = jnp.array([[0.0, 1.0], [-9.0, -0.2]])
    return A @ y + jnp.sin(4.0 * t)


@pytest.mark.parametrize("solver,tol", CASES)
@pytest.mark.parametrize("with_reg", [False, True])
def test_nfe_is_exact(solver, tol, with_reg):
    field = Counter(oscillator)
    kw = dict(rtol=tol, atol=tol) if tol else dict(rtol=None, atol=None, dt0=0.05)
    regs = [Kinetic()] if with_reg else []  # jet cannot trace the io_callback counter
    run = jax.jit(lambda y: solve(field, y, None, t1=3.0, solver=solver, regularizers=regs, max_steps=20000, **kw))
    sol = run(jnp.array([1.0, 0.0]))
    jax.block_until_ready(sol.y1)
    assert int(sol.nfe) == field.count
    if tol is not None and solver in ("dopri5", "tsit5", "bosh3"):
        assert int(sol.num_rejected_steps) > 0  # the case that breaks the naive formula


@pytest.mark.parametrize("dt0", [0.5, 2.0])
def test_nfe_exact_when_first_steps_are_rejected(dt0):
    field = Counter(oscillator)
    sol = solve(field, jnp.array([1.0, 0.0]), None, t1=3.0, dt0=dt0, rtol=1.4e-8, atol=1.4e-8)
    jax.block_until_ready(sol.y1)
    assert int(sol.nfe) == field.count == 1 + 6 * int(sol.num_steps)


def test_evaluation_nfe_joint_and_per_example():
    f = mlp_field("tanh")
    p = mlp_params(jr.PRNGKey(5), 2, scale=1.5)
    y0 = jr.normal(jr.PRNGKey(6), (3, 2)) * jnp.array([[0.1], [1.0], [3.0]])
    joint = evaluation_nfe(f, y0, p, rtol=1e-6, atol=1e-6)
    per = evaluation_nfe(f, y0, p, rtol=1e-6, atol=1e-6, per_example=True)
    assert per.shape == (3,)
    field = Counter(lambda t, y, a: f(t, y[None], a)[0])  # one field: compiled once
    for i in range(3):
        field.count = 0
        sol = solve(field, y0[i], p, rtol=1e-6, atol=1e-6)
        jax.block_until_ready(sol.y1)
        assert int(per[i]) == field.count
    field = Counter(f)
    sol = solve(field, y0, p, rtol=1e-6, atol=1e-6)
    jax.block_until_ready(sol.y1)
    assert int(joint) == field.count


# --- bad input ---------------------------------------------------------------------------


def test_bad_inputs():
    def f(t, y, a):
        return -y

    y0 = jnp.ones(2)
    with pytest.raises(ValueError, match="rtol must be a positive"):
        solve(f, y0, rtol=-1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="atol must be a positive"):
        solve(f, y0, rtol=1e-3, atol=0.0)
    with pytest.raises(ValueError, match="solver must be one of"):
        solve(f, y0, solver="rk45")
    with pytest.raises(ValueError, match="regularizers must be taynode regularisers"):
        solve(f, y0, regularizers=["taylor"])
    with pytest.raises(ValueError, match="distinct names"):
        solve(f, y0, regularizers=[TaylorRK(2), TaylorRK(2)])
    with pytest.raises(ValueError, match="order must be an int >= 1"):
        TaylorRK(0)
    with pytest.raises(ValueError, match="order must be an int >= 1"):
        TaylorRK(2.0)
    with pytest.raises(ValueError, match="noise must be"):
        JacobianFrobenius(jr.PRNGKey(0), noise="uniform")
    with pytest.raises(ValueError, match="must return a pytree shaped like y0"):
        solve(lambda t, y, a: y[:1], y0)
    with pytest.raises(ValueError, match="batched=True"):
        solve(f, {"a": jnp.ones((2, 3)), "b": jnp.ones((3,))}, batched=True)
    with pytest.raises(ValueError, match="no error estimate"):
        solve(f, y0, solver="euler")
    with pytest.raises(ValueError, match="dt0 must be given"):
        solve(f, y0, rtol=None, atol=None)
    with pytest.raises(ValueError, match="t1 must be greater than t0"):
        solve(f, y0, t0=1.0, t1=0.0)
    with pytest.raises(ValueError, match="max_steps must be"):
        solve(f, y0, max_steps=0)
    with pytest.raises(ValueError, match="adjoint must be one of"):
        solve(f, y0, adjoint="magic")


def test_max_steps_error_names_tolerances():
    with pytest.raises(Exception, match=r"max_steps=5.*rtol=1e-08, atol=1e-08"):
        sol = solve(oscillator, jnp.array([1.0, 0.0]), t1=3.0, rtol=1e-8, atol=1e-8, max_steps=5)
        jax.block_until_ready(sol.y1)


def test_recursive_checkpoints_follow_the_memory_rule_and_leave_the_gradient_alone():
    """The checkpoint count changes what the backward pass stores, never the gradient: a solve with
    more steps than checkpoints (recomputing between them) gives the one with every step stored."""
    import diffrax

    from taynode.solve import CHECKPOINT_BYTES, MAX_CHECKPOINTS, recursive_checkpoints

    assert recursive_checkpoints(jnp.zeros((100, 784)), 4096) == MAX_CHECKPOINTS == 16
    assert recursive_checkpoints(jnp.zeros((400, 784)), 4096) == CHECKPOINT_BYTES // (3 * 400 * 784 * 8) == 4
    assert recursive_checkpoints(jnp.zeros(3), 10) == 10
    assert recursive_checkpoints(jnp.zeros((10**5, 10**3)), 4096) == 1

    f = mlp_field("tanh")
    p = mlp_params(jr.PRNGKey(4), 2, scale=3.0)
    y0 = jnp.array([0.3, -0.8])

    def grad(adjoint):
        def loss(p):
            sol = solve(f, y0, p, rtol=1e-10, atol=1e-10, regularizers=[TaylorRK(2)], adjoint=adjoint)
            return sol.reg["R2"] + jnp.sum(sol.y1**2)

        return jax.grad(loss)(p), solve(f, y0, p, rtol=1e-10, atol=1e-10, regularizers=[TaylorRK(2)])

    stored, sol = grad("recursive")
    assert int(sol.num_steps) > 3  # more steps than the three checkpoints below
    recomputed, _ = grad(diffrax.RecursiveCheckpointAdjoint(checkpoints=3))
    for a, b in zip(jax.tree_util.tree_leaves(stored), jax.tree_util.tree_leaves(recomputed)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
