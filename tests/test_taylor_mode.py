"""Incremental Taylor mode (`method="taylor"`) against nested jvp, closed forms and jet."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import mlp_field, mlp_params, rel_err
from jax.extend import core as jcore

from taynode import TaylorRK, solve
from taynode.cnf import ConcatConvField
from taynode.latent import LatentDynamics
from taynode.models import MNISTDynamics, as_field
from taynode.taylor import solution_derivatives
from taynode.taylor_mode import taylor_coefficients, taylor_derivatives

ORDERS = list(range(1, 9))
TOP = ORDERS[-1]


def _random_params(key, params, scale=0.5):
    """Flax parameters replaced by N(0, scale²) draws (zero-initialised layers would hide the higher orders)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jr.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [scale * jr.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def _dict_field(t, y, p):
    """A time-dependent field on a dict state, with exp, log, sin, cos, sqrt, powers and division."""
    h = jnp.tanh(jnp.concatenate([y["u"], y["v"]], axis=-1) @ p["w"] + t)
    return {
        "u": -y["v"][..., :1] * (1 + t) + jnp.sin(h[..., :3]) / jnp.sqrt(2 + y["u"] ** 2),
        "v": jnp.exp(-h[..., 3:]) * jnp.cos(t) + (1.5 + y["v"] ** 2) ** -1 + jnp.log1p(y["v"] ** 2) * t**2,
    }


def _case(name):
    """(field, t, y, args) of a named test case; batched states, small shapes."""
    key = jr.PRNGKey(sum(map(ord, name)))
    k1, k2 = jr.split(key)
    if name.startswith("mlp_"):
        return mlp_field(name[4:]), 0.37, jr.normal(k1, (4, 3)), mlp_params(k2, 3)
    if name == "mnist":
        module = MNISTDynamics()
        y = jr.uniform(k1, (2, 784))
        return as_field(module), 0.3, y, _random_params(k2, module.init(k2, 0.0, y), scale=0.1)
    if name == "latent":
        module = LatentDynamics()
        y = jr.normal(k1, (3, 20))
        return as_field(module), 0.0, y, module.init(k2, 0.0, y)
    if name.startswith("conv_"):
        module = ConcatConvField(hidden=(3,), activation="softplus", impl=name[5:])
        y = jr.normal(k1, (2, 4, 4, 1))
        return as_field(module), 0.6, y, _random_params(k2, module.init(k2, 0.0, y))
    if name == "dict":
        y = {"u": jr.normal(k1, (2, 3)), "v": jr.normal(k2, (2, 3))}
        return _dict_field, 0.2, y, {"w": 0.5 * jr.normal(key, (6, 6))}
    raise ValueError(name)


# FFJORD's ConcatConv2D through its im2col implementation (pad, slices, concatenate, one product); XLA's
# convolution primitive is covered to order 4 by `test_conv_primitive` (its float64 compilation is slow).
FIELDS = ["mlp_tanh", "mlp_sigmoid", "mlp_softplus", "mnist", "latent", "conv_im2col", "dict"]


JVP_TOP = 4  # nested jvp's program doubles with every order: the reference up to order 4, jet beyond


@functools.cache
def _reference(name, method):
    """Derivatives 1..JVP_TOP by nested jvp, or 1..TOP by jet, compiled once per field."""
    f, t, y, p = _case(name)
    top = JVP_TOP if method == "jvp" else TOP
    return jax.jit(lambda y, p: solution_derivatives(f, t, y, p, top, method=method))(y, p)


@functools.cache
def _taylor(name):
    """Derivatives 1..TOP by incremental Taylor mode, compiled once per field."""
    f, t, y, p = _case(name)
    return jax.jit(lambda y, p: solution_derivatives(f, t, y, p, TOP, method="taylor"))(y, p)


def _assert_close(a, b, tol=1e-10):
    for x, z in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert x.shape == z.shape
        assert rel_err(x, z) <= tol, rel_err(x, z)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", FIELDS)
def test_matches_nested_jvp_and_jet(name, order):
    """Derivative `order` of the field's solution: nested jvp (orders <= 4) and jet (all orders) agree with it."""
    out = _taylor(name)
    assert len(out) == TOP
    if order <= JVP_TOP:
        _assert_close(out[order - 1], _reference(name, "jvp")[order - 1])
    _assert_close(out[order - 1], _reference(name, "jet")[order - 1])


@pytest.mark.parametrize("order", [1, 2, 5])
def test_order_argument(order):
    """A call for order K returns K derivatives, equal to the first K of a higher-order call."""
    f, t, y, p = _case("mlp_tanh")
    out = solution_derivatives(f, t, y, p, order, method="taylor")
    assert len(out) == order
    for a, b in zip(out, _taylor("mlp_tanh")):
        _assert_close(a, b, 1e-13)


@pytest.mark.parametrize("order", ORDERS)
def test_linear_closed_form(order):
    A = jr.normal(jr.PRNGKey(0), (4, 4))
    y = jr.normal(jr.PRNGKey(1), (4,))
    out = solution_derivatives(lambda t, y, a: A @ y, 0.0, y, None, order, method="taylor")
    Ak = np.eye(4)
    for k in range(order):
        Ak = np.asarray(A) @ Ak
        assert rel_err(out[k], Ak @ np.asarray(y)) <= 1e-12


@pytest.mark.parametrize("order", ORDERS)
def test_quadratic_closed_form(order):
    # y' = y²  =>  y^(k) = k! y^(k+1), Taylor coefficients y_k = y^(k+1)
    y = jnp.array([0.3, -0.7, 1.1])
    out = solution_derivatives(lambda t, y, a: y**2, 0.0, y, None, order, method="taylor")
    coeffs = taylor_coefficients(lambda t, y, a: y**2, 0.0, y, None, order)
    for k in range(1, order + 1):
        assert rel_err(out[k - 1], math.factorial(k) * y ** (k + 1)) <= 1e-12
        assert rel_err(coeffs[k - 1], y ** (k + 1)) <= 1e-12


def test_time_only_field():
    # y' = t  =>  y'' = 1, higher derivatives 0
    out = solution_derivatives(lambda t, y, a: t * jnp.ones_like(y), 0.7, jnp.zeros(3), None, 8, method="taylor")
    np.testing.assert_allclose(out[0], 0.7)
    np.testing.assert_allclose(out[1], 1.0)
    for d in out[2:]:
        assert d.shape == (3,)
        np.testing.assert_array_equal(d, 0.0)


def test_one_product_per_order_and_no_zero_products():
    """A dense layer costs one product per order; no product ever takes a known-zero operand."""
    f = mlp_field("tanh")
    p = mlp_params(jr.PRNGKey(0), 3)
    y = jr.normal(jr.PRNGKey(1), (4, 3))
    for order in (3, 6):
        jaxpr = jax.make_jaxpr(lambda y: taylor_derivatives(f, 0.5, y, p, order)[-1])(y).jaxpr
        dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
        assert len(dots) == 2 * order  # two layers, orders 0..order-1
        zeros = {e.outvars[0] for e in jaxpr.eqns if e.primitive.name == "broadcast_in_dim"
                 and isinstance(e.invars[0], jcore.Literal) and e.invars[0].val == 0}
        assert not any(v in zeros for e in dots for v in e.invars)


@pytest.mark.parametrize(
    "field,primitive",
    [(lambda t, y, a: y * jnp.max(y), "reduce_max"), (lambda t, y, a: jax.lax.erf(y), "erf")],
    ids=["reduce_max", "erf"],
)
def test_unsupported_primitive_is_named(field, primitive):
    with pytest.raises(NotImplementedError, match=f"no rule for the primitive '{primitive}'"):
        solution_derivatives(field, 0.0, jnp.ones(3), None, 2, method="taylor")


def test_constant_only_operations_are_allowed():
    # an unsupported primitive on the parameters alone is evaluated once, not differentiated
    out = solution_derivatives(lambda t, y, a: y * jnp.max(a), 0.0, jnp.ones(3), jnp.arange(3.0), 3, method="taylor")
    np.testing.assert_allclose(out[2], 8.0)


def test_bad_field_shape():
    with pytest.raises(ValueError, match="vector_field"):
        taylor_derivatives(lambda t, y, a: y[:1], 0.0, jnp.ones(2), None, 2)


# Inside a solve: R_3 and its gradient agree with the jet method.


def _rk_loss(method, p):
    f = mlp_field("tanh")
    y0 = jnp.array([0.4, -0.9])
    sol = solve(f, y0, p, rtol=1e-8, atol=1e-8, regularizers=[TaylorRK(3, method=method)])
    return sol.reg["R3"]


@functools.cache
def _rk_value_and_grad(method):
    p = mlp_params(jr.PRNGKey(11), 2, hidden=8)
    return jax.jit(jax.value_and_grad(functools.partial(_rk_loss, method)))(p)


def test_solve_r3_matches_jet():
    (v_taylor, _), (v_jet, _) = _rk_value_and_grad("taylor"), _rk_value_and_grad("jet")
    assert rel_err(v_taylor, v_jet) <= 1e-9


def test_solve_r3_gradient_matches_jet():
    (_, g_taylor), (_, g_jet) = _rk_value_and_grad("taylor"), _rk_value_and_grad("jet")
    for a, b in zip(jax.tree_util.tree_leaves(g_taylor), jax.tree_util.tree_leaves(g_jet)):
        assert rel_err(a, b) <= 1e-8


def test_conv_primitive():
    """FFJORD's ConcatConv2D with XLA's convolution, orders 1..4, against nested jvp."""
    f, t, y, p = _case("conv_conv")
    out = jax.jit(lambda y, p: solution_derivatives(f, t, y, p, 4, method="taylor"))(y, p)
    ref = jax.jit(lambda y, p: solution_derivatives(f, t, y, p, 4, method="jvp"))(y, p)
    for a, b in zip(out, ref):
        _assert_close(a, b)


def test_flax_conv_module_directly():
    """A plain flax `nn.Conv` with softplus on an image-shaped state, time as an extra channel."""

    class Field(nn.Module):
        @nn.compact
        def __call__(self, t, y):
            x = jnp.concatenate([y, jnp.ones_like(y[..., :1]) * t], axis=-1)
            h = nn.softplus(nn.Conv(3, (3, 3))(x))
            return nn.Conv(y.shape[-1], (3, 3))(h)

    y = jr.normal(jr.PRNGKey(0), (2, 4, 4, 2))
    f = as_field(Field())
    p = Field().init(jr.PRNGKey(1), 0.0, y)
    out = jax.jit(lambda y, p: solution_derivatives(f, 0.4, y, p, 3, method="taylor"))(y, p)
    ref = jax.jit(lambda y, p: solution_derivatives(f, 0.4, y, p, 3, method="jvp"))(y, p)
    for a, b in zip(out, ref):
        assert rel_err(a, b) <= 1e-10
