"""taynode.plots: each figure fits the page column, draws what it is given, and refuses bad input."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402

from taynode import plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _fits_column(fig):
    width, height = fig.get_size_inches()
    assert width <= plots.MAX_WIDTH and height <= 8


def _runs():
    return pd.DataFrame(
        {
            "label": ["unregularised", "R2, λ=0.1", "R2, λ=1", "RNODE 1"],
            "family": ["unregularised", "R2", "R2", "RNODE"],
            "weight": [0.0, 0.1, 1.0, 1.0],
            "nfe": [80.0, 60.0, 40.0, 70.0],
            "acc": [87.0, 86.8, 86.5, 85.0],
            "seed": [0, 0, 1, 2],
        }
    )


def test_shades_single_weight_is_full_colour_and_order_is_kept():
    assert plots._shades([1.0]) == {1.0: 1.0}
    shade = plots._shades([0.01, 1.0, 0.1])
    assert shade[0.01] < shade[0.1] < shade[1.0] == 1.0


def test_family_color_shades_towards_white():
    full = np.array(plots.family_color("R2"))
    light = np.array(plots.family_color("R2", 0.4))
    assert np.all(light >= full) and np.any(light > full)
    assert plots.family_color("unregularised", 0.0) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("family, shade", [("R7", 1.0), ("R2", 1.5), ("R2", -0.1)])
def test_family_color_rejects_bad_input(family, shade):
    with pytest.raises(ValueError):
        plots.family_color(family, shade)


def test_derivative_cost_draws_one_line_per_method_and_a_reference():
    orders = [2, 3, 4]
    fig = plots.derivative_cost(
        orders,
        {"jet": [2.0, 3.0, 4.5], "nested jvp": [1.5, 2.0, 3.0]},
        spread={"jet": ([1.9, 2.9, 4.4], [2.1, 3.1, 4.6])},
    )
    _fits_column(fig)
    (ax,) = fig.axes
    labels = ax.get_legend_handles_labels()[1]
    assert sorted(labels) == ["jet", "nested jvp", "one evaluation of f"]
    assert ax.get_xlabel() == "derivative order K"
    assert "f evaluation" in ax.get_ylabel()


def test_derivative_cost_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="ratios"):
        plots.derivative_cost([2, 3, 4], {"jet": [1.0, 2.0]})
    with pytest.raises(ValueError, match="orders"):
        plots.derivative_cost([], {})


def test_nfe_against_penalty_one_panel_per_order_and_colour_bar():
    rng = np.random.default_rng(0)
    pens = {k: rng.lognormal(size=10) for k in (1, 2, 3, 5, 6)}
    nfe = rng.integers(20, 200, size=10)
    fig = plots.nfe_against_penalty(pens, nfe, color=np.arange(10), color_label="scale",
                                    rho={k: 0.9 for k in pens})
    _fits_column(fig)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("K = ")]
    assert [ax.get_title() for ax in panels] == ["K = 1", "K = 2", "K = 3", "K = 5", "K = 6"]
    assert len(fig.axes) == 6  # five panels and the colour bar; the sixth grid cell is removed
    assert all(ax.get_xscale() == "log" for ax in panels)
    assert "ρ = 0.90" in [t.get_text() for t in panels[0].texts]


def test_nfe_against_penalty_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        plots.nfe_against_penalty({}, [1, 2])
    with pytest.raises(ValueError, match=r"penalties\[2\]"):
        plots.nfe_against_penalty({2: [1.0, 2.0, 3.0]}, [1, 2])


def _panel(n_t=20, n=3, title="p"):
    ts = np.linspace(0, 1, n_t)
    zs = np.outer(ts, np.arange(1, n + 1))
    return {"ts": ts, "zs": zs, "color": np.abs(zs) + 1e-2, "step_t": ts[::5], "step_z": zs[::5], "title": title}


def test_trajectories_one_line_collection_per_curve():
    fig = plots.trajectories([_panel(title="λ = 0"), _panel(title="λ = 1e-3")], color_label="|d³z/dt³|")
    _fits_column(fig)
    data_axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in data_axes] == ["λ = 0", "λ = 1e-3"]
    assert sum(isinstance(c, LineCollection) for c in data_axes[0].collections) == 3
    assert len(fig.axes) == 3  # two panels and the colour bar
    assert fig.axes[-1].get_ylabel() == "|d³z/dt³|"


def test_trajectories_rejects_bad_panels():
    with pytest.raises(ValueError, match="at least one"):
        plots.trajectories([], color_label="c")
    bad = _panel()
    bad["color"] = bad["color"][:, :2]
    with pytest.raises(ValueError, match="disagree"):
        plots.trajectories([bad], color_label="c")


def test_lambda_sweep_places_lambda_zero_first_and_draws_medians():
    runs = pd.DataFrame(
        {
            "lam": [0.0, 0.0, 1e-3, 1e-3, 1.0, 1.0],
            "seed": [0, 1, 0, 1, 0, 1],
            "nfe": [140, 80, 50, 50, 50, 50],
            "fit": [8e-4, 1e-5, 1e-5, 3e-4, 2e-4, 2e-4],
        }
    )
    fig = plots.lambda_sweep(runs)
    _fits_column(fig)
    top, bottom = fig.axes
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["0", "0.001", "1"]
    assert bottom.get_yscale() == "log" and top.get_yscale() == "linear"
    median = top.get_lines()[0]
    assert list(median.get_ydata()) == [110.0, 50.0, 50.0]
    assert sum(isinstance(c, PathCollection) for c in top.collections) == 2  # one per seed


def test_lambda_sweep_names_missing_columns():
    with pytest.raises(ValueError, match="fit"):
        plots.lambda_sweep(pd.DataFrame({"lam": [0.0], "seed": [0], "nfe": [1]}))
    with pytest.raises(ValueError, match="at least one row"):
        plots.lambda_sweep(pd.DataFrame({"lam": [], "seed": [], "nfe": [], "fit": []}))


def test_accuracy_vs_nfe_one_legend_entry_per_run():
    runs = _runs()
    fig = plots.accuracy_vs_nfe(runs)
    _fits_column(fig)
    (ax,) = fig.axes
    assert ax.get_legend_handles_labels()[1] == list(runs["label"])
    assert len(ax.collections) == len(runs)


def test_accuracy_vs_nfe_rejects_unknown_family_and_non_frames():
    runs = _runs()
    runs.loc[0, "family"] = "R9"
    with pytest.raises(ValueError, match="family"):
        plots.accuracy_vs_nfe(runs)
    with pytest.raises(ValueError, match="DataFrame"):
        plots.accuracy_vs_nfe(runs.to_dict())


def test_accuracy_vs_nfe_min_acc_span_widens_a_narrow_axis_only():
    runs = _runs()
    narrow = runs.assign(acc=87.0 + 0.1 * np.arange(len(runs)))
    lo, hi = plots.accuracy_vs_nfe(narrow, min_acc_span=2.0).axes[0].get_ylim()
    assert hi - lo == pytest.approx(2.0) and (lo + hi) / 2 == pytest.approx(narrow["acc"].agg(["min", "max"]).mean())
    wide = runs.assign(acc=80.0 + 5 * np.arange(len(runs)))
    lo, hi = plots.accuracy_vs_nfe(wide, min_acc_span=2.0).axes[0].get_ylim()
    assert lo <= 80.0 and hi >= wide["acc"].max() and hi - lo > 2.0  # already wider: left alone
    with pytest.raises(ValueError, match="min_acc_span must be positive"):
        plots.accuracy_vs_nfe(runs, min_acc_span=0)


def test_training_nfe_one_panel_per_family_with_the_reference_in_each():
    rows = []
    for label, family, weight in [("unregularised", "unregularised", 0.0), ("R2, λ=1", "R2", 1.0),
                                  ("R2, λ=0.1", "R2", 0.1), ("RNODE 1", "RNODE", 1.0)]:
        rows += [{"label": label, "family": family, "weight": weight, "step": s, "nfe": 20 + s} for s in (0, 10, 20)]
    fig = plots.training_nfe(pd.DataFrame(rows))
    _fits_column(fig)
    assert [ax.get_title() for ax in fig.axes] == ["$R_2$", "RNODE"]
    assert len(fig.axes[0].get_lines()) == 3 and len(fig.axes[1].get_lines()) == 2


def test_training_nfe_needs_a_regularised_family():
    rows = pd.DataFrame({"label": ["u"], "family": ["unregularised"], "weight": [0.0], "step": [0], "nfe": [1]})
    with pytest.raises(ValueError, match="besides the reference"):
        plots.training_nfe(rows)


def test_evaluation_curves_one_panel_per_metric_one_line_per_run():
    rows = [{"label": label, "family": family, "seed": seed, "epoch": e, "acc": 90 + e, "nfe": 80 - e}
            for label, family in [("unregularised", "unregularised"), ("R2, λ=1", "R2")]
            for seed in (0, 1) for e in (10, 20, 30)]
    fig = plots.evaluation_curves(pd.DataFrame(rows), {"acc": "test accuracy (%)", "nfe": "test NFE"})
    _fits_column(fig)
    assert [ax.get_ylabel() for ax in fig.axes] == ["test accuracy (%)", "test NFE"]
    for ax in fig.axes:
        lines = ax.get_lines()
        assert len(lines) == 4  # 2 runs × 2 seeds
        assert sorted(line.get_linestyle() for line in lines) == ["-", "-", "--", "--"]
        assert all(list(line.get_xdata()) == [10, 20, 30] for line in lines)
    legend = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert legend == ["unregularised, seed 0", "unregularised, seed 1", "R2, λ=1, seed 0", "R2, λ=1, seed 1"]


def test_evaluation_curves_checks_its_input():
    rows = pd.DataFrame({"label": ["u"], "family": ["unregularised"], "seed": [0], "epoch": [1], "acc": [9.0]})
    with pytest.raises(ValueError, match="panels is empty"):
        plots.evaluation_curves(rows, {})
    with pytest.raises(ValueError, match=r"lacks the columns \['nfe'\]"):
        plots.evaluation_curves(rows, {"nfe": "NFE"})
    with pytest.raises(ValueError, match="at least one row"):
        plots.evaluation_curves(rows.iloc[:0], {"acc": "accuracy"})


def test_runs_by_seed_legend_lists_settings_then_seeds():
    fig = plots.runs_by_seed(_runs())
    _fits_column(fig)
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["unregularised", "R2, λ=0.1", "R2, λ=1", "RNODE 1", "seed 0", "seed 1", "seed 2"]
    assert len(ax.collections) == 4


def test_penalties_against_nfe_grid_and_checks():
    nfe = [80, 40, 60]
    fams = ["unregularised", "R2", "RNODE"]
    vals = {"$R_2$": [1.0, 0.1, 0.5], "$R_3$": [2.0, 0.2, 1.0], "kinetic": [3, 2, 1], "Frobenius": [1, 2, 3]}
    fig = plots.penalties_against_nfe(vals, nfe, fams, rho={"$R_2$": 1.0})
    _fits_column(fig)
    assert [ax.get_xlabel() for ax in fig.axes] == list(vals)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["unregularised", "$R_2$", "RNODE"]
    with pytest.raises(ValueError, match="1 to 4"):
        plots.penalties_against_nfe({}, nfe, fams)
    with pytest.raises(ValueError, match="families"):
        plots.penalties_against_nfe(vals, nfe, fams[:2])
    with pytest.raises(ValueError, match="kinetic"):
        plots.penalties_against_nfe({**vals, "kinetic": [1, 2]}, nfe, fams)


def test_figures_wider_than_the_column_are_refused():
    with pytest.raises(ValueError, match="at most"):
        plots._figure(plots.MAX_WIDTH + 1, 3)


def test_density_panels_three_panels_per_model_and_checks():
    g = np.linspace(-4, 4, 30)
    xx, yy = np.meshgrid(g, g)
    dens = np.exp(-(xx**2 + yy**2) / 2) / (2 * np.pi)
    rng = np.random.default_rng(0)
    rows = [{"density": dens, "samples": rng.normal(size=(500, 2)), "title": t} for t in ("none", "R2")]
    fig = plots.density_panels(rng.normal(size=(500, 2)), rows, extent=4.0)
    _fits_column(fig)
    axes = fig.get_axes()
    assert len(axes) == 6
    assert [ax.get_ylabel() for ax in axes[::3]] == ["none", "R2"]
    assert len(axes[1].get_images()) == 1
    with pytest.raises(ValueError, match="rows must hold"):
        plots.density_panels(rng.normal(size=(5, 2)), [], extent=4.0)
    with pytest.raises(ValueError, match=r"data must have shape \(n, 2\)"):
        plots.density_panels(rng.normal(size=(5, 3)), rows, extent=4.0)
    with pytest.raises(ValueError, match="density must be a square"):
        plots.density_panels(rng.normal(size=(5, 2)), [{**rows[0], "density": dens[:5]}], extent=4.0)



def test_image_rows_one_row_per_model_and_checks():
    rng = np.random.default_rng(0)
    rows = [{"images": rng.uniform(size=(10, 14, 14)), "title": t} for t in ("data", "unregularised")]
    fig = plots.image_rows(rows, per_row=6)
    _fits_column(fig)
    axes = fig.get_axes()
    assert len(axes) == 12
    assert [ax.get_ylabel() for ax in axes[::6]] == ["data", "unregularised"]
    assert all(len(ax.get_images()) == 1 for ax in axes)
    with pytest.raises(ValueError, match="rows must hold"):
        plots.image_rows([])
    with pytest.raises(ValueError, match=r"images must have shape \(n, h, w\)"):
        plots.image_rows([{"images": rng.uniform(size=(10, 14)), "title": "x"}])
    with pytest.raises(ValueError, match="fewer than per_row=8"):
        plots.image_rows([{"images": rng.uniform(size=(3, 14, 14)), "title": "x"}])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        plots.image_rows([{"images": 255 * rng.uniform(size=(10, 14, 14)), "title": "x"}])


def _grid():
    rows = [("heun", 0, 0.0, 400, 1e-3), ("dopri5", 0, 0.0, 44, 1e-3)]
    rows += [(s, k, w, 100 - k + (s == "heun") * 200, 1e-4 if k < 5 else 1e-1)
             for s in ("heun", "dopri5") for k in range(1, 7) for w in (0.1, 0.001)]
    return pd.DataFrame(rows, columns=["solver", "order", "weight", "nfe", "fit"])


def test_order_grid_one_panel_per_solver_hollow_where_the_fit_fails():
    fig = plots.order_grid(_grid(), {"heun": 2, "dopri5": 5}, fit_max=1e-2, notes={"dopri5": "rtol 1e-10"})
    _fits_column(fig)
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == ["heun (p = 2)", "dopri5 (p = 5)\nrtol 1e-10"]
    # per panel: two weights × (filled, hollow) scatters; hollow ones hold K = 5, 6
    points = [c for c in axes[0].collections if isinstance(c, PathCollection)]
    assert sorted(len(c.get_offsets()) for c in points) == [2, 2, 4, 4]
    hollow = [c for c in points if len(c.get_offsets()) == 2]
    assert all(sorted(np.asarray(c.get_offsets())[:, 0]) == [5, 6] for c in hollow)
    dashed = [ln for ln in axes[1].get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == 44


def test_order_grid_refuses_missing_solver_order_and_baseline():
    with pytest.raises(ValueError, match=r"solver_orders lacks the solvers \['heun'\]"):
        plots.order_grid(_grid(), {"dopri5": 5}, fit_max=1e-2)
    runs = _grid()
    with pytest.raises(ValueError, match="one unregularised row"):
        plots.order_grid(runs[~((runs["solver"] == "heun") & (runs["order"] == 0))], {"heun": 2, "dopri5": 5},
                         fit_max=1e-2)
    with pytest.raises(ValueError, match="lacks the columns"):
        plots.order_grid(runs.drop(columns="fit"), {"heun": 2, "dopri5": 5}, fit_max=1e-2)
