"""What an experiment supplies: data, model, loss, metrics and presets — and nothing else.

Everything else (config and presets, regularisation, optimiser, training loop with resume,
evaluation of NFE and penalties, run records, sweep, CLI) is shared and written once
(`taynode.configs`, `taynode.regularization`, `taynode.optim`, `taynode.train`,
`taynode.objective`, `taynode.evaluation`, `taynode.records`, `taynode.runner`,
`taynode.cli`). An experiment is a subclass of `Experiment` registered in
`taynode.experiments.REGISTRY`; see `taynode.experiments.toy` for the smallest one.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.tree_util as jtu

from .configs import make_config
from .solve import Solution, _OneExample, solve

__all__ = ["Experiment", "Problem", "solve_problem"]


@dataclasses.dataclass(frozen=True)
class Problem:
    """The ODE a batch poses: solve `field` from `y0` over [t0, t1] with `args`.

    - `part`: which part of a pytree state the regularisers see (None: all of it).
    - `per_example`: solve every example on its own (vmapped; one step size each) instead of
      the batch as one system.
    - `ts`: times at which the state is wanted (`Solution.ys`), or None.
    """

    field: Callable
    y0: Any
    args: Any = None
    t0: float = 0.0
    t1: float = 1.0
    part: Any = None
    per_example: bool = False
    ts: Any = None


def solve_problem(problem: Problem, *, solver, rtol, atol, max_steps, regularizers=()) -> Solution:
    """Solve a `Problem` with regularisers, jointly or one example at a time.

    Regulariser values come back per example (shape `(batch,)`) either way; `nfe` is a scalar
    for a joint solve and one value per example otherwise.
    """
    kw = dict(t0=problem.t0, t1=problem.t1, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps,
              regularizers=regularizers, ts=problem.ts)
    if not problem.per_example:
        return solve(problem.field, problem.y0, problem.args, batched=True, **kw)
    field = _OneExample(problem.field)
    return jax.vmap(lambda y: solve(field, y, problem.args, **kw))(problem.y0)


class Experiment(abc.ABC):
    """One experiment of the book.

    Class attributes: `name` (CLI and record name), `Config` (a frozen dataclass subclassing
    `taynode.configs.ExperimentConfig`), `presets` (preset name → the fields in which it
    differs from `Config()`), `sweeps` (sweep name → a tuple of config overrides, seeds
    included), `description` (one line for `taynode --help`).

    Instances must be hashable (the default identity hash): compiled evaluation functions take
    the experiment as a static argument.
    """

    name: str
    Config: type
    presets: dict
    sweeps: dict = {}
    description: str = ""

    # --- data and model -------------------------------------------------------------------
    @abc.abstractmethod
    def load_data(self, cfg, progress: bool = True):
        """The data set (any structure the other methods understand)."""

    @abc.abstractmethod
    def data_provenance(self, cfg) -> dict:
        """Which data a run with `cfg` sees: the run record's `data` field. Loads no data.

        **Returns** a dict ready for JSON (lists, not tuples; the same dict for the same config and files):
        - `source`: where the data come from, in a few words (a package and its version, a sampler).
        - `files`: `{file name: sha256}` of the raw files: the pinned checksums the loader verifies
          where it has them (no file is read), else computed from the file; `{}` for drawn data.
        - `cache_key` (where the loader caches derived data): the key that the raw files' checksums
          and the parsing settings determine.
        - `settings`: every config field and loader constant that changes the data (sizes, split and
          sampling seeds, cleaning rules and their parameters, preprocessing constants), under the
          config field's name where there is one.
        """

    @abc.abstractmethod
    def train_arrays(self, cfg, data):
        """The training examples: a pytree of numpy arrays sharing a leading axis of `cfg.train_size`."""

    @abc.abstractmethod
    def eval_arrays(self, cfg, data):
        """The test examples NFE and penalties are measured on: a pytree like `train_arrays`."""

    @abc.abstractmethod
    def init_params(self, cfg, key):
        """Initial parameters of the model."""

    # --- loss and metrics -----------------------------------------------------------------
    def training_batch(self, cfg, batch, key):
        """The batch a training step's `problem` and `loss` see (default: `batch` itself).

        An experiment whose problem draws random numbers (the latent ODE's posterior samples)
        puts keys derived from the step's `key` into the batch here; its evaluation arrays
        carry fixed keys in the same place.
        """
        return batch

    @abc.abstractmethod
    def problem(self, cfg, params, batch) -> Problem:
        """The ODE that a batch poses to the solver."""

    @abc.abstractmethod
    def loss(self, cfg, params, batch, sol: Solution, key, step):
        """`(task_loss, aux)`: the loss without regularisation, from the solution of `problem`.

        `aux` is a dict of scalars logged in the history (e.g. `{"ce": ..., "acc": ...}`).
        """

    @abc.abstractmethod
    def metrics(self, cfg, params, data) -> dict:
        """Task metrics of a trained model on the test split (accuracy, test loss, MSE, …)."""

    def validation_loss(self, cfg, params, data) -> float | None:
        """A loss on held-out validation data for model selection (lower is better), or None.

        When it returns a number, a run with `cfg.eval_every > 0` keeps the parameters with
        the lowest validation loss among its evaluations (every `eval_every` steps and the end)
        and reports those (default: None, the run keeps its final parameters).
        """
        return None

    def summary(self, metrics: dict) -> str:
        """One line of the task metrics for the console."""
        return "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))

    # --- shared -----------------------------------------------------------------------------
    def config(self, preset: str | None = None, **overrides):
        """The preset's config (default: the default config's preset) with fields overridden."""
        return make_config(self.Config, self.presets, preset, **overrides)

    def run_name(self, cfg) -> str:
        """`{experiment}_{preset}[_{solver}]_{regularisation}_seed{seed}`; the solver only where it is not
        the experiment's default."""
        solver = "" if cfg.solver == self.Config().solver else f"_{cfg.solver}"
        return f"{self.name}_{cfg.preset}{solver}_{cfg.regularization.name}_seed{cfg.seed}"


def batch_slice(tree, start: int, stop: int):
    """Rows `start:stop` of every leaf of a pytree of arrays."""
    return jtu.tree_map(lambda a: a[start:stop], tree)


def batch_size_of(tree) -> int:
    return int(jtu.tree_leaves(tree)[0].shape[0])
