"""The book's figures: each function draws one figure from plain data and returns it.

Every figure fits the book's page column (at most `MAX_WIDTH` inches wide), so that its
ticks and legends stay legible; a chapter builds the data (a `pandas.DataFrame` with the
named columns, or arrays) and calls one function.

Colours follow one convention throughout the book: unregularised runs black, $R_2$ blue,
$R_3$ green, RNODE orange (`FAMILY_COLORS`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm, to_rgb
from matplotlib.figure import Figure

__all__ = [
    "MAX_WIDTH",
    "FAMILY_COLORS",
    "FAMILY_NAMES",
    "family_color",
    "derivative_cost",
    "nfe_against_penalty",
    "trajectories",
    "lambda_sweep",
    "accuracy_vs_nfe",
    "training_nfe",
    "runs_by_seed",
    "penalties_against_nfe",
    "density_panels",
    "order_grid",
]

MAX_WIDTH = 8.0  # inches: the page column of the book's HTML theme

FAMILY_COLORS = {
    "unregularised": "black",
    "R2": "tab:blue",
    "R3": "tab:green",
    "RNODE": "tab:orange",
    "R3 sampled": "tab:cyan",
    "R2 sampled": "tab:olive",
    "ERNODE": "tab:red",
    "SRNODE": "tab:purple",
    "STEER": "tab:brown",
}
FAMILY_NAMES = {"R2": "$R_2$", "R3": "$R_3$", "R2 sampled": "$R_2$ (sampled)",
                "R3 sampled": "$R_3$ (sampled)"}  # how titles and legends write a family


def family_color(family: str, shade: float = 1.0):
    """The book's colour of a run family (`FAMILY_COLORS`), lightened towards white by `shade`.

    **Arguments**
    - `family`: a key of `FAMILY_COLORS`.
    - `shade`: 1 gives the full colour, 0 white; intermediate values tell weights apart.

    **Raises** `ValueError` for an unknown family or a shade outside [0, 1].
    """
    if family not in FAMILY_COLORS:
        raise ValueError(f"family must be one of {sorted(FAMILY_COLORS)}, got {family!r}")
    if not 0.0 <= shade <= 1.0:
        raise ValueError(f"shade must lie in [0, 1], got {shade!r}")
    rgb = np.array(to_rgb(FAMILY_COLORS[family]))
    return tuple(1.0 - shade * (1.0 - rgb))


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kwargs):
    if width > MAX_WIDTH:
        raise ValueError(f"width must be at most {MAX_WIDTH} inches (the page column), got {width}")
    return plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)


def _require(df: pd.DataFrame, columns: Sequence[str], name: str = "data") -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks the columns {missing}; it has {list(df.columns)}")
    if len(df) == 0:
        raise ValueError(f"{name} must hold at least one row")


def _plain_log_ticks(axis, values=None) -> None:
    """Label a log axis 0.02, 0.05, 0.1, … rather than with powers of ten.

    Over more than about a decade and a half of `values` only the powers of ten are labelled.
    """
    subs = (1.0, 2.0, 5.0)
    if values is not None:
        v = np.asarray(values, dtype=float)
        v = v[v > 0]
        if v.size and np.log10(v.max() / v.min()) > 1.5:
            subs = (1.0,)
    axis.set_major_locator(mticker.LogLocator(subs=subs))
    axis.set_major_formatter(mticker.FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_formatter(mticker.NullFormatter())


def _shades(values: Sequence[float]) -> dict:
    """Weight → shade in [0.4, 1]: the smallest weight lightest, the largest full colour."""
    ranks = {v: i for i, v in enumerate(sorted(set(values)))}
    if len(ranks) == 1:
        return dict.fromkeys(ranks, 1.0)
    return {v: 0.4 + 0.6 * r / (len(ranks) - 1) for v, r in ranks.items()}


def derivative_cost(orders: Sequence[int], ratios: Mapping[str, Sequence[float]],
                    spread: Mapping[str, tuple] | None = None, *, title: str = "") -> Figure:
    """Cost of $y^{(K)}$ in units of one evaluation of f, one line per method.

    **Arguments**
    - `orders`: the derivative orders K (x axis).
    - `ratios`: method name → median time of $y^{(K)}$ divided by the median time of f, one per order.
    - `spread`: optional method name → (lower, upper) arrays of the same ratio (e.g. quartiles).
    - `title`: axes title.

    **Returns** the figure (one axes, one line per method, a reference line at 1).

    **Raises** `ValueError` when a method's values do not match `orders` in length.
    """
    orders = np.asarray(orders)
    if orders.ndim != 1 or orders.size == 0:
        raise ValueError(f"orders must be a non-empty 1-d sequence, got shape {orders.shape}")
    fig, ax = _figure(6.5, 3.6)
    for (name, values), marker in zip(ratios.items(), "osD^v"):
        values = np.asarray(values, dtype=float)
        if values.shape != orders.shape:
            raise ValueError(f"ratios[{name!r}] has {values.size} values for {orders.size} orders")
        if spread and name in spread:
            lo, hi = (np.asarray(x, dtype=float) for x in spread[name])
            ax.errorbar(orders, values, yerr=[values - lo, hi - values], fmt=f"{marker}-", capsize=3, label=name)
        else:
            ax.plot(orders, values, f"{marker}-", label=name)
    ax.axhline(1.0, color="grey", lw=1, ls=":", label="one evaluation of f")
    ax.set(xlabel="derivative order K", ylabel="time / time of one f evaluation", xticks=orders, title=title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def nfe_against_penalty(penalties: Mapping[int, Sequence[float]], nfe: Sequence[float], *,
                        color: Sequence[float] | None = None, color_label: str = "",
                        rho: Mapping[int, float] | None = None, ylabel: str = "NFE") -> Figure:
    """Small multiples: NFE against $R_K = \\int \\lVert y^{(K)} \\rVert^2 dt$, one panel per K.

    **Arguments**
    - `penalties`: K → the value of $R_K$ of each ODE (log x axis).
    - `nfe`: the solver's NFE of each ODE (log y axis, shared).
    - `color`, `color_label`: optional value per ODE for the colour scale, and its name.
    - `rho`: optional K → rank correlation, written in each panel.
    - `ylabel`: y-axis label (say the solver and tolerance).

    **Returns** the figure: one axes per K (three to a row) and a colour bar when `color` is given.

    **Raises** `ValueError` for no orders or when an order's values do not match `nfe` in length.
    """
    nfe = np.asarray(nfe, dtype=float)
    if not penalties:
        raise ValueError("penalties must hold at least one order K")
    for k, v in penalties.items():
        if len(v) != nfe.size:
            raise ValueError(f"penalties[{k}] has {len(v)} values for {nfe.size} NFE values")
    ncols = min(3, len(penalties))
    nrows = -(-len(penalties) // ncols)
    fig, axes = _figure(7.5, 2.5 * nrows + 0.4, nrows, ncols, sharey=True, squeeze=False)
    flat = axes.ravel()
    sc = None
    for ax, (k, values) in zip(flat, penalties.items()):
        sc = ax.scatter(values, nfe, c=color, cmap="viridis", s=14)
        ax.set(xscale="log", yscale="log", title=f"K = {k}")
        ax.set_xlabel(f"$R_{{{k}}}$", labelpad=1)
        if rho is not None and k in rho:
            ax.text(0.04, 0.94, f"ρ = {rho[k]:.2f}", transform=ax.transAxes, va="top", fontsize=9,
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1))
    for ax in flat[len(penalties):]:
        ax.remove()
    for row in axes:
        row[0].set_ylabel(ylabel)
    _plain_log_ticks(flat[0].yaxis)
    fig.tight_layout()
    if color is not None:
        fig.colorbar(sc, ax=[a for a in flat[: len(penalties)]], label=color_label, fraction=0.03, pad=0.02)
    return fig


def trajectories(panels: Sequence[Mapping], *, color_label: str, vmin: float = 1e-3,
                 vmax: float = 1e3) -> Figure:
    """Solution curves z(t), coloured by a per-point value, with the solver's step points.

    **Arguments**
    - `panels`: one mapping per panel with `ts` (time points), `zs` (array time × curves),
      `color` (array like `zs`, positive; log colour scale), `step_t` and `step_z` (the accepted
      step times and the states there, array steps × curves) and `title`.
    - `color_label`: the colour bar's label. `vmin`, `vmax`: colour scale range (values clipped).

    **Returns** the figure: one axes per panel (shared y) and one colour bar.

    **Raises** `ValueError` for no panels or a panel whose `zs` and `color` differ in shape.
    """
    if not panels:
        raise ValueError("panels must hold at least one panel")
    fig, axes = _figure(7.8, 3.4, 1, len(panels), sharey=True, squeeze=False)
    norm = LogNorm(vmin, vmax)
    lc = None
    for ax, p in zip(axes[0], panels):
        ts, zs, c = np.asarray(p["ts"]), np.asarray(p["zs"]), np.asarray(p["color"])
        if zs.shape != c.shape or zs.shape[0] != ts.size:
            raise ValueError(f"panel {p.get('title', '')!r}: zs {zs.shape}, color {c.shape} and ts {ts.shape} disagree")
        for i in range(zs.shape[1]):
            pts = np.stack([ts, zs[:, i]], axis=1)
            lc = LineCollection(np.stack([pts[:-1], pts[1:]], axis=1), cmap="magma", norm=norm, linewidths=1.2)
            lc.set_array(np.clip(c[:-1, i], vmin, vmax))
            ax.add_collection(lc)
        step_t, step_z = np.asarray(p["step_t"]), np.asarray(p["step_z"])
        ax.plot(np.repeat(step_t[:, None], step_z.shape[1], 1), step_z, "o", ms=2, color="tab:cyan")
        for t in step_t:
            ax.axvline(t, color="tab:cyan", lw=0.5, alpha=0.5, zorder=0)
        pad = 0.1 * (zs.max() - zs.min())
        ax.set(xlim=(ts.min(), ts.max()), ylim=(zs.min() - pad, zs.max() + pad), xlabel="t", title=p.get("title", ""))
    axes[0, 0].set_ylabel("z(t)")
    fig.tight_layout()
    fig.colorbar(lc, ax=list(axes[0]), label=color_label, fraction=0.04, pad=0.02)
    return fig


def lambda_sweep(runs: pd.DataFrame, *, nfe_label: str = "NFE", fit_label: str = "MSE") -> Figure:
    """A λ sweep at several seeds: NFE (top) and fit (bottom) against λ, λ = 0 included.

    λ is placed on evenly spaced categories (0 first), each seed a point, the median a line.

    **Arguments**
    - `runs`: DataFrame with columns `lam`, `seed`, `nfe`, `fit` (one row per run).
    - `nfe_label`, `fit_label`: y-axis labels (say solver, tolerance and the loss).

    **Returns** the figure (two axes sharing the λ axis).

    **Raises** `ValueError` when a column is missing or `runs` is empty.
    """
    _require(runs, ["lam", "seed", "nfe", "fit"], "runs")
    lams = sorted(runs["lam"].unique())
    pos = {lam: i for i, lam in enumerate(lams)}
    seeds = sorted(runs["seed"].unique())
    offsets = {s: (j - (len(seeds) - 1) / 2) * 0.08 for j, s in enumerate(seeds)}
    fig, (top, bottom) = _figure(6.5, 4.6, 2, 1, sharex=True)
    for ax, col, label, log in ((top, "nfe", nfe_label, False), (bottom, "fit", fit_label, True)):
        med = runs.groupby("lam")[col].median()
        ax.plot([pos[lam] for lam in lams], [med[lam] for lam in lams], "-", color="grey", lw=1.5,
                label="median over seeds", zorder=1)
        for s in seeds:
            sub = runs[runs["seed"] == s]
            ax.scatter([pos[lam] + offsets[s] for lam in sub["lam"]], sub[col], s=22, zorder=2, label=f"seed {s}")
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    top.legend(frameon=False, fontsize=8, ncols=len(seeds) + 1, loc="upper right")
    bottom.set_xticks(range(len(lams)), [f"{lam:g}" for lam in lams])
    bottom.set_xlabel("regularisation weight λ")
    fig.tight_layout()
    return fig


def accuracy_vs_nfe(runs: pd.DataFrame, *, nfe_label: str = "test NFE",
                    acc_label: str = "test accuracy (%)", min_acc_span: float | None = None) -> Figure:
    """Accuracy against solver work, one point per run, labelled in a legend beside the axes.

    **Arguments**
    - `runs`: DataFrame with columns `label`, `family` (a key of `FAMILY_COLORS`), `weight`
      (the regularisation weight, which sets the shade), `nfe` and `acc`.
    - `nfe_label`, `acc_label`: axis labels (say solver, tolerance and batch).
    - `min_acc_span`: the accuracy axis spans at least this much (centred on the points), so that
      differences smaller than the noise do not fill the axis. None: matplotlib's limits.

    **Returns** the figure (one axes, one point and one legend entry per run).

    **Raises** `ValueError` when a column is missing, `runs` is empty, a family is unknown or
    `min_acc_span` is not positive.
    """
    _require(runs, ["label", "family", "weight", "nfe", "acc"], "runs")
    if min_acc_span is not None and not min_acc_span > 0:
        raise ValueError(f"min_acc_span must be positive (or None), got {min_acc_span}")
    markers = {"unregularised": "o", "R2": "s", "R3": "^", "RNODE": "D"}
    fig, ax = _figure(7.8, 3.8)
    for family, sub in runs.groupby("family", sort=False):
        shade = _shades(sub["weight"])
        for _, r in sub.iterrows():
            ax.scatter(r["nfe"], r["acc"], color=family_color(family, shade[r["weight"]]),
                       marker=markers.get(family, "o"), s=55, edgecolors="black", linewidths=0.5,
                       label=r["label"], zorder=2)
    ax.set(xlabel=nfe_label, ylabel=acc_label)
    lo, hi = ax.get_ylim()
    if min_acc_span is not None and hi - lo < min_acc_span:
        mid = (runs["acc"].min() + runs["acc"].max()) / 2
        ax.set_ylim(mid - min_acc_span / 2, mid + min_acc_span / 2)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def training_nfe(curves: pd.DataFrame, *, reference: str = "unregularised",
                 ylabel: str = "NFE of the training solve") -> Figure:
    """NFE during training, one panel per regularised family, the reference run in each panel.

    **Arguments**
    - `curves`: long DataFrame with columns `label`, `family`, `weight`, `step`, `nfe`
      (one row per logged training step).
    - `reference`: the family drawn in grey in every panel (the unregularised run).
    - `ylabel`: y-axis label.

    **Returns** the figure: one axes per family other than `reference` (shared axes).

    **Raises** `ValueError` when a column is missing or no family besides `reference` exists.
    """
    _require(curves, ["label", "family", "weight", "step", "nfe"], "curves")
    families = [f for f in curves["family"].unique() if f != reference]
    if not families:
        raise ValueError(f"curves must hold a family besides the reference {reference!r}")
    fig, axes = _figure(7.8, 3.9, 1, len(families), sharex=True, sharey=True, squeeze=False)
    ref = curves[curves["family"] == reference]
    for ax, family in zip(axes[0], families):
        for label, sub in ref.groupby("label", sort=False):
            ax.plot(sub["step"], sub["nfe"], color="grey", lw=1.2, label=label)
        fam = curves[curves["family"] == family]
        shade = _shades(fam["weight"])
        for (label, weight), sub in fam.groupby(["label", "weight"], sort=False):
            ax.plot(sub["step"], sub["nfe"], color=family_color(family, shade[weight]), lw=1.4, label=label)
        ax.set(title=FAMILY_NAMES.get(family, family), xlabel="training step")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    axes[0, 0].set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def evaluation_curves(curves: pd.DataFrame, panels: Mapping[str, str], *, x: str = "epoch") -> Figure:
    """The periodic evaluations of training runs: one panel per metric, one line per run.

    **Arguments**
    - `curves`: long DataFrame with columns `label`, `family`, `seed`, `x` and every key of
      `panels` (one row per evaluation of a run).
    - `panels`: metric column → y-axis label, in panel order (`{"acc": "test accuracy (%)"}`).
    - `x`: the column on the x-axis (its name is the axis label).

    Colour = family, line style = seed (solid, dashed, dotted), a marker at every evaluation.

    **Returns** the figure (one row of panels sharing the x-axis; the legend beside the last).

    **Raises** `ValueError` when a column is missing, `panels` is empty or `curves` is empty.
    """
    if not panels:
        raise ValueError("panels is empty: name at least one metric column to plot")
    _require(curves, ["label", "family", "seed", x, *panels], "curves")
    seeds = sorted(curves["seed"].unique())
    styles = dict(zip(seeds, ["-", "--", ":", "-."]))
    fig, axes = _figure(7.8, 3.4, 1, len(panels), sharex=True, squeeze=False)
    for ax, (column, ylabel) in zip(axes[0], panels.items()):
        for (label, family, seed), run in curves.groupby(["label", "family", "seed"], sort=False):
            run = run.sort_values(x)
            ax.plot(run[x], run[column], styles.get(seed, "-"), marker="o", markersize=3.5, lw=1.4,
                    color=family_color(family), label=f"{label}, seed {seed}")
        ax.set(xlabel=x, ylabel=ylabel)
        ax.grid(alpha=0.3)
    axes[0, -1].legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def runs_by_seed(runs: pd.DataFrame, *, nfe_label: str = "test NFE",
                 acc_label: str = "test accuracy (%)") -> Figure:
    """The same settings at several seeds: accuracy against NFE, colour = setting, marker = seed.

    **Arguments**
    - `runs`: DataFrame with columns `label`, `family`, `seed`, `nfe`, `acc`.
    - `nfe_label`, `acc_label`: axis labels.

    **Returns** the figure (one axes; legend of settings and of seeds).

    **Raises** `ValueError` when a column is missing or `runs` is empty.
    """
    _require(runs, ["label", "family", "seed", "nfe", "acc"], "runs")
    seeds = sorted(runs["seed"].unique())
    seed_markers = dict(zip(seeds, "os^vDP"))
    sizes = dict(zip(seeds, np.linspace(130, 40, len(seeds))))  # later seeds smaller, drawn on top
    fig, ax = _figure(6.0, 3.6)
    for _, r in runs.sort_values("seed", kind="stable").iterrows():
        ax.scatter(r["nfe"], r["acc"], color=family_color(r["family"]), marker=seed_markers[r["seed"]],
                   s=sizes[r["seed"]], alpha=0.9, edgecolors="white", linewidths=0.8)
    handles = [plt.Line2D([], [], marker="o", ls="", color=family_color(fam), label=lab)
               for lab, fam in runs[["label", "family"]].drop_duplicates().itertuples(index=False)]
    handles += [plt.Line2D([], [], marker=m, ls="", color="grey", markersize=7, label=f"seed {s}")
                for s, m in seed_markers.items()]
    ax.legend(handles=handles, frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set(xlabel=nfe_label, ylabel=acc_label)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def penalties_against_nfe(values: Mapping[str, Sequence[float]], nfe: Sequence[float], families: Sequence[str], *,
                          rho: Mapping[str, float] | None = None, ylabel: str = "test NFE") -> Figure:
    """A 2 × 2 grid: each penalty of the trained models against their NFE, coloured by family.

    **Arguments**
    - `values`: penalty name (the panel's x label) → one value per model (log x axis); at most 4.
    - `nfe`: one NFE per model. `families`: one `FAMILY_COLORS` key per model.
    - `rho`: optional penalty name → rank correlation, written in the panel.
    - `ylabel`: y-axis label.

    **Returns** the figure (one axes per penalty, shared y; legend of families).

    **Raises** `ValueError` for no or more than 4 penalties, or lengths that disagree.
    """
    nfe = np.asarray(nfe, dtype=float)
    if not 1 <= len(values) <= 4:
        raise ValueError(f"values must hold 1 to 4 penalties, got {len(values)}")
    if len(families) != nfe.size:
        raise ValueError(f"families has {len(families)} entries for {nfe.size} NFE values")
    fig, axes = _figure(7.0, 5.2, 2, 2, sharey=True)
    flat = axes.ravel()
    colors = [family_color(f) for f in families]
    for ax, (name, vals) in zip(flat, values.items()):
        if len(vals) != nfe.size:
            raise ValueError(f"values[{name!r}] has {len(vals)} entries for {nfe.size} NFE values")
        ax.scatter(vals, nfe, color=colors, s=30, edgecolors="white", linewidths=0.5)
        ax.set(xscale="log", xlabel=name)
        _plain_log_ticks(ax.xaxis, vals)
        if rho is not None and name in rho:
            ax.text(0.04, 0.94, f"ρ = {rho[name]:.2f}", transform=ax.transAxes, va="top", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in flat[len(values):]:
        ax.remove()
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    handles = [plt.Line2D([], [], marker="o", ls="", color=family_color(f), label=FAMILY_NAMES.get(f, f))
               for f in dict.fromkeys(families)]
    fig.legend(handles=handles, frameon=False, fontsize=9, loc="upper center", ncols=len(handles))
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def density_panels(data, rows: Sequence[Mapping], *, extent: float) -> Figure:
    """A 2-D density model per row: the data, the learned density as a heat map, and samples.

    **Arguments**
    - `data`: points of the data set, an array `(n, 2)` (drawn in every row's first panel).
    - `rows`: one mapping per model with `density` (an array `(m, m)` of p(x) on the square
      grid [−extent, extent]², rows along x₂, as `numpy.meshgrid` gives), `samples` (an array
      `(k, 2)` drawn from the model) and `title` (e.g. the regulariser with its test NLL and NFE).
    - `extent`: half-width of the square shown.

    **Returns** the figure: `len(rows)` rows of three panels, equal aspect, shared axes.

    **Raises** `ValueError` for no rows, points that are not `(n, 2)`, or a density that is not square.
    """
    if not rows:
        raise ValueError("rows must hold at least one model")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 2:
        raise ValueError(f"data must have shape (n, 2), got {data.shape}")
    fig, axes = _figure(7.2, 2.45 * len(rows), len(rows), 3, sharex=True, sharey=True, squeeze=False)
    box = (-extent, extent, -extent, extent)
    for ax_row, r in zip(axes, rows):
        dens, samples = np.asarray(r["density"]), np.asarray(r["samples"])
        if dens.ndim != 2 or dens.shape[0] != dens.shape[1]:
            raise ValueError(f"row {r.get('title', '')!r}: density must be a square (m, m) array, got {dens.shape}")
        if samples.ndim != 2 or samples.shape[1] != 2:
            raise ValueError(f"row {r.get('title', '')!r}: samples must have shape (k, 2), got {samples.shape}")
        ax_row[0].hist2d(data[:, 0], data[:, 1], bins=100, range=[box[:2], box[2:]], cmap="viridis")
        ax_row[1].imshow(dens, origin="lower", extent=box, cmap="viridis", aspect="equal")
        ax_row[2].hist2d(samples[:, 0], samples[:, 1], bins=100, range=[box[:2], box[2:]], cmap="viridis")
        for ax, name in zip(ax_row, ("data", "learned density", "samples")):
            ax.set(xlim=box[:2], ylim=box[2:], aspect="equal", xticks=[], yticks=[])
            ax.set_title(name, fontsize=9)
        ax_row[0].set_ylabel(r.get("title", ""), fontsize=9)
    fig.tight_layout()
    return fig


def image_rows(rows: Sequence[Mapping], *, per_row: int = 8) -> Figure:
    """Grey-scale images, one row of panels per model (e.g. data, then samples of each flow).

    **Arguments**
    - `rows`: one mapping per row with `images` (an array `(n, h, w)` of intensities in [0, 1],
      at least `per_row` of them) and `title` (printed at the left of the row).
    - `per_row`: images shown per row.

    **Returns** the figure: `len(rows)` rows of `per_row` panels without axes.

    **Raises** `ValueError` for no rows, images that are not `(n, h, w)`, too few images, or
    intensities outside [0, 1].
    """
    if not rows:
        raise ValueError("rows must hold at least one row of images")
    fig, axes = _figure(7.2, 1.0 * len(rows) + 0.2, len(rows), per_row, squeeze=False)
    for ax_row, r in zip(axes, rows):
        images = np.asarray(r["images"])
        name = r.get("title", "")
        if images.ndim != 3:
            raise ValueError(f"row {name!r}: images must have shape (n, h, w), got {images.shape}")
        if len(images) < per_row:
            raise ValueError(f"row {name!r}: {len(images)} images, fewer than per_row={per_row}")
        if not np.all((images >= 0) & (images <= 1)):
            raise ValueError(f"row {name!r}: intensities must lie in [0, 1]; scale the images first")
        for ax, img in zip(ax_row, images):
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set(xticks=[], yticks=[])
        ax_row[0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout(w_pad=0.2, h_pad=0.3)
    return fig


def order_grid(runs: pd.DataFrame, solver_orders: Mapping[str, int], *, fit_max: float,
               nfe_label: str = "NFE", weight_label: str = "c", notes: Mapping[str, str] | None = None) -> Figure:
    """Which K for which solver: NFE against the order K of R_K, one panel per solver.

    Each regularisation weight is a line over K; the unregularised run (order 0) is a dashed
    line across the panel; a dotted vertical line marks the solver's order p. Runs whose fit is
    worse than `fit_max` are drawn hollow.

    **Arguments**
    - `runs`: DataFrame with columns `solver`, `order` (0 = unregularised), `weight`, `nfe`,
      `fit`; one row per run; the unregularised rows' weight is ignored.
    - `solver_orders`: solver name → its order p, in panel order (every solver of `runs`).
    - `fit_max`: the largest fit counted as a fit of the task.
    - `nfe_label`, `weight_label`: the y-axis label (say the tolerance) and the weight's name.
    - `notes`: solver → a second title line for its panel (e.g. its tolerance).

    **Returns** the figure (one row of panels sharing the K axis).

    **Raises** `ValueError` when a column is missing, `runs` is empty, a solver lacks its order
    or its unregularised run.
    """
    _require(runs, ["solver", "order", "weight", "nfe", "fit"], "runs")
    missing = sorted(set(runs["solver"]) - set(solver_orders))
    if missing:
        raise ValueError(f"solver_orders lacks the solvers {missing}")
    solvers = [s for s in solver_orders if s in set(runs["solver"])]
    fig, axes = _figure(MAX_WIDTH, 3.0, 1, len(solvers), sharex=True, squeeze=False)
    reg = runs[runs["order"] > 0]
    weights = sorted(reg["weight"].unique())
    shades = _shades(weights)
    for ax, solver in zip(axes[0], solvers):
        sub = runs[runs["solver"] == solver]
        unreg = sub[sub["order"] == 0]
        if len(unreg) != 1:
            raise ValueError(f"runs needs one unregularised row (order 0) for {solver}, got {len(unreg)}")
        ax.axhline(float(unreg["nfe"].iloc[0]), color="black", ls="--", lw=1.2, label="unregularised")
        ax.axvline(solver_orders[solver], color="grey", ls=":", lw=1.2)
        for w in weights:
            line = sub[(sub["order"] > 0) & (sub["weight"] == w)].sort_values("order")
            if not len(line):
                continue
            color = family_color("R2", shades[w])
            ax.plot(line["order"], line["nfe"], "-", color=color, lw=1.2, label=f"{weight_label} = {w:g}")
            good = line["fit"] <= fit_max
            ax.scatter(line["order"][good], line["nfe"][good], s=26, color=color, zorder=3)
            ax.scatter(line["order"][~good], line["nfe"][~good], s=26, facecolors="white", edgecolors=color,
                       zorder=3)
        note = (notes or {}).get(solver)
        ax.set_title(f"{solver} (p = {solver_orders[solver]})" + (f"\n{note}" if note else ""), fontsize=9)
        ax.set_xlabel("K")
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis, sub["nfe"])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(nfe_label)
    axes[0][0].set_xticks(sorted(int(k) for k in reg["order"].unique()) if len(reg) else [0])
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.legend(handles, labels, frameon=False, fontsize=8, loc="lower center", ncols=len(labels))
    return fig
