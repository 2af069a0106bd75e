"""What the records say: each chapter's criterion, verdicts per seed, and the words that sum them up.

Analysis, not an experiment: the chapters and "What reproduces" import the criteria from here, so a
verdict is computed one way wherever it appears.

- A `Criterion` says when a regularised run reproduces the paper's claim against the unregularised run
  of the same seed: its NFE at most `max_nfe_ratio` times the unregularised NFE, and its task metric no
  more than `tolerance` worse. `Criterion.statement` is the sentence a chapter prints before its table.
- `verdict` turns per-seed outcomes into **holds** (at every seed), **partly** (at some), **does not**
  (at none) or **not yet** (no outcome); `seeds_phrase` says at which seeds, in words.
- The order grid of chapter 4: `rq2_frame` and `best_orders` (toy), `rq2_best` (MNIST) and
  `order_match`, which counts a match only where the best K is the solver's order and beats the
  neighbouring orders by more than the spread.
- Chapter 08's methods: `method_of` names a run's method and weight from its config, and
  `complete_methods` says which methods have every planned weight in (the ones its rule may choose for).
- Stability (RQ5): `stability_pairs` sets each regularised run, finished or diverged, beside the
  unregularised run of the same experiment, setting and seed; `stability_verdict` judges them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = ["VERDICTS", "Criterion", "CRITERIA", "verdict", "seeds_phrase", "met_phrase", "judge_seeds",
           "choose_weights", "rq2_frame", "best_orders", "rq2_best", "order_match",
           "SOLVER_STEP_NFE", "PUBLISHED", "published_frame", "REG_FIELDS", "stability_pairs",
           "stability_verdict", "METHOD_REGS", "method_of", "complete_methods", "COST_CLAIM", "step_ratios",
           "cost_outcomes", "cost_pending"]

VERDICTS = ("holds", "partly", "does not", "not yet")


def verdict(outcomes: Iterable[bool]) -> str:
    """**holds** if every outcome is True, **partly** if some are, **does not** if none, **not yet** if empty."""
    outcomes = [bool(o) for o in outcomes]
    if not outcomes:
        return "not yet"
    if all(outcomes):
        return "holds"
    return "partly" if any(outcomes) else "does not"


def _join(items) -> str:
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def seeds_phrase(by_seed: Mapping[int, bool]) -> str:
    """`"at every seed (0, 1, 2)"`, `"at seeds 0 and 2 of 0, 1, 2"`, `"at seed 1 only"`, `"at no seed"`."""
    seeds = sorted(by_seed)
    if not seeds:
        raise ValueError("by_seed is empty: judge at least one seed")
    yes = [s for s in seeds if by_seed[s]]
    if len(seeds) == 1:
        return f"at its one seed ({seeds[0]})" if yes else f"not at its one seed ({seeds[0]})"
    if len(yes) == len(seeds):
        return f"at every seed ({', '.join(map(str, seeds))})"
    if not yes:
        return f"at no seed of {', '.join(map(str, seeds))}"
    if len(yes) == 1:
        return f"at seed {yes[0]} only (of {', '.join(map(str, seeds))})"
    return f"at seeds {_join(yes)} of {', '.join(map(str, seeds))}"


def met_phrase(by_seed: Mapping[int, bool]) -> str:
    """`seeds_phrase` as the criterion's outcome: `"met at every seed (0, 1, 2)"`, `"met at seed 1 only
    (of 0, 1, 2)"`, `"not met at any seed of 0, 1, 2"`, `"not met at its one seed (0)"`."""
    phrase = seeds_phrase(by_seed)
    if phrase.startswith("not at "):
        return "not met at " + phrase.removeprefix("not at ")
    if phrase.startswith("at no seed of "):
        return "not met at any seed of " + phrase.removeprefix("at no seed of ")
    return "met " + phrase


@dataclasses.dataclass(frozen=True)
class Criterion:
    """When a regularised run reproduces the claim "fewer evaluations, nearly as good a model".

    **Arguments**
    - `max_nfe_ratio`: the run's NFE ÷ the unregularised run's must be at most this.
    - `metric`: the task metric's name in words (`"test accuracy"`).
    - `tolerance`: how much worse the metric may be.
    - `relative`: the tolerance is a fraction of the unregularised value (else in the metric's units).
    - `higher_is_better`: accuracy (True) or a loss / NLL / MSE (False).
    - `unit`: the unit of an absolute tolerance (`"points"`, `"nats"`).
    """

    max_nfe_ratio: float
    metric: str
    tolerance: float
    relative: bool = False
    higher_is_better: bool = False
    unit: str = ""

    def __post_init__(self):
        if not self.max_nfe_ratio > 0 or not self.tolerance >= 0:
            raise ValueError("max_nfe_ratio must be > 0 and tolerance >= 0")

    def worsening(self, value, base):
        """How much worse `value` is than `base` (positive: worse), in the criterion's terms."""
        diff = (base - value) if self.higher_is_better else (value - base)
        return diff / abs(base) if self.relative else diff

    def holds(self, nfe, base_nfe, value, base_value) -> bool:
        """Whether a run (NFE, metric) meets the criterion against the unregularised (base_nfe, base_value)."""
        return bool(nfe <= self.max_nfe_ratio * base_nfe and self.worsening(value, base_value) <= self.tolerance)

    @property
    def tolerance_words(self) -> str:
        """The tolerance as prose writes it: "5 %" (relative), "1 point", "0.05 nats"."""
        unit = self.unit[:-1] if self.tolerance == 1 and self.unit.endswith("s") else self.unit  # 1 point
        return f"{self.tolerance:.0%}" if self.relative else f"{self.tolerance:g} {unit}".strip()

    @property
    def statement(self) -> str:
        """The criterion as a sentence, to print before the table it judges."""
        tol = self.tolerance_words
        worse = "lower" if self.higher_is_better else "higher"
        return (f"a regularised run reproduces the claim when its test NFE is at most {self.max_nfe_ratio:g}× "
                f"the unregularised run's of the same seed and its {self.metric} is at most {tol} {worse}")


#: The criterion of each chapter (chapter 3: the toy; 5: MNIST; 6: PhysioNet; 7: density estimation).
CRITERIA = {
    "toy": Criterion(0.5, "MSE", 1e-3),  # a fit of the map: MSE at most a thousandth above the unregularised
    "mnist": Criterion(0.5, "test accuracy", 1.0, higher_is_better=True, unit="points"),
    "physionet": Criterion(0.75, "test MSE", 0.05, relative=True),
    "density": Criterion(0.75, "test NLL", 0.05, unit="nats (bits/dim for images)"),
}


def judge_seeds(frame: pd.DataFrame, criterion: Criterion, *, nfe: str = "nfe", metric: str = "metric",
                base_nfe: str = "base_nfe", base_metric: str = "base_metric") -> dict[int, bool]:
    """`{seed: holds}` for the rows of `frame` (one run per seed, with its seed's unregularised values)."""
    if "seed" not in frame or frame["seed"].duplicated().any():
        raise ValueError("frame needs a 'seed' column with one row per seed")
    return {int(r["seed"]): criterion.holds(r[nfe], r[base_nfe], r[metric], r[base_metric])
            for _, r in frame.iterrows()}


# --- chapter 4: which K for which solver ---------------------------------------------------------

#: NFE of one more step of each solver of the grid (the smallest change an NFE count can show)
SOLVER_STEP_NFE = {"heun": 2, "bosh3": 3, "dopri5": 6, "dopri8": 12}


def choose_weights(runs: pd.DataFrame, criterion: Criterion, *, metric: str = "metric",
                   seed: int = 0) -> tuple[dict, pd.DataFrame]:
    """Each method's weight by chapter 08's rule, and its runs judged at every seed.

    The rule: at `seed`, among a method's weights whose `metric` is within the criterion's tolerance
    of the unregularised run's (`Criterion.worsening` <= tolerance), the one with the fewest `nfe`;
    on a tie, the smaller weight. A method with no such weight gets none.

    **Arguments**
    - `runs`: one row per run, columns `family` (`"unregularised"` for the reference), `weight`,
      `seed`, `nfe` and `metric`; an unregularised run at every seed that is judged.
    - `criterion`: the chapter's criterion (its tolerance picks, its whole test judges).

    **Returns** `(chosen, judged)`: `{family: weight}`, and the chosen settings' runs at every seed
    with an unregularised run, with columns `nfe_ratio`, `change` (`Criterion.worsening`) and `holds`.

    **Raises** `ValueError` when a column is missing or `seed` has no unregularised run.
    """
    missing = {"family", "weight", "seed", "nfe", metric} - set(runs.columns)
    if missing:
        raise ValueError(f"runs lacks the column(s) {sorted(missing)}")
    base = runs[runs["family"] == "unregularised"].set_index("seed")
    if seed not in base.index:
        raise ValueError(f"no unregularised run at seed {seed}: the rule compares with it")
    at_seed = runs[(runs["seed"] == seed) & (runs["family"] != "unregularised")]
    fits = at_seed[[criterion.worsening(v, base.loc[seed, metric]) <= criterion.tolerance for v in at_seed[metric]]]
    chosen = {fam: float(g.sort_values(["nfe", "weight"]).iloc[0]["weight"])
              for fam, g in fits.groupby("family", sort=False)}
    is_chosen = np.array([chosen.get(f) == w for f, w in zip(runs["family"], runs["weight"])], dtype=bool)
    picked = runs[is_chosen & runs["seed"].isin(base.index).to_numpy()]
    judged = picked.assign(
        nfe_ratio=[r["nfe"] / base.loc[r["seed"], "nfe"] for _, r in picked.iterrows()],
        change=[criterion.worsening(r[metric], base.loc[r["seed"], metric]) for _, r in picked.iterrows()],
        holds=[criterion.holds(r["nfe"], base.loc[r["seed"], "nfe"], r[metric], base.loc[r["seed"], metric])
               for _, r in picked.iterrows()],
    )
    return chosen, judged


#: the regulariser choices chapter 08 compares (`--reg`), beside "none"
METHOD_REGS = ("taylor", "rnode", "ernode", "srnode", "steer")


def method_of(config: Mapping) -> tuple[str, float]:
    """The method and weight chapter 08 names a run by, from its config (a run record's `config`).

    **Returns** `(family, weight)`: `("unregularised", 0.0)`; `("R2", λ)`, `("R3 sampled", λ)` (the
    order is the config's); `("RNODE", λ_kin)`; `("ERNODE", λ)`, `("SRNODE", λ)`; `("STEER", b)`.

    **Raises** `ValueError` for a regulariser outside "none" and `METHOD_REGS`, or a missing field.
    """
    reg = config.get("reg")
    try:
        if reg == "none":
            return "unregularised", 0.0
        if reg == "taylor":
            sampled = config.get("estimator", "exact") == "sampled"
            return f"R{config['order']}" + (" sampled" if sampled else ""), float(config["lam"])
        if reg == "rnode":
            return "RNODE", float(config["lam_kin"])
        if reg in ("ernode", "srnode"):
            return reg.upper(), float(config["lam"])
        if reg == "steer":
            return "STEER", float(config["steer_b"])
    except KeyError as e:
        raise ValueError(f"config with reg={reg!r} lacks the field {e.args[0]!r}: pass a run record's whole "
                         "config") from None
    raise ValueError(f"reg={reg!r} is not a method of chapter 08: use 'none' or one of {METHOD_REGS}")


def complete_methods(planned: Iterable[Mapping], done: Iterable[Mapping]) -> list[str]:
    """The methods whose every planned weight has a run: the ones chapter 08's rule may choose for.

    **Arguments**
    - `planned`: the configs a sweep plans (dicts, e.g. `dataclasses.asdict` of `runner.sweep_configs`).
    - `done`: the configs of the runs that ended, finished or diverged (a diverged weight counts as
      tried: the rule then chooses among the others).

    **Returns** the regularised methods of `planned` (as `method_of` names them), in the order they
    first appear there, whose set of planned weights is contained in the weights of `done`.
    """
    want: dict[str, set] = {}
    for c in planned:
        fam, w = method_of(c)
        if fam != "unregularised":
            want.setdefault(fam, set()).add(w)
    have: dict[str, set] = {}
    for c in done:
        fam, w = method_of(c)
        have.setdefault(fam, set()).add(w)
    return [fam for fam, ws in want.items() if ws <= have.get(fam, set())]


#: chapter 08's reading of "cuts prediction time with little training overhead" (Pal et al. 2021): at the
#: chosen weight, predicting the test examples takes at most `max_predict` times the unregularised model's
#: time (same seed, one benchmark run), and a training step at most `max_step` times the unregularised step
COST_CLAIM = {"max_predict": 0.75, "max_step": 1.5}


def step_ratios(step_bench: Mapping) -> dict[str, float]:
    """`{method: its training step's time ÷ the unregularised step's}` of a `benchmarks/step_cost.py` record.

    A ratio above `COST_CLAIM["max_step"]` is more than the "little training overhead" chapter 08 allows;
    chapter 08 reads "R_K costs training time" as the exact R_K's ratio exceeding it.

    **Raises** `ValueError` without a "none" row (the reference).
    """
    steps = {r["method"]: r["step_s"] for r in step_bench["rows"]}
    if "none" not in steps:
        raise ValueError("step_bench has no 'none' row: the unregularised step is the reference")
    return {m: t / steps["none"] for m, t in steps.items()}


def cost_outcomes(step_bench: Mapping, predict_bench: Mapping, chosen: Mapping, *,
                  families: Iterable[str] = ("ERNODE", "SRNODE"), max_predict: float = COST_CLAIM["max_predict"],
                  max_step: float = COST_CLAIM["max_step"]) -> list[dict]:
    """Each method's chosen model judged by `COST_CLAIM`, from the two benchmarks of one experiment.

    **Arguments**
    - `step_bench`: a `benchmarks/step_cost.py` record (rows with `method` and `step_s`; "none" is the
      unregularised step; a method's row is named as `method_of` names the family, "R2 exact" for R2).
    - `predict_bench`: a `benchmarks/predict_time.py` record (rows with `family`, `weight`, `seed` and
      `predict_s`).
    - `chosen`: `{family: weight}` as `choose_weights` gives it.

    **Returns** one dict per family of `families` that has a chosen weight, a step row and a prediction row
    of that weight at a seed with an unregularised prediction row: `family`, `weight`, `seed`,
    `predict_ratio`, `step_ratio`, `holds`. Families lacking any of these are left out (not yet measured).
    """
    steps = step_ratios(step_bench)
    base = {r["seed"]: r["predict_s"] for r in predict_bench["rows"] if r["family"] == "unregularised"}
    out = []
    for fam in families:
        w = chosen.get(fam)
        name = f"{fam} exact" if fam in ("R2", "R3") else fam
        if w is None or name not in steps:
            continue
        for r in predict_bench["rows"]:
            if r["family"] == fam and r["weight"] == w and r["seed"] in base:
                pr, sr = r["predict_s"] / base[r["seed"]], steps[name]
                out.append(dict(family=fam, weight=w, seed=r["seed"], predict_ratio=pr, step_ratio=sr,
                                holds=bool(pr <= max_predict and sr <= max_step)))
    return out



def cost_pending(step_bench: Mapping | None, predict_bench: Mapping | None, chosen: Mapping, *,
                 families: Iterable[str] = ("ERNODE", "SRNODE")) -> list[tuple[str, float]]:
    """The chosen settings `cost_outcomes` cannot judge yet: `(family, weight)` for each family of
    `families` with a chosen weight but no step row, or no prediction row of that weight at a seed with
    an unregularised prediction row (either benchmark may be `None`: not measured). A chapter names
    them, so that a verdict over the measured ones is not read as covering them."""
    judged = set()
    if step_bench is not None and predict_bench is not None:
        judged = {o["family"] for o in cost_outcomes(step_bench, predict_bench, chosen, families=families)}
    return [(fam, float(chosen[fam])) for fam in families if chosen.get(fam) is not None and fam not in judged]


def rq2_frame(records) -> pd.DataFrame:
    """The toy's RQ2 grid as a table: one row per run record (dicts as `taynode.records.load_record` gives).

    Columns: `solver`, `order` (0 = unregularised), `weight` (c), `seed`, `fit` (MSE), `nfe_train_tol`
    (joint NFE at the evaluation tolerance) and `nfe`, `tol`: the joint NFE at the tightest of
    `taynode.experiments.toy.NFE_TOLS` at which the run's solver solves every model of `records`
    within max_steps.

    **Raises** `ValueError` for no records, a non-toy record, or a solver with no tolerance that
    all its records reach.
    """
    from .experiments.toy import NFE_TOLS, weight_c

    records = list(records)
    if not records:
        raise ValueError("records is empty: pass the run records of the rq2 sweep (results/toy/rq2)")
    if any(r.get("experiment") != "toy" for r in records):
        raise ValueError("records must all be toy run records")
    tight = {}
    for solver in sorted({r["config"]["solver"] for r in records}):
        nfes = [r["metrics"]["nfe_by_tol"] for r in records if r["config"]["solver"] == solver]
        reached = [t for t in NFE_TOLS if all(n.get(str(t)) is not None for n in nfes)]
        if not reached:
            raise ValueError(f"no tolerance of {NFE_TOLS} has an NFE for every {solver} record")
        tight[solver] = min(reached)
    rows = []
    for r in records:
        c, m = r["config"], r["metrics"]
        rows.append(dict(solver=c["solver"], order=c["order"] if c["reg"] != "none" else 0,
                         weight=weight_c(c), seed=c.get("seed", 0), fit=m["mse"], nfe_train_tol=m["test_nfe"],
                         nfe=float(m["nfe_by_tol"][str(tight[c["solver"]])]), tol=tight[c["solver"]]))
    return pd.DataFrame(rows)


def best_orders(frame: pd.DataFrame, fit_max: float) -> pd.DataFrame:
    """Per solver: the orders K whose models reach the lowest NFE among those that fit (MSE ≤ `fit_max`).

    Seed 0's models only (the grid's other seeds measure the spread). Returns a DataFrame indexed by
    solver with `best_k` (a tuple of K), `best_nfe`, `unreg_nfe`. A solver with no fitting regularised
    model gets `best_k = ()` and `best_nfe` NaN.
    """
    if "seed" in frame:
        frame = frame[frame["seed"] == 0]
    out = {}
    for solver, g in frame.groupby("solver", sort=False):
        unreg = g[g["order"] == 0]
        if len(unreg) != 1:
            raise ValueError(f"frame needs one unregularised row for {solver}, got {len(unreg)}")
        fits = g[(g["order"] > 0) & (g["fit"] <= fit_max)]
        best = fits["nfe"].min() if len(fits) else float("nan")
        ks = tuple(sorted({int(k) for k in fits[fits["nfe"] == best]["order"]}))
        out[solver] = dict(best_k=ks, best_nfe=best, unreg_nfe=float(unreg["nfe"].iloc[0]))
    return pd.DataFrame.from_dict(out, orient="index")


def order_match(nfe_by_k: Mapping[int, float], order: int, spread: float) -> bool:
    """Whether K = `order` (the solver's order p) is the best K, by more than `spread`.

    `nfe_by_k` maps each tested K to the lowest NFE among its models that fit (NaN or missing where
    none fits). A match needs p among the tested orders, p's NFE the lowest, and every neighbouring
    order (p − 1, p + 1, where tested) more than `spread` evaluations above it. A solver whose order
    lies beyond the grid is never a match.
    """
    if order not in nfe_by_k or not np.isfinite(nfe_by_k[order]):
        return False
    best = nfe_by_k[order]
    if any(np.isfinite(v) and v < best for v in nfe_by_k.values()):
        return False
    neighbours = [nfe_by_k[k] for k in (order - 1, order + 1) if k in nfe_by_k]
    return all(not np.isfinite(v) or v - best > spread for v in neighbours)


def rq2_best(records, max_acc_drop: float = 1.0):
    """The MNIST RQ2 grid (run records as `taynode.records.load_record` gives) as a DataFrame.

    Columns `solver`, `order` (0 = unregularised), `lam`, `nfe` (joint test NFE), `nfe_per_example`,
    `acc` (test accuracy, %), `ratio` (NFE ÷ the same solver's unregularised NFE) and `best`: True for the
    regularised runs with the lowest NFE of their solver among those whose accuracy is at most
    `max_acc_drop` points below the unregularised run's.
    """
    records = list(records)
    if not records or any(r.get("experiment") != "mnist" for r in records):
        raise ValueError("records must be a non-empty list of mnist run records (results/mnist/rq2)")
    df = pd.DataFrame([
        dict(solver=r["config"]["solver"], order=r["config"]["order"] if r["config"]["reg"] != "none" else 0,
             lam=r["config"]["lam"], nfe=r["metrics"]["test_nfe"], acc=100 * r["metrics"]["test_acc"],
             nfe_per_example=r["metrics"].get("test_nfe_per_example", np.nan))
        for r in records
    ]).sort_values(["solver", "order"], ignore_index=True)
    df["ratio"], df["best"] = np.nan, False
    for solver, g in df.groupby("solver"):
        unreg = g[g["order"] == 0]
        if len(unreg) != 1:
            raise ValueError(f"records need one unregularised {solver} run, got {len(unreg)}")
        base = unreg.iloc[0]
        df.loc[g.index, "ratio"] = g["nfe"] / base.nfe
        ok = g[(g["order"] > 0) & (g["acc"] >= base.acc - max_acc_drop)]
        if len(ok):
            df.loc[ok.index[ok["nfe"] == ok["nfe"].min()], "best"] = True
    return df


# --- stability: which runs diverged ------------------------------------------------------------------

#: the config fields that say which regulariser a run used and how strongly; two runs whose configs
#: differ only in these (and in nothing else: experiment, data, schedule, solver, seed) form a pair
REG_FIELDS = frozenset({"reg", "order", "lam", "lam_kin", "lam_fro", "estimator", "steer_b", "reg_examples",
                        "taylor_method"})


def _setting(record) -> str:
    import json

    return json.dumps([record["experiment"], {k: v for k, v in sorted(record["config"].items())
                                              if k not in REG_FIELDS}], sort_keys=True)


def stability_pairs(records) -> pd.DataFrame:
    """Each regularised run beside the unregularised run of its setting and seed.

    `records`: run records (dicts as `records.load_record` returns them), finished (with `metrics`) or
    diverged (with `diverged`: `runner.diverged_path`). Returns one row per regularised run that has an
    unregularised run of the same experiment and the same config apart from `REG_FIELDS`: `experiment`,
    `run`, `reg`, `seed`, `diverged` (this run), `base_diverged` (no unregularised run of the setting
    finished), `more_stable` (this run finished where the unregularised one diverged) and `less_stable`
    (the reverse). Regularised runs without such a partner are left out."""
    records = list(records)
    for r in records:
        if not all(k in r for k in ("experiment", "run", "config")) or ("metrics" in r) == ("diverged" in r):
            raise ValueError(f"{r.get('run', r)!r} is not a finished or diverged run record: it needs "
                             "experiment, run, config and exactly one of metrics and diverged")
    base: dict[str, list[bool]] = {}
    for r in records:
        if r["config"]["reg"] == "none":
            base.setdefault(_setting(r), []).append("diverged" in r)
    rows = []
    for r in records:
        if r["config"]["reg"] == "none" or _setting(r) not in base:
            continue
        diverged, base_diverged = "diverged" in r, all(base[_setting(r)])
        rows.append(dict(experiment=r["experiment"], run=r["run"], reg=r["config"]["reg"],
                         seed=r["config"]["seed"], diverged=diverged, base_diverged=base_diverged,
                         more_stable=base_diverged and not diverged, less_stable=diverged and not base_diverged))
    return pd.DataFrame(rows, columns=["experiment", "run", "reg", "seed", "diverged", "base_diverged",
                                       "more_stable", "less_stable"])


def stability_verdict(pairs: pd.DataFrame) -> str:
    """RQ5's "more stable", judged by divergence: **holds** where some regularised run finished where its
    unregularised partner diverged and none diverged where its partner finished; **partly** where both
    happened; **does not** where only the reverse happened, or neither (regularisation made no run
    finish that would otherwise have diverged); **not yet** without pairs."""
    if pairs.empty:
        return "not yet"
    more, less = bool(pairs["more_stable"].any()), bool(pairs["less_stable"].any())
    return "holds" if more and not less else "partly" if more and less else "does not"


# --- published numbers beside the book's ------------------------------------------------------------

#: Pal, Ma, Shah, Rackauckas (ICML 2021), "Opening the Blackbox", the only independent rerun of the
#: paper's models found (values as `../shared/REFERENCES.md` gives them from the authors' LaTeX). The
#: TayNODE rows ran the paper's original JAX code; the other rows ran in Julia with Tsit5 at 1.4e-8, so
#: their NFE are "not directly comparable" (the authors' words, 2023).
PUBLISHED = {
    "mnist": {
        "citation": "pal2021opening",
        "setting": "the paper's MNIST model; TayNODE: batch 100, K = 3, λ = 3.02e-3, original JAX code",
        "columns": ("train_acc", "test_acc", "train_h", "predict_s", "nfe"),
        "rows": {
            "Vanilla NODE": (100.0, 97.94, 0.98, 0.094, 253.0),
            "STEER": (100.0, 97.94, 1.31, 0.092, 265.0),
            "TayNODE": (98.98, 97.89, 1.19, 0.079, 80.3),
            "SRNODE": (100.0, 98.08, 1.24, 0.094, 259.0),
            "ERNODE": (99.71, 97.32, 0.82, 0.060, 177.0),
        },
    },
    "physionet": {
        "citation": "pal2021opening",
        "setting": "latent ODE on PhysioNet; TayNODE: K = 2, λ = 0.01, batch 512, 300 epochs, original JAX code; "
                   "loss ×1e-3 as the authors report it",
        "columns": ("train_loss", "test_loss", "train_h", "predict_s", "nfe"),
        "rows": {
            "Vanilla NODE": (3.48, 3.55, 1.75, 0.53, 733.0),
            "STEER": (3.43, 3.48, 1.62, 0.54, 699.0),
            "TayNODE": (4.21, 4.21, 12.3, 0.22, 167.3),
            "SRNODE": (3.52, 3.58, 0.87, 0.20, 273.0),
            "ERNODE": (3.51, 3.57, 0.94, 0.21, 287.0),
        },
    },
}


def published_frame(task: str) -> pd.DataFrame:
    """`PUBLISHED[task]` as a DataFrame indexed by method."""
    if task not in PUBLISHED:
        raise ValueError(f"task must be one of {sorted(PUBLISHED)}, got {task!r}")
    p = PUBLISHED[task]
    return pd.DataFrame.from_dict(p["rows"], orient="index", columns=list(p["columns"]))
