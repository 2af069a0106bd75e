"""Criteria, verdicts per seed and the words that sum them up."""

import math

import pandas as pd
import pytest

from taynode.verdicts import CRITERIA, Criterion, judge_seeds, met_phrase, order_match, seeds_phrase, verdict


@pytest.mark.parametrize("outcomes,want", [
    ([True, True, True], "holds"), ([True, False, True], "partly"), ([False, False], "does not"), ([], "not yet"),
])
def test_verdict(outcomes, want):
    assert verdict(outcomes) == want


@pytest.mark.parametrize("by_seed,want", [
    ({0: True, 1: True, 2: True}, "at every seed (0, 1, 2)"),
    ({0: True, 1: False, 2: True}, "at seeds 0 and 2 of 0, 1, 2"),
    ({0: True, 1: False, 2: False}, "at seed 0 only (of 0, 1, 2)"),
    ({0: False, 1: False}, "at no seed of 0, 1"),
    ({0: True}, "at its one seed (0)"),
])
def test_seeds_phrase(by_seed, want):
    assert seeds_phrase(by_seed) == want


@pytest.mark.parametrize("by_seed,want", [
    ({0: True, 1: True, 2: True}, "met at every seed (0, 1, 2)"),
    ({0: True, 1: False, 2: False}, "met at seed 0 only (of 0, 1, 2)"),
    ({0: False, 1: False}, "not met at any seed of 0, 1"),
    ({0: True}, "met at its one seed (0)"),
    ({1: False}, "not met at its one seed (1)"),
])
def test_met_phrase(by_seed, want):
    assert met_phrase(by_seed) == want


def test_seeds_phrase_needs_a_seed():
    with pytest.raises(ValueError, match="by_seed is empty"):
        seeds_phrase({})


def test_accuracy_criterion_judges_both_conditions_at_their_boundaries():
    c = CRITERIA["mnist"]  # NFE <= 0.5x, accuracy at most 1 point lower
    assert c.holds(40, 80, 97.0, 98.0)  # exactly at both bounds
    assert not c.holds(40.5, 80, 98.0, 98.0)
    assert not c.holds(30, 80, 96.9, 98.0)
    assert c.holds(30, 80, 99.0, 98.0)  # better accuracy is fine
    assert "at most 0.5×" in c.statement and "at most 1 point lower" in c.statement
    assert c.tolerance_words == "1 point"
    assert Criterion(0.5, "test accuracy", 2.0, higher_is_better=True, unit="points").tolerance_words == "2 points"


def test_relative_loss_criterion():
    c = Criterion(0.75, "test MSE", 0.05, relative=True)
    assert c.holds(75, 100, 1.05e-3, 1e-3) and not c.holds(75, 100, 1.06e-3, 1e-3)
    assert "at most 5% higher" in c.statement and c.tolerance_words == "5%"


def test_bad_criterion_is_an_error():
    with pytest.raises(ValueError, match="max_nfe_ratio must be > 0"):
        Criterion(0.0, "x", 0.1)


def test_judge_seeds_gives_one_outcome_per_seed():
    frame = pd.DataFrame(dict(seed=[0, 1, 2], nfe=[40, 50, 30], base_nfe=[80, 80, 80],
                              metric=[97.5, 98.0, 95.0], base_metric=[98.0, 98.0, 98.0]))
    by_seed = judge_seeds(frame, CRITERIA["mnist"])
    assert by_seed == {0: True, 1: False, 2: False}
    assert verdict(by_seed.values()) == "partly"
    with pytest.raises(ValueError, match="one row per seed"):
        judge_seeds(pd.concat([frame, frame]), CRITERIA["mnist"])


@pytest.mark.parametrize("nfe_by_k,order,spread,want", [
    ({2: 100, 3: 80, 4: 90}, 3, 6, True),        # best at p, neighbours more than the spread above
    ({2: 100, 3: 80, 4: 84}, 3, 6, False),       # a neighbour within the spread: no clear winner
    ({2: 70, 3: 80, 4: 90}, 3, 6, False),        # another K is better
    ({5: 110, 6: 110}, 5, 6, False),             # a tie is not a win
    ({1: 200, 2: 100, 3: 150}, 8, 6, False),     # the solver's order lies beyond the grid
    ({2: 100, 3: 80, 4: math.nan}, 3, 6, True),  # an order with no fitting model does not count against p
])
def test_order_match(nfe_by_k, order, spread, want):
    assert order_match(nfe_by_k, order, spread) is want


def test_choose_weights_picks_the_cheapest_weight_that_fits_at_seed_0_and_judges_it_at_every_seed():
    import pandas as pd

    from taynode.verdicts import choose_weights

    crit = Criterion(0.5, "MSE", 1e-3)
    rows = [("unregularised", 0.0, s, 100.0, 0.001) for s in (0, 1)] + [
        ("A", 0.1, 0, 60.0, 0.0015),  # fits (+0.5e-3), 60 NFE
        ("A", 1.0, 0, 40.0, 0.0030),  # cheaper but does not fit (+2e-3)
        ("A", 0.01, 0, 60.0, 0.0011),  # ties 0.1 on NFE and fits: the smaller weight wins
        ("A", 0.01, 1, 45.0, 0.0012),
        ("B", 1.0, 0, 30.0, 0.5),  # B never fits
    ]
    runs = pd.DataFrame(rows, columns=["family", "weight", "seed", "nfe", "mse"])
    chosen, judged = choose_weights(runs, crit, metric="mse")
    assert chosen == {"A": 0.01}
    assert list(judged["seed"]) == [0, 1] and list(judged["nfe_ratio"]) == [0.6, 0.45]
    assert list(judged["holds"]) == [False, True]  # 0.6x > 0.5x at seed 0; 0.45x and +0.2e-3 at seed 1
    assert judged["change"].tolist() == pytest.approx([1e-4, 2e-4])
    with pytest.raises(ValueError, match="no unregularised run at seed 2"):
        choose_weights(runs, crit, metric="mse", seed=2)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['acc'\]"):
        choose_weights(runs, crit, metric="acc")


def _run(experiment, reg, seed, diverged=False, **config):
    """A run record as the runner writes it: finished (metrics) or diverged."""
    cfg = {"reg": reg, "seed": seed, "order": 2 if reg == "taylor" else 0, "lam": 1.0 if reg == "taylor" else 0.0,
           "lam_kin": 1.0 if reg == "rnode" else 0.0, "lr": 1e-3, **config}
    r = {"experiment": experiment, "run": f"{experiment}_{reg}_{seed}_{sorted(config.items())}", "config": cfg}
    r["diverged" if diverged else "metrics"] = {"step": 3} if diverged else {"loss": 1.0}
    return r


def test_stability_pairs_match_runs_that_differ_only_in_the_regulariser():
    from taynode.verdicts import stability_pairs

    records = [
        _run("toy", "none", 0), _run("toy", "taylor", 0), _run("toy", "rnode", 0, diverged=True),
        _run("toy", "none", 1, diverged=True), _run("toy", "taylor", 1),
        _run("toy", "taylor", 2),  # no unregularised run at seed 2: left out
        _run("toy", "taylor", 0, lr=1e-2),  # another learning rate: a setting without a baseline
        _run("mnist", "taylor", 0, diverged=True),  # another experiment: no baseline either
    ]
    pairs = stability_pairs(records).set_index(["reg", "seed"])
    assert sorted(pairs.index) == [("rnode", 0), ("taylor", 0), ("taylor", 1)]
    assert pairs.loc[("taylor", 0)][["diverged", "base_diverged", "more_stable", "less_stable"]].tolist() == [
        False, False, False, False]
    assert pairs.loc[("rnode", 0), "less_stable"] and not pairs.loc[("rnode", 0), "more_stable"]
    assert pairs.loc[("taylor", 1), "more_stable"] and pairs.loc[("taylor", 1), "base_diverged"]


@pytest.mark.parametrize("reg_diverges,base_diverges,want", [
    ([False], [False], "does not"),  # nothing diverged: regularisation saved no run
    ([True], [False], "does not"),
    ([False], [True], "holds"),
    ([False, True], [True, False], "partly"),
    ([], [], "not yet"),
])
def test_stability_verdict(reg_diverges, base_diverges, want):
    from taynode.verdicts import stability_pairs, stability_verdict

    records = []
    for seed, (r, b) in enumerate(zip(reg_diverges, base_diverges)):
        records += [_run("toy", "taylor", seed, diverged=r), _run("toy", "none", seed, diverged=b)]
    assert stability_verdict(stability_pairs(records)) == want


def test_stability_pairs_reject_a_record_that_is_neither_finished_nor_diverged():
    from taynode.verdicts import stability_pairs

    with pytest.raises(ValueError, match="exactly one of metrics and diverged"):
        stability_pairs([{"experiment": "toy", "run": "x", "config": {"reg": "none", "seed": 0}}])


@pytest.mark.parametrize("config, want", [
    ({"reg": "none", "lam": 0.0}, ("unregularised", 0.0)),
    ({"reg": "taylor", "order": 2, "lam": 10.0, "estimator": "exact"}, ("R2", 10.0)),
    ({"reg": "taylor", "order": 2, "lam": 10.0, "estimator": "sampled"}, ("R2 sampled", 10.0)),
    ({"reg": "taylor", "order": 3, "lam": 0.01, "estimator": "sampled"}, ("R3 sampled", 0.01)),
    ({"reg": "rnode", "lam_kin": 0.1, "lam_fro": 0.1}, ("RNODE", 0.1)),
    ({"reg": "ernode", "lam": 1.0}, ("ERNODE", 1.0)),
    ({"reg": "srnode", "lam": 0.5}, ("SRNODE", 0.5)),
    ({"reg": "steer", "steer_b": 0.25, "lam": 0.0}, ("STEER", 0.25)),
])
def test_method_of_names_each_regulariser_with_its_own_weight(config, want):
    from taynode.verdicts import method_of

    assert method_of(config) == want


def test_method_of_rejects_an_unknown_regulariser_and_a_partial_config():
    from taynode.verdicts import method_of

    with pytest.raises(ValueError, match="reg='kinetic'"):
        method_of({"reg": "kinetic", "lam": 1.0})
    with pytest.raises(ValueError, match="lacks the field 'steer_b'"):
        method_of({"reg": "steer"})


def test_complete_methods_needs_every_planned_weight_finished_or_diverged():
    from taynode.verdicts import complete_methods

    plan = [{"reg": "none"}] + [{"reg": "ernode", "lam": w} for w in (0.1, 1.0, 10.0)] + [
        {"reg": "steer", "steer_b": b} for b in (0.1, 0.25)] + [
        {"reg": "taylor", "order": 2, "lam": 10.0, "estimator": "sampled"}]
    # ERNODE: all three (one of them diverged, still tried); STEER: one of two; sampled R_2: none
    done = [{"reg": "none"}, {"reg": "ernode", "lam": 10.0}, {"reg": "ernode", "lam": 0.1},
            {"reg": "ernode", "lam": 1.0}, {"reg": "steer", "steer_b": 0.1},
            {"reg": "taylor", "order": 3, "lam": 10.0, "estimator": "sampled"}]  # another order: not the plan's
    assert complete_methods(plan, done) == ["ERNODE"]
    assert complete_methods(plan, done + [{"reg": "steer", "steer_b": 0.25}]) == ["ERNODE", "STEER"]
    assert complete_methods(plan, []) == []


def test_cost_outcomes_judge_the_chosen_model_by_prediction_and_step_ratios():
    from taynode.verdicts import cost_outcomes, step_ratios

    step = {"rows": [{"method": "none", "step_s": 0.10}, {"method": "ERNODE", "step_s": 0.15},
                     {"method": "SRNODE", "step_s": 0.16}, {"method": "R2 exact", "step_s": 0.25}]}
    pred = {"rows": [
        {"family": "unregularised", "weight": 0.0, "seed": 0, "predict_s": 2.0},
        {"family": "ERNODE", "weight": 1.0, "seed": 0, "predict_s": 1.5},   # 0.75x, step 1.5x: at both bounds
        {"family": "ERNODE", "weight": 10.0, "seed": 0, "predict_s": 0.5},  # not the chosen weight
        {"family": "SRNODE", "weight": 0.1, "seed": 0, "predict_s": 1.0},   # 0.5x but the step costs 1.6x
        {"family": "R2", "weight": 10.0, "seed": 0, "predict_s": 1.0},
        {"family": "ERNODE", "weight": 1.0, "seed": 1, "predict_s": 1.0},   # no unregularised model at seed 1
    ]}
    out = cost_outcomes(step, pred, {"ERNODE": 1.0, "SRNODE": 0.1, "R2": 10.0})
    assert [(o["family"], o["seed"], o["holds"]) for o in out] == [("ERNODE", 0, True), ("SRNODE", 0, False)]
    assert out[0]["predict_ratio"] == pytest.approx(0.75) and out[1]["step_ratio"] == pytest.approx(1.6)
    r2 = cost_outcomes(step, pred, {"R2": 10.0}, families=("R2",))
    assert r2[0]["step_ratio"] == pytest.approx(2.5) and not r2[0]["holds"]  # R2's row is "R2 exact"
    assert cost_outcomes(step, pred, {"ERNODE": None}) == []  # no chosen weight: nothing judged
    assert step_ratios(step) == pytest.approx({"none": 1.0, "ERNODE": 1.5, "SRNODE": 1.6, "R2 exact": 2.5})
    with pytest.raises(ValueError, match="'none' row"):
        cost_outcomes({"rows": []}, pred, {})


def test_cost_pending_names_the_chosen_settings_no_benchmark_covers():
    from taynode.verdicts import cost_pending

    step = {"rows": [{"method": "none", "step_s": 0.10}, {"method": "ERNODE", "step_s": 0.15},
                     {"method": "SRNODE", "step_s": 0.16}]}
    pred = {"rows": [
        {"family": "unregularised", "weight": 0.0, "seed": 0, "predict_s": 2.0},
        {"family": "ERNODE", "weight": 1.0, "seed": 0, "predict_s": 1.5},
        {"family": "SRNODE", "weight": 0.01, "seed": 0, "predict_s": 1.0},  # another weight than the chosen
    ]}
    assert cost_pending(step, pred, {"ERNODE": 1.0, "SRNODE": 1.0}) == [("SRNODE", 1.0)]
    assert cost_pending(step, pred, {"ERNODE": 1.0, "SRNODE": 0.01}) == []
    assert cost_pending(step, pred, {"ERNODE": None}) == []  # no chosen weight: nothing pending
    assert cost_pending(None, pred, {"ERNODE": 1.0}) == [("ERNODE", 1.0)]  # no step benchmark
    no_step_row = {"rows": [{"method": "none", "step_s": 0.10}]}
    assert cost_pending(no_step_row, pred, {"ERNODE": 1.0}) == [("ERNODE", 1.0)]
