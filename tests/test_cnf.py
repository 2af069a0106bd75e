"""Continuous normalising flows: divergence, log-density, sampling, layers, image helpers.

References are independent of the code under test: `jnp.trace(jax.jacfwd(...))`, the closed-form
pushforward of a Gaussian under a linear field, numerical integration of a density over a grid,
variance formulas of Hutchinson's estimator, and hand computations.
"""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax.scipy.linalg import expm

from taynode import regularizers as regs
from taynode.cnf import (
    CNF,
    ConcatConv2D,
    ConcatConvField,
    ConcatSquashLinear,
    ConcatSquashMLP,
    bits_per_dim,
    dequantize,
    draw_probe,
    exact_divergence,
    hutchinson_divergence,
    inverse_logit_transform,
    logit_transform,
    standard_normal_log_prob,
)
from taynode.models import as_field
from taynode.solve import solve
from taynode.taylor import solution_derivatives

TIGHT = dict(rtol=1e-10, atol=1e-10)


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


def np_init(module, seed, z):
    """Parameters shaped as `module.init(key, 0.0, z)`, float64, drawn with numpy: every entry
    N(0, 1/fan_in) (kernels and biases alike, so no layer starts at zero)."""
    shapes = jax.eval_shape(module.init, jr.PRNGKey(0), 0.0, z)
    rng = np.random.default_rng(seed)

    def draw(leaf):
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
        return jnp.asarray(rng.standard_normal(leaf.shape) / np.sqrt(fan_in))

    return jax.tree_util.tree_map(draw, shapes)


@pytest.fixture(scope="module")
def mlp2d():
    """A random-init 2-D ConcatSquashMLP field (float64) and its parameters."""
    module = ConcatSquashMLP(hidden=(32, 32))
    params = np_init(module, 0, jnp.zeros((1, 2)))
    return as_field(module), params


def linear_field(a):
    """f(t, z) = A z for each row z of the batch."""

    def f(t, z, params):
        return z @ params.T

    return f, a


@pytest.fixture(scope="module")
def linear3():
    a = 0.6 * normal(7, (3, 3))
    return linear_field(a)


# ---------------------------------------------------------------------------------------------
# Divergence
# ---------------------------------------------------------------------------------------------


def test_exact_divergence_matches_jacfwd_trace():
    module = ConcatSquashMLP(hidden=(16, 16))
    params = np_init(module, 1, jnp.zeros((1, 4)))
    z = normal(2, (5, 4))
    t = 0.3

    fz, div, frob = jax.jit(lambda z_: exact_divergence(lambda u: module.apply(params, t, u), z_))(z)

    def single(zb):
        return module.apply(params, t, zb[None])[0]

    jacs = jax.jit(jax.vmap(jax.jacfwd(single)))(z)  # (5, 4, 4)
    np.testing.assert_allclose(div, jax.vmap(jnp.trace)(jacs), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(frob, jnp.sum(jacs**2, axis=(1, 2)) / 4, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fz, module.apply(params, t, z), rtol=1e-14)


def test_exact_divergence_on_image_shaped_state():
    module = ConcatConvField(hidden=(3,))
    z = normal(3, (2, 3, 3, 1))
    params = np_init(module, 4, z)
    _, div, _ = jax.jit(lambda z_: exact_divergence(lambda u: module.apply(params, 0.5, u), z_))(z)

    def single(zb):
        return module.apply(params, 0.5, zb.reshape(1, 3, 3, 1)).reshape(9)

    ref = jax.jit(jax.vmap(lambda zb: jnp.trace(jax.jacfwd(single)(zb))))(z.reshape(2, 9))
    np.testing.assert_allclose(div, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_unbiased(noise):
    """Mean of N probes within 5 standard errors of the exact trace (and of ‖J‖_F²/D).

    Var of εᵀJε: Σ_{i<j} (J_ij + J_ji)² for Rademacher ε, 2‖(J + Jᵀ)/2‖_F² for Gaussian ε.
    """
    d, n = 6, 20000
    module = ConcatSquashMLP(hidden=(16,))
    params = np_init(module, 8, jnp.zeros((1, d)))
    z0 = normal(9, (d,))
    z = jnp.broadcast_to(z0, (n, d))  # one point, n independent probes
    eps = draw_probe(jr.PRNGKey(10), z.shape, z.dtype, noise)
    _, div, frob = jax.jit(lambda z_, e: hutchinson_divergence(lambda u: module.apply(params, 0.2, u), z_, e))(z, eps)

    jac = jax.jit(jax.jacfwd(lambda zb: module.apply(params, 0.2, zb[None])[0]))(z0)
    trace, fro = jnp.trace(jac), jnp.sum(jac**2) / d
    s = jac + jac.T
    var = jnp.sum(jnp.triu(s, 1) ** 2) if noise == "rademacher" else 2 * jnp.sum((s / 2) ** 2)
    assert var > 1e-2  # the estimator is not exact here
    assert abs(float(jnp.mean(div) - trace)) < 5 * math.sqrt(var / n)
    assert abs(float(jnp.var(div) / var) - 1) < 0.1  # the probe has the stated distribution
    assert abs(float(jnp.mean(frob) - fro)) < 5 * float(jnp.std(frob)) / math.sqrt(n)


def test_probe_name_checked():
    with pytest.raises(ValueError, match="noise must be one of"):
        draw_probe(jr.PRNGKey(0), (2, 2), jnp.float64, "uniform")


# ---------------------------------------------------------------------------------------------
# Densities in closed form: a linear field
# ---------------------------------------------------------------------------------------------


def test_linear_flow_log_prob_closed_form(linear3):
    """z(1) = e^A x, so log p(x) = log N(e^A x; 0, I) + tr A; RNODE's term = ‖A‖_F²/D."""
    f, a = linear3
    x = 1.5 * normal(11, (6, 3))
    log_prob = jax.jit(lambda p, x_: CNF(f, (3,), "exact", **TIGHT).log_prob(p, x_, frobenius=True))
    out = log_prob(a, x)
    z1 = x @ expm(a).T
    np.testing.assert_allclose(out.z, z1, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(out.log_prob, standard_normal_log_prob(z1) + jnp.trace(a), rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(out.reg["frobenius"], jnp.full(6, jnp.sum(a**2) / 3), rtol=1e-9)
    assert int(out.nfe) > 2
    with pytest.raises(Exception, match="non-finite"):  # a run-time check, under jit too
        jax.block_until_ready(log_prob(a, x.at[1, 2].set(jnp.nan)))


def test_linear_flow_gradient_matches_closed_form(linear3):
    """∂/∂A of the mean log p through the solver equals ∂/∂A of log N(e^A x) + tr A (via expm)."""
    f, a = linear3
    x = normal(32, (5, 3))
    cnf = CNF(f, (3,), "exact", **TIGHT)
    grad = jax.grad(lambda a_: jnp.mean(cnf.log_prob(a_, x).log_prob))(a)
    ref = jax.grad(lambda a_: jnp.mean(standard_normal_log_prob(x @ expm(a_).T)) + jnp.trace(a_))(a)
    np.testing.assert_allclose(grad, ref, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_linear_flow_hutchinson_uses_one_probe(linear3, noise):
    """With ε fixed over time, the estimate is log N(e^A x) + εᵀAε and the Frobenius term ‖Aε‖²/D."""
    f, a = linear3
    x = normal(12, (4, 3))
    key = jr.PRNGKey(13)
    out = CNF(f, (3,), noise, **TIGHT).log_prob(a, x, key=key, frobenius=True)
    eps = draw_probe(key, x.shape, x.dtype, noise)
    ae = eps @ a.T
    z1 = x @ expm(a).T
    np.testing.assert_allclose(out.log_prob, standard_normal_log_prob(z1) + jnp.sum(eps * ae, 1), rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(out.reg["frobenius"], jnp.mean(ae**2, 1), rtol=1e-9)


def test_linear_flow_sampling_closed_form(linear3):
    """Samples x = e^{−A} z, with log p(x) = log N(z) + tr A; `sample` gives the same points."""
    f, a = linear3
    cnf = CNF(f, (3,), "exact", **TIGHT)
    key = jr.PRNGKey(14)
    out = cnf.sample_and_log_prob(a, key, 5)
    np.testing.assert_allclose(out.z, jr.normal(key, (5, 3), jnp.float64))  # the base points come from key
    np.testing.assert_allclose(out.x, out.z @ expm(-a).T, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(out.log_prob, standard_normal_log_prob(out.z) + jnp.trace(a), rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(cnf.sample(a, key, 5), out.x, rtol=1e-8, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# A nonlinear 2-D flow
# ---------------------------------------------------------------------------------------------


def test_sample_then_log_prob_consistent(mlp2d):
    f, params = mlp2d
    cnf = CNF(f, (2,), "exact", **TIGHT)
    s = cnf.sample_and_log_prob(params, jr.PRNGKey(15), 8)
    back = cnf.log_prob(params, s.x)
    np.testing.assert_allclose(back.z, s.z, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(back.log_prob, s.log_prob, rtol=1e-7, atol=1e-7)
    # the flow is far from the identity, so this comparison can fail
    assert float(jnp.max(jnp.abs(s.log_prob - standard_normal_log_prob(s.x)))) > 0.1


def test_density_integrates_to_one(mlp2d):
    """∫ p over [−7, 7]² by the trapezoid rule on a 141 × 141 grid (h = 0.1) is 1 within 1e-4.

    The random-init flow changes log p by more than 1 somewhere on the grid, so a wrong sign or
    scale of the divergence would miss 1 by far more than the tolerance.
    """
    f, params = mlp2d
    cnf = CNF(f, (2,), "exact", rtol=1e-8, atol=1e-8)
    g = jnp.linspace(-7.0, 7.0, 141)
    grid = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    out = cnf.log_prob(params, grid)
    p = jnp.exp(out.log_prob).reshape(141, 141)
    h = float(g[1] - g[0])
    w = jnp.ones(141).at[0].set(0.5).at[-1].set(0.5)
    mass = float(h * h * w @ p @ w)
    assert abs(mass - 1) < 1e-4
    assert float(jnp.max(jnp.abs(out.log_prob - standard_normal_log_prob(grid)))) > 1.0


def test_augmented_field_is_jet_safe(mlp2d):
    """Taylor mode through the divergence (exact and Hutchinson) agrees with nested jvp."""
    f, params = mlp2d
    z = normal(16, (3, 2))
    state = (z, jnp.zeros(3), jnp.zeros(3))
    for divergence in ("exact", "rademacher"):
        cnf = CNF(f, (2,), divergence)
        aug = cnf.augmented(frobenius=True)
        args = (params, draw_probe(jr.PRNGKey(17), z.shape, z.dtype, "rademacher"))
        jet, ref = jax.jit(
            lambda y, a: [solution_derivatives(aug, 0.4, y, a, 2, method=m) for m in ("jet", "jvp")]
        )(state, args)
        for a_, b_ in zip(jax.tree_util.tree_leaves(jet), jax.tree_util.tree_leaves(ref)):
            np.testing.assert_allclose(a_, b_, rtol=1e-9, atol=1e-9)


def _part_supported():
    try:
        regs.Kinetic(part=0)
    except TypeError:
        return False
    return True


@pytest.mark.skipif(not _part_supported(), reason="regularisers without a `part` field")
def test_regularizers_see_z_only(mlp2d):
    """R_2 and kinetic with part=0 in the flow equal the same regularisers on the z-only solve."""
    f, params = mlp2d
    x = normal(18, (4, 2))
    out = CNF(f, (2,), "exact", **TIGHT).log_prob(
        params, x, regularizers=(regs.TaylorRK(2, part=0), regs.Kinetic(part=0))
    )
    ref = solve(f, x, params, regularizers=(regs.TaylorRK(2), regs.Kinetic()), batched=True, **TIGHT)
    for name in ("R2", "kinetic"):
        np.testing.assert_allclose(out.reg[name], ref.reg[name], rtol=1e-7, atol=1e-10)
    assert float(jnp.min(out.reg["R2"])) > 0


def test_frobenius_flag_refuses_a_second_frobenius(linear3):
    f, a = linear3
    cnf = CNF(f, (3,), "exact")
    with pytest.raises(ValueError, match="frobenius"):
        cnf.log_prob(a, jnp.zeros((2, 3)), regularizers=(regs.JacobianFrobenius(jr.PRNGKey(0)),), frobenius=True)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_bad_arguments(linear3):
    f, a = linear3
    with pytest.raises(ValueError, match="divergence must be one of"):
        CNF(f, (3,), "hutch")
    with pytest.raises(ValueError, match="event_shape"):
        CNF(f, 3)
    with pytest.raises(ValueError, match="t1 must be greater than t0"):
        CNF(f, (3,), t0=1.0, t1=0.0)
    cnf = CNF(f, (3,), "gaussian")
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\)"):
        cnf.log_prob(a, jnp.zeros((2, 4)), key=jr.PRNGKey(0))
    with pytest.raises(ValueError, match="x must be a floating-point array"):
        cnf.log_prob(a, jnp.zeros((2, 3), jnp.int32), key=jr.PRNGKey(0))
    with pytest.raises(ValueError, match="key must be a jax.random key"):
        cnf.log_prob(a, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="num must be an int"):
        cnf.sample(a, jr.PRNGKey(0), 0)


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


def test_concat_squash_linear_formula():
    layer = ConcatSquashLinear(5)
    h = normal(19, (4, 3))
    params = np_init(layer, 20, h)
    p = params["params"]
    t = 0.7
    w, b = p["layer"]["kernel"], p["layer"]["bias"]
    a, c = p["hyper_gate"]["kernel"][0], p["hyper_gate"]["bias"]
    d = p["hyper_bias"]["kernel"][0]
    assert set(p["hyper_bias"]) == {"kernel"}
    ref = (h @ w + b) / (1 + np.exp(-(a * t + c))) + d * t
    np.testing.assert_allclose(layer.apply({"params": p}, t, h), ref, rtol=1e-13)


@pytest.mark.parametrize("impl", ["conv", "im2col"])
@pytest.mark.parametrize("k", [3, 2])
def test_concat_conv2d_puts_time_first(impl, k):
    """Both implementations equal XLA's convolution of [t, h] with 'same' padding, plus the bias."""
    layer = ConcatConv2D(2, kernel_size=k, impl=impl)
    h = normal(21, (2, 5, 4, 3))
    params = np_init(layer, 22, h)
    kernel, bias = params["params"]["kernel"], params["params"]["bias"]
    assert kernel.shape == (k, k, 4, 2) and kernel.dtype == jnp.float64
    t = 0.25
    inp = jnp.concatenate([jnp.full((2, 5, 4, 1), t), h], axis=-1)
    ref = jax.lax.conv_general_dilated(inp, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(layer.apply(params, t, h), ref + bias, rtol=1e-12, atol=1e-14)
    if k == 3:  # padding 1, as FFJORD: the corner output sees only the in-image 2 × 2 block
        corner = jnp.einsum("ijc,ijco->o", inp[0, :2, :2], kernel[1:, 1:])
        np.testing.assert_allclose(layer.apply(params, t, h)[0, 0, 0], corner + bias, rtol=1e-12)


def test_conv_impl_checked():
    with pytest.raises(ValueError, match="impl must be one of"):
        ConcatConv2D(2, impl="fft").init(jr.PRNGKey(0), 0.0, jnp.zeros((1, 3, 3, 1)))


def test_conv_field_starts_at_zero():
    """The last layer is zero-initialised (as the original): f = 0, the flow starts as the identity."""
    module = ConcatConvField(hidden=(4, 4))
    x = normal(23, (2, 5, 5, 1))
    params = jax.jit(module.init)(jr.PRNGKey(24), 0.0, x)  # the real initialisation
    np.testing.assert_array_equal(module.apply(params, 0.3, x), 0.0)


def test_image_shaped_flow_closed_form():
    """f(z) = c z on (batch, 3, 3, 1): z(1) = e^c x and, for Rademacher ε, εᵀ(cI)ε = 9c exactly."""
    x = normal(30, (2, 3, 3, 1))
    c = jnp.asarray(0.4, jnp.float64)
    cnf = CNF(lambda t, z, p: p * z, (3, 3, 1), "rademacher", **TIGHT)
    out = cnf.log_prob(c, x, key=jr.PRNGKey(31), frobenius=True)
    z1 = jnp.exp(c) * x
    np.testing.assert_allclose(out.z, z1, rtol=1e-8)
    np.testing.assert_allclose(out.log_prob, standard_normal_log_prob(z1) + 9 * c, rtol=1e-9)
    np.testing.assert_allclose(out.reg["frobenius"], jnp.full(2, c**2), rtol=1e-9)
    assert standard_normal_log_prob(z1).shape == (2,)


@pytest.mark.parametrize("which", ["mlp", "conv", "im2col"])
def test_fields_are_jet_safe(which):
    if which == "mlp":
        module, z = ConcatSquashMLP(hidden=(8, 8)), normal(25, (3, 4))
    else:
        module, z = ConcatConvField(hidden=(3, 3), impl=which), normal(25, (2, 4, 4, 1))
    params = np_init(module, 26, z)
    f = as_field(module)
    jet, ref = jax.jit(lambda y, p: [solution_derivatives(f, 0.1, y, p, 2, method=m) for m in ("jet", "jvp")])(
        z, params
    )
    for a_, b_ in zip(jet, ref):
        np.testing.assert_allclose(a_, b_, rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def test_dequantize_stays_in_its_bin():
    pixels = jnp.array([[0, 1, 128, 255]], jnp.uint8)
    x = dequantize(jr.PRNGKey(28), jnp.broadcast_to(pixels, (500, 4)))
    assert float(x.min()) > 0 and float(x.max()) < 1
    np.testing.assert_array_equal(jnp.floor(x * 256), jnp.broadcast_to(pixels, (500, 4)))


def test_logit_transform_log_det_and_inverse():
    x = jnp.asarray(np.random.default_rng(29).uniform(size=(3, 5)))
    alpha = 1e-5
    y, log_det = logit_transform(x, alpha)

    def elementwise(u):
        s = alpha + (1 - 2 * alpha) * u
        return math.log(s / (1 - s))

    for b in range(3):
        slopes = [jax.grad(lambda u: jnp.log(alpha + (1 - 2 * alpha) * u) - jnp.log(1 - alpha - (1 - 2 * alpha) * u))(
            x[b, i]) for i in range(5)]
        np.testing.assert_allclose(log_det[b], np.sum(np.log(slopes)), rtol=1e-12)
        np.testing.assert_allclose(y[b], [elementwise(float(u)) for u in x[b]], rtol=1e-10)
    np.testing.assert_allclose(inverse_logit_transform(y, alpha), x, rtol=1e-10, atol=1e-12)


def test_bits_per_dim_by_hand():
    # uniform density on [0, 1)^D: log p = 0 → 8 bits for 256 levels
    assert bits_per_dim(0.0, 784) == pytest.approx(8.0, rel=1e-14)
    # log p = −500 nats over 784 dimensions: 8 + 500 / (784 ln 2) = 8.920086...
    assert bits_per_dim(-500.0, 784) == pytest.approx(8 + 500 / (784 * 0.6931471805599453), rel=1e-14)
    assert bits_per_dim(-500.0, 784) == pytest.approx(8.920086, abs=1e-6)
    with pytest.raises(ValueError, match="dims must be an int"):
        bits_per_dim(0.0, 0)


# ---------------------------------------------------------------------------------------------
# The exact trace in blocks (the MNIST test bits/dim): a linear field on image-shaped states
# ---------------------------------------------------------------------------------------------


def image_linear_field(a, event):
    """f(t, z) = A vec(z), reshaped back to the image: a linear field on `(batch, *event)` states."""

    def f(t, z, params):
        return (z.reshape(z.shape[0], -1) @ params.T).reshape(z.shape)

    return f


@pytest.mark.parametrize("block", [None, 1, 5, 16, 40])
def test_blocked_exact_trace_of_an_image_flow_is_the_closed_form(block):
    """4×4×1 images (D = 16), A random: log p(x) = log N(e^A x) + tr A for every block size (5: a ragged last block)."""
    event = (4, 4, 1)
    a = 0.3 * normal(21, (16, 16))
    x = normal(22, (3, *event))
    flow = CNF(image_linear_field(a, event), event, "exact", exact_block=block, **TIGHT)
    out = jax.jit(lambda p, x_: flow.log_prob(p, x_, frobenius=True))(a, x)
    z1 = x.reshape(3, 16) @ expm(a).T
    np.testing.assert_allclose(out.log_prob, standard_normal_log_prob(z1) + jnp.trace(a), rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(out.reg["frobenius"], jnp.full(3, jnp.sum(a**2) / 16), rtol=1e-9)


def test_blocked_exact_divergence_matches_jacfwd_on_a_conv_field():
    module = ConcatConvField(hidden=(3,))
    z = normal(23, (2, 3, 3, 1))
    params = np_init(module, 24, z)

    def single(zb):
        return module.apply(params, 0.5, zb.reshape(1, 3, 3, 1)).reshape(9)

    ref = jax.jit(jax.vmap(lambda zb: jnp.trace(jax.jacfwd(single)(zb))))(z.reshape(2, 9))
    _, div, _ = jax.jit(lambda z_: exact_divergence(lambda u: module.apply(params, 0.5, u), z_, block=4))(z)
    np.testing.assert_allclose(div, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("block", [0, 2.5, True])
def test_bad_exact_block_is_a_one_line_error(block):
    with pytest.raises(ValueError, match=r"^exact_block must be None or an int >= 1, got"):
        CNF(lambda t, z, p: z, (2,), "exact", exact_block=block)
    with pytest.raises(ValueError, match=r"^block must be None or an int >= 1, got"):
        exact_divergence(lambda u: u, jnp.zeros((1, 2)), block=block)
