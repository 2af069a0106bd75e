"""References shared by the tests: small vector fields, RK4, Simpson, relative error, a counting field."""

import functools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.experimental import io_callback

from taynode import activations


def mlp_params(key, dim, hidden=16, scale=0.6):
    k1, k2, k3, k4 = jr.split(key, 4)
    return {
        "w1": scale * jr.normal(k1, (dim + 1, hidden)),
        "b1": 0.1 * jr.normal(k2, (hidden,)),
        "w2": scale * jr.normal(k3, (hidden, dim)) / jnp.sqrt(hidden),
        "b2": 0.1 * jr.normal(k4, (dim,)),
    }


@functools.cache
def mlp_field(act="tanh"):
    """f(t, y, θ) = W2 σ(W1 [y, t] + b1) + b2; time dependent; works for y of shape (d,) or (b, d).

    One function object per activation, so that solves of it share their compilation across tests.
    """
    sigma = activations.get_activation(act)

    def f(t, y, p):
        tt = jnp.broadcast_to(t, y.shape[:-1] + (1,)).astype(y.dtype)
        h = sigma(jnp.concatenate([y, tt], axis=-1) @ p["w1"] + p["b1"])
        return h @ p["w2"] + p["b2"]

    return f


class Counter:
    """A vector field wrapper that counts its evaluations at run time (io_callback)."""

    def __init__(self, field):
        self.field = field
        self.count = 0

    def _bump(self, x):
        self.count += 1
        return np.zeros((), np.int32)

    def __call__(self, t, y, args):
        leaf = jax.tree_util.tree_leaves(y)[0]
        z = io_callback(self._bump, jax.ShapeDtypeStruct((), jnp.int32), leaf, ordered=True)
        return jax.tree_util.tree_map(lambda v: v + 0 * z, self.field(t, y, args))


def rel_err(a, b):
    """‖a − b‖ / ‖b‖ over all entries."""
    a, b = np.asarray(a), np.asarray(b)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
def rk4_reference(f, y0, args, t0, t1, n):
    """Fixed-step classical RK4, written out independently of diffrax; returns grid and states."""
    h = (t1 - t0) / n

    def step(y, t):
        k1 = f(t, y, args)
        k2 = f(t + h / 2, y + h / 2 * k1, args)
        k3 = f(t + h / 2, y + h / 2 * k2, args)
        k4 = f(t + h, y + h * k3, args)
        y1 = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return y1, y1

    ts = t0 + h * jnp.arange(n + 1)
    _, ys = jax.lax.scan(step, y0, ts[:-1])
    return ts, jnp.concatenate([y0[None], ys])


def simpson(values, ts):
    """Composite Simpson rule over an even number of equal intervals (leading axis of `values`)."""
    h = ts[1] - ts[0]
    w = np.ones(len(ts))
    w[1:-1:2], w[2:-1:2] = 4, 2
    return h / 3 * jnp.tensordot(jnp.asarray(w), values, axes=(0, 0))


def reference_integral(f, y0, p, integrand, t1=1.0, n=2000):
    """∫ integrand(t, y(t)) dt along an RK4 solution, by Simpson's rule."""
    ts, ys = rk4_reference(f, y0, p, 0.0, t1, n)
    vals = jax.vmap(integrand)(ts, ys)
    return simpson(vals, ts)
