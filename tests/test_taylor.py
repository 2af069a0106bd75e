import functools
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import mlp_field, mlp_params, rel_err
from jax.experimental.jet import jet

from taynode import activations
from taynode.taylor import solution_derivatives


@functools.cache
def _derivatives(act, order, method):
    """Derivatives 1..order of the MLP field's solution at one point, compiled once per case."""
    key = jr.PRNGKey(order)
    f = mlp_field(act)
    p = mlp_params(key, 3)
    y = jr.normal(jr.fold_in(key, 1), (3,))
    return jax.jit(lambda y, p: solution_derivatives(f, 0.37, y, p, order, method=method))(y, p)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softplus"])
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5, 6])
def test_jet_matches_nested_jvp(act, order):
    jets = _derivatives(act, order, "jet")
    jvps = _derivatives(act, order, "jvp")
    assert len(jets) == len(jvps) == order
    for k, (a, b) in enumerate(zip(jets, jvps)):
        assert rel_err(a, b) <= 1e-10, (k + 1, a, b)


def test_batched_field_and_pytree_state():
    f = mlp_field("tanh")
    p = mlp_params(jr.PRNGKey(3), 2)
    y = jr.normal(jr.PRNGKey(4), (5, 2))
    out = solution_derivatives(f, 0.1, y, p, 3)
    ref = solution_derivatives(f, 0.1, y, p, 3, method="jvp")
    assert out[-1].shape == (5, 2)
    assert rel_err(out[-1], ref[-1]) <= 1e-10

    def g(t, y, a):  # a rotation written on a dict state
        return {"u": -y["v"] * (1 + t), "v": y["u"] * (1 + t)}

    yd = {"u": jnp.array(0.3), "v": jnp.array(-1.2)}
    a = solution_derivatives(g, 0.5, yd, None, 4)
    b = solution_derivatives(g, 0.5, yd, None, 4, method="jvp")
    for x, z in zip(a, b):
        assert rel_err(x["u"], z["u"]) <= 1e-12 and rel_err(x["v"], z["v"]) <= 1e-12


@pytest.mark.parametrize("method", ["jet", "jvp"])
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5, 6])
def test_linear_closed_form(order, method):
    A = jr.normal(jr.PRNGKey(0), (4, 4))
    y = jr.normal(jr.PRNGKey(1), (4,))
    out = solution_derivatives(lambda t, y, a: A @ y, 0.0, y, None, order, method=method)
    Ak = np.eye(4)
    for k in range(order):
        Ak = np.asarray(A) @ Ak
        assert rel_err(out[k], Ak @ np.asarray(y)) <= 1e-12


@pytest.mark.parametrize("method", ["jet", "jvp"])
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5, 6])
def test_quadratic_closed_form(order, method):
    # y' = y²  =>  y^(k) = k! y^(k+1)
    y = jnp.array([0.3, -0.7, 1.1])
    out = solution_derivatives(lambda t, y, a: y**2, 0.0, y, None, order, method=method)
    for k in range(1, order + 1):
        assert rel_err(out[k - 1], math.factorial(k) * y ** (k + 1)) <= 1e-12


@pytest.mark.parametrize("method", ["jet", "jvp"])
def test_time_only_field(method):
    # y' = t  =>  y'' = 1, higher derivatives 0
    y = jnp.zeros(3)
    out = solution_derivatives(lambda t, y, a: t * jnp.ones_like(y), 0.7, y, None, 5, method=method)
    np.testing.assert_allclose(out[0], 0.7)
    np.testing.assert_allclose(out[1], 1.0)
    for d in out[2:]:
        np.testing.assert_array_equal(d, 0.0)


SAFE_VS_NN = [
    ("relu", activations.relu, jax.nn.relu),
    ("softplus", activations.softplus, jax.nn.softplus),
    ("sigmoid", activations.sigmoid, jax.nn.sigmoid),
    ("silu", activations.silu, jax.nn.silu),
    ("tanh", activations.tanh, jnp.tanh),
]


def nested_derivs(fn, x, n):
    """Derivatives 1..n of an elementwise function by nested jvp (reference)."""
    out, g = [], fn
    for _ in range(n):
        g = (lambda h: lambda x: jax.jvp(h, (x,), (jnp.ones_like(x),))[1])(g)
        out.append(g(x))
    return out


@pytest.mark.parametrize("name,safe,ref", SAFE_VS_NN, ids=[s[0] for s in SAFE_VS_NN])
def test_activation_matches_jax_nn(name, safe, ref):
    x = jnp.array([-30.0, -3.1, -0.4, 0.25, 1.7, 4.0, 30.0])
    np.testing.assert_allclose(safe(x), ref(x), rtol=1e-13, atol=1e-300)
    # jet through the safe function, d^k/ds^k safe(x + s) at s = 0 for k = 1..4
    ones, zeros = jnp.ones_like(x), jnp.zeros_like(x)
    _, series = jet(safe, (x,), ((ones, zeros, zeros, zeros),))
    expect = nested_derivs(ref, x, 4)
    for k in range(4):
        np.testing.assert_allclose(series[k], expect[k], rtol=1e-9, atol=1e-12)


def test_logaddexp_matches():
    a = jnp.array([-3.0, 0.2, 5.0, 40.0])
    b = jnp.array([1.0, 0.1, -7.0, 39.0])
    np.testing.assert_allclose(activations.logaddexp(a, b), jnp.logaddexp(a, b), rtol=1e-13)
    ones, zeros = jnp.ones_like(a), jnp.zeros_like(a)
    _, series = jet(lambda u: activations.logaddexp(u, b), (a,), ((ones, zeros, zeros, zeros),))
    expect = nested_derivs(lambda u: jnp.logaddexp(u, b), a, 4)
    for k in range(4):
        np.testing.assert_allclose(series[k], expect[k], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["relu", "softplus", "logaddexp"])
def test_jax_custom_jvp_functions_are_not_jet_safe(name):
    # documents why the package carries its own activations: jet has no rule for custom_jvp
    x = jnp.array([0.5, -0.5])
    fn = {"relu": jax.nn.relu, "softplus": jax.nn.softplus, "logaddexp": lambda u: jnp.logaddexp(u, x)}[name]
    with pytest.raises(jax.errors.UnexpectedTracerError):
        jet(fn, (x,), ((jnp.ones_like(x),),))


def test_unknown_activation():
    with pytest.raises(ValueError, match="activation must be one of"):
        activations.get_activation("gelu")


@pytest.mark.parametrize("order", [0, -1, 1.5, True, "3", None])
def test_bad_order(order):
    with pytest.raises(ValueError, match="order must be an int >= 1"):
        solution_derivatives(lambda t, y, a: y, 0.0, jnp.ones(2), None, order)


def test_bad_method_and_shapes():
    with pytest.raises(ValueError, match="method must be one of"):
        solution_derivatives(lambda t, y, a: y, 0.0, jnp.ones(2), None, 2, method="fd")
    with pytest.raises(ValueError, match="vector_field"):
        solution_derivatives(lambda t, y, a: y[:1], 0.0, jnp.ones(2), None, 2)
    with pytest.raises(ValueError, match="t must be a scalar"):
        solution_derivatives(lambda t, y, a: y, jnp.zeros(2), jnp.ones(2), None, 2)


@pytest.mark.parametrize("n", [8, 64, 128, 256])
def test_canary_matmul_by_zeros(n):
    """jax/jaxlib 0.10.2 miscompile this on CPU (garbage/NaN for n >= 64); jet emits it."""
    a = jnp.ones((n, n))
    b = jr.normal(jr.PRNGKey(0), (n, n))
    out = jax.jit(lambda b, a: jnp.sum(b @ jnp.zeros_like(a)))(b, a)
    assert float(out) == 0.0


def test_canary_rk_finite_for_wide_mlp():
    f = mlp_field("tanh")
    p = mlp_params(jr.PRNGKey(0), 100, hidden=256)
    y = jr.normal(jr.PRNGKey(1), (128, 100))
    d3 = jax.jit(lambda y: solution_derivatives(f, 0.5, y, p, 3)[-1])(y)
    ref = solution_derivatives(f, 0.5, y, p, 3, method="jvp")[-1]
    assert np.all(np.isfinite(d3))
    assert rel_err(d3, ref) <= 1e-10
