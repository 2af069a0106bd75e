"""Small vector fields shared by the tests."""

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


def mlp_field(act="tanh"):
    """f(t, y, θ) = W2 σ(W1 [y, t] + b1) + b2; time dependent; works for y of shape (d,) or (b, d)."""
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
