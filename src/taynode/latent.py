"""The latent ODE of the paper's time-series experiment (Rubanova et al.'s model, as the paper's code).

An irregularly observed series x(t_1..t_T) with mask m is encoded backwards in time by a masked
GRU into a Gaussian posterior q(z0 | x) over a latent initial state; samples z0 are carried along
the time grid by latent dynamics z' = f(z) and decoded to the observation space:

    encoder   (values, mask, Δt) at t_T, …, t_1 → GRU (mean, std) → MLP → (μ, σ) of z0
    dynamics  f(z) = Linear(latent) ∘ tanh ∘ [Linear(units) ∘ tanh] × layers   (time-independent)
    decoder   x̂(t) = Linear(features)(z(t))

Only the dynamics are an ODE vector field: Taylor-mode AD (`jet`) sees them alone, so they use
`taynode.activations.tanh`; the encoder is an ordinary `lax.scan` and is differentiated by
reverse mode only.

**Initialisation** (as the paper's code): the encoder's and the decoder's weights are drawn from
N(0, 0.1²), their biases 0. The dynamics' weights follow `DYN_INITS`: `"haiku"` is the paper's
(Haiku's default `Linear` initialisation: a normal of standard deviation 1/√fan_in truncated at
±2 standard deviations, so about 0.88/√fan_in after truncation), `"lecun"` is flax's default
(LeCun normal: a truncated normal of standard deviation 1/√fan_in *after* truncation); biases 0.

The loss terms are pure functions of arrays (tested against hand computations):
`masked_gaussian_loglik`, `masked_mse`, `masked_sq_errors`, `gaussian_kl`, `iwae_loss` and
`kl_coefficient`.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from .activations import sigmoid, tanh

__all__ = [
    "GRUStep",
    "Encoder",
    "LatentDynamics",
    "Decoder",
    "encoder_inputs",
    "DYN_INITS",
    "masked_gaussian_loglik",
    "masked_mse",
    "masked_sq_errors",
    "gaussian_kl",
    "iwae_loss",
    "kl_coefficient",
]

#: the paper's code initialises the encoder and decoder weights from N(0, 0.1²), biases at 0
_INIT = dict(kernel_init=nn.initializers.normal(0.1), bias_init=nn.initializers.zeros)

#: Standard deviation of a standard normal truncated to [-2, 2] (flax's `variance_scaling` divides by it).
_TRUNCATED_STD = 0.87962566103423978

#: initialisations of the latent dynamics' weights (biases are 0 in both)
DYN_INITS = {
    # Haiku's default Linear init (the paper's code): TruncatedNormal(stddev=1/sqrt(fan_in)), i.e. a normal of
    # that standard deviation truncated at ±2 of it. variance_scaling divides its standard deviation by
    # _TRUNCATED_STD, so scale = _TRUNCATED_STD² gives the untruncated 1/sqrt(fan_in).
    "haiku": nn.initializers.variance_scaling(_TRUNCATED_STD**2, "fan_in", "truncated_normal"),
    # flax's default (LeCun normal): 1/sqrt(fan_in) after truncation
    "lecun": nn.initializers.lecun_normal(),
}


class GRUStep(nn.Module):
    """One step of the paper's masked GRU on a (mean, std) hidden state.

    Gates and the candidate state are small MLPs (Linear(units) → tanh → Linear). The state
    changes only for examples with at least one observed feature at this time point
    (`observed`); elsewhere it is returned unchanged.

    **Arguments** (call): `carry = (mean, std)`, each `(batch, hidden)`; `inputs = (x, observed)`
    with `x` `(batch, input_dim)` and `observed` `(batch,)` bool. **Returns** `((mean, std), None)`.
    """

    hidden: int = 40
    units: int = 50

    @nn.compact
    def __call__(self, carry, inputs):
        mean, std = carry
        x, observed = inputs

        def mlp(out, h):
            h = tanh(nn.Dense(self.units, **_INIT)(h))
            return nn.Dense(out, **_INIT)(h)

        h = jnp.concatenate([mean, std, x], axis=-1)
        update = sigmoid(mlp(self.hidden, h))
        reset = sigmoid(mlp(self.hidden, h))
        new = mlp(2 * self.hidden, jnp.concatenate([mean * reset, std * reset, x], axis=-1))
        new_mean, new_std = new[..., : self.hidden], jnp.abs(new[..., self.hidden :])
        new_mean = (1 - update) * new_mean + update * mean
        new_std = (1 - update) * new_std + update * std
        keep = observed[:, None]
        return (jnp.where(keep, new_mean, mean), jnp.where(keep, new_std, std)), None


def encoder_inputs(values, mask, times):
    """The GRU's input at each time point: `[values, mask, Δt]`, `(batch, T, 2·D + 1)`.

    `Δt_i = t_{i+1} − t_i` (0 at the last point), as the paper's code.
    """
    delta = jnp.concatenate([times[1:] - times[:-1], jnp.zeros((1,), times.dtype)])
    delta = jnp.broadcast_to(delta[None, :, None], values.shape[:2] + (1,)).astype(values.dtype)
    return jnp.concatenate([values, mask, delta], axis=-1)


class Encoder(nn.Module):
    """The recognition network: the masked GRU run from the last time point to the first, then
    (mean, std) → Linear(units) → tanh → Linear(2·latent) → (μ, |σ|) of q(z0 | x).

    **Arguments** (call): `values`, `mask` `(batch, T, D)`, `times` `(T,)`. **Returns** `(mu, sigma)`,
    each `(batch, latent)`.
    """

    latent: int = 20
    hidden: int = 40
    units: int = 50

    @nn.compact
    def __call__(self, values, mask, times):
        x = encoder_inputs(values, mask, times)
        observed = jnp.any(mask > 0, axis=-1)
        # time-major and reversed: the scan runs from t_T back to t_1
        xs = (jnp.swapaxes(x, 0, 1)[::-1], jnp.swapaxes(observed, 0, 1)[::-1])
        scan = nn.scan(GRUStep, variable_broadcast="params", split_rngs={"params": False})
        zeros = jnp.zeros((values.shape[0], self.hidden), values.dtype)
        (mean, std), _ = scan(hidden=self.hidden, units=self.units)((zeros, zeros), xs)
        h = tanh(nn.Dense(self.units, **_INIT)(jnp.concatenate([mean, std], axis=-1)))
        out = nn.Dense(2 * self.latent, **_INIT)(h)
        return out[..., : self.latent], jnp.abs(out[..., self.latent :])


class LatentDynamics(nn.Module):
    """The paper's latent dynamics: `layers` × (tanh → Linear(units)) → tanh → Linear(latent).

    Time-independent (t is accepted and ignored, so that `taynode.models.as_field` applies);
    jet-safe. Weights initialised by `DYN_INITS[weight_init]` (`"haiku"`: the paper's; `"lecun"`: flax's
    default), biases 0.
    """

    latent: int = 20
    units: int = 50
    layers: int = 4
    weight_init: str = "haiku"

    @nn.compact
    def __call__(self, t, z):
        if self.weight_init not in DYN_INITS:
            raise ValueError(f"weight_init must be one of {tuple(DYN_INITS)}, got {self.weight_init!r}")
        dense = dict(kernel_init=DYN_INITS[self.weight_init], bias_init=nn.initializers.zeros)
        h = z
        for _ in range(self.layers):
            h = nn.Dense(self.units, **dense)(tanh(h))
        return nn.Dense(self.latent, **dense)(tanh(h))


class Decoder(nn.Module):
    """Linear map from the latent state to the `features` observed quantities."""

    features: int = 37

    @nn.compact
    def __call__(self, z):
        return nn.Dense(self.features, **_INIT)(z)


def masked_gaussian_loglik(values, mask, pred, std: float):
    """Gaussian log-likelihood of the observed cells, one value per posterior sample.

    `values`, `mask`: `(batch, T, D)`; `pred`: `(samples, batch, T, D)`; returns `(samples,)`:
    `log N(x | x̂, std²)` summed over the observed cells of the whole batch and divided by their
    number (the paper's normalisation: a mean per observed cell). Unobserved cells contribute
    nothing (the paper's code also added the normalising constant of every unobserved cell, a
    constant offset).
    """
    logp = -0.5 * ((values[None] - pred) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
    return jnp.sum(logp * mask[None], axis=(1, 2, 3)) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_mse(values, mask, pred):
    """Squared error over the observed cells divided by their number, averaged over samples."""
    sq = jnp.sum(mask[None] * (values[None] - pred) ** 2, axis=(1, 2, 3))
    return jnp.mean(sq / jnp.maximum(jnp.sum(mask), 1.0))


def masked_sq_errors(values, mask, pred):
    """Per example: the squared error summed over its observed cells (averaged over samples), and the
    number of those cells.

    `values`, `mask`: `(batch, T, D)`; `pred`: `(samples, batch, T, D)`. Returns `(sq, cells)`, each
    `(batch,)`. An example's MSE is `sq / cells`; the MSE of a set of examples over all their observed
    cells is `sum(sq) / sum(cells)` (for one batch, `masked_mse`).
    """
    sq = jnp.mean(jnp.sum(mask[None] * (values[None] - pred) ** 2, axis=(2, 3)), axis=0)
    return sq, jnp.sum(mask, axis=(1, 2))


def gaussian_kl(mu, sigma):
    """KL(N(μ, σ²) ‖ N(0, 1)) per latent dimension, averaged over the batch and the dimensions."""
    var = sigma**2
    return jnp.mean(0.5 * (var + mu**2 - 1.0 - jnp.log(var)))


def iwae_loss(loglik, kl, kl_coef):
    """The paper's loss: `−logsumexp_s(loglik_s − β·KL)` over the posterior samples.

    As in the paper's code there is no `−log S` term (a constant `log S` below the importance
    weighted bound).
    """
    a = loglik - kl_coef * kl
    m = jnp.max(a)
    return -(m + jnp.log(jnp.sum(jnp.exp(a - m))))


def kl_coefficient(epoch, delay: int = 10, rate: float = 0.99):
    """The KL annealing weight `max(0, 1 − rate^(epoch − delay))` (epochs counted from 0)."""
    epoch = jnp.asarray(epoch)
    return jnp.maximum(0.0, 1.0 - rate ** (epoch - delay))
