"""FFJORD on images: the paper's single-scale MNIST flow, and a CPU-sized flow on 8×8 digits, in bits per dimension.

    taynode train ffjord_mnist --preset gpu --reg taylor --order 2 --lam 3e-4

**Data.** `images="mnist"`: MNIST pixels (`taynode.data.load_mnist`, 256 levels), optionally
reduced to 14×14 by 2×2 block means rounded to 256 levels (`image_size=14`). `images="digits"`
(the `cpu` and `smoke` presets): scikit-learn's 8×8 digits (`taynode.data.digits`: 17 grey levels,
1200 training, 197 validation and 400 test images). Training batches are dequantised afresh every
step, x = (pixel + u)/L with u ~ U(0, 1) and L the number of levels, and mapped by the logit
transform y = logit(α + (1 − 2α)x), α = 1e-5 (`taynode.cnf`); the test (and validation) images
are dequantised once with the fixed seed `TEST_SEED`.

**Model.** As the paper's `ffjord_mnist.py`: one flow on the image, field ConcatConv2D
64-64-64-1 (3×3, softplus, last layer zero-initialised, so the flow starts as the identity),
Hutchinson's trace with a Rademacher probe, Adam 1e-3 with a 1000-step warm-up, batch 200,
Dopri5 at rtol = atol = 1e-5 (the `paper` and `gpu` presets). The loss is bits/dim of the
L-level pixels, log-Jacobian of the logit transform included. The regularisers see z only.

**Test bits/dim.** With `test_trace="exact"` (the `cpu` and `smoke` presets) the test log-density
uses the exact Jacobian trace (D = 64 jvps per field evaluation at 8×8, `exact_block` of them at
once), so it is a log-likelihood, not an estimate. With `"hutchinson"` (`gpu` and `paper`, at
28×28 where the exact trace costs 784 jvps) every test image gets its own Rademacher probe, as
FFJORD's test: the estimates' errors average out over the test set instead of sharing one probe.
The digits have a validation split: a run with `eval_every > 0` keeps the parameters with the
lowest validation bits/dim (`Experiment.validation_loss`); MNIST runs keep their last parameters.

**Baseline.** `gaussian_test_bpd`: a full-covariance Gaussian fit (maximum likelihood) to the
logit-transformed training images, dequantised once with `BASELINE_SEED`, scored on the same
dequantised test images with the same log-Jacobian: the bits/dim a flow must beat.

**NFE and penalties** use one fixed Rademacher probe image (drawn from `PRNGKey(TEST_SEED)`)
shared by every test example, so that an example solved alone sees the same probe as in a joint batch.

**Scale.** One training step at full size is far too slow for 2 CPU cores
(`benchmarks/ffjord_step.py` times it), and so is the earlier 14×14 reduction (hidden channels
16-16-16, batch 100: about 5 s a step, hours before it could approach its Gaussian baseline). The
`cpu` preset is a stated reduction to a smaller real image set: the 8×8 digits, hidden channels
16-16-16, batch 100, 300 epochs (3600 steps), the validation bits/dim every 240 steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._checks import check_ints
from ..cnf import (
    CNF,
    ConcatConvField,
    bits_per_dim,
    dequantize,
    draw_probe,
    logit_transform,
    standard_normal_log_prob,
)
from ..configs import ExperimentConfig, field
from ..data import digits
from ..experiment import Experiment, Problem
from ..models import as_field

__all__ = ["FFJORDMNISTConfig", "FFJORDMNIST", "EXPERIMENT", "PRESETS", "SWEEPS", "HEADLINE_LAM", "TEST_SEED",
           "downsample", "sample_images", "test_log_prob", "gaussian_baseline_bpd", "TEST_TRACES", "BASELINE_SEED"]

TEST_SEED = 12345
#: seed of the dequantisation of the training images the Gaussian baseline is fit to
BASELINE_SEED = 54321
ALPHA = 1e-5
#: how the test bits/dim take the Jacobian trace
TEST_TRACES = ("exact", "hutchinson")
#: the image sets, and the sizes each allows
IMAGE_SETS = ("mnist", "digits")
IMAGE_SIZES = {"mnist": (28, 14), "digits": (8,)}
DIGIT_LEVELS = digits.LEVELS


@dataclasses.dataclass(frozen=True)
class FFJORDMNISTConfig(ExperimentConfig):
    """One MNIST flow; the defaults are the `cpu` preset (a stated reduction of the original)."""

    images: str = field("digits", "mnist | digits (scikit-learn's 8×8 digits, 17 grey levels)")
    image_size: int = field(8, "mnist: 28 (original) or 14 (2×2 block means); digits: 8")
    hidden: tuple = field((16, 16, 16), "channels of the ConcatConv2D hidden layers (original: 64 64 64)")
    conv_impl: str = field("im2col", "conv | im2col (same values; im2col trains faster on CPU)")
    test_size: int = field(400, "test images on which the test bits/dim are measured")
    test_trace: str = field("exact", "trace of the test bits/dim: exact (D jvps) | hutchinson (a probe per image)")
    exact_block: int = field(8, "jvps of the exact trace run at once (bounds its memory: 8 × eval_chunk images)")
    # shared fields with this experiment's values
    rtol: float = field(1e-5, "relative tolerance of the training solves (original: 1e-5)")
    atol: float = field(1e-5, "absolute tolerance of the training solves (original: 1e-5)")
    eval_rtol: float = field(1e-5, "relative tolerance of evaluation")
    eval_atol: float = field(1e-5, "absolute tolerance of evaluation")
    dtype: str = field("float32", "float32 (original) | float64")
    warmup_steps: int = field(100, "linear learning-rate warm-up (original: 1000)")
    epochs: int = field(300, "passes over the training images (cpu: 300 epochs of 12 steps)")
    eval_every: int = field(240, "evaluate (validation bits/dim for model selection, on the digits) every this "
                                 "many steps (0 = only at the end)")
    checkpoint_every: int = field(240, "write a resumable checkpoint every this many steps")
    batch_size: int = field(100, "training batch size (original: 200)")
    train_size: int = field(1200, "training images used")
    nfe_examples: int = field(400, "test images of the joint-batch NFE (in batches of batch_size)")
    nfe_per_example: int = field(5, "test images solved one at a time for the per-example NFE")
    reg_examples: int = field(100, "test images on which R_2, R_3, kinetic and Frobenius are reported")
    eval_chunk: int = field(100, "images solved jointly for the test bits/dim and penalties")

    def __post_init__(self):
        super().__post_init__()
        if self.images not in IMAGE_SETS:
            raise ValueError(f"images must be one of {IMAGE_SETS}, got {self.images!r}")
        if self.image_size not in IMAGE_SIZES[self.images]:
            sizes = " or ".join(str(v) for v in IMAGE_SIZES[self.images])
            raise ValueError(f"image_size must be {sizes} for images={self.images!r}, got {self.image_size!r}")
        if not self.hidden or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1
                                      for h in self.hidden):
            raise ValueError(f"hidden must be a non-empty tuple of ints >= 1, got {self.hidden!r}")
        check_ints(self, ("test_size", "exact_block"))
        if self.test_trace not in TEST_TRACES:
            raise ValueError(f"test_trace must be one of {TEST_TRACES}, got {self.test_trace!r}")

    @property
    def dims(self) -> int:
        return self.image_size**2

    @property
    def levels(self) -> int:
        """Grey levels of a pixel: 256 (MNIST) or 17 (the digits)."""
        return DIGIT_LEVELS if self.images == "digits" else 256


PRESETS = {
    "smoke": dict(train_size=20, batch_size=10, epochs=1, hidden=(4, 4), test_size=10, nfe_examples=10,
                  nfe_per_example=2, reg_examples=10, eval_chunk=10, warmup_steps=0),
    # the defaults: the 8×8 digits, 300 epochs of 12 steps, validation every 240 steps
    "cpu": dict(),
    "gpu": dict(images="mnist", image_size=28, hidden=(64, 64, 64), conv_impl="conv", batch_size=200,
                train_size=60000, epochs=10, warmup_steps=1000, test_size=10000, nfe_examples=1000,
                nfe_per_example=20, reg_examples=1000, eval_chunk=200, test_trace="hutchinson", eval_every=0,
                checkpoint_every=100),
    # ffjord_mnist.py: Adam 1e-3 (1000-step warm-up, ÷10 at epoch 80), batch 200, 100 epochs
    "paper": dict(images="mnist", image_size=28, hidden=(64, 64, 64), conv_impl="conv", batch_size=200,
                  train_size=60000, epochs=100, warmup_steps=1000, lr_boundaries=(80,), lr_values=(1e-3, 1e-4),
                  test_size=10000, nfe_examples=1000, nfe_per_example=100, reg_examples=1000, eval_chunk=200,
                  test_trace="hutchinson", eval_every=0, checkpoint_every=100),
}

# the headline comparison at seeds 0, 1 and 2, seed by seed (unregularised, then R_2 at the original
# script's λ), then the rest at seed 0: R_2 at ten times that λ (at the original λ the penalty is about
# 0.003 bits/dim, too small a part of the loss to change the solver's steps here)
HEADLINE_LAM = 3e-4
HEADLINE = ({"reg": "none"}, {"reg": "taylor", "order": 2, "lam": HEADLINE_LAM})
REST = ({"reg": "taylor", "order": 2, "lam": 10 * HEADLINE_LAM},)
SWEEPS = {"full": tuple({**o, "seed": s} for s in (0, 1, 2) for o in HEADLINE) + tuple({**o, "seed": 0} for o in REST)}


def downsample(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 images `(n, 28, 28)` at `size` 28 (unchanged) or 14 (2×2 block means, rounded)."""
    if size == 28:
        return images
    blocks = images.reshape(len(images), 14, 2, 14, 2).astype(np.float64).mean(axis=(2, 4))
    return np.clip(np.rint(blocks), 0, 255).astype(np.uint8)


class SharedProbeField(eqx.Module):
    """The flow's augmented field with its probe broadcast to the batch.

    args = (params, probe): a probe of one example's shape `(1, *event)` is shared by every row
    (evaluation; also when one example is solved alone), a probe of the batch's shape is per row.
    """

    augmented: Any = eqx.field(static=True)

    def __call__(self, t, state, args):
        params, probe = args
        return self.augmented(t, state, (params, jnp.broadcast_to(probe, state[0].shape)))


def _field(cfg):
    return as_field(ConcatConvField(hidden=tuple(cfg.hidden), activation="softplus", impl=cfg.conv_impl))


def _flow(cfg):
    return CNF(_field(cfg), (cfg.image_size, cfg.image_size, 1), divergence="rademacher")


def _test_probe(cfg):
    return draw_probe(jr.PRNGKey(TEST_SEED), (1, cfg.image_size, cfg.image_size, 1), jnp.dtype(cfg.dtype))


def _bpd(cfg, y1, logdet):
    z, a = y1
    return bits_per_dim(standard_normal_log_prob(z) - a + logdet, cfg.dims, levels=cfg.levels)


def pixels_of(cfg, data, split: str, n: int) -> np.ndarray:
    """The first `n` images of `split` ("train", "validation", "test") at `cfg.image_size`, `(n, size, size)`.

    **Raises** `ValueError` naming the config field when the split holds fewer than `n` images.
    """
    images = data[f"{split}_images"]
    if n > len(images):
        name = {"train": "train_size", "test": "test_size"}.get(split, split)
        raise ValueError(f"{name} must be at most the {len(images)} {split} images of images={cfg.images!r}, "
                         f"got {n}")
    return downsample(images[:n], cfg.image_size) if cfg.images == "mnist" else np.asarray(images[:n])


def _mean_bpd(cfg, params, arrays) -> float:
    """Mean bits/dim of logit-space images `arrays` (`eval_arrays`), in chunks of `cfg.eval_chunk`."""
    n = len(arrays["y"])
    total = 0.0
    for i in range(0, n, cfg.eval_chunk):
        y = jnp.asarray(arrays["y"][i:i + cfg.eval_chunk])
        logp = test_log_prob(cfg, params, y, jr.fold_in(jr.PRNGKey(TEST_SEED), i))
        logdet = jnp.asarray(arrays["logdet"][i:i + cfg.eval_chunk])
        total += float(jnp.sum(bits_per_dim(logp + logdet, cfg.dims, levels=cfg.levels)))
    return total / n


class FFJORDMNIST(Experiment):
    """MNIST density estimation with the paper's single-scale CNF (bits/dim)."""

    name = "ffjord_mnist"
    Config = FFJORDMNISTConfig
    presets = PRESETS
    sweeps = SWEEPS
    description = "FFJORD on MNIST, single-scale flow, bits/dim"

    def load_data(self, cfg, progress=True):
        if cfg.images == "digits":
            return digits.load_digits()
        from ..data import load_mnist

        return load_mnist(progress=progress)

    def data_provenance(self, cfg):
        """The image files (MNIST's four, or the digits' CSV); the image set and size, the first `train_size`
        training and `test_size` test images, the seeds of the test images' and the baseline's
        dequantisation, and the logit transform's α."""
        if cfg.images == "digits":
            provenance = digits.digits_provenance
        else:
            from ..data.mnist import provenance

        return {**provenance(), "settings": {"images": cfg.images, "image_size": cfg.image_size,
                                             "train_size": cfg.train_size, "test_size": cfg.test_size,
                                             "test_seed": TEST_SEED, "baseline_seed": BASELINE_SEED,
                                             "logit_alpha": ALPHA}}

    def train_arrays(self, cfg, data):
        return pixels_of(cfg, data, "train", cfg.train_size)[..., None]

    def eval_arrays(self, cfg, data, split="test"):
        """The first `test_size` images of `split`, dequantised with `TEST_SEED` and logit-transformed."""
        n = cfg.test_size if split == "test" else len(data[f"{split}_images"])
        x = dequantize(jr.PRNGKey(TEST_SEED), pixels_of(cfg, data, split, n)[..., None], levels=cfg.levels,
                       dtype=jnp.dtype(cfg.dtype))
        y, logdet = logit_transform(x, ALPHA)
        return {"y": np.asarray(y), "logdet": np.asarray(logdet)}

    def init_params(self, cfg, key):
        s = cfg.image_size
        return _field(cfg).module.init(key, jnp.zeros((), cfg.dtype), jnp.zeros((1, s, s, 1), cfg.dtype))

    def training_batch(self, cfg, batch, key):
        """Fresh dequantisation noise and Hutchinson probes (one per image) from the step's key."""
        k_deq, k_probe = jr.split(key)
        x = dequantize(k_deq, batch, levels=cfg.levels, dtype=jnp.dtype(cfg.dtype))
        y, logdet = logit_transform(x, ALPHA)
        return {"y": y, "logdet": logdet, "probe": draw_probe(k_probe, y.shape, y.dtype, "rademacher")}

    def problem(self, cfg, params, batch):
        y = jnp.asarray(batch["y"])
        probe = batch["probe"] if "probe" in batch else _test_probe(cfg)
        zero = jnp.zeros(y.shape[:1], y.dtype)
        return Problem(SharedProbeField(_flow(cfg).augmented()), (y, zero), (params, probe), part=0)

    def loss(self, cfg, params, batch, sol, key, step):
        bpd = jnp.mean(_bpd(cfg, sol.y1, batch["logdet"]))
        return bpd, {"bpd": bpd}

    def metrics(self, cfg, params, data):
        """Test bits/dim on the first `test_size` test images (trace: `cfg.test_trace`), and the Gaussian baseline."""
        arrays = self.eval_arrays(cfg, data)
        return {"test_bpd": _mean_bpd(cfg, params, arrays), "test_trace": cfg.test_trace,
                "gaussian_test_bpd": gaussian_baseline_bpd(cfg, data), "eval_sizes": {"test": len(arrays["y"])}}

    def validation_loss(self, cfg, params, data):
        """Validation bits/dim (trace: `cfg.test_trace`) where the image set has a validation split (the
        digits); None for MNIST (no model selection)."""
        if "validation_images" not in data:
            return None
        return _mean_bpd(cfg, params, self.eval_arrays(cfg, data, "validation"))

    def summary(self, metrics):
        return f"test {metrics['test_bpd']:.3f} bits/dim"


@eqx.filter_jit
def test_log_prob(cfg, params, y, key):
    """log p(y) (nats, per image) of logit-space images `y` at the evaluation tolerance, trace by `cfg.test_trace`.

    `"exact"`: the full Jacobian trace; `"hutchinson"`: an independent Rademacher probe for every
    image, drawn from `key`. Add the logit transform's log-Jacobian for the density of the pixels.
    """
    divergence = "exact" if cfg.test_trace == "exact" else "rademacher"
    flow = CNF(_field(cfg), (cfg.image_size, cfg.image_size, 1), divergence=divergence, solver=cfg.solver,
               rtol=cfg.eval_rtol, atol=cfg.eval_atol, max_steps=cfg.max_steps, exact_block=cfg.exact_block)
    return flow.log_prob(params, y, key=None if divergence == "exact" else key).log_prob


def gaussian_baseline_bpd(cfg, data) -> float | None:
    """Test bits/dim of a full-covariance Gaussian in logit space (the flow's test images and log-Jacobian).

    Fit by maximum likelihood (float64) to the `cfg.train_size` training images dequantised once
    (numpy's generator seeded with `BASELINE_SEED`) and logit-transformed as the flow's input.
    None when there are no more training images than dimensions (the covariance would be singular).
    """
    from ..data.tabular import gaussian_nll

    if cfg.train_size <= cfg.dims:
        return None
    pixels = pixels_of(cfg, data, "train", cfg.train_size).reshape(cfg.train_size, -1)
    # `dequantize` and `logit_transform`, in numpy float64 whatever JAX's precision
    u = np.random.default_rng(BASELINE_SEED).uniform(1e-15, 1 - 1e-15, size=pixels.shape)
    s = ALPHA + (1 - 2 * ALPHA) * (pixels + u) / cfg.levels
    train = np.log(s) - np.log1p(-s)
    test = EXPERIMENT.eval_arrays(cfg, data)
    y = np.asarray(test["y"], np.float64).reshape(len(test["y"]), -1)
    logp = -gaussian_nll(train, y) + np.asarray(test["logdet"], np.float64)
    return float(np.mean(bits_per_dim(logp, cfg.dims, levels=cfg.levels)))


def sample_images(cfg, params, key, num: int):
    """`num` samples as pixel intensities in [0, 1], `(num, size, size)` (the flow run backwards)."""
    from ..cnf import inverse_logit_transform

    y = _flow(cfg).sample(params, key, num, dtype=jnp.dtype(cfg.dtype))
    return jnp.clip(inverse_logit_transform(y, ALPHA), 0.0, 1.0)[..., 0]


EXPERIMENT = FFJORDMNIST()
