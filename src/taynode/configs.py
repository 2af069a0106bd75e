"""The configuration every experiment shares, and its presets.

An experiment's config is a frozen dataclass that subclasses `ExperimentConfig` and adds its
own fields (data sizes, model widths). Every field carries a one-line help text (the CLI
builds its flags from them). The scales:

- `smoke`: seconds to ~2 min on 2 CPU cores (what CI and the live chapters run);
- `cpu`: ≤ ~30 min a run on 2 cores (the committed records the chapters show);
- `gpu`: a few minutes a run on one H100/H200-class GPU;
- `paper`: the paper's hyperparameters.

The default config of an experiment *is* the preset its `preset` field names:
`MNISTConfig() == make_config(MNISTConfig, "cpu")`; the other presets override fields.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ._checks import check_ints, check_numbers
from .regularization import Regularization
from .solve import PAPER_TOL, SOLVERS

__all__ = ["ExperimentConfig", "PRESET_NAMES", "OPTIMIZERS", "field", "make_config", "config_from_dict"]

PRESET_NAMES = ("smoke", "cpu", "gpu", "paper")
DTYPES = ("float32", "float64")
# Values of fields that a config written before the field existed implicitly had: R_K was computed
# with jet, and evaluation ran in the training dtype.
LEGACY = {"taylor_method": lambda values: "jet", "eval_dtype": lambda values: values.get("dtype", "float64"),
          # PhysioNet: flax's LeCun-normal dynamics and the rule that drops only impossible values
          "dyn_init": lambda values: "lecun", "implausible": lambda values: "drop",
          # FFJORD tabular: the one split; FFJORD MNIST: one Hutchinson probe shared by the test images
          "split_seed": lambda values: 0, "test_trace": lambda values: "hutchinson",
          # FFJORD images before the digits: MNIST
          "images": lambda values: "mnist",
          # runs before STEER existed
          "steer_b": lambda values: 0.0}
OPTIMIZERS = ("sgd", "adam", "adamax", "adamw")


def field(default: Any, help: str):
    """A config field with the help text its CLI flag shows."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Fields shared by every experiment: scale, regularisation, solver, optimiser, loop, evaluation."""

    preset: str = field("cpu", f"one of {PRESET_NAMES}: the scale of the run")
    seed: int = field(0, "seed of the initialisation, the batch order and every random draw")
    # regularisation (see taynode.regularization)
    reg: str = field("none", "none | taylor (λ·R_K) | rnode (kinetic + Frobenius) | ernode (λ·error estimates) | "
                             "srnode (λ·stiffness estimates, dopri5) | steer (random training end time)")
    order: int = field(3, "K of R_K (reg=taylor)")
    lam: float = field(0.0, "λ of R_K, R_E or R_S (reg=taylor, ernode or srnode)")
    lam_kin: float = field(0.0, "RNODE kinetic weight (reg=rnode)")
    lam_fro: float = field(0.0, "RNODE Frobenius weight (reg=rnode)")
    steer_b: float = field(0.0, "STEER half-width b of the training end time draw U(t1 - b, t1 + b) (reg=steer)")
    estimator: str = field("exact", "R_K estimator (reg=taylor): exact (an ODE state) | sampled (one point per step)")
    taylor_method: str = field("taylor", "how y^(K) is computed for R_K in training and evaluation: "
                                         "taylor (incremental Taylor mode) | jet (the paper's) | jvp (nested jvp)")
    # solver
    solver: str = field("dopri5", f"one of {sorted(SOLVERS)}")
    rtol: float = field(PAPER_TOL, "relative tolerance of the training solves")
    atol: float = field(PAPER_TOL, "absolute tolerance of the training solves")
    eval_rtol: float = field(PAPER_TOL, "relative tolerance of evaluation (NFE, penalties)")
    eval_atol: float = field(PAPER_TOL, "absolute tolerance of evaluation (NFE, penalties)")
    max_steps: int = field(4096, "maximum solver steps per solve")
    dtype: str = field("float64", "dtype of the parameters and of training: float64 | float32 (training tolerances "
                                  "below 1e-6 need float64)")
    eval_dtype: str = field("float64", "dtype of every reported number (NFE, penalties, task metrics): the trained "
                                       "parameters are cast to it; float64 | float32 (only for float32 training)")
    # optimiser
    optimizer: str = field("adam", f"one of {OPTIMIZERS}")
    lr: float = field(1e-3, "learning rate (or the first of lr_values)")
    momentum: float = field(0.9, "momentum (optimizer=sgd)")
    weight_decay: float = field(0.0, "decoupled weight decay (optimizer=adamw)")
    lr_boundaries: tuple = field((), "epochs at which the learning rate switches to the next lr_values entry")
    lr_values: tuple = field((), "piecewise-constant learning rates (one more than lr_boundaries)")
    lr_decay: float = field(1.0, "multiplicative learning-rate decay per step (1 = none)")
    lr_min: float = field(0.0, "floor of the decayed learning rate")
    warmup_steps: int = field(0, "linear learning-rate warm-up from 0 over this many steps")
    # loop
    epochs: int = field(2, "passes over the training set")
    batch_size: int = field(100, "training batch size (also the joint batch of the NFE evaluation)")
    train_size: int = field(1000, "training examples used (the first ones of the training split)")
    eval_every: int = field(0, "evaluate every this many steps (0 = only at the end)")
    checkpoint_every: int = field(100, "write a resumable checkpoint every this many steps")
    devices: int = field(1, "devices the training batch is sharded over (0 = as many local devices as divide it)")
    # evaluation
    nfe_examples: int = field(1000, "test examples of the joint-batch NFE (in batches of batch_size)")
    nfe_per_example: int = field(100, "test examples solved one at a time for the per-example NFE")
    reg_examples: int = field(1000, "test examples on which R_2, R_3, kinetic and Frobenius are reported")
    eval_chunk: int = field(1000, "examples solved jointly when penalties and test metrics are evaluated")

    def __post_init__(self):
        if self.preset not in PRESET_NAMES:
            raise ValueError(f"preset must be one of {PRESET_NAMES}, got {self.preset!r}")
        self.regularization  # noqa: B018 - validates reg, order and the weights
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {self.solver!r}")
        for name in ("dtype", "eval_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"{name} must be 'float32' or 'float64', got {getattr(self, name)!r}")
        if self.dtype == "float64" and self.eval_dtype == "float32":
            raise ValueError("eval_dtype='float32' would round float64-trained parameters: use eval_dtype='float64'")
        check_ints(self, ("epochs", "batch_size", "train_size", "checkpoint_every", "max_steps", "nfe_examples",
                          "nfe_per_example", "reg_examples", "eval_chunk"))
        check_ints(self, ("eval_every", "warmup_steps", "seed", "devices"), minimum=0)
        check_numbers(self, ("rtol", "atol", "eval_rtol", "eval_atol", "lr", "lr_decay"), positive=True)
        check_numbers(self, ("momentum", "weight_decay", "lr_min"), positive=False)
        if not all(math.isfinite(getattr(self, n)) for n in ("rtol", "atol", "eval_rtol", "eval_atol", "lr")):
            raise ValueError("rtol, atol, eval_rtol, eval_atol and lr must be finite")
        if self.lr_decay > 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay!r}")
        if len(self.lr_boundaries) != max(len(self.lr_values) - 1, 0):
            raise ValueError("lr_values must have one more entry than lr_boundaries")
        if self.lr_values and self.lr != self.lr_values[0]:
            raise ValueError(f"lr ({self.lr:g}) must equal lr_values[0] ({self.lr_values[0]:g}): set both, or "
                             "lr_values=() and lr_boundaries=() for a constant learning rate")
        if self.batch_size > self.train_size:
            raise ValueError(f"batch_size ({self.batch_size}) must not exceed train_size ({self.train_size})")
        if self.dtype == "float32" and min(self.rtol, self.atol) < 1e-6:
            raise ValueError("rtol and atol below 1e-6 need dtype='float64' (float32 cannot honour them): "
                             "train at rtol = atol >= 1e-6 in float32 or set dtype='float64'")
        if self.eval_dtype == "float32" and min(self.eval_rtol, self.eval_atol) < 1e-6:
            raise ValueError("eval_rtol and eval_atol below 1e-6 need eval_dtype='float64' "
                             "(float32 cannot honour them)")

    @property
    def regularization(self) -> Regularization:
        return Regularization.of(self)

    @property
    def steps_per_epoch(self) -> int:
        return self.train_size // self.batch_size

    @property
    def num_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def make_config(config_cls: type, presets: dict, preset: str | None = None, **overrides):
    """The preset's configuration of `config_cls` with fields overridden.

    `presets[name]` holds the fields in which preset `name` differs from the defaults
    (the default preset differs in none). Unknown fields are a one-line error.
    """
    preset = config_cls().preset if preset is None else preset
    if preset not in presets:
        raise ValueError(f"preset must be one of {tuple(presets)}, got {preset!r}")
    names = {f.name for f in dataclasses.fields(config_cls)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ValueError(f"unknown config field(s) {bad}; known: {sorted(names)}")
    return config_cls(**{**presets[preset], "preset": preset, **overrides})


def config_from_dict(config_cls: type, values: dict):
    """A config from its `dataclasses.asdict` form (JSON turns tuples into lists).

    A field missing from `values` because the config was written before it existed gets the value
    such a config implied (`LEGACY`: `taylor_method="jet"`, `eval_dtype` = its `dtype`).
    """
    kinds = {f.name: type(f.default) for f in dataclasses.fields(config_cls)}
    values = {**{k: legacy(values) for k, legacy in LEGACY.items() if k in kinds and k not in values}, **values}
    return config_cls(**{k: tuple(v) if kinds.get(k) is tuple else v for k, v in values.items()})
